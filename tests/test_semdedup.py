"""SemDeDup: planted near duplicates are found and distinct images are not, the result does not depend on the
workers, the filter follows epsilon, and the stage runs from an embedding store to a curated pool."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vlalign.curate.decide import decide
from vlalign.curate.semdedup import semantic_neighbours
from vlalign.schema import ConfigError
from vlalign.store.embeddings import EmbeddingWriter

DIM = 64


def write_store(path, vectors: np.ndarray, keys: list[str]):
    writer = EmbeddingWriter(path, DIM, rows_per_part=128)  # several parts, so reads cross part borders
    writer.append(vectors, keys)
    writer.close()
    return path


def planted_pool(distinct: int = 600, copies: int = 60, seed: int = 0):
    """Random directions (pairwise cosine about 0 ± 0.3 in 64-d) and near copies of some of them (cosine ≈ 0.999),
    the copies shuffled in among the originals. Returns vectors, keys and the planted (original, copy) pairs."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((distinct, DIM))
    originals = rng.choice(distinct, copies, replace=False)
    near = base[originals] + 0.04 * np.linalg.norm(base[originals], axis=1, keepdims=True) / np.sqrt(DIM) * \
        rng.standard_normal((copies, DIM))  # fmt: skip
    vectors = np.concatenate([base, near])
    keys = [f"x{i:04d}" for i in range(distinct)] + [f"copy_of_x{i:04d}" for i in originals]
    order = rng.permutation(len(keys))
    pairs = {(f"x{i:04d}", f"copy_of_x{i:04d}") for i in originals}
    return vectors[order], [keys[i] for i in order], pairs


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    vectors, keys, pairs = planted_pool()
    store = write_store(tmp_path_factory.mktemp("semdedup") / "pool", vectors, keys)
    return store, pairs, semantic_neighbours(store, {"clusters": 8, "workers": 1})


def test_planted_near_duplicates_are_found_and_distinct_points_are_not(planted):
    _, pairs, found = planted
    flagged = found[found["semantic_similarity"] > 1 - 0.01]
    # Recall 1.0: of each planted pair exactly one member is flagged, naming the other; precision 1.0: nothing else.
    found_pairs = {frozenset((row.key, row.semantic_duplicate_of)) for row in flagged.itertuples()}
    assert found_pairs == set(map(frozenset, pairs))
    assert len(flagged) == len(pairs)
    distinct = found[~found["key"].isin(flagged["key"])]
    assert distinct["semantic_similarity"].max() < 0.8


def test_every_sample_gets_one_row_and_each_cluster_one_first_member(planted):
    _, _, found = planted
    assert found["key"].is_unique and len(found) == 660
    assert found["semantic_cluster"].nunique() == 8
    firsts = found[found["semantic_similarity"].isna()]
    assert sorted(firsts["semantic_cluster"]) == list(range(8)) and firsts["semantic_duplicate_of"].isna().all()
    others = found.dropna(subset=["semantic_similarity"])
    cluster_of = found.set_index("key")["semantic_cluster"]
    # The earlier member named is always in the same cluster.
    assert (cluster_of[others["semantic_duplicate_of"]].to_numpy() == others["semantic_cluster"].to_numpy()).all()


def test_the_result_is_the_same_serial_or_parallel_and_run_after_run(planted):
    store, _, serial = planted
    parallel = semantic_neighbours(store, {"clusters": 8, "workers": 4})
    again = semantic_neighbours(store, {"clusters": 8, "workers": 1})
    pd.testing.assert_frame_equal(serial, parallel)
    pd.testing.assert_frame_equal(serial, again)


def test_members_are_ordered_farthest_from_the_centroid_first(tmp_path):
    # Three versions of one image along a line; the centroid is their mean, at t = 0.083. SemDeDup ("hard") puts
    # the least typical first, so it is the one of the group that is kept.
    rng = np.random.default_rng(1)
    centre, outward = rng.standard_normal(DIM), rng.standard_normal(DIM) / np.sqrt(DIM)
    vectors = np.stack([centre + t * outward for t in (0.0, 0.05, 0.2)])
    found = semantic_neighbours(write_store(tmp_path / "s", vectors, ["a", "b", "outlier"]),
                                {"clusters": 1}).set_index("key")  # fmt: skip
    assert np.isnan(found.at["outlier", "semantic_similarity"])  # first: 0.117 from the centroid
    assert found.at["a", "semantic_duplicate_of"] == "outlier"  # second (0.083): only the outlier is before it
    assert found.at["b", "semantic_duplicate_of"] == "a"  # last (0.033): a is the closer of the two before it


