"""Evaluate a predictor on a prepared split: predict every image, score it, optionally save it.

Images are read ahead by DataLoader workers while the model and solver run; each prediction is
scored against its ground truth at full resolution by :class:`PanopticEvaluator` and, when a
writer is given, saved in the prepared (COCO panoptic) format. Cityscapes' classes also get the
official Cityscapes AP beside COCO mask AP (with cityscapesscripts installed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cops.evaluation.cityscapes_ap import cityscapes_ap_applies, cityscapes_scripts_missing
from cops.evaluation.evaluator import PanopticEvaluator

if TYPE_CHECKING:
    from cops.datasets.prepared import PanopticDataset
    from cops.evaluation.panoptic_quality import PQStats
    from cops.inference.outputs import PredictionWriter
    from cops.inference.predictor import Predictor
    from cops.inference.result import PanopticPrediction


@dataclass
class EvalRun:
    """What an evaluation produced: metrics, the evaluator (per-image rows) and stage timings."""

    metrics: dict[str, Any]
    evaluator: PanopticEvaluator
    seconds: dict[str, float] = field(default_factory=dict)


def _wants_cityscapes_ap(category_ids: list[int], isthing: list[bool]) -> bool:
    """Whether to add the official Cityscapes AP: Cityscapes' classes and the package present
    (without it, a warning says what to install and only COCO mask AP is reported)."""
    if not cityscapes_ap_applies(category_ids, isthing):
        return False
    missing = cityscapes_scripts_missing()
    if missing is not None:
        logging.getLogger(__name__).warning(missing)
    return missing is None


def _samples(
    dataset: PanopticDataset, count: int, batch_size: int, workers: int
) -> Iterator[list[dict[str, Any]]]:
    """Raw samples of the first `count` images in batches, read ahead by `workers` processes."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(
        Subset(dataset, range(count)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
    )
    yield from loader


def evaluate_split(
    predictor: Predictor,
    dataset: PanopticDataset,
    *,
    batch_size: int = 1,
    max_images: int | None = None,
    per_image: bool = False,
    writer: PredictionWriter | None = None,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    on_image: Callable[[dict[str, Any], PanopticPrediction, PQStats], None] | None = None,
) -> EvalRun:
    """Predict and score the first `max_images` images of `dataset` (all by default).

    `progress(n)` is called after every batch with the number of images it held;
    `on_image(sample, prediction, stats)` after each image is scored (e.g. to collect a report).
    """
    categories = dataset.categories
    evaluator = PanopticEvaluator(
        [int(c) for c in categories.category_ids],
        list(categories.names),
        [bool(t) for t in categories.isthing],
        per_image=per_image,
        cityscapes_ap=_wants_cityscapes_ap(
            [int(c) for c in categories.category_ids], [bool(t) for t in categories.isthing]
        ),
    )
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    seconds = {"cnn": 0.0, "solver": 0.0, "rest": 0.0}
    for batch in _samples(dataset, count, batch_size, workers):
        predictions = predictor.predict([s["image"] for s in batch])
        for sample, pred in zip(batch, predictions, strict=True):
            stats = evaluator.add(
                sample["image_id"],
                sample["file_name"],
                sample["panoptic"],
                sample["segments"],
                None,  # derived from the panoptic map; crowd pixels keep their class
                pred.ids,
                pred.segments,
                pred.semantic,
            )
            if on_image is not None:
                on_image(sample, pred, stats)
            for stage, value in pred.timings.items():
                seconds[stage] = seconds.get(stage, 0.0) + value
            if writer is not None:
                stem = sample["file_name"].rsplit(".", 1)[0]
                writer.write(stem, pred, image_id=sample["image_id"], file_name=sample["file_name"])
        if progress is not None:
            progress(len(batch))
    return EvalRun(evaluator.results(), evaluator, seconds)
