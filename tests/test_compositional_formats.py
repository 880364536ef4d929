"""SugarCrepe and Winoground read from local copies in their published formats: tiny fixtures written here,
downloaded by the stage's own function, read back from the shards and scored by `compositional_metrics` on
hand-made embeddings whose answers are known (ties included)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageDraw
from source_config import source_config

from vlalign.config import ConfigError, validate_config
from vlalign.data.shards import iter_samples, shard_paths
from vlalign.data.download import run_download
from vlalign.evaluate.evaluation import compositional_metrics

REPO = Path(__file__).resolve().parents[1]


def render(path: Path, colour: tuple[int, int, int], fmt: str) -> None:
    image = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def read_back(out: Path) -> dict:
    """Samples of the eval split by caption, each as `compositional_metrics` gets it (caption in the meta)."""
    assert not (out / "train").exists()  # an evaluation set: everything is eval
    return {s.caption: {**s.meta, "caption": s.caption} for s in iter_samples(shard_paths(out / "eval"))}


def scores(samples: dict, image_vectors: dict, text_vectors: dict) -> dict:
    captions = list(samples)
    z_img = np.array([image_vectors[c] for c in captions], dtype=float)
    return compositional_metrics(z_img, [samples[c] for c in captions],
                                 lambda texts: np.array([text_vectors[t] for t in texts], dtype=float))  # fmt: skip


# --- SugarCrepe ---------------------------------------------------------------------------------------------

SUGARCREPE = {
    "add_att": {
        "0": ("000000000001.jpg", "a dog on a sofa", "a black dog on a sofa"),
        "1": ("000000000002.jpg", "a cat on a mat.", "a fat cat on a mat."),
        "2": ("000000000004.jpg", "a bird", "a blue bird"),
    },
    "replace_rel": {
        # The published captions carry stray spaces: the same caption of image 1 as in add_att.json.
        "0": ("000000000001.jpg", "a dog on a  sofa ", "a dog under a sofa"),
        "1": ("000000000001.jpg", "a man beside a dog", "a man behind a dog"),
        "2": ("000000000005.jpg", "a car", "a car near a car"),
    },
    "swap_obj": {"7": ("000000000002.jpg", "a cat on a mat.", "a mat on a cat.")},
}


def sugarcrepe(root: Path) -> Path:
    """SugarCrepe's `data/` with three of its files, and COCO val2017 images beside it: 4 is broken, 5 missing."""
    data = root / "data"
    data.mkdir(parents=True)
    for stem, entries in SUGARCREPE.items():
        records = {i: {"filename": f, "caption": c, "negative_caption": n} for i, (f, c, n) in entries.items()}
        (data / f"{stem}.json").write_text(json.dumps(records, indent=4))
    render(data / "val2017/000000000001.jpg", (200, 40, 40), "JPEG")
    render(data / "val2017/000000000002.jpg", (40, 200, 40), "JPEG")
    render(data / "val2017/000000000004.jpg", (40, 40, 200), "JPEG")
    broken = data / "val2017/000000000004.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # cut short: a header and no pixels
    return data


