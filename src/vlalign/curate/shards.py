"""Write the kept samples of a curated pool as webdataset shards, in pool order, one partition at a time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlalign.data.shards import ShardWriter, folder_shards, iter_samples
from vlalign.progress import Progress


def write_curated_shards(decisions: pd.DataFrame, shard_folders: list[Path], out_dir: Path,
                         samples_per_shard: int, keys: set[str] | None = None) -> int:  # fmt: skip
    """Copy every sample with `kept` from the shards (with `keys`, those of a partition: only the kept ones among
    them) to `out_dir/shard-*.tar`; returns the count.

    Fails if a kept key is not in the shards (the decisions belong to another pool).
    """
    kept = set(decisions.loc[decisions["kept"], "key"])
    if keys is not None:
        kept &= keys
    progress = Progress("curate: writing kept samples", total=len(kept), unit="samples")
    written = 0
    out_dir.mkdir(parents=True, exist_ok=True)  # a partition may keep nothing
    with ShardWriter(out_dir, samples_per_shard) as writer:
        for sample in iter_samples(folder_shards(shard_folders) if kept else []):
            if sample.key in kept:
                writer.write(sample)
                written += 1
                progress.update(1)
    progress.close()
    if written != len(kept):
        raise ValueError(f"{len(kept) - written} kept samples are missing from {', '.join(map(str, shard_folders))}")
    return written
