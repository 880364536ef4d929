"""A planted source: the train split of a downloaded source with known noise planted in it and the truth recorded
for every sample, so that each curation filter can be checked against it (the audit stage, `curate/audit.py`).

Each kind is a fraction of the `from` source's train samples, chosen by a seeded hash of the key; the choices are
disjoint, so an original takes part in one kind at most and its truth stays one row:

- `shuffled_caption`: the chosen samples' captions are permuted among themselves so that none keeps its own text
  (in place: no image is added; `of` names the sample whose caption it took);
- `exact_copy`: an added sample with the original's image bytes and caption;
- `near_copy`: an added sample whose image is the original with one edit a copy found elsewhere would show
  (`NEAR_EDITS`: re-encoded as JPEG at a lower quality, resized, a border cropped, brighter or darker), drawn per
  copy and recorded, with the original's caption. Captions are copied unchanged: the copy filters read only images;
- `text_in_image`: an added sample whose image is the original's caption written large, black, over a faded copy of
  the original, and whose caption is that text (the pairs T-MARS's text spotting removes);
- `eval_copy`: an added sample copying an image of the eval split of an `eval_from` source, byte for byte or with a
  near edit (half each), with its own caption: decontamination should remove it. Their number is `eval_copies` of
  the `from` train size, at most every eval image.

The samples of `from` are written in its order, the added ones after them, each with the key of what it copies and
its kind (`{key}~exact_copy`). Every written sample's truth is in its metadata (`planted`) and in
`planted.parquet` beside the manifest: key, kind, `of` (the sample it copies or whose caption it took), `of_source`,
and a near copy's `edit` and `edit_amount`.

The plan is made from the manifests of `from` and the `eval_from` sources (keys and captions), so the images are
read once, in one pass; only the originals of added samples are held, until they are written.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from vlalign.data.images import decode_rgb
from vlalign.data.shards import folder_shards, iter_samples
from vlalign.data.sources import SourceItem, caption_lines, hash_fraction
from vlalign.io import atomic_path

# The kinds of added samples, in the order they are written.
ADDED = ("exact_copy", "near_copy", "text_in_image", "eval_copy")
KINDS = ("clean", "shuffled_caption", *ADDED)
# Fractions that choose among the `from` samples (disjoint, so at most 1 together).
ORIGINAL_FRACTIONS = ("shuffled_captions", "exact_copies", "near_copies", "text_in_image")
# A near copy's edit and the range its amount is drawn from (uniformly): small enough that a person sees the same
# picture, as copies of one image across the web differ.
NEAR_EDITS = {
    "jpeg_quality": (40, 75),  # the JPEG quality it is re-encoded at
    "resize": (0.80, 0.95),  # the scale of both sides
    "crop": (0.02, 0.05),  # the fraction of one side cut off (the side drawn too: crop_left, ...)
    "brightness": (0.04, 0.10),  # the change of brightness, up or down (recorded as the factor)
}
CROP_SIDES = ("left", "top", "right", "bottom")
TRUTH_COLUMNS = {"key": "string", "kind": "string", "of": "string", "of_source": "string", "edit": "string",
                 "edit_amount": "float64"}  # fmt: skip
# Text images: a square this wide, the text in the largest of these sizes that fits, over the original at this
# strength (faded: the text is what the image shows).
TEXT_WIDTH, TEXT_MARGIN = 384, 16
TEXT_SIZES = (96, 80, 64, 52, 44, 36, 30, 24, 20, 16)
BACKGROUND_STRENGTH = 0.25


@dataclass(frozen=True)
class Planted:
    """The truth of one sample to write."""

    key: str
    kind: str
    original: str  # the key of the sample it is made from (its own for clean and shuffled samples)
    source: str  # the source of that sample
    caption: str
    of: str | None = None
    edit: str | None = None
    edit_amount: float | None = None

    def truth(self) -> dict:
        return {"kind": self.kind, "of": self.of, "of_source": self.source if self.of else None, "edit": self.edit,
                "edit_amount": self.edit_amount}  # fmt: skip


def planted_problems(source: dict) -> list[str]:
    """`key: problem` lines about a planted source's entry (defaults filled in)."""
    problems = []
    if source["eval_fraction"] != 0:
        problems.append("eval_fraction: a planted source is a training source; set it to 0")
    total = sum(source[key] for key in ORIGINAL_FRACTIONS)
    if total > 1:
        problems.append(f"{', '.join(ORIGINAL_FRACTIONS)}: each chooses other samples of `from`, so together they "
                        f"may be at most 1 (they are {total:g})")  # fmt: skip
    if source["eval_copies"] > 0 and not source["eval_from"]:
        problems.append("eval_from: eval_copies needs the sources whose eval split the copies come from")
    return problems


