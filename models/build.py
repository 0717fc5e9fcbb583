"""Checkpoint loading and model building: what inference, evaluation and training all need.

A COPS checkpoint is a dict of tensors and plain containers only (the recipe as a dict, RNG states
as tensors, class metadata as lists), so it loads with ``torch.load(weights_only=True)``: opening
a checkpoint never runs code from the file. Writing checkpoints is the training package's job.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cops.errors import CopsError
from cops.models.backbone import BackboneInitWarning, WeightsError, load_backbone_weights
from cops.models.network import SemanticBoundaryNet

if TYPE_CHECKING:
    from cops.recipes.schema import ModelConfig

log = logging.getLogger(__name__)

FORMAT = "cops-checkpoint"
VERSION = 1


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a COPS checkpoint (rather than a bare state dict)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """Load a COPS checkpoint onto the CPU with ``weights_only=True``; errors name the file.

    ``mmap=True`` maps tensors lazily: cheap when only the recipe or iteration is needed.
    """
    path = Path(path)
    if not path.is_file():
        raise CopsError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise CopsError(f"{path}: cannot read as a checkpoint ({exc})") from exc
    if not is_checkpoint(obj):
        raise CopsError(f"{path}: not a COPS checkpoint (no '{FORMAT}' format marker)")
    if obj.get("version", 0) > VERSION:
        raise CopsError(
            f"{path}: checkpoint format version {obj['version']} is newer than this cops "
            f"({VERSION}); upgrade cops to read it"
        )
    return obj


def load_model_weights(model: SemanticBoundaryNet, path: Path) -> str:
    """Initialise `model` from a COPS checkpoint or a backbone state dict (load_backbone_weights).

    From a checkpoint, every tensor whose name and shape fit is loaded (heads of another class
    count keep their initial values); the backbone must fit completely. Returns what was loaded.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read as torch weights ({exc})") from exc
    if not is_checkpoint(obj):
        load_backbone_weights(model.backbone, path)
        return f"backbone weights from {path}"
    own = model.state_dict()
    fitting = {k: v for k, v in obj["model"].items() if k in own and own[k].shape == v.shape}
    left = sorted(k for k in own if k not in fitting and not k.endswith("num_batches_tracked"))
    broken = [k for k in left if k.startswith("backbone.")]
    if broken:
        more = f" (+{len(broken) - 3} more)" if len(broken) > 3 else ""
        raise WeightsError(
            f"{path}: the checkpoint's backbone does not fit model backbone "
            f"{model.backbone.name}: {', '.join(broken[:3])}{more}"
        )
    model.load_state_dict(fitting, strict=False)
    note = f"; kept initial values for {', '.join(left)}" if left else ""
    return f"{len(fitting)} tensors from {path} (iteration {obj.get('iteration')}){note}"


def build_model(
    model_cfg: ModelConfig, num_classes: int, weights: Path | None = None, restoring: bool = False
) -> SemanticBoundaryNet:
    """The recipe's network, initialised from `weights` when given.

    With `weights`, or when a checkpoint will be restored, nothing is downloaded and no
    random-initialisation warning is raised: those weights replace the initial ones anyway.
    """
    if weights is None and not restoring:
        return SemanticBoundaryNet.from_config(model_cfg, num_classes)
    plain = dataclasses.replace(model_cfg, backbone_weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        model = SemanticBoundaryNet.from_config(plain, num_classes)
    if weights is not None:
        log.info("initialised %s", load_model_weights(model, weights))
    return model
