"""The curation filters: each reads measured columns and gives a verdict per sample.

A rule returns (passed, detail): `passed` is a nullable boolean per sample and `detail`
names the check that failed ("min_words", "near", ...). Per-sample rules judge every
sample, so the decisions table shows every filter a sample would fail. Set-level rules
(dedup, semantic_dedup, alignment with top_fraction, balance) depend on which samples are
still in the pool, so they judge only the samples that survived the filters before them
and leave the others <NA>.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from vlalign.curate.concepts import load_entries, match_concepts
from vlalign.curate.dedup import greedy_duplicates
from vlalign.data.sources import hash_fraction

Verdict = tuple[pd.Series, pd.Series]


def _first_failing(checks: list[tuple[str, pd.Series]], index: pd.Index) -> Verdict:
    """Combine named per-sample checks (True = fails): passed if none fails; detail = first that does."""
    detail = pd.Series(None, index=index, dtype=object)
    for name, fails in reversed(checks):
        detail = detail.mask(fails.astype(bool), name)
    return detail.isna().astype("boolean"), detail


def _caption(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    checks = [
        ("min_words", m["n_words"] < s["min_words"]),
        ("min_chars", m["n_chars"] < s["min_chars"]),
        ("max_words", m["n_words"] > s["max_words"]),
        ("min_complexity", m["complexity"] < s["min_complexity"]),
        ("boilerplate", m["boilerplate"].notna() & s["drop_boilerplate"]),
        ("url_like", m["url_like"] & s["drop_url_like"]),
        ("non_utf8", m["non_utf8"] & s["drop_non_utf8"]),
    ]
    return _first_failing(checks, m.index)


def _language(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    checks = [
        ("language", ~m["language"].isin(s["languages"])),
        ("min_confidence", m["language_confidence"] < s["min_confidence"]),
    ]
    return _first_failing(checks, m.index)


def _image(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    decoded = m["decode_ok"].astype(bool)
    checks = [
        ("decode", ~decoded & s["require_decode"]),
        # An image without a readable size cannot show it meets the size rules.
        ("min_side", ~(m["min_side"] >= s["min_side"])),
        ("max_aspect_ratio", ~(m["aspect_ratio"] <= s["max_aspect_ratio"])),
        ("blank", decoded & (m["pixel_std"] < s["min_pixel_std"])),
    ]
    return _first_failing(checks, m.index)


def _dedup(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    survivors = m.loc[alive]
    found = greedy_duplicates(survivors["image_sha256"], survivors["phash"], exact=s["exact"], near=s["near"],
                              max_hamming=s["max_hamming"])  # fmt: skip
    passed = pd.Series(pd.NA, index=m.index, dtype="boolean")
    passed[alive] = found["of"].isna()
    # The kept sample each dropped one repeats, so nothing disappears without a trace.
    m["dedup_of"] = found["of"].map(lambda label: None if label is None else m.at[label, "key"]).reindex(m.index)
    return passed, found["kind"].reindex(m.index)


def _semantic_dedup(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    """SemDeDup among the survivors: a sample goes when the earlier member of its cluster nearest to it is closer
    than epsilon and still in the pool. The neighbours were measured once over the whole pool; were a member that
    an earlier filter dropped to count, a sample would go although the one it repeats is gone too."""
    alive_by_key = pd.Series(alive.to_numpy(), index=m["key"].to_numpy())
    repeated_alive = m["semantic_duplicate_of"].map(alive_by_key).fillna(False).astype(bool)
    # A sample without an image embedding has no similarity (NaN): nothing to hold against it.
    repeats = (m["semantic_similarity"] > 1 - s["epsilon"]) & repeated_alive
    passed = pd.Series(pd.NA, index=m.index, dtype="boolean")
    passed[alive] = ~repeats[alive]
    return passed, pd.Series(None, index=m.index, dtype=object).mask(alive & repeats, "epsilon")


def _decontaminate(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    checks = [
        ("eval_exact", m["eval_exact"].astype(bool) & s["exact"]),
        ("eval_near", (m["eval_hamming"] <= s["max_hamming"]) & s["near"]),
    ]
    return _first_failing(checks, m.index)


def _text_spotting(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    # Samples OCR did not read (ocr: survivors) pass: there is nothing to hold against them.
    return _first_failing([("overlap", m["caption_ocr_overlap"] > s["max_overlap"])], m.index)


def _alignment(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    score = m["alignment_score"].astype(float)
    if (s["top_fraction"] is None) == (s["min_score"] is None):
        raise ValueError("filter alignment: set exactly one of top_fraction and min_score")
    if s["min_score"] is not None:
        return _first_failing([("min_score", ~(score >= s["min_score"]))], m.index)
    scored = score[alive & score.notna()]
    n_keep = math.ceil(s["top_fraction"] * len(scored))
    # Highest scores first; ties keep pool order, so the choice is deterministic.
    order = np.argsort(-scored.to_numpy(), kind="stable")
    top = scored.index[order[:n_keep]]
    passed = pd.Series(pd.NA, index=m.index, dtype="boolean")
    passed[alive] = False
    passed[top] = True
    failed = (passed == False).fillna(False).astype(bool)  # noqa: E712
    detail = pd.Series(None, index=m.index, dtype=object).mask(failed, "top_fraction")
    return passed, detail


def concept_counts(concepts: pd.Series) -> Counter:
    """How many samples match each entry. Counts of partitions add up to the pool's, so a partitioned pool
    reduces its partitions' counts (a sum) before any sample is drawn."""
    return Counter(entry for entries in concepts for entry in entries)


