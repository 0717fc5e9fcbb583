"""Export the cost network to ONNX or TorchScript with its metadata JSON, and load exports back.

An export is two files: the model (``model.onnx`` or ``model.pt``) and its model card
(:mod:`cops.models.model_card`) with the model's hash beside it as JSON (``model.onnx.json``,
``model.pt.json``: one per model file, see :mod:`cops.inference.export_files`). Both are written
in full under temporary names before either replaces an older file; then the metadata is renamed
into place and the model last, so a failed export (disk full) leaves the previous export as it
was. An export replaces only an earlier export, never its checkpoint or another file. The network
maps a normalised float32 batch ``image [B, 3, H, W]`` (any batch size; H and W any multiples of
``size_divisibility``) to ``(node_costs, edge_costs, boundary_prob)`` at stride 4.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cops.errors import CopsError
from cops.files import atomic_write_files, not_a_file
from cops.inference.export_files import (
    check_hash,
    check_replaceable,
    is_training_checkpoint,
    metadata_bytes,
    metadata_path,
    read_metadata,
)
from cops.inference.onnx_runtime import import_onnxruntime
from cops.models import CostMapNet
from cops.models.checkpoint import Checkpoint
from cops.models.model_card import OUTPUTS, ModelCard

__all__ = [
    "FORMAT_SUFFIXES",
    "ONNX_OPSET",
    "ExportedCostMapNet",
    "export_checkpoint",
    "export_model",
    "load_export",
    "metadata_path",
]

ONNX_OPSET = 18
"""ONNX opset of exports: the dynamo exporter's native opset (onnxruntime ≥ 1.17 runs it)."""
INPUT_NAME = "image"
FORMAT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".ts", ".torchscript")}
"""Model file suffixes per export format; :func:`load_export` picks the runtime by suffix."""
_ONNX_HINT = 'ONNX export and inference need the onnx extra: pip install "cops[onnx]"'

Runner = Callable[[torch.Tensor], Sequence[Any]]


def _format_of(path: Path) -> str:
    """The export format a model file's suffix stands for; unknown suffixes are a CopsError."""
    suffix = path.suffix.lower()
    for fmt, suffixes in FORMAT_SUFFIXES.items():
        if suffix in suffixes:
            return fmt
    known = ", ".join(s for suffixes in FORMAT_SUFFIXES.values() for s in suffixes)
    raise CopsError(f"{path}: unknown model file suffix '{path.suffix}' (expected one of {known})")


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence TorchScript's deprecation FutureWarnings: TorchScript is the format asked for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit.*deprecated", FutureWarning)
        yield


