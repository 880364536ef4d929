"""The plan of a configuration: one row per stage (download per source, measure, select per pool, convert and
embed per dataset, train per run, probe per cell, score, evaluate per run) with its items, FLOPs, disk, peak
memory and projected time on each named GPU, and the assumptions behind them."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field

from vlalign.config import (
    eval_dataset,
    eval_sources,
    experiment_dir,
    probe_encoders,
    probe_settings,
    probing,
    run_pool,
    run_seeds,
    scoring_run,
    train_settings,
)
from vlalign.curate.hamming_index import work_per_code
from vlalign.plan.architectures import Architecture, build_architecture
from vlalign.plan.assumptions import Assumptions
from vlalign.plan.disk import beton_bytes_per_image, store_bytes
from vlalign.plan.flops import StepFlops, encoder_flops, training_flops
from vlalign.plan.gpus import Gpu, gpu_seconds, measured_rate
from vlalign.plan.items import SourceCount, count_source
from vlalign.plan.memory import StepMemory, training_step_memory
from vlalign.plan.units import human_bytes, human_duration
from vlalign.progress import Progress

# Encoder keys that change how a model runs, not its architecture or its FLOPs.
RUN_ONLY_KEYS = ("batch_size", "precision", "compile", "random_init")


@dataclass
class Row:
    stage: str
    what: str
    items: float | None
    flops_per_item: float | None = None
    total_flops: float | None = None
    disk_bytes: float | None = None
    peak_memory_bytes: float | None = None
    seconds: dict[str, float | None] = field(default_factory=dict)  # GPU name -> projected seconds
    where: str = "GPU"  # "GPU", "GPU x N" (data parallel), or "CPU x N": N cores whatever the GPU
    gpus: int = 1  # GPUs the stage holds for its time (GPU-hours = time × gpus)
    note: str = ""
    key: str = ""  # what a measured throughput in gpus.yaml is matched on


@dataclass
class Plan:
    rows: list[Row]
    gpus: list[Gpu]
    assumptions: list[str]


def _known(*values) -> bool:
    return all(v is not None for v in values)


def _times(value, count):
    return value * count if _known(value, count) else None


def _repeat(row: Row, times: int) -> None:
    """A run's row made to stand for its trainings (or evaluations) under `times` seeds, one after another."""
    if times == 1:
        return
    row.items, row.total_flops = _times(row.items, times), _times(row.total_flops, times)
    row.seconds = {gpu: _times(seconds, times) for gpu, seconds in row.seconds.items()}
    row.note = f"{row.note}, × {times} seeds" if row.note else f"× {times} seeds"


