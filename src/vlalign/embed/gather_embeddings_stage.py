"""`vlalign gather-embeddings`: the parts of a scattered embed joined into one store (hard links, no copy)."""

from __future__ import annotations

from vlalign.stage import Stage, arg, print_summary


def run(settings: dict, args) -> None:
    from vlalign.store.embeddings import gather_embeddings

    meta = gather_embeddings(args.parts, args.out)
    print_summary("gather_embeddings", {"count": meta["count"], "parts": meta["gathered_from"]})


STAGE = Stage(
    "gather-embeddings", "join the parts of a scattered embed into one store", run,
    arguments=(
        arg("--parts", nargs="+", required=True, help="part folders, in part order"),
        arg("--out", required=True),
    ),
)  # fmt: skip
