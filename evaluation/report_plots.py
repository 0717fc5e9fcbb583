"""The evaluation report's plots as PNG bytes (matplotlib's object API on the Agg canvas: no
display and no global pyplot state)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

COLOURS = {"pq": "#3b6fb6", "sq": "#7fb24a", "rq": "#e0a030"}
DPI = 110


def _render(width: float, height: float, draw: Callable[[Any], None]) -> bytes:
    """Draw onto a fresh figure of `width` × `height` inches and return it as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    draw(figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _grouped_bars(axes: Any, labels: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Horizontal PQ / SQ / RQ bars per label, top to bottom in the given order."""
    positions = np.arange(len(labels))[::-1]
    height = 0.26
    for offset, key in zip((height, 0.0, -height), ("pq", "sq", "rq"), strict=True):
        values = [row[key] or 0.0 for row in rows]
        axes.barh(positions + offset, values, height, color=COLOURS[key], label=key.upper())
    axes.set_yticks(positions, labels)
    axes.set_xlim(0, 100)
    axes.set_xlabel("percent")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")


def per_class_bars(per_class: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """PQ, SQ and RQ of every class that occurs, highest PQ first (None: no class occurs)."""
    present = [(name, row) for name, row in per_class.items() if row.get("pq") is not None]
    if not present:
        return None
    present.sort(key=lambda item: -item[1]["pq"])

    def draw(figure: Any) -> None:
        axes = figure.add_subplot()
        _grouped_bars(axes, [n for n, _ in present], [r for _, r in present])
        axes.set_title("Per class")

    return _render(5.6, 1.2 + 0.36 * len(present), draw)


def size_bars(by_size: Mapping[str, Mapping[str, Any]]) -> bytes:
    """PQ, SQ and RQ (all classes) per segment size range."""
    labels = [
        f"{name}\n({rng['area'][0]}–{rng['area'][1] or '∞'} px)" for name, rng in by_size.items()
    ]

    def draw(figure: Any) -> None:
        axes = figure.add_subplot()
        _grouped_bars(axes, labels, [rng["all"] for rng in by_size.values()])
        axes.set_title("By segment size")

    return _render(5.6, 3.0, draw)


def confusion_heatmap(confusion: Mapping[str, Any], most: int = 20) -> bytes | None:
    """Counts of ground-truth classes (rows) predicted as other classes (columns), over the
    `most` classes most often confused; None when no segment was confused."""
    from matplotlib.ticker import MaxNLocator

    counts = np.asarray(confusion["matrix"], dtype=np.int64)
    total = counts.sum(axis=0) + counts.sum(axis=1)
    involved = np.sort(np.argsort(-total, kind="stable")[:most])
    involved = involved[total[involved] > 0]
    if not involved.size:
        return None
    names = [confusion["classes"][k] for k in involved]
    part = counts[np.ix_(involved, involved)]

    def draw(figure: Any) -> None:
        axes = figure.add_subplot()
        image = axes.imshow(part, cmap="Reds", vmin=0)
        axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axes.set_yticks(range(len(names)), names)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("ground-truth class")
        for (row, col), value in np.ndenumerate(part):
            if value:
                dark = value > part.max() / 2
                axes.text(
                    col,
                    row,
                    str(value),
                    ha="center",
                    va="center",
                    color="white" if dark else "black",
                    fontsize="small",
                )
        bar = figure.colorbar(image, ax=axes, shrink=0.8)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
        axes.set_title("Overlapping segments, wrong class")

    side = 2.4 + 0.36 * len(names)
    return _render(side + 1.0, side, draw)


def _series(entries: Sequence[Mapping[str, Any]], kind: str, key: str) -> tuple[list, list]:
    """Iterations and finite values of `key` in the entries of one kind."""
    points = [
        (e["iteration"], float(e[key]))
        for e in entries
        if e.get("kind") == kind
        and isinstance(e.get(key), int | float)
        and math.isfinite(e[key])
        and "iteration" in e
    ]
    return [p[0] for p in points], [p[1] for p in points]


def training_curve(
    entries: Sequence[Mapping[str, Any]], iteration: int | None = None
) -> bytes | None:
    """Training and validation loss, and the PQ of training batches when logged (fine-tuning),
    against the iteration, with the evaluated checkpoint's `iteration` marked; None when the log
    has no loss."""
    train, val = _series(entries, "train", "loss"), _series(entries, "val", "loss")
    pq = _series(entries, "train", "pq")
    if not train[0] and not val[0]:
        return None

    def draw(figure: Any) -> None:
        axes = figure.add_subplot()
        if train[0]:
            axes.plot(*train, label="train loss", color="#3b6fb6", linewidth=1.2)
        if val[0]:
            axes.plot(*val, label="validation loss", color="#d0453a", marker="o", linewidth=1.6)
        if iteration is not None:
            axes.axvline(iteration, color="#5b6672", linestyle="--", label="this checkpoint")
        axes.set_xlabel("iteration")
        axes.set_ylabel("loss")
        axes.grid(alpha=0.3)
        handles, labels = axes.get_legend_handles_labels()
        if pq[0]:
            right = axes.twinx()
            right.plot(
                pq[0],
                [100 * v for v in pq[1]],
                color="#7fb24a",
                linewidth=1.2,
                label="PQ of training batches",
            )
            right.set_ylabel("PQ (%)")
            more = right.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        axes.legend(handles, labels, loc="upper right", fontsize="small")
        axes.set_title("Training run (metrics.jsonl)")

    return _render(7.0, 3.4, draw)
