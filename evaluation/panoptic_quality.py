"""Panoptic quality (PQ = SQ × RQ) with the semantics of COCO's panopticapi, vectorised per image.

The definition is that of ``panopticapi.evaluation.pq_compute`` (the reference every paper
quotes), computed from one (gt segment × predicted segment) intersection table per image:

- segment id 0 is VOID; pixels of unlisted ground-truth ids are neither void nor matchable;
- a ground-truth segment and a prediction of the same category match when IoU > 0.5, where the
  union leaves out the prediction's pixels on VOID (match is then one-to-one);
- crowd ground truth never matches; an unmatched ground-truth segment is a false negative unless
  it is crowd;
- an unmatched prediction is a false positive unless more than half of its pixels lie on VOID or
  on the crowd region of its category (one crowd region per category and image: if several are
  listed, the last one counts, as in panopticapi);
- per category: PQ = Σ IoU / (TP + FP/2 + FN/2), SQ = Σ IoU / TP, RQ = TP / (TP + FP/2 + FN/2);
  "all", "things" and "stuff" average over the categories with TP + FP + FN > 0.

Reported values are percent (× 100), as detectron2 prints them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cops.datasets.panoptic_io import VOID_ID, read_json, read_panoptic_png
from cops.errors import DatasetError
from cops.parallel import fork_pool

_LUT_LIMIT = 1 << 20  # ids below this are mapped through a dense lookup table, others sorted


@dataclass(eq=False)
class PQStats:
    """Per-category TP, FP, FN counts and summed IoU of matches, over a fixed category order."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray

    def __post_init__(self) -> None:
        self.tp = np.asarray(self.tp, dtype=np.int64)
        self.fp = np.asarray(self.fp, dtype=np.int64)
        self.fn = np.asarray(self.fn, dtype=np.int64)
        self.iou = np.asarray(self.iou, dtype=np.float64)
        shapes = {a.shape for a in (self.tp, self.fp, self.fn, self.iou)}
        if len(shapes) != 1 or self.tp.ndim != 1:
            raise ValueError(f"PQStats: tp, fp, fn, iou must be 1-D of one length, got {shapes}")

    @classmethod
    def zeros(cls, num_categories: int) -> PQStats:
        """Empty statistics for `num_categories` categories."""
        return cls(
            *(np.zeros(num_categories, dtype=np.int64) for _ in range(3)), np.zeros(num_categories)
        )

    def _check_same(self, other: PQStats) -> None:
        if not isinstance(other, PQStats) or other.tp.shape != self.tp.shape:
            raise ValueError("PQStats can only be added to PQStats over the same categories")

    def __add__(self, other: PQStats) -> PQStats:
        self._check_same(other)
        return PQStats(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou + other.iou
        )

    def __iadd__(self, other: PQStats) -> PQStats:
        self._check_same(other)
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        return self

    def summary(self, names: Sequence[str], isthing: Sequence[bool]) -> dict[str, Any]:
        """PQ/SQ/RQ in percent for all, things, stuff and per class (None where undefined)."""
        if len(names) != self.tp.size or len(isthing) != self.tp.size:
            raise ValueError(
                f"summary: {len(names)} names and {len(isthing)} thing flags for "
                f"{self.tp.size} categories"
            )
        tp, fp, fn = (a.astype(np.float64) for a in (self.tp, self.fp, self.fn))
        present = (self.tp + self.fp + self.fn) > 0
        denom = np.where(present, tp + 0.5 * fp + 0.5 * fn, 1.0)
        pq = self.iou / denom
        sq = np.divide(self.iou, tp, out=np.zeros_like(tp), where=self.tp > 0)
        rq = tp / denom
        thing = np.asarray(isthing, dtype=bool)
        result: dict[str, Any] = {}
        for group, member in (
            ("all", present),
            ("things", present & thing),
            ("stuff", present & ~thing),
        ):
            n = int(member.sum())
            result[group] = {
                key: (100.0 * float(values[member].mean()) if n else None)
                for key, values in (("pq", pq), ("sq", sq), ("rq", rq))
            }
            result[group]["n"] = n
        result["per_class"] = {
            name: {
                "pq": 100.0 * float(pq[k]) if present[k] else None,
                "sq": 100.0 * float(sq[k]) if present[k] else None,
                "rq": 100.0 * float(rq[k]) if present[k] else None,
                "tp": int(self.tp[k]),
                "fp": int(self.fp[k]),
                "fn": int(self.fn[k]),
            }
            for k, name in enumerate(names)
        }
        return result


