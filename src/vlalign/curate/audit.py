"""The planted-truth audit of a curated pool: how well its filters find the noise a planted source put in the pool
(`data/planted.py`), each rate with a 95 % percentile-bootstrap interval over the samples it is a rate of
(`evaluate/bootstrap.py`, `evaluate.bootstrap_resamples` resamples; the AUC's resamples both classes together).

What is measured, over the samples of the planted sources (samples of other sources have no truth and only appear
as `unplanted` in the table of removals):

- alignment: the ROC AUC of the alignment score separating shuffled-caption pairs from clean ones, over every scored
  sample whatever the pool keeps (the probability that a clean pair scores above a shuffled one, ties counting
  half); and the precision and recall of the shuffled pairs among the samples the filter removes: the pool's own
  alignment verdicts over the samples that reached the filter when the pool applies it, otherwise the cut its
  settings would make over the whole pool's scores (`top_fraction`: all but the best-scored fraction; `min_score`).
- copies (exact, near): recall = the fraction of planted (copy, original) pairs of which the pool keeps at most one,
  with the filter that removed it (the copy's first failed filter, or the original's when the copy is kept), near
  copies also per edit; and how many clean samples each de-duplication filter removed (duplicates `from` itself
  holds count there too).
- eval copies: recall = the fraction the pool does not keep, with the filter that removed each; and the fraction
  the decontaminate rule flags at its settings, whether or not the pool applies it.
- text in image: recall = the fraction of the text images OCR read that the text_spotting rule fails at its
  `max_overlap`, whether or not the pool applies it, and the same rate among the clean samples OCR read; not
  measured when OCR is off or read none of them.
- every filter of the pool: how many samples of each kind it removed (first failed filter), and the share of its
  planted-source removals that are of the kinds it is meant to remove (`TARGETS`).
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from vlalign.curate.decide import resolve_filter
from vlalign.data.planted import KINDS
from vlalign.evaluate.bootstrap import CONFIDENCE, SEED, percentile_interval
from vlalign.figures import pyplot, save_figure
from vlalign.io import atomic_path

COPY_KINDS = ("exact_copy", "near_copy")
DEDUP_FILTERS = ("dedup", "semantic_dedup")
# The planted kinds each filter is meant to remove.
TARGETS = {
    "alignment": ("shuffled_caption",),
    "dedup": COPY_KINDS,
    "semantic_dedup": COPY_KINDS,
    "decontaminate": ("eval_copy",),
    "text_spotting": ("text_in_image",),
}
UNPLANTED = "unplanted"  # samples of sources without planted truth
# Bars of the figure and rows of the headline table: each planted kind and what its recall counts.
RECALLS = {
    "shuffled_caption": "removed by the alignment filter at its threshold",
    "exact_copy": "pairs (copy, original) of which the pool keeps at most one",
    "near_copy": "pairs (copy, original) of which the pool keeps at most one",
    "eval_copy": "eval copies the pool does not keep",
    "text_in_image": "OCR-read text images the text_spotting rule fails",
}


def load_truth(folders: list[str | Path]) -> pd.DataFrame:
    """The `planted.parquet` of each planted source's download partition, as one table."""
    tables = [pd.read_parquet(Path(folder) / "planted.parquet") for folder in folders]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["key", "kind", "of", "edit"])


