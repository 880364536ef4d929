"""The benchmarks run end to end and print what they promise (tiny sizes: the wiring, not the speed)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DATA_STAGES = {
    "download", "curate.image_checks", "curate.caption_heuristics", "curate.language", "curate.concepts",
    "curate.dedup", "curate.decontamination", "curate.ocr", "curate.alignment_score",
    "curate.measure_pool_without_ocr", "curate.balance", "curate.decide", "convert.write_beton",
    "convert.verify_beton",
}  # fmt: skip


def _one_line(script: str, *args: str) -> dict:
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=600, cwd=REPO)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = run.stdout.splitlines()
    return json.loads(line)


def test_data_throughput_prints_one_line_with_every_stage():
    # One worker runs the image work in the benchmark's own process: no process start-up, a test in seconds.
    figures = _one_line("data_throughput.py", "--samples", "40", "--ocr-samples", "2", "--workers", "1")
    assert figures["machine"]["cores"] >= 1 and figures["machine"]["cpu"] and figures["date"]
    assert set(figures["stages"]) == DATA_STAGES
    for name, stage in figures["stages"].items():
        for key in ("samples", "wall_s", "cpu_s", "samples_per_s", "samples_per_cpu_s"):
            assert stage[key] > 0, (name, key, stage)
    assert figures["stages"]["curate.ocr"]["samples"] == 2
    download = figures["stages"]["download"]
    assert download["samples"] == 40 and download["skipped"] == 0
    assert download["ok"] + download["failed"] == 40 and sum(download["errors"].values()) == download["failed"]
    assert figures["stages"]["convert.write_beton"]["written"] == figures["stages"]["convert.verify_beton"]["samples"]


def test_embed_process_compares_the_configured_process_with_the_c_defaults():
    figures = _one_line("embed_process.py", "--images", "16", "--batch", "8", "--repeats", "1")
    assert figures["images"] == 16 and figures["machine"]["torch_threads"] == 2
    for mode in ("configured", "c_defaults"):
        for key in ("wall_s", "user_s", "minor_faults", "cpu_ms_per_image", "minor_faults_per_image"):
            assert figures[mode][key] > 0, (mode, key, figures[mode])
    assert figures["ratio_cpu"] > 0 and figures["ratio_minor_faults"] > 0
    assert figures["embeddings_equal"] is True  # the set-up changes where memory comes from, not the numbers


def test_download_workers_measures_a_download_process_and_its_floor():
    figures = _one_line("download_workers.py", "--urls", "120", "--threads", "4")
    assert figures["urls"] == 120 and figures["ok"] == 120 - 3  # rows 7, 57 and 107 are 404s
    assert figures["peak_rss_mb"] >= figures["floor_rss_mb"] > 50 and figures["torch_imported"] is False


def test_phash_index_finds_every_planted_pair():
    figures = _one_line("phash_index.py", "--smoke")
    assert [size["recall"] for size in figures["sizes"]] == [1.0, 1.0]
    assert figures["sizes"][0]["agrees_with_all_pairs"] is True and figures["all_pairs"]["seconds"] > 0


def test_download_partitions_re_partitions_without_a_request():
    figures = _one_line("download_partitions.py", "--smoke")
    assert figures["first"]["server_requests"] == figures["rows"] and figures["first"]["ok"] > 0
    assert figures["second"]["server_requests"] == figures["second"]["fetched"] == 0
    assert figures["same_outcomes"] is True and figures["rows_requested_twice"] == 0


def test_beton_partitions_reads_back_every_record_in_order():
    figures = _one_line("beton_partitions.py", "--smoke")
    assert figures["rows"] == 600 and figures["partitions"] == 2


def test_chunked_loss_precision_compares_both_paths_with_float64():
    figures = _one_line("chunked_loss_precision.py", "--smoke")
    for case in ("infonce/fp32/easy", "infonce/bf16/hard", "siglip/bf16/easy"):
        errors = figures["relative_error_vs_float64"][case]
        assert errors["chunked"]["loss"] <= 2 * errors["plain"]["loss"] + 1.2e-7, case
    assert all(figures["timing"][loss]["chunked_s"] > 0 for loss in ("infonce", "siglip"))
