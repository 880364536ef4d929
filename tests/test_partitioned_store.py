"""The pool converted one .beton per download partition, its table gathered, and embedded over the list of .betons
as one dataset: whole or in parts, the store equals the one a single .beton of every folder gives."""

from __future__ import annotations

import io
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from test_own_configs import planned_outputs
from test_workflow import job_counts, snakemake

from vlalign.cli import main
from vlalign.data.shards import Sample, ShardWriter
from vlalign.embed.features import embed_images
from vlalign.store.beton import _full_batches, read_texts, verify_beton, write_beton
from vlalign.store.embeddings import gather_embeddings, open_embeddings
from vlalign.store.tables import gather_tables, write_table

# numba (0.68) raises KeyError in the finalizer of ffcv's per-Loader compiled functions when
# they are garbage collected mid-run; harmless, and silent outside pytest.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <finalize object:pytest.PytestUnraisableExceptionWarning"
)
# Samples per (source, partition); beta's second partition also holds an image that does not decode. The 12 good
# ones make batches of 4 that each span two .betons, and 3 parts of one batch each.
PARTITIONS = {("alpha", "0000"): 3, ("alpha", "0001"): 0, ("alpha", "0002"): 2, ("beta", "0000"): 4,
              ("beta", "0001"): 3}  # fmt: skip
