"""The panoptic prediction of one image, as produced by the predictor and consumed by writers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PanopticPrediction:
    """A panoptic labelling at the input image's size, in COCO panoptic terms.

    ``ids`` int32 [H, W]: segment id per pixel, 0 = void (dropped or unlabelled pixels).
    ``segments``: one dict per id present, with ``id``, ``category_id`` (dataset category id),
    ``isthing``, ``area`` (pixels), ``bbox`` ``[x, y, w, h]`` and ``score`` (instance confidence
    in [0, 1]; 1.0 for stuff). ``semantic`` uint8 [H, W]: train id per pixel, 255 = void.
    ``timings``: seconds this image spent in each stage (``cnn``, ``solver``, ``rest``).
    ``boundary`` float32 [h, w] (predictors fill it): the predicted probability of a boundary
    at each stride-grid node (:func:`boundary_map`), for reports; None when not known.
    """

    ids: np.ndarray
    segments: list[dict[str, Any]]
    semantic: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    boundary: np.ndarray | None = None


def boundary_map(boundary_prob: Any, distances: Sequence[int]) -> np.ndarray:
    """Per node, the larger of the boundary probabilities of its edges to the next node down and
    to the right at the shortest distance: float32 [h, w] from the maps [2D, h, w]."""
    shortest = int(np.argmin(np.asarray(distances)))
    pair = boundary_prob[2 * shortest : 2 * shortest + 2]
    if hasattr(pair, "detach"):  # a torch tensor, on any device
        pair = pair.detach().float().cpu().numpy()
    return np.asarray(pair, dtype=np.float32).max(axis=0)
