import numpy as np
import torch

from vlalign.align.heads import AlignmentModel
from vlalign.align.projection import project
from vlalign.evaluate.evaluation import class_embeddings, class_prompts


class FakeTextEncoder:
    """Deterministic stand-in: one fixed random vector per distinct prompt."""

    def __init__(self, dim):
        self.dim = dim

    def encode(self, texts, batch_size=256):
        return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts]).astype(np.float32)


def test_class_prompts_order_is_class_major():
    assert class_prompts(["cat", "dog"], ["a {}.", "the {}!"]) == ["a cat.", "the cat!", "a dog.", "the dog!"]


def test_class_embeddings_average_prompts_per_class():
    torch.manual_seed(0)
    model = AlignmentModel(8, 6, head="linear", target_dim=4).eval()
    encoder = FakeTextEncoder(6)
    emb = class_embeddings(model, encoder, ["a", "b", "c"], ["x {}", "y {}"])
    assert emb.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, rtol=1e-6)
    _, prompts = project(model, None, encoder.encode(class_prompts(["b"], ["x {}", "y {}"])))
    expected = prompts.mean(0) / np.linalg.norm(prompts.mean(0))
    np.testing.assert_allclose(emb[1], expected, rtol=1e-5)


def test_project_normalises_and_keeps_none():
    model = AlignmentModel(8, 6, head="star", target_dim=4, width_factor=2).eval()
    features = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float16)
    z_img, z_txt = project(model, features, None)
    assert z_txt is None and z_img.shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(z_img, axis=1), 1, rtol=1e-5)


def test_imagenet80_templates_expand_in_place():
    from vlalign.evaluate.evaluation import class_prompts, expand_templates

    templates = expand_templates(["a clip art of a {}.", "imagenet80"])
    assert len(templates) == 81 == len(set(templates)) and templates[0] == "a clip art of a {}."
    assert all("{}" in t for t in templates) and "itap of a {}." in templates
    assert class_prompts(["cat"], templates[:2]) == ["a clip art of a cat.", "a bad photo of a cat."]


def test_caption_sets_list_every_caption_with_its_image():
    import json

    import pandas as pd

    from vlalign.evaluate.evaluation import caption_sets

    metas = [{"captions": ["a dog", "a puppy", "a brown dog"]}, {}, {"captions": ["a cow"]}]
    table = pd.DataFrame({"caption": ["a dog", "a cat", "a cow"], "meta_json": [json.dumps(m) for m in metas]})
    texts, owners = caption_sets(table)
    assert texts == ["a dog", "a puppy", "a brown dog", "a cat", "a cow"]
    assert owners.tolist() == [0, 0, 0, 1, 2]
    assert caption_sets(table.iloc[1:]) is None  # one caption each: the stored embeddings serve


def test_compositional_metrics_on_a_hand_made_set():
    """Two images with typed negatives and one Winoground pair; captions embed as fixed unit vectors."""
    from vlalign.evaluate.evaluation import compositional_metrics

    vectors = {"red left": [1.0, 0.0], "blue left": [0.0, 1.0], "red right": [0.8, 0.6], "two reds": [0.6, 0.8]}
    z_img = np.array([[1.0, 0.0], [0.0, 1.0]])
    metas = [
        {"caption": "red left", "negatives": [{"caption": "red right", "type": "replace_relation"},
                                              {"caption": "blue left", "type": "swap_attribute"}],
         "winoground": {"pair": "p0", "role": "a"}},
        {"caption": "blue left", "negatives": [{"caption": "two reds", "type": "change_count"}],
         "winoground": {"pair": "p0", "role": "b"}},
    ]  # fmt: skip
    found = compositional_metrics(z_img, metas, lambda texts: np.array([vectors[t] for t in texts]))
    # Image 0 beats both of its negatives (cosine 1 > 0.8 and 1 > 0), image 1 its one (1 > 0.8).
    assert found["caption_selection_accuracy"] == 1.0
    assert found["caption_selection_accuracy_replace_relation"] == 1.0
    # The pair: each image prefers its own caption and each caption its own image.
    scores = (found["winoground_text_score"], found["winoground_image_score"], found["winoground_group_score"])
    assert scores == (1, 1, 1)
    metas[1]["negatives"] = [{"caption": "blue left", "type": "tie"}]  # identical to its positive: a tie is wrong
    assert compositional_metrics(z_img, metas, lambda t: np.array([vectors[x] for x in t]))[
        "caption_selection_accuracy_tie"] == 0.0


def test_the_evaluate_command_writes_metrics_with_intervals_and_every_items_outcome(tmp_path):
    """`vlalign evaluate --seed` on a hand-made checkpoint and a retrieval set of 30 pairs: metrics.json holds the
    seed and an interval for each mean over items, per_sample.parquet beside it the outcomes they are means of."""
    import json

    import pandas as pd

    from vlalign.align.checkpoint import save_checkpoint
    from vlalign.cli import main
    from vlalign.evaluate.bootstrap import percentile_interval
    from vlalign.store.embeddings import EmbeddingWriter

    torch.manual_seed(0)
    towers = {"image": {"alias": "img", "spec": "test"}, "text": {"alias": "txt", "spec": "test"}}
    checkpoint = save_checkpoint(tmp_path / "train" / "r" / "seed-3", AlignmentModel(8, 6, head="linear", target_dim=4),
                                 {"encoders": towers, "train_pairs": 10})  # fmt: skip
    rng = np.random.default_rng(0)
    keys = [f"e{i:02d}" for i in range(30)]
    image = rng.standard_normal((30, 8)).astype(np.float32)
    for alias, array in (("img", image), ("txt", image[:, :6] + 0.3 * rng.standard_normal((30, 6)))):
        writer = EmbeddingWriter(tmp_path / "embeddings" / "eval_x" / alias, array.shape[1], meta={"spec": "test"})
        writer.append(array.astype(np.float32), keys)
        writer.close()
    (tmp_path / "beton").mkdir()
    pd.DataFrame({"key": keys, "caption": [f"caption {k}" for k in keys], "meta_json": "{}"}).to_parquet(
        tmp_path / "beton" / "eval_x.parquet")
    settings = {"experiment": "e", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "device": "cpu",
                "evaluate": {"retrieval": ["x"], "ks": [1, 5], "bootstrap_resamples": 200}, "text_encoder": {}}
    out = tmp_path / "evaluate" / "r" / "seed-3" / "metrics.json"
    assert main(["evaluate", "--settings", json.dumps(settings), "--run", "r", "--seed", "3", "--checkpoint",
                 str(checkpoint), "--eval-dir", str(tmp_path), "--out", str(out)]) == 0  # fmt: skip

    written = json.loads(out.read_text())
    assert (written["name"], written["seed"], written["metrics"]["train_pairs"]) == ("r", 3, 10.0)
    per_sample = pd.read_parquet(out.with_name("per_sample.parquet"))
    means = {f"eval_x.{d}_recall_at_{k}" for d in ("image_to_text", "text_to_image", "mean") for k in (1, 5)}
    assert set(written["intervals"]) == means == set(per_sample["metric"])
    for metric in means:
        rows = per_sample[per_sample["metric"] == metric]
        assert list(rows["item"]) == keys
        assert rows["value"].to_numpy().mean() == written["metrics"][metric]
        assert written["intervals"][metric] == list(percentile_interval(rows["value"].to_numpy(), 200))