def test_sugarcrepe_samples_group_each_true_caption_with_its_negatives(tmp_path):
    data = sugarcrepe(tmp_path / "sugar-crepe")
    summary = run_download("sc", source_config("sugarcrepe", path=str(data), eval_fraction=1.0), tmp_path / "out",
                           None, 2)  # fmt: skip
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("origin")
    # One row per (image, true caption); its origin lists the entries it stands for, so all 7 are accounted.
    assert sorted(e for origin in manifest.index for e in origin.split()) == sorted(
        f"{stem}.json#{i}" for stem, entries in SUGARCREPE.items() for i in entries)
    assert summary["items"] == len(manifest) == 5 and (summary["ok"], summary["failed"]) == (3, 2)
    assert manifest["key"].is_unique
    assert manifest["error"].fillna("ok").to_dict() == {
        "add_att.json#0 replace_rel.json#0": "ok", "add_att.json#1 swap_obj.json#7": "ok",
        "replace_rel.json#1": "ok", "add_att.json#2": "decode_error", "replace_rel.json#2": "no_image",
    }  # fmt: skip
    assert str(data / "val2017/000000000005.jpg") in manifest.loc["replace_rel.json#2", "detail"]
    assert manifest.loc["add_att.json#2", "caption"] == "a bird"

    samples = read_back(tmp_path / "out")
    assert set(samples) == {"a dog on a sofa", "a cat on a mat.", "a man beside a dog"}
    assert samples["a dog on a sofa"]["negatives"] == [{"caption": "a black dog on a sofa", "type": "add_att"},
                                                       {"caption": "a dog under a sofa", "type": "replace_rel"}]
    assert samples["a cat on a mat."]["negatives"] == [{"caption": "a fat cat on a mat.", "type": "add_att"},
                                                       {"caption": "a mat on a cat.", "type": "swap_obj"}]
    assert samples["a man beside a dog"]["negatives"] == [{"caption": "a man behind a dog", "type": "replace_rel"}]
    assert samples["a man beside a dog"]["filename"] == "000000000001.jpg"
    assert all("winoground" not in s and s["source"] == "sc" for s in samples.values())

    images = {"a dog on a sofa": [1, 0, 0], "a cat on a mat.": [0, 1, 0], "a man beside a dog": [0, 0, 1]}
    texts = {
        "a dog on a sofa": [1, 0, 0], "a black dog on a sofa": [0, 1, 0],  # right
        "a dog under a sofa": [2, 0, 0],  # the positive's direction: a tie, wrong
        "a cat on a mat.": [0.6, 0.8, 0], "a fat cat on a mat.": [0, 1, 1],  # 0.8 > 0.71: right
        "a mat on a cat.": [0, 1, 0],  # 1 > 0.8: wrong
        "a man beside a dog": [0, 0, 1], "a man behind a dog": [1, 0, 0],  # right
    }  # fmt: skip
    # Each negative is scored against its own positive, as SugarCrepe does: 3 of 5 right.
    assert scores(samples, images, texts) == {
        "caption_selection_accuracy": 3 / 5, "caption_selection_accuracy_add_att": 1.0,
        "caption_selection_accuracy_replace_rel": 1 / 2, "caption_selection_accuracy_swap_obj": 0.0,
    }  # fmt: skip


def test_sugarcrepe_images_key_and_format_errors_name_the_file(tmp_path):
    data = sugarcrepe(tmp_path / "sugar-crepe")
    (data / "val2017").rename(tmp_path / "coco")
    source = source_config("sugarcrepe", path=str(data), eval_fraction=1.0)
    with pytest.raises(FileNotFoundError, match=r"sources\.sc\.images: .*val2017 is not a folder"):
        run_download("sc", source, tmp_path / "out", None, 2)
    summary = run_download("sc", {**source, "images": str(tmp_path / "coco")}, tmp_path / "out", None, 2)
    assert summary["ok"] == 3

    (data / "swap_obj.json").write_text(json.dumps({"7": {"filename": "000000000002.jpg", "caption": "a cat"}}))
    with pytest.raises(ValueError, match=r"swap_obj\.json entry '7': expected an object with .*negative_caption"):
        run_download("sc", {**source, "images": str(tmp_path / "coco")}, tmp_path / "again", None, 2)
    for path in data.glob("*.json"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"sources\.sc\.path: .* holds no SugarCrepe \.json file"):
        run_download("sc", {**source, "images": str(tmp_path / "coco")}, tmp_path / "again", None, 2)
    assert not (tmp_path / "again").exists()


# --- Winoground ---------------------------------------------------------------------------------------------

