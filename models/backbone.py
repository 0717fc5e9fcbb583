"""The paper's backbone: a ResNet with the DeepLab stem, dilated last stage and multi-grid.

As the original COPS network builds it: three 3×3 convs (3→64 stride 2, 64→64, 64→128) with
BatchNorm and ReLU, a 3×3 max-pool of stride 2, then four stages ``res2``…``res5`` of basic
(depth 18/34) or bottleneck (depth 50/101) blocks with the stride in the 3×3 conv. ``res5`` trades
its stride for dilation ``2·grid`` (multi-grid 1, 2, 4), so the output stride is 16; with output
stride 8, ``res4`` is dilated by 2 as well and ``res5`` by ``4·grid``. Module names equal the
original's (``stem.conv1``, ``res2.0.shortcut`` …), so its weights load by name.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from cops.errors import CopsError
from cops.models.layers import ConvNorm

__all__ = [
    "BACKBONES",
    "BackboneInitWarning",
    "DeepLabResNet",
    "WeightsError",
    "freeze_batchnorm",
    "load_backbone_weights",
]

# name -> (blocks per stage res2..res5, bottleneck blocks?)
BACKBONES: dict[str, tuple[tuple[int, int, int, int], bool]] = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
    "resnet101": ((3, 4, 23, 3), True),
}
MULTI_GRID = (1, 2, 4)
"""Dilation multipliers of the res5 blocks (a stage with fewer blocks uses the first ones)."""
STEM_CHANNELS = 128


class BackboneInitWarning(UserWarning):
    """The backbone starts from random weights (no weights file was given)."""


class WeightsError(CopsError, ValueError):
    """A weights file is unreadable or does not fit the chosen architecture."""


class DeepLabStem(nn.Module):
    """Three 3×3 conv+BN+ReLU (the first of stride 2), then a 3×3 max-pool of stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, 64, 3, stride=2)
        self.conv2 = ConvNorm(64, 64, 3)
        self.conv3 = ConvNorm(64, STEM_CHANNELS, 3)

    def forward(self, x: Tensor) -> Tensor:
        """Stride-4 features of a normalised image (``ceil(H/4) × ceil(W/4)``)."""
        x = self.conv3(self.conv2(self.conv1(x)))
        return nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """A block's shortcut: a strided 1×1 projection where the shape changes, else the identity."""
    if in_ch != out_ch or stride != 1:
        return ConvNorm(in_ch, out_ch, 1, stride=stride, relu=False)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3×3 convs and a (projected where the shape changes) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, dilation: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.conv1 = ConvNorm(in_ch, width, 3, stride=stride, dilation=dilation)
        self.conv2 = ConvNorm(width, out_ch, 3, dilation=dilation, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        """Residual update of ``x``."""
        return nn.functional.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """1×1 reduce, 3×3 (carrying stride and dilation), 1×1 expand ×4; ResNet-50/101."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, dilation: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.shortcut = _shortcut(in_ch, out_ch, stride)
        self.conv1 = ConvNorm(in_ch, width, 1)
        self.conv2 = ConvNorm(width, width, 3, stride=stride, dilation=dilation)
        self.conv3 = ConvNorm(width, out_ch, 1, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        """Residual update of ``x``."""
        y = self.conv3(self.conv2(self.conv1(x)))
        return nn.functional.relu(y + self.shortcut(x))


class DeepLabResNet(nn.Module):
    """DeepLab-stem ResNet returning ``(res2, res3, res5)``: strides 4, 8 and ``output_stride``.

    res2 has exactly ``ceil(H/4)`` rows and res3 ``ceil(H/8)`` for any input height H.
    """

    def __init__(self, name: str = "resnet50", output_stride: int = 16) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        depths, bottleneck = BACKBONES[name]
        block = BottleneckBlock if bottleneck else BasicBlock
        self.name = name
        self.output_stride = output_stride
        self.stem = DeepLabStem()
        res4_dilation = 1 if output_stride == 16 else 2
        res5_rate = 2 * res4_dilation
        grid = [MULTI_GRID[i % len(MULTI_GRID)] for i in range(depths[3])]
        plans = [  # (stride of the first block, dilation of each block) per stage
            (1, [1] * depths[0]),
            (2, [1] * depths[1]),
            (2 if output_stride == 16 else 1, [res4_dilation] * depths[2]),
            (1, [res5_rate * g for g in grid]),
        ]
        in_ch = STEM_CHANNELS
        widths = (64, 128, 256, 512)
        for index, ((stride, dilations), width) in enumerate(zip(plans, widths, strict=True)):
            blocks = []
            for j, dilation in enumerate(dilations):
                blocks.append(block(in_ch, width, stride if j == 0 else 1, dilation))
                in_ch = width * block.expansion
            self.add_module(f"res{index + 2}", nn.Sequential(*blocks))
        self.channels: tuple[int, int, int] = (
            64 * block.expansion,
            128 * block.expansion,
            512 * block.expansion,
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return the stride-4, stride-8 and deepest feature maps of a normalised image batch."""
        res2 = self.res2(self.stem(x))
        res3 = self.res3(res2)
        res5 = self.res5(self.res4(res3))
        return res2, res3, res5


def _check_fit(module: nn.Module, state: Mapping[str, Tensor], source: str, what: str) -> None:
    """Fail with a message naming ``source`` unless ``state`` fits ``module`` key for key.

    ``num_batches_tracked`` counters are optional (frozen BatchNorm drops them).
    """
    own = module.state_dict()

    def counter(key: str) -> bool:
        return key.endswith("num_batches_tracked")

    missing = sorted(k for k in own if k not in state and not counter(k))
    unexpected = sorted(k for k in state if k not in own and not counter(k))
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


def load_backbone_weights(backbone: DeepLabResNet, path: str | Path) -> None:
    """Load backbone weights from a COPS checkpoint or a backbone state dict (``torch.save``).

    Such files come from training or from ``cops import-checkpoint --backbone-only``. Missing,
    unexpected or mis-shaped tensors raise :class:`WeightsError` naming the file, so a wrong file
    never silently leaves random weights.
    """
    path = Path(path)
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
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    _check_fit(backbone, state, str(path), f"backbone {backbone.name}")
    backbone.load_state_dict(state, strict=False)


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


def build_backbone(
    name: str = "resnet50", output_stride: int = 16, weights_path: str | Path | None = None
) -> DeepLabResNet:
    """The backbone, from ``weights_path`` when given, else random with a BackboneInitWarning."""
    backbone = DeepLabResNet(name, output_stride)
    if weights_path is not None:
        load_backbone_weights(backbone, weights_path)
    else:
        warnings.warn(
            f"backbone {name} starts from random weights (no model.backbone_weights file; "
            "`cops import-checkpoint R-52.pkl --backbone-only` writes an ImageNet one)",
            BackboneInitWarning,
            stacklevel=2,
        )
    return backbone
