"""The panoptic prediction of one image, as produced by the predictor and consumed by writers."""

from __future__ import annotations

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
    """

    ids: np.ndarray
    segments: list[dict[str, Any]]
    semantic: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