class CategoryIndex:
    """Maps dataset category ids to positions 0..K-1 in a fixed order."""

    def __init__(self, category_ids: Iterable[int]) -> None:
        self.ids = np.asarray(list(category_ids), dtype=np.int64)
        if self.ids.ndim != 1 or np.unique(self.ids).size != self.ids.size:
            raise ValueError(f"category ids must be distinct integers, got {self.ids.tolist()}")
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return int(self.ids.size)

    def positions(self, category_ids: np.ndarray) -> np.ndarray:
        """Position of each id; -1 for ids that are not categories."""
        category_ids = np.asarray(category_ids, dtype=np.int64)
        if not self.ids.size:
            return np.full(category_ids.shape, -1, dtype=np.intp)
        at = np.minimum(np.searchsorted(self._sorted, category_ids), self.ids.size - 1)
        return np.where(self._sorted[at] == category_ids, self._order[at], -1)


def segment_runs(*maps: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Row-major runs of pixels over which every map is constant: lengths, each map's values.

    Label maps change value rarely along a row, so a handful of comparison passes reduce the
    pixels to far fewer runs, and all later work is on runs instead of pixels.
    """
    flats = [np.asarray(m).ravel() for m in maps]
    n = flats[0].size
    if n == 0:
        return np.zeros(0, dtype=np.int64), [f[:0] for f in flats]
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(flats[0][1:], flats[0][:-1], out=change[1:])
    scratch = np.empty(n - 1, dtype=bool)
    for flat in flats[1:]:
        np.not_equal(flat[1:], flat[:-1], out=scratch)
        change[1:] |= scratch
    starts = np.flatnonzero(change)
    return np.diff(starts, append=n), [flat[starts] for flat in flats]


def segment_buckets(ids: np.ndarray, listed: np.ndarray, weight: int = 1) -> np.ndarray:
    """Per id (pixel or run) ``weight × bucket``: 0 for VOID, 1 + i for ``listed[i]``, then others.

    The "others" bucket is ``len(listed) + 1``. Ids below 2**20 go through a dense lookup
    table (one gather), larger or negative ones through one sort of the map.
    """
    other = listed.size + 1
    dtype = np.int32 if (other + 1) * weight < 2**31 else np.int64
    values = (np.arange(1, listed.size + 1, dtype=dtype)) * weight
    if ids.size == 0:
        return np.zeros(ids.shape, dtype=dtype)
    low, high = int(ids.min()), int(ids.max())
    if low >= 0 and high < _LUT_LIMIT:
        lut = np.full(high + 1, other * weight, dtype=dtype)
        inside = (listed >= 0) & (listed <= high)
        lut[listed[inside]] = values[inside]
        lut[VOID_ID] = 0
        return np.take(lut, ids)
    present, inverse = np.unique(ids, return_inverse=True)
    table = np.full(present.size, other * weight, dtype=dtype)
    if listed.size:
        order = np.argsort(listed)
        at = np.minimum(np.searchsorted(listed[order], present), listed.size - 1)
        found = listed[order][at] == present
        table[found] = values[order[at[found]]]
    table[present == VOID_ID] = 0
    return np.take(table, inverse).reshape(ids.shape)


def _segment_table(
    segments: Sequence[dict[str, Any]], categories: CategoryIndex, kind: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and category positions of `segments`; errors name the image and the segment."""
    try:
        ids = np.asarray([s["id"] for s in segments], dtype=np.int64)
        cats = np.asarray([s["category_id"] for s in segments], dtype=np.int64)
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"{where}{kind} segments must be dicts with 'id' and 'category_id' ({exc!r})"
        ) from exc
    if (ids == VOID_ID).any():
        raise ValueError(f"{where}{kind} segment id {VOID_ID} is reserved for VOID")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{where}{kind} segment id {int(unique[counts > 1][0])} listed twice")
    positions = categories.positions(cats)
    if (positions < 0).any():
        bad = int(np.flatnonzero(positions < 0)[0])
        raise ValueError(
            f"{where}{kind} segment {int(ids[bad])} has unknown category_id {int(cats[bad])}"
        )
    return ids, positions


def _last_crowd_per_category(crowd: np.ndarray, cats: np.ndarray, num: int) -> np.ndarray:
    """Index of the last listed crowd segment of each category, -1 where there is none."""
    result = np.full(num, -1, dtype=np.intp)
    reversed_crowd = np.flatnonzero(crowd)[::-1]
    first_cats, first = np.unique(cats[reversed_crowd], return_index=True)
    result[first_cats] = reversed_crowd[first]
    return result


