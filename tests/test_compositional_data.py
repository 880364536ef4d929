"""The synthetic compositionality set: determinism, negatives false of their scenes, Winoground pairs, items as
the download stage writes them, and images that show what their captions say (checked on the pixels, not the
description)."""

from __future__ import annotations

import io
from collections import Counter
from itertools import product

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vlalign.data import compositional as comp
from vlalign.data.images import decode_rgb

N, SEED, SIZE = 80, 3, 224


@pytest.fixture(scope="module")
def samples():
    return list(comp.compositional_items("shapes", N, SEED, image_size=SIZE))


def _true_captions(scene: dict) -> set[str]:
    """Every caption of the grammar true of the scene, enumerated from its objects: an oracle written apart
    from the module's parser and evaluator."""
    objects = scene["objects"]
    if scene["kind"] == "count":
        groups = Counter((o["colour"], o["shape"]) for o in objects)
        return {f"{comp.COUNT_WORDS[n - 1]} {colour} {shape if n == 1 else comp.PLURALS[shape]}"
                for (colour, shape), n in groups.items()}  # fmt: skip

    def phrases(o):
        for words in ([o["colour"], o["shape"]], [o["size"], o["colour"], o["shape"]]):
            yield ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)

    captions = set()
    for a, b in product(objects, objects):
        if a is b:
            continue
        dx, dy = b["x"] - a["x"], b["y"] - a["y"]
        held = {"to the left of": dx, "to the right of": -dx, "above": dy, "below": -dy}
        for relation in (r for r, d in held.items() if d > comp.MARGIN):
            captions |= {f"{pa} {relation} {pb}" for pa in phrases(a) for pb in phrases(b)}
    return captions


def _as_tuples(items) -> list[tuple]:
    return [(i.key, i.origin, i.caption, i.image, i.image_ext, i.meta) for i in items]


def test_same_seed_gives_identical_bytes():
    first = _as_tuples(comp.compositional_items("shapes", 24, 7))
    assert first == _as_tuples(comp.compositional_items("shapes", 24, 7)) and len(first) == 24
    assert _as_tuples(comp.compositional_items("shapes", 24, 8)) != first


def test_captions_true_and_every_negative_false_of_its_scene(samples):
    for sample in samples:
        scene, truths = sample.meta["scene"], _true_captions(sample.meta["scene"])
        assert sample.caption in truths and comp.caption_is_true(sample.caption, scene)
        assert sample.meta["negatives"], sample.key
        for negative in sample.meta["negatives"]:
            assert negative["caption"] != sample.caption
            assert negative["caption"] not in truths, (sample.key, negative)
            assert not comp.caption_is_true(negative["caption"], scene)
            comp.parse_caption(negative["caption"])  # in the grammar: a well-formed sentence, not a broken edit
        assert len({n["type"] for n in sample.meta["negatives"]}) == len(sample.meta["negatives"])


def test_every_negative_type_occurs_and_fits_its_scene(samples):
    assert {n["type"] for s in samples for n in s.meta["negatives"]} == set(comp.NEGATIVE_TYPES)
    count_only = {"change_count"}
    relation_only = {"swap_attribute", "swap_object", "replace_relation"}
    for sample in samples:
        types = {n["type"] for n in sample.meta["negatives"]}
        assert not types & (relation_only if sample.meta["scene"]["kind"] == "count" else count_only)


