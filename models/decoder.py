"""DeepLabV3+-style decoder: atrous spatial pyramid pooling on the deepest features, then two
fusion steps with projected stride-8 and stride-4 features, ending in per-pixel logits at stride 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ASPP", "DeepLabDecoder"]


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU with 'same' padding for odd kernels."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _upsample_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinearly resize ``x`` to the spatial size of ``like`` (handles odd sizes exactly)."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1×1 branch, one 3×3 branch per rate and image pooling.

    The branches see context at several scales; their concatenation is projected to
    ``out_channels``. The pooled branch has no BatchNorm so training works with batch size 1.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        branches = [_conv_bn_relu(in_channels, out_channels, 1)]
        branches += [_conv_bn_relu(in_channels, out_channels, 3, int(r)) for r in rates]
        self.branches = nn.ModuleList(branches)
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
        )
        self.project = _conv_bn_relu(out_channels * (len(branches) + 1), out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Return multi-scale context features at the input's resolution."""
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, dim=1))


class DeepLabDecoder(nn.Module):
    """ASPP on res5, fuse projected res3 (stride 8) and res2 (stride 4), predict ``out_channels``.

    The output has exactly the spatial size of res2, i.e. ``ceil(H/4) × ceil(W/4)`` for an
    ``H × W`` input, whatever H and W are.
    """

    def __init__(
        self,
        in_channels: tuple[int, int, int],
        out_channels: int,
        aspp_rates: Sequence[int] = (6, 12, 18),
        channels: int = 256,
    ) -> None:
        super().__init__()
        res2_ch, res3_ch, res5_ch = in_channels
        proj3, proj2 = max(channels // 4, 8), max(channels // 8, 8)
        self.aspp = ASPP(res5_ch, channels, aspp_rates)
        self.project_res3 = _conv_bn_relu(res3_ch, proj3, 1)
        self.fuse_res3 = _conv_bn_relu(channels + proj3, channels, 3)
        self.project_res2 = _conv_bn_relu(res2_ch, proj2, 1)
        self.fuse_res2 = _conv_bn_relu(channels + proj2, channels, 3)
        self.head = nn.Sequential(
            _conv_bn_relu(channels, channels, 3), nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, res2: Tensor, res3: Tensor, res5: Tensor) -> Tensor:
        """Return logits ``[B, out_channels, h2, w2]`` at the resolution of ``res2``."""
        x = self.aspp(res5)
        skip3 = self.project_res3(res3)
        x = self.fuse_res3(torch.cat([_upsample_to(x, skip3), skip3], dim=1))
        skip2 = self.project_res2(res2)
        x = self.fuse_res2(torch.cat([_upsample_to(x, skip2), skip2], dim=1))
        return self.head(x)
