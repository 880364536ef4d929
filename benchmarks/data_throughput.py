"""Data-stage throughput on synthetic images: download, each curation measurement and filter, .beton conversion.

    python benchmarks/data_throughput.py [--samples 3000] [--eval-samples 300] [--ocr-samples 40] [--workers 2]

Prints one JSON line. Per stage: samples, wall seconds, CPU seconds (this process and its
finished children: the worker processes each stage starts), samples per wall second and
samples per CPU second. The CPU figure is per core and barely moves when other work
shares the machine, so it is the one to compare between runs.

Every stage calls the code the workflow runs: `run_download` on a URL list served from
127.0.0.1 by the tests' `ImageServer` (`tests/image_server.py`) (in a child process whose CPU time is left
out), the building blocks `measure_pool` is made of (then `measure_pool` itself, whose
table `decide` reads), `alignment_scores`, `decide`, `write_beton` and `verify_beton`.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from machine import describe_machine

from vlalign.align.checkpoint import save_checkpoint
from vlalign.align.heads import AlignmentModel
from vlalign.curate.alignment import alignment_scores
from vlalign.curate.captions import measure_captions
from vlalign.curate.concepts import load_entries, match_concepts
from vlalign.curate.decide import decide
from vlalign.curate.language import measure_language
from vlalign.curate.measure import _contamination, _duplicates, _measure_images, _ocr, check_settings, measure_pool
from vlalign.data.download import run_download
from vlalign.data.shards import Sample, ShardWriter, iter_samples, shard_paths
from vlalign.schema import default, defaults
from vlalign.store.beton import verify_beton, write_beton
from vlalign.store.embeddings import EmbeddingWriter

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from image_server import ImageServer  # noqa: E402  (the tests' loopback server)

COLOURS = ("red", "green", "blue", "yellow", "black", "orange", "purple", "grey")
SHAPES = ("circle", "square", "triangle", "star")
THINGS = ("dog", "cat", "car", "bus", "tree", "flower", "house", "boat", "apple", "guitar", "bird", "clock",
          "bicycle", "pizza", "rocket", "castle", "umbrella", "lamp", "horse", "cake")  # fmt: skip
FOREIGN = (
    "ein {c} Kreis neben einem Haus im Garten",
    "un {c} carré sur une table dans la cuisine",
    "un {c} triángulo al lado de la casa en la playa",
    "een {c} vierkant naast de boom in het park",
)
WRITTEN = ("SALE", "OPEN", "STOP", "HELLO WORLD", "FRESH BREAD", "PARKING", "EXIT", "BIG NEWS TODAY")

# URL rows that fail, as a share of the list, by path on the test server (web lists lose 10-30 %).
FAILURES = {"/status/404": 0.06, "/status/403": 0.01, "/status/500": 0.01, "/html.jpg": 0.02,
            "/truncated.jpg": 0.02, "/tiny.png": 0.01, "/noai.jpg": 0.01}  # fmt: skip


def cpu_seconds() -> float:
    """User + system time of this process and of its children that have exited and been waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Stages:
    """The figures of each stage timed, by name."""

    def __init__(self):
        self.figures: dict[str, dict] = {}

    @contextmanager
    def timed(self, name: str, samples: int):
        """Time the block; it may add figures of its own to the dict it is given."""
        extra: dict = {}
        wall, cpu = time.perf_counter(), cpu_seconds()
        yield extra
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        self.figures[name] = {"samples": samples, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
                              "samples_per_s": round(samples / wall, 1), "samples_per_cpu_s": round(samples / cpu, 1),
                              **extra}  # fmt: skip


def synthetic_image(rng: np.random.Generator, text: str | None) -> Image.Image:
    """A few filled shapes on a plain background at a random size; `text` is written large enough for OCR."""
    if rng.random() < 0.03:  # banners: fail the aspect-ratio check
        size = (int(rng.integers(400, 700)), int(rng.integers(60, 110)))
    else:
        size = tuple(int(side) for side in rng.integers(48, 512, size=2))
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, size=3)))
    draw = ImageDraw.Draw(image)
    w, h = size
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
        box = (x0, y0, x0 + rng.uniform(0.2, 0.5) * w, y0 + rng.uniform(0.2, 0.5) * h)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    if text is not None:
        image = image.resize((max(w, 320), max(h, 160)))
        draw = ImageDraw.Draw(image)
        draw.rectangle((10, 30, image.width - 10, 110), fill=(255, 255, 255))
        draw.text((20, 45), text, fill=(0, 0, 0), font=ImageFont.load_default(size=40))
    return image


def encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def caption_for(rng: np.random.Generator, colour: str, shape: str) -> str:
    """Mostly descriptive English; the rest the kinds of noise the caption and language filters catch."""
    thing, draw = THINGS[int(rng.integers(len(THINGS)))], rng.random()
    if draw < 0.72:
        return f"a {colour} {shape} next to a {thing} on a plain background"
    if draw < 0.78:
        return f"stock photo of a {thing}, royalty free"
    if draw < 0.82:
        return f"www.example.com/images/{thing}-{shape}.jpg"
    if draw < 0.86:
        return f"IMG_{int(rng.integers(10000)):04d}.jpg"
    if draw < 0.92:
        return thing
    return FOREIGN[int(rng.integers(len(FOREIGN)))].format(c=colour)


