"""The paper's backbone, assembled from torchvision's ResNet with a replaceable stem and dilation.

:class:`ResNetBackbone` is ``torchvision.models.resnet.ResNet`` (its ``BasicBlock``/``Bottleneck``
blocks, the stride in the 3×3 conv, its ``layer1``…``layer4`` names) with two changes that the
paper's network needs: the stem is a module of its own, ``stem`` (the DeepLab stem — three 3×3
convs to 128 channels — or torchvision's 7×7 conv), and the last stages trade their stride for
per-block dilation. In the paper (``dilation_style="deeplab"``) every block of a dilated stage is
dilated: ``layer4`` by ``2·multi_grid`` = 2/4/8 at output stride 16; at output stride 8 ``layer3``
by 2 and ``layer4`` by ``4·multi_grid``. torchvision's own ``replace_stride_with_dilation``
(``dilation_style="torchvision"``) keeps a dilated stage's first block at the previous stage's rate.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet, conv1x1, conv3x3
from torchvision.ops.misc import FrozenBatchNorm2d

from cops.errors import CopsError

__all__ = [
    "BACKBONES",
    "DILATION_STYLES",
    "MULTI_GRID",
    "STEMS",
    "BackboneInitWarning",
    "ResNetBackbone",
    "WeightsError",
    "deeplab_stem",
    "detectron2_backbone_key",
    "freeze_batchnorm",
    "from_detectron2_names",
    "stage_dilations",
]

Block = type[BasicBlock] | type[Bottleneck]
BACKBONES: dict[str, tuple[Block, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}
"""name -> (torchvision block class, blocks per stage layer1..layer4)."""
STEMS = ("deeplab", "torchvision")
DILATION_STYLES = ("deeplab", "torchvision")
MULTI_GRID = (1, 2, 4)
"""The paper's dilation multipliers of the layer4 blocks (repeated cyclically for longer stages)."""
DEEPLAB_STEM_CHANNELS = 128
# detectron2's names: stem.conv1 (.norm.*), res2.0.conv1 (.norm.*), res2.0.shortcut (.norm.*)
_D2_KEY = re.compile(
    r"^(?:stem|res([2-5])\.(\d+))\.(?:conv(\d)|(shortcut))\.(?:weight|norm\.(\w+))$"
)


class BackboneInitWarning(UserWarning):
    """The backbone starts from random weights (no weights file was given)."""


class WeightsError(CopsError, ValueError):
    """A weights file is unreadable or does not fit the chosen architecture."""


def detectron2_backbone_key(key: str) -> str | None:
    """Our (torchvision's) name of a backbone key in detectron2's names, or None if it is not one.

    The original COPS code, DeepLab's ``R-52.pkl`` and cops up to 0.1.0 use these names:
    ``stem.convI.norm.X`` → ``stem.bnI.X``; ``resK.J.convI`` → ``layer{K-1}.J.convI`` (its norm
    → ``bnI``); ``resK.J.shortcut`` → ``layer{K-1}.J.downsample.0`` (its norm → ``downsample.1``).
    """
    match = _D2_KEY.match(key)
    if match is None:
        return None
    stage, index, conv, shortcut, norm = match.groups()
    if stage is None and shortcut:
        return None
    where = "stem" if stage is None else f"layer{int(stage) - 1}.{index}"
    if shortcut:
        return f"{where}.downsample.1.{norm}" if norm else f"{where}.downsample.0.weight"
    return f"{where}.bn{conv}.{norm}" if norm else f"{where}.conv{conv}.weight"


