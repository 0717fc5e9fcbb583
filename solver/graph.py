"""Pixel-grid graphs and the edge-order contract shared with targets and the boundary head.

Edges are listed channel by channel as in a boundary map of shape ``[2*D, h, w]``: channel ``2*i``
holds vertical edges ``(y, x)-(y+d, x)`` and channel ``2*i+1`` horizontal edges ``(y, x)-(y, x+d)``
for ``d = distances[i]``; within a channel edges are row-major over the source pixel ``(y, x)`` and
only edges whose end lies inside the image are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _check_distances(distances: Sequence[int]) -> list[int]:
    """Validate edge distances: positive, distinct integers."""
    try:
        dists = [int(d) for d in distances]
        integral = all(int(d) == d and not isinstance(d, bool) for d in distances)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"distances: expected a sequence of integers, got {distances!r}") from exc
    if not integral:
        raise ValueError(f"distances: expected integers, got {list(distances)!r}")
    if any(d <= 0 for d in dists):
        raise ValueError(f"distances: every distance must be positive, got {dists}")
    if len(set(dists)) != len(dists):
        raise ValueError(f"distances: distances must be distinct, got {dists}")
    return dists


def _check_size(height: int, width: int) -> tuple[int, int]:
    """Validate the grid size."""
    h, w = int(height), int(width)
    if h != height or h < 0:
        raise ValueError(f"height: expected a non-negative integer, got {height!r}")
    if w != width or w < 0:
        raise ValueError(f"width: expected a non-negative integer, got {width!r}")
    return h, w


def channel_edge_counts(height: int, width: int, distances: Sequence[int]) -> list[int]:
    """Edges per boundary-map channel, in channel order (vertical then horizontal per d)."""
    h, w = _check_size(height, width)
    counts = []
    for d in _check_distances(distances):
        counts.append(max(h - d, 0) * w)
        counts.append(h * max(w - d, 0))
    return counts


def num_grid_edges(height: int, width: int, distances: Sequence[int]) -> int:
    """Total number of edges of ``grid_graph(height, width, distances)``."""
    return int(sum(channel_edge_counts(height, width, distances)))


def grid_graph(height: int, width: int, distances: Sequence[int]) -> np.ndarray:
    """Edges ``int64 [E, 2]`` of a pixel grid (node ``y*width + x``) in boundary-map order."""
    h, w = _check_size(height, width)
    dists = _check_distances(distances)
    ids = np.arange(h * w, dtype=np.int64).reshape(h, w)
    parts = []
    for d in dists:
        src = ids[: max(h - d, 0), :]
        parts.append(np.stack([src.ravel(), src.ravel() + d * w], axis=1))
        src = ids[:, : max(w - d, 0)]
        parts.append(np.stack([src.ravel(), src.ravel() + d], axis=1))
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


def _is_torch(x: Any) -> bool:
    """True when ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def edge_maps_to_costs(maps: Any, distances: Sequence[int]) -> Any:
    """Flatten boundary maps ``[..., 2D, h, w]`` into per-edge values ``[..., E]`` in grid order.

    Works on numpy arrays and torch tensors (same kind and device out), so dataset targets and CNN
    outputs index the same edges as ``grid_graph``.
    """
    dists = _check_distances(distances)
    if maps.ndim < 3 or maps.shape[-3] != 2 * len(dists):
        raise ValueError(
            f"maps: expected shape [..., {2 * len(dists)}, h, w] for {len(dists)} distances, "
            f"got {tuple(maps.shape)}"
        )
    h, w = int(maps.shape[-2]), int(maps.shape[-1])
    lead = tuple(maps.shape[:-3])
    parts = []
    for i, d in enumerate(dists):
        parts.append(maps[..., 2 * i, : max(h - d, 0), :].reshape(*lead, -1))
        parts.append(maps[..., 2 * i + 1, :, : max(w - d, 0)].reshape(*lead, -1))
    if _is_torch(maps):
        import torch

        return torch.cat(parts, dim=-1)
    return np.concatenate(parts, axis=-1)


def edge_costs_to_maps(
    costs: Any, distances: Sequence[int], height: int, width: int, fill: float = 0.0
) -> Any:
    """Inverse of ``edge_maps_to_costs``: per-edge values ``[..., E]`` to maps ``[..., 2D, h, w]``.

    Positions without an edge (the last ``d`` rows/columns of a channel) hold ``fill``.
    """
    h, w = _check_size(height, width)
    dists = _check_distances(distances)
    counts = channel_edge_counts(h, w, dists)
    if costs.ndim < 1 or costs.shape[-1] != sum(counts):
        raise ValueError(
            f"costs: expected last dimension {sum(counts)} (edges of a {h}x{w} grid with "
            f"distances {dists}), got shape {tuple(costs.shape)}"
        )
    lead = tuple(costs.shape[:-1])
    shape = (*lead, 2 * len(dists), h, w)
    if _is_torch(costs):
        import torch

        maps = torch.full(shape, fill, dtype=costs.dtype, device=costs.device)
    else:
        maps = np.full(shape, fill, dtype=costs.dtype)
    start = 0
    for i, d in enumerate(dists):
        hv = max(h - d, 0)
        maps[..., 2 * i, :hv, :] = costs[..., start : start + hv * w].reshape(*lead, hv, w)
        start += hv * w
        wh = max(w - d, 0)
        maps[..., 2 * i + 1, :, :wh] = costs[..., start : start + h * wh].reshape(*lead, h, wh)
        start += h * wh
    return maps
