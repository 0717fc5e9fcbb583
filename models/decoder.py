"""The DeepLabV3+ decoder of the paper's network (one each for semantics and boundaries).

ASPP on the deepest features: a 1×1 branch, depthwise-separable 3×3 branches at the atrous rates
and an image-pooling branch, concatenated and projected. Then two fusion steps: the res3 features
projected to ``channels/4`` and the res2 features projected to ``channels/8`` are each concatenated
with the bilinearly upsampled decoder features and fused by a depthwise-separable 5×5 conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cops.models.layers import ConvNorm, SeparableConv

__all__ = ["ASPP", "DeepLabDecoder"]


def _upsample(x: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize to ``height × width`` (align_corners=False, as the original)."""
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with the original's image-pooling branch.

    The pooling branch averages over a *fixed* window (``pool_size`` = training crop / output
    stride) with stride 1, applies a 1×1 conv with bias and a ReLU (no BN), and is resized back: on
    a training crop it is a global pool, on a larger test image it is a sliding local mean, as in
    the original. Where the feature map is smaller than the window, the window shrinks to the map
    (global pooling along that side). ``pool_size=None`` always pools globally. ``dropout`` is
    applied to the projected output in train mode (0.1 in the paper, also while the decoder is
    frozen).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int],
        pool_size: Sequence[int] | None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        branches: list[nn.Module] = [ConvNorm(in_channels, out_channels, 1)]
        branches += [SeparableConv(in_channels, out_channels, 3, int(r)) for r in rates]
        self.branches = nn.ModuleList(branches)
        self.pooling_conv = nn.Conv2d(in_channels, out_channels, 1)
        self.project = ConvNorm(out_channels * (len(branches) + 1), out_channels, 1)
        size = [0, 0] if pool_size is None else [int(s) for s in pool_size]
        if len(size) != 2 or min(size) < 0 or (pool_size is not None and min(size) < 1):
            raise ValueError(f"pool_size must be two positive ints [h, w] or None, got {pool_size}")
        self.pool_size: list[int] = size  # [0, 0]: global

    def _pool(self, x: Tensor) -> Tensor:
        """The image-pooling branch, resized to ``x``'s spatial size."""
        height, width = x.shape[-2], x.shape[-1]
        kh = height if self.pool_size[0] == 0 else min(self.pool_size[0], height)
        kw = width if self.pool_size[1] == 0 else min(self.pool_size[1], width)
        pooled = F.avg_pool2d(x, kernel_size=[kh, kw], stride=1)
        pooled = F.relu(self.pooling_conv(pooled))
        return _upsample(pooled, height, width)

    def forward(self, x: Tensor) -> Tensor:
        """Multi-scale context features at the input's resolution."""
        outs = [branch(x) for branch in self.branches]
        outs.append(self._pool(x))
        projected = self.project(torch.cat(outs, dim=1))
        return F.dropout(projected, self.dropout, self.training) if self.dropout else projected


class DeepLabDecoder(nn.Module):
    """ASPP on res5, then fusion with projected res3 (stride 8) and res2 (stride 4) features.

    Returns ``channels`` features with exactly the spatial size of res2 (``ceil(H/4) ×
    ceil(W/4)`` for an ``H × W`` input). The heads that turn them into logits are separate.
    """

    def __init__(
        self,
        in_channels: tuple[int, int, int],
        channels: int = 256,
        aspp_rates: Sequence[int] = (6, 12, 18),
        pool_size: Sequence[int] | None = None,
        aspp_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        res2_ch, res3_ch, res5_ch = in_channels
        proj3, proj2 = max(channels // 4, 1), max(channels // 8, 1)
        self.aspp = ASPP(res5_ch, channels, aspp_rates, pool_size, aspp_dropout)
        self.project_res3 = ConvNorm(res3_ch, proj3, 1)
        self.fuse_res3 = SeparableConv(proj3 + channels, channels, 5)
        self.project_res2 = ConvNorm(res2_ch, proj2, 1)
        self.fuse_res2 = SeparableConv(proj2 + channels, channels, 5)

    def forward(self, res2: Tensor, res3: Tensor, res5: Tensor) -> Tensor:
        """Decoder features ``[B, channels, h2, w2]`` at the resolution of ``res2``."""
        x = self.aspp(res5)
        skip = self.project_res3(res3)
        x = _upsample(x, skip.shape[-2], skip.shape[-1])
        x = self.fuse_res3(torch.cat([skip, x], dim=1))
        skip = self.project_res2(res2)
        x = _upsample(x, skip.shape[-2], skip.shape[-1])
        return self.fuse_res2(torch.cat([skip, x], dim=1))
