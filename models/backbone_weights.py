"""Backbone weights from any start a user has, checked key for key before anything is loaded.

Sources (``model.backbone_weights`` and ``--weights``): a COPS checkpoint or backbone file (as
``cops import-checkpoint --backbone-only`` writes one), a torchvision ResNet state dict file
(``torch.save(torchvision.models.resnet50().state_dict(), f)``), or a ``torchvision:TAG`` name
resolved through torchvision's weights API. Files in the original's (detectron2's) backbone names,
as earlier ``cops`` versions wrote them, are renamed on the way in.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from cops.models.backbone import (
    MULTI_GRID,
    BackboneInitWarning,
    ResNetBackbone,
    WeightsError,
    from_detectron2_names,
)
from cops.models.torchvision_weights import (
    from_torchvision_layout,
    is_torchvision_layout,
    is_torchvision_name,
    load_named_weights,
)

__all__ = ["build_backbone", "load_backbone_weights", "stem_dependent", "stem_of"]

log = logging.getLogger(__name__)

_STEM_INPUT = ("stem.", "layer1.0.conv1.", "layer1.0.downsample.")


def stem_dependent(key: str) -> bool:
    """Whether a backbone tensor depends on the stem: the stem's own, and layer1's first block's
    input convs (which read 128 channels after the DeepLab stem, 64 after torchvision's)."""
    return key.startswith(_STEM_INPUT)


def stem_of(state: Mapping[str, Tensor]) -> str | None:
    """The stem a backbone state dict (our names) was made for, or None when it has no stem."""
    if "stem.conv3.weight" in state:
        return "deeplab"
    if "stem.conv1.weight" in state:
        return "torchvision"
    return None


def _check_fit(
    module: nn.Module, state: Mapping[str, Tensor], source: str, what: str, skip: tuple[str, ...]
) -> None:
    """Fail with a message naming ``source`` unless ``state`` fits ``module`` key for key.

    ``num_batches_tracked`` counters (frozen BatchNorm drops them) and keys starting with ``skip``
    are optional.
    """
    own = module.state_dict()

    def optional(key: str) -> bool:
        return key.endswith("num_batches_tracked") or key.startswith(skip)

    missing = sorted(k for k in own if k not in state and not optional(k))
    unexpected = sorted(k for k in state if k not in own and not optional(k))
    wrong = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    )
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" … (+{len(keys) - 5})" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsError(f"{source}: weights do not fit {what} ({'; '.join(parts)})")


def _read_file(path: Path) -> dict[str, Tensor]:
    """The tensors of a weights file (a checkpoint's ``model`` unwrapped), read weights-only."""
    if not path.is_file():
        raise WeightsError(f"{path}: backbone weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read as torch weights ({exc})") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(
            f"{path}: expected a state dict of tensors or a checkpoint with a 'model' entry"
        )
    return dict(obj)


def read_backbone_state(source: str | Path, backbone: str) -> dict[str, Tensor]:
    """A source's backbone tensors in :class:`ResNetBackbone`'s names (classifier dropped)."""
    if is_torchvision_name(source):
        state = load_named_weights(str(source), backbone)
    else:
        state = _read_file(Path(source))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    if is_torchvision_layout(state):
        state, dropped = from_torchvision_layout(state)
        if dropped:
            log.info("%s: dropped the ImageNet classifier (%s)", source, ", ".join(dropped))
    return from_detectron2_names(state)


def _stem_mismatch(source: str | Path, theirs: str, backbone: ResNetBackbone) -> WeightsError:
    """The error for weights of another stem, naming the two options that resolve it."""
    ours = backbone.stem_kind
    return WeightsError(
        f"{source}: these weights are for the {theirs} stem but model.stem is {ours}; set "
        f"model.stem={theirs}, or model.reinit_stem=true to start the {ours} stem from random "
        "weights and load the rest"
    )


def load_backbone_weights(backbone: ResNetBackbone, source: str | Path) -> None:
    """Load backbone weights from a file or ``torchvision:TAG`` name (see the module docstring).

    Missing, unexpected or mis-shaped tensors raise :class:`WeightsError` naming the source, so a
    wrong file never silently leaves random weights. Weights made for the other stem are refused
    naming ``model.stem``, unless the backbone was built with ``reinit_stem``: then the stem and
    layer1's first input convs keep their initial values and everything else loads.
    """
    stem_fits = backbone.stem_kind == "torchvision" or backbone.reinit_stem
    if is_torchvision_name(source) and not stem_fits:
        raise _stem_mismatch(source, "torchvision", backbone)  # before any download
    state = read_backbone_state(source, backbone.name)
    theirs = stem_of(state)
    skip: tuple[str, ...] = ()
    if theirs is not None and theirs != backbone.stem_kind:
        if not backbone.reinit_stem:
            raise _stem_mismatch(source, theirs, backbone)
        state = {k: v for k, v in state.items() if not stem_dependent(k)}
        skip = _STEM_INPUT
        log.warning(
            "%s: weights for the %s stem; the %s stem and layer1.0's input convs start anew",
            source,
            theirs,
            backbone.stem_kind,
        )
    _check_fit(backbone, state, str(source), f"backbone {backbone.name}", skip)
    backbone.load_state_dict(state, strict=False)


def build_backbone(
    name: str = "resnet50",
    output_stride: int = 16,
    weights_path: str | Path | None = None,
    *,
    stem: str = "deeplab",
    multi_grid: Sequence[int] = MULTI_GRID,
    dilation_style: str = "deeplab",
    reinit_stem: bool = False,
) -> ResNetBackbone:
    """The backbone, from ``weights_path`` when given, else random with a BackboneInitWarning."""
    backbone = ResNetBackbone(name, output_stride, stem, multi_grid, dilation_style, reinit_stem)
    if weights_path is not None:
        load_backbone_weights(backbone, weights_path)
    else:
        warnings.warn(
            f"backbone {name} starts from random weights (no model.backbone_weights; "
            "`model.backbone_weights=torchvision:IMAGENET1K_V2` with model.stem=torchvision, or "
            "`cops import-checkpoint R-52.pkl --backbone-only`, give ImageNet ones)",
            BackboneInitWarning,
            stacklevel=2,
        )
    return backbone
