"""Tracking by overlap: thing ids follow mask IoU from frame to frame, new ids below the bar."""

from __future__ import annotations

import numpy as np
import pytest

from cops.inference.result import PanopticPrediction
from cops.inference.tracking import OverlapTracker, mask_ious

CATEGORY_IDS = [7, 23, 26, 24]  # road, sky, car, person
ISTHING = [False, False, True, True]


def test_tracker_matches_by_iou_and_starts_new_tracks_below_the_threshold():

    def frame(boxes: list[tuple[int, int]]) -> PanopticPrediction:
        ids = np.full((20, 40), 1, np.int32)
        segments = [{"id": 1, "category_id": 7, "isthing": False}]
        for i, (x, w) in enumerate(boxes, start=2):
            ids[5:15, x : x + w] = i
            segments.append({"id": i, "category_id": 26, "isthing": True})
        return PanopticPrediction(ids=ids, segments=segments, semantic=np.zeros((20, 40)))

    tracker = OverlapTracker(CATEGORY_IDS, ISTHING, track_iou=0.5)
    first = tracker.update(frame([(0, 10), (20, 10)]))
    # listed in the other order and shifted by 2 px (IoU 8/12): the ids follow the boxes
    second = tracker.update(frame([(22, 10), (2, 10)]))
    assert first.ids[10, 5] == second.ids[10, 7] and first.ids[10, 25] == second.ids[10, 27]
    assert first.ids[10, 5] != first.ids[10, 25]
    assert second.ids[0, 0] == 1 and {s["id"] for s in second.segments} == {1, 5, 6}
    # a 6 px jump (IoU 4/16 < 0.5) starts a new track with a tint no other car uses now
    third = tracker.update(frame([(28, 10), (2, 10)]))
    assert third.ids[10, 35] not in (first.ids[10, 5], first.ids[10, 25])
    assert tracker.tracks == 3
    assert tracker.tints[int(third.ids[10, 35])] != tracker.tints[int(third.ids[10, 5])]
    iou = mask_ious(first.ids, second.ids, [5, 6], [5, 6])
    np.testing.assert_allclose(iou, [[8 / 12, 0], [0, 8 / 12]])
    with pytest.raises(ValueError, match="track_iou"):
        OverlapTracker(CATEGORY_IDS, ISTHING, track_iou=0.0)
