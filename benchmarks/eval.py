"""PQ-evaluation benchmark (`cops bench eval`): our pq_compute_files against panopticapi's.

It generates N synthetic street scenes (ground truth, some things marked crowd) and perturbed
predictions (segments dropped to void, merged, shifted, relabelled, false-positive blobs, pixel
noise), writes both as COCO panoptic folders + JSON in a temporary directory, times both
evaluators with the same number of processes, checks that they agree to 1e-9 and reports seconds
per 1000 images, their ratio and the in-memory cost of decoding and of ``image_pq_stats``.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import cv2
import numpy as np

from cops.benchmarks.report import BenchResult, environment
from cops.datasets.panoptic_io import (
    read_panoptic_png,
    segment_stats,
    write_panoptic_png,
)
from cops.datasets.synthetic import SYNTHETIC_CATEGORIES, generate_scene
from cops.errors import CopsError
from cops.evaluation.panoptic_quality import (
    CategoryIndex,
    image_pq_stats,
    pq_compute_files,
)
from cops.files import atomic_write_json
from cops.parallel import fork_pool

THINGS = [c.id for c in SYNTHETIC_CATEGORIES if c.isthing]
STUFF = [c.id for c in SYNTHETIC_CATEGORIES if not c.isthing]
TOLERANCE = 1e-9


def perturb(
    gt_ids: np.ndarray,
    gt_segments: list[dict[str, Any]],
    rng: np.random.Generator,
    things: Sequence[int] = THINGS,
    stuff: Sequence[int] = STUFF,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A plausible imperfect prediction of a ground-truth panoptic map and its segments_info.

    Segments are dropped to void, relabelled (within `things` or `stuff`), merged with another
    instance of their class or shifted; 1% of pixels get a random listed id or void, and up to
    three false-positive thing blobs are added.
    """
    pred = gt_ids.copy()
    category = {s["id"]: s["category_id"] for s in gt_segments}
    height, width = pred.shape
    step = max(1, min(height, width) // 64)
    for seg in gt_segments:
        sid, thing = seg["id"], seg["category_id"] in things
        roll = rng.random()
        if roll < 0.08:
            pred[pred == sid] = 0
        elif roll < 0.16:
            category[sid] = int(rng.choice(things if thing else stuff))
        elif thing and roll < 0.26:
            others = [s["id"] for s in gt_segments if s["category_id"] == seg["category_id"]]
            others.remove(sid)
            if others:
                pred[pred == int(rng.choice(others))] = sid
        elif thing and roll < 0.5:
            mask = pred == sid
            pred[mask] = 0
            pred[np.roll(mask, tuple(rng.integers(-3, 4, 2) * step), axis=(0, 1))] = sid
    present = [s["id"] for s in gt_segments]
    noisy = rng.random(pred.shape) < 0.01
    pred[noisy] = rng.choice([0, *present], size=int(noisy.sum()))
    next_id = 1 + max(present, default=0)
    for _ in range(int(rng.integers(0, 4))):
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        axes = (int(rng.integers(2, 12)) * step, int(rng.integers(2, 12)) * step)
        blob = np.zeros(pred.shape, np.uint8)
        cv2.ellipse(blob, (cx, cy), axes, 0.0, 0.0, 360.0, 1, -1)
        pred[blob > 0] = next_id
        category[next_id] = int(rng.choice(things))
        next_id += 1
    segments = [
        {"id": sid, "category_id": category[sid], "iscrowd": 0, "area": area, "bbox": bbox}
        for sid, (area, bbox) in segment_stats(pred).items()
    ]
    return pred, segments


def _make_pair(job: tuple[Path, int, int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate image `index`: write both PNGs, return the gt and prediction annotations."""
    root, index, height, width = job
    rng = np.random.default_rng((2024, index))
    _, gt_ids, gt_segments = generate_scene((7, index), height, width)
    for seg in gt_segments:
        seg["iscrowd"] = int(seg["category_id"] in THINGS and rng.random() < 0.1)
    pred_ids, pred_segments = perturb(gt_ids, gt_segments, rng)
    name = f"{index:06d}.png"
    write_panoptic_png(root / "gt" / name, gt_ids)
    write_panoptic_png(root / "pred" / name, pred_ids)
    ann = {"image_id": index, "file_name": name}
    return {**ann, "segments_info": gt_segments}, {**ann, "segments_info": pred_segments}


def write_dataset(root: Path, images: int, height: int, width: int, workers: int) -> None:
    """Write gt/ + gt.json and pred/ + pred.json (COCO panoptic) under `root`."""
    jobs = [(root, i, height, width) for i in range(images)]
    with fork_pool(workers) as pool:
        pairs = pool.map(_make_pair, jobs)
    entries = [
        {"id": i, "file_name": f"{i:06d}.png", "height": height, "width": width}
        for i in range(images)
    ]
    categories = [
        {
            "id": c.id,
            "name": c.name,
            "isthing": int(c.isthing),
            "color": list(c.color),
            "supercategory": c.supercategory,
        }
        for c in SYNTHETIC_CATEGORIES
    ]
    for kind, anns in (("gt", [g for g, _ in pairs]), ("pred", [p for _, p in pairs])):
        atomic_write_json(
            root / f"{kind}.json",
            {"images": entries, "annotations": anns, "categories": categories},
        )


def compare(ours: dict[str, Any], reference: dict[str, Any]) -> float:
    """Largest difference between our summary (percent) and panopticapi's (fractions)."""
    worst = 0.0
    for group, ref_group in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        if ours[group]["n"] != reference[ref_group]["n"]:
            raise AssertionError(f"{group}: {ours[group]['n']} classes vs {reference[ref_group]}")
        for key in ("pq", "sq", "rq"):
            worst = max(worst, abs(ours[group][key] / 100 - reference[ref_group][key]))
    for cat in SYNTHETIC_CATEGORIES:
        mine, ref = ours["per_class"][cat.name], reference["per_class"][cat.id]
        for key in ("pq", "sq", "rq"):
            worst = max(worst, abs((mine[key] or 0.0) / 100 - ref[key]))
    return worst


def in_memory_seconds(root: Path, images: int) -> tuple[float, float]:
    """Seconds per image, one process: decoding its two PNGs, and `image_pq_stats` alone."""
    gt = json.loads((root / "gt.json").read_text())
    pred = {a["image_id"]: a for a in json.loads((root / "pred.json").read_text())["annotations"]}
    categories = CategoryIndex(c["id"] for c in gt["categories"])
    held = []
    start = time.perf_counter()
    for ann in gt["annotations"][:images]:
        other = pred[ann["image_id"]]
        held.append(
            (
                read_panoptic_png(root / "gt" / ann["file_name"]),
                ann["segments_info"],
                read_panoptic_png(root / "pred" / other["file_name"]),
                other["segments_info"],
            )
        )
    decode = (time.perf_counter() - start) / len(held)
    start = time.perf_counter()
    for gt_ids, gt_segments, pred_ids, pred_segments in held:
        image_pq_stats(gt_ids, gt_segments, pred_ids, pred_segments, categories)
    return decode, (time.perf_counter() - start) / len(held)


def run(
    images: int = 200,
    height: int = 512,
    width: int = 1024,
    workers: int | None = None,
    repeats: int = 3,
) -> BenchResult:
    """Time panopticapi's pq_compute and ours on the same files (interleaved, best of each)."""
    try:
        from panopticapi.evaluation import pq_compute
    except ImportError as exc:
        raise CopsError(
            "cops bench eval compares against panopticapi: pip install --no-deps panopticapi-lite"
        ) from exc

    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="cops-pq-bench-") as tmp:
        root = Path(tmp)
        write_dataset(root, images, height, width, workers)
        gt_json, pred_json = str(root / "gt.json"), str(root / "pred.json")
        theirs, mine = [], []
        for _ in range(repeats):  # interleaved, best of each: the machine may be shared
            start = time.perf_counter()
            with (
                mock.patch.object(multiprocessing, "cpu_count", return_value=workers),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                reference = pq_compute(gt_json, pred_json)
            theirs.append(time.perf_counter() - start)
            start = time.perf_counter()
            ours = pq_compute_files(gt_json, pred_json, workers=workers)
            mine.append(time.perf_counter() - start)
        worst = compare(ours, reference)
        if worst > TOLERANCE:
            raise AssertionError(f"cops and panopticapi differ by {worst:.3g}")
        decode, per_image = in_memory_seconds(root, min(images, 50))
    per_1000 = 1000 / images
    theirs_s, mine_s = min(theirs) * per_1000, min(mine) * per_1000
    figures = {
        "images": images,
        "height": height,
        "width": width,
        "workers": workers,
        "repeats": repeats,
        "panopticapi_s_per_1000": round(theirs_s, 3),
        "cops_s_per_1000": round(mine_s, 3),
        "speedup": round(theirs_s / mine_s, 3),
        "decode_ms_per_image": round(decode * 1e3, 3),
        "image_pq_stats_ms_per_image": round(per_image * 1e3, 3),
        "max_abs_difference": worst,
        "pq": ours["all"]["pq"],
    }
    rows = [
        ["panopticapi pq_compute", f"{theirs_s:.2f} s / 1000 images"],
        ["cops pq_compute_files", f"{mine_s:.2f} s / 1000 images"],
        ["speed-up", f"{theirs_s / mine_s:.2f}x"],
        ["decoding both PNGs (1 process)", f"{decode * 1e3:.2f} ms / image"],
        ["image_pq_stats in memory (1 process)", f"{per_image * 1e3:.2f} ms / image"],
        ["max |cops − panopticapi|", f"{worst:.1e}"],
    ]
    title = (
        f"PQ evaluation, {images} pairs {height}×{width}, {workers} processes, best of {repeats}"
    )
    return BenchResult("eval", title, ["", "value"], rows, figures, environment())
