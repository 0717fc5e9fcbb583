"""cops.evaluation: PQ equal to panopticapi's pq_compute, mIoU, mask AP, per-image PQ, errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from panopticapi.evaluation import pq_compute
from pycocotools import mask as mask_utils

from cops.benchmarks.eval import perturb
from cops.datasets.panoptic_io import (
    read_panoptic_png,
    segment_stats,
    write_panoptic_png,
)
from cops.datasets.synthetic import SYNTHETIC_CATEGORIES, generate_scene
from cops.errors import CopsError
from cops.evaluation import (
    ConfusionMatrix,
    MaskAP,
    PanopticEvaluator,
    PQStats,
    image_pq_stats,
    pq_compute_files,
    segment_rles,
    semantic_from_panoptic,
)
from cops.files import atomic_write_json

UNUSED_THING, UNUSED_STUFF = 90, 91
CATEGORIES = [
    {"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in SYNTHETIC_CATEGORIES
] + [
    {"id": UNUSED_THING, "name": "unused-thing", "isthing": 1},
    {"id": UNUSED_STUFF, "name": "unused-stuff", "isthing": 0},
]
CATEGORY_IDS = [c["id"] for c in CATEGORIES]
NAMES = [c["name"] for c in CATEGORIES]
ISTHING = [bool(c["isthing"]) for c in CATEGORIES]
THINGS = [c.id for c in SYNTHETIC_CATEGORIES if c.isthing]
STUFF = [c.id for c in SYNTHETIC_CATEGORIES if not c.isthing]
ROAD, SKY, PERSON, CAR = 7, 23, 24, 26
TOL = 1e-9


def _segments(
    ids: np.ndarray, category: dict[int, int], crowd: frozenset[int] = frozenset()
) -> list:
    return [
        {
            "id": sid,
            "category_id": category[sid],
            "iscrowd": int(sid in crowd),
            "area": area,
            "bbox": bbox,
        }
        for sid, (area, bbox) in segment_stats(ids).items()
    ]


def _crowd_quirk_image() -> tuple[np.ndarray, list, np.ndarray, list]:
    """Two crowd regions of one class; panopticapi forgives predictions only on the last one."""
    gt = np.full((32, 48), 1, np.int64)  # road
    gt[:10] = 2  # sky
    gt[12:20, 0:16] = 101  # crowd car (listed first)
    gt[12:20, 20:36] = 102  # crowd car (listed last)
    gt[22:30, 4:14] = 103  # a car
    gt[28:, 40:] = 0  # void
    pred = gt.copy()
    pred[12:20, 0:16] = 201  # car prediction on the first crowd region: false positive
    pred[12:20, 20:36] = 202  # car prediction on the last crowd region: forgiven
    pred[22:30, 4:14] = 203
    pred[26:, 38:] = 204  # a person mostly on void: forgiven
    gt_segments = _segments(
        gt, {1: ROAD, 2: SKY, 101: CAR, 102: CAR, 103: CAR}, frozenset({101, 102})
    )
    pred_category = {1: ROAD, 2: SKY, 201: CAR, 202: CAR, 203: CAR, 204: PERSON}
    return gt, gt_segments, pred, _segments(pred, pred_category)


def _write_split(root: Path, kind: str, images: list[tuple[str, np.ndarray, list]]) -> Path:
    annotations = []
    for index, (name, ids, segments) in enumerate(images):
        write_panoptic_png(root / kind / name, ids)
        annotations.append({"image_id": index, "file_name": name, "segments_info": segments})
    entries = [{"id": i, "file_name": n} for i, (n, _, _) in enumerate(images)]
    path = root / f"{kind}.json"
    atomic_write_json(
        path, {"images": entries, "annotations": annotations, "categories": CATEGORIES}
    )
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Synthetic scenes with crowd, void, FP/FN, relabels and merges, plus hand-made edge cases."""
    root = tmp_path_factory.mktemp("pq")
    gts, preds = [], []
    for i in range(10):
        rng = np.random.default_rng(i)
        _, gt_ids, gt_segments = generate_scene((3, i), 48, 96)
        for seg in gt_segments:
            seg["iscrowd"] = int(seg["category_id"] in THINGS and rng.random() < 0.2)
        pred_ids, pred_segments = perturb(gt_ids, gt_segments, rng, THINGS, STUFF)
        gts.append((f"scene{i}.png", gt_ids, gt_segments))
        preds.append((f"scene{i}.png", pred_ids, pred_segments))
    gt_ids, gt_segments, pred_ids, pred_segments = _crowd_quirk_image()
    gts.append(("crowd.png", gt_ids, gt_segments))
    preds.append(("crowd.png", pred_ids, pred_segments))
    # An empty prediction, and a ground truth that is all void with a prediction on it.
    gts.append(("empty-pred.png", gts[0][1], gts[0][2]))
    preds.append(("empty-pred.png", np.zeros_like(gts[0][1]), []))
    void = np.zeros((48, 96), np.int64)
    blob = void.copy()
    blob[5:20, 5:30] = 7
    gts.append(("all-void.png", void, []))
    preds.append(("all-void.png", blob, _segments(blob, {7: CAR})))
    gt_json, pred_json = _write_split(root, "gt", gts), _write_split(root, "pred", preds)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(str(gt_json), str(pred_json))
    return {
        "root": root,
        "gt_json": gt_json,
        "pred_json": pred_json,
        "reference": reference,
        "gts": gts,
        "preds": preds,
    }


