"""From one image's AMWC solution on the stride-4 grid to a panoptic prediction at image size.

Rules (DESIGN §5, §7):

- Segments: one per stuff class present (all its components together), one per thing component:
  the solver's segment rule (``cops.solver.segments``), the one the training layer uses.
- Upsampling: output pixel ``(y, x)`` of an ``H × W`` image whose network input was ``H' × W'``
  (``H' = H`` unless a test size was used) lies at input row ``⌊(y + ½)·H'/H⌋`` (pixel-centre
  convention, as the resizing transforms) and takes the node of the stride cell holding it,
  ``row // stride``. This inverts the targets' sampling (node ``i`` ↔ input pixel
  ``stride·i + stride//2``, inside cell ``i``), so node ``(i, j)`` covers input pixels
  ``[4i, 4i+4) × [4j, 4j+4)``.
- Minimum area: a segment is kept when its area *in output pixels* (after upsampling, i.e. at the
  original image size) is at least ``thing_min_area`` / ``stuff_min_area``; smaller ones become
  void (id 0; semantic 255 unless ``semantic_from="nodes"``, the original's ``sem_seg``, which
  keeps every node's class). Areas are computed exactly from the per-node pixel counts of the
  upsampling, so they equal the pixel counts of the final map.
- Padded input (``valid_input``, the original's COCO inference): the solution covers the whole
  grid of the padded network input, the image being its top-left ``valid_input`` part; the
  minimum-area rule then reads each segment's area in padded-input pixels (its nodes ×
  stride², padding included), the output shows the image's part only, and segments that lie
  wholly in the padding are dropped.
- Ids are renumbered 1..S (stuff classes in class order, then thing components); ``bbox`` is COCO
  ``[x, y, w, h]`` of the final map.
- Score of a thing instance (its confidence for mask AP): ``instance_score="paper"`` is the
  original's (:mod:`cops.inference.instance_score`); ours, ``contrast``: with ``b`` the mean
  boundary probability of the grid edges crossing its border (one end inside the solver's
  segment, one outside) and ``i`` the mean over edges with both ends inside,
  ``score = (1 + b − i) / 2`` — a linear map of the contrast ``b − i ∈ [−1, 1]`` onto
  ``[0, 1]``: 1 for a crisp instance (border certain, inside clean), ½ when the border is no
  stronger than the inside. A mean over no edges counts as ½ (no evidence). Stuff segments
  score 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cops.inference.instance_score import paper_instance_scores
from cops.inference.result import PanopticPrediction
from cops.solver import edge_maps_to_costs, grid_graph, segments_from_solution

VOID_SEMANTIC = 255
NO_EVIDENCE = 0.5
"""Mean boundary probability assumed over no edges (single-node or whole-image instances)."""


def axis_nodes(out_size: int, in_size: int, stride: int) -> np.ndarray:
    """Grid node index for every output pixel along one axis (see the module doc)."""
    pixels = np.arange(out_size, dtype=np.int64)
    resized = ((2 * pixels + 1) * in_size) // (2 * out_size)  # ⌊(y + ½)·in/out⌋ exactly
    return resized // stride


def _segment_stats(
    values: np.ndarray, segments: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment sum of ``values`` and number of entries."""
    return (
        np.bincount(segments, weights=values, minlength=count),
        np.bincount(segments, minlength=count),
    )


def instance_scores(
    segment: np.ndarray, boundary_prob: np.ndarray, edges: np.ndarray, distances: Sequence[int]
) -> np.ndarray:
    """``(1 + mean border prob − mean inside prob) / 2`` per segment (module doc), float64 [S].

    ``segment`` [h*w] holds each node's segment index 0..S-1, ``boundary_prob`` [2D, h, w] the
    sigmoid boundary maps, ``edges`` the grid graph of that size and ``distances``.
    """
    count = int(segment.max()) + 1 if segment.size else 0
    prob = np.asarray(edge_maps_to_costs(boundary_prob, distances), dtype=np.float64)
    src, dst = segment[edges[:, 0]], segment[edges[:, 1]]
    inside = src == dst
    in_sum, in_count = _segment_stats(prob[inside], src[inside], count)
    cross = ~inside
    border = np.concatenate([src[cross], dst[cross]])
    out_sum, out_count = _segment_stats(np.tile(prob[cross], 2), border, count)
    mean_in = np.where(in_count > 0, in_sum / np.maximum(in_count, 1), NO_EVIDENCE)
    mean_out = np.where(out_count > 0, out_sum / np.maximum(out_count, 1), NO_EVIDENCE)
    return np.clip((1.0 + mean_out - mean_in) / 2.0, 0.0, 1.0)