def synthetic_samples(n: int, rng: np.random.Generator, prefix: str, copies_from: list[Sample] = ()) -> list[Sample]:
    """Varied images and captions: ~10 % with a written caption, and exact and near copies of earlier
    samples (and of `copies_from`, the eval set) for the duplicate and contamination measurements."""
    samples: list[Sample] = []
    for index in range(n):
        colour, shape = COLOURS[int(rng.integers(len(COLOURS)))], SHAPES[int(rng.integers(len(SHAPES)))]
        key, caption, draw = f"{prefix}_{index:06d}", caption_for(rng, colour, shape), rng.random()
        earlier = samples if draw < 0.06 else list(copies_from) if draw < 0.08 else []
        if earlier:
            original = earlier[int(rng.integers(len(earlier)))]
            if rng.random() < 0.5:  # byte-identical copy
                samples.append(Sample(key, original.image, original.image_ext, caption, {"source": prefix}))
                continue
            # Re-encoded at another quality: the same picture with different bytes.
            image = Image.open(io.BytesIO(original.image)).convert("RGB")
            samples.append(Sample(key, encode(image, "JPEG", 60), "jpg", caption, {"source": prefix}))
            continue
        written = WRITTEN[int(rng.integers(len(WRITTEN)))] if draw < 0.18 else None
        if written is not None and rng.random() < 0.5:
            caption = written.lower()  # the caption only repeats the text in the image (text spotting)
        image = synthetic_image(rng, written)
        if draw > 0.98:
            image = Image.new("RGB", image.size, image.getpixel((0, 0)))  # blank
        ext = "jpg" if rng.random() < 0.7 else "png"
        meta = {"source": prefix, "category": shape, "written": written}
        samples.append(Sample(key, encode(image, "JPEG" if ext == "jpg" else "PNG"), ext, caption, meta))
    return samples


def write_shards(samples: list[Sample], folder: Path, per_shard: int) -> None:
    with ShardWriter(folder, per_shard) as writer:
        for sample in samples:
            writer.write(sample)


def _serve(shard_folder: str, conn) -> None:
    """Child process: serve the pool's images at /files/KEY.EXT until the parent asks to stop."""
    server = ImageServer()
    for sample in iter_samples(shard_paths(shard_folder)):
        server.files[f"{sample.key}.{sample.image_ext}"] = sample.image
    server.start()
    conn.send(server.base)
    conn.recv()  # the parent's "stop"
    server.stop()


def url_table(samples: list[Sample], base: str, rng: np.random.Generator) -> pd.DataFrame:
    """One row per sample: its image's URL, or in FAILURES' shares a URL that fails (made unique by a query)."""
    paths, shares = list(FAILURES), np.array(list(FAILURES.values()))
    bounds = np.cumsum(shares)
    urls = []
    for index, sample in enumerate(samples):
        slot = int(np.searchsorted(bounds, rng.random(), side="right"))
        urls.append(f"{base}{paths[slot]}?row={index}" if slot < len(paths)
                    else f"{base}/files/{sample.key}.{sample.image_ext}")  # fmt: skip
    return pd.DataFrame({"url": urls, "caption": [s.caption for s in samples]})


def bench_download(stages: Stages, pool: list[Sample], pool_dir: Path, work: Path, per_shard: int,
                   rng: np.random.Generator) -> None:  # fmt: skip
    # The server runs in its own process so its CPU time is not counted as the download's.
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    server = context.Process(target=_serve, args=(str(pool_dir), child_conn))
    server.start()
    try:
        base = conn.recv()
        table = url_table(pool, base, rng)
        table.to_parquet(work / "urls.parquet")
        source = {"type": "url_list", "path": str(work / "urls.parquet"), "allow_networks": ["127.0.0.0/8"]}
        with stages.timed("download", len(table)) as extra:
            summary = run_download("bench", source, work / "downloaded", None, per_shard)
            extra.update({key: summary[key] for key in ("ok", "failed", "skipped")},
                         errors={k.removeprefix("error."): v for k, v in summary.items() if k.startswith("error.")})
    finally:
        conn.send("stop")
        before = cpu_seconds()
        server.join()
    stages.figures["download"]["server_cpu_s_left_out"] = round(cpu_seconds() - before, 3)