def test_the_filter_drops_above_one_minus_epsilon_and_keeps_the_rest():
    similarity = [np.nan, 0.5, 0.98, 0.995, 0.9995, 1.0]
    m = pd.DataFrame({"key": list("abcdef"), "semantic_similarity": similarity,
                      "semantic_duplicate_of": [None, "a", "a", "b", "c", "d"]})  # fmt: skip
    loose = decide(m, [{"name": "semantic_dedup", "epsilon": 0.05}])
    default = decide(m, [{"name": "semantic_dedup"}])  # epsilon 0.01
    strict = decide(m, [{"name": "semantic_dedup", "epsilon": 0.001}])
    assert loose["kept"].tolist() == [True, True, False, False, False, False]
    assert default["kept"].tolist() == [True, True, True, False, False, False]
    assert strict["kept"].tolist() == [True, True, True, True, False, False]
    assert set(default.loc[~default["kept"], "reason_detail"]) == {"epsilon"}
    assert set(default.loc[~default["kept"], "reason"]) == {"semantic_dedup"}


def test_a_sample_stays_when_the_one_it_repeats_left_at_an_earlier_filter():
    # b repeats a, which the image filter drops; d repeats c, which stays; e repeats d (SemDeDup drops chains too).
    m = pd.DataFrame({"key": list("abcde"), "semantic_similarity": [np.nan, 0.999, np.nan, 0.999, 0.999],
                      "semantic_duplicate_of": [None, "a", None, "c", "d"], "decode_ok": True,
                      "min_side": [10, 100, 100, 100, 100], "aspect_ratio": 1.0, "pixel_std": 40.0})  # fmt: skip
    d = decide(m, [{"name": "image", "min_side": 32}, {"name": "semantic_dedup"}])
    assert d["reason"].tolist() == ["image", "", "", "semantic_dedup", "semantic_dedup"]
    assert d["pass_semantic_dedup"].isna().tolist() == [True, False, False, False, False]  # a never reached it


@pytest.mark.parametrize("settings, key", [
    ({"clusters": 50}, "curate.semantic.clusters"),  # more clusters than the 12 samples
    ({"clusters": 0}, "clusters"),
    ({"iterations": 0}, "iterations"),
    ({"cluster": 2}, "cluster"),
])  # fmt: skip
def test_bad_settings_are_refused_naming_the_key(tmp_path, settings, key):
    vectors = np.random.default_rng(0).standard_normal((12, DIM))
    store = write_store(tmp_path / "s", vectors, [str(i) for i in range(12)])
    with pytest.raises(ConfigError, match=key):
        semantic_neighbours(store, settings)


def test_stage_runs_from_a_store_to_a_curated_pool(tmp_path):
    from curate_fixtures import png, scene

    from vlalign.cli import main
    from vlalign.curate.measure import measure_pool
    from vlalign.data.shards import Sample, ShardWriter

    keys = [f"s{i}" for i in range(8)]
    with ShardWriter(tmp_path / "shards", 8) as writer:
        for i, key in enumerate(keys):
            writer.write(Sample(key, png(scene(i)), "png", f"a scene number {i}", {"source": "web"}))
    vectors = np.random.default_rng(2).standard_normal((8, DIM))
    vectors[5] = vectors[2] * 1.01  # s5 shows what s2 shows
    write_store(tmp_path / "embeddings", vectors, keys)
    common = {"experiment": "semdedup", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    settings = {**common, "semantic": {"clusters": 2, "iterations": 10, "seed": 0, "workers": 2}}
    assert main(["semdedup", "--settings", json.dumps(settings), "--image-embeddings", str(tmp_path / "embeddings"),
                 "--out", str(tmp_path / "neighbours.parquet")]) == 0  # fmt: skip
    neighbours = pd.read_parquet(tmp_path / "neighbours.parquet").set_index("key")
    flagged = neighbours.index[neighbours["semantic_similarity"] > 0.99].tolist()
    assert len(flagged) == 1 and flagged[0] in {"s2", "s5"}
    assert neighbours.at[flagged[0], "semantic_duplicate_of"] == ({"s2", "s5"} - set(flagged)).pop()

    measure_pool([tmp_path / "shards"], [], {"ocr": "off", "workers": 1}, progress=False).to_parquet(
        tmp_path / "measurements.parquet")
    settings = {**common, "filters": [{"name": "semantic_dedup"}]}
    assert main(["select", "--settings", json.dumps(settings), "--pool", "semantic", "--measurements",
                 str(tmp_path / "measurements.parquet"), "--semantic-neighbours", str(tmp_path / "neighbours.parquet"),
                 "--inputs", str(tmp_path / "shards"), "--out", str(tmp_path / "pool")]) == 0  # fmt: skip
    decisions = pd.read_parquet(tmp_path / "pool" / "decisions.parquet").set_index("key")
    dropped = decisions.index[~decisions["kept"]].tolist()
    assert len(dropped) == 1 and dropped[0] in {"s2", "s5"}
    assert decisions.at[dropped[0], "reason"] == "semantic_dedup"
    assert decisions.at[dropped[0], "semantic_duplicate_of"] == ({"s2", "s5"} - set(dropped)).pop()
    assert (tmp_path / "pool" / "filters.png").exists()
