"""`vlalign probe`: SAIL's linear alignment probe of one (vision, text) encoder pair, a cell of the matrix."""

from __future__ import annotations

from pathlib import Path

from vlalign.align.train_stage import POOL_TRAINING_ARGUMENTS
from vlalign.config import probe_settings, tower_specs
from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict, image_encoder: str | None = None, text_encoder: str | None = None) -> dict:
    """One cell of the probing matrix; run standalone, the workflow's own pair."""
    return {"train": probe_settings(config), "device": config["train"]["device"],
            "encoders": tower_specs(config, image_encoder, text_encoder), "ks": config["evaluate"]["ks"]}  # fmt: skip


def run(settings: dict, args) -> None:
    import numpy as np

    from vlalign.align.fit import fit_pool, save_fit
    from vlalign.align.projection import project
    from vlalign.evaluate.metrics import retrieval_recall
    from vlalign.io import atomic_dir, write_json
    from vlalign.store.pairs import paired_embeddings

    image, text = settings["encoders"]["image"]["alias"], settings["encoders"]["text"]["alias"]
    with track("probe", settings, image_encoder=image, text_encoder=text) as tracked:
        tracked.log_inputs("training", args.pool_decisions, args.image_embeddings, args.text_embeddings)
        tracked.log_inputs("evaluation", args.eval_image_embeddings, args.eval_text_embeddings)
        with atomic_dir(args.out) as tmp:
            fit = fit_pool(settings, args.image_embeddings, args.text_embeddings, args.pool_decisions,
                           log_fn=lambda step, metrics: tracked.log_metrics(metrics, step=step))  # fmt: skip
            save_fit(fit, tmp, settings, args.pool_decisions)
            image_emb, text_emb, _ = paired_embeddings(args.eval_image_embeddings, args.eval_text_embeddings)
            z_img, z_txt = project(fit.result.model, image_emb, text_emb)
            metrics = retrieval_recall(z_img, z_txt, np.arange(len(z_txt)), ks=tuple(settings["ks"]))
            # SAIL's alignment-probing score: retrieval R@10 averaged over both directions.
            metrics["alignment_score"] = metrics.get("mean_recall_at_10", float("nan"))
            metrics = {f"{Path(args.eval_text_embeddings).parent.name}.{k}": v for k, v in metrics.items()}
            metrics["train_pairs"] = float(len(fit.keys))
            write_json(tmp / "metrics.json", {"name": f"probe:{image}__{text}", "metrics": metrics})
        tracked.log_metrics(metrics)
        tracked.log_output("metrics", Path(args.out) / "metrics.json")
    print_summary("probe", metrics)


STAGE = Stage(
    "probe", "SAIL's linear alignment probe", run,
    arguments=(
        *POOL_TRAINING_ARGUMENTS,
        arg("--image-encoder", help="alias of the vision encoder (default: image_encoder)"),
        arg("--text-encoder", help="alias of the text encoder (default: text_encoder)"),
        arg("--eval-image-embeddings", required=True),
        arg("--eval-text-embeddings", required=True),
    ),
    settings=settings, wildcards=("image_encoder", "text_encoder"),
)  # fmt: skip
