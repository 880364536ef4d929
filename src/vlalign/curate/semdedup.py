"""Semantic de-duplication (SemDeDup, Abbas et al. 2023, as NeMo Curator runs it) over the pool's image embeddings.

k-means (faiss, spherical, seeded) partitions the L2-normalised embeddings; duplicates are only looked for
inside a cluster, which turns an all-pairs search into one per cluster. Within a cluster the members are
ordered by decreasing cosine distance to the centroid (NeMo Curator's default `which_to_keep: hard`: of a group
of duplicates, the least typical member comes first and is the one kept), and each member is compared with
every member before it. Its largest cosine there is its `semantic_similarity`, and that member its
`semantic_duplicate_of`; the `semantic_dedup` filter drops members above 1 - epsilon.

Clusters are independent: each is read, compared and released on its own, so memory holds one cluster at a
time (per worker) beside the k-means training sample, and the result does not depend on how many workers ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from vlalign.parallel import thread_map
from vlalign.schema import ConfigError, complete
from vlalign.store.embeddings import EmbeddingStore, open_embeddings

# k-means trains on at most this many samples per cluster (faiss's own default cap), drawn with the seed, so
# a pool of millions never sits in memory whole.
TRAINING_SAMPLES_PER_CLUSTER = 256
# Rows of a cluster compared with their earlier members at once: the similarity block is this many rows by the
# cluster's size. Fixed, so the arithmetic (and so every float) is the same however the work is spread.
BLOCK_ROWS = 512
# Row-to-centroid cosines held at once while assigning (256 MB of float32), whatever the number of clusters.
ASSIGN_COSINES = 1 << 26


@dataclass(frozen=True)
class ClusterNeighbours:
    """One cluster's members in SemDeDup's order, each with its most similar earlier member (-1: none)."""

    rows: np.ndarray  # store rows
    similarity: np.ndarray  # float32, NaN for the first member
    earlier: np.ndarray  # store row of the most similar earlier member, -1 for the first


def _normalised(x: np.ndarray) -> np.ndarray:
    # A zero vector stays zero (cosine 0 to everything) instead of becoming NaN.
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def check_settings(settings: dict, samples: int) -> dict:
    """`curate.semantic` with its defaults; settings that cannot cluster `samples` embeddings are refused naming
    the key."""
    settings = complete("curate.semantic", settings)
    if samples == 0:
        raise ConfigError("curate.semantic: the pool has no image embeddings to de-duplicate")
    if settings["clusters"] > samples:
        raise ConfigError(f"curate.semantic.clusters: {settings['clusters']} clusters for {samples} samples; "
                          f"use at most {samples} (SemDeDup's scale is thousands of samples per cluster)")  # fmt: skip
    return settings


def train_centroids(store: EmbeddingStore, clusters: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (unit vectors) of a seeded sample of the store's normalised rows."""
    size = min(len(store), clusters * TRAINING_SAMPLES_PER_CLUSTER)
    # Sorted, so the sample is read part by part and its order depends on the seed alone.
    rows = np.sort(np.random.default_rng(seed).choice(len(store), size=size, replace=False))
    kmeans = faiss.Kmeans(store.dim, clusters, niter=iterations, seed=seed, spherical=True,
                          max_points_per_centroid=TRAINING_SAMPLES_PER_CLUSTER, verbose=False)  # fmt: skip
    kmeans.train(_normalised(store.read(rows)))
    return kmeans.centroids.copy()


