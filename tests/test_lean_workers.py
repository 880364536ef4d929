"""Stages that need no torch do not import it (issue 15): torch's import alone is ~800 MB of RSS, paid by every
download process of a list split over many jobs. Each stage runs as the workflow runs it, `vlalign <stage>` in
a fresh process, on a URL list served from 127.0.0.1; the process reports the modules it ended with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from image_server import ImageServer
from source_config import LOOPBACK

from vlalign.config import validate_config
from vlalign.stage import stage_settings_json

# Runs a stage like the `vlalign` entry point, then says whether torch was imported.
PROBE = """
import json, sys
from vlalign.cli import main
code = main(sys.argv[1:])
print("PROBE " + json.dumps({"torch": "torch" in sys.modules}))
sys.exit(code)
"""


def run_stage(*argv: str, cwd: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(line.removeprefix("PROBE "))


@pytest.fixture
def server():
    with_server = ImageServer().start()
    yield with_server
    with_server.stop()


def test_index_download_measure_and_select_run_without_torch(server, tmp_path, monkeypatch):
    urls = [server.url(f"/jpg/s{i}") for i in range(24)] + [server.url("/status/404")]
    pd.DataFrame({"url": urls, "caption": [f"a red square number {i}" for i in range(25)]}).to_parquet(
        tmp_path / "urls.parquet")
    config = {
        "experiment": "lean", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "samples_per_shard": 10,
        "sources": {"web": {"type": "url_list", "path": "urls.parquet", "allow_networks": LOOPBACK}},
        "encoders": {"lite0": {"spec": "efficientnet-lite0"}, "minilm": {"spec": "all-minilm-l6-v2"}},
        "curate": {"measure": {"ocr": "off"}, "pools": {"basic": ["caption", "image", "dedup"]}},
        "evaluate": {"retrieval": []},
    }  # fmt: skip
    monkeypatch.chdir(tmp_path)  # the config's relative paths
    config = validate_config(config)

    def settings(stage: str, **wildcards: str) -> tuple[str, str]:  # what the Snakemake rule passes
        return "--settings", stage_settings_json(config, stage, **wildcards)

    indexed = run_stage("index-urls", *settings("index_urls", source="web"), "--source", "web", "--store",
                        "download/web/store", "--out", "download/web/index", cwd=tmp_path)  # fmt: skip
    downloaded = run_stage("download", *settings("download", source="web"), "--source", "web", "--partition", "0",
                           "--index", "download/web/index", "--store", "download/web/store", "--out",
                           "download/web/part-0000", cwd=tmp_path)  # fmt: skip
    sampled = run_stage("measure-samples", *settings("measure_samples"), "--source", "web", "--partition", "0000",
                        "--inputs", "download/web/part-0000/train", "--out", "measured.parquet", cwd=tmp_path)
    measured = run_stage("measure", *settings("measure"), "--partitions", "measured.parquet", "--inputs",
                         "download/web/part-0000/train", "--out", "measurements.parquet", cwd=tmp_path)  # fmt: skip
    selected = run_stage("select", *settings("select", pool="basic"), "--pool", "basic", "--measurements",
                         "measurements.parquet", "--inputs", "download/web/part-0000/train", "--out", "pool/basic",
                         cwd=tmp_path)  # fmt: skip
    assert not any(stage["torch"] for stage in (indexed, downloaded, sampled, measured, selected))
    manifest = pd.read_parquet(tmp_path / "download" / "web" / "part-0000" / "manifest.parquet")
    assert manifest["status"].eq("ok").sum() == 24
    assert (tmp_path / "pool" / "basic" / "decisions.parquet").exists()
