"""A trained run folder as a self-contained model: raw images and texts in, aligned embeddings out.

`vlalign train` writes results/{experiment}/train/{run}/seed-{seed}/: model.safetensors (alignment layers), model.json
(their settings, the two frozen encoders' config entries and, under "towers", how each encoder
was resolved at embed time: preprocessing, pooling, precision) and a model card README.md.
`load_model` rebuilds the frozen encoders from that record and runs the whole chain.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlalign.align.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    _checkpoint_dir,
    load_checkpoint,
)
from vlalign.io import atomic_path, write_json

CARD_NAME = "README.md"
# Fields of encoder.describe() (as the embedding store's meta.json holds it) that decide the features.
IMAGE_FIELDS = ("spec", "dim", "pooling", "image_size", "crop_ratio", "mean", "std", "precision", "path")
TEXT_FIELDS = ("spec", "dim", "pooling", "max_length", "prefix", "precision", "path")
# Of those, the ones a rebuilt encoder must reproduce (precision is chosen at load, path is machine-local).
CHECKED = {"image": ("spec", "dim", "pooling", "image_size", "crop_ratio", "mean", "std"),
           "text": ("spec", "dim", "pooling", "max_length", "prefix")}  # fmt: skip


def tower_records(image_embeddings: str | os.PathLike, text_embeddings: str | os.PathLike,
                  max_resolution: int | None) -> dict:  # fmt: skip
    """How each frozen encoder produced the training features, read from the stores' meta.json.

    `max_resolution` is the .beton's (convert.max_resolution): images were shrunk to it and padded
    to a square on white before the encoder's centre crop; None when the training settings lack it.
    """
    records = {}
    for side, store, fields in (("image", image_embeddings, IMAGE_FIELDS), ("text", text_embeddings, TEXT_FIELDS)):
        meta = json.loads((Path(store) / "meta.json").read_text())
        records[side] = {key: meta.get(key) for key in fields}
    records["image"].update(max_resolution=max_resolution, padding="square_on_white")
    return records


def export_model(folder: str | os.PathLike, run: str, settings: dict, image_embeddings: str | os.PathLike,
                 text_embeddings: str | os.PathLike, final: dict) -> None:  # fmt: skip
    """Make a freshly trained run folder self-contained: the towers' records and the training
    settings go into model.json, and a model card README.md is written beside it."""
    from vlalign.align.trainer import resolve_settings

    folder = Path(folder)
    info = json.loads((folder / CONFIG_NAME).read_text())
    max_resolution = settings.get("convert", {}).get("max_resolution")
    info.update(towers=tower_records(image_embeddings, text_embeddings, max_resolution),
                train=resolve_settings(settings["train"]))  # fmt: skip
    write_json(folder / CONFIG_NAME, info)
    with atomic_path(folder / CARD_NAME) as tmp:
        tmp.write_text(model_card(run, info, final))


def _table(rows: dict) -> list[str]:
    return ["| setting | value |", "|---|---|", *(f"| {k} | `{json.dumps(v)}` |" for k, v in rows.items())]


def model_card(run: str, info: dict, final: dict) -> str:
    """The run folder's README.md: what the model is, its encoders, data, settings and final loss."""
    image, text = info["towers"]["image"], info["towers"]["text"]
    aliases = {side: info["encoders"][side].get("alias", info["towers"][side]["spec"]) for side in ("image", "text")}
    settings = info["model"]
    shared = settings["image_dim"] if settings["text_only"] else settings["target_dim"]
    pool = Path(info["pool_decisions"]).parent.name
    only = "; text side only, images keep their normalised features" if settings["text_only"] else ""
    bound = f"at most {image['max_resolution']} px" if image["max_resolution"] else "size not recorded"
    losses = ", ".join(f"{k} {final[k]:.4f}" for k in ("train_loss", "val_loss") if k in final)
    trained = info["training"]
    kept = (f"the weights of step {trained['kept_step']}, the lowest validation loss ({trained['best_val_loss']:.4f})"
            if trained["keep"] == "best_val" else "the last step's weights")
    stopped = ", stopped early" if trained["stopped_early"] else ""
    lines = [
        f"# vlalign model `{run}`",
        "",
        f"A SAIL-style vision-language model: the frozen image encoder `{image['spec']}` and the frozen text",
        f"encoder `{text['spec']}`, followed by trained alignment layers ({settings['head']} head{only}) into",
        f"a shared {shared}-d space where image and caption embeddings are compared by cosine similarity.",
        "",
        "## Encoders",
        "",
        f"- image (`{aliases['image']}`): {image['dim']}-d, pooling `{image['pooling']}`, {image['precision']};",
        f"  images padded to a square on white ({bound}), centre crop of {image['crop_ratio']} of the side",
        f"  resized to {image['image_size']} px, then (x - {image['mean']}) / {image['std']}",
        f"- text (`{aliases['text']}`): {text['dim']}-d, pooling `{text['pooling']}`, {text['precision']},",
        f"  at most {text['max_length']} tokens, prefix {json.dumps(text['prefix'])}",
        "",
        "## Training",
        "",
        f"{info['train_pairs']} image-caption pairs of the curated pool `{pool}` (`{info['pool_decisions']}`).",
        (f"{trained['steps']} optimiser steps ({trained['samples_seen']} pairs seen, {trained['epochs_seen']:.2f} "
         f"epochs{stopped}); kept {kept}."),
        f"Losses at the last step: {losses or 'none recorded'} (curves.csv, curves.png).",
        "",
        *_table({**settings, **info["train"]}),
        "",
        "## Use",
        "",
        "```python",
        "import vlalign",
        "",
        f'model = vlalign.load_model("results/<experiment>/train/{run}/seed-{info["train"]["seed"]}")  # this folder',
        'images = model.encode_image(["photo.jpg"])  # PIL images, paths or uint8 N x 3 x H x W',
        'texts = model.encode_text(["a photo of a cat", "a drawing of a house"])',
        "print(model.similarity(images, texts))  # cosine; probabilities=True for SigLIP probabilities",
        "```",
        "",
        f"Weights: `{WEIGHTS_NAME}` (safetensors); configuration and provenance: `{CONFIG_NAME}`.",
        "Evaluation metrics are written separately by `vlalign evaluate`.",
        "",
    ]
    return "\n".join(lines)


