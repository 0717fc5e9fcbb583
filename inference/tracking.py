"""Tracking by overlap: thing instances keep their id from one video frame to the next.

This is the *tracking-by-overlap baseline* of video panoptic segmentation and nothing more: each
frame is segmented on its own, and each thing segment is then matched to the previous frame's
segments of the same class by mask IoU, one to one (Hungarian assignment, maximising the summed
IoU). A segment whose best IoU is below ``track_iou`` starts a new track. There is no motion
model, no appearance model and no memory beyond one frame: an instance that is missed for one
frame, or moves by more than about half its size between frames, gets a new id.

Ids in a tracked frame: a stuff segment has the id ``1 + its class index`` in every frame; a thing
track has a fixed id from ``1 + number of classes`` upwards, and a colour index (``tint``) chosen
at its birth so that no other track of its class in that frame shares it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from cops.inference.result import PanopticPrediction

MAX_ID = (1 << 24) - 1
"""The largest segment id a COCO panoptic PNG holds."""


def mask_ious(
    previous: np.ndarray, current: np.ndarray, prev_ids: Sequence[int], cur_ids: Sequence[int]
) -> np.ndarray:
    """IoU [len(prev_ids), len(cur_ids)] between the segments `prev_ids` of the map `previous`
    and `cur_ids` of `current` (two id maps of one size)."""
    p_lut = {int(v): i for i, v in enumerate(prev_ids)}
    c_lut = {int(v): i for i, v in enumerate(cur_ids)}
    p_vals, p_inv = np.unique(previous, return_inverse=True)
    c_vals, c_inv = np.unique(current, return_inverse=True)
    p_row = np.asarray([p_lut.get(int(v), len(p_lut)) for v in p_vals])[p_inv.ravel()]
    c_col = np.asarray([c_lut.get(int(v), len(c_lut)) for v in c_vals])[c_inv.ravel()]
    width = len(c_lut) + 1
    table = np.bincount(p_row * width + c_col, minlength=(len(p_lut) + 1) * width)
    table = table.reshape(len(p_lut) + 1, width)
    inter = table[:-1, :-1].astype(np.float64)
    union = table[:-1].sum(axis=1)[:, None] + table[:, :-1].sum(axis=0)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class OverlapTracker:
    """Gives the thing segments of successive frames persistent ids (module doc).

    ``category_ids`` and ``isthing`` describe the classes in class order; feed frames in order
    to :meth:`update`. Only the previous frame's id map is kept, so memory does not grow.
    """

    def __init__(
        self, category_ids: Sequence[int], isthing: Sequence[bool], track_iou: float = 0.5
    ) -> None:
        if not 0.0 < track_iou <= 1.0:
            raise ValueError(f"track_iou: expected a mask IoU in (0, 1], got {track_iou}")
        self.track_iou = float(track_iou)
        self.class_of = {int(c): k for k, c in enumerate(category_ids)}
        self.isthing = [bool(t) for t in isthing]
        self.next_id = len(self.isthing) + 1
        self.tints: dict[int, int] = {}
        self._previous: np.ndarray | None = None
        self._previous_class: dict[int, int] = {}

    @property
    def tracks(self) -> int:
        """How many thing tracks have been started."""
        return self.next_id - len(self.isthing) - 1

    def _new_track(self, taken: set[int]) -> tuple[int, int]:
        """A fresh track id and the smallest tint not in `taken`."""
        if self.next_id > MAX_ID:
            raise ValueError(f"more than {MAX_ID - len(self.isthing)} tracks in one video")
        track, self.next_id = self.next_id, self.next_id + 1
        tint = next(t for t in range(len(taken) + 1) if t not in taken)
        self.tints[track] = tint
        return track, tint

    def _assign(self, ids: np.ndarray, segments: list[dict[str, Any]], k: int) -> dict[int, int]:
        """Track ids for this frame's thing segments of class `k` (frame id → track id)."""
        current = [int(s["id"]) for s in segments]
        old = [t for t, c in self._previous_class.items() if c == k]
        mapping: dict[int, int] = {}
        if old and self._previous is not None and self._previous.shape == ids.shape:
            iou = mask_ious(self._previous, ids, old, current)
            rows, cols = linear_sum_assignment(iou, maximize=True)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.track_iou:
                    mapping[current[c]] = old[r]
        taken = {self.tints[t] for t in mapping.values()}
        for seg_id in current:
            if seg_id not in mapping:
                mapping[seg_id], tint = self._new_track(taken)
                taken.add(tint)
        return mapping

    def update(self, prediction: PanopticPrediction) -> PanopticPrediction:
        """The frame's prediction with tracked ids (stuff: by class; things: by track)."""
        ids = np.asarray(prediction.ids)
        by_class: dict[int, list[dict[str, Any]]] = {}
        for seg in prediction.segments:
            by_class.setdefault(self.class_of[int(seg["category_id"])], []).append(seg)
        new_id: dict[int, int] = {}
        for k, segments in by_class.items():
            if self.isthing[k]:
                new_id.update(self._assign(ids, segments, k))
            else:
                new_id.update({int(s["id"]): k + 1 for s in segments})
        lut = np.zeros(int(ids.max(initial=0)) + 1, dtype=np.int32)
        for old, new in new_id.items():
            lut[old] = new
        tracked = lut[ids]
        segments = [{**s, "id": new_id[int(s["id"])]} for s in prediction.segments]
        self._previous = tracked
        self._previous_class = {
            s["id"]: self.class_of[int(s["category_id"])]
            for s in segments
            if self.isthing[self.class_of[int(s["category_id"])]]
        }
        return dataclasses.replace(prediction, ids=tracked, segments=segments)
