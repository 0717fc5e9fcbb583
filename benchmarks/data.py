"""Benchmark the synthetic dataset generator: images/s, with and without writing the files.

Run ``python -m cops.benchmarks.data [--images N] [--workers K]``; prints one JSON object.
Each figure is the best of ``--repeats`` runs, the least disturbed by other load on the machine;
the 1-minute load average is printed alongside, since a busy machine lowers the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from cops.datasets.synthetic import generate_scene, prepare_synthetic, scene_seed


def bench(images: int, height: int, width: int, workers: int, repeats: int) -> dict[str, object]:
    """Time scene generation alone and the full prepare (generation + PNG + JSON writing)."""
    generate, full = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(images):
            generate_scene(scene_seed(0, "train", i), height, width)
        generate.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
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
    return {
        "images": images,
        "height": height,
        "width": width,
        "workers": workers,
        "repeats": repeats,
        "generate_images_per_s": round(images / min(generate), 1),
        "prepare_images_per_s": round(images / min(full), 1),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run the benchmark, print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(bench(args.images, args.height, args.width, args.workers, args.repeats)))


if __name__ == "__main__":
    main()
