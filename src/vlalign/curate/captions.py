"""Caption heuristics: length, complexity, stock phrases, URL-like and undecodable text.

Complexity is the number of distinct content words: alphabetic words of two letters or
more outside a short English stop-word list. Radenovic et al. count the objects,
attributes and actions of a caption from a parse; distinct content words approximate
that count without a parser (nouns, adjectives and verbs are what is left once function
words are removed), cost microseconds, and work on the file-name-like titles of web
pools where a parser has nothing to hold on to.
"""

from __future__ import annotations

import re

import pandas as pd

# Function words that carry no object, attribute or action.
STOP_WORDS = frozenset(
    """a an the and or but nor so yet of in on at to for from by with without into onto over under
    above below between among through during before after about against up down out off near
    is are was were be been being am has have had having do does did this that these those it its
    he she they them their his her him we us our you your i me my mine as than then there here
    very too also just not no only some any all each every both either neither such own same other
    can could will would shall should may might must which who whom whose what when where why how
    one two three four five six seven eight nine ten""".split()
)

# Phrases of alt-text written by templates rather than by someone describing the image.
DEFAULT_BOILERPLATE = [
    "image may contain",
    "stock photo",
    "stock image",
    "stock vector",
    "royalty free",
    "free download",
    "click here",
    "click to enlarge",
    "no description",
    "image not found",
    "untitled",
    "all rights reserved",
    "shutterstock",
    "getty images",
    "alamy",
    "istock",
    "dreamstime",
]

# Camera and screenshot file names (IMG_1234, DSC00012, Screenshot 2021-...) and any
# caption that is only a file name with an image extension.
_FILE_NAME = re.compile(
    r"^\s*(?:(?:img|dsc|dscn|dcim|pict|pxl|photo|image|screenshot)[\s_-]*\d[\w\s-]*"
    r"|[\w\s.()-]+\.(?:jpe?g|png|gif|bmp|webp|tiff?|svg|heic))\s*$",
    re.IGNORECASE,
)
_URL = re.compile(
    r"(?:https?://|ftp://|www\.)\S+|\b[\w-]+\.(?:com|org|net|edu|gov|io|co|uk|de|fr|info|html?|php)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; "t-shirt" -> t, shirt


def words(text: str) -> list[str]:
    """Lower-case word tokens, shared by complexity, OCR overlap and concept matching."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if len(w) >= 2 and w.isalpha() and w not in STOP_WORDS}


def boilerplate_match(caption: str, phrases: list[str]) -> str | None:
    """The first stock phrase the caption contains ("file_name" for a bare file name), else None."""
    if _FILE_NAME.match(caption):
        return "file_name"
    lowered = " ".join(words(caption))
    return next((p for p in phrases if re.search(rf"\b{re.escape(' '.join(words(p)))}\b", lowered)), None)


def measure_captions(captions: pd.Series, boilerplate: list[str]) -> pd.DataFrame:
    """One row per caption: n_words, n_chars, complexity, boilerplate, url_like, non_utf8."""
    captions = captions.fillna("").astype(str)
    return pd.DataFrame(
        {
            "n_words": captions.str.split().str.len().astype(int),
            "n_chars": captions.str.strip().str.len().astype(int),
            "complexity": [len(content_words(c)) for c in captions],
            "boilerplate": [boilerplate_match(c, boilerplate) for c in captions],
            "url_like": captions.str.contains(_URL).astype(bool),
            # Shards decode captions with errors="replace": bytes that were not UTF-8 became U+FFFD.
            "non_utf8": captions.str.contains("\ufffd", regex=False).astype(bool),
        },
        index=captions.index,
    )