def _rgb(image):
    """An RGB PIL image converted the way the workflow decodes samples (see data.images.to_rgb)."""
    from PIL import Image

    from vlalign.data.images import decode_rgb, to_rgb

    if isinstance(image, (str, os.PathLike)):
        return decode_rgb(Path(image).read_bytes())
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a file path, got {type(image).__name__}")
    return to_rgb(image)


def prepare_image(image, image_size: int, crop_ratio: float, max_resolution: int | None) -> np.ndarray:
    """uint8 3 x image_size x image_size, as convert + embed prepared training images: shrunk to
    max_resolution and padded to a square on white (the .beton), then ffcv's centre-crop decoder
    (a crop of int(crop_ratio * side), area-resized). A jpg .beton's compression is not imitated."""
    import cv2

    from vlalign.store.beton import square_on_white

    image = _rgb(image)
    square = np.asarray(square_on_white(image, max_resolution or max(image.size)))
    side = square.shape[0]
    crop = int(crop_ratio * side)
    start = (side - crop) // 2
    resized = cv2.resize(square[start : start + crop, start : start + crop], (image_size, image_size),
                         interpolation=cv2.INTER_AREA)  # fmt: skip
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


def _as_images(images) -> list:
    """A list of PIL images or paths from one image, a sequence of them, or a uint8 N x 3 x H x W tensor."""
    from PIL import Image

    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a uint8 tensor N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
        return [Image.fromarray(x.permute(1, 2, 0).cpu().numpy()) for x in images]
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    return list(images)


