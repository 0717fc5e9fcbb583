"""Semantic segmentation metrics: a mergeable confusion matrix, per-class IoU and mIoU.

Maps hold contiguous train ids 0..K-1 and 255:

- ground truth 255 = ignore: the pixel is not counted at all;
- prediction 255 = void (the panoptic output left the pixel unlabelled): it counts against the
  ground-truth class as a miss (it enlarges that class's union) but is a false positive of no class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cops.evaluation.panoptic_quality import segment_buckets, segment_runs

IGNORE = 255
"""Train id of ignored ground truth and of void predictions."""


class ConfusionMatrix:
    """Pixel counts [K, K + 1]: rows ground-truth class, columns predicted class, last = void."""

    def __init__(self, num_classes: int) -> None:
        if not 0 < num_classes < IGNORE:
            raise ValueError(f"num_classes must be in 1..{IGNORE - 1}, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, gt_train_ids: np.ndarray, pred_train_ids: np.ndarray) -> None:
        """Count one image's (ground truth, prediction) train-id maps of equal shape."""
        gt, pred = np.asarray(gt_train_ids), np.asarray(pred_train_ids)
        if gt.shape != pred.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
        k = self.num_classes
        for name, arr in (("ground truth", gt), ("prediction", pred)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{name} train ids must be integers, got {arr.dtype}")
            if arr.size and (arr.min() < 0 or arr.max() > IGNORE):
                raise ValueError(
                    f"{name} train ids must be in 0..{k - 1} or {IGNORE}, "
                    f"got values in {arr.min()}..{arr.max()}"
                )
        key = gt.astype(np.intp) * (IGNORE + 1) + pred
        counts = np.bincount(key.ravel(), minlength=(IGNORE + 1) ** 2)
        counts = counts.reshape(IGNORE + 1, IGNORE + 1)
        for name, bad in (
            ("ground truth", counts[k:IGNORE].sum(axis=1)),
            ("prediction", counts[:, k:IGNORE].sum(axis=0)),
        ):
            if bad.any():
                raise ValueError(
                    f"{name} train id {k + int(np.flatnonzero(bad)[0])} is not a class "
                    f"(0..{k - 1}) nor {IGNORE}"
                )
        self.matrix[:, :k] += counts[:k, :k]
        self.matrix[:, k] += counts[:k, IGNORE]

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError("only confusion matrices over the same classes can be merged")
        self.matrix += other.matrix
        return self

    def iou(self) -> list[float | None]:
        """IoU per class in percent; None for classes absent from ground truth and prediction."""
        k = self.num_classes
        hits = np.diagonal(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=1) + self.matrix[:, :k].sum(axis=0) - hits
        return [100.0 * float(h / u) if u > 0 else None for h, u in zip(hits, union, strict=True)]

    def miou(self) -> float | None:
        """Mean IoU in percent over the classes with a defined IoU; None if there is none."""
        values = [v for v in self.iou() if v is not None]
        return float(np.mean(values)) if values else None


def semantic_from_panoptic(
    ids: np.ndarray, segments: Sequence[dict[str, Any]], id_to_train: Mapping[int, int]
) -> np.ndarray:
    """Train-id map (uint8, 255 = void) of a panoptic map; crowd pixels keep their class."""
    listed = np.asarray([s["id"] for s in segments], dtype=np.int64)
    try:
        train = [id_to_train[s["category_id"]] for s in segments]
    except KeyError as exc:
        raise ValueError(f"segment category_id {exc.args[0]} has no train id") from exc
    table = np.asarray([IGNORE, *train, IGNORE], dtype=np.uint8)
    ids = np.asarray(ids)
    lengths, (runs,) = segment_runs(ids)
    return np.repeat(table[segment_buckets(runs, listed)], lengths).reshape(ids.shape)
