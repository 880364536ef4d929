"""Rule-based hard-negative captions: each rule by hand, determinism, and refusal of unknown rules."""

import pytest

from vlalign.align.negatives import RULES, change_count, flip_relation, negative_caption, swap_attributes, swap_colour


def test_swap_colour_changes_only_the_colour_and_keeps_capitals():
    negative = swap_colour("Red car parked by a wall", "k1")
    assert negative.endswith(" car parked by a wall") and negative.split()[0] not in ("Red", "red")
    assert negative[0].isupper()
    assert swap_colour("a car parked by a wall", "k1") is None
    assert swap_colour("a grey cat", "k") not in ("a gray cat", "a grey cat")


def test_change_count_words_and_digits():
    assert change_count("two dogs on a sofa", "k").split()[0] in ("one", "three", "four", "five", "six", "seven",
                                                                  "eight", "nine", "ten")  # fmt: skip
    negative = change_count("a clock showing 3 hands", "k")
    assert negative.startswith("a clock showing ") and negative.split()[3] in ("4", "5", "6")
    assert change_count("a dog on a sofa", "k") is None


def test_flip_relation_takes_multi_word_relations_first():
    assert flip_relation("a ball in front of a box", "k") == "a ball behind a box"
    assert flip_relation("a cat on the mat", "k") == "a cat under the mat"
    assert flip_relation("On the left a tree", "k") == "On the right a tree"  # the relation list decides
    assert flip_relation("Above the door a lamp", "k") == "Below the door a lamp"
    assert flip_relation("a sleeping cat", "k") is None


def test_swap_attributes_exchanges_bindings():
    assert swap_attributes("a red cup and a blue ball", "k") == "a blue cup and a red ball"
    assert swap_attributes("a small dog next to a big house", "k") == "a big dog next to a small house"
    assert swap_attributes("a red cup", "k") is None


def test_negative_caption_is_deterministic_and_spreads_over_rules():
    rules = list(RULES)
    caption = "two red cups on a small table next to a blue vase"
    results = {negative_caption(caption, f"key{i}", rules) for i in range(40)}
    assert len({rule for _, rule in results}) == len(rules)  # every rule gets its turn
    assert negative_caption(caption, "key3", rules) == negative_caption(caption, "key3", rules)
    assert all(negative != caption for negative, _ in results)
    assert negative_caption("a photo", "k", rules) == (None, None)
    with pytest.raises(ValueError, match="unknown negative-caption rules"):
        negative_caption(caption, "k", ["antonyms"])


def test_negatives_command_writes_a_keyed_table(tmp_path):
    import json

    import pandas as pd

    from vlalign.cli import main

    captions = ["a red ball", "a photo", "two cats on a sofa"]
    pd.DataFrame({"row": [0, 1, 2], "key": ["a", "b", "c"], "caption": captions}).to_parquet(tmp_path / "pool.parquet")
    settings = {"experiment": "negatives-test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "negatives": {"rules": list(RULES)}}  # fmt: skip
    out = tmp_path / "negatives.parquet"
    assert main(["negatives", "--settings", json.dumps(settings), "--table", str(tmp_path / "pool.parquet"),
                 "--out", str(out)]) == 0  # fmt: skip
    table = pd.read_parquet(out)
    assert table["key"].tolist() == ["a", "c"] and table["row"].tolist() == [0, 1]  # "a photo" has no negative
    assert (table["caption"] != pd.Series(["a red ball", "two cats on a sofa"])).all()
