"""The original's instance confidence for mask AP (``eval.instance_score: paper``).

A thing segment's score is the sum of two terms, as the original computes it
(``panoptic_seg_affinity.py``, ``MaskScore`` in ``losses.py``):

- semantic: the mean, over the segment's pixels at the network's input resolution, of its
  class's semantic logit upsampled ×4 bilinearly (``align_corners=False``);
- boundary: for every edge distance, ``mean(logit·cut) − mean(logit·join)``, where an edge is
  *cut* when exactly one end lies in the segment and *joined* when both do, and the means run
  over all ``2·h·w`` stored positions of that distance's two maps (edges leaving the grid count
  as 0). Every distance has the same ``2·h·w``, so the term is ``(Σ cut − Σ join) / (2·h·w)``
  over the grid's edges.

The logits are recovered from the cost maps with the model's cost scalars (the affine maps of
:class:`cops.models.AffineCosts`), so checkpoints and exports need no extra output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cops.solver import edge_maps_to_costs


def logits_from_costs(
    node_costs: np.ndarray,
    edge_costs: np.ndarray,
    a: float,
    b: float,
    alpha: Sequence[float],
    beta: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Semantic logits [K, h, w] and boundary logits [2D, h, w] of one image's cost maps.

    Inverts ``node = a·(−logit) + b`` and ``edge = |α_d|·(−logit) + β_d`` (``alpha`` as used,
    i.e. ``|α|``); a scale of 0 cannot be inverted and raises ValueError.
    """
    alpha_arr = np.repeat(np.abs(np.asarray(alpha, dtype=np.float32)), 2)[:, None, None]
    beta_arr = np.repeat(np.asarray(beta, dtype=np.float32), 2)[:, None, None]
    if a == 0 or not np.all(alpha_arr):
        raise ValueError("cost scalars a and alpha must be non-zero to recover the logits")
    semantic = (np.float32(b) - np.asarray(node_costs, dtype=np.float32)) / np.float32(a)
    boundary = (beta_arr - np.asarray(edge_costs, dtype=np.float32)) / alpha_arr
    return semantic, boundary


def _semantic_sums(
    semantic_logits: np.ndarray, classes: np.ndarray, input_size: tuple[int, int], stride: int
) -> np.ndarray:
    """Per class of `classes` and node, the sum of its ×stride bilinear logits over the node's
    input pixels (inside the input size): float64 [len(classes), h, w]."""
    h, w = semantic_logits.shape[1:]
    chosen = torch.from_numpy(np.ascontiguousarray(semantic_logits[classes]))[None]
    up = F.interpolate(chosen, scale_factor=stride, mode="bilinear", align_corners=False)[0]
    up = up.double()
    up[:, input_size[0] :, :] = 0.0
    up[:, :, input_size[1] :] = 0.0
    cells = up.reshape(len(classes), h, stride, w, stride).sum(dim=(2, 4))
    return cells.numpy()


def paper_instance_scores(
    segment: np.ndarray,
    seg_class: np.ndarray,
    scored: np.ndarray,
    semantic_logits: np.ndarray,
    boundary_logits: np.ndarray,
    edges: np.ndarray,
    distances: Sequence[int],
    input_size: tuple[int, int],
    stride: int = 4,
) -> np.ndarray:
    """The original's score (module doc) of every segment flagged in `scored`, float64 [S].

    ``segment`` [h*w]: each node's segment 0..S-1; ``seg_class`` [S] their classes; the logits
    are one image's maps [K, h, w] and [2D, h, w]; ``edges`` the grid graph of that size;
    ``input_size`` the network input's (H', W'). Unscored segments get 0.
    """
    h, w = semantic_logits.shape[1:]
    count = seg_class.size
    scores = np.zeros(count, dtype=np.float64)
    wanted = np.flatnonzero(scored)
    if wanted.size == 0:
        return scores
    logit = np.asarray(edge_maps_to_costs(boundary_logits, distances), dtype=np.float64)
    src, dst = segment[edges[:, 0]], segment[edges[:, 1]]
    inside = src == dst
    join = np.bincount(src[inside], weights=logit[inside], minlength=count)
    crossing = logit[~inside]
    cut = np.bincount(src[~inside], weights=crossing, minlength=count)
    cut += np.bincount(dst[~inside], weights=crossing, minlength=count)
    scores[wanted] = (cut[wanted] - join[wanted]) / (2.0 * h * w)

    classes, class_index = np.unique(seg_class[wanted], return_inverse=True)
    sums = _semantic_sums(semantic_logits, classes, input_size, stride)
    rows = np.bincount(np.minimum(np.arange(input_size[0]) // stride, h - 1), minlength=h)
    cols = np.bincount(np.minimum(np.arange(input_size[1]) // stride, w - 1), minlength=w)
    node_area = np.outer(rows, cols).ravel()
    area = np.bincount(segment, weights=node_area, minlength=count)[wanted]
    class_of_segment = np.full(count, -1)
    class_of_segment[wanted] = class_index.ravel()
    node_class = class_of_segment[segment]
    nodes = np.flatnonzero(node_class >= 0)
    values = sums.reshape(classes.size, -1)[node_class[nodes], nodes]
    total = np.bincount(segment[nodes], weights=values, minlength=count)[wanted]
    scores[wanted] += np.where(area > 0, total / np.maximum(area, 1), 0.0)
    return scores
