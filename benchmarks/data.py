"""Synthetic dataset generator benchmark (`cops bench data`): images/s, with and without writing,
and the rate of the training targets (semantic, weights, cut targets) made from those scenes.

Each figure is the best of `repeats` runs, the least disturbed by other load on the machine; the
1-minute load average is recorded alongside, since a busy machine lowers the figures.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cops.benchmarks.report import BenchResult, environment
from cops.datasets.street_scene import SYNTHETIC_CATEGORIES
from cops.datasets.synthetic import generate_scene, prepare_synthetic, scene_seed
from cops.datasets.targets import TargetConfig, make_targets


def _target_seconds(ids: np.ndarray, segments: list[dict], config: TargetConfig) -> float:
    """Seconds to make the training targets of one generated scene."""
    classes = {c.id: (i, c.isthing) for i, c in enumerate(SYNTHETIC_CATEGORIES)}
    segments = [
        {**s, "train_id": classes[s["category_id"]][0], "isthing": classes[s["category_id"]][1]}
        for s in segments
    ]
    start = time.perf_counter()
    make_targets(ids, segments, config)
    return time.perf_counter() - start


def run(
    images: int = 200,
    height: int = 256,
    width: int = 512,
    workers: int | None = None,
    repeats: int = 3,
) -> BenchResult:
    """Time scene generation alone (one process) and the full prepare (generation + PNG + JSON
    writing) with `workers` processes (default: all CPUs), and the training targets of the
    generated scenes (default target rules: Cityscapes edge distances, stride 4)."""
    workers = workers or os.cpu_count() or 1
    generate, full, targets = [], [], []
    for _ in range(repeats):
        generate_s = targets_s = 0.0
        for i in range(images):
            start = time.perf_counter()
            _, ids, segments = generate_scene(scene_seed(0, "train", i), height, width)
            generate_s += time.perf_counter() - start
            targets_s += _target_seconds(ids, segments, TargetConfig())
        generate.append(generate_s)
        targets.append(targets_s)
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
        "targets_images_per_s": round(images / min(targets), 1),
    }
    rows = [
        ["generate scenes (1 process)", figures["generate_images_per_s"]],
        [f"prepare-data synthetic ({workers} processes)", figures["prepare_images_per_s"]],
        ["training targets (1 process)", figures["targets_images_per_s"]],
    ]
    title = f"synthetic data, {images} images {height}×{width}, best of {repeats}"
    return BenchResult("data", title, ["stage", "images/s"], rows, figures, environment())