def planted_frame(decisions: pd.DataFrame, truth: pd.DataFrame, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """The pool's decisions with each sample's planted `kind` (`unplanted` for other sources), `of`, `edit` and, when
    the pool applies no alignment filter but scores are given, `alignment_score`."""
    truth_columns = ["key", "kind", "of", "edit", "edit_amount"]
    frame = decisions.merge(truth.reindex(columns=truth_columns), on="key", how="left", validate="one_to_one")
    frame["kind"] = frame["kind"].astype(object).where(frame["kind"].notna(), UNPLANTED)
    if "alignment_score" not in frame and scores is not None:
        frame = frame.merge(scores[["key", "alignment_score"]], on="key", how="left")
    return frame


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse]


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """The probability that a negative scores above a positive (ties half): the AUC of a low score as the sign of a
    positive (a shuffled caption). NaN without both classes."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = average_ranks(np.asarray(score, dtype=float))
    return float((ranks[~positive].sum() - n_neg * (n_neg + 1) / 2) / (n_pos * n_neg))


def auc_interval(score: np.ndarray, positive: np.ndarray, resamples: int) -> list[float] | None:
    """The percentile-bootstrap interval of `roc_auc` over samples drawn with replacement (the shared seed: the
    same scores give the same interval); None where no resample holds both classes."""
    rng = np.random.default_rng(SEED)
    values = np.array([roc_auc(score[idx], positive[idx]) for idx in
                       (rng.integers(0, len(score), len(score)) for _ in range(resamples))])  # fmt: skip
    values = values[~np.isnan(values)]
    tail = 100 * (1 - CONFIDENCE) / 2
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])] if len(values) else None


def rate_interval(hits: np.ndarray, resamples: int) -> list[float] | None:
    """The percentile-bootstrap interval of a proportion (the mean of its 0/1 outcomes); None for no outcomes."""
    return list(percentile_interval(np.asarray(hits, dtype=float), resamples)) if len(hits) else None


def _rate(hits: pd.Series | np.ndarray, resamples: int) -> dict:
    """A proportion with its n and interval."""
    hits = np.asarray(hits, dtype=bool)
    return {"n": len(hits), "recall": float(hits.mean()) if len(hits) else None,
            "interval": rate_interval(hits, resamples)}  # fmt: skip


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.value_counts().items()}


def _filter_settings(settings: dict, name: str) -> dict:
    """A filter's settings as the pool applies it, or as `curate.filters` sets it when the pool does not."""
    spec = next((f for f in settings["filters"] if f["name"] == name), {"name": name, **settings[name]})
    return resolve_filter(spec)


def _applies(settings: dict, name: str) -> bool:
    return any(f["name"] == name and f.get("enabled", True) for f in settings["filters"])


def alignment_audit(frame: pd.DataFrame, settings: dict) -> dict:
    if "alignment_score" not in frame or frame["alignment_score"].isna().all():
        return {"measured": False, "note": "not measured: no alignment scores (no pool applies the alignment filter)"}
    labelled = frame[frame["kind"].isin(["clean", "shuffled_caption"]) & frame["alignment_score"].notna()]
    score = labelled["alignment_score"].to_numpy(dtype=float)
    shuffled = (labelled["kind"] == "shuffled_caption").to_numpy()
    out = {"measured": True, "scored_clean": int((~shuffled).sum()), "scored_shuffled": int(shuffled.sum()),
           "auc": roc_auc(score, shuffled),
           "auc_interval": auc_interval(score, shuffled, settings["resamples"])}  # fmt: skip
    spec = _filter_settings(settings, "alignment")
    if _applies(settings, "alignment") and "pass_alignment" in frame:
        judged = labelled["pass_alignment"].notna().to_numpy()
        flagged = (labelled["pass_alignment"] == False).fillna(False).to_numpy(dtype=bool)  # noqa: E712
        passed = frame.loc[frame["pass_alignment"].fillna(False).astype(bool), "alignment_score"]
        out["threshold"] = "the pool's alignment verdicts (samples that reached the filter)"
        out["lowest_kept_score"] = float(passed.min()) if len(passed) else None
    elif spec["top_fraction"] is not None:
        scored = frame["alignment_score"].dropna()
        n_keep = math.ceil(spec["top_fraction"] * len(scored))
        # The filter's own order: highest first, ties in pool order.
        top = scored.index[np.argsort(-scored.to_numpy(), kind="stable")[:n_keep]]
        judged = np.ones(len(labelled), dtype=bool)
        flagged = ~labelled.index.isin(top)
        out["threshold"] = f"the cut top_fraction {spec['top_fraction']:g} would make over the pool's scores"
        out["lowest_kept_score"] = float(scored[top].min()) if len(top) else None
    elif spec["min_score"] is not None:
        judged = np.ones(len(labelled), dtype=bool)
        flagged = score < spec["min_score"]
        out["threshold"] = f"min_score {spec['min_score']:g}"
        out["lowest_kept_score"] = spec["min_score"]
    else:
        return {**out, "threshold": "none: set top_fraction or min_score under curate.filters.alignment"}
    flagged, positive = flagged[judged], shuffled[judged]
    # Precision: the shuffled share of the removed pairs; recall: the removed share of the shuffled ones.
    precision, recall = _rate(positive[flagged], settings["resamples"]), _rate(flagged[positive], settings["resamples"])
    return {**out, "judged": len(flagged), "judged_shuffled": int(positive.sum()), "removed": int(flagged.sum()),
            "clean_removed_rate": float(flagged[~positive].mean()) if (~positive).any() else None,
            "precision": precision["recall"], "precision_interval": precision["interval"],
            "recall": recall["recall"], "recall_interval": recall["interval"]}  # fmt: skip


