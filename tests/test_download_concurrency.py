"""A slow URL in a url_list holds back writing, not fetching: the other threads go on, and the output is the same."""

from __future__ import annotations

import pandas as pd
from source_config import shard_contents, source_config

from vlalign.data.download import run_download

THREADS = 4
CHUNK = 20
SLOW = "/jpg/r0"





def test_fast_urls_are_fetched_while_a_slow_one_is_in_flight(server, tmp_path):
    paths = [f"/jpg/r{i}" if i % 7 else f"/missing/{i}" for i in range(1, 80)]  # every seventh a 404
    pd.DataFrame({"url": [server.url(p) for p in [SLOW, *paths]],
                  "caption": [f"row {i}" for i in range(80)]}).to_parquet(tmp_path / "urls.parquet")  # fmt: skip
    # The timeout is far above the delay: on a loaded machine the slow row must still succeed.
    source = source_config("url_list", path=str(tmp_path / "urls.parquet"), threads=THREADS, retries=0,
                           timeout_s=30, eval_fraction=0.3)  # fmt: skip
    run_download("web", source, tmp_path / "fast", None, CHUNK)

    server.completed.clear()
    server.delays[SLOW] = 3.0
    run_download("web", source, tmp_path / "slow", None, CHUNK)

    # An ordered window of 4 calls a thread would let at most 15 other rows finish before the slow first one;
    # every row of its two chunks may finish first now, and on an idle machine all do.
    assert server.completed.index(SLOW) > 4 * THREADS, server.completed[:20]
    assert sorted(server.completed) == sorted([SLOW, *paths])
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "slow" / "manifest.parquet"),
                                  pd.read_parquet(tmp_path / "fast" / "manifest.parquet"))  # fmt: skip
    assert shard_contents(tmp_path / "slow") == shard_contents(tmp_path / "fast")
