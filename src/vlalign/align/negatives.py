"""Hard-negative captions by rule: the guide's negative captioning (ARO / SugarCrepe-style swaps).

A negative keeps the caption's words and changes what it claims: another colour, another
count, the opposite spatial relation, or two attributes swapped between their nouns. Each
rule returns None when it does not apply; `negative_caption` tries the configured rules in an
order drawn from the sample's key, so the result is deterministic and spread over the rules.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey",
           "gray")  # fmt: skip
COUNTS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Each relation maps to its opposite; multi-word ones first so "in front of" is not read as "in".
RELATIONS = (
    ("in front of", "behind"), ("on top of", "underneath"), ("to the left of", "to the right of"),
    ("left", "right"), ("above", "below"), ("over", "under"), ("inside", "outside"), ("on", "under"),
    ("up", "down"), ("top", "bottom"), ("big", "small"), ("large", "small"), ("tall", "short"),
    ("open", "closed"), ("full", "empty"),
)
SIZES = ("big", "small", "large", "tiny", "huge", "little", "tall", "short", "long")
WORD = r"[A-Za-z]+"


def _digest(key: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big")


def _replace_word(caption: str, index: int, word: str) -> str:
    matches = list(re.finditer(WORD, caption))
    match = matches[index]
    original = match.group()
    # Keep the capitalisation of the word replaced.
    word = word.capitalize() if original[0].isupper() else word
    return caption[:match.start()] + word + caption[match.end():]


def _words(caption: str) -> list[str]:
    return [w.lower() for w in re.findall(WORD, caption)]


def swap_colour(caption: str, key: str) -> str | None:
    """The first colour word becomes another colour."""
    words = _words(caption)
    for i, word in enumerate(words):
        if word in COLOURS:
            others = [c for c in COLOURS if c != word and {c, word} != {"grey", "gray"}]
            return _replace_word(caption, i, others[_digest(key, "colour") % len(others)])
    return None


def change_count(caption: str, key: str) -> str | None:
    """The first number (word or digits) becomes another number."""
    for i, word in enumerate(_words(caption)):
        if word in COUNTS:
            others = [c for c in COUNTS if c != word]
            return _replace_word(caption, i, others[_digest(key, "count") % len(others)])
    match = re.search(r"\b\d+\b", caption)
    if match:
        value = int(match.group())
        other = value + 1 + _digest(key, "digits") % 3
        return caption[:match.start()] + str(other) + caption[match.end():]
    return None


def flip_relation(caption: str, key: str) -> str | None:
    """The first spatial relation or size word becomes its opposite."""
    lowered = f" {caption.lower()} "
    for a, b in RELATIONS:
        for word, opposite in ((a, b), (b, a)):
            position = lowered.find(f" {word} ")
            if position >= 0:
                start = position  # index in `caption` (the padding space shifts by one)
                original = caption[start:start + len(word)]
                replacement = opposite.capitalize() if original[:1].isupper() else opposite
                return caption[:start] + replacement + caption[start + len(word):]
    return None


def swap_attributes(caption: str, key: str) -> str | None:
    """Two attribute words (colours or sizes) exchange places: "a red cup and a blue ball" →
    "a blue cup and a red ball" (the binding the guide's compositionality tests probe)."""
    words = _words(caption)
    attributes = [i for i, w in enumerate(words) if w in COLOURS or w in SIZES]
    pairs = [(i, j) for i in attributes for j in attributes if i < j and words[i] != words[j]]
    if not pairs:
        return None
    i, j = pairs[0]
    swapped = _replace_word(caption, i, words[j])
    return _replace_word(swapped, j, words[i])


RULES: dict[str, Callable[[str, str], str | None]] = {
    "swap_attributes": swap_attributes,
    "swap_colour": swap_colour,
    "change_count": change_count,
    "flip_relation": flip_relation,
}


def negative_caption(caption: str, key: str, rules: list[str]) -> tuple[str, str] | tuple[None, None]:
    """(negative, rule name) from the first of `rules` that applies, tried in an order drawn from
    `key`; (None, None) when none applies."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ValueError(f"unknown negative-caption rules {unknown}; known: {sorted(RULES)}")
    start = _digest(key, "order") % len(rules) if rules else 0
    for name in rules[start:] + rules[:start]:
        negative = RULES[name](caption, key)
        if negative is not None and negative.lower() != caption.lower():
            return negative, name
    return None, None
