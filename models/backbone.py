"""Dilated torchvision ResNet backbones returning stride-4, stride-8 and last-stage features.

The last stage (and, for output stride 8, the one before it) trades its stride for dilation, so the
deepest features keep enough resolution for the stride-4 decoders.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from cops.errors import CopsError

__all__ = [
    "BACKBONES",
    "BackboneInitWarning",
    "ResNetBackbone",
    "WeightsError",
    "build_backbone",
    "freeze_batchnorm",
    "load_backbone_weights",
]

# name -> (torchvision builder, ImageNet weight enum, output channels of res2 / res3 / res5)
BACKBONES: dict[str, tuple] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights, (64, 128, 512)),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights, (64, 128, 512)),
    "resnet50": (
        torchvision.models.resnet50,
        torchvision.models.ResNet50_Weights,
        (256, 512, 2048),
    ),
    "resnet101": (
        torchvision.models.resnet101,
        torchvision.models.ResNet101_Weights,
        (256, 512, 2048),
    ),
}


class BackboneInitWarning(UserWarning):
    """The backbone starts from random weights (none requested, or the download failed)."""


class WeightsError(CopsError, ValueError):
    """A backbone weights file is unreadable or does not fit the chosen architecture."""


def _dilate_stage(stage: nn.Sequential, dilation: int, first_dilation: int) -> None:
    """Replace the stride of a ResNet stage by dilation, in place.

    The first block keeps the dilation of the previous stage (as its input is at the old
    resolution); the following blocks use ``dilation``. Works for basic and bottleneck blocks.
    """
    for index, block in enumerate(stage):
        rate = first_dilation if index == 0 else dilation
        for conv in block.modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                conv.dilation = (rate, rate)
                conv.padding = (rate, rate)


class ResNetBackbone(nn.Module):
    """ResNet trunk without pooling/classifier; returns ``(res2, res3, res5)`` features.

    res2 has stride 4 and res3 stride 8 (exactly ``ceil(H/4)`` and ``ceil(H/8)`` rows); res5 has
    stride ``output_stride`` (16: last stage dilated; 8: last two stages dilated).
    Parameter names equal torchvision's (``conv1``, ``bn1``, ``layer1`` …) so ImageNet files load.
    """

    def __init__(self, name: str = "resnet50", output_stride: int = 16) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        builder, _, channels = BACKBONES[name]
        net = builder(weights=None)
        self.name = name
        self.output_stride = output_stride
        self.channels: tuple[int, int, int] = channels
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        if output_stride == 16:
            _dilate_stage(self.layer4, dilation=2, first_dilation=1)
        else:
            _dilate_stage(self.layer3, dilation=2, first_dilation=1)
            _dilate_stage(self.layer4, dilation=4, first_dilation=2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return the stride-4, stride-8 and deepest feature maps of a normalised image batch."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        res2 = self.layer1(x)
        res3 = self.layer2(res2)
        res5 = self.layer4(self.layer3(res3))
        return res2, res3, res5

    def load_pretrained(self) -> bool:
        """Load torchvision's ImageNet weights (downloads once); warn and keep random init offline.

        Returns whether the weights were loaded.
        """
        weights = BACKBONES[self.name][1].IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=True, check_hash=True)
        except Exception as exc:  # no network, proxy, corrupt cache: all mean "not available"
            warnings.warn(
                f"could not download ImageNet weights for {self.name} from {weights.url} "
                f"({type(exc).__name__}: {exc}); the backbone starts from random weights. "
                f"Download that file elsewhere and pass it with "
                f"model.backbone_weights=/path/to/{Path(weights.url).name}",
                BackboneInitWarning,
                stacklevel=2,
            )
            return False
        _load_checked(self, _extract_backbone_state(state, weights.url), source=weights.url)
        return True


def _extract_backbone_state(obj: object, source: str) -> dict[str, Tensor]:
    """Find the backbone tensors in a torchvision/ImageNet state dict or a COPS checkpoint."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(
            f"{source}: expected a state dict of tensors or a checkpoint with a 'model' entry"
        )
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _load_checked(backbone: ResNetBackbone, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``backbone``, failing with a message naming ``source`` on any mismatch.

    ``num_batches_tracked`` counters are optional (old torchvision files lack them; frozen BN
    drops them); every other backbone tensor must be present with the right shape.
    """
    own = backbone.state_dict()

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
        raise WeightsError(
            f"{source}: weights do not fit backbone {backbone.name} ({'; '.join(parts)})"
        )
    backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def load_backbone_weights(backbone: ResNetBackbone, path: str | Path) -> None:
    """Load backbone weights from a file: a torchvision ImageNet state dict or a COPS checkpoint.

    ``fc.*`` (classifier) entries are ignored; missing or mis-shaped backbone tensors raise
    :class:`WeightsError` naming the file, so a wrong file never silently leaves random weights.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: backbone weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read as torch weights ({exc})") from exc
    _load_checked(backbone, _extract_backbone_state(obj, str(path)), str(path))


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
    name: str = "resnet50",
    output_stride: int = 16,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
) -> ResNetBackbone:
    """Build a dilated ResNet and initialise it: local file > ImageNet download > random.

    A local ``weights_path`` wins over ``pretrained`` (no download). Random initialisation, chosen
    or forced by a failed download, emits a :class:`BackboneInitWarning`.
    """
    backbone = ResNetBackbone(name, output_stride)
    if weights_path is not None:
        load_backbone_weights(backbone, weights_path)
    elif pretrained:
        backbone.load_pretrained()
    else:
        warnings.warn(
            f"backbone {name} starts from random weights (pretrained=False, no weights file)",
            BackboneInitWarning,
            stacklevel=2,
        )
    return backbone