def bench_alignment(stages: Stages, keys: list[str], work: Path, rng: np.random.Generator) -> pd.DataFrame:
    """Scores under an untrained demo-sized aligner: the cost does not depend on the weights.
    The embeddings are random: computing them is the embed stage, not curation."""
    for name, dim in (("image", 1280), ("text", 384)):
        writer = EmbeddingWriter(work / name, dim, meta={"spec": "synthetic"})
        writer.append(rng.standard_normal((len(keys), dim), dtype=np.float32), keys)
        writer.close()
    save_checkpoint(work / "checkpoint", AlignmentModel(1280, 384, head="star", target_dim=512, width_factor=2), {})
    with stages.timed("curate.alignment_score", len(keys)):
        return alignment_scores(work / "checkpoint", work / "image", work / "text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3000, help="pool size: URL rows, images measured, converted")
    parser.add_argument("--eval-samples", type=int, default=None, help="eval set for decontamination (samples / 10)")
    parser.add_argument("--ocr-samples", type=int, default=40, help="images read by OCR (~150 ms each on one core)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for image work and .beton writing (default: the workflow's, 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    eval_samples = args.eval_samples if args.eval_samples is not None else max(1, args.samples // 10)
    # Requests must reach the local server directly, whatever proxy the environment names.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    rng = np.random.default_rng(args.seed)
    per_shard = default("samples_per_shard")
    settings = {**check_settings({} if args.workers is None else {"workers": args.workers}), "progress": False}
    convert = defaults("convert")
    if args.workers is not None:
        convert["num_workers"] = args.workers
    stages = Stages()
    with tempfile.TemporaryDirectory(prefix="vlalign-data-bench-") as tmp:
        work = Path(tmp)
        evals = synthetic_samples(eval_samples, rng, "eval")
        pool = synthetic_samples(args.samples, rng, "pool", copies_from=evals)
        pool_dir, eval_dir = work / "pool", work / "eval"
        write_shards(pool, pool_dir, per_shard)
        write_shards(evals, eval_dir, per_shard)

        bench_download(stages, pool, pool_dir, work, per_shard, rng)

        n = len(pool)
        with stages.timed("curate.image_checks", n):
            images = _measure_images([pool_dir], settings, None, "images")
        with stages.timed("curate.caption_heuristics", n):
            measure_captions(images["caption"], settings["boilerplate"])
        with stages.timed("curate.language", n):
            measure_language(images["caption"])
        with stages.timed("curate.concepts", n):
            match_concepts(images["caption"], load_entries(settings["concepts"]))
        with stages.timed("curate.dedup", n) as extra:
            duplicates = _duplicates(images, settings["max_hamming"])
            extra.update(exact=int(duplicates["duplicate_of"].notna().sum()),
                         near=int(duplicates["near_duplicate_of"].notna().sum()))  # fmt: skip
        with stages.timed("curate.decontamination", n) as extra:
            eval_images = _measure_images([eval_dir], settings, None, "eval images")
            contaminated = _contamination(images, eval_images, settings["max_hamming"])
            extra.update(eval_samples=len(eval_images), contaminated=int(contaminated["contaminates"].notna().sum()))

        # Half the OCR sample has written text, so both outcomes are timed.
        written = [s.key for s in pool if s.meta.get("written")][: args.ocr_samples // 2]
        plain = [s.key for s in pool if not s.meta.get("written")][: args.ocr_samples - len(written)]
        ocr_keys = set(written + plain)
        with stages.timed("curate.ocr", len(ocr_keys)) as extra:
            read = _ocr([pool_dir], ocr_keys, settings)
            extra["texts_found"] = int((read["ocr_text"].fillna("") != "").sum())
            extra["ms_per_image_without_model_load"] = round(1000 * float(read["ocr_seconds"].mean()), 1)

        scores = bench_alignment(stages, images["key"].tolist(), work / "alignment", rng)

        # The whole measurement as `vlalign measure` runs it (OCR aside); its table is what decide() reads.
        with stages.timed("curate.measure_pool_without_ocr", n):
            measurements = measure_pool([pool_dir], [eval_dir], {"ocr": "off", "workers": settings["workers"]},
                                        progress=False)  # fmt: skip
        measurements = measurements.merge(scores, on="key", how="left")
        # A cap below the commonest concepts' counts, so balancing samples some of them out as at scale.
        balance = {"name": "balance", "cap": max(1, n // 50)}
        with stages.timed("curate.balance", n) as extra:
            extra["kept"] = int(decide(measurements, [balance])["kept"].sum())
        # Every filter but text_spotting, whose OCR read only a sample of the pool here.
        filters = [{"name": name} for name in ("caption", "language", "image", "dedup", "decontaminate")]
        filters += [{"name": "alignment", "top_fraction": 0.8}, balance]
        with stages.timed("curate.decide", n) as extra:
            extra["kept"] = int(decide(measurements, filters)["kept"].sum())

        beton, table = work / "pool.beton", work / "pool.parquet"
        with stages.timed("convert.write_beton", n) as extra:
            written_count = write_beton([pool_dir], beton, table, **convert)["written"]
            extra["written"] = written_count
        with stages.timed("convert.verify_beton", written_count):
            verify_beton(beton, table, num_workers=convert["num_workers"])

    print(json.dumps({
        "benchmark": "data_throughput", "date": datetime.date.today().isoformat(),
        "machine": describe_machine(),
        "samples": args.samples, "eval_samples": eval_samples, "ocr_samples": args.ocr_samples,
        "workers": settings["workers"], "seed": args.seed,
        "stages": stages.figures,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
