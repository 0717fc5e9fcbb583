"""The two heads of the paper's network: semantic logits, and boundary logits per edge distance.

Boundary layout. The original stores the logit of the edge of distance d at its *midpoint*: the
value at (r, c) is the edge (r − lo, c)–(r + hi, c) with ``lo = d // 2``, ``hi = d − lo``; the
project (solver, targets, losses, post-processing) stores it at its *source* pixel: the value at
(y, x) is the edge (y, x)–(y + d, x). The head computes in the original's layout, where its weights
were learnt (its 3×3 convs see zero padding at the midpoint map's borders), and shifts each map by
``lo`` at the end: the project has one convention, and every edge keeps its exact value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cops.models.layers import ConvNorm

__all__ = ["BoundaryHead", "SemanticHead", "midpoint_to_source", "source_to_midpoint"]


class SemanticHead(nn.Module):
    """Two 3×3 conv+BN+ReLU and a 1×1 classifier with bias: decoder features → class logits."""

    def __init__(self, in_channels: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvNorm(in_channels, channels, 3), ConvNorm(channels, channels, 3)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Tensor) -> Tensor:
        """Semantic logits ``[B, K, h, w]``."""
        return self.classifier(self.convs(features))


def _row_difference(f: Tensor, d: int) -> Tensor:
    """``out[r] = f[r + hi] − f[r − lo]`` where both rows exist, else zero (midpoint layout)."""
    lo = d // 2
    diff = f[:, :, d:, :] - f[:, :, :-d, :]  # both empty when the map has at most d rows
    return F.pad(diff, [0, 0, lo, d - lo])[:, :, : f.shape[2], :]


def _col_difference(f: Tensor, d: int) -> Tensor:
    """``out[c] = f[c + hi] − f[c − lo]`` along columns, zero where an end is missing."""
    lo = d // 2
    diff = f[:, :, :, d:] - f[:, :, :, :-d]
    return F.pad(diff, [lo, d - lo, 0, 0])[:, :, :, : f.shape[3]]


def midpoint_to_source(maps: Tensor, d: int) -> Tensor:
    """Shift a ``[B, 2, h, w]`` (vertical, horizontal) edge map of distance d to the source layout.

    Rows (vertical channel) and columns (horizontal channel) move by ``lo = d // 2``; the vacated
    end is zero (edges leaving the grid, which the solver never reads).
    """
    lo = d // 2
    if lo == 0:
        return maps
    vertical = F.pad(maps[:, 0:1, lo:, :], [0, 0, 0, lo])[:, :, : maps.shape[2], :]
    horizontal = F.pad(maps[:, 1:2, :, lo:], [0, lo, 0, 0])[:, :, :, : maps.shape[3]]
    return torch.cat([vertical, horizontal], dim=1)


def source_to_midpoint(maps: Tensor, d: int) -> Tensor:
    """Inverse of :func:`midpoint_to_source` on every edge inside the grid (for comparisons)."""
    lo = d // 2
    if lo == 0:
        return maps
    vertical = F.pad(maps[:, 0:1, :-lo, :], [0, 0, lo, 0])[:, :, : maps.shape[2], :]
    horizontal = F.pad(maps[:, 1:2, :, :-lo], [lo, 0, 0, 0])[:, :, :, : maps.shape[3]]
    return torch.cat([vertical, horizontal], dim=1)


class BoundaryHead(nn.Module):
    """Boundary logits ``[B, 2D, h, w]`` (source layout) from boundary features and semantic logits.

    A trunk of two 3×3 conv+BN+ReLU sees the boundary decoder's features concatenated with the
    *detached* semantic logits (the boundary loss does not train the semantic branch). Distance 1
    gets a plain classifier (two 3×3 convs narrowing to ``channels/8``, then 1×1 to the two
    directions). A larger distance d classifies the differences of trunk features at the two
    ends of each edge, rows and columns stacked, with convs of two groups (one per direction)
    narrowing to ``channels/4``, then a 1×1 conv that mixes both into the two directions.
    """

    def __init__(
        self, in_channels: int, num_classes: int, channels: int, edge_distances: Sequence[int]
    ) -> None:
        super().__init__()
        self.edge_distances: list[int] = [int(d) for d in edge_distances]
        self.trunk = nn.Sequential(
            ConvNorm(in_channels + num_classes, channels, 3), ConvNorm(channels, channels, 3)
        )
        classifiers = []
        for d in self.edge_distances:
            if d == 1:
                narrow = (channels, channels // 4, channels // 8)
                groups = 1
            else:
                narrow = (2 * channels, channels // 2, channels // 4)
                groups = 2
            classifiers.append(
                nn.Sequential(
                    ConvNorm(narrow[0], narrow[1], 3, groups=groups),
                    ConvNorm(narrow[1], narrow[2], 3, groups=groups),
                    nn.Conv2d(narrow[2], 2, 1),
                )
            )
        self.classifiers = nn.ModuleList(classifiers)

    def forward(self, features: Tensor, semantic_logits: Tensor) -> Tensor:
        """Boundary logits, channel 2i vertical and 2i+1 horizontal for ``edge_distances[i]``."""
        f = self.trunk(torch.cat([features, semantic_logits.detach()], dim=1))
        outs: list[Tensor] = []
        for i, classifier in enumerate(self.classifiers):
            d = self.edge_distances[i]
            if d == 1:
                logits = classifier(f)
            else:
                diffs = torch.cat([_row_difference(f, d), _col_difference(f, d)], dim=1)
                logits = classifier(diffs)
            outs.append(midpoint_to_source(logits, d))
        return torch.cat(outs, dim=1)
