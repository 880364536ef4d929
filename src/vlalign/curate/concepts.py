"""MetaCLIP's concept entries: which entries of a list each caption mentions.

MetaCLIP matches entries as plain substrings; here an entry must match whole words
(so "cat" does not match "education"), and a caption word may add a plural "s" or "es"
("buses" matches "bus"). Both caption and entries are lower-cased and split into words
the same way, so "T-shirt" matches the entry "t-shirt".
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlalign.curate.captions import words

DEFAULT_ENTRIES = Path(__file__).with_name("concepts.txt")


def load_entries(path: str | Path | None = None) -> list[str]:
    """Entries of a file, one per line (`#` starts a comment), normalised to space-joined words."""
    path = Path(path) if path is not None else DEFAULT_ENTRIES
    entries: dict[str, None] = {}  # ordered and unique
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = " ".join(words(line.split("#", 1)[0]))
        if entry:
            entries[entry] = None
    if not entries:
        raise ValueError(f"{path}: no concept entries")
    return list(entries)


def _singulars(word: str) -> list[str]:
    forms = [word]
    if len(word) > 3 and word.endswith("es"):
        forms.append(word[:-2])
    if len(word) > 2 and word.endswith("s"):
        forms.append(word[:-1])
    return forms


def match_concepts(captions: pd.Series, entries: list[str]) -> pd.Series:
    """Sorted list of the entries each caption mentions (an empty list when none)."""
    entry_set = set(entries)
    longest = max(len(e.split()) for e in entries)
    matched = []
    for caption in captions.fillna("").astype(str):
        tokens = words(caption)
        found = set()
        for n in range(1, longest + 1):
            for start in range(len(tokens) - n + 1):
                head = " ".join(tokens[start : start + n - 1])
                for last in _singulars(tokens[start + n - 1]):
                    gram = f"{head} {last}" if head else last
                    if gram in entry_set:
                        found.add(gram)
        matched.append(sorted(found))
    return pd.Series(matched, index=captions.index, dtype=object)
