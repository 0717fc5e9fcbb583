"""The report's data: the lowest-PQ images the collector keeps (with their pictures) and the
training-curve plot."""

from __future__ import annotations

import cv2
import numpy as np

from cops.benchmarks.eval import perturb
from cops.datasets.synthetic import SYNTHETIC_CATEGORIES, generate_scene
from cops.evaluation import CategoryIndex, image_pq_stats
from cops.evaluation.report_data import ReportCollector
from cops.evaluation.report_plots import training_curve
from cops.inference.result import PanopticPrediction

THINGS = [c.id for c in SYNTHETIC_CATEGORIES if c.isthing]
STUFF = [c.id for c in SYNTHETIC_CATEGORIES if not c.isthing]
CATEGORIES = CategoryIndex([c.id for c in SYNTHETIC_CATEGORIES])
CLASSES = {
    "names": [c.name for c in SYNTHETIC_CATEGORIES],
    "category_ids": [c.id for c in SYNTHETIC_CATEGORIES],
    "isthing": [c.isthing for c in SYNTHETIC_CATEGORIES],
    "colors": [list(c.color) for c in SYNTHETIC_CATEGORIES],
}


def _scene(seed: int, crowd: bool = True) -> tuple[np.ndarray, np.ndarray, list, np.ndarray, list]:
    """A synthetic image, its ground truth (some crowd things) and a perturbed prediction."""
    rng = np.random.default_rng(seed)
    image, gt_ids, gt_segments = generate_scene((7, seed), 48, 96)
    for seg in gt_segments:
        seg["iscrowd"] = int(crowd and seg["category_id"] in THINGS and rng.random() < 0.2)
    pred_ids, pred_segments = perturb(gt_ids, gt_segments, rng, THINGS, STUFF)
    return image, gt_ids, gt_segments, pred_ids, pred_segments


def test_collector_keeps_the_lowest_pq_images():
    collector = ReportCollector(CLASSES, worst=3)
    names = [c.name for c in SYNTHETIC_CATEGORIES]
    isthing = [c.isthing for c in SYNTHETIC_CATEGORIES]
    pqs = {}
    for seed in range(8):
        image, gt_ids, gt_segments, pred_ids, pred_segments = _scene(seed, crowd=False)
        stats = image_pq_stats(gt_ids, gt_segments, pred_ids, pred_segments, CATEGORIES)
        pqs[f"{seed}.png"] = stats.summary(names, isthing)["all"]["pq"]
        sample = {"image": image, "panoptic": gt_ids, "segments": gt_segments,
                  "file_name": f"{seed}.png", "image_id": seed}  # fmt: skip
        prediction = PanopticPrediction(pred_ids.astype(np.int32), pred_segments, np.empty(0))
        collector.add(sample, prediction, stats)
    kept = collector.worst_images()
    expected = sorted(pqs, key=lambda name: (pqs[name], int(name.split(".")[0])))[:3]
    assert [w.file_name for w in kept] == expected
    assert [w.pq for w in kept] == [pqs[n] for n in expected]
    for entry in kept:
        assert set(entry.pictures) == {"image", "truth", "prediction", "boundary"}
        for data in entry.pictures.values():
            picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert picture is not None and picture.shape[:2] == (240, 480)


def test_training_curve_plots_loss_and_fine_tuning_pq():
    entries = [{"kind": "train", "iteration": i, "loss": 2.0 / i, "pq": 0.1 * i} for i in (1, 2, 3)]
    entries += [{"kind": "val", "iteration": 3, "loss": 0.9}, {"kind": "param_groups"}]
    picture = cv2.imdecode(np.frombuffer(training_curve(entries, 2), np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[0] > 100
    assert training_curve([{"kind": "param_groups", "iteration": 0}]) is None