def _draw(seed: int, purpose: str, key: str) -> float:
    """A number in [0, 1) for (seed, purpose, key): every choice is a function of the key, never of the order."""
    return hash_fraction(f"planted:{seed}:{purpose}:{key}")


def caption_derangement(keys: list[str], captions: dict[str, str], seed: int) -> dict[str, str]:
    """Receiver key -> donor key: each receiver takes a donor's caption and none gets text equal to its own.

    Laid out in blocks of equal captions, largest first, each sample takes the caption `m` places on (cyclically),
    m the largest block: two places m apart are never in one block when m is at most half of them. Members of a
    caption shared by more than half of the keys are left out until that holds (no permutation could give them
    other text)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys, key=lambda k: _draw(seed, "derangement", k)):
        groups[captions[key]].append(key)

    def largest_first(blocks) -> list[list[str]]:
        return sorted((b for b in blocks if b), key=lambda block: (-len(block), _draw(seed, "derangement", block[0])))

    blocks = largest_first(groups.values())
    while blocks and 2 * len(blocks[0]) > sum(map(len, blocks)):
        blocks[0].pop()
        blocks = largest_first(blocks)
    order = [key for block in blocks for key in block]
    shift = len(blocks[0]) if blocks else 0
    return {key: order[(i + shift) % len(order)] for i, key in enumerate(order)}


def _near_edit(seed: int, key: str) -> tuple[str, float]:
    """The edit of a near copy and its amount, drawn from NEAR_EDITS for (seed, key)."""
    edit = list(NEAR_EDITS)[int(_draw(seed, "edit", key) * len(NEAR_EDITS))]
    low, high = NEAR_EDITS[edit]
    amount = low + (high - low) * _draw(seed, "amount", key)
    if edit == "jpeg_quality":
        return edit, float(round(amount))
    if edit == "crop":
        return f"crop_{CROP_SIDES[int(_draw(seed, 'side', key) * len(CROP_SIDES))]}", round(amount, 3)
    if edit == "brightness":
        return edit, round(1 + amount if _draw(seed, "sign", key) < 0.5 else 1 - amount, 3)
    return edit, round(amount, 3)


def _encode(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def near_copy(rgb: Image.Image, edit: str, amount: float) -> bytes:
    """The image file of `rgb` with one edit of NEAR_EDITS: lossless PNG but for the JPEG edit, so that the edit is
    the only difference."""
    if edit == "jpeg_quality":
        return _encode(rgb, "JPEG", quality=int(amount))
    if edit == "resize":
        size = (max(1, round(rgb.width * amount)), max(1, round(rgb.height * amount)))
        return _encode(rgb.resize(size, Image.Resampling.LANCZOS))
    if edit == "brightness":
        return _encode(ImageEnhance.Brightness(rgb).enhance(amount))
    side = edit.removeprefix("crop_")
    cut_x, cut_y = round(rgb.width * amount), round(rgb.height * amount)
    width, height = rgb.size
    box = {"left": (cut_x, 0, width, height), "top": (0, cut_y, width, height),
           "right": (0, 0, width - cut_x, height), "bottom": (0, 0, width, height - cut_y)}[side]  # fmt: skip
    return _encode(rgb.crop(box))


def _wrap(words: list[str], font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Words in lines no wider than `width` where they can be (a word wider than it gets a line of its own)."""
    lines = [""]
    for word in words:
        trial = f"{lines[-1]} {word}".strip()
        if font.getlength(trial) <= width or not lines[-1]:
            lines[-1] = trial
        else:
            lines.append(word)
    return lines


