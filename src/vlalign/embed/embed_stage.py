"""`vlalign embed`: one frozen encoder's features of a dataset (images from its .beton(s), or captions)."""

from __future__ import annotations

import json
from pathlib import Path

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict, encoder: str) -> dict:
    return {"encoder": config["encoders"][encoder], "embed": config["embed"]}


def run(settings: dict, args) -> None:
    from vlalign.embed.features import embed_images, embed_texts
    from vlalign.encoders import is_text_spec

    encoder = {"alias": args.encoder, **settings["encoder"]}
    scatter = {"part": args.part, "parts": args.parts}
    part = {"part": f"{args.part}-of-{args.parts}"} if args.parts > 1 else {}
    with track("embed", settings, dataset=args.dataset, encoder=args.encoder, **part) as tracked:
        if is_text_spec(encoder["spec"]):
            tracked.log_inputs("embedding", args.table)
            summary = embed_texts(args.table, encoder, args.out, settings["embed"], caption_field=args.caption_field,
                                  **scatter)  # fmt: skip
        else:
            if not args.beton or args.caption_field:
                raise ValueError(f"encoder {args.encoder!r} embeds images: --beton is required, --caption-field not")
            summary = embed_images(args.beton, args.table, encoder, args.out, settings["embed"], **scatter)
            # The files this part read: of a pool's many partition .betons, only those its rows are in.
            tracked.log_inputs("embedding", *summary.pop("betons"), args.table)
        meta = json.loads((Path(args.out) / "meta.json").read_text())
        # What was really run (resolved precision, preprocessing), next to the configured settings.
        tracked.log_params({f"resolved.{k}": v for k, v in meta.items() if k not in ("parts", "count", "dim")})
        tracked.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        tracked.log_output("embeddings", args.out)
    print_summary("embed", summary)


STAGE = Stage(
    "embed", "frozen-encoder embeddings of a dataset (images from its .beton(s), or captions)", run,
    arguments=(
        arg("--encoder", required=True, help="encoder alias (a key of `encoders`)"),
        arg("--dataset", required=True, help="dataset name, for tracking"),
        arg("--beton", nargs="+", help="the .beton(s) the table names (image encoders only)"),
        arg("--caption-field", help="embed this extra caption set of the samples' metadata instead"),
        arg("--table", required=True),
        arg("--out", required=True),
        arg("--part", type=int, default=0, help="embed only this part of the rows (0-based)"),
        arg("--parts", type=int, default=1, help="into how many contiguous parts the rows are split"),
    ),
    settings=settings, wildcards=("encoder",),
)  # fmt: skip
