"""The picture row of one image in the evaluation report: image | ground truth | prediction |
boundary probability, small enough to embed, with false negatives and false positives outlined.

Maps are resampled to a fixed width (nearest neighbour for ids) before anything is drawn, so a
row costs the same for a Cityscapes image as for a thumbnail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from cops.inference.outputs import render_overlay
from cops.inference.result import PanopticPrediction

PANEL_WIDTH = 480
"""Width in pixels of each of the four pictures (smaller images are enlarged, so that the
overlay's legend and outlines keep a readable size)."""
FN_COLOUR = (0, 255, 255)
"""Outline of ground-truth segments that were missed (false negatives), RGB."""
FP_COLOUR = (255, 255, 0)
"""Outline of predicted segments that match nothing (false positives), RGB."""


def _resample_index(size: int, new: int) -> np.ndarray:
    """Source row/column of each of `new` pixels resampling `size` (pixel centres)."""
    return ((2 * np.arange(new) + 1) * size) // (2 * new)


def _outline(canvas: np.ndarray, ids: np.ndarray, chosen: Sequence[int], colour: tuple) -> None:
    """Draw the contours of the segments `chosen` (ids in `ids`) onto `canvas` in place."""
    if not len(chosen):
        return
    mask = np.isin(ids, np.asarray(chosen)).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, colour, 2, cv2.LINE_AA)


def _overlay(
    image: np.ndarray, ids: np.ndarray, segments: Sequence[dict[str, Any]], classes: Any
) -> np.ndarray:
    """The project's colour overlay of a segment map (ground truth or prediction)."""
    listed = {int(s["id"]) for s in segments}
    ids = np.where(np.isin(ids, list(listed)), ids, 0).astype(np.int32)  # unlisted ids: void
    shown = PanopticPrediction(ids=ids, segments=list(segments), semantic=np.empty((0, 0)))
    return render_overlay(image, shown, classes)


def boundary_picture(boundary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boundary-probability map (any grid, values in [0, 1]) as an RGB heat map of `size`."""
    grey = np.clip(np.rint(np.asarray(boundary, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def render_row(
    image: np.ndarray,
    gt_ids: np.ndarray,
    gt_segments: Sequence[dict[str, Any]],
    prediction: PanopticPrediction,
    boundary: np.ndarray | None,
    classes: Mapping[str, Any],
    missed: Sequence[int] = (),
    spurious: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """The four RGB pictures of one image, PANEL_WIDTH wide.

    `missed` are ground-truth ids outlined as false negatives, `spurious` predicted ids outlined
    as false positives; `boundary` is the predicted boundary probability (None: a grey panel).
    """
    height, width = gt_ids.shape
    new_w = PANEL_WIDTH
    new_h = max(1, round(height * new_w / width))
    rows, cols = _resample_index(height, new_h), _resample_index(width, new_w)
    shrink = new_w < width
    small = cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    gt_small = np.asarray(gt_ids)[rows][:, cols]
    pred_small = np.asarray(prediction.ids)[rows][:, cols]
    truth = _overlay(small, gt_small, gt_segments, classes)
    _outline(truth, gt_small, missed, FN_COLOUR)
    predicted = _overlay(small, pred_small, prediction.segments, classes)
    _outline(predicted, pred_small, spurious, FP_COLOUR)
    if boundary is None:
        heat = np.full_like(small, 128)
    else:
        heat = boundary_picture(boundary, (new_h, new_w))
    return {"image": small, "truth": truth, "prediction": predicted, "boundary": heat}