def _assert_equal_to_reference(ours: dict[str, Any], reference: dict[str, Any]) -> None:
    for group, ref_group in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        assert ours[group]["n"] == reference[ref_group]["n"]
        for key in ("pq", "sq", "rq"):
            assert ours[group][key] / 100 == pytest.approx(reference[ref_group][key], abs=TOL)
    for cat in CATEGORIES:
        mine, ref = ours["per_class"][cat["name"]], reference["per_class"][cat["id"]]
        for key in ("pq", "sq", "rq"):
            value = 0.0 if mine[key] is None else mine[key] / 100
            assert value == pytest.approx(ref[key], abs=TOL), (cat["name"], key)


@pytest.mark.parametrize("workers", [1, 2])
def test_pq_compute_files_equals_panopticapi(dataset: dict[str, Any], workers: int) -> None:
    ours = pq_compute_files(dataset["gt_json"], dataset["pred_json"], workers=workers)
    _assert_equal_to_reference(ours, dataset["reference"])
    assert ours["all"]["n"] == len(SYNTHETIC_CATEGORIES)  # the unused categories are left out
    for name in ("unused-thing", "unused-stuff"):
        assert ours["per_class"][name] == {
            "pq": None,
            "sq": None,
            "rq": None,
            "tp": 0,
            "fp": 0,
            "fn": 0,
        }
    assert 0 < ours["all"]["pq"] < 100


def test_folders_default_to_json_paths_and_can_be_given(dataset: dict[str, Any]) -> None:
    root = dataset["root"]
    given = pq_compute_files(root / "gt.json", root / "pred.json", root / "gt", root / "pred", 1)
    _assert_equal_to_reference(given, dataset["reference"])


def _evaluate(dataset: dict[str, Any], indices: range, per_image: bool = True):
    evaluator = PanopticEvaluator(CATEGORY_IDS, NAMES, ISTHING, per_image=per_image)
    for i in indices:
        name, _, gt_segments = dataset["gts"][i]
        _, _, pred_segments = dataset["preds"][i]
        evaluator.add(
            i,
            name,
            read_panoptic_png(dataset["root"] / "gt" / name),
            gt_segments,
            None,
            read_panoptic_png(dataset["root"] / "pred" / name),
            pred_segments,
            None,
        )
    return evaluator


def test_evaluator_equals_panopticapi_and_merges(dataset: dict[str, Any]) -> None:
    count = len(dataset["gts"])
    whole = _evaluate(dataset, range(count)).results()
    _assert_equal_to_reference(whole["panoptic"], dataset["reference"])
    assert whole["images"] == count
    first, second = _evaluate(dataset, range(0, count, 2)), _evaluate(dataset, range(1, count, 2))
    first.merge(second)
    merged = first.results()
    _assert_equal_to_reference(merged["panoptic"], dataset["reference"])
    assert merged["miou"] == pytest.approx(whole["miou"], abs=TOL)
    assert merged["ap"] == pytest.approx(whole["ap"], abs=TOL)
    assert len(first.per_image_rows()) == count
    assert 0 < whole["miou"] < 100 and 0 < whole["ap"] < 100
    assert whole["iou_per_class"]["unused-thing"] is None


