"""url_list sources against a local HTTP server: every URL accounted once, with the right error class."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from source_config import source_config

from vlalign.data.images import inspect_image
from vlalign.data.shards import iter_samples, shard_paths
from vlalign.data.download import run_download
from image_server import ImageServer

MAX_BYTES = 50_000
SERVER_MAX_BYTES_HINT = MAX_BYTES  # read by the conftest `server` fixture

# path on the test server (or a full URL) -> the error class its row must carry (None: ok)
EXPECTED = {
    "/jpg/a": None,
    "/png/b": None,
    "/gif/c": None,  # stored re-encoded as PNG
    "/redirect/d": None,
    "/flaky/e": None,  # a 500, then the image: retried
    "/status/404": "http_404",
    "/status/500": "http_500",
    "/status/403": "http_403",
    "/slow": "timeout",
    "/truncated.jpg": "decode_error",
    "/html.jpg": "not_an_image",
    "/bomb.png": "too_many_pixels",
    "/bomb/9000x8000.png": "too_many_pixels",
    "/tiny.png": "too_small",
    "/huge.bin": "too_large_bytes",
    "/huge-stream.bin": "too_large_bytes",
    "/loop": "redirect_loop",
    "/to-file": "bad_scheme",
    "/noai.jpg": "robots_disallowed",
    "ftp://127.0.0.1/x.jpg": "bad_scheme",
    "file:///etc/passwd": "bad_scheme",
    "http://": "bad_url",
}




def url_table(server: ImageServer) -> pd.DataFrame:
    urls = [p if "://" in p else server.url(p) for p in EXPECTED]
    return pd.DataFrame({
        "image_url": urls + [server.url("/jpg/nocap"), None],
        "text": [f"caption number {i}" for i in range(len(urls))] + ["", "a caption without a url"],
        "license": [f"cc-by-{i}" for i in range(len(urls) + 2)],
        "score": [i / 10 for i in range(len(urls) + 2)],
    })  # fmt: skip


def url_source(path, **kw):
    options = {"path": str(path), "url_col": "image_url", "caption_col": "text", "timeout_s": 1, "retries": 1,
               "max_bytes": MAX_BYTES, "threads": 8, "eval_fraction": 0.3}  # fmt: skip
    return source_config("url_list", **{**options, **kw})


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_every_url_accounted_once_with_its_error(server, tmp_path, fmt):
    table = url_table(server)
    path = tmp_path / f"urls.{fmt}"
    table.to_parquet(path) if fmt == "parquet" else table.to_csv(path, index=False)
    out = tmp_path / "web"
    summary = run_download("web", url_source(path), out, None, 4)

    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == len(table) == summary["items"] == summary["ok"] + summary["failed"] + summary["skipped"]
    assert manifest["key"].is_unique
    by_origin = manifest.set_index("origin", drop=False)
    for path_or_url, error in EXPECTED.items():
        row = by_origin.loc[path_or_url if "://" in path_or_url else server.url(path_or_url)]
        found = (row["status"], None if pd.isna(row["error"]) else row["error"])
        assert found == ("ok" if error is None else "failed", error), row.to_dict()
    assert manifest.iloc[-2]["error"] == "no_caption" and manifest.iloc[-1]["error"] == "no_url"
    assert summary["ok"] == 5 and summary["error.too_large_bytes"] == 2 and summary["error.bad_scheme"] == 3

    # Never fetched: non-http schemes, rows without a caption; retried: only transient failures.
    assert server.hits["/jpg/nocap"] == 0
    assert server.hits["/status/500"] == 2 and server.hits["/status/404"] == 1 and server.hits["/flaky/e"] == 2
    assert server.hits["/slow"] == 2

    samples = [s for split in ("train", "eval") if (out / split).exists()
               for s in iter_samples(shard_paths(out / split))]  # fmt: skip
    assert sorted(s.key for s in samples) == sorted(manifest.loc[manifest.status == "ok", "key"])
    for sample in samples:
        check = inspect_image(sample.image, 64_000_000)
        assert check.error is None and sample.image_ext == check.ext  # zero undecodable images
        row = manifest.set_index("key").loc[sample.key]
        assert sample.meta["source"] == "web"
        assert (sample.meta["width"], sample.meta["height"]) == (row.width, row.height)
        assert sample.meta["license"].startswith("cc-by-") and isinstance(sample.meta["score"], float)
        assert sample.caption == row.caption and sample.meta["origin"] == row.origin
    assert {s.meta["origin"].rsplit("/", 1)[-1] for s in samples if s.image_ext == "png"} == {"b", "c"}
    splits = manifest.loc[manifest.status == "ok", "split"]
    assert set(splits) <= {"train", "eval"} and summary.get("ok_train", 0) + summary.get("ok_eval", 0) == 5
    # Besides the output, only the outcome store is left, for a later run to start from.
    assert [p.name for p in tmp_path.glob(".web*")] == [".web.store"]


def test_max_items_skips_without_fetching(server, tmp_path):
    urls = [server.url(f"/jpg/n{i}") for i in range(12)]
    pd.DataFrame({"url": urls, "caption": ["a red square"] * 12}).to_parquet(tmp_path / "urls.parquet")
    summary = run_download("web", source_config("url_list", path=str(tmp_path / "urls.parquet"), max_items=5),
                           tmp_path / "out", None, 100)  # fmt: skip
    assert (summary["ok"], summary["skipped"]) == (5, 7)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    skipped = manifest.loc[manifest.status == "skipped", "origin"]
    assert (manifest.loc[manifest.status == "skipped", "error"] == "not_in_subset").all()
    assert all(server.hits[url.removeprefix(server.base)] == 0 for url in skipped)


def test_bad_tables_are_refused_with_their_names(tmp_path):
    pd.DataFrame({"link": ["http://x/y.jpg"], "caption": ["c"]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match="url_col"):
        run_download("web", source_config("url_list", path=str(tmp_path / "a.csv")), tmp_path / "o", None, 10)
    (tmp_path / "b.json").write_text(json.dumps([]))
    with pytest.raises(ValueError, match=r"\.parquet, \.csv"):
        run_download("web", source_config("url_list", path=str(tmp_path / "b.json")), tmp_path / "o", None, 10)
    assert not (tmp_path / "o").exists()
