"""torchvision's ImageNet ResNet weights as a backbone start: names, downloads and key layout.

Two forms reach here: a ``torchvision:TAG`` name (e.g. ``torchvision:IMAGENET1K_V2``), resolved
through torchvision's weights API for the recipe's depth and downloaded by torch into its hub cache
(``$TORCH_HOME/hub/checkpoints``) on first use; and a state dict of a torchvision ResNet read from
a file. Both are renamed to :class:`~cops.models.backbone.ResNetBackbone`'s layout, which differs
from torchvision's only in the stem (``stem.conv1``/``stem.bn1`` for ``conv1``/``bn1``) and in
having no ImageNet classifier (``fc``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor
from torchvision.models import WeightsEnum, get_model_weights

from cops.models.backbone import BACKBONES, WeightsError

__all__ = [
    "PREFIX",
    "cached_file",
    "from_torchvision_layout",
    "is_torchvision_layout",
    "is_torchvision_name",
    "load_named_weights",
    "resolve_name",
]

PREFIX = "torchvision:"
_STEM = ("conv1.", "bn1.")


def is_torchvision_name(source: str | Path) -> bool:
    """Whether a weights source is a ``torchvision:TAG`` name rather than a file path."""
    return str(source).startswith(PREFIX)


def resolve_name(source: str, backbone: str) -> WeightsEnum:
    """The torchvision weights entry that ``torchvision:TAG`` names for ``backbone`` (no download).

    ``TAG`` is a member of the depth's enum (``ResNet50_Weights``): ``IMAGENET1K_V1``,
    ``IMAGENET1K_V2`` or ``DEFAULT``.
    """
    if backbone not in BACKBONES:
        known = ", ".join(BACKBONES)
        raise WeightsError(f"{source}: unknown model.backbone {backbone!r}; expected {known}")
    enum = get_model_weights(backbone)
    tag = source.removeprefix(PREFIX)
    try:
        return enum[tag]
    except KeyError:
        tags = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise WeightsError(
            f"{source}: no such torchvision weights for model.backbone={backbone}; expected "
            f"{PREFIX}TAG with TAG one of {tags}"
        ) from None


def cached_file(weights: WeightsEnum) -> Path:
    """Where torch's hub cache keeps ``weights`` once downloaded (the file name of its URL)."""
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_named_weights(source: str, backbone: str) -> dict[str, Tensor]:
    """The state dict that ``torchvision:TAG`` names, from torch's cache or downloaded into it.

    Read weights-only and checked against the hash in torchvision's URL when downloaded; without
    internet and cache the error says which file to fetch elsewhere and pass instead.
    """
    weights = resolve_name(source, backbone)
    try:
        return weights.get_state_dict(
            progress=True, check_hash=True, weights_only=True, map_location="cpu"
        )
    except Exception as exc:
        raise WeightsError(
            f"{source}: cannot load {weights.url} into {cached_file(weights)} ({exc}); without "
            "internet, download that file elsewhere and set model.backbone_weights to its path"
        ) from exc


def is_torchvision_layout(state: Mapping[str, Tensor]) -> bool:
    """Whether a state dict uses torchvision's ResNet names (a top-level ``conv1.weight``)."""
    return "conv1.weight" in state and any(k.startswith("layer1.") for k in state)


def from_torchvision_layout(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """A torchvision ResNet state dict in the backbone's names, and the classifier keys dropped."""
    renamed: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if key.startswith("fc."):
            dropped.append(key)
        elif key.startswith(_STEM):
            renamed[f"stem.{key}"] = value
        else:
            renamed[key] = value
    return renamed, dropped