def text_image(text: str, background: Image.Image | None = None) -> bytes:
    """PNG of `text` in black on a white square, as large as fits (smaller steps down to TEXT_SIZES' last, then
    the page grows), over a faded copy of `background` when given."""
    inner = TEXT_WIDTH - 2 * TEXT_MARGIN
    for size in TEXT_SIZES:
        font = ImageFont.load_default(size=size)
        lines = _wrap(text.split(), font, inner)
        line_height = int(size * 1.25)
        if max(font.getlength(line) for line in lines) <= inner and len(lines) * line_height <= inner:
            break
    height = max(TEXT_WIDTH, len(lines) * line_height + 2 * TEXT_MARGIN)
    page = Image.new("RGB", (TEXT_WIDTH, height), "white")
    if background is not None:
        page = Image.blend(page, ImageOps.fit(background, page.size), BACKGROUND_STRENGTH)
    draw = ImageDraw.Draw(page)
    top = (height - len(lines) * line_height) // 2
    for i, line in enumerate(lines):
        draw.text((TEXT_MARGIN, top + i * line_height), line, fill="black", font=font)
    return _encode(page)


def _ok_rows(partitions: list[Path], split: str) -> pd.DataFrame:
    """Key and caption of every sample a download wrote to `split`, in order, from its manifests."""
    manifests = [pd.read_parquet(p / "manifest.parquet", columns=["key", "caption", "status", "split"])
                 for p in partitions]  # fmt: skip
    rows = pd.concat(manifests, ignore_index=True)
    return rows.loc[(rows["status"] == "ok") & (rows["split"] == split), ["key", "caption"]].reset_index(drop=True)


def _first_line(caption: str) -> str:
    """A sample's caption where its text lists several (a retrieval set's): the first."""
    lines = caption_lines(caption)
    return lines[0] if lines else ""


