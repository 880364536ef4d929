"""`vlalign fetch-encoder`: a hub encoder's weights into the local cache, before any job needs them.

Run on a host that reaches the hub (the workflow runs it on the submit host); the embed jobs then load the
cached copy without asking the hub. A model that cannot be fetched fails in one line naming the encoder. It
lives with the embed stage it prepares for: the encoders package imports torch, which building the command
line must not.
"""

from __future__ import annotations

from vlalign.stage import Stage, arg, print_summary, track


def settings(config: dict, encoder: str) -> dict:
    return {"encoder": config["encoders"][encoder]}


def run(settings: dict, args) -> None:
    from vlalign.encoders import hub_location
    from vlalign.encoders.hub import fetch
    from vlalign.io import write_json

    entry = settings["encoder"]
    with track("fetch_encoder", settings, encoder=args.encoder) as tracked:
        record = fetch(args.encoder, entry, hub_location(entry))
        if args.out:
            write_json(args.out, record)
            tracked.log_output("record", args.out)
        tracked.log_params({f"resolved.{k}": record[k] for k in ("source", "repo", "revision", "commit", "url")
                            if record.get(k)})  # fmt: skip
        tracked.log_metrics({k: float(record[k]) for k in ("files", "bytes", "downloaded") if k in record})
    print_summary("fetch_encoder", record)


STAGE = Stage(
    "fetch-encoder", "a hub encoder's weights into the local cache (run where the hub is reachable)", run,
    arguments=(
        arg("--encoder", required=True, help="encoder alias (a key of `encoders`)"),
        arg("--out", help="write the record of the cached copy (repository, commit, local path, bytes) here as JSON"),
    ),
    settings=settings, wildcards=("encoder",),
)  # fmt: skip
