"""Predict image files into a COCO panoptic output folder: what `cops predict` writes.

Files that cannot be read are reported through a callback and skipped; the rest are predicted in
batches and written by :class:`~cops.inference.outputs.PredictionWriter`, whose JSON is written
last, so an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cops.datasets.panoptic_io import read_image
from cops.errors import DatasetError
from cops.inference.image_files import check_apart, find_images
from cops.inference.memory_budget import oversized
from cops.inference.outputs import PredictionWriter
from cops.inference.predictor import Predictor
from cops.inference.result import PanopticPrediction


@dataclass
class ImagesPrediction:
    """How many images were written, and the files that failed with the reason."""

    written: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def image_entries(inputs: Path) -> list[tuple[Path, str, str]]:
    """``(path, output name, file_name)`` of every image under `inputs` (see
    :func:`find_images`); ``file_name`` is the path relative to the folder, or the file's name."""
    inputs = Path(inputs)
    return [
        (path, name, (path.relative_to(inputs) if inputs.is_dir() else Path(path.name)).as_posix())
        for path, name in find_images(inputs)
    ]


def _readable(path: Path, predictor: Predictor) -> np.ndarray:
    """The image at `path`; a `DatasetError` naming it if it cannot be read, or is too large to
    predict within bounded memory (see :func:`~cops.inference.memory_budget.oversized`)."""
    image = read_image(path)
    why = oversized(image.shape, predictor.test_size, predictor.resize_shortest_edge)
    if why is not None:
        raise DatasetError(f"{path}: {why}")
    return image


def predict_files(
    predictor: Predictor,
    files: Sequence[tuple[Path, str, str]],
    out: Path,
    overlay: bool = False,
    batch_size: int = 1,
    *,
    progress: Callable[[int, int], None] | None = None,
    skipped: Callable[[Path, str], None] | None = None,
    kept: list[PanopticPrediction] | None = None,
    source: Path | None = None,
) -> ImagesPrediction:
    """Predict `files` ((path, output name, JSON file_name), see :func:`image_entries`) into
    `out`: what ``cops predict`` writes. With `kept`, each prediction is also appended to it.

    Refused before any prediction: an `out` overlapping the input folder `source`, and output
    files that exist without being earlier predictions (see :meth:`PredictionWriter.claim`).
    """
    if source is not None:
        check_apart(Path(source), Path(out))
    result = ImagesPrediction()
    if progress is not None:
        progress(0, len(files))
    with PredictionWriter(out, predictor.classes, overlay=overlay) as writer:
        writer.claim([name for _, name, _ in files])
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            batch, images = [], []
            for path, name, file_name in chunk:
                try:
                    images.append(_readable(path, predictor))
                    batch.append((name, file_name))
                except DatasetError as exc:
                    result.failed.append((path, str(exc)))
                    if skipped is not None:
                        skipped(path, str(exc))
            predictions = predictor.predict(images) if images else []
            for (name, file_name), image, pred in zip(batch, images, predictions, strict=True):
                writer.write(name, pred, image=image, file_name=file_name)
                result.written += 1
            if kept is not None:
                kept.extend(predictions)
            if progress is not None:
                progress(len(chunk), len(files))
    return result
