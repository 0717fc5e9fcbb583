"""The official Cityscapes instance-level AP beside COCO mask AP (issue 17, section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from cops.evaluation.cityscapes_ap import CityscapesAP, _numpy_in1d, cityscapes_ap_applies
from cops.evaluation.evaluator import PanopticEvaluator

pytest.importorskip("cityscapesscripts")

THINGS = [24, 25, 26, 27, 28, 31, 32, 33]  # person … bicycle, Cityscapes label ids


def _seg(seg_id: int, category: int, thing: bool, crowd: int = 0, score: float = 1.0) -> dict:
    return {"id": seg_id, "category_id": category, "isthing": thing, "iscrowd": crowd,
            "score": score}  # fmt: skip


def _scene() -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """Road, two cars, a crowd car region and a person; predictions: one exact car, one car at
    IoU 28/30, one on the crowd region (ignored) and a person in the wrong place."""
    gt = np.full((64, 128), 7, dtype=np.int64)
    gt[10:30, 10:40], gt[10:30, 60:90], gt[40:60, 100:120], gt[35:60, 10:30] = (
        26000,
        26001,
        26,
        24000,
    )
    gt_segments = [_seg(7, 7, False), _seg(26000, 26, True), _seg(26001, 26, True),
                   _seg(26, 26, True, crowd=1), _seg(24000, 24, True)]  # fmt: skip
    pred = np.zeros_like(gt)
    pred[10:30, 10:40], pred[10:30, 62:90], pred[40:60, 100:120], pred[0:5, 0:5] = 1, 2, 3, 4
    pred_segments = [_seg(1, 26, True, score=0.9), _seg(2, 26, True, score=0.8),
                     _seg(3, 26, True, score=0.7), _seg(4, 24, True, score=0.95)]  # fmt: skip
    return gt, gt_segments, pred, pred_segments


def test_hand_computed_ap() -> None:
    """Car: both matched up to overlap 0.9, one of two at 0.95 (AP 0.5) -> 95; person 0."""
    ap = CityscapesAP(THINGS)
    ap.add(*_scene(), image_id="a")
    result = ap.results()
    assert result["per_class"][26] == pytest.approx(95.0)
    assert result["per_class"][24] == pytest.approx(0.0)
    assert result["per_class"][25] is None  # no rider in the ground truth
    assert result["ap"] == pytest.approx(47.5) and result["ap50"] == pytest.approx(50.0)


def test_equals_the_official_script_on_its_own_files(tmp_path, monkeypatch) -> None:
    """The oracle: cityscapesscripts' evaluateImgLists on files written as its README says."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official
    from PIL import Image

    rng = np.random.default_rng(0)
    ours = CityscapesAP(THINGS)
    predictions, truths = [], []
    for n in range(3):
        gt, gt_segments, pred, pred_segments = _scene()
        shift = int(rng.integers(0, 6))
        pred = np.roll(pred, shift, axis=1)
        for s in pred_segments:
            s["score"] = float(rng.random())
        ours.add(gt, gt_segments, pred, pred_segments, image_id=n)
        Image.fromarray(gt.astype(np.uint16)).save(tmp_path / f"gt{n}.png")
        truths.append(str(tmp_path / f"gt{n}.png"))
        lines = []
        for s in pred_segments:
            mask = ((pred == s["id"]) * 255).astype(np.uint8)
            Image.fromarray(mask).save(tmp_path / f"p{n}_{s['id']}.png")
            lines.append(f"p{n}_{s['id']}.png {s['category_id']} {s['score']}\n")
        (tmp_path / f"p{n}.txt").write_text("".join(lines))
        predictions.append(str(tmp_path / f"p{n}.txt"))
    monkeypatch.chdir(tmp_path)  # the script writes matches.json into the working folder
    args = official.args
    monkeypatch.setattr(args, "predictionPath", str(tmp_path.resolve()))
    monkeypatch.setattr(args, "gtInstancesFile", str(tmp_path / "gtInstances.json"))
    monkeypatch.setattr(args, "exportFile", str(tmp_path / "result.json"))
    monkeypatch.setattr(args, "quiet", True)
    monkeypatch.setattr(args, "JSONOutput", False)
    # Its JSON dumps (matches.json, gtInstances.json) fail under numpy 2 (np.int64 is not JSON
    # serialisable); they are side files, the numbers do not depend on them.
    monkeypatch.setattr(official, "writeDict2JSON", lambda *_: None)
    with _numpy_in1d(official):
        expected = official.evaluateImgLists(predictions, truths, args)["averages"]
    result = ours.results()
    assert result["ap"] == pytest.approx(100 * expected["allAp"])
    assert result["ap50"] == pytest.approx(100 * expected["allAp50%"])


def test_evaluator_reports_it_beside_coco_mask_ap() -> None:
    ids = [7, 24, 26]
    evaluator = PanopticEvaluator(ids, ["road", "person", "car"], [False, True, True],
                                  cityscapes_ap=True)  # fmt: skip
    gt, gt_segments, pred, pred_segments = _scene()
    pred_segments.append(_seg(5, 7, False))
    pred[pred == 0] = 5
    evaluator.add("a", "a.png", gt, gt_segments, None, pred, pred_segments, None)
    metrics = evaluator.results()
    assert metrics["ap"] is not None  # COCO mask AP stays
    assert metrics["cityscapes_ap"]["per_class"] == {"person": 0.0, "car": pytest.approx(95.0)}
    plain = PanopticEvaluator(ids, ["road", "person", "car"], [False, True, True])
    plain.add("a", "a.png", gt, gt_segments, None, pred, pred_segments, None)
    assert plain.results()["cityscapes_ap"] is None
    with pytest.raises(ValueError, match="same categories and metrics"):
        plain.merge(evaluator)


def test_only_cityscapes_classes_and_encoding() -> None:
    assert cityscapes_ap_applies([7, *THINGS], [False] + [True] * 8)
    assert not cityscapes_ap_applies([0, 1, 2], [False, True, True])
    gt, gt_segments, pred, pred_segments = _scene()
    gt_segments[1]["id"] = 25000  # an instance id of another label
    with pytest.raises(ValueError, match="not Cityscapes-encoded"):
        CityscapesAP(THINGS).add(gt, gt_segments, pred, pred_segments, image_id="b")
