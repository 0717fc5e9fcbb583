"""Read the original COPS release files safely and rename their weights to our network's.

Two inputs: a detectron2 training checkpoint (``.pth``: a dict whose ``model`` entry is the state
dict, beside optimizer/scheduler state) and a DeepLab ImageNet backbone (``.pkl``: a pickled dict
of numpy arrays). Neither may run code while being read: ``.pth`` files load with
``torch.load(weights_only=True)`` and an allow-list of the numpy globals such files hold;
``.pkl`` files go through an unpickler that builds numpy arrays and plain containers only. Any
other global is refused with an error naming it, before anything from the file runs.

Every key of the input is accounted for: it is renamed to a key of
:class:`~cops.models.network.SemanticBoundaryNet`, or it is one of the few known non-network
entries (the pixel normalisation, a training statistic of the PQ loss, an ImageNet classifier).
Anything else, and any network key left without a value, fails the conversion with the list.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cops.models.backbone import WeightsError, detectron2_backbone_key
from cops.models.weights_only import load_weights_only, refusal

__all__ = [
    "ConvertedWeights",
    "convert_backbone",
    "convert_original",
    "read_original_file",
]

# (pattern on the original key, replacement): applied in order, first match wins.
_DECODER_RULES = [
    (r"res5\.project_conv\.convs\.4\.1\.", "aspp.pooling_conv."),
    (r"res5\.project_conv\.convs\.(\d+)\.", r"aspp.branches.\1."),
    (r"res5\.project_conv\.project\.", "aspp.project."),
    (r"res(\d)\.project_conv\.", r"project_res\1."),
    (r"res(\d)\.fuse_conv\.", r"fuse_res\1."),
]
_HEAD_RULES = [
    (r"sem_seg_head\.decoder\.", "semantic_decoder."),
    (r"AFF_EMBED_head\.decoder\.", "boundary_decoder."),
    (r"sem_seg_head\.head\.", "semantic_head.convs."),
    (r"sem_seg_head\.predictor\.", "semantic_head.classifier."),
    (r"AFF_EMBED_head\.affinity_head\.", "boundary_head.trunk."),
    (r"AFF_EMBED_head\.classifiers\.", "boundary_head.classifiers."),
]
_COST_KEY = re.compile(r"amwc_layer\.(seg_cost_weights|edge_costs_weights)\.(\d+)$")
NORMALISATION_KEYS = ("pixel_mean", "pixel_std")
DROPPED = {
    "amwc_layer.training_per_class_areas": "per-class segment areas seen in training (a "
    "statistic of the original's PQ loss, not a network weight)",
}
_CLASSIFIER = re.compile(r"^(stem\.)?(fc|linear)\.")  # ImageNet classifier of a backbone file

# Globals that numpy arrays and scalars need to unpickle, and nothing else.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_PLAIN_GLOBALS = {
    ("collections", "OrderedDict"),
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1"): a
    # string codec, which cannot reach anything else.
    ("_codecs", "encode"),
}


class RefusedFileError(WeightsError):
    """The file's pickle needs a global outside the allow-list; nothing of it was run."""


@dataclass
class ConvertedWeights:
    """Our network's state dict from an original checkpoint, and what else the file held."""

    state: dict[str, Tensor]
    normalisation: dict[str, list[float]] | None = None
    """``mean`` and ``std`` in [0, 1] units (the original stores 0–255 values)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Keys of the file not carried over, with the reason."""


def _allowed_numpy_classes() -> list[Any]:
    """numpy globals torch's weights-only unpickler must accept for numpy scalars and dtypes."""
    classes: list[Any] = [np.dtype, np.ndarray]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            imported = __import__(module, fromlist=["scalar", "_reconstruct"])
        except ImportError:
            continue
        classes += [imported.scalar, imported._reconstruct]
        break
    classes += [type(np.dtype(t)) for t in ("f4", "f8", "i4", "i8", "u1", "?")]
    return classes


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, numbers, strings and containers, nothing more."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve allow-listed globals only; anything else is refused by name."""
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def _read_pickle(path: Path) -> Any:
    """A ``.pkl`` of numpy arrays (detectron2/Caffe2 style), refusing any other global."""
    data = path.read_bytes()
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        match = re.search(r"global '([^']+)'", str(exc))
        if match:
            raise RefusedFileError(refusal(path, match.group(1))) from None
        raise WeightsError(f"{path}: cannot read as a pickle ({exc})") from exc
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read as a pickle ({exc})") from exc


def _read_torch(path: Path) -> Any:
    """A torch file loaded weights-only, with numpy scalars/arrays allowed as well."""
    what = "a released checkpoint (a detectron2/DeepLab pickle of arrays needs the suffix .pkl)"
    return load_weights_only(
        path, what, WeightsError, safe_globals=_allowed_numpy_classes(), refused=RefusedFileError
    )


def read_original_file(path: str | Path) -> dict[str, Tensor]:
    """The state dict of an original ``.pth`` checkpoint or ``.pkl`` backbone, as float tensors.

    The suffix picks the reader (``.pkl``: restricted unpickler; anything else: torch
    weights-only). A checkpoint's ``model`` entry (or a Caffe2 ``blobs`` entry) is unwrapped; a
    ``module.`` prefix left by DistributedDataParallel is dropped.
    """
    path = Path(path)
    if not path.is_file():
        problem = "a folder, not a file" if path.is_dir() else "file not found"
        raise WeightsError(f"{path}: {problem}")
    obj = _read_pickle(path) if path.suffix.lower() == ".pkl" else _read_torch(path)
    if isinstance(obj, Mapping):
        for key in ("model", "blobs"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: expected a state dict or a dict with a 'model' entry")
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if isinstance(value, np.ndarray | np.generic):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, Tensor):
            raise WeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array")
        state[str(key).removeprefix("module.")] = value
    return state