def copy_audit(frame: pd.DataFrame, kind: str, resamples: int) -> dict:
    """Recall of the planted (copy, original) pairs of `kind`, what removed them, near copies per edit."""
    kept = pd.Series(frame["kept"].to_numpy(dtype=bool), index=frame["key"])
    reason = pd.Series(frame["reason"].to_numpy(), index=frame["key"])
    copies = frame[(frame["kind"] == kind) & frame["of"].isin(frame["key"])]
    copy_kept = copies["kept"].to_numpy(dtype=bool)
    original_kept = kept.loc[copies["of"]].to_numpy()
    caught = ~(copy_kept & original_kept)
    removed_by = np.where(~copy_kept, copies["reason"].to_numpy(), reason.loc[copies["of"]].to_numpy())
    out = {**_rate(caught, resamples), "removed_by": _counts(pd.Series(removed_by[caught], dtype=object)),
           "both_kept": int((~caught).sum())}  # fmt: skip
    if kind == "near_copy":
        edits = copies["edit"].astype(str).str.replace(r"^crop_.*", "crop", regex=True).to_numpy()
        out["by_edit"] = {edit: _rate(caught[edits == edit], resamples) for edit in sorted(set(edits))}
    return out


def clean_removed(frame: pd.DataFrame, settings: dict) -> dict:
    """Clean samples each de-duplication filter of the pool removed, of all clean samples."""
    clean = frame["kind"] == "clean"
    return {name: {"removed": int((clean & (frame["reason"] == name)).sum()), "clean": int(clean.sum()),
                   "rate": float((clean & (frame["reason"] == name)).sum() / clean.sum()) if clean.any() else None}
            for name in DEDUP_FILTERS if _applies(settings, name)}  # fmt: skip


def eval_copy_audit(frame: pd.DataFrame, settings: dict) -> dict:
    copies = frame[frame["kind"] == "eval_copy"]
    removed = ~copies["kept"].to_numpy(dtype=bool)
    spec = _filter_settings(settings, "decontaminate")
    flagged = ((copies["eval_exact"].astype(bool) & spec["exact"])
               | ((copies["eval_hamming"] <= spec["max_hamming"]) & spec["near"])).to_numpy(dtype=bool)  # fmt: skip
    exact = copies["edit"].isna().to_numpy()
    resamples = settings["resamples"]
    return {**_rate(removed, resamples), "removed_by": _counts(copies.loc[removed, "reason"]),
            "flagged_by_decontaminate": float(flagged.mean()) if len(flagged) else None,
            "exact": _rate(removed[exact], resamples), "near": _rate(removed[~exact], resamples)}  # fmt: skip


def text_audit(frame: pd.DataFrame, settings: dict) -> dict:
    if settings["ocr"] == "off":
        return {"measured": False, "note": "not measured: curate.measure.ocr is off"}
    texts = frame[frame["kind"] == "text_in_image"]
    read = texts[texts["caption_ocr_overlap"].notna()]
    if not len(read):
        return {"measured": False, "note": f"not measured: OCR read none of the {len(texts)} text images "
                "(ocr: survivors reads only the samples that pass the filters before text_spotting)"}  # fmt: skip
    max_overlap = _filter_settings(settings, "text_spotting")["max_overlap"]
    clean = frame.loc[(frame["kind"] == "clean") & frame["caption_ocr_overlap"].notna(), "caption_ocr_overlap"]
    caught = read["caption_ocr_overlap"] > max_overlap
    return {"measured": True, "max_overlap": max_overlap, **_rate(caught, settings["resamples"]),
            "planted": len(texts), "clean_read": len(clean),
            "clean_flagged": float((clean > max_overlap).mean()) if len(clean) else None}  # fmt: skip


def removal_table(frame: pd.DataFrame, settings: dict) -> dict:
    """Per filter of the pool: samples of each kind it removed, and the share of its planted-source removals that
    are of the kinds it targets."""
    columns = [*KINDS, UNPLANTED]
    table = {}
    for spec in (resolve_filter(f) for f in settings["filters"]):
        if not spec["enabled"]:
            continue
        removed = frame.loc[frame["reason"] == spec["name"], "kind"].value_counts()
        counts = {kind: int(removed.get(kind, 0)) for kind in columns}
        planted_removed = sum(counts[kind] for kind in KINDS)
        targets = TARGETS.get(spec["name"])
        share = sum(counts[k] for k in targets) / planted_removed if targets and planted_removed else None
        table[spec["name"]] = {"removed": counts, "target_share": share}
    return table