def assign_clusters(store: EmbeddingStore, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid by cosine, and that cosine."""
    labels = np.empty(len(store), dtype=np.int64)
    cosine = np.empty(len(store), dtype=np.float32)
    step = max(1, ASSIGN_COSINES // len(centroids))
    for start in range(0, len(store), step):
        stop = min(start + step, len(store))
        sims = _normalised(store.read(np.arange(start, stop))) @ centroids.T
        labels[start:stop] = sims.argmax(axis=1)
        cosine[start:stop] = sims[np.arange(stop - start), labels[start:stop]]
    return labels, cosine


def semdedup_order(rows: np.ndarray, centroid_cosine: np.ndarray) -> np.ndarray:
    """A cluster's rows farthest from the centroid first (least cosine); ties in pool order."""
    return rows[np.lexsort((rows, centroid_cosine))]


def cluster_members(labels: np.ndarray, centroid_cosine: np.ndarray) -> list[np.ndarray]:
    """The rows of each non-empty cluster, each in SemDeDup's order."""
    by_label = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[by_label])) + 1
    return [semdedup_order(rows, centroid_cosine[rows]) for rows in np.split(by_label, bounds) if len(rows)]


def cluster_neighbours(store: EmbeddingStore, rows: np.ndarray) -> ClusterNeighbours:
    """Every member's largest cosine to a member before it in `rows` (already in SemDeDup's order)."""
    x = _normalised(store.read(rows))
    similarity = np.full(len(rows), np.nan, dtype=np.float32)
    earlier = np.full(len(rows), -1, dtype=np.int64)
    for start in range(1, len(rows), BLOCK_ROWS):  # the first member has nothing before it
        stop = min(start + BLOCK_ROWS, len(rows))
        block = x[start:stop] @ x[:stop].T
        # Member j compares with members 0..j-1 only: the later ones compare with it in their own row.
        block[np.arange(stop)[None, :] >= np.arange(start, stop)[:, None]] = -np.inf
        best = block.argmax(axis=1)
        # Rounding can put two unit vectors' cosine a hair above 1.
        similarity[start:stop] = np.minimum(block[np.arange(stop - start), best], 1.0)
        earlier[start:stop] = rows[best]
    return ClusterNeighbours(rows, similarity, earlier)


def semantic_neighbours(image_dir: str | Path, settings: dict | None = None) -> pd.DataFrame:
    """One row per embedded pool sample, in the store's order: key, semantic_cluster, semantic_similarity (the
    largest cosine to an earlier member of its cluster, NaN for a cluster's first member) and
    semantic_duplicate_of (that member's key). `attrs["seconds"]` holds the time of each step."""
    store = open_embeddings(image_dir)
    settings = check_settings(settings or {}, len(store))
    seconds = {}
    # faiss takes every core unless told: the rule reserves `workers` threads for this job.
    faiss.omp_set_num_threads(settings["workers"])
    started = time.perf_counter()
    centroids = train_centroids(store, settings["clusters"], settings["iterations"], settings["seed"])
    labels, centroid_cosine = assign_clusters(store, centroids)
    seconds["kmeans"] = time.perf_counter() - started
    started = time.perf_counter()
    # Largest clusters first, so that a big one does not start last and leave the other workers idle.
    by_size = sorted(cluster_members(labels, centroid_cosine), key=len, reverse=True)
    found = list(thread_map(partial(cluster_neighbours, store), by_size, threads=settings["workers"]))
    seconds["neighbours"] = time.perf_counter() - started
    return _table(store.keys, labels, found, seconds)


def _table(keys: list[str], labels: np.ndarray, found: list[ClusterNeighbours], seconds: dict) -> pd.DataFrame:
    similarity = np.full(len(keys), np.nan, dtype=np.float32)
    earlier = np.full(len(keys), -1, dtype=np.int64)
    for cluster in found:
        similarity[cluster.rows] = cluster.similarity
        earlier[cluster.rows] = cluster.earlier
    key_array = np.asarray(keys, dtype=object)
    table = pd.DataFrame({
        "key": key_array,
        "semantic_cluster": labels,
        "semantic_similarity": similarity,
        "semantic_duplicate_of": np.where(earlier >= 0, key_array[np.maximum(earlier, 0)], None),
    })  # fmt: skip
    table.attrs["seconds"] = seconds
    return table
