"""Predict a file or folder of images into a COCO panoptic output folder: what `cops predict` runs.

Files that cannot be read are reported through a callback and skipped; the rest are predicted in
batches and written by :class:`~cops.inference.outputs.PredictionWriter`, whose JSON is written
last, so an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cops.datasets.panoptic_io import read_image
from cops.device import resolve_device
from cops.errors import CopsError, DatasetError
from cops.inference.image_files import check_apart, find_images
from cops.inference.outputs import PredictionWriter
from cops.inference.predictor import Predictor


@dataclass
class ImagesPrediction:
    """How many images were written, and the files that failed with the reason."""

    written: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _load_predictor(
    checkpoint: Path | None,
    model: Path | None,
    device: str = "auto",
    backend: str = "auto",
    test_size: tuple[int, int] | None = None,
) -> Predictor:
    """The predictor of a training checkpoint, or of an export from `cops export` if `model`."""
    if model is not None:
        return Predictor.from_export(model, backend=backend, test_size=test_size)
    if not Path(checkpoint).is_file():
        raise CopsError(f"--checkpoint {checkpoint}: file not found")
    return Predictor.from_checkpoint(
        checkpoint, device=resolve_device(device), backend=backend, test_size=test_size
    )


def predict_images(
    inputs: Path,
    out: Path,
    *,
    checkpoint: Path | None = None,
    model: Path | None = None,
    device: str = "auto",
    backend: str = "auto",
    test_size: tuple[int, int] | None = None,
    overlay: bool = False,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    skipped: Callable[[Path, str], None] | None = None,
) -> ImagesPrediction:
    """Predict every image under `inputs` into `out` (PNGs, JSON, overlays with `overlay`).

    `progress(advance, total)` follows the files; `skipped(path, reason)` hears of each file
    that could not be read. Output names mirror the input tree.
    """
    if (checkpoint is None) == (model is None):  # the options first, then the files
        raise CopsError("give exactly one of --checkpoint (a training checkpoint) or --model")
    check_apart(Path(inputs), Path(out))
    files = find_images(inputs)
    predictor = _load_predictor(checkpoint, model, device, backend, test_size)
    result = ImagesPrediction()
    if progress is not None:
        progress(0, len(files))
    with PredictionWriter(out, predictor.metadata["classes"], overlay=overlay) as writer:
        writer.claim([name for _, name in files])
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            batch, images = [], []
            for path, name in chunk:
                try:
                    images.append(read_image(path))
                    batch.append((path, name))
                except DatasetError as exc:
                    result.failed.append((path, str(exc)))
                    if skipped is not None:
                        skipped(path, str(exc))
            predictions = predictor.predict(images) if images else []
            for (path, name), image, pred in zip(batch, images, predictions, strict=True):
                source = path.relative_to(inputs) if inputs.is_dir() else Path(path.name)
                writer.write(name, pred, image=image, file_name=source.as_posix())
                result.written += 1
            if progress is not None:
                progress(len(chunk), len(files))
    return result
