"""`vlalign train`: SAIL alignment layers trained on one run's curated pool, exported as a self-contained model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vlalign.config import run_seeds, tower_specs, train_settings
from vlalign.stage import Stage, arg, print_summary, track

# The inputs of a training on a pool, shared with the probe stage.
POOL_TRAINING_ARGUMENTS = (
    arg("--image-embeddings", required=True),
    arg("--text-embeddings", required=True),
    arg("--pool-decisions", required=True, help="decisions.parquet of the curated pool to train on"),
    arg("--out", required=True),
)


def settings(config: dict, run: str, seed: str | int | None = None) -> dict:
    # The .beton's image bound goes into the exported model: load_model prepares images alike.
    seed = run_seeds(config, run)[0] if seed is None else int(seed)
    return {"train": train_settings(config, run, seed), "device": config["train"]["device"],
            "encoders": tower_specs(config),
            "convert": {"max_resolution": config["convert"]["max_resolution"]}}  # fmt: skip


def run(settings: dict, args) -> None:
    from vlalign.align.curves import plot_training_curves
    from vlalign.align.fit import fit_pool, save_fit
    from vlalign.io import atomic_dir, work_dir, write_json
    from vlalign.mlflow_model import log_aligner
    from vlalign.model import export_model
    from vlalign.schema import complete

    # Beside the output, not in it: Snakemake deletes a job's outputs before re-running it, and a
    # re-run after a kill resumes from the training state kept here.
    state_dir = work_dir(args.out, "state")
    inputs = (settings, args.image_embeddings, args.text_embeddings, args.pool_decisions, args.negative_embeddings,
              args.extra_text_embeddings)  # fmt: skip
    if int(os.environ.get("RANK", "0")) > 0:
        # Under torchrun the other ranks lend their GPU to the steps; rank 0 tracks and writes everything.
        fit_pool(*inputs, state_dir=state_dir)
        return
    # One MLflow run per seed, under one run of the configuration (whatever its number of seeds: adding a seed
    # to the config must not change, and so re-run, the trainings already done).
    seed = complete("train.defaults", settings["train"])["seed"]  # settings made by hand may leave it out
    with track("train", settings, group=f"train {args.run}", run=args.run, seed=str(seed)) as tracked:
        # What the model is trained on, in the UI's Dataset column: the curated pool first.
        tracked.log_inputs("training", args.pool_decisions, args.image_embeddings, args.text_embeddings,
                           args.negative_embeddings, *args.extra_text_embeddings)  # fmt: skip
        with atomic_dir(args.out) as tmp:
            fit = fit_pool(*inputs, log_fn=lambda step, metrics: tracked.log_metrics(metrics, step=step),
                           state_dir=state_dir)  # fmt: skip
            if fit.result.resumed_from_step is not None:
                tracked.log_metrics({"resumed_from_step": fit.result.resumed_from_step})
            save_fit(fit, tmp, settings, args.pool_decisions)
            history = fit.result.history
            plot_training_curves(history, tmp / "curves.png", title=f"training run {args.run}, seed {seed}")
            final = {k: v for k, v in history[-1].items() if isinstance(v, (int, float))}
            write_json(tmp / "train_summary.json", final)
            export_model(tmp, args.run, settings, args.image_embeddings, args.text_embeddings, final)
        shutil.rmtree(state_dir, ignore_errors=True)  # the output is complete
        for name in ("model.safetensors", "model.json", "README.md", "curves.csv", "curves.png"):
            tracked.log_output(name.replace(".", "_"), Path(args.out) / name)
        log_aligner(tracked, args.out)  # mlflow.pyfunc.load_model("runs:/<run id>/model")
    print_summary("train", final)


STAGE = Stage(
    "train", "train SAIL alignment layers", run,
    arguments=(
        *POOL_TRAINING_ARGUMENTS,
        # --run-name: torchrun's own parser takes "--run" for an abbreviation of its --run-path.
        arg("--run", "--run-name", dest="run", required=True, help="run name (a key of train.runs)"),
        arg("--negative-embeddings", help="text embeddings of the hard-negative captions"),
        arg("--extra-text-embeddings", nargs="*", default=[],
            help="text embeddings of extra caption sets (multi-positive)"),
    ),
    settings=settings, wildcards=("run", "seed"),
)  # fmt: skip