def _rename(key: str) -> str | None:
    """Our name of an original network key, or None when no rule covers it."""
    if key.startswith("backbone."):
        renamed = detectron2_backbone_key(key.removeprefix("backbone."))
        return None if renamed is None else f"backbone.{renamed}"
    for pattern, replacement in _HEAD_RULES:
        renamed, count = re.subn("^" + pattern, replacement, key)
        if count:
            break
    else:
        return None
    if renamed.startswith(("semantic_decoder.", "boundary_decoder.")):
        prefix, rest = renamed.split(".", 1)
        for pattern, replacement in _DECODER_RULES:
            rest, count = re.subn("^" + pattern, replacement, rest)
            if count:
                return f"{prefix}.{rest}"
        return None
    return renamed


def _as_float(value: Tensor) -> Tensor:
    """Floating tensors as float32 (``.pkl`` files often hold float64); others unchanged."""
    return value.to(torch.float32) if value.is_floating_point() else value


def _check_against(
    state: Mapping[str, Tensor],
    own: Mapping[str, Tensor],
    unmapped: list[str],
    source: str,
    what: str,
) -> None:
    """Fail naming every unmapped, missing or mis-shaped key (counters are optional)."""
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(
        f"{k} (file {tuple(state[k].shape)}, {what} {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    for label, keys in (
        ("unmapped keys of the file", sorted(unmapped)),
        (f"keys of the file that {what} lacks", unexpected),
        (f"keys of {what} the file lacks", missing),
        ("shape mismatches", wrong),
    ):
        if keys:
            problems.append(f"{label}: {', '.join(keys)}")
    if problems:
        raise WeightsError(f"{source}: cannot convert to {what}; " + "; ".join(problems))


def _cost_scalars(
    entries: Mapping[int, Tensor], seg: Mapping[int, Tensor], distances: int, source: str
) -> dict[str, Tensor]:
    """``costs.{a,b,alpha,beta}`` from the original's per-scalar parameter lists."""
    if sorted(seg) != [0, 1] or sorted(entries) != list(range(2 * distances)):
        raise WeightsError(
            f"{source}: expected amwc_layer.seg_cost_weights.0-1 and "
            f"edge_costs_weights.0-{2 * distances - 1} for {distances} edge distances, got "
            f"seg {sorted(seg)} and edge {sorted(entries)}"
        )
    edge = [entries[i].reshape(()) for i in range(2 * distances)]
    return {
        "costs.a": seg[0].reshape(()).float(),
        "costs.b": seg[1].reshape(()).float(),
        "costs.alpha": torch.stack(edge[0::2]).float(),
        "costs.beta": torch.stack(edge[1::2]).float(),
    }


def convert_original(
    original: Mapping[str, Tensor], own: Mapping[str, Tensor], source: str
) -> ConvertedWeights:
    """Rename an original COPS state dict to ``own``'s keys (our network's ``state_dict()``).

    The edge-cost multipliers are carried over as stored: our cost layer applies ``abs()`` to
    them, as the original does. Fails listing every key that does not map or fit.
    """
    state: dict[str, Tensor] = {}
    unmapped: list[str] = []
    seg: dict[int, Tensor] = {}
    edge: dict[int, Tensor] = {}
    dropped: dict[str, str] = {}
    normalisation: dict[str, list[float]] = {}
    for key, value in original.items():
        cost = _COST_KEY.match(key)
        if cost:
            (seg if cost.group(1) == "seg_cost_weights" else edge)[int(cost.group(2))] = value
        elif key in NORMALISATION_KEYS:
            normalisation[key.removeprefix("pixel_")] = [
                v / 255.0 for v in value.flatten().tolist()
            ]
        elif key in DROPPED:
            dropped[key] = DROPPED[key]
        else:
            renamed = _rename(key)
            if renamed is None:
                unmapped.append(key)
            else:
                state[renamed] = _as_float(value)
    distances = int(own["costs.alpha"].shape[0]) if "costs.alpha" in own else 0
    if seg or edge:
        state.update(_cost_scalars(edge, seg, distances, source))
    _check_against(state, own, unmapped, source, "the network")
    norm = normalisation if set(normalisation) == {"mean", "std"} else None
    return ConvertedWeights(state, norm, dropped)


def convert_backbone(
    original: Mapping[str, Tensor], own: Mapping[str, Tensor], source: str
) -> ConvertedWeights:
    """An ImageNet backbone file in detectron2's names (``stem.*``, ``res2.*`` … keys, optionally
    under ``backbone.``) as a state dict of :class:`~cops.models.backbone.ResNetBackbone` with
    the DeepLab stem (keys without prefix).

    The ImageNet classifier (``fc.*``/``linear.*``) is dropped and reported; any other key that is
    not a backbone key fails the conversion, as does a backbone key the file lacks.
    """
    state: dict[str, Tensor] = {}
    dropped: dict[str, str] = {}
    unmapped: list[str] = []
    for key, value in original.items():
        name = key.removeprefix("backbone.")
        if _CLASSIFIER.match(name):
            dropped[key] = "the ImageNet classifier (not part of the segmentation network)"
        elif (renamed := detectron2_backbone_key(name)) is not None:
            state[renamed] = _as_float(value)
        else:
            unmapped.append(key)
    _check_against(state, own, unmapped, source, "the backbone")
    return ConvertedWeights(state, None, dropped)