class Planner:
    """Builds a Plan from a validated config; `samples` overrides the training pool's size in pairs."""

    def __init__(self, config: dict, gpus: list[Gpu], samples: int | None = None):
        self.config = config
        self.gpus = gpus
        self.samples = samples
        self.assumptions = Assumptions()
        self.rows: list[Row] = []
        self._architectures: dict[str, Architecture] = {}
        self._encoder_flops: dict[tuple[int, int | None], int] = {}
        self._steps: dict[str, tuple[StepFlops, StepMemory]] = {}

    def plan(self) -> Plan:
        config = self.config
        print(f"plan: {config['experiment']}: counting items, then FLOPs on {len(config['encoders'])} encoders' "
              "architectures and the training steps", file=sys.stderr, flush=True)  # fmt: skip
        self._count_sources()
        self._downloads()
        self._measure()
        self._select()
        self._convert()
        self._embed()
        for run in config["train"]["runs"]:
            pairs = _times(self.pool, self.keep[run_pool(config, run)])
            self._train("train", run, train_settings(config, run), config["image_encoder"], config["text_encoder"],
                        pairs)  # fmt: skip
            _repeat(self.rows[-1], len(run_seeds(config, run)))
        if probing(config):
            image_encoders, text_encoders = probe_encoders(config)
            pairs = _times(self.pool, self.keep[config["probe"]["pool"]])
            for image in image_encoders:
                for text in text_encoders:
                    self._train("probe", f"{image}__{text}", probe_settings(config), image, text, pairs)
        self._score()
        self._evaluate()
        return Plan(self.rows, self.gpus, self.assumptions.lines())

    # Items ---------------------------------------------------------------------------------------------------

    def _count_sources(self) -> None:
        config = self.config
        self.counts: dict[str, SourceCount] = {}
        for name, source in config["sources"].items():
            self.counts[name] = count_source(name, source, config, self.assumptions)
        pool_sources = config["curate"]["sources"]
        trains = [self.counts[s].train for s in pool_sources]
        self.pool = sum(trains) if _known(*trains) else None
        if self.samples is not None:
            self._scale_pool_sources(pool_sources, trains)
        self.eval_items = {eval_dataset(s): self.counts[s].eval for s in eval_sources(config)}
        self.keep = {pool: self._keep_fraction(pool) for pool in config["curate"]["pools"]}

    def _scale_pool_sources(self, names: list[str], trains: list[float | None]) -> None:
        """--samples: the pool's sources scaled so that their train splits hold that many pairs in all."""
        counted = sum(trains) if _known(*trains) else 0
        for name, train in zip(names, trains):
            share = train / counted if counted else 1 / len(names)
            count, source = self.counts[name], self.config["sources"][name]
            scale = self.samples * share / train if counted and train else None
            count.train = self.samples * share
            count.eval = count.train * source["eval_fraction"] / (1 - source["eval_fraction"])
            if scale is not None:
                count.items *= scale
            else:
                success = self.assumptions.value("download.success_rate.url_list" if source["type"] == "url_list"
                                                 else "download.success_rate.local")  # fmt: skip
                count.items = (count.train + count.eval) / success
        self.pool = float(self.samples)
        self.assumptions.note("samples", f"{self.samples:,}", "--samples: the pool's train split and every run's "
                              "training pairs (curation taken to keep them all); its sources scaled to give them")

    def _keep_fraction(self, pool: str) -> float:
        """The fraction of the pool a curated pool keeps: measured by a finished `select`, else the product of its
        filters' stated fractions (an alignment filter's `top_fraction` as given)."""
        if self.samples is not None:
            return 1.0
        decisions = experiment_dir(self.config) / "curate" / "pools" / pool / "decisions.parquet"
        if decisions.is_file():
            import pandas as pd

            kept = pd.read_parquet(decisions, columns=["kept"])["kept"]
            self.assumptions.note(f"curation.{pool}", f"{kept.mean():.3f} kept", f"measured ({decisions})")
            return float(kept.mean())
        fraction = 1.0
        for name in self.config["curate"]["pools"][pool]:
            settings = self.config["curate"]["filters"][name]
            if not settings["enabled"]:
                continue
            if name == "alignment" and settings["top_fraction"] is not None:
                fraction *= settings["top_fraction"]
            else:
                fraction *= self.assumptions.value(f"curation.keep.{name}")
        return fraction

    # CPU stages ----------------------------------------------------------------------------------------------

    def _cpu_row(self, stage: str, what: str, items, seconds, cores: int, **fields) -> Row:
        return Row(stage, what, items, seconds={gpu.name: seconds for gpu in self.gpus}, where=f"CPU x {cores}",
                   **fields)  # fmt: skip

    def _downloads(self) -> None:
        cpu_rate = self.assumptions.value("download.samples_per_cpu_s")
        for name, source in self.config["sources"].items():
            count = self.counts[name]
            ok = count.train + count.eval if _known(count.train, count.eval) else None
            rate, note = cpu_rate, "checks on one process"
            if source["type"] == "url_list":
                fetch = self.assumptions.value("download.fetch_seconds")
                rate = min(cpu_rate, source["threads"] / fetch)
                note = f"{source['threads']} threads fetching" if rate < cpu_rate else note
            seconds = count.items / rate if count.items is not None else None
            self.rows.append(self._cpu_row("download", name, count.items, seconds, 1, note=note,
                                           disk_bytes=_times(ok, count.bytes_per_sample)))  # fmt: skip

    def _measure(self) -> None:
        settings = self.config["curate"]["measure"]
        evals = sum(v for v in self.eval_items.values() if v is not None)
        items = self.pool + evals if self.pool is not None else None
        workers = settings["workers"]
        if items is None:
            self.rows.append(self._cpu_row("measure", "pool", None, None, workers))
            return
        unit = self.assumptions.value("measure.phash_index_seconds_per_unit")
        images = items / (self.assumptions.value("measure.samples_per_cpu_s") * workers)
        radius = settings["max_hamming"]
        against_evals = work_per_code(radius, evals) if evals else 0.0
        pairs = self.pool * (2 * work_per_code(radius, self.pool) + against_evals) * unit  # one core
        ocr = 0.0
        if settings["ocr"] != "off":  # "survivors" reads fewer: an upper bound
            ocr = self.pool * self.assumptions.value("measure.ocr_seconds_per_image") / workers
        note = f"images {human_duration(images)}, pHash index {human_duration(pairs)}"
        note += f", OCR {human_duration(ocr)}" if ocr else ""
        self.rows.append(self._cpu_row("measure", "pool + eval images", items, images + pairs + ocr, workers,
                                       note=note))  # fmt: skip

    def _select(self) -> None:
        rate = self.assumptions.value("select.samples_per_cpu_s")
        bytes_per_sample = self._pool_sample_bytes()
        for pool in self.config["curate"]["pools"]:
            disk = _times(_times(self.pool, self.keep[pool]), bytes_per_sample)  # the curated shards
            seconds = self.pool / rate if self.pool is not None else None
            self.rows.append(self._cpu_row("select", pool, self.pool, seconds, 1, disk_bytes=disk,
                                           note=f"keeps {self.keep[pool]:.0%}"))  # fmt: skip

    def _pool_sample_bytes(self) -> float | None:
        counts = [self.counts[s] for s in self.config["curate"]["sources"]]
        if not all(_known(c.train, c.bytes_per_sample) for c in counts) or not sum(c.train for c in counts):
            return None
        return sum(c.train * c.bytes_per_sample for c in counts) / sum(c.train for c in counts)

    def _convert(self) -> None:
        settings = self.config["convert"]
        per_image = beton_bytes_per_image(settings, self.assumptions)
        rate = self.assumptions.value("convert.samples_per_cpu_s") * settings["num_workers"]
        for dataset, items in self._datasets().items():
            seconds = items / rate if items is not None else None
            self.rows.append(self._cpu_row("convert", dataset, items, seconds, settings["num_workers"],
                                           disk_bytes=_times(items, per_image)))  # fmt: skip

    def _datasets(self) -> dict[str, float | None]:
        return {"pool": self.pool, **self.eval_items}

    # GPU stages ----------------------------------------------------------------------------------------------

    def _architecture(self, alias: str) -> Architecture:
        """Built once per architecture: entries differing only in how they run (batch, precision, a random_init
        seed) share it."""
        entry = self.config["encoders"][alias]
        shape = json.dumps({k: v for k, v in entry.items() if k not in RUN_ONLY_KEYS}, sort_keys=True)
        if shape not in self._architectures:
            self._architectures[shape] = build_architecture(alias, entry, self.assumptions)
        return self._architectures[shape]

    def _embed(self) -> None:
        wanted = self._embeddings()
        self.assumptions.note("embed.loader", "not limiting", "embed times are the GPU's; FFCV's decoding of the "
                              "stored JPEGs on embed.num_workers cores is taken to keep up")
        progress = Progress("plan: counting FLOPs of the encoders", total=len(wanted), unit="stores", interval=2.0)
        for dataset, alias, tokens_from in wanted:
            entry = self.config["encoders"][alias]
            architecture = self._architecture(alias)
            items = self._datasets().get(dataset, self.pool)
            tokens = self._tokens(alias, tokens_from) if architecture.modality == "text" else None
            if (id(architecture), tokens) not in self._encoder_flops:
                self._encoder_flops[(id(architecture), tokens)] = encoder_flops(architecture, tokens)
            flops = self._encoder_flops[(id(architecture), tokens)]
            precision = entry["precision"]
            size = f"{tokens} tokens" if tokens else f"{architecture.image_size} px"
            key = f"{entry['spec']}@{size.replace(' ', '')}"
            row = Row("embed", f"{dataset} x {alias}", items, flops, _times(items, flops),
                      store_bytes(items, architecture.dim) if items is not None else None,
                      note=f"{size}, {architecture.dim}-d", key=key)  # fmt: skip
            for gpu in self.gpus:
                by_precision = {self._precision(precision, gpu): flops}
                row.seconds[gpu.name] = self._gpu_time(gpu, "embed", key, items, by_precision)
            self.rows.append(row)
            progress.update(1)
        progress.close()

    def _embeddings(self) -> list[tuple[str, str, str]]:
        """(dataset, encoder, the captions whose length applies) of every store the workflow embeds, once each."""
        config = self.config
        image, text = config["image_encoder"], config["text_encoder"]
        wanted = [("pool", image, ""), ("pool", text, "caption")]
        for dataset in self.eval_items:
            wanted += [(dataset, image, ""), (dataset, text, dataset.removeprefix("eval_"))]
        if probing(config):
            image_encoders, text_encoders = probe_encoders(config)
            probe_eval = eval_dataset(config["probe"]["eval_source"])
            wanted += [("pool", e, "") for e in image_encoders] + [("pool", e, "caption") for e in text_encoders]
            wanted += [(probe_eval, e, "") for e in image_encoders]
            wanted += [(probe_eval, e, config["probe"]["eval_source"]) for e in text_encoders]
            wanted += [(eval_dataset(s), e, "") for s in config["evaluate"]["zeroshot"] for e in image_encoders]
        runs = [train_settings(config, run) for run in config["train"]["runs"]]
        if any(s["multi_positive"] for s in runs):
            wanted += [(f"pool_captions/{f}", text, f) for f in config["captions"]["extra"]]
        if any(s["hard_negatives"] for s in runs):
            wanted.append(("pool_negatives", text, "caption"))
        seen: dict[tuple[str, str], tuple[str, str, str]] = {}
        for dataset, alias, captions in wanted:
            seen.setdefault((dataset, alias), (dataset, alias, captions))
        return list(seen.values())

    def _tokens(self, alias: str, captions: str) -> int:
        """Tokens of a text for the encoder: the measured mean caption length where captions were read (the
        pool's main or extra field, or an eval source's; an eval set without readable captions takes the pool's),
        else the stated default; plus the encoder's prefix, at most its max_length."""
        entry = self.config["encoders"][alias]
        if captions in self.config["sources"] and not self.counts[captions].captions.get("caption"):
            captions = "caption"
        tokens = self._caption_tokens(captions)
        tokens += len(entry["prefix"].split()) * self.assumptions.value("text.tokens_per_word")
        if entry["max_length"] is not None:
            tokens = min(tokens, entry["max_length"])
        return max(1, round(tokens))

    def _caption_tokens(self, captions: str) -> float:
        if captions in self.config["sources"]:
            texts = self.counts[captions].captions["caption"]
        else:
            texts = [t for s in self.config["curate"]["sources"] for t in self.counts[s].captions.get(captions, [])]
        if not texts:
            return self.assumptions.value("text.default_tokens")
        words = sum(len(t.split()) for t in texts) / len(texts)
        tokens = words * self.assumptions.value("text.tokens_per_word") + self.assumptions.value("text.special_tokens")
        self.assumptions.note(f"text.tokens.{captions}", f"{tokens:.1f}",
                              f"{len(texts):,} captions read, {words:.1f} words on average")  # fmt: skip
        return tokens

    def _precision(self, precision: str, gpu: Gpu) -> str:
        """An encoder's `precision` on the GPU: `auto` is bf16 where the GPU has it, else fp16 (as on a V100)."""
        if precision == "auto":
            return "bf16" if gpu.peak_tflops["bf16"] else "fp16"
        return precision

    def _gpu_time(self, gpu: Gpu, stage: str, key: str, items, flops_by_precision: dict[str, float]) -> float | None:
        if items is None:
            return None
        measured = measured_rate(gpu, stage, key)
        if measured is not None:
            self.assumptions.note(f"measured.{gpu.name}.{key}", f"{measured['items_per_s']:,} items/s",
                                  measured["source"])  # fmt: skip
            return items / measured["items_per_s"]
        return items * gpu_seconds(flops_by_precision, gpu, stage, self.assumptions)

    def _dims(self, image: str, text: str) -> tuple[int, int]:
        return self._architecture(image).dim, self._architecture(text).dim

    def _train(self, stage: str, run: str, settings: dict, image: str, text: str, pairs: float | None) -> None:
        image_dim, text_dim = self._dims(image, text)
        extra = len(self.config["captions"]["extra"]) if settings["multi_positive"] else 0
        step, memory = self._step(settings, image_dim, text_dim, extra)
        batch, samples_seen = settings["batch_size"], settings["samples_seen"]
        trained = _times(pairs, 1 - settings["val_fraction"])
        # A compute budget fixes the steps whatever the pool's size; otherwise the epochs do.
        epochs = samples_seen / trained if samples_seen and trained else settings["epochs"]
        gpus = self.config["train"]["gpus"] if stage == "train" else 1  # a probe cell runs on one GPU
        key = (f"{settings['head']}x{settings['width_factor']}->{settings['target_dim']} {image_dim}+{text_dim} "
               f"B{batch} {settings['loss']} extra{extra} {settings['precision']}")  # fmt: skip
        row = Row(stage, run, samples_seen or _times(pairs, epochs), step.total, key=key,
                  peak_memory_bytes=memory.peak_bytes,
                  disk_bytes=memory.weights_bytes)  # fmt: skip
        if pairs is None:
            row.seconds = {gpu.name: None for gpu in self.gpus}
            self.rows.append(row)
            return
        validated = pairs * settings["val_fraction"]
        row.total_flops = epochs * (trained * step.total + validated * sum(step.forward.values()))
        steps = math.ceil(samples_seen / batch) if samples_seen else math.ceil(trained / batch) * epochs
        row.note = f"{steps:,} steps of {batch:,}"
        if gpus > 1:
            row.where, row.gpus = f"GPU x {gpus}", gpus
            row.note += " (peak memory as on one GPU: an upper bound, each holds a share of the heads' activations)"
        arrays = image_dim + text_dim * (1 + extra + settings["hard_negatives"])
        row.peak_memory_bytes += self._resident(store_bytes(pairs, arrays), memory.weights_bytes, row)
        for gpu in self.gpus:
            row.seconds[gpu.name] = self._train_time(gpu, row.key, step, trained, validated, epochs, gpus)
        self.rows.append(row)

    def _step(self, settings: dict, image_dim: int, text_dim: int, extra: int) -> tuple[StepFlops, StepMemory]:
        """The step's FLOPs and memory, counted once for runs that share settings and dimensions."""
        key = json.dumps([settings, image_dim, text_dim, extra], sort_keys=True)
        if key not in self._steps:
            self._steps[key] = (training_flops(settings, image_dim, text_dim, extra),
                                training_step_memory(settings, image_dim, text_dim, extra))  # fmt: skip
        return self._steps[key]

    def _resident(self, embeddings: float, weights: float, row: Row) -> float:
        """The trainer keeps the run's embeddings on the GPU (float16) when they take under half its free memory."""
        gpu = self.gpus[0]
        if embeddings < (gpu.memory_bytes - weights) / 2:
            row.note += f", embeddings on the {gpu.name} ({human_bytes(embeddings)})"
            return embeddings
        row.note += (f", embeddings streamed from host memory ({human_bytes(embeddings)} do not fit half the "
                     f"{gpu.name}; read once an epoch, from the page cache or from disk)")  # fmt: skip
        return 0.0

    def _train_time(self, gpu: Gpu, key: str, step: StepFlops, trained: float, validated: float, epochs: int,
                    gpus: int) -> float:  # fmt: skip
        measured = measured_rate(gpu, "train", key)
        if measured is not None:
            self.assumptions.note(f"measured.{gpu.name}.{key}", f"{measured['items_per_s']:,} pairs/s",
                                  measured["source"])  # fmt: skip
            return epochs * (trained + validated / 3) / measured["items_per_s"]
        # Data parallel: each GPU runs its share of the heads, and the loss over the whole gathered batch.
        per_pair = {p: v / gpus for p, v in step.heads.items()}
        for precision, value in step.loss.items():
            per_pair[precision] = per_pair.get(precision, 0.0) + value
        seconds = epochs * trained * gpu_seconds(per_pair, gpu, "train", self.assumptions)
        return seconds + epochs * validated * gpu_seconds(step.forward, gpu, "train", self.assumptions) / gpus

    def _score(self) -> None:
        scorers = {scoring_run(self.config, pool) for pool in self.config["curate"]["pools"]} - {None}
        for run in sorted(scorers):
            self._forward_row("score", run, self.pool)

    def _evaluate(self) -> None:
        items = list(self.eval_items.values())
        total = sum(items) if _known(*items) else None
        for run in self.config["train"]["runs"]:
            self._forward_row("evaluate", run, total)
            _repeat(self.rows[-1], len(run_seeds(self.config, run)))

    def _forward_row(self, stage: str, run: str, items) -> None:
        """Heads applied to stored embeddings (no training): the forward FLOPs of a pair."""
        settings = train_settings(self.config, run)
        image_dim, text_dim = self._dims(self.config["image_encoder"], self.config["text_encoder"])
        single = {**settings, "batch_size": 2, "multi_positive": False, "hard_negatives": False}
        forward = training_flops(single, image_dim, text_dim).forward
        flops = sum(forward.values())
        row = Row(stage, run, items, flops, _times(items, flops))
        for gpu in self.gpus:
            row.seconds[gpu.name] = self._gpu_time(gpu, "evaluate", "", items, forward)
        self.rows.append(row)