def _warnings(frame: pd.DataFrame, settings: dict) -> list[str]:
    lines = []
    for name, source in settings["planted"].items():
        if source["from"] in settings["curate_sources"]:
            lines.append(f"{name} and its `from`, {source['from']}, are both in curate.sources: every sample of "
                         f"{name} repeats one of {source['from']}, so de-duplication's numbers are not about the "
                         "planted copies alone")  # fmt: skip
        for evaluated in source["eval_from"]:
            if evaluated not in settings["eval_sources"]:
                lines.append(f"{name}: the eval copies of {evaluated} cannot be caught, as {evaluated} is not "
                             "an evaluation set of this config (evaluate.*), which decontamination compares with")
    missing = frame["of"].notna() & frame["kind"].isin(COPY_KINDS) & ~frame["of"].isin(frame["key"])
    if missing.any():
        lines.append(f"{int(missing.sum())} planted copies are left out: their original is not in the pool")
    return lines


def audit_pool(frame: pd.DataFrame, settings: dict, pool: str) -> dict:
    """The audit of one pool (see the module docstring) from `planted_frame`, as a JSON-ready dict."""
    copies = {kind: copy_audit(frame, kind, settings["resamples"]) for kind in COPY_KINDS}
    alignment = alignment_audit(frame, settings)
    eval_copies = eval_copy_audit(frame, settings)
    text = text_audit(frame, settings)
    recalls = {
        "shuffled_caption": {"n": alignment.get("judged_shuffled"), "recall": alignment.get("recall"),
                             "interval": alignment.get("recall_interval")},
        **{kind: {k: copies[kind][k] for k in ("n", "recall", "interval")} for kind in COPY_KINDS},
        "eval_copy": {k: eval_copies[k] for k in ("n", "recall", "interval")},
        "text_in_image": {k: text.get(k) for k in ("n", "recall", "interval")},
    }  # fmt: skip
    return {
        "pool": pool,
        "filters": [f["name"] for f in settings["filters"] if f.get("enabled", True)],
        "planted_sources": sorted(settings["planted"]),
        "samples": {kind: int((frame["kind"] == kind).sum()) for kind in [*KINDS, UNPLANTED]},
        "recall": {kind: {**recalls[kind], "measures": RECALLS[kind]} for kind in RECALLS},
        "alignment": alignment,
        "copies": {**copies, "clean_removed": clean_removed(frame, settings)},
        "decontamination": eval_copies,
        "text_spotting": text,
        "removals": removal_table(frame, settings),
        "kept": {kind: int((frame["kind"] == kind)[frame["kept"].astype(bool)].sum()) for kind in [*KINDS, UNPLANTED]},
        "warnings": _warnings(frame, settings),
        "bootstrap": {"resamples": settings["resamples"], "seed": SEED, "confidence": CONFIDENCE},
    }


def audit_metrics(audit: dict) -> dict[str, float]:
    """The audit's headline numbers, named for MLflow."""
    metrics = {f"recall_{kind}": entry["recall"] for kind, entry in audit["recall"].items()}
    metrics.update({f"samples_{kind}": n for kind, n in audit["samples"].items()})
    alignment = audit["alignment"]
    metrics.update({f"alignment_{k}": alignment.get(k) for k in ("auc", "precision", "recall")})
    metrics.update({f"clean_removed_{name}": e["removed"] for name, e in audit["copies"]["clean_removed"].items()})
    return {name: value for name, value in metrics.items() if value is not None and not math.isnan(value)}


def _percent(value: float | None, interval: list[float] | None = None, spec: str = ".1%") -> str:
    """A rate and its interval as text ("—" when there is none)."""
    if value is None:
        return "—"
    return f"{value:{spec}}" + (f" [{interval[0]:{spec}}, {interval[1]:{spec}}]" if interval else "")


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "—"