class PlantedSource:
    """The plan of one planted source (`truth`, the samples it writes in order) and its items."""

    def __init__(self, name: str, source: dict, downloads: Path):
        """`downloads`: the folder holding every source's download (`{downloads}/{source}/part-NNNN/`)."""
        problems = planted_problems(source)
        if problems:
            raise ValueError("; ".join(f"sources.{name}.{problem}" for problem in problems))
        self.name, self.source, self.seed = name, source, source["seed"]
        self.partitions = {s: self._partitions(downloads, s) for s in [source["from"], *source["eval_from"]]}
        self.truth = self._plan()

    def _partitions(self, downloads: Path, source: str) -> list[Path]:
        found = sorted(p for p in (downloads / source).glob("part-[0-9][0-9][0-9][0-9]") if p.is_dir())
        if not found:
            raise FileNotFoundError(f"sources.{self.name}: no download of source {source!r} in {downloads / source} "
                                    "(a planted source is made from downloaded sources)")  # fmt: skip
        return found

    def _plan(self) -> list[Planted]:
        s, seed, origin = self.source, self.seed, self.source["from"]
        train = _ok_rows(self.partitions[origin], "train")
        captions = dict(zip(train["key"], train["caption"].fillna("")))
        ranked = sorted(train["key"], key=lambda key: _draw(seed, "choose", key))
        counts = [round(s[fraction] * len(train)) for fraction in ORIGINAL_FRACTIONS]
        ends = [sum(counts[: i + 1]) for i in range(len(counts))]
        shuffled, exact, near, text = (ranked[end - count : end] for count, end in zip(counts, ends))
        donors = caption_derangement(shuffled, captions, seed)
        plan = [Planted(key, "shuffled_caption", key, origin, captions[donors[key]], of=donors[key]) if key in donors
                else Planted(key, "clean", key, origin, captions[key]) for key in train["key"]]  # fmt: skip
        plan += [Planted(f"{key}~exact_copy", "exact_copy", key, origin, captions[key], of=key) for key in exact]
        plan += [Planted(f"{key}~near_copy", "near_copy", key, origin, captions[key], key, *_near_edit(seed, key))
                 for key in near]  # fmt: skip
        plan += [Planted(f"{key}~text_in_image", "text_in_image", key, origin, " ".join(captions[key].split()), of=key)
                 for key in text]  # fmt: skip
        return plan + self._plan_eval_copies(round(s["eval_copies"] * len(train)))

    def _plan_eval_copies(self, wanted: int) -> list[Planted]:
        rows = [(key, source, caption) for source in self.source["eval_from"]
                for key, caption in _ok_rows(self.partitions[source], "eval").itertuples(index=False)]  # fmt: skip
        rows.sort(key=lambda row: _draw(self.seed, "choose_eval", row[1] + "/" + row[0]))
        plan = []
        for key, source, caption in rows[:wanted]:
            near = _draw(self.seed, "eval_near", f"{source}/{key}") < 0.5
            edit = _near_edit(self.seed, f"{source}/{key}") if near else (None, None)
            plan.append(Planted(f"{key}~eval_copy", "eval_copy", key, source, _first_line(caption or ""), key, *edit))
        return plan

    @property
    def provenance(self) -> str:
        counts = pd.Series([p.kind for p in self.truth]).value_counts()
        planted = ", ".join(f"{counts.get(kind, 0)} {kind}" for kind in KINDS)
        sources = " ".join(str(p) for ps in self.partitions.values() for p in ps)
        return f"planted from {self.source['from']} (seed {self.seed}): {planted}; read from {sources}"

    def items(self) -> Iterator[SourceItem]:
        """The samples of the plan, in its order: those of `from` as its shards hold them, then the added ones."""
        origin = self.source["from"]
        copied = {(p.source, p.original) for p in self.truth if p.kind in ADDED}
        in_place = {p.key: p for p in self.truth if p.kind not in ADDED}
        originals: dict[tuple[str, str], tuple[bytes, dict]] = {}
        for sample in iter_samples(folder_shards(p / "train" for p in self.partitions[origin])):
            planted = in_place.get(sample.key)
            if planted is None:  # the manifest and the shards disagree: the download of `from` is broken
                raise ValueError(f"sources.{self.name}: sample {sample.key!r} of {origin} is in its shards but not "
                                 "its manifest")  # fmt: skip
            if (origin, sample.key) in copied:
                originals[(origin, sample.key)] = (sample.image, sample.meta)
            yield self._item(planted, sample.image, sample.meta)
        for source in self.source["eval_from"]:
            if any(wanted == source for wanted, _ in copied):
                for sample in iter_samples(folder_shards(p / "eval" for p in self.partitions[source])):
                    if (source, sample.key) in copied:
                        originals[(source, sample.key)] = (sample.image, sample.meta)
        for planted in (p for p in self.truth if p.kind in ADDED):
            if (planted.source, planted.original) not in originals:
                raise ValueError(f"sources.{self.name}: sample {planted.original!r} of {planted.source} is in its "
                                 "manifest but not its shards")  # fmt: skip
            yield self._added_item(planted, *originals[(planted.source, planted.original)])

    def _item(self, planted: Planted, image: bytes, meta: dict) -> SourceItem:
        return SourceItem(key=planted.key, origin=f"{planted.source}:{planted.original}", caption=planted.caption,
                          category=meta.get("category"), image=image,
                          meta={**meta, "planted": planted.truth()})  # fmt: skip

    def _added_item(self, planted: Planted, image: bytes, meta: dict) -> SourceItem:
        """An added sample; a failure to decode the original it is made from is its error, as a download's is."""
        if planted.kind == "exact_copy" or (planted.kind == "eval_copy" and planted.edit is None):
            return self._item(planted, image, meta)
        try:
            rgb = decode_rgb(image)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken images
            detail = f"original {planted.original} of {planted.source}: {type(exc).__name__}: {exc}"
            return SourceItem(key=planted.key, origin=f"{planted.source}:{planted.original}", caption=planted.caption,
                              error="decode_error", detail=detail[:300])  # fmt: skip
        if planted.kind == "text_in_image":
            return self._item(planted, text_image(planted.caption, rgb), meta)
        return self._item(planted, near_copy(rgb, planted.edit, planted.edit_amount), meta)

    def write_truth(self, path: Path, manifest: pd.DataFrame) -> pd.DataFrame:
        """`planted.parquet`: the truth of every sample the download wrote (status ok), in order."""
        written = set(manifest.loc[manifest["status"] == "ok", "key"])
        rows = [{"key": p.key, **p.truth()} for p in self.truth if p.key in written]
        truth = pd.DataFrame(rows, columns=list(TRUTH_COLUMNS)).astype(TRUTH_COLUMNS)
        with atomic_path(path) as part:
            truth.to_parquet(part, index=False)
        return truth