def test_crowd_and_void_forgiveness_by_hand() -> None:
    gt, gt_segments, pred, pred_segments = _crowd_quirk_image()
    stats = image_pq_stats(gt, gt_segments, pred, pred_segments, CATEGORY_IDS)
    at = {c: CATEGORY_IDS.index(c) for c in (ROAD, SKY, CAR, PERSON)}
    assert stats.tp[at[CAR]] == 1 and stats.fn[at[CAR]] == 0  # crowd regions are never FN
    assert stats.fp[at[CAR]] == 1  # only the prediction on the last crowd region is forgiven
    assert stats.fp[at[PERSON]] == 0  # the prediction mostly on void is forgiven
    assert stats.tp[at[ROAD]] == 1 and stats.tp[at[SKY]] == 1
    # Road: the void pixels the person prediction covers leave the road's union unchanged.
    road_gt, road_pred = (gt == 1).sum(), (pred == 1).sum()
    assert stats.iou[at[ROAD]] == pytest.approx(road_pred / road_gt)


def test_matching_iou_threshold_and_void_in_union_by_hand() -> None:
    gt = np.zeros((10, 10), np.int64)
    gt[:, :5] = 1
    pred = np.zeros_like(gt)
    pred[:, :3] = 5  # 30 of 50 gt pixels: IoU 0.6
    pred[:, 5:8] = 6  # all on void: excluded from unions and forgiven
    gt_segments = [{"id": 1, "category_id": CAR, "iscrowd": 0}]
    pred_segments = [{"id": 5, "category_id": CAR}, {"id": 6, "category_id": CAR}]
    stats = image_pq_stats(gt, gt_segments, pred, pred_segments, [CAR])
    assert (stats.tp[0], stats.fp[0], stats.fn[0]) == (1, 0, 0)
    assert stats.iou[0] == pytest.approx(0.6)
    pred[:, 2] = 0  # now 20 of 50 gt pixels: IoU 0.4, so one FN and one FP
    stats = image_pq_stats(gt, gt_segments, pred, pred_segments, [CAR])
    assert (stats.tp[0], stats.fp[0], stats.fn[0]) == (0, 1, 1)
    pred[:5, 2] = 5  # 25 of 50 gt pixels and nothing else: IoU exactly 0.5
    stats = image_pq_stats(gt, gt_segments, pred, pred_segments, [CAR])
    assert (stats.tp[0], stats.fp[0], stats.fn[0]) == (0, 1, 1)  # IoU must exceed 0.5
    pred_segments[0]["category_id"] = PERSON  # same pixels as a perfect match, wrong class
    pred[:, :5] = 5
    stats = image_pq_stats(gt, gt_segments, pred, pred_segments, [CAR, PERSON])
    assert stats.tp.tolist() == [0, 0] and stats.fn.tolist() == [1, 0]
    assert stats.fp.tolist() == [0, 1]


def test_large_ids_take_the_sorting_path_with_equal_results(dataset: dict[str, Any]) -> None:
    name, gt_ids, gt_segments = dataset["gts"][1]
    _, pred_ids, pred_segments = dataset["preds"][1]
    small = image_pq_stats(gt_ids, gt_segments, pred_ids, pred_segments, CATEGORY_IDS)
    shift = 1 << 22

    def relabel(ids: np.ndarray, segments: list) -> tuple[np.ndarray, list]:
        return np.where(ids > 0, ids + shift, 0), [{**s, "id": s["id"] + shift} for s in segments]

    large = image_pq_stats(
        *relabel(gt_ids, gt_segments), *relabel(pred_ids, pred_segments), CATEGORY_IDS, image=name
    )
    for field in ("tp", "fp", "fn", "iou"):
        np.testing.assert_array_equal(getattr(small, field), getattr(large, field))