def _check_maps(
    gt_ids: np.ndarray, pred_ids: np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as given, after checking they are integer [H, W] maps of one size."""
    for name, arr in (("gt_ids", gt_ids), ("pred_ids", pred_ids)):
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{where}{name} must be an integer [H, W] map, got {arr.dtype} {arr.shape}"
            )
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"{where}prediction size {pred_ids.shape} differs from ground truth {gt_ids.shape}"
        )
    return gt_ids, pred_ids


def _intersections(
    gt_ids: np.ndarray, g_id: np.ndarray, pred_ids: np.ndarray, p_id: np.ndarray, where: str
) -> np.ndarray:
    """Pixel counts [G + 2, P + 2] of every (ground-truth, predicted) bucket pair: row/column 0
    is VOID, then the listed segments, then unlisted ids; predicted ids outside the list fail.

    Runs over which both maps are constant, then one weighted bincount over their bucket pairs,
    give every intersection at once.
    """
    n_gt, width = g_id.size, p_id.size + 2
    lengths, (gt_runs, pred_runs) = segment_runs(gt_ids, pred_ids)
    key = segment_buckets(gt_runs, g_id, weight=width)
    key += segment_buckets(pred_runs, p_id)
    table = np.bincount(key, weights=lengths, minlength=(n_gt + 2) * width)
    table = table.astype(np.int64).reshape(n_gt + 2, width)  # exact: counts are below 2**53
    if table[:, -1].any():
        listed_or_void = np.concatenate(([VOID_ID], p_id))
        stray = np.setdiff1d(np.unique(pred_ids), listed_or_void)
        raise ValueError(
            f"{where}predicted segment ids {stray[:5].tolist()} are in the map but not listed "
            "in the segments"
        )
    return table


def image_pq_stats(
    gt_ids: np.ndarray,
    gt_segments: Sequence[dict[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Sequence[dict[str, Any]],
    category_ids: Sequence[int] | CategoryIndex,
    *,
    image: object = None,
    gt_area_from_segments: bool = False,
) -> PQStats:
    """PQ statistics of one image from segment-id maps [H, W] (0 = VOID) and segments_info.

    Ground-truth segments carry ``id``, ``category_id`` and ``iscrowd``; predicted ones ``id`` and
    ``category_id``. `image` only names the image in error messages. With
    `gt_area_from_segments`, ground-truth areas are the segments' ``area`` values (as panopticapi
    reads them from the JSON) instead of pixel counts in `gt_ids`.
    """
    where = f"image {image}: " if image is not None else ""
    categories = (
        category_ids if isinstance(category_ids, CategoryIndex) else CategoryIndex(category_ids)
    )
    gt_ids, pred_ids = _check_maps(np.asarray(gt_ids), np.asarray(pred_ids), where)
    g_id, g_cat = _segment_table(gt_segments, categories, "ground-truth", where)
    p_id, p_cat = _segment_table(pred_segments, categories, "predicted", where)
    g_crowd = np.asarray([bool(s.get("iscrowd", 0)) for s in gt_segments], dtype=bool)
    n_gt, n_pred, k = g_id.size, p_id.size, len(categories)
    table = _intersections(gt_ids, g_id, pred_ids, p_id, where)
    pred_area = table[:, 1:-1].sum(axis=0)
    if (pred_area == 0).any():
        absent = p_id[pred_area == 0]
        raise ValueError(
            f"{where}predicted segment ids {absent[:5].tolist()} are listed but absent from the map"
        )
    pred_void = table[0, 1:-1]
    pairs = table[1:-1, 1:-1]
    if gt_area_from_segments:
        try:
            gt_area = np.asarray([s["area"] for s in gt_segments], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"{where}ground-truth segments must carry 'area'") from exc
    else:
        gt_area = table[1:-1].sum(axis=1)

    # Matches: same category, not crowd, IoU > 0.5 with the prediction's VOID pixels left out.
    gi, pj = np.nonzero(pairs)
    inter = pairs[gi, pj]
    keep = ~g_crowd[gi] & (g_cat[gi] == p_cat[pj])
    gi, pj, inter = gi[keep], pj[keep], inter[keep]
    union = pred_area[pj] + gt_area[gi] - inter - pred_void[pj]
    match = 2 * inter > union
    gi, pj = gi[match], pj[match]
    tp = np.bincount(g_cat[gi], minlength=k)
    iou = np.bincount(g_cat[gi], weights=inter[match] / union[match], minlength=k)
    gt_matched = np.zeros(n_gt, dtype=bool)
    gt_matched[gi] = True
    pred_matched = np.zeros(n_pred, dtype=bool)
    pred_matched[pj] = True

    fn = np.bincount(g_cat[~gt_matched & ~g_crowd], minlength=k)

    # Unmatched predictions mostly on VOID or on their category's crowd region are forgiven.
    excused = pred_void.copy()
    crowd_row = _last_crowd_per_category(g_crowd, g_cat, k)[p_cat]
    on_crowd = np.flatnonzero(crowd_row >= 0)
    excused[on_crowd] += pairs[crowd_row[on_crowd], on_crowd]
    false_pos = ~pred_matched & ~(2 * excused > pred_area)
    fp = np.bincount(p_cat[false_pos], minlength=k)
    return PQStats(tp, fp, fn, iou)


def _field(entry: Any, key: str, source: Path, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetError(f"{source}: {where} has no '{key}'")
    return entry[key]


@dataclass(frozen=True)
class _Job:
    """A chunk of (gt annotation, predicted annotation) pairs for one worker."""

    pairs: list[tuple[dict[str, Any], dict[str, Any]]]
    gt_folder: Path
    pred_folder: Path
    category_ids: tuple[int, ...]


def _run_job(job: _Job) -> PQStats:
    """Sum of per-image statistics over a job; bad input becomes a DatasetError naming files."""
    categories = CategoryIndex(job.category_ids)
    total = PQStats.zeros(len(categories))
    for gt_ann, pred_ann in job.pairs:
        gt_png = job.gt_folder / gt_ann["file_name"]
        pred_png = job.pred_folder / pred_ann["file_name"]
        try:
            total += image_pq_stats(
                read_panoptic_png(gt_png),
                gt_ann["segments_info"],
                read_panoptic_png(pred_png),
                pred_ann["segments_info"],
                categories,
                gt_area_from_segments=True,
            )
        except ValueError as exc:  # DatasetError included
            raise DatasetError(
                f"image {gt_ann['image_id']!r} (prediction {pred_png}, ground truth {gt_png}): "
                f"{exc}"
            ) from exc
    return total


def _check_annotation(ann: Any, source: Path, index: int) -> None:
    where = f"annotations[{index}]"
    for key in ("image_id", "file_name", "segments_info"):
        _field(ann, key, source, where)
    if not isinstance(ann["segments_info"], list):
        raise DatasetError(f"{source}: {where}['segments_info'] must be a list")


def pq_compute_files(
    gt_json: str | Path,
    pred_json: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """PQ of a COCO panoptic prediction (JSON + PNG folder) against ground truth, in percent.

    Same inputs and numbers as panopticapi's ``pq_compute``; folders default to the JSON paths
    without ".json". Images are spread over `workers` processes (default: all CPUs).
    """
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_data, pred_data = read_json(gt_json), read_json(pred_json)
    gt_folder = Path(gt_folder) if gt_folder is not None else gt_json.with_suffix("")
    pred_folder = Path(pred_folder) if pred_folder is not None else pred_json.with_suffix("")
    for folder, source in ((gt_folder, gt_json), (pred_folder, pred_json)):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: PNG folder not found (for {source})")
    categories = _field(gt_data, "categories", gt_json, "the file")
    if not isinstance(categories, list):
        raise DatasetError(f"{gt_json}: 'categories' must be a list")
    category_ids, names, isthing = [], [], []
    for i, cat in enumerate(categories):
        category_ids.append(int(_field(cat, "id", gt_json, f"categories[{i}]")))
        names.append(str(cat.get("name", category_ids[-1])))
        isthing.append(bool(_field(cat, "isthing", gt_json, f"categories[{i}]")))
    gt_anns = _field(gt_data, "annotations", gt_json, "the file")
    pred_anns = _field(pred_data, "annotations", pred_json, "the file")
    for anns, source in ((gt_anns, gt_json), (pred_anns, pred_json)):
        if not isinstance(anns, list):
            raise DatasetError(f"{source}: 'annotations' must be a list")
        for i, ann in enumerate(anns):
            _check_annotation(ann, source, i)
    pred_by_image = {ann["image_id"]: ann for ann in pred_anns}
    pairs = []
    for ann in gt_anns:
        if ann["image_id"] not in pred_by_image:
            raise DatasetError(
                f"{pred_json}: no prediction for image {ann['image_id']!r} "
                f"({ann['file_name']}, listed in {gt_json})"
            )
        pairs.append((ann, pred_by_image[ann["image_id"]]))
    stats = _evaluate_pairs(pairs, gt_folder, pred_folder, tuple(category_ids), workers)
    return stats.summary(names, isthing)


def _evaluate_pairs(
    pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    gt_folder: Path,
    pred_folder: Path,
    category_ids: tuple[int, ...],
    workers: int | None,
) -> PQStats:
    """Statistics summed over image pairs, in `workers` processes when that pays."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(pairs)))
    if workers == 1:
        return _run_job(_Job(pairs, gt_folder, pred_folder, category_ids))
    chunks = np.array_split(np.arange(len(pairs)), workers * 4)
    jobs = [
        _Job([pairs[i] for i in chunk], gt_folder, pred_folder, category_ids)
        for chunk in chunks
        if chunk.size
    ]
    total = PQStats.zeros(len(category_ids))
    with fork_pool(workers) as pool:
        for stats in pool.imap(_run_job, jobs):
            total += stats
    return total