WINOGROUND = [
    {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": "an old person kisses a young person",
     "caption_1": "a young person kisses an old person", "tag": "Noun", "secondary_tag": "", "num_main_preds": 1,
     "collapsed_tag": "Object"},
    {"id": 1, "image_0": "ex_1_img_0", "image_1": "ex_1_img_1", "caption_0": "a mug in some grass",
     "caption_1": "some grass in a mug", "tag": "Noun", "secondary_tag": "", "num_main_preds": 1,
     "collapsed_tag": "Object"},
    {"id": 2, "image_0": "ex_2_img_0", "image_1": "ex_2_img_1", "caption_0": "the dog bites the man",
     "caption_1": "the man bites the dog", "tag": "Relation", "secondary_tag": "Symbolic", "num_main_preds": 1,
     "collapsed_tag": ""},  # no collapsed tag: the variant falls back to the tag
]  # fmt: skip


def winoground(root: Path) -> Path:
    """Winoground's layout: `data/examples.jsonl` and the extracted `data/images/{image_i}.png`."""
    lines = [json.dumps(example) for example in WINOGROUND]
    (root / "data").mkdir(parents=True)
    (root / "data/examples.jsonl").write_text("\n".join(lines) + "\n")
    for n, example in enumerate(WINOGROUND):
        for i in (0, 1):
            render(root / "data/images" / f"{example[f'image_{i}']}.png", (60 * n, 100 * i, 90), "PNG")
    return root


S = 0.5**0.5
WG_IMAGES = {
    "an old person kisses a young person": [1, 0, 0], "a young person kisses an old person": [0, 1, 0],
    # Text right (.3 > .1, .8 > .5); image wrong: caption a scores image b (.5) above its own (.3).
    "a mug in some grass": [0.3, 0.1, 0.9**0.5], "some grass in a mug": [0.5, 0.8, 0.11**0.5],
    # Image right; text tied for image b (both captions score S): wrong.
    "the dog bites the man": [1, 0, 0], "the man bites the dog": [S, S, 0],
}  # fmt: skip
WG_TEXTS = {
    "an old person kisses a young person": [1, 0, 0], "a young person kisses an old person": [0, 1, 0],
    "a mug in some grass": [1, 0, 0], "some grass in a mug": [0, 1, 0],
    "the dog bites the man": [1, 0, 0], "the man bites the dog": [0, 1, 0],
}  # fmt: skip


def test_winoground_examples_become_pairs_scored_as_winoground(tmp_path):
    root = winoground(tmp_path / "winoground")
    summary = run_download("wg", source_config("winoground", path=str(root), eval_fraction=1.0), tmp_path / "out",
                           None, 4)  # fmt: skip
    assert (summary["items"], summary["ok"]) == (6, 6)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert sorted(manifest["origin"]) == sorted(f"examples.jsonl#{n}/image_{i}" for n in range(3) for i in (0, 1))

    samples = read_back(tmp_path / "out")
    assert set(samples) == set(WG_TEXTS)
    first = samples["an old person kisses a young person"]
    assert first["winoground"] == {"pair": 0, "role": "a", "variant": "Object"}
    assert first["negatives"] == [{"caption": "a young person kisses an old person", "type": "winoground_swap"}]
    assert (first["tag"], first["secondary_tag"], first["num_main_preds"]) == ("Noun", "", 1)
    assert samples["some grass in a mug"]["winoground"] == {"pair": 1, "role": "b", "variant": "Object"}
    assert samples["the man bites the dog"]["winoground"] == {"pair": 2, "role": "b", "variant": "Relation"}
    # The images are the examples' own: image_1 of example 2 was drawn in colour (120, 100, 90).
    shards = {s.caption: s for s in iter_samples(shard_paths(tmp_path / "out" / "eval"))}
    pixels = Image.open(io.BytesIO(shards["the man bites the dog"].image)).convert("RGB")
    assert pixels.getpixel((24, 24)) == (120, 100, 90)

    assert scores(samples, WG_IMAGES, WG_TEXTS) == {
        "winoground_text_score": 2 / 3, "winoground_image_score": 2 / 3, "winoground_group_score": 1 / 3,
        "winoground_pairs": 3.0,
        # Each caption against its partner on its own image: only the tie of example 2's image b is wrong.
        "caption_selection_accuracy": 5 / 6, "caption_selection_accuracy_winoground_swap": 5 / 6,
    }  # fmt: skip


