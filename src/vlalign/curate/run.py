"""The single-pool curate stage of the flat `curate` config (min_words, ..., dedup_exact).

It is measure_pool + decide + report + shards with those thresholds mapped onto the
caption, image and dedup filters, for the workflow that still calls `vlalign curate`.
"""

from __future__ import annotations

import time
from pathlib import Path

from vlalign.curate.decide import decide
from vlalign.curate.measure import measure_pool
from vlalign.curate.report import write_curation_report
from vlalign.curate.shards import write_curated_shards
from vlalign.io import atomic_dir, atomic_path


def flat_config_filters(config: dict) -> list[dict]:
    """The flat config's thresholds as filters. The checks it has no key for are off, except
    the decode check: an image that does not decode is of no use to any later stage."""
    return [
        {"name": "caption", "min_words": config["min_words"], "min_chars": config["min_chars"],
         "max_words": config["max_words"], "min_complexity": 0, "drop_boilerplate": False,
         "drop_url_like": False, "drop_non_utf8": False},
        {"name": "image", "min_side": config["min_side"], "max_aspect_ratio": config["max_aspect_ratio"],
         "min_pixel_std": 0},
        {"name": "dedup", "exact": config["dedup_exact"], "near": False},
    ]  # fmt: skip


def run_curate(input_folders: list[str | Path], out_dir: str | Path, config: dict, samples_per_shard: int) -> dict:
    """Measure (without OCR) and decide every sample; write decisions, report and kept shards to `out_dir`."""
    started = time.time()
    folders = [Path(f) for f in input_folders]
    filters = flat_config_filters(config)
    decisions = decide(measure_pool(folders, [], {"ocr": "off"}), filters)
    with atomic_dir(Path(out_dir)) as tmp:
        write_curated_shards(decisions, folders, tmp / "shards", samples_per_shard)
        with atomic_path(tmp / "decisions.parquet") as part:
            decisions.to_parquet(part, index=False)
        summary = write_curation_report(decisions, folders, tmp, filters)
    return {**summary, "seconds": round(time.time() - started, 2)}