def test_winoground_pairs_permute_words_and_each_caption_fits_one_image(samples):
    paired = [s for s in samples if "winoground" in s.meta]
    pairs = list(zip(paired[::2], paired[1::2]))
    assert len(paired) == 2 * len(pairs) and len(pairs) == (N // 4) // 2
    assert len({a.meta["winoground"]["pair"] for a, _ in pairs}) == len(pairs)
    for a, b in pairs:
        pair, variant = a.meta["winoground"]["pair"], a.meta["winoground"]["variant"]
        assert a.meta["winoground"] == {"pair": pair, "role": "a", "variant": variant}
        assert b.meta["winoground"] == {"pair": pair, "role": "b", "variant": variant}
        assert a.caption != b.caption and sorted(a.caption.split()) == sorted(b.caption.split())
        truths_a, truths_b = _true_captions(a.meta["scene"]), _true_captions(b.meta["scene"])
        assert a.caption in truths_a and a.caption not in truths_b
        assert b.caption in truths_b and b.caption not in truths_a
    # Every way of building a pair is used on a larger set (generation alone, nothing rendered).
    variants = {item["winoground"]["variant"] for item in comp.generate(400, seed=0) if "winoground" in item}
    assert variants == set(comp.WINOGROUND_VARIANTS)


def test_items_are_download_ready(samples):
    assert [s.key for s in samples] == [f"shapes_comp-{i:06d}" for i in range(N)]
    assert {s.meta["scene"]["kind"] for s in samples} == {"count", "relation"}
    for sample in samples:
        assert sample.image_ext == "png" and sample.error is None
        assert sample.origin == f"synthetic:{SEED}:{sample.key.removeprefix('shapes_')}"
        assert Image.open(io.BytesIO(sample.image)).size == (SIZE, SIZE)
        assert sample.caption == comp.caption_of(comp.scene_claim(sample.meta["scene"]))


def _mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    return (pixels == np.array(comp.COLOURS[colour])).all(axis=-1)


def test_images_show_what_the_captions_say(samples):
    for sample in samples:
        pixels = np.asarray(decode_rgb(sample.image))
        scene = sample.meta["scene"]
        for obj in scene["objects"]:
            # The dominant colour of a 5x5 patch at the drawn centre is the object's colour.
            x, y = round(obj["x"] * SIZE), round(obj["y"] * SIZE)
            patch = [tuple(p) for p in pixels[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3)]
            assert Counter(patch).most_common(1)[0][0] == comp.COLOURS[obj["colour"]], (sample.key, obj)
        claim = comp.parse_caption(sample.caption)
        if isinstance(claim, comp.CountClaim):
            # As many separate blobs of the colour as the caption counts (slivers at anti-aliased tips aside).
            labels, found = ndimage.label(_mask(pixels, claim.thing.colour), structure=np.ones((3, 3)))
            sizes = ndimage.sum_labels(np.ones_like(labels), labels, range(1, found + 1))
            assert (sizes > 20).sum() == claim.count, sample.key
            continue
        # The relation holds between the centroids of the two colours' pixels, measured on the image.
        subject, other = _mask(pixels, claim.subject.colour), _mask(pixels, claim.object.colour)
        (sy, sx), (oy, ox) = ndimage.center_of_mass(subject), ndimage.center_of_mass(other)
        shift = {"to the left of": ox - sx, "to the right of": sx - ox, "above": oy - sy, "below": sy - oy}
        assert shift[claim.relation] > comp.MARGIN * SIZE, (sample.key, sample.caption)
        if claim.subject.size:  # sizes are named only when they differ: the big one covers more pixels
            assert (subject.sum() > other.sum()) == (claim.subject.size == "big"), sample.key


def test_parser_and_evaluator_on_hand_written_scenes():
    scene = {"kind": "relation", "relation": "to the left of",
             "objects": [comp._obj("circle", "red", "small", 0.25, 0.5), comp._obj("square", "blue", "big", 0.7, 0.52)]}
    assert comp.caption_of(comp.scene_claim(scene)) == "a small red circle to the left of a big blue square"
    assert comp.caption_is_true("a red circle to the left of a blue square", scene)
    assert comp.caption_is_true("a big blue square to the right of a red circle", scene)
    for false in ("a blue circle to the left of a red square", "a red circle to the right of a blue square",
                  "a red circle above a blue square", "a big red circle to the left of a blue square",
                  "a red star to the left of a blue square"):  # fmt: skip
        assert not comp.caption_is_true(false, scene), false
    count = {"kind": "count", "objects": [comp._obj("cross", "orange", "medium", x, 0.5) for x in (0.2, 0.5, 0.8)]}
    assert comp.caption_of(comp.scene_claim(count)) == "three orange crosses"
    assert not comp.caption_is_true("two orange crosses", count)
    for bad in ("a red circle", "two red circle", "one red circles", "a red circle near a blue square"):
        with pytest.raises(ValueError, match="not a caption"):
            comp.parse_caption(bad)
