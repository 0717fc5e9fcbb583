"""COCO mask AP of thing classes (pycocotools ``COCOeval``, iouType "segm"), built in memory.

Every thing segment of an image becomes an instance: ground-truth crowd segments become
``iscrowd=1`` regions (detections on them are neither true nor false positives), predicted ones
carry their ``score`` (1.0 when a prediction file has none). Masks are run-length encoded for all
segments of a map at once from its column-major runs, which is exactly pycocotools' RLE.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def segment_rles(ids: np.ndarray, wanted: Sequence[int]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """COCO compressed RLEs and areas of the masks ``ids == w`` for each w in `wanted`.

    One pass over the map: column-major runs are grouped by id, and each mask's alternating
    zero/one counts follow from its runs' starts and ends (no per-segment pixel work).
    """
    from pycocotools import mask as mask_utils

    ids = np.asarray(ids)
    height, width = ids.shape
    wanted_arr = np.asarray(list(wanted), dtype=np.int64)
    if not wanted_arr.size:
        return [], np.zeros(0, dtype=np.int64)
    flat = ids.ravel(order="F")
    n = flat.size
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1]))) if n else flat[:0]
    ends = np.append(starts[1:], n)
    values = flat[starts]
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    lo = np.searchsorted(sorted_values, wanted_arr, side="left")
    hi = np.searchsorted(sorted_values, wanted_arr, side="right")
    uncompressed, areas = [], np.zeros(wanted_arr.size, dtype=np.int64)
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        run_starts, run_ends = starts[order[a:b]], ends[order[a:b]]
        counts = np.empty(2 * run_starts.size + 1, dtype=np.int64)
        counts[0:-1:2] = run_starts - np.append(0, run_ends[:-1])
        counts[1::2] = run_ends - run_starts
        counts[-1] = n - (run_ends[-1] if run_ends.size else 0)
        if run_ends.size and counts[-1] == 0:
            counts = counts[:-1]
        areas[i] = int(counts[1::2].sum())
        uncompressed.append({"size": [height, width], "counts": counts})
    return mask_utils.frPyObjects(uncompressed, height, width), areas


@dataclass
class _Image:
    """One image's thing instances: RLE, area, category id and crowd flag or score."""

    key: str
    height: int
    width: int
    gt: list[tuple[dict[str, Any], int, int, int]] = field(default_factory=list)
    pred: list[tuple[dict[str, Any], int, int, float]] = field(default_factory=list)


class MaskAP:
    """Accumulates thing instances image by image; `results` runs COCOeval once at the end."""

    def __init__(self, thing_category_ids: Sequence[int]) -> None:
        self.category_ids = [int(c) for c in thing_category_ids]
        self._things = set(self.category_ids)
        self._images: list[_Image] = []

    def add(
        self,
        gt_ids: np.ndarray,
        gt_segments: Sequence[dict[str, Any]],
        pred_ids: np.ndarray,
        pred_segments: Sequence[dict[str, Any]],
        image_id: object = None,
    ) -> None:
        """Record the thing segments of one image's ground truth and prediction.

        Images are evaluated in the order of ``str(image_id)`` (then of addition), so that equal
        scores rank the same whatever order images were added or merged in.
        """
        gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
        if gt_ids.shape != pred_ids.shape or gt_ids.ndim != 2:
            raise ValueError(
                f"mask AP: prediction shape {pred_ids.shape} differs from ground truth "
                f"{gt_ids.shape} (both must be [H, W])"
            )
        image = _Image(str(image_id), *gt_ids.shape)
        gts = [s for s in gt_segments if s["category_id"] in self._things]
        rles, areas = segment_rles(gt_ids, [s["id"] for s in gts])
        image.gt = [
            (rle, int(area), int(s["category_id"]), int(bool(s.get("iscrowd", 0))))
            for rle, area, s in zip(rles, areas, gts, strict=True)
        ]
        preds = [s for s in pred_segments if s["category_id"] in self._things]
        rles, areas = segment_rles(pred_ids, [s["id"] for s in preds])
        image.pred = [
            (rle, int(area), int(s["category_id"]), float(s.get("score", 1.0)))
            for rle, area, s in zip(rles, areas, preds, strict=True)
        ]
        self._images.append(image)

    def __iadd__(self, other: MaskAP) -> MaskAP:
        if not isinstance(other, MaskAP) or other.category_ids != self.category_ids:
            raise ValueError("only MaskAP accumulators over the same categories can be merged")
        self._images.extend(other._images)
        return self

    def results(self) -> dict[str, Any] | None:
        """AP, AP50, AP75 and per-class AP (keyed by category id) in percent.

        None when no image has non-crowd thing ground truth; a class without any gets None.
        """
        if not any(not crowd for im in self._images for *_, crowd in im.gt):
            return None
        ordered = sorted(self._images, key=lambda im: im.key)
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        images = [
            {"id": i + 1, "height": im.height, "width": im.width} for i, im in enumerate(ordered)
        ]
        categories = [{"id": c} for c in self.category_ids]
        gt_anns = [
            {
                "image_id": i + 1,
                "segmentation": rle,
                "area": area,
                "category_id": cat,
                "iscrowd": crowd,
            }
            for i, im in enumerate(ordered)
            for rle, area, cat, crowd in im.gt
        ]
        pred_anns = [
            {
                "image_id": i + 1,
                "segmentation": rle,
                "area": area,
                "category_id": cat,
                "score": score,
                "iscrowd": 0,
            }
            for i, im in enumerate(ordered)
            for rle, area, cat, score in im.pred
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt, coco_pred = COCO(), COCO()
            for coco, anns in ((coco_gt, gt_anns), (coco_pred, pred_anns)):
                for n, ann in enumerate(anns, start=1):
                    ann["id"] = n
                coco.dataset = {"images": images, "categories": categories, "annotations": anns}
                coco.createIndex()
            evaluator = COCOeval(coco_gt, coco_pred, iouType="segm")
            evaluator.evaluate()
            evaluator.accumulate()
        # precision [iou thresholds, recall points, classes, area ranges, max dets]: area "all",
        # at most 100 detections per image, as COCO's summary.
        params = evaluator.params
        precision = evaluator.eval["precision"][:, :, :, 0, params.maxDets.index(100)]
        at50 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
        at75 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.75))[0])

        def mean_ap(values: np.ndarray) -> float | None:
            valid = values[values > -1]
            return 100.0 * float(valid.mean()) if valid.size else None

        per_class = {int(cat): mean_ap(precision[:, :, k]) for k, cat in enumerate(params.catIds)}
        return {
            "ap": mean_ap(precision),
            "ap50": mean_ap(precision[at50]),
            "ap75": mean_ap(precision[at75]),
            "per_class": per_class,
        }