def audit_markdown(audit: dict) -> str:
    recall = pd.DataFrame([{"kind": kind, "samples": "—" if e["n"] is None else e["n"],
                            "recall [95 % interval]": _percent(e["recall"], e["interval"]), "counts": e["measures"]}
                           for kind, e in audit["recall"].items()])  # fmt: skip
    alignment = audit["alignment"]
    if alignment["measured"]:
        align_lines = [
            f"ROC AUC of the score, clean above shuffled, over {alignment['scored_clean']} clean and "
            f"{alignment['scored_shuffled']} shuffled scored pairs: "
            f"{_percent(alignment['auc'], alignment['auc_interval'], '.3f')}.",
            f"Threshold: {alignment['threshold']}."]  # fmt: skip
        if "precision" in alignment:
            align_lines.append(f"Of {alignment['judged']} judged pairs it removes {alignment['removed']}: precision "
                               f"{_percent(alignment['precision'], alignment['precision_interval'])}, recall "
                               f"{_percent(alignment['recall'], alignment['recall_interval'])}, clean pairs removed "
                               f"{_percent(alignment['clean_removed_rate'])}.")  # fmt: skip
    else:
        align_lines = [alignment["note"] + "."]
    copies = audit["copies"]
    copy_rows = [{"kind": kind, "pairs": copies[kind]["n"], "recall": _percent(copies[kind]["recall"],
                                                                              copies[kind]["interval"]),
                  "both kept": copies[kind]["both_kept"], "removed by": _listed(copies[kind]["removed_by"])}
                 for kind in COPY_KINDS]  # fmt: skip
    edits = pd.DataFrame([{"edit": edit, "near copies": e["n"], "recall": _percent(e["recall"], e["interval"])}
                          for edit, e in copies["near_copy"].get("by_edit", {}).items()])  # fmt: skip
    clean = [f"{name} removed {e['removed']} of {e['clean']} clean samples ({_percent(e['rate'])})."
             for name, e in copies["clean_removed"].items()] or ["The pool applies no de-duplication filter."]
    eval_copies = audit["decontamination"]
    text = audit["text_spotting"]
    text_line = (f"Of {text['n']} text images OCR read ({text['planted']} planted), the rule (caption overlap > "
                 f"{text['max_overlap']:g}) fails {_percent(text['recall'], text['interval'])}; of "
                 f"{text['clean_read']} clean samples OCR read, {_percent(text['clean_flagged'])}."
                 if text["measured"] else text["note"] + ".")  # fmt: skip
    removals = pd.DataFrame({**{name: {**e["removed"], "target share": _percent(e["target_share"])}
                                for name, e in audit["removals"].items()},
                             "kept": {**audit["kept"], "target share": "—"}}).T  # fmt: skip
    sections = [
        f"# Planted-truth audit of pool `{audit['pool']}`",
        f"Filters in order: {' → '.join(audit['filters']) or 'none'}. Planted sources: "
        f"{', '.join(audit['planted_sources'])}. Intervals: {audit['bootstrap']['confidence']:.0%} percentile "
        f"bootstrap, {audit['bootstrap']['resamples']} resamples, seed {audit['bootstrap']['seed']}.",
        "## Recall per planted kind", recall.to_markdown(index=False),
        "## Alignment filter (shuffled captions)", "\n".join(align_lines),
        "## De-duplication (planted copies)", pd.DataFrame(copy_rows).to_markdown(index=False),
        edits.to_markdown(index=False) if len(edits) else "No near copies in the pool.", " ".join(clean),
        "## Decontamination (planted eval images)",
        f"The pool drops {_percent(eval_copies['recall'], eval_copies['interval'])} of {eval_copies['n']} eval copies "
        f"(exact {_percent(eval_copies['exact']['recall'])}, near {_percent(eval_copies['near']['recall'])}); "
        f"removed by: {_listed(eval_copies['removed_by'])}. The decontaminate "
        f"rule at its settings flags {_percent(eval_copies['flagged_by_decontaminate'])}.",
        "## Text spotting (text in image)", text_line,
        "## What each filter removed",
        "Samples by planted kind whose first failed filter it is (`kept`: what the pool keeps); target share: the "
        "fraction of its removals from planted sources that are of the kinds it is meant to remove.",
        removals.to_markdown(),
    ]  # fmt: skip
    if audit["warnings"]:
        sections += ["## Warnings", "\n".join(f"- {line}" for line in audit["warnings"])]
    return "\n\n".join(sections) + "\n"