@contextlib.contextmanager
def _quiet_onnx_logs() -> Iterator[None]:
    """Keep the exporter's optimiser chatter (INFO lines by the hundred) out of the CLI's log."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _check_net(net: CostMapNet, card: ModelCard) -> None:
    """The network and the card must describe the same classes and edge distances."""
    inner = net.net
    classes = len(card.classes)
    if inner.num_classes != classes:
        raise ValueError(f"the network has {inner.num_classes} classes, the model card {classes}")
    if list(inner.edge_distances) != list(card.edge_distances):
        raise ValueError(
            f"the network's edge distances {list(inner.edge_distances)} differ from the "
            f"model card's {card.edge_distances}"
        )


def _onnx_bytes(net: CostMapNet, example: torch.Tensor, min_side: int) -> bytes:
    """Serialised ONNX model with dynamic batch, height and width (dynamo exporter)."""
    try:
        import onnx  # noqa: F401  (the exporter needs both packages)
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise CopsError(f"{_ONNX_HINT} ({exc})") from exc
    dim = torch.export.Dim
    shapes = {
        INPUT_NAME: {0: dim("batch"), 2: dim("height", min=min_side), 3: dim("width", min=min_side)}
    }
    with _quiet_onnx_logs():
        program = torch.onnx.export(
            net,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUTS),
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            dynamic_shapes=shapes,
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def _torchscript_bytes(net: CostMapNet) -> bytes:
    """Serialised ``torch.jit.script`` module (scripted, so every input size takes its path)."""
    buffer = io.BytesIO()
    with _quiet_jit():
        torch.jit.save(torch.jit.script(net), buffer)
    return buffer.getvalue()


def export_model(
    net: CostMapNet,
    card: ModelCard,
    out: Path,
    fmt: Literal["onnx", "torchscript"],
    example_size: tuple[int, int] | None = None,
) -> Path:
    """Write `net` (eval mode, CPU, float32) as `fmt` to `out` and its `card` to ``OUT.json``.

    `out` must carry a suffix of the format (``.onnx``; ``.pt``, ``.ts`` or ``.torchscript``).
    ``example_size`` is the traced input's H×W (multiples of ``size_divisibility``; default: the
    training crop the ASPP pooling window was made for, see :func:`_pool_crop`). The export
    accepts any batch size and any H×W (an ONNX export with a fixed pooling window: any H×W at
    least that crop, recorded as ``min_input_size``). The caller's network is not modified.
    Returns `out`.
    """
    if fmt not in FORMAT_SUFFIXES:
        raise ValueError(f"fmt: expected one of {', '.join(FORMAT_SUFFIXES)}, got {fmt!r}")
    out = Path(out)
    if out.suffix.lower() not in FORMAT_SUFFIXES[fmt]:
        raise CopsError(
            f"{out}: a {fmt} export needs the suffix {' or '.join(FORMAT_SUFFIXES[fmt])}"
        )
    if not isinstance(card, ModelCard):
        raise TypeError(f"card: expected a ModelCard, got {type(card).__name__}")
    _check_net(net, card)
    check_replaceable(out, None)
    div = card.size_divisibility
    crop = _pool_crop(net, div)
    height, width = (int(s) for s in (example_size or crop or (64, 128)))
    if min(height, width) < div or height % div or width % div:
        raise ValueError(f"example_size must be positive multiples of {div}, got {example_size}")
    model = copy.deepcopy(net).to(device="cpu", dtype=torch.float32).eval()
    if fmt == "onnx":
        # The traced graph keeps the pooling window of the example size; below the crop the
        # eager network shrinks it, which a fixed ONNX graph cannot, so smaller inputs are refused.
        if crop is not None:
            card = dataclasses.replace(card, min_input_size=[height, width])
        data = _onnx_bytes(model, torch.zeros(2, 3, height, width), div)
    else:
        data = _torchscript_bytes(model)
    # Both complete under temporary names first; the model, which `load_export` opens, goes last.
    atomic_write_files([(metadata_path(out), metadata_bytes(card, data)), (out, data)])
    return out


def _pool_crop(net: torch.nn.Module, div: int) -> tuple[int, int] | None:
    """The input size at which the network's fixed ASPP pooling windows are fully used (the
    training crop: window × output stride, rounded up to `div`); None if every pool is global."""
    from cops.models.decoder import ASPP

    stride = max(
        (m.output_stride for m in net.modules() if hasattr(m, "output_stride")), default=16
    )
    windows = [m.pool_size for m in net.modules() if isinstance(m, ASPP) and min(m.pool_size) > 0]
    if not windows:
        return None
    height = max(w[0] for w in windows) * stride
    width = max(w[1] for w in windows) * stride
    return -(-height // div) * div, -(-width // div) * div


class ExportedCostMapNet:
    """A loaded export: call it like a :class:`cops.models.CostMapNet`, read its ``card``.

    ``__call__(image [B, 3, H, W] float32)`` returns ``(node_costs, edge_costs, boundary_prob)``
    as CPU float32 tensors whatever runtime and device run the network.
    """

    def __init__(self, path: Path, card: ModelCard, fmt: str, device: str, runner: Runner) -> None:
        self.path = Path(path)
        self.card = card
        self.format = fmt
        self.device = device
        self._runner = runner

    def __repr__(self) -> str:
        return f"ExportedCostMapNet({str(self.path)!r}, {self.format}, {self.device})"

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Costs and boundary probabilities of a normalised image batch ``[B, 3, H, W]``."""
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image)
            raise ValueError(f"image: expected a float tensor [B, 3, H, W], got {shape}")
        least = self.card.min_input_size
        if least is not None and (image.shape[2] < least[0] or image.shape[3] < least[1]):
            raise CopsError(
                f"{self.path}: this ONNX export takes inputs of at least {least[0]}x{least[1]} "
                f"(its ASPP pooling window was fixed at export), got "
                f"{image.shape[2]}x{image.shape[3]}; use --test-size, a TorchScript export or "
                "the checkpoint"
            )
        outputs = self._runner(image.detach().to(dtype=torch.float32))
        node, edge, boundary = (
            torch.as_tensor(o).to(device="cpu", dtype=torch.float32) for o in outputs
        )
        return node, edge, boundary


