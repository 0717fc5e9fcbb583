"""What the evaluation report needs beyond ``metrics.json``, gathered image by image.

:class:`ReportCollector` is fed every scored image by the evaluation loop. It keeps running sums
(PQ statistics per COCO size range, class confusions of overlapping segments) and the pictures of
the N images with the lowest PQ in a bounded heap, so its memory does not grow with the split:
an image's pictures are drawn (small, JPEG-encoded) only when it enters the heap.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from cops.evaluation.panoptic_quality import CategoryIndex, PQStats
from cops.evaluation.report_panels import render_row
from cops.evaluation.segment_matching import (
    SIZE_RANGES,
    confusion_counts,
    match_segments,
    size_stats,
)
from cops.inference.result import PanopticPrediction

JPEG_QUALITY = 88


@dataclass
class WorstImage:
    """One of the lowest-PQ images: its per-image PQ row and its four pictures as JPEG bytes."""

    file_name: str
    image_id: Any
    pq: float
    sq: float | None
    rq: float | None
    tp: int
    fp: int
    fn: int
    pictures: dict[str, bytes] = field(default_factory=dict)


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} picture as JPEG")
    return data.tobytes()


class ReportCollector:
    """Size-range PQ statistics, class confusions and the `worst` lowest-PQ images of a split.

    ``classes`` are the model's (which the evaluation checked equal to the split's) as a dict of
    ``names``, ``category_ids``, ``isthing`` and ``colors`` in train-id order.
    """

    def __init__(self, classes: Mapping[str, Any], worst: int = 12) -> None:
        if worst < 0:
            raise ValueError(f"worst: expected a number of images >= 0, got {worst}")
        self.classes = classes
        self.names = [str(n) for n in classes["names"]]
        self.isthing = [bool(t) for t in classes["isthing"]]
        self.categories = CategoryIndex(classes["category_ids"])
        k = len(self.names)
        self.by_size = {name: PQStats.zeros(k) for name, _, _ in SIZE_RANGES}
        self.confusion = np.zeros((k, k), dtype=np.int64)
        self.worst = worst
        self._heap: list[tuple[float, int, WorstImage]] = []
        self._order = itertools.count()

    def add(
        self, sample: Mapping[str, Any], prediction: PanopticPrediction, stats: PQStats
    ) -> None:
        """Take one scored image: `sample` has ``image``, ``panoptic``, ``segments``,
        ``file_name`` and ``image_id``; `stats` is its PQ statistics from the evaluator."""
        k = len(self.names)
        match = match_segments(
            sample["panoptic"],
            sample["segments"],
            prediction.ids,
            prediction.segments,
            self.categories,
        )
        for name, part in size_stats(match, k).items():
            self.by_size[name] += part
        self.confusion += confusion_counts(match, k)
        overall = stats.summary(self.names, self.isthing)["all"]
        if overall["pq"] is None or self.worst == 0:
            return
        order = next(self._order)
        if len(self._heap) == self.worst and overall["pq"] >= -self._heap[0][0]:
            return  # no worse than every kept image (ties keep the earlier one)
        row = render_row(
            sample["image"],
            sample["panoptic"],
            sample["segments"],
            prediction,
            prediction.boundary,
            self.classes,
            missed=match.gt_ids[match.fn].tolist(),
            spurious=match.pred_ids[match.fp].tolist(),
        )
        entry = WorstImage(
            file_name=str(sample["file_name"]),
            image_id=sample["image_id"],
            pq=overall["pq"],
            sq=overall["sq"],
            rq=overall["rq"],
            tp=int(stats.tp.sum()),
            fp=int(stats.fp.sum()),
            fn=int(stats.fn.sum()),
            pictures={name: _jpeg(picture) for name, picture in row.items()},
        )
        item = (-overall["pq"], -order, entry)
        if len(self._heap) < self.worst:
            heapq.heappush(self._heap, item)
        else:
            heapq.heapreplace(self._heap, item)

    def worst_images(self) -> list[WorstImage]:
        """The kept images, lowest PQ first (ties in evaluation order)."""
        return [entry for _, _, entry in sorted(self._heap, key=lambda i: (-i[0], -i[1]))]

    def summary(self) -> dict[str, Any]:
        """``panoptic_by_size`` and ``class_confusion`` for ``metrics.json`` (PQ in percent)."""
        by_size = {}
        for name, low, high in SIZE_RANGES:
            groups = self.by_size[name].summary(self.names, self.isthing)
            by_size[name] = {
                "area": [low, None if high == float("inf") else int(high)],
                **{g: groups[g] for g in ("all", "things", "stuff")},
            }
        return {
            "panoptic_by_size": by_size,
            "class_confusion": _confusion(self.confusion, self.names),
        }


def _confusion(counts: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """The confusion counts as a matrix and as pairs, most frequent first."""
    truth, predicted = np.nonzero(counts)
    order = np.lexsort((predicted, truth, -counts[truth, predicted]))
    pairs = [
        {"truth": names[t], "predicted": names[p], "count": int(counts[t, p])}
        for t, p in zip(truth[order], predicted[order], strict=True)
    ]
    return {"classes": list(names), "matrix": counts.tolist(), "pairs": pairs}
