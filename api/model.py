"""``cops.load(PATH)``: a trained model as one object that predicts, evaluates and exports.

The object is the CLI's twin: ``cops predict``, ``cops evaluate`` and ``cops export`` are thin
calls of :meth:`Model.predict_folder`, :meth:`Model.evaluation` and :meth:`Model.export`, so
the Python API writes the same files and returns the same numbers.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cops.datasets.class_list import ClassList
from cops.datasets.panoptic_io import read_image
from cops.errors import CopsError
from cops.evaluation.checkpoint_eval import CheckpointEvaluation, evaluate_checkpoint
from cops.files import not_a_file
from cops.inference.export import FORMAT_SUFFIXES, export_checkpoint
from cops.inference.predict_images import ImagesPrediction, image_entries, predict_files
from cops.inference.predictor import Predictor
from cops.inference.result import PanopticPrediction
from cops.inference.video import VideoPrediction, predict_video
from cops.models.checkpoint import Checkpoint
from cops.models.model_card import ModelCard

Image = str | Path | np.ndarray
"""An image for :meth:`Model.predict`: a file (or folder of them) or a uint8 RGB array."""
Progress = Callable[[int, int], None]


def _is_export(path: Path) -> bool:
    """Whether `path` is an export rather than a checkpoint: an ONNX or TorchScript suffix, and
    for ``.pt`` a TorchScript archive (its zip holds ``code/``; a checkpoint's does not)."""
    suffix = path.suffix.lower()
    if suffix == ".onnx" or (suffix in FORMAT_SUFFIXES["torchscript"] and suffix != ".pt"):
        return True
    if suffix != ".pt" or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


class Model:
    """A trained network (checkpoint) or an export, with its model card; see :func:`load`.

    ``checkpoint`` is None for exports, which predict but neither evaluate (no recipe, so no
    dataset) nor export again.
    """

    def __init__(
        self,
        path: Path,
        checkpoint: Checkpoint | None,
        predictor: Predictor | None,
        device: str = "auto",
        backend: str = "auto",
        test_size: tuple[int, int] | None = None,
        precision: str | None = None,
        runtime: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.checkpoint = checkpoint
        self._predictor = predictor
        self.device, self.backend, self.test_size = device, backend, test_size
        self.precision, self.runtime = precision, runtime

    def __repr__(self) -> str:
        kind = "checkpoint" if self.checkpoint is not None else "export"
        return f"Model({str(self.path)!r}, {kind}, {len(self.classes)} classes)"

    @property
    def predictor(self) -> Predictor:
        """The predictor (network on its device and the solver), built on first use."""
        if self._predictor is None:
            assert self.checkpoint is not None
            self._predictor = Predictor.from_checkpoint(
                self.checkpoint,
                self.device,
                self.backend,
                self.test_size,
                self.precision,
                self.runtime,
            )
        return self._predictor

    @property
    def card(self) -> ModelCard:
        """The model card: classes, normalisation, edge distances, sizes, cost scalars."""
        if self._predictor is not None:
            return self._predictor.card
        assert self.checkpoint is not None
        return self.checkpoint.card.with_test_size(self.test_size)

    @property
    def classes(self) -> ClassList:
        """Class names, category ids, thing flags and colours in train-id order."""
        return self.card.classes

    def _needs_checkpoint(self, what: str) -> Checkpoint:
        if self.checkpoint is None:
            raise CopsError(f"{self.path}: {what} needs a checkpoint, not an export")
        return self.checkpoint

    def predict(
        self,
        images: Image | Sequence[Image],
        out: str | Path | None = None,
        *,
        overlay: bool = False,
        batch_size: int = 1,
    ) -> list[PanopticPrediction]:
        """Panoptic predictions of images (arrays, files, or folders searched recursively).

        With `out`, also writes exactly what ``cops predict --out OUT`` writes (PNGs, JSON,
        overlays with `overlay`); then every image must be a file, and one that cannot be read
        is a CopsError after the others are written.
        """
        items = [images] if isinstance(images, str | Path | np.ndarray) else list(images)
        if out is None:
            arrays: list[np.ndarray] = []
            for item in items:
                if isinstance(item, np.ndarray):
                    arrays.append(item)
                else:
                    arrays.extend(read_image(path) for path, _, _ in image_entries(Path(item)))
            return [
                pred
                for start in range(0, len(arrays), batch_size)
                for pred in self.predictor.predict(arrays[start : start + batch_size])
            ]
        if any(isinstance(item, np.ndarray) for item in items):
            raise CopsError("predict(out=...): pass image files, whose names the outputs take")
        entries = [entry for item in items for entry in image_entries(Path(item))]
        names = [name for _, name, _ in entries]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise CopsError(f"predict(out=...): several images would be written as {twice[0]!r}")
        kept: list[PanopticPrediction] = []
        result = predict_files(self.predictor, entries, Path(out), overlay, batch_size, kept=kept)
        if result.failed:
            _, why = result.failed[0]
            raise CopsError(f"{len(result.failed)} image(s) could not be read; first: {why}")
        return kept

    def predict_folder(
        self,
        inputs: Path,
        out: Path,
        *,
        overlay: bool = False,
        batch_size: int = 1,
        progress: Progress | None = None,
        skipped: Callable[[Path, str], None] | None = None,
    ) -> ImagesPrediction:
        """``cops predict``: every image under `inputs` into `out`, unreadable files skipped
        (reported to `skipped`) and counted; predictions are written, not kept in memory."""
        entries = image_entries(Path(inputs))
        return predict_files(
            self.predictor,
            entries,
            Path(out),
            overlay,
            batch_size,
            progress=progress,
            skipped=skipped,
            source=Path(inputs),
        )

    def predict_video(self, source: str | Path, out: str | Path, **options: Any) -> VideoPrediction:
        """``cops predict`` on a video file (or a folder of frames with ``sequence=True``):
        per-frame PNGs with thing ids tracked by overlap, ``panoptic.json``, ``overlay.mp4``
        with ``overlay=True``; `options` are :func:`~cops.inference.video.predict_video`'s."""
        return predict_video(Path(source), Path(out), self.predictor, **options)

    def evaluate(
        self, data: str | Path | None = None, split: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """The metrics ``cops evaluate`` writes to ``metrics.json`` (PQ/SQ/RQ, mIoU, AP, ...).

        `data` and `split` default to the recipe's; `options` are :meth:`evaluation`'s.
        """
        return self.evaluation(data, split, **options).report

    def evaluation(
        self, data: str | Path | None = None, split: str | None = None, **options: Any
    ) -> CheckpointEvaluation:
        """``cops evaluate``: score the split and write ``OUT/metrics.json`` (default
        ``eval-SPLIT`` beside the checkpoint) and the files asked for; what it measured.

        `options` are :func:`~cops.evaluation.checkpoint_eval.evaluate_checkpoint`'s: ``out``,
        ``per_image``, ``save_predictions``, ``max_images``, ``batch_size``, ``workers``,
        ``progress``, ``report``, ``report_images``; device, solver backend and test size are
        this model's.
        """
        if options.get("out") is not None:
            options["out"] = Path(options["out"])
        return evaluate_checkpoint(
            self._needs_checkpoint("evaluate"),
            data=None if data is None else Path(data),
            split=split,
            device=self.device,
            backend=self.backend,
            test_size=self.test_size,
            precision=self.precision,
            runtime=self.runtime,
            **options,
        )

    def export(
        self, path: str | Path | None = None, format: Literal["onnx", "torchscript"] = "onnx"
    ) -> Path:
        """``cops export``: the network as ONNX or TorchScript with its card as JSON beside it
        (default ``model.onnx`` / ``model.pt`` beside the checkpoint); returns the model path."""
        checkpoint = self._needs_checkpoint("export")
        out = None if path is None else Path(path)
        return export_checkpoint(checkpoint, format, out, test_size=self.test_size)


def load(
    path: str | Path,
    *,
    device: str = "auto",
    backend: str = "auto",
    test_size: tuple[int, int] | None = None,
    precision: str | None = None,
    runtime: str | None = None,
    kind: Literal["auto", "checkpoint", "export"] = "auto",
) -> Model:
    """Open a checkpoint (trained or imported) or an export (ONNX / TorchScript + its JSON).

    `device` runs the network (checkpoints), `backend` the solver, `test_size` ([H, W])
    overrides the input size, `precision` (fp32 / bf16) and `runtime` (frozen / compile / eager)
    the recipe's ``eval.precision`` and ``eval.runtime``; `kind` skips the guess from the file
    (``--checkpoint``/``--model``).
    """
    path = Path(path)
    if kind != "export" and not path.is_file():
        raise CopsError(f"{path}: {not_a_file(path)}")
    if kind == "export" or (kind == "auto" and _is_export(path)):
        predictor = Predictor.from_export(path, backend, test_size, precision, runtime)
        return Model(path, None, predictor, device, backend, test_size, precision, runtime)
    checkpoint = Checkpoint.load(path)
    checkpoint.card.with_test_size(test_size)  # a bad card or size fails here, not at predict
    return Model(path, checkpoint, None, device, backend, test_size, precision, runtime)


def load_either(
    checkpoint: Path | None,
    model: Path | None,
    *,
    device: str = "auto",
    backend: str = "auto",
    test_size: tuple[int, int] | None = None,
    precision: str | None = None,
    runtime: str | None = None,
) -> Model:
    """:func:`load` for ``--checkpoint`` / ``--model``: exactly one of them, each as its kind."""
    if (checkpoint is None) == (model is None):
        raise CopsError("give exactly one of --checkpoint (a training checkpoint) or --model")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CopsError(f"--checkpoint {checkpoint}: {not_a_file(checkpoint)}")
    path, kind = (checkpoint, "checkpoint") if checkpoint is not None else (model, "export")
    assert path is not None
    return load(
        path,
        device=device,
        backend=backend,
        test_size=test_size,
        precision=precision,
        runtime=runtime,
        kind=kind,
    )