def balance_draw(concepts: pd.Series, keys: pd.Series, counts: Counter, s: dict) -> tuple[pd.Series, pd.Series]:
    """MetaCLIP's draw, given the pool's counts: (kept, probability) per sample. A sample's fate is a hash of
    (seed, key), so drawing partition by partition gives the pool's draw."""
    unmatched_p = 1.0 if s["unmatched"] == "keep" else 0.0
    probability = concepts.map(
        lambda entries: max((min(1.0, s["cap"] / counts[e]) for e in entries), default=unmatched_p)
    ).astype(float)
    draw = keys.map(lambda key: hash_fraction(f"balance:{s['seed']}:{key}"))
    return draw < probability, probability


def balance_concepts(m: pd.DataFrame, s: dict) -> pd.Series:
    return m["concepts"] if s["entries"] is None else match_concepts(m["caption"], load_entries(s["entries"]))


def _balance(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    """MetaCLIP's rule: keep with probability max over the sample's entries of min(1, cap / count(entry)).

    count(entry) is the number of surviving samples that match the entry. Each sample's
    draw is a hash of (seed, key), so a sample's fate does not depend on the other
    samples' order and a larger cap keeps a superset.
    """
    concepts = balance_concepts(m, s)
    kept, probability = balance_draw(concepts[alive], m.loc[alive, "key"], concept_counts(concepts[alive]), s)
    passed = pd.Series(pd.NA, index=m.index, dtype="boolean")
    passed[alive] = kept
    matched = concepts.map(len) > 0
    detail = pd.Series(None, index=m.index, dtype=object)
    failed = (passed == False).fillna(False).astype(bool)  # noqa: E712
    detail = detail.mask(failed & matched, "sampled_out").mask(failed & ~matched, "unmatched")
    m["balance_probability"] = probability.reindex(m.index)
    return passed, detail


@dataclass(frozen=True)
class Panel:
    """A histogram of one measured column in the curation report, with the filter keys drawn as thresholds."""

    column: str
    label: str  # the axis label
    scale: str  # "int" (a bar per integer), "log", "unit" (0..1) or "linear"
    thresholds: tuple[str, ...] = ()  # keys of the filter's settings
    # Where a threshold key's value lies on this axis when the key is not itself a value of the column
    # (semantic_dedup's epsilon is a cosine distance, drawn at the similarity 1 - epsilon).
    at: Callable[[float], float] | None = None


@dataclass(frozen=True)
class Filter:
    """A curation filter: the measured columns it reads and its rule. A filter's keys and their defaults are
    its entry under `curate.filters` in the schema.

    rule(decisions so far, settings, alive mask) -> (passed, detail). dedup and balance also add a column that
    explains their verdicts (dedup_of, balance_probability) to the frame given.
    """

    name: str
    reads: tuple[str, ...]
    rule: Callable[[pd.DataFrame, dict, pd.Series], Verdict]
    panels: tuple[Panel, ...] = ()
    # Its columns exist before OCR, so it can choose which samples OCR reads (`ocr: survivors`).
    before_ocr: bool = False
    # The column naming the kept sample that a sample it drops repeats (the report's examples show it).
    repeats: str | None = None


# In the order of the report's histograms.
FILTERS: dict[str, Filter] = {f.name: f for f in (
    Filter("caption", ("n_words", "n_chars", "complexity", "boilerplate", "url_like", "non_utf8"), _caption, (
        Panel("n_words", "caption length (words)", "int", ("min_words", "max_words")),
        Panel("n_chars", "caption length (characters)", "log", ("min_chars",)),
        Panel("complexity", "caption complexity (distinct content words)", "int", ("min_complexity",)),
    ), before_ocr=True),
    Filter("language", ("language", "language_confidence"), _language, (
        Panel("language_confidence", "language confidence (fastText lid.176)", "unit", ("min_confidence",)),
    ), before_ocr=True),
    Filter("image", ("decode_ok", "min_side", "aspect_ratio", "pixel_std"), _image, (
        Panel("min_side", "image shorter side (pixels)", "log", ("min_side",)),
        Panel("aspect_ratio", "image aspect ratio (long / short side)", "log", ("max_aspect_ratio",)),
        Panel("pixel_std", "image grey-level std at 32x32 (0 = blank)", "linear", ("min_pixel_std",)),
    ), before_ocr=True),
    Filter("dedup", ("image_sha256", "phash"), _dedup, (
        Panel("nearest_hamming", "pHash bits to nearest pool image, if ≤ measure.max_hamming", "int",
              ("max_hamming",)),
    ), before_ocr=True, repeats="dedup_of"),
    # semantic_similarity and semantic_duplicate_of come from the semdedup stage (select merges them in).
    Filter("semantic_dedup", ("semantic_similarity", "semantic_duplicate_of"), _semantic_dedup, (
        Panel("semantic_similarity", "image cosine to the nearest earlier one of its cluster", "linear",
              ("epsilon",), at=lambda epsilon: 1 - epsilon),
    ), repeats="semantic_duplicate_of"),
    Filter("decontaminate", ("eval_exact", "eval_hamming"), _decontaminate, (
        Panel("eval_hamming", "pHash bits to nearest eval image, if ≤ measure.max_hamming", "int",
              ("max_hamming",)),
    ), before_ocr=True),
    Filter("text_spotting", ("caption_ocr_overlap", "ocr_seconds"), _text_spotting, (
        Panel("caption_ocr_overlap", "caption words written in the image (fraction)", "unit", ("max_overlap",)),
        Panel("ocr_seconds", "OCR time per image (seconds, one core)", "log"),
    )),
    # alignment_score is added by the score stage; a top_fraction cut is drawn as the lowest score kept.
    Filter("alignment", ("alignment_score",), _alignment, (
        Panel("alignment_score", "alignment score (cosine)", "linear", ("min_score",)),
    )),
    Filter("balance", ("key", "caption", "concepts"), _balance),
)}  # fmt: skip
