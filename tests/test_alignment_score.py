import numpy as np
import pytest

from vlalign.align.checkpoint import save_checkpoint
from vlalign.align.heads import AlignmentModel
from vlalign.curate.alignment import alignment_scores
from vlalign.align.projection import project
from vlalign.store.embeddings import EmbeddingWriter


def store(path, array, keys):
    writer = EmbeddingWriter(path, array.shape[1], meta={"spec": "test"})
    writer.append(array, keys)
    writer.close()


def test_scores_are_the_pair_cosines_in_store_order(tmp_path):
    rng = np.random.default_rng(0)
    images, texts = rng.standard_normal((50, 12)), rng.standard_normal((50, 7))
    keys = [f"k{i:02d}" for i in range(50)]
    store(tmp_path / "img", images, keys)
    store(tmp_path / "txt", texts, keys)
    model = AlignmentModel(12, 7, head="mlp", target_dim=5, width_factor=2).eval()
    save_checkpoint(tmp_path / "ckpt", model, {})
    scores = alignment_scores(tmp_path / "ckpt", tmp_path / "img", tmp_path / "txt", batch_size=16)
    assert scores["key"].tolist() == keys
    z_img, z_txt = project(model, images.astype(np.float16), texts.astype(np.float16))
    np.testing.assert_allclose(scores["alignment_score"], (z_img * z_txt).sum(1), rtol=1e-5, atol=1e-6)
    assert scores["alignment_score"].between(-1, 1).all()


def test_stores_of_different_samples_are_refused(tmp_path):
    store(tmp_path / "img", np.ones((3, 4)), ["a", "b", "c"])
    store(tmp_path / "txt", np.ones((3, 4)), ["a", "c", "b"])
    save_checkpoint(tmp_path / "ckpt", AlignmentModel(4, 4, head="linear", target_dim=2), {})
    with pytest.raises(ValueError, match="same samples"):
        alignment_scores(tmp_path / "ckpt", tmp_path / "img", tmp_path / "txt")


def test_embeddings_of_other_encoders_are_refused_naming_the_checkpoint(tmp_path):
    store(tmp_path / "img", np.ones((3, 6)), ["a", "b", "c"])
    store(tmp_path / "txt", np.ones((3, 4)), ["a", "b", "c"])
    save_checkpoint(tmp_path / "ckpt", AlignmentModel(4, 4, head="linear", target_dim=2), {})
    with pytest.raises(ValueError, match=r"checkpoint .*ckpt was trained on 4-d image features, but these image "
                                         r"embeddings are \(3, 6\)"):  # fmt: skip
        alignment_scores(tmp_path / "ckpt", tmp_path / "img", tmp_path / "txt")


def test_a_precomputed_score_in_the_metadata_filters_the_pool(tmp_path):
    """DataComp's CLIP-score filter: the score each sample's metadata carries, not a run's; a sample without a
    number there fails."""
    import json

    import pandas as pd

    from curate_fixtures import png, scene
    from vlalign.cli import main
    from vlalign.curate.alignment import metadata_scores
    from vlalign.curate.measure import measure_pool
    from vlalign.data.shards import Sample, ShardWriter

    values = {"a": 0.31, "b": 0.12, "c": None, "d": "high", "e": 0.27, "f": 0.2}
    with ShardWriter(tmp_path / "shards", 4) as writer:
        for i, (key, value) in enumerate(values.items()):
            meta = {"source": "web", **({} if value is None else {"clip_l14_similarity_score": value})}
            writer.write(Sample(key, png(scene(i)), "png", f"a scene number {i}", meta))
    scores = metadata_scores([tmp_path / "shards"], "clip_l14_similarity_score")
    assert scores["key"].tolist() == list(values)
    np.testing.assert_allclose(scores["alignment_score"], [0.31, 0.12, np.nan, np.nan, 0.27, 0.2], rtol=1e-6)

    measure_pool([tmp_path / "shards"], [], {"ocr": "off", "workers": 1}, progress=False).to_parquet(
        tmp_path / "measurements.parquet")
    settings = {"experiment": "scores", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "samples_per_shard": 10,
                "filters": [{"name": "alignment", "score_field": "clip_l14_similarity_score", "top_fraction": 0.5}]}
    assert main(["select", "--settings", json.dumps(settings), "--pool", "clip", "--measurements",
                 str(tmp_path / "measurements.parquet"), "--inputs", str(tmp_path / "shards"),
                 "--out", str(tmp_path / "pool")]) == 0  # fmt: skip
    decisions = pd.read_parquet(tmp_path / "pool" / "decisions.parquet").set_index("key")
    assert decisions.index[decisions["kept"]].tolist() == ["a", "e"]  # the best half of the four scored
    assert decisions.loc[["c", "d"], "reason"].eq("alignment").all()
