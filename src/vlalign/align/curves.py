"""The training curves of one run: loss, temperature and bias, learning rate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlalign.figures import pyplot, save_figure


def plot_training_curves(history: list[dict], path: Path, title: str = "training") -> None:
    """Loss (train per step, validation where evaluated), logit scale and bias, learning rate against step; a
    vertical line marks the step whose weights the run kept (`kept_step`, recorded at its last step)."""
    plt = pyplot()
    frame = pd.DataFrame(history)
    steps = frame.dropna(subset=["loss"]) if "loss" in frame else frame.iloc[0:0]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(steps["step"], steps["loss"], label="train (per step)", linewidth=1)
    if "val_loss" in frame:
        val = frame.dropna(subset=["val_loss"])
        axes[0].plot(val["step"], val["val_loss"], "o-", label="validation")
    if "kept_step" in frame and frame["kept_step"].notna().any():
        kept = int(frame["kept_step"].dropna().iloc[-1])
        for axis in axes:
            axis.axvline(kept, color="tab:green", linestyle="--", linewidth=1,
                         label=f"kept (step {kept})" if axis is axes[0] else None)  # fmt: skip
    axes[0].set(xlabel="step", ylabel="loss", title="loss")
    axes[0].legend()
    axes[1].plot(steps["step"], steps["logit_scale"], label="logit scale (exp)")
    axes[1].set(xlabel="step", ylabel="logit scale", title="temperature")
    bias_axis = axes[1].twinx()
    bias_axis.plot(steps["step"], steps["logit_bias"], color="tab:orange", label="logit bias")
    bias_axis.set_ylabel("logit bias")
    axes[1].legend(loc="upper left")
    bias_axis.legend(loc="lower right")
    axes[2].plot(steps["step"], steps["lr"])
    axes[2].set(xlabel="step", ylabel="learning rate", title="schedule")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