def test_pq_stats_summary_add_and_undefined_groups() -> None:
    a = PQStats([1, 0, 0], [1, 0, 0], [0, 0, 0], [0.8, 0.0, 0.0])
    b = PQStats([1, 0, 0], [0, 0, 0], [1, 0, 0], [0.6, 0.0, 0.0])
    total = a + b
    a += b
    np.testing.assert_array_equal(a.tp, total.tp)
    summary = total.summary(["x", "y", "z"], [True, True, False])
    assert summary["all"] == pytest.approx({"pq": 140 / 3, "sq": 70.0, "rq": 200 / 3, "n": 1})
    assert summary["things"]["n"] == 1
    assert summary["stuff"] == {"pq": None, "sq": None, "rq": None, "n": 0}
    assert summary["per_class"]["x"] == pytest.approx(
        {"pq": 140 / 3, "sq": 70.0, "rq": 200 / 3, "tp": 2, "fp": 1, "fn": 1}
    )
    assert summary["per_class"]["y"]["pq"] is None
    with pytest.raises(ValueError, match="same categories"):
        total + PQStats.zeros(2)
    with pytest.raises(ValueError, match="names"):
        total.summary(["x"], [True])


def test_confusion_matrix_miou_by_hand() -> None:
    cm = ConfusionMatrix(3)
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 255], [2, 0, 0, 1]], np.uint8)
    cm.update(gt, pred)
    # class 0: hit 1, gt 2, pred 2 (one of them on class 2) -> 1 / 3
    # class 1: hit 1, gt 2 (one predicted void: a miss), pred 2 (one on ignore: not counted) -> 1/3
    # class 2: hit 1, gt 2, pred 1 -> 1 / 2
    assert cm.iou() == pytest.approx([100 / 3, 100 / 3, 50.0])
    assert cm.miou() == pytest.approx((100 / 3 + 100 / 3 + 50) / 3)
    other = ConfusionMatrix(3)
    other.update(np.array([[1]]), np.array([[1]]))
    cm += other
    assert cm.iou()[1] == pytest.approx(200 / 4)
    absent = ConfusionMatrix(4)
    absent.update(gt, pred)
    assert absent.iou()[3] is None
    assert absent.miou() == pytest.approx((100 / 3 + 100 / 3 + 50) / 3)
    assert ConfusionMatrix(2).miou() is None


