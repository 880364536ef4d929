"""A synthetic compositionality benchmark: rendered scenes of coloured shapes, true and hard-negative captions.

The guide (section 3.4, grounding) names spatial relations, counting and attribute binding as where
contrastive models fail; ARO, SugarCrepe and Winoground probe them with captions that keep the words and
change the meaning. Those sets need downloads, so the offline demo renders its own. Every scene is a
structured description; captions are rendered from claims about it, and `caption_is_true` parses a caption
and evaluates it against the scene's objects and their positions. That is how each negative is checked
to be false, and each Winoground caption true of exactly one image of its pair, at construction.
"""

from __future__ import annotations

import io
import itertools
import math
import random
import re
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

from vlalign.data.sources import SourceItem, safe_key

COLOURS = {"red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (235, 205, 20), "green": (40, 160, 60),
           "blue": (40, 80, 220), "purple": (140, 60, 180)}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
PLURALS = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}
COUNT_WORDS = ("one", "two", "three", "four")
# Radius as a fraction of the image side; count scenes use one middle size and never name it.
RADII = {"small": 0.09, "big": 0.17, "medium": 0.1}
RELATIONS = ("to the left of", "to the right of", "above", "below")
# Centres closer than this along an axis (fraction of the side) are neither left/right nor above/below of
# each other, so a scene laid out for "left of" never also makes "above" true.
MARGIN = 0.15
NEGATIVE_TYPES = ("swap_attribute", "swap_object", "replace_attribute", "replace_object", "replace_relation",
                  "change_count")  # fmt: skip
BACKGROUND = (255, 255, 255)
SUPERSAMPLE = 2  # drawn at twice the size and box-reduced: smooth edges, pure colour inside each shape


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    size: str | None = None  # None: the caption does not say, any size matches


@dataclass(frozen=True)
class CountClaim:
    count: int
    thing: Thing


@dataclass(frozen=True)
class RelationClaim:
    subject: Thing
    relation: str
    object: Thing


# --- captions -----------------------------------------------------------------------------------------------

def _noun_phrase(thing: Thing) -> str:
    words = ([thing.size] if thing.size else []) + [thing.colour, thing.shape]
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article] + words)


def caption_of(claim: CountClaim | RelationClaim) -> str:
    if isinstance(claim, CountClaim):
        noun = claim.thing.shape if claim.count == 1 else PLURALS[claim.thing.shape]
        return f"{COUNT_WORDS[claim.count - 1]} {claim.thing.colour} {noun}"
    return f"{_noun_phrase(claim.subject)} {claim.relation} {_noun_phrase(claim.object)}"


_COLOUR = "|".join(COLOURS)
_NP = rf"an? (?:(small|big) )?({_COLOUR}) ({'|'.join(SHAPES)})"
_RELATION_RE = re.compile(rf"{_NP} ({'|'.join(RELATIONS)}) {_NP}")
_COUNT_RE = re.compile(rf"({'|'.join(COUNT_WORDS)}) ({_COLOUR}) (\w+)")


def parse_caption(caption: str) -> CountClaim | RelationClaim:
    """The claim a caption of this benchmark's grammar makes; anything else raises ValueError."""
    if match := _RELATION_RE.fullmatch(caption):
        size1, colour1, shape1, relation, size2, colour2, shape2 = match.groups()
        return RelationClaim(Thing(colour1, shape1, size1), relation, Thing(colour2, shape2, size2))
    if match := _COUNT_RE.fullmatch(caption):
        word, colour, noun = match.groups()
        count = COUNT_WORDS.index(word) + 1
        nouns = {(PLURALS[s] if count > 1 else s): s for s in SHAPES}
        if noun in nouns:
            return CountClaim(count, Thing(colour, nouns[noun]))
    raise ValueError(f"not a caption of the compositional grammar: {caption!r}")


def _matches(obj: dict, thing: Thing) -> bool:
    return (obj["colour"] == thing.colour and obj["shape"] == thing.shape
            and (thing.size is None or obj["size"] == thing.size))  # fmt: skip


def _related(a: dict, b: dict, relation: str) -> bool:
    dx, dy = b["x"] - a["x"], b["y"] - a["y"]  # image y grows downwards
    return {"to the left of": dx, "to the right of": -dx, "above": dy, "below": -dy}[relation] > MARGIN


def caption_is_true(caption: str, scene: dict) -> bool:
    """Whether the caption describes the scene, judged from its objects' attributes and positions."""
    claim = parse_caption(caption)
    objects = scene["objects"]
    if isinstance(claim, CountClaim):
        return sum(_matches(o, claim.thing) for o in objects) == claim.count
    return any(_matches(a, claim.subject) and _matches(b, claim.object) and _related(a, b, claim.relation)
               for a in objects for b in objects if a is not b)  # fmt: skip