def _onnx_runner(path: Path, device: str) -> tuple[Runner, str]:
    """An onnxruntime session over `path` (CUDA provider when asked for and present)."""
    try:
        ort = import_onnxruntime()
    except ImportError as exc:
        raise CopsError(f"{path}: {_ONNX_HINT} ({exc})") from exc
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "cuda":
        raise CopsError(f"{path}: device 'cuda' asked for, but onnxruntime has no CUDA provider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        raise CopsError(f"{path}: cannot load as an ONNX model ({exc})") from exc
    names = [o.name for o in session.get_outputs()]
    if names != list(OUTPUTS):
        raise CopsError(f"{path}: ONNX outputs {names}, expected {list(OUTPUTS)}")
    input_name = session.get_inputs()[0].name

    def run(image: torch.Tensor) -> list[np.ndarray]:
        feed = {input_name: np.ascontiguousarray(image.cpu().numpy())}
        return session.run(list(OUTPUTS), feed)

    used = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    return run, used


def _torchscript_runner(path: Path, device: str) -> tuple[Runner, str]:
    """A ``torch.jit.load``-ed module on `device` ("auto": CUDA when torch sees a GPU)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        with _quiet_jit():
            module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:
        raise CopsError(f"{path}: cannot load as a TorchScript model ({exc})") from exc

    def run(image: torch.Tensor) -> Sequence[torch.Tensor]:
        with torch.inference_mode():
            outputs = module(image.to(device))
        if not isinstance(outputs, tuple | list) or len(outputs) != len(OUTPUTS):
            raise CopsError(f"{path}: the TorchScript model must return {', '.join(OUTPUTS)}")
        return outputs

    return run, device


def load_export(path: Path, device: str = "auto") -> ExportedCostMapNet:
    """Load an export by suffix (ONNX via onnxruntime, TorchScript via torch.jit) and its metadata.

    ``device``: "cpu", "cuda", or "auto" (ONNX: the CUDA provider when onnxruntime has one;
    TorchScript: CUDA when torch sees a GPU). Outputs come back on the CPU either way.
    """
    path = Path(path)
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected auto, cpu or cuda, got {device!r}")
    if is_training_checkpoint(path):
        raise CopsError(
            f"{path}: a training checkpoint, not an export of `cops export`; pass it with "
            f"--checkpoint {path}"
        )
    fmt = _format_of(path)
    if not path.is_file():
        raise CopsError(f"{path}: exported model not found ({not_a_file(path)})")
    card, digest, meta_file = read_metadata(path)
    if fmt == "onnx":
        runner, used = _onnx_runner(path, device)
    else:
        runner, used = _torchscript_runner(path, device)
    check_hash(path, digest, meta_file)
    return ExportedCostMapNet(path, card, fmt, used, runner)


def export_checkpoint(
    checkpoint: Path | Checkpoint,
    fmt: Literal["onnx", "torchscript"] = "onnx",
    out: Path | None = None,
    test_size: tuple[int, int] | None = None,
) -> Path:
    """Export a checkpoint's network (a path or a loaded :class:`Checkpoint`); the model path.

    `out` defaults to ``model.onnx`` / ``model.pt`` beside the checkpoint; `test_size` is stored
    in the model card as the input size predictions resize to.
    """
    if fmt not in FORMAT_SUFFIXES:
        raise CopsError(f"--format '{fmt}': expected one of {', '.join(FORMAT_SUFFIXES)}")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    if out is None:
        out = Path(ckpt.path or ".").parent / f"model{FORMAT_SUFFIXES[fmt][0]}"
    check_replaceable(Path(out), ckpt.path)
    return export_model(ckpt.cost_net(), ckpt.card.with_test_size(test_size), out, fmt)