def _pixel_ranges(nodes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last output pixel of each node along one axis (``nodes`` is non-decreasing)."""
    index = np.arange(size)
    return np.searchsorted(nodes, index, "left"), np.searchsorted(nodes, index, "right") - 1


def _check_inputs(
    prob: np.ndarray,
    labels: Any,
    components: Any,
    isthing: Sequence[bool],
    category_ids: Sequence[int],
    output_size: tuple[int, int],
    input_size: tuple[int, int] | None,
    edge_distances: Sequence[int],
    stride: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Validate one image's inputs; return labels and components [h*w], thing flags and category
    ids [K], and the sizes (H, W, H', W') of the output and the network input."""
    if prob.ndim != 3 or prob.shape[0] != 2 * len(edge_distances):
        raise ValueError(
            f"boundary_prob: expected shape [{2 * len(edge_distances)}, h, w], got {prob.shape}"
        )
    h, w = prob.shape[1:]
    out_h, out_w = (int(s) for s in output_size)
    in_h, in_w = (out_h, out_w) if input_size is None else (int(s) for s in input_size)
    if min(out_h, out_w, in_h, in_w) < 1:
        raise ValueError(f"sizes must be positive, got output {output_size}, input {input_size}")
    if (h, w) != (-(-in_h // stride), -(-in_w // stride)):
        raise ValueError(
            f"boundary_prob: grid {h}x{w} does not match input size {in_h}x{in_w} at stride "
            f"{stride} (expected {-(-in_h // stride)}x{-(-in_w // stride)})"
        )
    thing = np.asarray(isthing, dtype=bool)
    cats = np.asarray(category_ids, dtype=np.int64)
    k = thing.size
    if cats.shape != (k,) or k == 0:
        raise ValueError(f"isthing and category_ids: expected K > 0 entries each, got {k}, {cats}")
    lab = np.asarray(labels, dtype=np.int64).ravel()
    comp = np.asarray(components, dtype=np.int64).ravel()
    if lab.shape != (h * w,) or comp.shape != (h * w,):
        raise ValueError(
            f"labels/components: expected {h * w} nodes ({h}x{w}), got {lab.size}, {comp.size}"
        )
    if lab.min() < 0 or lab.max() >= k:
        raise ValueError(f"labels: classes must lie in [0, {k}), got [{lab.min()}, {lab.max()}]")
    return lab, comp, thing, cats, (out_h, out_w, in_h, in_w)


def solver_segments(
    labels: np.ndarray, components: np.ndarray, thing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Segment index per node [N] and class per segment [S] by the solver's segment rule
    (``cops.solver.segments``, shared with the training layer)."""
    segment, classes, _ = segments_from_solution(
        torch.from_numpy(labels).reshape(1, -1),
        torch.from_numpy(components).reshape(1, -1),
        torch.from_numpy(thing),
    )
    return segment[0].numpy(), classes[0].numpy()


def _boxes(
    segment: np.ndarray,
    covered: np.ndarray,
    count: int,
    grid: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """COCO ``[x, y, w, h]`` per segment [S, 4] from the extreme covered nodes of each segment.

    ``covered`` [h*w] marks the nodes to count; ``rows`` / ``cols`` map output pixels to nodes.
    """
    h, w = grid
    seg_cov = segment[covered]
    node_row, node_col = np.divmod(np.flatnonzero(covered), w)
    lo_row = np.full(count, h, dtype=np.int64)
    hi_row = np.full(count, -1, dtype=np.int64)
    lo_col = np.full(count, w, dtype=np.int64)
    hi_col = np.full(count, -1, dtype=np.int64)
    np.minimum.at(lo_row, seg_cov, node_row)
    np.maximum.at(hi_row, seg_cov, node_row)
    np.minimum.at(lo_col, seg_cov, node_col)
    np.maximum.at(hi_col, seg_cov, node_col)
    first_y, last_y = _pixel_ranges(rows, h)
    first_x, last_x = _pixel_ranges(cols, w)
    x0, y0 = first_x[lo_col.clip(0, w - 1)], first_y[lo_row.clip(0, h - 1)]
    x1, y1 = last_x[hi_col.clip(0, w - 1)], last_y[hi_row.clip(0, h - 1)]
    return np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)


def _scores(
    kind: str,
    solution: tuple[np.ndarray, np.ndarray, np.ndarray],
    prob: np.ndarray,
    logits: tuple[np.ndarray, np.ndarray] | None,
    edges: np.ndarray,
    edge_distances: Sequence[int],
    input_size: tuple[int, int],
    stride: int,
) -> np.ndarray:
    """Instance scores of every segment: ``contrast`` (ours, module doc) or ``paper`` (the
    original's, :mod:`cops.inference.instance_score`, from ``logits``) for the segments flagged in
    ``solution = (segment, seg_class, scored)``."""
    segment, seg_class, scored = solution
    if kind == "contrast":
        return instance_scores(segment, prob, edges, edge_distances)
    if kind != "paper":
        raise ValueError(f"instance_score: expected 'paper' or 'contrast', got {kind!r}")
    if logits is None:
        raise ValueError("instance_score 'paper' needs the semantic and boundary logits")
    return paper_instance_scores(
        segment, seg_class, scored, *logits, edges, edge_distances, input_size, stride
    )


def _valid_region(valid_input: tuple[int, int] | None, in_h: int, in_w: int) -> tuple[int, int]:
    """The image's part (H', W') of a padded network input of size (in_h, in_w)."""
    if valid_input is None:
        return in_h, in_w
    vh, vw = (int(s) for s in valid_input)
    if not (0 < vh <= in_h and 0 < vw <= in_w):
        raise ValueError(f"valid_input {valid_input} must lie inside the input {in_h}x{in_w}")
    return vh, vw


def _areas(
    segment: np.ndarray,
    count: int,
    rows: np.ndarray,
    cols: np.ndarray,
    grid: tuple[int, int],
    stride: int,
    padded: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output pixels of every node [h*w] and segment [S] (exact, from the upsampling), and the
    areas the minimum-area rule reads: the same, or with `padded` each segment's nodes ×
    stride² in the padded input (module doc)."""
    h, w = grid
    node_area = np.outer(np.bincount(rows, minlength=h), np.bincount(cols, minlength=w)).ravel()
    area = np.bincount(segment, weights=node_area, minlength=count).round().astype(np.int64)
    if not padded:
        return node_area, area, area
    return node_area, area, np.bincount(segment, minlength=count) * stride * stride


def postprocess(
    labels: Any,
    components: Any,
    boundary_prob: Any,
    *,
    edge_distances: Sequence[int],
    isthing: Sequence[bool],
    category_ids: Sequence[int],
    thing_min_area: int,
    stuff_min_area: int,
    output_size: tuple[int, int],
    input_size: tuple[int, int] | None = None,
    stride: int = 4,
    edges: np.ndarray | None = None,
    semantic_from: str = "segments",
    instance_score: str = "contrast",
    logits: tuple[np.ndarray, np.ndarray] | None = None,
    valid_input: tuple[int, int] | None = None,
) -> PanopticPrediction:
    """The panoptic prediction of one image from its AMWC solution (rules: module doc).

    ``labels`` / ``components`` [h*w]: class and component per node of the valid stride grid
    (``h = ⌈H'/stride⌉``, ``w = ⌈W'/stride⌉`` for the network input size ``input_size`` =
    ``(H', W')``, default ``output_size``); ``boundary_prob`` [2D, h, w]; ``output_size`` =
    ``(H, W)`` of the original image. ``edges`` may pass a precomputed ``grid_graph(h, w, d)``.
    ``semantic_from``: ``nodes`` takes the semantic map from every node's label (the original's
    ``sem_seg``, before small segments are dropped), ``segments`` from the kept segments only.
    ``instance_score``: ``contrast`` or ``paper`` (needs ``logits``: semantic [K, h, w] and
    boundary [2D, h, w]). ``valid_input`` (H', W'): the solution is of the whole padded input
    ``input_size`` and the image its top-left part (module doc). Returns ids, segments and
    semantic map at ``(H, W)``; ``timings`` is left empty.
    """
    prob = np.asarray(boundary_prob, dtype=np.float32)
    lab, comp, thing, cats, (out_h, out_w, in_h, in_w) = _check_inputs(
        prob, labels, components, isthing, category_ids, output_size, input_size,
        edge_distances, stride,
    )  # fmt: skip
    h, w = prob.shape[1:]
    segment, seg_class = solver_segments(lab, comp, thing)
    count = seg_class.size
    seg_thing = thing[seg_class]

    in_h, in_w = _valid_region(valid_input, in_h, in_w)
    rows, cols = axis_nodes(out_h, in_h, stride), axis_nodes(out_w, in_w, stride)
    padded = valid_input is not None
    node_area, area, rule_area = _areas(segment, count, rows, cols, (h, w), stride, padded)
    min_area = np.where(seg_thing, int(thing_min_area), int(stuff_min_area))
    keep = (rule_area >= min_area) & (area > 0)
    new_id = np.zeros(count, dtype=np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)

    node_ids = new_id[segment].reshape(h, w)
    ids = node_ids[rows][:, cols]
    labelled = (node_ids > 0) | (semantic_from == "nodes")
    node_sem = np.where(labelled, lab.reshape(h, w), VOID_SEMANTIC).astype(np.uint8)
    semantic = node_sem[rows][:, cols]
    boxes = _boxes(segment, (node_area > 0) & keep[segment], count, (h, w), rows, cols)
    if edges is None:
        edges = grid_graph(h, w, edge_distances)
    solution = (segment, seg_class, keep & seg_thing)
    score = _scores(
        instance_score, solution, prob, logits, edges, edge_distances, (in_h, in_w), stride
    )
    segments = [
        {
            "id": int(new_id[s]),
            "category_id": int(cats[seg_class[s]]),
            "isthing": bool(seg_thing[s]),
            "area": int(area[s]),
            "bbox": [int(v) for v in boxes[s]],
            "score": float(score[s]) if seg_thing[s] else 1.0,
        }
        for s in np.flatnonzero(keep)
    ]
    return PanopticPrediction(ids=ids, segments=segments, semantic=semantic)
