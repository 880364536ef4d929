"""`vlalign evaluate`: zero-shot classification, retrieval and compositionality of one trained run under one seed.

Writes metrics.json (`name`, `seed`, `metrics`, and `intervals`: the 95 % bootstrap interval of every metric that
is a mean over evaluation items) and, beside it, per_sample.parquet (`metric`, `item`, `value`: every item's
outcome of those metrics), which the report resamples to compare runs over their seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict) -> dict:
    return {"evaluate": config["evaluate"], "device": config["train"]["device"],
            "text_encoder": config["encoders"][config["text_encoder"]]}  # fmt: skip


def _train_run(tracked, run_name: str, seed: int) -> str | None:
    """The MLflow run of the training this evaluation scores, if the store has it."""
    if tracked.run_id is None:
        return None
    try:
        experiment_id = tracked.client.get_run(tracked.run_id).info.experiment_id
        found = tracked.client.search_runs(
            [experiment_id],
            filter_string=f"tags.rule = 'train' and tags.`wildcard.run` = '{run_name}'"
            f" and tags.`wildcard.seed` = '{seed}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    except Exception as exc:
        tracked.errors.append(f"finding the train run failed: {exc}")
        return None
    return found[0].info.run_id if found else None


def _logged_model(tracked, train_run: str) -> str | None:
    """The id of the MLflow model that the train run logged (vlalign.mlflow_model), if any."""
    try:
        outputs = tracked.client.get_run(train_run).outputs
    except Exception as exc:
        tracked.errors.append(f"finding the trained model failed: {exc}")
        return None
    return outputs.model_outputs[-1].model_id if outputs and outputs.model_outputs else None


def run(settings: dict, args) -> None:
    from vlalign.align.checkpoint import CONFIG_NAME, _checkpoint_dir
    from vlalign.evaluate.bootstrap import percentile_interval
    from vlalign.evaluate.evaluation import PER_SAMPLE_NAME, evaluate_checkpoint, evaluation_inputs, per_sample_table
    from vlalign.io import atomic_path, write_json
    from vlalign.schema import complete

    resamples = complete("evaluate", settings["evaluate"])["bootstrap_resamples"]
    per_sample = Path(args.out).with_name(PER_SAMPLE_NAME)
    with track("evaluate", settings, run=args.run, seed=str(args.seed)) as tracked:
        scores = evaluate_checkpoint(args.checkpoint, Path(args.eval_dir), settings["evaluate"], settings["device"])
        metrics = scores.metrics()
        intervals = {name: list(percentile_interval(found.values, resamples))
                     for name, found in scores.outcomes.items() if len(found.values)}  # fmt: skip
        # The outcomes first: a metrics.json is never without the per_sample.parquet beside it.
        with atomic_path(per_sample) as part:
            per_sample_table(scores).to_parquet(part, index=False)
        write_json(args.out, {"name": args.run, "seed": args.seed, "metrics": metrics, "intervals": intervals})
        towers = json.loads((_checkpoint_dir(Path(args.checkpoint)) / CONFIG_NAME).read_text())["encoders"]
        for paths in evaluation_inputs(Path(args.eval_dir), towers, settings["evaluate"]).values():
            tracked.log_inputs("evaluation", *paths.values())
        tracked.log_metrics(metrics)
        tracked.log_output("metrics", args.out)
        tracked.log_output("per_sample", per_sample)
        train_run = _train_run(tracked, args.run, args.seed)
        if train_run is not None:
            # Also on the trained model's own run and its MLflow model, so the UI compares runs and models by them.
            model_id = _logged_model(tracked, train_run)
            tracked.log_metrics(metrics, run_id=train_run, model_id=model_id)
            if model_id is not None:
                tracked.log_model_input(model_id)
    print_summary("evaluate", metrics)


STAGE = Stage(
    "evaluate", "zero-shot classification and retrieval of a trained run under one seed", run,
    arguments=(
        arg("--run", required=True),
        arg("--seed", type=int, required=True, help="the training seed of the checkpoint (train/{run}/seed-{seed})"),
        arg("--checkpoint", required=True),
        arg("--eval-dir", required=True, help="results folder holding beton/ and embeddings/"),
        arg("--out", required=True, help="metrics.json; per_sample.parquet is written beside it"),
    ),
    settings=settings,
)  # fmt: skip
