"""One evaluator for a panoptic model: PQ (panopticapi-exact), mIoU and mask AP, per image or not.

Mask AP is COCO's (pycocotools); with ``cityscapes_ap`` the official Cityscapes instance-level AP
(cityscapesscripts, what the paper reports) is computed beside it.

Feed it image by image (`add`), combine evaluators of several processes (`merge`), then read
`results`. Every image is counted once: adding or merging an image id twice is an error, so a
distributed sampler must not pad the evaluation set with repeated images.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cops.evaluation.cityscapes_ap import CityscapesAP
from cops.evaluation.instance_ap import MaskAP
from cops.evaluation.panoptic_quality import CategoryIndex, PQStats, image_pq_stats
from cops.evaluation.semantic import ConfusionMatrix, semantic_from_panoptic
from cops.files import atomic_write_bytes

PER_IMAGE_COLUMNS = ("image_id", "file_name", "pq", "sq", "rq", "n")


class PanopticEvaluator:
    """Accumulates PQ statistics, a semantic confusion matrix and thing instances over images.

    Categories are given in train-id order: train id k is ``category_ids[k]``, named
    ``names[k]``, a thing class when ``isthing[k]``. With `per_image`, each image's PQ is kept;
    with `cityscapes_ap` (Cityscapes-encoded ground truth) the official Cityscapes AP too.
    """

    def __init__(
        self,
        category_ids: Sequence[int],
        names: Sequence[str],
        isthing: Sequence[bool],
        per_image: bool = False,
        cityscapes_ap: bool = False,
    ) -> None:
        self.categories = CategoryIndex(category_ids)
        self.names = tuple(str(n) for n in names)
        self.isthing = tuple(bool(t) for t in isthing)
        if not len(self.names) == len(self.isthing) == len(self.categories):
            raise ValueError(
                f"{len(self.categories)} category ids, {len(self.names)} names and "
                f"{len(self.isthing)} thing flags: they must match one to one"
            )
        self.per_image = per_image
        self.id_to_train = {int(c): k for k, c in enumerate(self.categories.ids)}
        self.pq = PQStats.zeros(len(self.categories))
        self.confusion = ConfusionMatrix(len(self.categories))
        things = [int(c) for c, t in zip(self.categories.ids, self.isthing, strict=True) if t]
        self.mask_ap = MaskAP(things)
        self.cityscapes_ap = CityscapesAP(things) if cityscapes_ap else None
        self.image_ids: set[Any] = set()
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        image_id: Any,
        file_name: str,
        gt_ids: np.ndarray,
        gt_segments: Sequence[dict[str, Any]],
        gt_semantic: np.ndarray | None,
        pred_ids: np.ndarray,
        pred_segments: Sequence[dict[str, Any]],
        pred_semantic: np.ndarray | None,
    ) -> PQStats:
        """Evaluate one image and return its PQ statistics.

        Panoptic maps hold segment ids (0 = void); semantic maps train ids (255 = ignore in the
        ground truth, void in the prediction). A semantic map given as None is derived from its
        panoptic map (crowd pixels keep their class).
        """
        if image_id in self.image_ids:
            raise ValueError(f"image {image_id!r} ({file_name}) was already evaluated")
        where = f"{image_id!r} ({file_name})"
        stats = image_pq_stats(
            gt_ids, gt_segments, pred_ids, pred_segments, self.categories, image=where
        )
        if gt_semantic is None:
            gt_semantic = semantic_from_panoptic(gt_ids, gt_segments, self.id_to_train)
        if pred_semantic is None:
            pred_semantic = semantic_from_panoptic(pred_ids, pred_segments, self.id_to_train)
        try:
            self.confusion.update(gt_semantic, pred_semantic)
        except ValueError as exc:
            raise ValueError(f"image {where}: semantic maps: {exc}") from exc
        self.mask_ap.add(gt_ids, gt_segments, pred_ids, pred_segments, image_id)
        if self.cityscapes_ap is not None:
            self.cityscapes_ap.add(gt_ids, gt_segments, pred_ids, pred_segments, image_id)
        self.pq += stats
        self.image_ids.add(image_id)
        if self.per_image:
            overall = stats.summary(self.names, self.isthing)["all"]
            self.rows.append({"image_id": image_id, "file_name": file_name, **overall})
        return stats

    def merge(self, other: PanopticEvaluator) -> None:
        """Add another evaluator's images (same categories, no image in both) to this one."""
        same = (
            np.array_equal(other.categories.ids, self.categories.ids)
            and other.names == self.names
            and other.isthing == self.isthing
        )
        if not same or (self.cityscapes_ap is None) != (other.cityscapes_ap is None):
            raise ValueError("only evaluators over the same categories and metrics can be merged")
        shared = self.image_ids & other.image_ids
        if shared:
            raise ValueError(
                f"images {sorted(map(repr, shared))[:5]} were evaluated by both evaluators"
            )
        self.pq += other.pq
        self.confusion += other.confusion
        self.mask_ap += other.mask_ap
        if self.cityscapes_ap is not None and other.cityscapes_ap is not None:
            self.cityscapes_ap += other.cityscapes_ap
        self.image_ids |= other.image_ids
        self.rows.extend(other.rows)

    def results(self) -> dict[str, Any]:
        """All metrics in percent; None where a metric has nothing to average over.

        ``ap``/``ap50``/``ap75``/``ap_per_class`` are COCO mask AP; ``cityscapes_ap`` (when
        requested) holds the official Cityscapes ``ap``, ``ap50`` and ``per_class`` (by name).
        """
        ap = self.mask_ap.results()
        iou = self.confusion.iou()
        name_of = {int(c): n for c, n in zip(self.categories.ids, self.names, strict=True)}
        official = self.cityscapes_ap.results() if self.cityscapes_ap is not None else None
        if official is not None:
            per_class = official["per_class"].items()
            official["per_class"] = {name_of[c]: v for c, v in per_class if c in name_of}
        return {
            "panoptic": self.pq.summary(self.names, self.isthing),
            "miou": self.confusion.miou(),
            "iou_per_class": dict(zip(self.names, iou, strict=True)),
            "ap": ap["ap"] if ap else None,
            "ap50": ap["ap50"] if ap else None,
            "ap75": ap["ap75"] if ap else None,
            "ap_per_class": ({name_of[c]: v for c, v in ap["per_class"].items()} if ap else None),
            "cityscapes_ap": official,
            "images": len(self.image_ids),
        }

    def per_image_rows(self) -> list[dict[str, Any]]:
        """Per-image PQ rows (image_id, file_name, pq, sq, rq, n), sorted by file name."""
        if not self.per_image:
            raise ValueError("per-image PQ was not requested (PanopticEvaluator(per_image=True))")
        return sorted(self.rows, key=lambda row: (str(row["file_name"]), str(row["image_id"])))

    def write_per_image_csv(self, path: str | Path) -> None:
        """Write the per-image rows as CSV atomically; undefined values are empty cells."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=PER_IMAGE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.per_image_rows():
            writer.writerow({k: "" if row[k] is None else row[k] for k in PER_IMAGE_COLUMNS})
        atomic_write_bytes(Path(path), buffer.getvalue().encode("utf-8"))
