"""End-of-run reporting: the loss-curve plot and the summary table of a training run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from cops.console import counts_table
from cops.files import atomic_writer
from cops.training.engine import FitResult


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``metrics.jsonl`` file (lines that do not parse are skipped)."""
    entries = []
    for line in Path(path).read_text("utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def plot_losses(entries: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Plot training (per log window) and validation loss against the iteration as a PNG.

    Uses matplotlib's object API with the Agg canvas: no display and no global pyplot state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for kind, label, style in (
        ("train", "train (mean per log interval)", {"linewidth": 1.2}),
        ("val", "validation", {"marker": "o", "linewidth": 1.8}),
    ):
        points = [
            (e["iteration"], e["loss"])
            for e in entries
            if e.get("kind") == kind and e.get("loss") is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, label=label, **style)
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend()
    figure.tight_layout()
    with atomic_writer(path) as handle:
        figure.savefig(handle, format="png")
    return path


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def summary_table(title: str, result: FitResult, out: Path) -> Table:
    """Iterations, losses, throughput, wall time and output files of a run."""
    rows = [
        ["iterations", f"{result.start_iteration} → {result.iterations}"],
        ["train loss (last interval)", _fmt(result.train_loss)],
        ["validation loss (last)", _fmt(result.val_loss)],
        ["validation loss (best)", _fmt(result.best_val_loss)],
        ["training images/s", _fmt(result.images_per_s, ".2f")],
        ["wall time", f"{result.seconds:.1f} s"],
        ["checkpoint", str(result.checkpoint) if result.checkpoint else "-"],
        ["metrics", str(out / "metrics.jsonl")],
    ]
    return counts_table(title, ["", "value"], rows)
