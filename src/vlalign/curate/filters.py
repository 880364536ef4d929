"""The curation filters: each reads measured columns and gives a verdict per sample.

A rule returns (passed, detail): `passed` is a nullable boolean per sample and `detail`
names the check that failed ("min_words", "near", ...). Per-sample rules judge every
sample, so the decisions table shows every filter a sample would fail. Set-level rules
(dedup, alignment with top_fraction, balance) depend on which samples are still in the
pool, so they judge only the samples that survived the filters before them and leave
the others <NA>.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable

import numpy as np
import pandas as pd

from vlalign.curate.concepts import load_entries, match_concepts
from vlalign.curate.dedup import greedy_duplicates
from vlalign.data.sources import hash_fraction

# Every filter's keys and defaults; `enabled` is common to all.
FILTER_DEFAULTS: dict[str, dict] = {
    "caption": {
        "min_words": 2, "min_chars": 5, "max_words": 77, "min_complexity": 1,
        "drop_boilerplate": True, "drop_url_like": True, "drop_non_utf8": True,
    },
    "language": {"languages": ["en"], "min_confidence": 0.0},
    "image": {"min_side": 64, "max_aspect_ratio": 3.0, "require_decode": True, "min_pixel_std": 1.0},
    "dedup": {"exact": True, "near": True, "max_hamming": 4},
    "decontaminate": {"exact": True, "near": True, "max_hamming": 4},
    "text_spotting": {"max_overlap": 0.5},
    # run: the training run whose aligner gave alignment_score (named in the report).
    "alignment": {"top_fraction": None, "min_score": None, "run": None},
    "balance": {"entries": None, "cap": 20000, "seed": 0, "unmatched": "keep"},
}  # fmt: skip

# Measured columns each filter reads (alignment_score is added by the alignment stage).
REQUIRED_COLUMNS: dict[str, list[str]] = {
    "caption": ["n_words", "n_chars", "complexity", "boilerplate", "url_like", "non_utf8"],
    "language": ["language", "language_confidence"],
    "image": ["decode_ok", "min_side", "aspect_ratio", "pixel_std"],
    "dedup": ["image_sha256", "phash"],
    "decontaminate": ["eval_exact", "eval_hamming"],
    "text_spotting": ["caption_ocr_overlap", "ocr_seconds"],
    "alignment": ["alignment_score"],
    "balance": ["key", "caption", "concepts"],
}

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


def _balance(m: pd.DataFrame, s: dict, alive: pd.Series) -> Verdict:
    """MetaCLIP's rule: keep with probability max over the sample's entries of min(1, cap / count(entry)).

    count(entry) is the number of surviving samples that match the entry. Each sample's
    draw is a hash of (seed, key), so a sample's fate does not depend on the other
    samples' order and a larger cap keeps a superset.
    """
    if s["unmatched"] not in ("keep", "drop"):
        raise ValueError(f"filter balance: unmatched must be 'keep' or 'drop', not {s['unmatched']!r}")
    concepts = m["concepts"] if s["entries"] is None else match_concepts(m["caption"], load_entries(s["entries"]))
    counts = Counter(entry for entries in concepts[alive] for entry in entries)
    unmatched_p = 1.0 if s["unmatched"] == "keep" else 0.0
    probability = concepts[alive].map(
        lambda entries: max((min(1.0, s["cap"] / counts[e]) for e in entries), default=unmatched_p)
    ).astype(float)
    draw = m.loc[alive, "key"].map(lambda key: hash_fraction(f"balance:{s['seed']}:{key}"))
    passed = pd.Series(pd.NA, index=m.index, dtype="boolean")
    passed[alive] = draw < probability
    matched = concepts.map(len) > 0
    detail = pd.Series(None, index=m.index, dtype=object)
    failed = (passed == False).fillna(False).astype(bool)  # noqa: E712
    detail = detail.mask(failed & matched, "sampled_out").mask(failed & ~matched, "unmatched")
    m["balance_probability"] = probability.reindex(m.index)
    return passed, detail


# name -> rule(decisions so far, filter settings, alive mask). dedup and balance also add a
# column that explains their verdicts (dedup_of, balance_probability) to the frame given.
RULES: dict[str, Callable[[pd.DataFrame, dict, pd.Series], Verdict]] = {
    "caption": _caption,
    "language": _language,
    "image": _image,
    "dedup": _dedup,
    "decontaminate": _decontaminate,
    "text_spotting": _text_spotting,
    "alignment": _alignment,
    "balance": _balance,
}
