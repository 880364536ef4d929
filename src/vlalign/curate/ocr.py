"""Text spotting with RapidOCR's PP-OCR models, the ones bundled inside the `rapidocr` wheel.

RapidOCR downloads a model whenever no model file is named, so the bundled detection and
recognition files are found and passed explicitly, and the recognition model must carry
its own character list (otherwise RapidOCR would download a dictionary).

The text-line angle classifier is left out: it only corrects lines rotated by 180
degrees, rare in captioned web images, and would add a third network per image.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from vlalign.curate.captions import content_words, words


def bundled_ocr_models() -> dict[str, Path]:
    """{"det": path, "rec": path} of the ONNX models inside the installed rapidocr."""
    try:
        import rapidocr
    except ImportError as exc:
        raise RuntimeError("curate: text spotting needs the `rapidocr` and `onnxruntime` packages") from exc
    folder = Path(rapidocr.__file__).parent / "models"
    found = {task: sorted(folder.glob(f"*_{task}_*.onnx")) for task in ("det", "rec")}
    for task, paths in found.items():
        if len(paths) != 1:
            raise RuntimeError(
                f"curate: expected one bundled rapidocr {task} model in {folder}, found {[p.name for p in paths]}; "
                "refusing to let rapidocr download one"
            )
    rec = found["rec"][0]
    import onnxruntime

    if "character" not in onnxruntime.InferenceSession(str(rec)).get_modelmeta().custom_metadata_map:
        raise RuntimeError(f"curate: {rec} carries no character list; rapidocr would download one")
    return {task: paths[0] for task, paths in found.items()}


@lru_cache(maxsize=2)
def engine(max_side: int):
    """A RapidOCR reader on the bundled models with both networks loaded, one per process."""
    from rapidocr import RapidOCR

    models = bundled_ocr_models()
    ocr = RapidOCR(
        params={
            "Global.log_level": "critical",  # "no text found" is the common case, not a warning
            "Global.use_cls": False,
            "Det.model_path": str(models["det"]),
            "Rec.model_path": str(models["rec"]),
            # Scale the longer side down to max_side, never up: the default upscales the
            # shorter side to 736 px: 1.3 s instead of 0.06 s for a 256x128 image on one core.
            "Det.limit_type": "max",
            "Det.limit_side_len": max_side,
            # One thread per worker process: the processes are the parallelism.
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )
    ocr(_warm_up_image())  # RapidOCR loads each network at its first use: load both now
    return ocr


def _warm_up_image():
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (160, 64), "white")
    ImageDraw.Draw(img).text((8, 12), "OCR", fill="black", font=ImageFont.load_default(size=36))
    return img


def read_text(image, max_side: int = 640) -> str:
    """The text written in an RGB PIL image, lines joined by spaces ("" when none)."""
    result = engine(max_side)(image)
    return " ".join(result.txts or ())


def caption_overlap(caption: str, ocr_text: str) -> float:
    """Fraction of the caption's distinct content words (all words if it has none) written in the image."""
    caption_words = content_words(caption) or set(words(caption))
    if not caption_words:
        return 0.0
    return len(caption_words & set(words(ocr_text))) / len(caption_words)