def scene_claim(scene: dict) -> CountClaim | RelationClaim:
    """The claim the true caption makes. Relation captions name sizes only when the two objects differ."""
    objects = scene["objects"]
    if scene["kind"] == "count":
        return CountClaim(len(objects), Thing(objects[0]["colour"], objects[0]["shape"]))
    a, b = objects
    sized = a["size"] != b["size"]
    things = [Thing(o["colour"], o["shape"], o["size"] if sized else None) for o in (a, b)]
    return RelationClaim(things[0], scene["relation"], things[1])


# --- negatives ----------------------------------------------------------------------------------------------

def _candidates(claim: CountClaim | RelationClaim) -> dict[str, list]:
    """Every claim of each negative type reachable from `claim` by one edit (not yet checked false)."""
    if isinstance(claim, CountClaim):
        thing = claim.thing
        return {
            "replace_attribute": [replace(claim, thing=replace(thing, colour=c)) for c in COLOURS if c != thing.colour],
            "replace_object": [replace(claim, thing=replace(thing, shape=s)) for s in SHAPES if s != thing.shape],
            "change_count": [replace(claim, count=n) for n in range(1, len(COUNT_WORDS) + 1) if n != claim.count],
        }
    s, o = claim.subject, claim.object
    swapped_attributes = [replace(claim, subject=replace(s, colour=o.colour), object=replace(o, colour=s.colour))]
    if s.size and o.size:
        swapped_attributes.append(replace(claim, subject=replace(s, size=o.size), object=replace(o, size=s.size)))
    replaced = []
    for role, thing in (("subject", s), ("object", o)):
        replaced += [replace(claim, **{role: replace(thing, colour=c)}) for c in COLOURS if c != thing.colour]
        if thing.size:
            other = "small" if thing.size == "big" else "big"
            replaced.append(replace(claim, **{role: replace(thing, size=other)}))
    return {
        "swap_attribute": swapped_attributes,
        "swap_object": [replace(claim, subject=replace(s, shape=o.shape), object=replace(o, shape=s.shape))],
        "replace_attribute": replaced,
        "replace_object": [replace(claim, **{role: replace(thing, shape=shape)})
                           for role, thing in (("subject", s), ("object", o)) for shape in SHAPES
                           if shape != thing.shape],
        "replace_relation": [replace(claim, relation=r) for r in RELATIONS if r != claim.relation],
    }


def negatives_for(scene: dict, rng: random.Random) -> list[dict]:
    """One negative caption per applicable type, each drawn among that type's edits that are false of the scene."""
    negatives = []
    for kind, claims in _candidates(scene_claim(scene)).items():
        false = [caption_of(c) for c in claims if not caption_is_true(caption_of(c), scene)]
        if false:
            negatives.append({"caption": rng.choice(false), "type": kind})
    return negatives


# --- scenes -------------------------------------------------------------------------------------------------

def _obj(shape: str, colour: str, size: str, x: float, y: float) -> dict:
    # Rounded so that the stored description is exactly what is drawn.
    return {"shape": shape, "colour": colour, "size": size, "x": round(x, 4), "y": round(y, 4),
            "r": RADII[size]}  # fmt: skip