def from_detectron2_names(state: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``state`` with its backbone keys under ``prefix`` in detectron2's names renamed to ours;
    every other key unchanged (so that fit checks still name it)."""
    renamed = {}
    for key, value in state.items():
        ours = detectron2_backbone_key(key[len(prefix) :]) if key.startswith(prefix) else None
        renamed[key if ours is None else prefix + ours] = value
    return renamed


def _init_like_torchvision(module: nn.Module) -> None:
    """torchvision's ResNet initialisation (He-normal convs, unit BatchNorm) for added modules."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def deeplab_stem(maxpool: nn.Module) -> nn.Sequential:
    """The DeepLab stem: 3×3 conv+BN+ReLU 3→64 (stride 2), 64→64, 64→128, then ``maxpool``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    plan = ((3, 64, 2), (64, 64, 1), (64, DEEPLAB_STEM_CHANNELS, 1))
    for i, (in_ch, out_ch, stride) in enumerate(plan, start=1):
        layers[f"conv{i}"] = conv3x3(in_ch, out_ch, stride)
        layers[f"bn{i}"] = nn.BatchNorm2d(out_ch)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
    layers["maxpool"] = maxpool
    return nn.Sequential(layers)


def stage_dilations(
    depths: Sequence[int], output_stride: int, multi_grid: Sequence[int], style: str
) -> list[list[int] | None]:
    """Per-block dilation of layer1..layer4; ``None`` for a stage that keeps its stride.

    Stages past the output stride keep stride 1 and dilate instead: layer4 at rate 2 (output
    stride 16), or layer3 at 2 and layer4 at 4 (output stride 8); layer4's blocks at ``rate ·
    multi_grid``. In torchvision's style a dilated stage's first block keeps the previous stage's
    rate, as ``replace_stride_with_dilation`` does.
    """
    rates = [1, 1, 1 if output_stride == 16 else 2, 2 if output_stride == 16 else 4]
    plans: list[list[int] | None] = [None, None]
    for stage in (2, 3):
        if rates[stage] == 1:
            plans.append(None)
            continue
        grid = multi_grid if stage == 3 else (1,)
        plan = [rates[stage] * grid[j % len(grid)] for j in range(depths[stage])]
        if style == "torchvision":
            plan[0] = rates[stage - 1]
        plans.append(plan)
    return plans


def _dilate(stage: nn.Sequential, dilations: Sequence[int]) -> None:
    """Trade a stage's stride for dilation: stride 1 everywhere, block j's 3×3 convs dilated."""
    for block, rate in zip(stage, dilations, strict=True):
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d):
                conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    conv.dilation = conv.padding = (rate, rate)
        block.stride = 1


class ResNetBackbone(ResNet):
    """torchvision's ResNet giving ``(layer1, layer2, layer4)``: strides 4, 8, ``output_stride``.

    ``stem`` is ``"deeplab"`` (the paper's; layer1 then reads 128 channels) or ``"torchvision"``
    (7×7 conv + max-pool, so torchvision's ImageNet weights fit). ``reinit_stem`` lets weights of
    the other stem load with this stem left at its initial values (see
    :func:`~cops.models.backbone_weights.load_backbone_weights`). layer1 has exactly
    ``ceil(H/4)`` rows and layer2 ``ceil(H/8)`` for any input height H.
    """

    def __init__(
        self,
        name: str = "resnet50",
        output_stride: int = 16,
        stem: str = "deeplab",
        multi_grid: Sequence[int] = MULTI_GRID,
        dilation_style: str = "deeplab",
        reinit_stem: bool = False,
    ) -> None:
        _check_arguments(name, output_stride, stem, multi_grid, dilation_style)
        block, depths = BACKBONES[name]
        super().__init__(block, list(depths))
        if stem == "deeplab":
            self.stem = deeplab_stem(self.maxpool)
            width = 64 * block.expansion
            shortcut = nn.Sequential(conv1x1(DEEPLAB_STEM_CHANNELS, width), nn.BatchNorm2d(width))
            self.layer1[0] = block(DEEPLAB_STEM_CHANNELS, 64, downsample=shortcut)
            _init_like_torchvision(self.stem)
            _init_like_torchvision(self.layer1[0])
        else:
            parts = (("conv1", self.conv1), ("bn1", self.bn1), ("relu", self.relu))
            self.stem = nn.Sequential(OrderedDict([*parts, ("maxpool", self.maxpool)]))
        del self.conv1, self.bn1, self.relu, self.maxpool, self.avgpool, self.fc
        plans = stage_dilations(depths, output_stride, multi_grid, dilation_style)
        for stage, plan in zip((self.layer3, self.layer4), plans[2:], strict=True):
            if plan is not None:
                _dilate(stage, plan)
        self.name = name
        self.output_stride = output_stride
        self.stem_kind = stem
        self.reinit_stem = bool(reinit_stem)
        self.channels: tuple[int, int, int] = (
            64 * block.expansion,
            128 * block.expansion,
            512 * block.expansion,
        )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Accept state dicts in detectron2's backbone names too (checkpoints of earlier cops)."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            ours = detectron2_backbone_key(key[len(prefix) :])
            if ours is not None:
                state_dict[prefix + ours] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        """Return the stride-4, stride-8 and deepest feature maps of a normalised image batch."""
        res2 = self.layer1(self.stem(x))
        res3 = self.layer2(res2)
        res5 = self.layer4(self.layer3(res3))
        return res2, res3, res5


def _check_arguments(
    name: str, output_stride: int, stem: str, multi_grid: Sequence[int], dilation_style: str
) -> None:
    """ValueError naming the first argument out of its range."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; expected one of {STEMS}")
    if dilation_style not in DILATION_STYLES:
        raise ValueError(f"unknown dilation style {dilation_style!r}; expected {DILATION_STYLES}")
    if not multi_grid or min(multi_grid) < 1:
        raise ValueError(f"multi_grid must be positive integers, got {list(multi_grid)}")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a FrozenBatchNorm2d with the same statistics.

    Used by finetune-pq: statistics and affine parameters stay fixed whatever the mode/batch size.
    Returns the module (changed in place, or the replacement when ``module`` itself is a BN layer).
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen = frozen.to(next(itertools.chain(module.parameters(), module.buffers())).device)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.running_mean is not None and module.running_var is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replaced = freeze_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