LITE0 = {"spec": "efficientnet-lite0", "batch_size": 4}
CPU_ONE_WORKER = {"num_workers": 1, "device": "cpu"}
CONVERT = {"max_resolution": 64, "num_workers": 1}


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_partition(folder, source: str, partition: str, count: int) -> list[str]:
    """The partition's train shards (two samples a shard); an empty folder when `count` is 0."""
    keys = [f"{source}{partition}x{i}" for i in range(count)]
    folder.mkdir(parents=True)
    with ShardWriter(folder, samples_per_shard=2) as writer:
        for i, key in enumerate(keys):
            writer.write(Sample(key, _jpeg(len(key) * 31 + i), "jpg", f"caption of {key}", {"source": source}))
        if (source, partition) == ("beta", "0001"):
            writer.write(Sample("betabroken", b"\xff\xd8 not a jpeg", "jpg", "broken", {"source": source}))
    return keys


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Each partition converted as convert_partition runs it, the gathered table, and one .beton of everything."""
    root = tmp_path_factory.mktemp("partitioned")
    folders, keys, tables = [], [], []
    settings = {"experiment": "partitioned", "tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "convert": CONVERT}
    for (source, partition), count in PARTITIONS.items():
        folder = root / "download" / source / f"part-{partition}" / "train"
        keys += _write_partition(folder, source, partition, count)
        folders.append(folder)
        beton = root / "beton" / "pool" / source / f"part-{partition}.beton"
        tables.append(beton.with_suffix(".parquet"))
        assert main(["convert", "--settings", json.dumps(settings), "--source", source, "--partition", partition,
                     "--inputs", str(folder), "--beton", str(beton), "--table", str(tables[-1])]) == 0
    assert main(["gather-tables", "--tables", *map(str, tables), "--out", str(root / "beton" / "pool.parquet")]) == 0
    write_beton(folders, root / "whole.beton", root / "whole.parquet", **CONVERT)
    betons = [table.with_suffix(".beton") for table in tables]
    return root, betons, keys


def test_an_empty_partition_is_an_empty_table_and_file(pool):
    root, _, _ = pool
    empty = root / "beton" / "pool" / "alpha" / "part-0001"
    assert pd.read_parquet(empty.with_suffix(".parquet")).empty and empty.with_suffix(".beton").stat().st_size == 0
    assert verify_beton(empty.with_suffix(".beton"), empty.with_suffix(".parquet"), num_workers=1) == {"verified": 0}
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("partitioned").experiment_id])
    converted = {r.info.run_name: r.data.metrics["written"] for r in runs}
    assert converted == {f"convert-pool-{s}-{p}": n for (s, p), n in PARTITIONS.items()}


def test_gathered_table_lists_every_sample_once_in_partition_order(pool):
    root, _, keys = pool
    table = pd.read_parquet(root / "beton" / "pool.parquet")
    assert table["key"].tolist() == keys and table["row"].tolist() == list(range(len(keys)))
    assert table["caption"].tolist() == pd.read_parquet(root / "whole.parquet")["caption"].tolist()
    assert table["beton"].unique().tolist() == ["pool/alpha/part-0000.beton", "pool/alpha/part-0002.beton",
                                                "pool/beta/part-0000.beton", "pool/beta/part-0001.beton"]  # fmt: skip
    assert table["beton_row"].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3, 0, 1, 2]
    # Each row finds its sample: the record the table points at holds its key.
    for beton, rows in table.groupby("beton", sort=False):
        texts = read_texts(root / "beton" / beton, rows["beton_row"].tolist())
        assert [t["key"] for t in texts] == rows["key"].tolist()


@pytest.fixture(scope="module")
def whole_store(pool, tmp_path_factory):
    root, _, _ = pool
    out = tmp_path_factory.mktemp("whole") / "store"
    embed_images(root / "whole.beton", root / "whole.parquet", LITE0, out, CPU_ONE_WORKER, progress=False)
    return open_embeddings(out)


@pytest.mark.parametrize("parts", [1, 3])
def test_embedding_the_partitions_equals_embedding_one_beton(pool, whole_store, parts, tmp_path):
    root, betons, keys = pool
    table = root / "beton" / "pool.parquet"
    stores = []
    for part in range(parts):
        summary = embed_images(betons, table, LITE0, tmp_path / str(part), CPU_ONE_WORKER, part=part, parts=parts,
                               progress=False)  # fmt: skip
        # A part opens only the .betons its rows are in: the first of three parts, rows 0..3, two of them.
        if (part, parts) == (0, 3):
            assert summary["betons"] == [str(betons[0]), str(betons[2])]
        stores.append(tmp_path / str(part))
    gather_embeddings(stores, tmp_path / "gathered")
    store = open_embeddings(tmp_path / "gathered")
    assert store.keys == whole_store.keys == keys
    # The same images in the same batches (each of 4 rows spans two .betons): equal, not merely close.
    np.testing.assert_array_equal(store.to_numpy(), whole_store.to_numpy())


def test_batches_stay_full_across_the_ends_of_files():
    def batch(rows):
        return torch.tensor(rows).view(-1, 1, 1, 1), np.array(rows)

    files = [batch([0, 1, 2, 3]), batch([4]), batch([5, 6]), batch([7, 8, 9, 10]), batch([11])]
    cut = list(_full_batches(iter(files), 4))
    assert [rows.tolist() for _, rows in cut] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert all(images.view(-1).tolist() == rows.tolist() for images, rows in cut)
    assert cut[0][0].data_ptr() == files[0][0].data_ptr()  # a full batch is passed on, not copied


def test_a_key_in_two_partitions_is_refused(tmp_path):
    row = {"row": 0, "key": "same", "caption": "c", "source": "s", "category": None, "meta_json": "{}"}
    for name in ("a", "b"):
        write_table([row], tmp_path / f"{name}.parquet", tmp_path / f"{name}.beton")
    with pytest.raises(ValueError, match="duplicate key 'same'"):
        gather_tables([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "pool.parquet")
    assert not (tmp_path / "pool.parquet").exists()


def test_partitioned_url_list_plans_one_convert_per_partition_and_one_table(tmp_path):
    pd.DataFrame({"url": [f"http://127.0.0.1:9/{i}.jpg" for i in range(12)],
                  "caption": [f"caption {i}" for i in range(12)]}).to_parquet(tmp_path / "urls.parquet")  # fmt: skip
    config = {
        "sources": {"web": {"type": "url_list", "path": "urls.parquet", "eval_fraction": 0.25, "partitions": 3}},
        "encoders": {"lite0": {"spec": "efficientnet-lite0"}, "minilm": {"spec": "all-minilm-l6-v2"}},
        "evaluate": {"retrieval": ["web"]},
    }
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "-p", "--configfile", str(tmp_path / "my.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # The pool per partition and its table once; the eval split, small, one .beton from every partition.
    assert (counts["convert_partition"], counts["gather_pool_table"], counts["convert"]) == (3, 1, 1)
    outputs = planned_outputs(result.stdout)
    assert {f"results/my/beton/pool/web/part-000{p}.beton" for p in range(3)} <= set(outputs)
    assert "results/my/beton/pool.parquet" in outputs and "results/my/beton/eval_web.beton" in outputs
    # The pool's image embedding reads every partition's .beton (its job's inputs, in the dry run's listing).
    jobs = result.stdout.split("\nrule ")
    image_embed = next(job for job in jobs if job.startswith("embed:") and "embeddings/pool/lite0" in job)
    inputs = next(line for line in image_embed.splitlines() if line.strip().startswith("input:"))
    assert inputs.count("beton/pool/web/part-") == 3 and "results/my/beton/pool.parquet" in inputs
