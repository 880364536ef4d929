"""url_list keys follow their rows (issue 16): a `uid` column when the list has one, else the row's URL and
caption, so a reordered or extended list keeps each row's key, split and sample; repeated rows are accounted."""

from __future__ import annotations

import pandas as pd
import pytest
from image_server import ImageServer
from source_config import shard_contents, source_config

from vlalign.data.download import run_download


@pytest.fixture(scope="module")
def server():
    with_server = ImageServer().start()
    yield with_server
    with_server.stop()


def download(server, tmp_path, name: str, table: pd.DataFrame, fmt: str = "parquet") -> pd.DataFrame:
    path = tmp_path / f"{name}.{fmt}"
    table.to_parquet(path) if fmt == "parquet" else table.to_csv(path, index=False)
    run_download("web", source_config("url_list", path=str(path), eval_fraction=0.3, retries=0), tmp_path / name,
                 None, 4)  # fmt: skip
    return pd.read_parquet(tmp_path / name / "manifest.parquet")


def rows(server, n: int) -> pd.DataFrame:
    return pd.DataFrame({"url": [server.url(f"/jpg/k{i}") for i in range(n)], "caption": [f"row {i}" for i in range(n)]})


def samples_by_key(out) -> dict:
    return {key: (image, caption) for split in shard_contents(out).values() for key, image, caption, _ in split}


def test_a_reordered_and_extended_list_keeps_each_rows_key_split_and_sample(server, tmp_path):
    table = rows(server, 12)
    before = download(server, tmp_path, "before", table).set_index("origin")
    changed = pd.concat([table.iloc[::-1], rows(server, 15).iloc[12:]], ignore_index=True)
    after = download(server, tmp_path, "after", changed).set_index("origin")
    assert len(after) == 15 and after["key"].is_unique
    common = before.index
    assert after.loc[common, "key"].tolist() == before["key"].tolist()
    assert after.loc[common, "split"].tolist() == before["split"].tolist()
    kept_before, kept_after = samples_by_key(tmp_path / "before"), samples_by_key(tmp_path / "after")
    assert {key: kept_after[key] for key in kept_before} == kept_before


def test_a_uid_column_keys_the_rows_and_keeps_its_leading_zeros(server, tmp_path):
    table = rows(server, 4).assign(uid=["0001", "0002", None, "00a3"])
    for fmt in ("parquet", "csv"):
        manifest = download(server, tmp_path, f"uid-{fmt}", table, fmt)
        assert manifest["key"].tolist()[:2] == ["web_0001", "web_0002"] and manifest["key"].iloc[3] == "web_00a3"
        assert manifest["key"].iloc[2].startswith("web_") and len(manifest["key"].iloc[2]) == 24  # no uid: content


def test_repeated_rows_are_skipped_naming_the_first_and_none_is_lost(server, tmp_path):
    table = rows(server, 5)
    table = pd.concat([table, table.iloc[[1, 1, 3]]], ignore_index=True)  # rows 5 and 6 repeat 1, row 7 repeats 3
    manifest = download(server, tmp_path, "repeats", table)
    assert len(manifest) == 8 and manifest["key"].is_unique
    repeats = manifest.iloc[5:]
    assert repeats["status"].eq("skipped").all() and repeats["error"].eq("duplicate_row").all()
    assert repeats["detail"].tolist() == [f"same key as row 1 ({manifest['key'][1]})"] * 2 + [
        f"same key as row 3 ({manifest['key'][3]})"]
    assert manifest.iloc[:5]["status"].eq("ok").all() and server.hits["/jpg/k1"] >= 1
