"""Evaluate a checkpoint on a prepared split: what `cops evaluate` runs, as one function.

The checkpoint's recipe names the data (``--data`` and ``--split`` override it), its classes
must be the split's, and the results are written to ``OUT/metrics.json`` (plus the per-image CSV
and COCO panoptic predictions on request).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cops.datasets.prepared import PanopticDataset
from cops.datasets.recipe_data import open_split
from cops.device import resolve_device
from cops.errors import CopsError
from cops.evaluation.dataset_eval import evaluate_split
from cops.evaluation.report import provenance, write_report
from cops.evaluation.report_data import ReportCollector
from cops.files import atomic_write_json
from cops.inference.outputs import PredictionWriter
from cops.inference.predictor import Predictor
from cops.models.checkpoint import Checkpoint


@dataclass
class CheckpointEvaluation:
    """What an evaluation measured (``report`` is ``metrics.json``) and where it wrote it."""

    report: dict[str, Any]
    isthing: dict[str, bool]
    images: int
    out: Path
    html: Path | None = None


def _open_matching_split(ckpt: Checkpoint, data: Path | None, split: str) -> PanopticDataset:
    """The split to evaluate, whose categories must be the checkpoint's classes."""
    dataset = open_split(ckpt.recipe, data, split)
    names = list(dataset.categories.names)
    if names != list(ckpt.classes.names):
        raise CopsError(
            f"{dataset.paths.json}: categories ({', '.join(names)}) differ from the classes "
            f"{ckpt.path or 'the checkpoint'} was trained on ({', '.join(ckpt.classes.names)})"
        )
    return dataset


def _predictions_writer(out: Path, ckpt: Checkpoint) -> PredictionWriter:
    """The writer of ``--save-predictions``: OUT/predictions/*.png and OUT/predictions.json."""
    return PredictionWriter(
        out, ckpt.classes, panoptic_dir="predictions", json_name="predictions.json"
    )


def evaluate_checkpoint(
    checkpoint: Path | Checkpoint,
    *,
    data: Path | None = None,
    split: str | None = None,
    out: Path | None = None,
    per_image: bool = False,
    save_predictions: bool = False,
    max_images: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    backend: str = "auto",
    test_size: tuple[int, int] | None = None,
    precision: str | None = None,
    runtime: str | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    report: bool = False,
    report_images: int = 12,
) -> CheckpointEvaluation:
    """Run the CNN and the solver on every image of the split and score the panoptic maps.

    `checkpoint` is a path or a loaded :class:`Checkpoint` (read once either way). `out`
    defaults to ``eval-SPLIT`` beside the checkpoint; `progress(advance, total)` is called
    as images finish. With `report`, ``OUT/report.html`` shows the results with the
    `report_images` lowest-PQ images, and ``metrics.json`` adds PQ by size and class confusions.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    path = Path(ckpt.path or "")
    split = split or ckpt.recipe.eval.split
    dataset = _open_matching_split(ckpt, data, split)
    names = list(dataset.categories.names)
    out = out if out is not None else path.parent / f"eval-{split}"
    predictor = Predictor.from_checkpoint(
        ckpt,
        device=resolve_device(device),
        backend=backend,
        test_size=test_size,
        precision=precision,
        runtime=runtime,
    )
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    writer = _predictions_writer(out, ckpt) if save_predictions else None
    collector = ReportCollector(ckpt.classes.to_dict(), report_images) if report else None
    if progress is not None:
        progress(0, count)
    run = evaluate_split(
        predictor,
        dataset,
        batch_size=batch_size,
        max_images=max_images,
        per_image=per_image,
        writer=writer,
        workers=workers,
        progress=None if progress is None else (lambda n: progress(n, count)),
        on_image=None if collector is None else collector.add,
    )
    if writer is not None:
        writer.close()
    results = {
        **run.metrics,
        "checkpoint": str(path),
        "iteration": ckpt.iteration,
        "split": split,
        "seconds_per_image": {k: v / max(count, 1) for k, v in run.seconds.items()},
        **(collector.summary() if collector is not None else {}),
    }
    atomic_write_json(out / "metrics.json", results)
    if per_image:
        run.evaluator.write_per_image_csv(out / "per_image.csv")
    html = None
    if collector is not None:
        stored = {"recipe": ckpt.recipe_dict, "iteration": ckpt.iteration, "phase": ckpt.phase}
        facts = provenance(path, stored, dataset.paths.root, split, count)
        html = write_report(out, results, collector, facts, path.parent / "metrics.jsonl")
    isthing = dict(zip(names, (bool(t) for t in dataset.categories.isthing), strict=True))
    return CheckpointEvaluation(results, isthing, count, out, html)
