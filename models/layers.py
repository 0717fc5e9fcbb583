"""Convolution building blocks of the paper's network: a conv with its BatchNorm and ReLU attached,
and the depthwise-separable conv of the DeepLabV3+ decoders.

The BatchNorm lives *inside* the conv module (attribute ``norm``), so a conv's parameters are
``<name>.weight`` and ``<name>.norm.{weight,bias,running_mean,running_var}``: the layout of the
original COPS/detectron2 state dicts, which keeps the checkpoint import a plain renaming.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ConvNorm", "SeparableConv"]


class ConvNorm(nn.Conv2d):
    """A 2-D convolution followed by an optional BatchNorm and an optional ReLU.

    ``padding`` defaults to "same" for odd kernels (``dilation · (kernel − 1) / 2``). Without a
    norm the conv carries a bias, with one it does not (the norm's shift replaces it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=groups,
            bias=not norm,
        )
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.relu = bool(relu)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve, normalise, rectify."""
        x = self.norm(self._conv_forward(x, self.weight, self.bias))
        return nn.functional.relu(x) if self.relu else x


class SeparableConv(nn.Module):
    """Depthwise k×k conv + BN + ReLU, then pointwise 1×1 conv + BN + ReLU.

    About ``k²`` times cheaper than a dense k×k conv of the same width, which is why the decoders
    use it for the large 3×3-dilated ASPP branches and the 5×5 fusion convs.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
    ) -> None:
        super().__init__()
        self.depthwise = ConvNorm(
            in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels
        )
        self.pointwise = ConvNorm(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Spatial filtering per channel, then channel mixing."""
        return self.pointwise(self.depthwise(x))
