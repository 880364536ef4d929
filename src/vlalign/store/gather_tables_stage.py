"""`vlalign gather-tables`: the pool's partition tables joined into the pool's table (no image is read)."""

from __future__ import annotations

from vlalign.stage import Stage, arg, print_summary


def run(settings: dict, args) -> None:
    from vlalign.store.tables import gather_tables

    print_summary("gather_tables", gather_tables(args.tables, args.out))


STAGE = Stage(
    "gather-tables", "join the tables of the pool's partition .betons into the pool's table", run,
    arguments=(
        arg("--tables", nargs="+", required=True, help="partition tables (convert --partition), in order"),
        arg("--out", required=True),
    ),
)  # fmt: skip
