"""`vlalign score`: the alignment score of every pool pair under a trained run (the bootstrap filter's input)."""

from __future__ import annotations

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict) -> dict:
    return {"device": config["train"]["device"]}


def run(settings: dict, args) -> None:
    from vlalign.curate.alignment import alignment_scores
    from vlalign.devices import resolve_device
    from vlalign.io import atomic_path

    with track("score", settings, run=args.run) as tracked:
        tracked.log_inputs("scoring", args.image_embeddings, args.text_embeddings)
        scores = alignment_scores(args.checkpoint, args.image_embeddings, args.text_embeddings,
                                  device=resolve_device(settings["device"]))  # fmt: skip
        with atomic_path(args.out) as tmp:
            scores.to_parquet(tmp, index=False)
        quantiles = scores["alignment_score"].quantile([0.1, 0.5, 0.9])
        summary = {"pairs": len(scores), "mean": float(scores["alignment_score"].mean()),
                   **{f"quantile_{int(q * 100)}": float(v) for q, v in quantiles.items()}}  # fmt: skip
        tracked.log_metrics(summary)
        tracked.log_output("scores", args.out)
    print_summary("score", summary)


STAGE = Stage(
    "score", "alignment score of every pool pair under a trained run", run,
    arguments=(
        arg("--run", required=True, help="the scoring run (a key of train.runs)"),
        arg("--checkpoint", required=True),
        arg("--image-embeddings", required=True),
        arg("--text-embeddings", required=True),
        arg("--out", required=True, help="scores.parquet"),
    ),
    settings=settings,
)  # fmt: skip
