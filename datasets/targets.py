"""Training targets from a panoptic map (DESIGN §3): semantics, loss weights and stride-4 cuts.

Conventions:
- void (id 0) is ignored everywhere: semantic 255, weight 0, no cut supervision;
- crowd pixels keep their class in the semantic map with weight `crowd_weight` (1 in the paper,
  0 ignores them), are no ground-truth segment (``panoptic_s4`` holds void there), and every edge
  touching a crowd pixel has cut weight 0, since a crowd region's instance boundaries are unknown;
- an instance is small when its area is below `small_instance_area`: its pixel count in the map
  given (the augmented crop, the paper's rule) or its annotated area (`small_instance_area_in`);
- `size_divisibility` > 0 pads the map bottom/right to multiples of it first, as the original's
  target generator does (COCO): padding is void for the semantics (255, weight 0) and the
  segments, but its boundary weight is 1, so the edges between image and padding are supervised
  as cuts;
- an edge is a cut when its ends lie in different segments; void, crowd and padding count as one
  "no segment" label (so their mutual edges are joins, all of weight 0 or inside padding);
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
    small_instance_area_in: str = "annotation"
    """``crop``: an instance's area is its pixel count in the map given (the paper); ``annotation``:
    the segment's ``area`` (whole instance at original resolution)."""
    size_divisibility: int = 0
    """Pad bottom/right to multiples of this before sampling (0: no padding; module doc)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "edge_distances", tuple(int(d) for d in self.edge_distances))
        if not self.edge_distances or min(self.edge_distances) < 1:
            raise ValueError(f"edge_distances must be positive integers, got {self.edge_distances}")
        if len(set(self.edge_distances)) != len(self.edge_distances):
            raise ValueError(f"edge_distances has repeats: {self.edge_distances}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.small_instance_area_in not in ("crop", "annotation"):
            raise ValueError(
                f"small_instance_area_in must be 'crop' or 'annotation', "
                f"got {self.small_instance_area_in!r}"
            )
        if self.size_divisibility < 0 or self.size_divisibility % self.stride:
            raise ValueError(
                f"size_divisibility must be 0 or a multiple of stride {self.stride}, "
                f"got {self.size_divisibility}"
            )
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


@dataclass(frozen=True)
class _Tables:
    """Per-segment lookup tables: entries 0..n-1 the segments, n void, n + 1 padding."""

    train: np.ndarray
    weight: np.ndarray
    edge_pixel: np.ndarray
    """Boundary weight of a pixel (the paper's edge weights)."""
    cut_valid: np.ndarray
    thing: np.ndarray
    key: np.ndarray
    """Segment id for cut targets and ``panoptic_s4``; void, crowd and padding share VOID_ID."""


def _segment_tables(
    segments: Sequence[Mapping[str, Any]], crop_areas: np.ndarray, config: TargetConfig
) -> _Tables:
    """The lookup tables of `segments`; `crop_areas` are their pixel counts in the map."""
    n = len(segments)
    train = np.full(n + 2, IGNORE_LABEL, dtype=np.int64)
    weight = np.zeros(n + 2, dtype=np.float32)
    edge_pixel = np.ones(n + 2, dtype=np.float32)
    cut_valid = np.zeros(n + 2, dtype=bool)
    cut_valid[n + 1] = True  # padding: boundary weight 1
    thing = np.zeros(n + 2, dtype=bool)
    key = np.full(n + 2, VOID_ID, dtype=np.int64)
    in_crop = config.small_instance_area_in == "crop"
    for k, seg in enumerate(segments):
        train[k] = seg["train_id"]
        if seg["iscrowd"]:
            weight[k] = config.crowd_weight
            continue
        key[k] = seg["id"]
        cut_valid[k] = True
        if not seg["isthing"]:
            weight[k] = 1.0
            continue
        thing[k] = True
        area = crop_areas[k] if in_crop else seg["area"]
        small_factor = config.small_instance_weight if area < config.small_instance_area else 1.0
        thing_factor = config.thing_weight if config.semantic_thing_weighting else 1.0
        weight[k] = thing_factor * small_factor
        edge_pixel[k] = config.thing_weight * small_factor
    return _Tables(train, weight, edge_pixel, cut_valid, thing, key)


def _cut_maps(
    tables: _Tables, index_s: np.ndarray, config: TargetConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Cut targets and weights [2·D, h, w] of the stride grid `index_s` (segment indices)."""
    key_s, valid_s = tables.key[index_s], tables.cut_valid[index_s]
    weighted_s = tables.thing[index_s] if config.boundary_thing_weight != 1.0 else None
    edge_pixel_s = tables.edge_pixel[index_s] if config.boundary_pixel_weights else None
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
            cut_targets[out] = key_s[src] != key_s[dst]
            edge_weight = (valid_s[src] & valid_s[dst]).astype(np.float32)
            if edge_pixel_s is not None:
                edge_weight *= np.maximum(edge_pixel_s[src], edge_pixel_s[dst])
            elif weighted_s is not None:
                either_thing = weighted_s[src] | weighted_s[dst]
                edge_weight *= np.where(either_thing, config.boundary_thing_weight, 1.0)
            cut_weights[out] = edge_weight
    return cut_targets, cut_weights


def make_targets(
    panoptic: np.ndarray,
    segments: Sequence[Mapping[str, Any]],
    config: TargetConfig = TargetConfig(),
) -> dict[str, np.ndarray]:
    """Semantic, weight and cut targets for one panoptic map [H, W] (rules: module doc).

    `segments` need ``id``, ``train_id``, ``isthing``, ``iscrowd`` and ``area`` (the reader's
    segment dicts). Returns full-resolution ``semantic`` (int64) and ``weights`` (float32), their
    stride-s samples ``semantic_s4``/``weights_s4``, ``panoptic_s4`` (segment ids; void, crowd
    and padding 0), and ``cut_targets`` / ``cut_weights`` (float32 [2·D, h, w]); all of the
    padded size when ``config.size_divisibility`` pads.
    """
    panoptic = np.asarray(panoptic, dtype=np.int64)
    if panoptic.ndim != 2:
        raise ValueError(f"panoptic must be [H, W], got shape {panoptic.shape}")
    n = len(segments)
    ids = np.asarray([seg["id"] for seg in segments], dtype=np.int64)
    index = _segment_index(panoptic, ids)
    tables = _segment_tables(segments, np.bincount(index.ravel(), minlength=n + 1), config)
    div = config.size_divisibility
    if div:
        pad = [(0, -s % div) for s in index.shape]
        index = np.pad(index, pad, constant_values=n + 1)
    rows = stride_indices(index.shape[0], config.stride)
    cols = stride_indices(index.shape[1], config.stride)
    index_s = index[np.ix_(rows, cols)]
    cut_targets, cut_weights = _cut_maps(tables, index_s, config)
    return {
        "semantic": tables.train[index],
        "weights": tables.weight[index],
        "semantic_s4": tables.train[index_s],
        "weights_s4": tables.weight[index_s],
        "panoptic_s4": tables.key[index_s],
        "cut_targets": cut_targets,
        "cut_weights": cut_weights,
    }