def test_winoground_broken_and_missing_images_are_recorded_and_their_pairs_left_out(tmp_path):
    root = winoground(tmp_path / "winoground")
    (root / "data/images/ex_2_img_1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (root / "data/images/ex_1_img_0.png").unlink()
    summary = run_download("wg", source_config("winoground", path=str(root), eval_fraction=1.0), tmp_path / "out",
                           None, 4)  # fmt: skip
    assert (summary["items"], summary["ok"], summary["failed"]) == (6, 4, 2)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("origin")
    assert manifest.loc["examples.jsonl#2/image_1", "error"] == "decode_error"
    assert manifest.loc["examples.jsonl#1/image_0", "error"] == "no_image"
    assert "ex_1_img_0.png: no such file" in manifest.loc["examples.jsonl#1/image_0", "detail"]

    samples = read_back(tmp_path / "out")
    assert set(samples) == set(WG_TEXTS) - {"a mug in some grass", "the man bites the dog"}
    # Only example 0 keeps both images; the two halves left still test their captions.
    assert scores(samples, WG_IMAGES, WG_TEXTS) == {
        "winoground_text_score": 1.0, "winoground_image_score": 1.0, "winoground_group_score": 1.0,
        "winoground_pairs": 1.0, "caption_selection_accuracy": 1.0, "caption_selection_accuracy_winoground_swap": 1.0,
    }  # fmt: skip


def test_winoground_format_errors_name_the_file_and_line(tmp_path):
    root = winoground(tmp_path / "winoground")
    source = source_config("winoground", path=str(root), eval_fraction=1.0)
    examples = root / "data/examples.jsonl"
    lines = examples.read_text().splitlines()
    examples.write_text("\n".join(lines + [lines[0]]))
    with pytest.raises(ValueError, match=r"examples\.jsonl line 4: id 0 is used by an earlier example"):
        run_download("wg", source, tmp_path / "out", None, 4)
    examples.write_text("\n".join([lines[0], "{not json"]))
    with pytest.raises(ValueError, match=r"examples\.jsonl line 2: not JSON"):
        run_download("wg", source, tmp_path / "out", None, 4)
    examples.unlink()
    with pytest.raises(FileNotFoundError, match=r"sources\.wg\.path: .*data/examples\.jsonl is not a file"):
        run_download("wg", source, tmp_path / "out", None, 4)
    assert not (tmp_path / "out").exists()


# --- configuration ------------------------------------------------------------------------------------------

@pytest.fixture
def demo():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_benchmark_sources_are_accepted_as_compositional_sets(demo, tmp_path):
    config = copy.deepcopy(demo)
    config["sources"].update(sc={"type": "sugarcrepe", "path": str(sugarcrepe(tmp_path / "sc")), "eval_fraction": 1},
                             wg={"type": "winoground", "path": str(winoground(tmp_path / "wg")), "eval_fraction": 1})
    config["evaluate"]["compositional"] = ["shapes", "sc", "wg"]
    valid = validate_config(config)
    assert valid["sources"]["sc"]["images"] is None and valid["evaluate"]["compositional"] == ["shapes", "sc", "wg"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"eval_fraction": 0.5}, "sources.sc.eval_fraction: a sugarcrepe source is an evaluation set"),
        ({"path": None}, "sources.sc.path: required for type sugarcrepe"),
        ({"path": "/nonexistent/sugar-crepe"}, "sources.sc.path: /nonexistent/sugar-crepe is not a folder"),
        ({"images": "/nonexistent/val2017"}, "sources.sc.images: /nonexistent/val2017 is not a folder"),
        ({"type": "winoground"}, "sources.sc.path: "),  # a SugarCrepe folder has no data/examples.jsonl
    ],
)
def test_bad_benchmark_source_is_refused_naming_the_key(demo, tmp_path, entry, message):
    config = copy.deepcopy(demo)
    source = {"type": "sugarcrepe", "path": str(sugarcrepe(tmp_path / "sc")), "eval_fraction": 1, **entry}
    config["sources"]["sc"] = source
    config["evaluate"]["compositional"] = ["sc"]
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate_config(config)
