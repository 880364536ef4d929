"""matplotlib for the workflow's figures: a headless backend, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path

from vlalign.io import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend: jobs run without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG atomically and close it."""
    with atomic_path(path) as part:
        fig.savefig(part, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(path)
