"""Training targets from a panoptic map (DESIGN §3): semantics, loss weights and stride-4 cuts.

Conventions:
- void (id 0) is ignored everywhere: semantic 255, weight 0, no cut supervision;
- crowd pixels keep their class in the semantic map but are ignored by default (DESIGN §3:
  weight `crowd_weight` = 0; set it above 0 to supervise their class), and every edge touching a
  crowd pixel has cut weight 0, since a crowd region's instance boundaries are unknown;
- an instance is small when its annotated area (original resolution, whole instance) is below
  `small_instance_area`, so the choice does not depend on how a crop cuts it;
- stride-s maps sample the pixel at offset s // 2 of each s×s cell (clamped to the image), giving
  ceil(H/s)×ceil(W/s) grids; cut channel 2i holds vertical edges (y, x)-(y+d, x) and channel 2i+1
  horizontal edges (y, x)-(y, x+d) for d = edge_distances[i], stored at the source pixel (y, x),
  the layout shared with the solver's grid graph and the boundary head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cops.datasets.panoptic_io import VOID_ID
from cops.datasets.prepared import IGNORE_LABEL


@dataclass(frozen=True)
class TargetConfig:
    """How targets are made; defaults follow the Cityscapes pretrain recipe (DESIGN §6)."""

    edge_distances: tuple[int, ...] = (1, 4, 16, 32, 64)
    stride: int = 4
    thing_weight: float = 4.0
    small_instance_area: float = 4096.0
    small_instance_weight: float = 3.0
    crowd_weight: float = 0.0
    boundary_thing_weight: float = 1.0
    """Cut weight of edges with a non-crowd thing pixel at either end; 1 weighs all edges alike."""
    semantic_thing_weighting: bool = True
    """Whether a thing pixel's semantic weight includes ``thing_weight`` (the paper: only small
    instances are weighted there, by ``small_instance_weight``)."""
    boundary_pixel_weights: bool = False
    """The paper's cut weights: an edge weighs the larger of its end pixels' boundary weights,
    ``thing_weight`` on thing pixels times ``small_instance_weight`` on small instances, 1 on
    stuff (``boundary_thing_weight`` is then unused). False: every supervised edge weighs 1."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "edge_distances", tuple(int(d) for d in self.edge_distances))
        if not self.edge_distances or min(self.edge_distances) < 1:
            raise ValueError(f"edge_distances must be positive integers, got {self.edge_distances}")
        if len(set(self.edge_distances)) != len(self.edge_distances):
            raise ValueError(f"edge_distances has repeats: {self.edge_distances}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        weights = ("thing_weight", "small_instance_weight", "crowd_weight", "boundary_thing_weight")
        for name in weights:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def stride_indices(size: int, stride: int) -> np.ndarray:
    """Full-resolution indices sampled along one axis of length `size` at `stride`."""
    return np.minimum(np.arange(-(-size // stride)) * stride + stride // 2, size - 1)


def _segment_index(panoptic: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Map every pixel to its position in `ids`, or len(ids) for void; unknown ids raise."""
    if ids.size == 0:
        if np.any(panoptic != VOID_ID):
            raise ValueError("panoptic map has segment ids but no segments were given")
        return np.zeros(panoptic.shape, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, panoptic), ids.size - 1)
    found = sorted_ids[pos] == panoptic
    if not np.all(found | (panoptic == VOID_ID)):
        unknown = np.unique(panoptic[~found & (panoptic != VOID_ID)])[:5].tolist()
        raise ValueError(f"panoptic ids {unknown} are not among the segments")
    return np.where(found, order[pos], ids.size)


def make_targets(
    panoptic: np.ndarray,
    segments: Sequence[Mapping[str, Any]],
    config: TargetConfig = TargetConfig(),
) -> dict[str, np.ndarray]:
    """Semantic, weight and cut targets for one panoptic map [H, W].

    `segments` need ``id``, ``train_id``, ``isthing``, ``iscrowd`` and ``area`` (the reader's
    segment dicts). Returns full-resolution ``semantic`` (int64) and ``weights`` (float32), their
    stride-s samples ``semantic_s4``/``weights_s4`` plus ``panoptic_s4``, and ``cut_targets`` /
    ``cut_weights`` (float32 [2·D, h, w]).
    """
    panoptic = np.asarray(panoptic, dtype=np.int64)
    if panoptic.ndim != 2:
        raise ValueError(f"panoptic must be [H, W], got shape {panoptic.shape}")
    n = len(segments)
    # Per-segment lookup tables; entry n stands for void.
    train = np.full(n + 1, IGNORE_LABEL, dtype=np.int64)
    weight = np.zeros(n + 1, dtype=np.float32)
    edge_pixel = np.ones(n + 1, dtype=np.float32)  # boundary weight of a pixel (paper weights)
    cut_valid = np.zeros(n + 1, dtype=bool)
    thing = np.zeros(n + 1, dtype=bool)
    for k, seg in enumerate(segments):
        train[k] = seg["train_id"]
        if seg["iscrowd"]:
            weight[k] = config.crowd_weight
        elif seg["isthing"]:
            thing[k] = True
            small_factor = (
                config.small_instance_weight if seg["area"] < config.small_instance_area else 1.0
            )
            thing_factor = config.thing_weight if config.semantic_thing_weighting else 1.0
            weight[k] = thing_factor * small_factor
            edge_pixel[k] = config.thing_weight * small_factor
            cut_valid[k] = True
        else:
            weight[k] = 1.0
            cut_valid[k] = True
    ids = np.asarray([seg["id"] for seg in segments], dtype=np.int64)
    index = _segment_index(panoptic, ids)

    rows = stride_indices(panoptic.shape[0], config.stride)
    cols = stride_indices(panoptic.shape[1], config.stride)
    index_s = index[np.ix_(rows, cols)]
    valid_s = cut_valid[index_s]
    weighted_s = thing[index_s] if config.boundary_thing_weight != 1.0 else None
    edge_pixel_s = edge_pixel[index_s] if config.boundary_pixel_weights else None
    h, w = index_s.shape
    cut_targets = np.zeros((2 * len(config.edge_distances), h, w), dtype=np.float32)
    cut_weights = np.zeros_like(cut_targets)
    for i, d in enumerate(config.edge_distances):
        for channel, axis, size in ((2 * i, 0, h), (2 * i + 1, 1, w)):
            if d >= size:
                continue
            src = (slice(0, size - d),) if axis == 0 else (slice(None), slice(0, size - d))
            dst = (slice(d, size),) if axis == 0 else (slice(None), slice(d, size))
            out = (channel, *src)
            cut_targets[out] = index_s[src] != index_s[dst]
            edge_weight = (valid_s[src] & valid_s[dst]).astype(np.float32)
            if edge_pixel_s is not None:
                edge_weight *= np.maximum(edge_pixel_s[src], edge_pixel_s[dst])
            elif weighted_s is not None:
                either_thing = weighted_s[src] | weighted_s[dst]
                edge_weight *= np.where(either_thing, config.boundary_thing_weight, 1.0)
            cut_weights[out] = edge_weight
    return {
        "semantic": train[index],
        "weights": weight[index],
        "semantic_s4": train[index_s],
        "weights_s4": weight[index_s],
        "panoptic_s4": panoptic[np.ix_(rows, cols)],
        "cut_targets": cut_targets,
        "cut_weights": cut_weights,
    }
