"""MetaCLIP balancing over a partitioned pool (issue 16): the partitions' concept counts, summed, are the pool's,
and each partition's draw with them is the single-process draw."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from vlalign.curate.decide import decide
from vlalign.curate.filters import balance_concepts, balance_draw, concept_counts

ENTRIES = ["cat", "dog", "red car", "tree", "boat"]


def pool(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    concepts = [sorted(set(rng.choice(ENTRIES, size=rng.integers(0, 3), replace=False))) for _ in range(n)]
    return pd.DataFrame({"key": [f"s{seed}_{i}" for i in range(n)], "caption": [" ".join(c) for c in concepts],
                         "concepts": concepts})  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 300), cuts=st.lists(st.floats(0, 1), max_size=6),
       cap=st.integers(1, 60), unmatched=st.sampled_from(["keep", "drop"]))  # fmt: skip
def test_partitioned_balancing_equals_the_single_process_result(seed, n, cuts, cap, unmatched):
    measured = pool(seed, n)
    spec = {"name": "balance", "cap": cap, "seed": 3, "unmatched": unmatched}
    whole = decide(measured, [spec])
    s = {**spec, "entries": None}
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    parts = [measured.iloc[a:b] for a, b in zip(bounds, bounds[1:])]
    counts = sum((concept_counts(balance_concepts(part, s)) for part in parts), start=concept_counts([]))
    assert counts == concept_counts(measured["concepts"])
    kept = pd.concat([balance_draw(balance_concepts(part, s), part["key"], counts, s)[0] for part in parts])
    assert kept.tolist() == whole["kept"].tolist()
