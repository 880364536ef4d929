"""A URL list in partitions (issue 16): indexed once, downloaded a partition a job, and never fetched twice: a
re-partitioned, reordered or appended list takes finished rows from the outcome store, and a retry round fetches
only the rows whose failure was transient."""

from __future__ import annotations

import pandas as pd
import pytest
from image_server import ImageServer
from source_config import shard_contents, source_config

from vlalign.data.download import run_download
from vlalign.data.url_index import index_url_list

CHUNK = 4


@pytest.fixture()
def server():
    with_server = ImageServer().start()
    yield with_server
    with_server.stop()


def rows(server, n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"url": [server.url(f"/jpg/k{i}") for i in range(start, n)],
                         "caption": [f"row {i}" for i in range(start, n)]})  # fmt: skip


def download(tmp_path, table: pd.DataFrame, partitions: int, run: str, **settings) -> dict:
    """Index the list and download every partition, as the workflow's jobs do; the partitions' summaries."""
    path = tmp_path / "list.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path)
    source = source_config("url_list", path=str(path), eval_fraction=0.25, retries=0, partitions=partitions,
                           threads=4, **settings)  # fmt: skip
    store = tmp_path / "store"  # one store across runs, as download/{source}/store is
    index_url_list("web", source, CHUNK, tmp_path / run / "index", store, progress=False)
    return {p: run_download("web", source, tmp_path / run / f"part-{p:04d}", None, CHUNK, p,
                            tmp_path / run / "index", store) for p in range(partitions)}  # fmt: skip


def manifest(tmp_path, run: str) -> pd.DataFrame:
    parts = sorted((tmp_path / run).glob("part-*/manifest.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def samples(tmp_path, run: str) -> dict:
    found = {}
    for part in sorted((tmp_path / run).glob("part-*")):
        for split, contents in shard_contents(part).items():
            found.update({key: (split, image, caption, meta) for key, image, caption, meta in contents})
    return found


def fetches(server) -> int:
    return sum(server.hits.values())


def test_partitions_together_equal_one_download_and_cover_every_row_once(server, tmp_path):
    table = rows(server, 23)
    one = download(tmp_path, table, 1, "one")
    three = download(tmp_path / "fresh", table, 3, "three")
    assert sum(s["items"] for s in three.values()) == one[0]["items"] == 23
    assert [len(pd.read_parquet(tmp_path / "fresh" / "three" / f"part-{p:04d}" / "manifest.parquet"))
            for p in range(3)] == [8, 8, 7]  # six chunks of four rows, two partitions' worth each  # fmt: skip
    pd.testing.assert_frame_equal(manifest(tmp_path, "one"), manifest(tmp_path / "fresh", "three"))
    assert samples(tmp_path, "one") == samples(tmp_path / "fresh", "three")


def test_re_partitioning_a_finished_list_fetches_nothing_and_links_every_chunk(server, tmp_path):
    table = rows(server, 18)
    download(tmp_path, table, 3, "first")
    before = fetches(server)
    again = download(tmp_path, table, 2, "second")
    assert fetches(server) == before
    assert sum(s.get("linked_chunks", 0) for s in again.values()) == 5
    assert samples(tmp_path, "first") == samples(tmp_path, "second")


def test_a_reordered_list_copies_its_rows_from_the_store_and_an_appended_one_fetches_only_the_new_rows(server, tmp_path):
    table = rows(server, 16)
    download(tmp_path, table, 2, "first")
    before = fetches(server)
    shuffled = table.sample(frac=1.0, random_state=0).reset_index(drop=True)
    reordered = download(tmp_path, shuffled, 2, "reordered")
    assert fetches(server) == before
    assert sum(s["reused"] for s in reordered.values()) == 16
    assert samples(tmp_path, "reordered") == samples(tmp_path, "first")

    longer = pd.concat([table, rows(server, 21, start=16)], ignore_index=True)
    appended = download(tmp_path, longer, 2, "appended")
    assert fetches(server) == before + 5
    assert sum(s["fetched"] for s in appended.values()) == 5


def test_a_retry_round_fetches_only_transient_failures_and_counts_what_it_recovered(server, tmp_path):
    table = rows(server, 10)
    table.loc[[2, 7], "url"] = [server.url("/flaky/a"), server.url("/flaky/b")]  # 500 once, then an image
    table.loc[5, "url"] = server.url("/status/404")  # permanent: never fetched again
    download(tmp_path, table, 2, "first")
    first = manifest(tmp_path, "first")
    assert first.set_index("origin").loc[[server.url("/flaky/a"), server.url("/flaky/b")], "error"].tolist() == [
        "http_500", "http_500"]  # fmt: skip
    before = dict(server.hits)
    same_round = download(tmp_path, table, 2, "same_round")
    assert dict(server.hits) == before and sum(s["retried"] for s in same_round.values()) == 0

    retried = download(tmp_path, table, 2, "retried", retry_round=1)
    assert server.hits["/flaky/a"] == server.hits["/flaky/b"] == 2 and server.hits["/status/404"] == 1
    assert sum(s["retried"] for s in retried.values()) == 2 and sum(s["recovered"] for s in retried.values()) == 2
    after = manifest(tmp_path, "retried")
    assert after["status"].value_counts().to_dict() == {"ok": 9, "failed": 1}


def test_a_row_repeating_one_in_another_partition_is_skipped_naming_it(server, tmp_path):
    table = rows(server, 12)
    table = pd.concat([table, table.iloc[[1]]], ignore_index=True)  # row 12 repeats row 1, three partitions away
    download(tmp_path, table, 4, "run")
    found = manifest(tmp_path, "run")
    repeat = found.iloc[12]
    assert (repeat["status"], repeat["error"]) == ("skipped", "duplicate_row")
    assert f"row 1 ({found['key'].iloc[1]})" in repeat["detail"] and repeat["key"] == found["key"].iloc[1] + "-2"
    assert len(found) == 13 and found["key"].is_unique


def test_a_subset_is_the_same_rows_however_the_list_is_partitioned(server, tmp_path):
    table = rows(server, 30)
    download(tmp_path, table, 1, "one", max_items=11)
    download(tmp_path, table, 4, "four", max_items=11)
    one, four = manifest(tmp_path, "one"), manifest(tmp_path, "four")
    assert (one["status"] == "ok").sum() == 11
    pd.testing.assert_frame_equal(one, four)


def test_a_changed_shaping_setting_fetches_again(server, tmp_path):
    table = rows(server, 8)
    download(tmp_path, table, 1, "first")
    before = fetches(server)
    download(tmp_path, table, 1, "smaller", max_bytes=100)
    assert fetches(server) == before + 8
    assert set(manifest(tmp_path, "smaller")["error"]) == {"too_large_bytes"}