def plot_audit(frame: pd.DataFrame, audit: dict, path: Path) -> None:
    """Alignment scores of clean and shuffled pairs, their ROC curve, and each planted kind's recall."""
    plt = pyplot()
    fig, (hist, roc, bars) = plt.subplots(1, 3, figsize=(16, 4.8), width_ratios=(1.2, 1, 1.4))
    if audit["alignment"]["measured"]:
        labelled = frame[frame["kind"].isin(["clean", "shuffled_caption"]) & frame["alignment_score"].notna()]
        score, shuffled = labelled["alignment_score"].to_numpy(dtype=float), labelled["kind"].eq("shuffled_caption")
        bins = np.linspace(score.min(), score.max() + 1e-9, 40)
        for name, mask, colour in (("clean", ~shuffled, "tab:blue"), ("shuffled caption", shuffled, "tab:red")):
            hist.hist(score[mask.to_numpy()], bins=bins, density=True, alpha=0.55, color=colour,
                      label=f"{name} ({int(mask.sum())})")  # fmt: skip
        cut = audit["alignment"].get("lowest_kept_score")
        if cut is not None:
            hist.axvline(cut, color="black", linestyle="--", label=f"lowest score kept ({cut:.2f})")
        hist.set(xlabel="alignment score (cosine)", ylabel="density", title="alignment scores of planted pairs")
        hist.legend()
        order = np.argsort(score, kind="stable")  # lowest first: flagged first
        positive = shuffled.to_numpy()[order]
        tpr = np.r_[0, np.cumsum(positive) / max(positive.sum(), 1)]
        fpr = np.r_[0, np.cumsum(~positive) / max((~positive).sum(), 1)]
        roc.plot(fpr, tpr, color="tab:red", label=f"AUC {audit['alignment']['auc']:.3f}")
        roc.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
        if audit["alignment"].get("recall") is not None and audit["alignment"]["clean_removed_rate"] is not None:
            # The pool's verdicts weigh only the pairs that reached the filter (earlier filters took the rest), so
            # the point may lie off the curve drawn over every scored pair.
            reached = " (pairs reaching it)" if audit["alignment"]["threshold"].startswith("the pool's") else ""
            roc.plot(audit["alignment"]["clean_removed_rate"], audit["alignment"]["recall"], "ko",
                     label=f"the filter's verdicts{reached}")  # fmt: skip
        roc.set(xlabel="clean pairs flagged (lowest scores first)", ylabel="shuffled pairs flagged",
                title="ROC of the alignment score", xlim=(0, 1), ylim=(0, 1.01))  # fmt: skip
        roc.legend(loc="lower right")
    else:
        hist.text(0.5, 0.5, textwrap.fill(audit["alignment"]["note"], 40), ha="center", va="center", fontsize=10)
        for axis in (hist, roc):
            axis.set_axis_off()
    kinds = list(audit["recall"])
    for i, kind in enumerate(kinds):
        entry = audit["recall"][kind]
        if entry["recall"] is None:
            bars.text(i, 0.02, "not\nmeasured", ha="center", va="bottom", fontsize=8, color="grey")
            continue
        low, high = entry["interval"] or (entry["recall"], entry["recall"])
        bars.bar(i, entry["recall"], color="tab:green", alpha=0.8)
        bars.errorbar(i, entry["recall"], yerr=[[entry["recall"] - low], [high - entry["recall"]]], color="black",
                      capsize=4)  # fmt: skip
        bars.text(i, min(high, 1) + 0.02, f"{entry['recall']:.0%}\nn={entry['n']}", ha="center", va="bottom",
                  fontsize=8)  # fmt: skip
    bars.set_xticks(range(len(kinds)), [kind.replace("_", " ") for kind in kinds], rotation=20)
    bars.set_xlim(-0.6, len(kinds) - 0.4)
    bars.set(ylim=(0, 1.25), ylabel="recall (95 % bootstrap interval)",
             title=f"planted noise caught: pool {audit['pool']}")  # fmt: skip
    fig.tight_layout()
    save_figure(fig, path)


def write_audit(audit: dict, frame: pd.DataFrame, folder: str | Path) -> dict[str, Path]:
    """`audit.json`, `audit.md` and `audit.png` in `folder`; their paths by name."""
    folder = Path(folder)
    paths = {"json": folder / "audit.json", "markdown": folder / "audit.md", "figure": folder / "audit.png"}
    with atomic_path(paths["json"]) as part:
        part.write_text(json.dumps(audit, indent=2) + "\n")
    with atomic_path(paths["markdown"]) as part:
        part.write_text(audit_markdown(audit))
    plot_audit(frame, audit, paths["figure"])
    return paths
