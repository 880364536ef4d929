"""`vlalign semdedup`: every pool image's most similar earlier member of its k-means cluster (SemDeDup), measured
once for the pools whose `semantic_dedup` filter decides on it."""

from __future__ import annotations

from vlalign.stage import Stage, arg, print_summary, track

# Cosines at which the tracked counts are taken: where epsilon 0.1, 0.05, 0.01 and 0.001 would cut.
SIMILARITY_MARKS = (0.9, 0.95, 0.99, 0.999)


def settings(config: dict) -> dict:
    return {"semantic": config["curate"]["semantic"]}


def summarise(neighbours) -> dict:
    similarity = neighbours["semantic_similarity"]
    sizes = neighbours["semantic_cluster"].value_counts()
    summary = {"samples": len(neighbours), "clusters": len(sizes), "largest_cluster": int(sizes.max()),
               **{f"seconds.{step}": round(s, 3) for step, s in neighbours.attrs["seconds"].items()},
               **{f"above_{mark:g}": int((similarity > mark).sum()) for mark in SIMILARITY_MARKS}}  # fmt: skip
    summary.update({f"similarity_quantile_{int(q * 100)}": float(v)
                    for q, v in similarity.quantile([0.5, 0.9, 0.99]).items()})  # fmt: skip
    return summary


def run(settings: dict, args) -> None:
    from vlalign.curate.semdedup import semantic_neighbours
    from vlalign.io import atomic_path

    with track("semdedup", settings) as tracked:
        tracked.log_inputs("pool", args.image_embeddings)
        neighbours = semantic_neighbours(args.image_embeddings, settings["semantic"])
        with atomic_path(args.out) as tmp:
            neighbours.to_parquet(tmp, index=False)
        summary = summarise(neighbours)
        tracked.log_metrics(summary)
        tracked.log_output("semantic_neighbours", args.out)
    print_summary("semdedup", summary)


STAGE = Stage(
    "semdedup", "semantic neighbours of the pool images (SemDeDup): the semantic_dedup filter's input", run,
    arguments=(
        arg("--image-embeddings", required=True, help="the pool's image embeddings"),
        arg("--out", required=True, help="semantic_neighbours.parquet"),
    ),
    settings=settings,
)  # fmt: skip
