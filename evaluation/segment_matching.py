"""Segment-level matching of one image, for breakdowns PQ alone does not give: by size, by class.

:func:`match_segments` applies panopticapi's rules (those of
:func:`cops.evaluation.panoptic_quality.image_pq_stats`, which stays the one PQ of record) but
keeps every segment: which ground-truth and predicted segments matched, which are false negatives
and false positives, and which pairs overlap by IoU > 0.5 *with different classes* (a class
confusion: the segment was found, its class was not). From that come PQ statistics restricted to
COCO's size ranges (:func:`size_stats`) and the confusion counts (:func:`confusion_counts`).
Summed over the size ranges the statistics equal ``image_pq_stats``'s (the tests check this).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cops.evaluation.panoptic_quality import (
    CategoryIndex,
    PQStats,
    segment_buckets,
    segment_runs,
)

SIZE_RANGES: tuple[tuple[str, int, float], ...] = (
    ("small", 0, 32**2),
    ("medium", 32**2, 96**2),
    ("large", 96**2, float("inf")),
)
"""COCO's area ranges in pixels (of the map being scored): [low, high)."""


@dataclass
class SegmentMatch:
    """Every segment of one image with its fate (arrays over gt / predicted segments in list order).

    Classes are category positions (train ids). ``tp_gt``/``tp_pred``/``tp_iou``: the matches
    (same class, IoU > 0.5); ``fn``/``fp``: segments counted as false negative / positive;
    ``confused_gt``/``confused_pred``: classes of IoU > 0.5 pairs whose classes differ.
    """

    gt_ids: np.ndarray
    gt_classes: np.ndarray
    gt_areas: np.ndarray
    pred_ids: np.ndarray
    pred_classes: np.ndarray
    pred_areas: np.ndarray
    tp_gt: np.ndarray
    tp_pred: np.ndarray
    tp_iou: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    confused_gt: np.ndarray
    confused_pred: np.ndarray

    def stats(self, num_classes: int, gt_keep: Any = True, pred_keep: Any = True) -> PQStats:
        """PQ statistics counting only kept segments: matches and FN by their ground truth,
        FP by their prediction (boolean masks over the segments; True keeps all)."""
        gt_keep = np.broadcast_to(np.asarray(gt_keep, dtype=bool), self.gt_ids.shape)
        pred_keep = np.broadcast_to(np.asarray(pred_keep, dtype=bool), self.pred_ids.shape)
        kept = gt_keep[self.tp_gt]
        tp_cls = self.gt_classes[self.tp_gt[kept]]
        return PQStats(
            np.bincount(tp_cls, minlength=num_classes),
            np.bincount(self.pred_classes[self.fp & pred_keep], minlength=num_classes),
            np.bincount(self.gt_classes[self.fn & gt_keep], minlength=num_classes),
            np.bincount(tp_cls, weights=self.tp_iou[kept], minlength=num_classes),
        )


def _table(
    gt_ids: np.ndarray, g_id: np.ndarray, pred_ids: np.ndarray, p_id: np.ndarray
) -> np.ndarray:
    """Pixel counts [void + gt segments + other, void + predicted segments + other]."""
    width = p_id.size + 2
    lengths, (gt_runs, pred_runs) = segment_runs(gt_ids, pred_ids)
    key = segment_buckets(gt_runs, g_id, weight=width)
    key += segment_buckets(pred_runs, p_id)
    table = np.bincount(key, weights=lengths, minlength=(g_id.size + 2) * width)
    return table.astype(np.int64).reshape(g_id.size + 2, width)


def match_segments(
    gt_ids: np.ndarray,
    gt_segments: Sequence[dict[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Sequence[dict[str, Any]],
    categories: CategoryIndex,
) -> SegmentMatch:
    """Match one image's segments as panopticapi does and keep each segment's outcome.

    Inputs as for ``image_pq_stats``, assumed already validated by it (the evaluator scores an
    image with it first). Areas are pixel counts in the maps.
    """
    g_id = np.asarray([s["id"] for s in gt_segments], dtype=np.int64)
    g_cat = categories.positions(np.asarray([s["category_id"] for s in gt_segments], np.int64))
    g_crowd = np.asarray([bool(s.get("iscrowd", 0)) for s in gt_segments], dtype=bool)
    p_id = np.asarray([s["id"] for s in pred_segments], dtype=np.int64)
    p_cat = categories.positions(np.asarray([s["category_id"] for s in pred_segments], np.int64))
    table = _table(np.asarray(gt_ids), g_id, np.asarray(pred_ids), p_id)
    pairs, pred_void = table[1:-1, 1:-1], table[0, 1:-1]
    gt_area, pred_area = table[1:-1].sum(axis=1), table[:, 1:-1].sum(axis=0)

    gi, pj = np.nonzero(pairs)
    inter = pairs[gi, pj]
    union = pred_area[pj] + gt_area[gi] - inter - pred_void[pj]
    overlap = ~g_crowd[gi] & (2 * inter > union)  # IoU > 0.5: at most one partner each way
    same = g_cat[gi] == p_cat[pj]
    match, confused = overlap & same, overlap & ~same
    gt_matched = np.zeros(g_id.size, dtype=bool)
    gt_matched[gi[match]] = True
    pred_matched = np.zeros(p_id.size, dtype=bool)
    pred_matched[pj[match]] = True

    # An unmatched prediction mostly on VOID or on its class's (last listed) crowd region is
    # forgiven, as in panopticapi.
    excused = pred_void.copy()
    crowd_of = np.full(len(categories), -1, dtype=np.intp)
    for index in np.flatnonzero(g_crowd):
        crowd_of[g_cat[index]] = index
    crowd_row = crowd_of[p_cat]
    on_crowd = np.flatnonzero(crowd_row >= 0)
    excused[on_crowd] += pairs[crowd_row[on_crowd], on_crowd]
    return SegmentMatch(
        gt_ids=g_id,
        gt_classes=g_cat,
        gt_areas=gt_area,
        pred_ids=p_id,
        pred_classes=p_cat,
        pred_areas=pred_area,
        tp_gt=gi[match],
        tp_pred=pj[match],
        tp_iou=inter[match] / union[match],
        fn=~gt_matched & ~g_crowd,
        fp=~pred_matched & ~(2 * excused > pred_area),
        confused_gt=g_cat[gi[confused]],
        confused_pred=p_cat[pj[confused]],
    )


def size_stats(match: SegmentMatch, num_classes: int) -> dict[str, PQStats]:
    """PQ statistics per COCO size range: a match or FN falls in its ground truth's range, a FP
    in its prediction's."""
    return {
        name: match.stats(
            num_classes,
            (match.gt_areas >= low) & (match.gt_areas < high),
            (match.pred_areas >= low) & (match.pred_areas < high),
        )
        for name, low, high in SIZE_RANGES
    }


def confusion_counts(match: SegmentMatch, num_classes: int) -> np.ndarray:
    """[K, K] counts of IoU > 0.5 segment pairs: ground-truth class (row) predicted as (column)."""
    flat = match.confused_gt * num_classes + match.confused_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, -1)


__all__ = [
    "SIZE_RANGES",
    "SegmentMatch",
    "confusion_counts",
    "match_segments",
    "size_stats",
]
