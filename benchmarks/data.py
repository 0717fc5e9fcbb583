"""Synthetic dataset generator benchmark (`cops bench data`): images/s, with and without writing.

Each figure is the best of `repeats` runs, the least disturbed by other load on the machine; the
1-minute load average is recorded alongside, since a busy machine lowers the figures.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from cops.benchmarks.report import BenchResult, environment
from cops.datasets.synthetic import generate_scene, prepare_synthetic, scene_seed


def run(
    images: int = 200,
    height: int = 256,
    width: int = 512,
    workers: int | None = None,
    repeats: int = 3,
) -> BenchResult:
    """Time scene generation alone (one process) and the full prepare (generation + PNG + JSON
    writing) with `workers` processes (default: all CPUs)."""
    workers = workers or os.cpu_count() or 1
    generate, full = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(images):
            generate_scene(scene_seed(0, "train", i), height, width)
        generate.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory(prefix="cops-bench-data-") as tmp:
            start = time.perf_counter()
            prepare_synthetic(
                Path(tmp),
                num_train=images,
                height=height,
                width=width,
                splits=("train",),
                workers=workers,
            )
            full.append(time.perf_counter() - start)
    figures = {
        "images": images,
        "height": height,
        "width": width,
        "workers": workers,
        "repeats": repeats,
        "generate_images_per_s": round(images / min(generate), 1),
        "prepare_images_per_s": round(images / min(full), 1),
    }
    rows = [
        ["generate scenes (1 process)", figures["generate_images_per_s"]],
        [f"prepare-data synthetic ({workers} processes)", figures["prepare_images_per_s"]],
    ]
    title = f"synthetic data, {images} images {height}×{width}, best of {repeats}"
    return BenchResult("data", title, ["stage", "images/s"], rows, figures, environment())