def test_confusion_matrix_errors() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="ground truth train id 3"):
        cm.update(np.array([[3]]), np.array([[0]]))
    with pytest.raises(ValueError, match="prediction train id 7"):
        cm.update(np.array([[0]]), np.array([[7]]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="0..2 or 255"):
        cm.update(np.array([[-1]]), np.array([[0]]))
    assert cm.matrix.sum() == 0  # failed updates count nothing
    with pytest.raises(ValueError, match="same classes"):
        cm += ConfusionMatrix(2)


def test_semantic_from_panoptic_keeps_crowd_and_voids_the_rest() -> None:
    ids = np.array([[0, 5, 5], [9, 9, 77]])
    segments = [{"id": 5, "category_id": CAR, "iscrowd": 1}, {"id": 9, "category_id": ROAD}]
    semantic = semantic_from_panoptic(ids, segments, {ROAD: 0, CAR: 1})
    assert semantic.dtype == np.uint8
    assert semantic.tolist() == [[255, 1, 1], [0, 0, 255]]
    with pytest.raises(ValueError, match="category_id 26"):
        semantic_from_panoptic(ids, segments, {ROAD: 0})


def test_segment_rles_equal_pycocotools_encode() -> None:
    rng = np.random.default_rng(0)
    for trial in range(20):
        ids = rng.integers(0, 4, (int(rng.integers(1, 20)), int(rng.integers(1, 20))))
        if trial % 2:
            ids = np.repeat(ids, 3, axis=0)
        rles, areas = segment_rles(ids, [0, 1, 3, 9])
        for sid, rle, area in zip([0, 1, 3, 9], rles, areas, strict=True):
            mask = np.asfortranarray((ids == sid).astype(np.uint8))
            assert rle == mask_utils.encode(mask)
            assert area == mask.sum()


def _ap_image(scores: tuple[float, ...], crowd: bool = False):
    gt = np.zeros((40, 40), np.int64)
    gt[2:12, 2:12] = 1
    gt[20:30, 20:35] = 2
    gt_segments = [
        {"id": 1, "category_id": CAR, "iscrowd": 0},
        {"id": 2, "category_id": CAR, "iscrowd": int(crowd)},
    ]
    pred = gt.copy()
    pred[32:38, 2:10] = 3  # hits nothing
    pred_segments = [{"id": k + 1, "category_id": CAR, "score": s} for k, s in enumerate(scores)]
    return gt, gt_segments, pred, pred_segments


def test_mask_ap_perfect_known_and_crowd() -> None:
    ap = MaskAP([CAR, PERSON])
    gt, gt_segments, pred, pred_segments = _ap_image((0.9, 0.8, 0.1))
    ap.add(gt, gt_segments, pred, pred_segments)
    result = ap.results()
    # Both cars found before the only false positive: AP 100 at every IoU threshold.
    assert (result["ap"], result["ap50"], result["ap75"]) == pytest.approx((100, 100, 100))
    assert result["per_class"] == {CAR: pytest.approx(100.0), PERSON: None}
    ap = MaskAP([CAR])
    gt, gt_segments, pred, pred_segments = _ap_image((0.5, 0.4, 0.9))
    ap.add(gt, gt_segments, pred, pred_segments)
    # Ranking FP, TP, TP: precision 1/2 at recall 1/2 and 2/3 at recall 1 -> 2/3 everywhere.
    assert ap.results()["ap"] == pytest.approx(200 / 3)
    ap = MaskAP([CAR])
    # The best-scored detection covers the crowd region: it is ignored, not a false positive.
    gt, gt_segments, pred, pred_segments = _ap_image((0.5, 0.99, 0.1), crowd=True)
    ap.add(gt, gt_segments, pred, pred_segments)
    assert ap.results()["ap"] == pytest.approx(100.0)


def test_mask_ap_none_without_thing_ground_truth_and_zero_without_predictions() -> None:
    ap = MaskAP([CAR])
    ids = np.zeros((8, 8), np.int64)
    ids[:4] = 1
    ap.add(
        ids, [{"id": 1, "category_id": ROAD, "iscrowd": 0}], ids, [{"id": 1, "category_id": ROAD}]
    )
    assert ap.results() is None
    gt, gt_segments, _, _ = _ap_image(())
    ap.add(gt, gt_segments, np.zeros_like(gt), [])
    assert ap.results()["ap"] == 0.0


def test_per_image_rows_and_csv(dataset: dict[str, Any], tmp_path: Path) -> None:
    count = len(dataset["gts"])
    evaluator = _evaluate(dataset, range(count - 3, count))  # crowd, empty-pred, all-void
    rows = evaluator.per_image_rows()
    assert [r["file_name"] for r in rows] == ["all-void.png", "crowd.png", "empty-pred.png"]
    by_name = {r["file_name"]: r for r in rows}
    assert by_name["empty-pred.png"]["pq"] == 0.0 and by_name["empty-pred.png"]["n"] > 0
    assert by_name["all-void.png"]["n"] == 0 and by_name["all-void.png"]["pq"] is None
    gt, gt_segments, pred, pred_segments = _crowd_quirk_image()
    expected = image_pq_stats(gt, gt_segments, pred, pred_segments, CATEGORY_IDS)
    assert by_name["crowd.png"]["pq"] == pytest.approx(
        expected.summary(NAMES, ISTHING)["all"]["pq"], abs=TOL
    )
    path = tmp_path / "per_image.csv"
    evaluator.write_per_image_csv(path)
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["image_id", "file_name", "pq", "sq", "rq", "n"]
    assert [r["file_name"] for r in table] == [r["file_name"] for r in rows]
    assert table[0]["pq"] == "" and table[0]["n"] == "0"
    assert float(table[1]["pq"]) == pytest.approx(by_name["crowd.png"]["pq"])
    assert [p.name for p in tmp_path.iterdir()] == ["per_image.csv"]  # no temporary left
    with pytest.raises(ValueError, match="per_image=True"):
        PanopticEvaluator(CATEGORY_IDS, NAMES, ISTHING).per_image_rows()


def test_image_errors_name_the_image_and_segment() -> None:
    gt, gt_segments, pred, pred_segments = _crowd_quirk_image()
    args = (gt, gt_segments)
    with pytest.raises(ValueError, match=r"img7.*\[204\].*not listed"):
        image_pq_stats(*args, pred, pred_segments[:-1], CATEGORY_IDS, image="img7")
    extra = [*pred_segments, {"id": 999, "category_id": CAR}]
    with pytest.raises(ValueError, match=r"\[999\].*absent from the map"):
        image_pq_stats(*args, pred, extra, CATEGORY_IDS)
    unknown = [{**s, "category_id": 5} if s["id"] == 203 else s for s in pred_segments]
    with pytest.raises(ValueError, match="segment 203 has unknown category_id 5"):
        image_pq_stats(*args, pred, unknown, CATEGORY_IDS)
    with pytest.raises(ValueError, match="listed twice"):
        image_pq_stats(*args, pred, [*pred_segments, pred_segments[0]], CATEGORY_IDS)
    with pytest.raises(ValueError, match="size"):
        image_pq_stats(*args, pred[:, :-1], pred_segments, CATEGORY_IDS)
    with pytest.raises(ValueError, match="reserved for VOID"):
        image_pq_stats(*args, pred, [{"id": 0, "category_id": CAR}], CATEGORY_IDS)


def test_evaluator_rejects_double_counting() -> None:
    gt, gt_segments, pred, pred_segments = _crowd_quirk_image()
    first = PanopticEvaluator(CATEGORY_IDS, NAMES, ISTHING)
    first.add("a", "a.png", gt, gt_segments, None, pred, pred_segments, None)
    with pytest.raises(ValueError, match="'a'.*already evaluated"):
        first.add("a", "a.png", gt, gt_segments, None, pred, pred_segments, None)
    second = PanopticEvaluator(CATEGORY_IDS, NAMES, ISTHING)
    second.add("a", "a.png", gt, gt_segments, None, pred, pred_segments, None)
    with pytest.raises(ValueError, match="both evaluators"):
        first.merge(second)
    with pytest.raises(ValueError, match="same categories"):
        first.merge(PanopticEvaluator(CATEGORY_IDS[:-1], NAMES[:-1], ISTHING[:-1]))
    with pytest.raises(ValueError, match="one to one"):
        PanopticEvaluator(CATEGORY_IDS, NAMES[:-1], ISTHING)
    assert first.results()["images"] == 1


def test_pq_compute_files_errors_name_file_and_image(dataset: dict[str, Any], tmp_path) -> None:
    gt_json = dataset["gt_json"]
    pred = json.loads(dataset["pred_json"].read_text())
    pred["annotations"] = pred["annotations"][1:]
    short = tmp_path / "short.json"
    atomic_write_json(short, pred)
    (tmp_path / "pred").mkdir()
    with pytest.raises(CopsError, match=r"no prediction for image 0 \(scene0.png"):
        pq_compute_files(gt_json, short, pred_folder=dataset["root"] / "pred")
    with pytest.raises(CopsError, match=r"image 0 .*scene0.png: image file not found"):
        pq_compute_files(gt_json, dataset["pred_json"], pred_folder=tmp_path / "pred", workers=1)
    with pytest.raises(CopsError, match="PNG folder not found"):
        pq_compute_files(gt_json, short)
    with pytest.raises(CopsError, match="missing.json: file not found"):
        pq_compute_files(tmp_path / "missing.json", short)
    broken = json.loads(dataset["pred_json"].read_text())
    broken["annotations"][2]["segments_info"] = broken["annotations"][2]["segments_info"][1:]
    atomic_write_json(tmp_path / "broken.json", broken)
    with pytest.raises(CopsError, match=r"image 2 \(prediction .*scene2.png.*not listed"):
        pq_compute_files(gt_json, tmp_path / "broken.json", pred_folder=dataset["root"] / "pred")