def count_scene(rng: random.Random) -> dict:
    count = rng.randint(1, len(COUNT_WORDS))
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    # One object per cell of a 3x3 grid, jittered less than the gap between neighbours: no overlaps.
    cells = rng.sample(range(9), count)
    objects = [_obj(shape, colour, "medium", (c % 3 + 0.5) / 3 + rng.uniform(-0.04, 0.04),
                    (c // 3 + 0.5) / 3 + rng.uniform(-0.04, 0.04)) for c in cells]  # fmt: skip
    return {"kind": "count", "objects": objects}


def relation_scene(rng: random.Random) -> dict:
    """Two objects of different colours and shapes; the first is the caption's subject."""
    shapes = rng.sample(SHAPES, 2)
    colours = rng.sample(list(COLOURS), 2)
    sizes = [rng.choice(("small", "big")) for _ in range(2)]
    relation = rng.choice(RELATIONS)
    # Along the relation's axis the centres are >= 0.36 apart (two big shapes do not touch); across it
    # they differ by <= 0.1 < MARGIN, so the scene makes no claim on the other axis.
    near, far = rng.uniform(0.22, 0.32), rng.uniform(0.68, 0.78)
    first, second = (near, far) if relation in ("to the left of", "above") else (far, near)
    across = [0.5 + rng.uniform(-0.05, 0.05) for _ in range(2)]
    if relation in ("to the left of", "to the right of"):
        positions = [(first, across[0]), (second, across[1])]
    else:
        positions = [(across[0], first), (across[1], second)]
    objects = [_obj(shape, colour, size, x, y) for shape, colour, size, (x, y) in
               zip(shapes, colours, sizes, positions)]  # fmt: skip
    return {"kind": "relation", "relation": relation, "objects": objects}


# Which attributes the two objects of a Winoground pair's first scene exchange to make the second:
# the caption's words stay, their order changes. Exchanging everything but the position moves the objects.
WINOGROUND_VARIANTS = {"colour": ("colour",), "shape": ("shape",), "size": ("size", "r"),
                       "position": ("colour", "shape", "size", "r")}  # fmt: skip


def winoground_pair(rng: random.Random) -> tuple[dict, dict, str]:
    scene = relation_scene(rng)
    a, b = scene["objects"]
    variants = [v for v in WINOGROUND_VARIANTS if v != "size" or a["size"] != b["size"]]
    variant = rng.choice(variants)
    fields = WINOGROUND_VARIANTS[variant]
    second = {**scene, "objects": [{**a, **{f: b[f] for f in fields}}, {**b, **{f: a[f] for f in fields}}]}
    return scene, second, variant


# --- rendering ----------------------------------------------------------------------------------------------

def _polygon(cx: float, cy: float, radii: list[float], start: float = -90.0) -> list[tuple[float, float]]:
    step = 360.0 / len(radii)
    return [(cx + r * math.cos(math.radians(start + i * step)), cy + r * math.sin(math.radians(start + i * step)))
            for i, r in enumerate(radii)]  # fmt: skip


def _draw(draw: ImageDraw.ImageDraw, obj: dict, side: int) -> None:
    cx, cy, r = obj["x"] * side, obj["y"] * side, obj["r"] * side
    fill = COLOURS[obj["colour"]]
    shape = obj["shape"]
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        half = 0.85 * r  # about the circle's area
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [r] * 3), fill=fill)  # centroid at the centre
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r, 0.45 * r] * 5), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=fill)
    elif shape == "cross":
        arm, half = 0.3 * r, 0.9 * r
        draw.rectangle((cx - arm, cy - half, cx + arm, cy + half), fill=fill)
        draw.rectangle((cx - half, cy - arm, cx + half, cy + arm), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render(scene: dict, image_size: int = 224) -> Image.Image:
    side = image_size * SUPERSAMPLE
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene["objects"]:
        _draw(draw, obj, side)
    return image.reduce(SUPERSAMPLE)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# --- the set ------------------------------------------------------------------------------------------------

def generate(n: int, seed: int, winoground_fraction: float = 0.25, count_fraction: float = 0.4) -> list[dict]:
    """`n` items {key, scene, caption, negatives, winoground?}: about `winoground_fraction` of them in
    Winoground pairs (adjacent keys), the other scenes split between count and relation scenes."""
    rng = random.Random(seed)
    pairs = int(n * winoground_fraction) // 2
    singles = n - 2 * pairs
    counts = round(singles * count_fraction)
    units = ["pair"] * pairs + ["count"] * counts + ["relation"] * (singles - counts)
    rng.shuffle(units)  # exact proportions, in a seeded order
    items: list[dict] = []
    pair_ids = (f"wg-{i:05d}" for i in range(pairs))
    for unit in units:
        if unit == "pair":
            first, second, variant = winoground_pair(rng)
            pair_id = next(pair_ids)
            for role, scene in (("a", first), ("b", second)):
                items.append(_item(len(items), scene, rng, {"pair": pair_id, "role": role, "variant": variant}))
        else:
            items.append(_item(len(items), count_scene(rng) if unit == "count" else relation_scene(rng), rng))
    _check(items)
    return items


def _item(index: int, scene: dict, rng: random.Random, winoground: dict | None = None) -> dict:
    item = {"key": f"comp-{index:06d}", "scene": scene, "caption": caption_of(scene_claim(scene)),
            "negatives": negatives_for(scene, rng)}  # fmt: skip
    if winoground:
        item["winoground"] = winoground
    return item


def _check(items: list[dict]) -> None:
    """The construction's promises, kept even if a layout constant changes: fail loudly, never write a lie."""
    for item in items:
        if not caption_is_true(item["caption"], item["scene"]):
            raise AssertionError(f"{item['key']}: caption {item['caption']!r} is not true of its scene")
        for negative in item["negatives"]:
            if caption_is_true(negative["caption"], item["scene"]):
                raise AssertionError(f"{item['key']}: negative {negative['caption']!r} is true of its scene")
    for a, b in _pairs(items):
        if caption_is_true(a["caption"], b["scene"]) or caption_is_true(b["caption"], a["scene"]):
            raise AssertionError(f"{a['winoground']['pair']}: a caption is true of both images")


def _pairs(items: list[dict]) -> list[tuple[dict, dict]]:
    return [(a, b) for a, b in itertools.pairwise(items)
            if a.get("winoground", {}).get("role") == "a" and b.get("winoground", {}).get("role") == "b"]  # fmt: skip


def compositional_items(name: str, scenes: int, seed: int, image_size: int = 224):
    """The set as download-stage items (rendered lazily, one at a time): the true caption is each
    sample's caption, and its scene, typed negatives and Winoground pair go into its metadata."""
    for item in generate(scenes, seed):
        meta = {k: item[k] for k in ("scene", "negatives", "winoground") if k in item}
        yield SourceItem(key=safe_key(f"{name}_{item['key']}"), origin=f"synthetic:{seed}:{item['key']}",
                         caption=item["caption"], image=_png(render(item["scene"], image_size)), image_ext="png",
                         meta=meta)  # fmt: skip