class AlignedModel:
    """Frozen encoders plus trained alignment layers; every output is a float32 CPU torch tensor.

    The frozen encoders are built on first use, so a text-only user never loads the image model.
    """

    def __init__(self, folder: Path, aligner, info: dict, device: str, precision: str | None):
        self.folder = folder
        self.aligner = aligner
        self.info = info
        self.device = device
        self.precision = precision
        self.embed_dim = aligner.embed_dim
        self._encoders: dict = {}

    def encoder(self, side: str):
        """The frozen `side` ("image" or "text") encoder, rebuilt as recorded; refuses one that differs."""
        if side not in self._encoders:
            from vlalign.encoders import create_encoder, encoder_options

            record = self.info["towers"][side]
            # The configured options rebuild the model; the recorded precision reproduces its numerics.
            options = {**encoder_options(self.info["encoders"][side]), "compile": False,
                       "precision": self.precision or record["precision"]}  # fmt: skip
            encoder = create_encoder(record["spec"], device=self.device, alias=self.info["encoders"][side].get("alias"),
                                     **options)  # fmt: skip
            found = encoder.describe()
            differs = {k: (found[k], record[k]) for k in CHECKED[side] if found[k] != record[k]}
            if differs:
                raise ValueError(f"{self.folder / CONFIG_NAME}: the {side} encoder now resolves differently from "
                                 f"training (field: (now, recorded)): {differs}")  # fmt: skip
            self._encoders[side] = encoder
        return self._encoders[side]

    def _align(self, tower, features) -> torch.Tensor:
        with torch.inference_mode():
            aligned = tower(torch.as_tensor(features, dtype=torch.float32).to(self.device))
        return aligned.float().cpu()

    def encode_image(self, images, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised (N, embed_dim) float32 CPU tensor of `images`: PIL images, file paths (one
        or a sequence) or a uint8 N x 3 x H x W RGB tensor; each is prepared like a training image."""
        encoder = self.encoder("image")
        record = self.info["towers"]["image"]
        images = _as_images(images)
        out = [torch.empty(0, self.embed_dim)]
        for start in range(0, len(images), batch_size):
            batch = [prepare_image(image, encoder.image_size, encoder.crop_ratio, record["max_resolution"])
                     for image in images[start : start + batch_size]]  # fmt: skip
            out.append(self._align(self.aligner.encode_image, encoder(torch.from_numpy(np.stack(batch)))))
        return torch.cat(out)

    def encode_text(self, texts: Sequence[str] | str, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised (N, embed_dim) float32 CPU tensor of `texts` (a string or a list of them)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        features = self.encoder("text").encode(texts, batch_size=batch_size)
        return self._align(self.aligner.encode_text, features)

    def similarity(self, image_embeddings, text_embeddings, probabilities: bool = False) -> torch.Tensor:
        """(N images, N texts) float32 matrix: cosine similarity in [-1, 1]; with probabilities=True,
        SigLIP's sigmoid(exp(logit_scale) * cosine + logit_bias), each pair's probability of matching
        under the learned scale and bias (only for a model trained with the sigmoid loss)."""
        from vlalign.align.losses import USES_BIAS

        image = F.normalize(torch.as_tensor(image_embeddings, dtype=torch.float32), dim=-1)
        text = F.normalize(torch.as_tensor(text_embeddings, dtype=torch.float32), dim=-1)
        cosine = image @ text.T
        if not probabilities:
            return cosine
        loss = self.info["train"]["loss"]
        if loss not in USES_BIAS:
            raise ValueError(f"{self.folder}: trained with the {loss} loss, whose bias is not learned; "
                             "pair probabilities need a sigmoid-loss model")  # fmt: skip
        scale, bias = self.aligner.logit_scale.detach().cpu().exp(), self.aligner.logit_bias.detach().cpu()
        return torch.sigmoid(scale * cosine + bias)


def load_model(path: str | os.PathLike, device: str = "auto", precision: str | None = None) -> AlignedModel:
    """The trained model in `path` (a run folder, or its model.json / model.safetensors).

    `device` "auto" is CUDA when present. `precision` (fp32, bf16, fp16, auto) overrides the frozen
    encoders' autocast; None keeps the one the training features were computed in.
    Weights are read with safetensors only; a damaged or mismatched file raises naming it.
    """
    from vlalign.devices import resolve_device

    device = resolve_device(device)
    aligner, info = load_checkpoint(path, device=device)
    folder = _checkpoint_dir(Path(path))
    if "towers" not in info or "train" not in info:
        raise ValueError(f"{folder / CONFIG_NAME}: no frozen-encoder records (towers, train); it predates model "
                         "export or is not a training run: re-run `vlalign train` for a loadable model")  # fmt: skip
    return AlignedModel(folder, aligner, info, device, precision)
