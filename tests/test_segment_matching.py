"""Segment-level matching: PQ by COCO size range sums to image_pq_stats, class confusions."""

from __future__ import annotations

import numpy as np
import pytest

from cops.benchmarks.eval import perturb
from cops.datasets.synthetic import SYNTHETIC_CATEGORIES, generate_scene
from cops.evaluation import CategoryIndex, PQStats, image_pq_stats
from cops.evaluation.segment_matching import confusion_counts, match_segments, size_stats

THINGS = [c.id for c in SYNTHETIC_CATEGORIES if c.isthing]
STUFF = [c.id for c in SYNTHETIC_CATEGORIES if not c.isthing]
CATEGORIES = CategoryIndex([c.id for c in SYNTHETIC_CATEGORIES])


@pytest.mark.parametrize("seed", range(12))
def test_size_ranges_sum_to_the_image_pq_statistics(seed):
    rng = np.random.default_rng(seed)
    _, gt_ids, gt_segments = generate_scene((7, seed), 48, 96)
    for seg in gt_segments:  # some crowd things, whose rules differ
        seg["iscrowd"] = int(seg["category_id"] in THINGS and rng.random() < 0.2)
    pred_ids, pred_segments = perturb(gt_ids, gt_segments, rng, THINGS, STUFF)
    whole = image_pq_stats(gt_ids, gt_segments, pred_ids, pred_segments, CATEGORIES)
    match = match_segments(gt_ids, gt_segments, pred_ids, pred_segments, CATEGORIES)
    total = PQStats.zeros(len(CATEGORIES))
    for part in size_stats(match, len(CATEGORIES)).values():
        total += part
    for field in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(total, field), getattr(whole, field))
    np.testing.assert_allclose(total.iou, whole.iou, rtol=0, atol=1e-12)


def test_sizes_and_confusions_by_hand():
    """A 40x40 car predicted as a person (a confusion: one FN and one FP, both medium), a 3x3
    car found (small) and a 100x200 road found (large)."""
    car, person, road = THINGS[0], THINGS[1], STUFF[0]
    gt = np.zeros((200, 200), np.int64)
    gt[:40, :40], gt[50:53, 50:53], gt[100:, :] = 1, 2, 3
    gt_segments = [{"id": 1, "category_id": car}, {"id": 2, "category_id": car},
                   {"id": 3, "category_id": road}]  # fmt: skip
    pred_segments = [{"id": 1, "category_id": person}, {"id": 2, "category_id": car},
                     {"id": 3, "category_id": road}]  # fmt: skip
    match = match_segments(gt, gt_segments, gt.copy(), pred_segments, CATEGORIES)
    k = len(CATEGORIES)
    counts = confusion_counts(match, k)
    car_k, person_k, road_k = CATEGORIES.positions(np.array([car, person, road]))
    assert counts[car_k, person_k] == 1 and counts.sum() == 1
    sizes = size_stats(match, k)
    small, medium, large = sizes["small"], sizes["medium"], sizes["large"]
    assert (small.tp[car_k], small.fp.sum(), small.fn.sum()) == (1, 0, 0)
    assert (medium.tp.sum(), medium.fn[car_k], medium.fp[person_k]) == (0, 1, 1)
    assert (large.tp[road_k], large.fp.sum(), large.fn.sum()) == (1, 0, 0)
    assert large.iou[road_k] == 1.0
