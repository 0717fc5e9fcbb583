"""Smooth PQ surrogate: exact limit against panopticapi, gradients, ignored pixels, input checks."""

import contextlib
import io

import numpy as np
import pytest
import torch
from panopticapi.evaluation import pq_compute

from cops.datasets.panoptic_io import write_panoptic_png
from cops.files import atomic_write_json
from cops.models.pq_loss import PQSurrogateLoss

ISTHING = [False, False, True, True, True]
H, W = 10, 12


def _paint(rng: np.random.Generator, base: np.ndarray | None, rects: int) -> np.ndarray:
    """Random rectangles of random classes as a class map [H, W] with instance ids [H, W]."""
    cls = rng.integers(0, 2, size=(H, W)) if base is None else base[0].copy()
    inst = np.zeros((H, W), np.int64) if base is None else base[1].copy()
    for i in range(rects):
        y0, x0 = rng.integers(0, H - 1), rng.integers(0, W - 1)
        y1, x1 = y0 + rng.integers(2, 6), x0 + rng.integers(2, 7)
        cls[y0:y1, x0:x1] = rng.integers(0, len(ISTHING))
        inst[y0:y1, x0:x1] = 100 + i + (0 if base is None else 50)
    return cls, inst


def _segments(cls: np.ndarray, inst: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Segment index map (one segment per stuff class, per thing instance) and segment classes."""
    key = np.where(np.array(ISTHING)[cls], 1000 * cls + inst, 1000 * cls)
    uniq, seg = np.unique(key, return_inverse=True)
    return seg.reshape(H, W), [int(u // 1000) for u in uniq]


def _scene(seed: int) -> dict:
    """A random gt panoptic map and a prediction obtained by repainting parts of it."""
    rng = np.random.default_rng(seed)
    gt = _paint(rng, None, 6)
    pred = _paint(rng, gt, int(rng.integers(1, 4)))
    if rng.random() < 0.5:  # shift the whole prediction by a pixel: IoUs off 1.0
        pred = tuple(np.roll(p, 1, axis=int(rng.integers(0, 2))) for p in pred)
    gt_seg, gt_cls = _segments(*gt)
    pred_seg, pred_cls = _segments(*pred)
    return {"gt_seg": gt_seg, "gt_cls": gt_cls, "pred_seg": pred_seg, "pred_cls": pred_cls}


def _as_tensors(scenes: list[dict]) -> tuple[torch.Tensor, ...]:
    """Batch the scenes as (masks, classes, gt_panoptic, gt_semantic, weights)."""
    s_max = max(len(sc["pred_cls"]) for sc in scenes)
    masks = torch.zeros(len(scenes), H * W, s_max, dtype=torch.float64)
    classes = torch.full((len(scenes), s_max), -1, dtype=torch.long)
    pan = torch.zeros(len(scenes), H * W, dtype=torch.long)
    sem = torch.zeros(len(scenes), H * W, dtype=torch.long)
    for b, sc in enumerate(scenes):
        seg = torch.from_numpy(sc["pred_seg"].ravel())
        masks[b, torch.arange(H * W), seg] = 1.0
        classes[b, : len(sc["pred_cls"])] = torch.tensor(sc["pred_cls"])
        pan[b] = torch.from_numpy(sc["gt_seg"].ravel()) + 1
        sem[b] = torch.tensor(sc["gt_cls"])[torch.from_numpy(sc["gt_seg"].ravel())]
    return masks, classes, pan, sem, torch.ones(len(scenes), H * W, dtype=torch.float64)


def _coco_json(path, seg: np.ndarray, cls: list[int]) -> None:
    """One-image COCO panoptic JSON + PNG folder for a segment map (ids = segment + 1)."""
    folder = path.with_suffix("")
    write_panoptic_png(folder / "im.png", seg + 1)
    infos = []
    for s, c in enumerate(cls):
        ys, xs = np.nonzero(seg == s)
        bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        infos.append(
            {"id": s + 1, "category_id": c + 1, "area": len(ys), "bbox": bbox, "iscrowd": 0}
        )
    categories = [
        {"id": k + 1, "name": f"c{k}", "isthing": int(t), "color": [k, k, k]}
        for k, t in enumerate(ISTHING)
    ]
    atomic_write_json(
        path,
        {
            "images": [{"id": 1, "file_name": "im.jpg", "height": H, "width": W}],
            "annotations": [{"image_id": 1, "file_name": "im.png", "segments_info": infos}],
            "categories": categories,
        },
    )


def _panopticapi_pq(tmp_path, scene: dict, name: str) -> float:
    """PQ of one scene according to panopticapi's pq_compute (its prints silenced)."""
    gt_json, pred_json = tmp_path / f"{name}_gt.json", tmp_path / f"{name}_pred.json"
    _coco_json(gt_json, scene["gt_seg"], scene["gt_cls"])
    _coco_json(pred_json, scene["pred_seg"], scene["pred_cls"])
    with contextlib.redirect_stdout(io.StringIO()):
        result = pq_compute(str(gt_json), str(pred_json))
    return result["All"]["pq"]


def _has_iou_near_half(scene: dict) -> bool:
    """Whether a same-class gt/pred pair has IoU within 1e-3 of 0.5 (a tie of the step)."""
    for g, gc in enumerate(scene["gt_cls"]):
        for p, pc in enumerate(scene["pred_cls"]):
            a, b = scene["gt_seg"] == g, scene["pred_seg"] == p
            if gc == pc and abs((a & b).sum() / (a | b).sum() - 0.5) < 1e-3:
                return True
    return False


def test_limit_equals_panopticapi_per_image(tmp_path):
    scenes = [sc for sc in (_scene(seed) for seed in range(10)) if not _has_iou_near_half(sc)]
    assert len(scenes) >= 6
    sharp = PQSurrogateLoss(ISTHING, beta=1e4, area_slope=1e4, eps=1e-12)
    reference = [_panopticapi_pq(tmp_path, sc, f"s{i}") for i, sc in enumerate(scenes)]
    assert len(set(np.round(reference, 6))) > 3  # the scenes are varied
    for sc, ref in zip(scenes, reference, strict=True):
        loss, metrics = sharp(*_as_tensors([sc]))
        assert float(metrics["pq"]) == pytest.approx(ref, abs=1e-12)
        assert float(metrics["soft_pq"]) == pytest.approx(ref, abs=1e-6)
        assert float(loss) == pytest.approx(1.0 - ref, abs=1e-6)
    _, metrics = sharp(*_as_tensors(scenes))
    assert float(metrics["pq"]) == pytest.approx(np.mean(reference), abs=1e-12)


def test_gradient_flows_to_soft_masks():
    masks, classes, pan, sem, weights = _as_tensors([_scene(1), _scene(2)])
    soft = (0.7 * masks + 0.3 * torch.rand_like(masks)).requires_grad_(True)
    loss, metrics = PQSurrogateLoss(ISTHING)(soft, classes, pan, sem, weights)
    loss.backward()
    assert torch.isfinite(soft.grad).all()
    assert soft.grad.abs().sum() > 0
    assert not metrics["soft_pq"].requires_grad and not metrics["pq"].requires_grad


def test_gradient_direction_on_a_matched_pair():
    # Growing the prediction into its gt segment raises the soft PQ: gradient negative there.
    masks, classes, pan, sem, weights = _as_tensors([_scene(3)])
    masks.requires_grad_(True)
    PQSurrogateLoss(ISTHING, area_slope=1.0)(masks, classes, pan, sem, weights)[0].backward()
    assert (masks.grad < 0).any() and (masks.grad > 0).any()


def test_perfect_prediction_has_zero_loss():
    batch = _as_tensors([_perfect(4)])
    loss, metrics = PQSurrogateLoss(ISTHING, beta=50.0, area_slope=10.0)(*batch)
    assert float(loss) == pytest.approx(0.0, abs=1e-4)
    assert float(metrics["pq"]) == 1.0


def test_padding_segments_are_ignored():
    masks, classes, pan, sem, weights = _as_tensors([_scene(5)])
    loss_fn = PQSurrogateLoss(ISTHING)
    base, _ = loss_fn(masks, classes, pan, sem, weights)
    extra = torch.cat([masks, torch.ones_like(masks[:, :, :2])], dim=2)
    padded = torch.cat([classes, torch.full_like(classes[:, :2], -1)], dim=1)
    loss, _ = loss_fn(extra, padded, pan, sem, weights)
    assert float(loss) == pytest.approx(float(base), abs=1e-12)


def test_zero_weight_pixels_are_ignored():
    masks, classes, pan, sem, weights = _as_tensors([_scene(6)])
    loss_fn = PQSurrogateLoss(ISTHING, area_slope=100.0)  # sizes (pixel counts) all count fully
    base, _ = loss_fn(masks, classes, pan, sem, weights)
    # Extra pixels with weight 0, labelled arbitrarily in gt and prediction, change nothing.
    n = 7
    masks2 = torch.cat([masks, torch.zeros(1, n, masks.shape[2], dtype=masks.dtype)], dim=1)
    masks2[0, -n:, 0] = 1.0
    pan2 = torch.cat([pan, torch.full((1, n), 999)], dim=1)
    sem2 = torch.cat([sem, torch.full((1, n), 255)], dim=1)
    weights2 = torch.cat([weights, torch.zeros(1, n, dtype=weights.dtype)], dim=1)
    loss, _ = loss_fn(masks2, classes, pan2, sem2, weights2)
    assert float(loss) == pytest.approx(float(base), abs=1e-12)
    # Zeroing the weights of one gt segment removes it: the loss changes.
    weights3 = weights.clone()
    weights3[0, pan[0] == pan[0, 0]] = 0.0
    assert float(loss_fn(masks, classes, pan, sem, weights3)[0]) != pytest.approx(float(base))


def _perfect(seed: int) -> dict:
    """A scene whose prediction equals its ground truth."""
    scene = _scene(seed)
    return {**scene, "pred_seg": scene["gt_seg"], "pred_cls": scene["gt_cls"]}


def test_small_predictions_count_less():
    batch = _as_tensors([_perfect(7)])
    areas = batch[0].sum(1)[0]
    cut = float(areas.median())  # about half the predicted segments are below this area
    pq = {}
    for min_area in (0.0, cut, 1e6):
        loss_fn = PQSurrogateLoss(ISTHING, thing_min_area=min_area, stuff_min_area=min_area)
        pq[min_area] = loss_fn(*batch)[1]
    assert float(pq[0.0]["pq"]) == 1.0
    assert 0.0 < float(pq[cut]["pq"]) < 1.0
    assert float(pq[1e6]["pq"]) == 0.0  # every prediction dropped: all gt segments missed
    soft = [float(pq[m]["soft_pq"]) for m in (0.0, cut, 1e6)]
    assert soft[0] > soft[1] > soft[2] >= 0.0
    # the size threshold counts pixels, not loss weights: uniformly heavier pixels change nothing
    loss_fn = PQSurrogateLoss(ISTHING, thing_min_area=cut, stuff_min_area=cut, eps=0.0)
    light = loss_fn(*batch)[1]
    heavy = loss_fn(*batch[:4], 4.0 * batch[4])[1]
    assert float(heavy["soft_pq"]) == pytest.approx(float(light["soft_pq"]), abs=1e-12)


def test_narrow_dtypes_give_the_same_values():
    masks, classes, pan, sem, weights = _as_tensors([_scene(0)])
    loss_fn = PQSurrogateLoss(ISTHING)
    _, wide = loss_fn(masks, classes, pan, sem, weights)
    _, narrow = loss_fn(masks.float(), classes.int(), pan.int(), sem.short(), weights.float())
    assert narrow["soft_pq"].dtype == torch.float32
    assert float(narrow["soft_pq"]) == pytest.approx(float(wide["soft_pq"]), abs=1e-5)
    assert float(narrow["pq"]) == pytest.approx(float(wide["pq"]), abs=1e-6)


def test_nothing_present_gives_zero_loss_and_nan_metrics():
    masks = torch.zeros(1, 4, 1, requires_grad=True)
    classes = torch.full((1, 1), -1)
    pan = torch.zeros(1, 4, dtype=torch.long)
    loss, metrics = PQSurrogateLoss(ISTHING)(masks, classes, pan, pan.clone(), torch.ones(1, 4))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.isnan(metrics["pq"]) and torch.isnan(metrics["soft_pq"])


@pytest.mark.parametrize(
    ("index", "value", "name"),
    [
        (0, torch.zeros(2, H * W), "masks"),
        (0, torch.zeros(1, H * W, 3, dtype=torch.long), "masks"),
        (1, torch.zeros(1, 2, dtype=torch.long), "classes"),
        (1, torch.full((1, 3), 5), "classes"),
        (1, torch.zeros(1, 3), "classes"),
        (2, torch.zeros(1, H * W + 1, dtype=torch.long), "gt_panoptic"),
        (2, torch.full((1, H * W), -1), "gt_panoptic"),
        (3, torch.full((1, H * W), 7), "gt_semantic"),
        (4, torch.ones(1, H * W, dtype=torch.long), "weights"),
        (4, -torch.ones(1, H * W), "weights"),
    ],
)
def test_bad_input_names_the_argument(index, value, name):
    args = [
        torch.ones(1, H * W, 3) / 3,
        torch.zeros(1, 3, dtype=torch.long),
        torch.ones(1, H * W, dtype=torch.long),
        torch.zeros(1, H * W, dtype=torch.long),
        torch.ones(1, H * W),
    ]
    args[index] = value
    with pytest.raises(ValueError, match=name):
        PQSurrogateLoss(ISTHING)(*args)


def test_inconsistent_gt_class_and_bad_settings_are_rejected():
    pan = torch.ones(1, 4, dtype=torch.long)
    sem = torch.tensor([[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="gt_semantic"):
        PQSurrogateLoss(ISTHING)(
            torch.ones(1, 4, 1), torch.zeros(1, 1).long(), pan, sem, torch.ones(1, 4)
        )
    with pytest.raises(ValueError, match="beta"):
        PQSurrogateLoss(ISTHING, beta=0.0)
    with pytest.raises(ValueError, match="isthing"):
        PQSurrogateLoss([])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def test_paper_surrogate_pools_classes_over_the_batch():
    """``mode="paper"`` by hand on two 4-pixel images, where batch pooling and the mean of the
    images' PQs differ. Classes: 0 stuff, 1 thing; min areas 0, area slope 0.1, β = 4.

    Image A: gt all class 0; predicted class 0 on pixels 0-2 and a class-1 segment on pixel 3
    (no class-1 gt: a false positive). Image B: gt class 0 on pixels 0-1, a class-1 instance on
    2-3, predicted exactly.
    """
    loss = PQSurrogateLoss([False, True], beta=4.0, mode="paper")
    masks = torch.zeros(2, 4, 2, dtype=torch.float64)
    masks[0, :3, 0] = 1.0
    masks[0, 3, 1] = 1.0
    masks[1, :2, 0] = 1.0
    masks[1, 2:, 1] = 1.0
    classes = torch.tensor([[0, 1], [0, 1]])
    pan = torch.tensor([[1, 1, 1, 1], [1, 1, 2, 2]])
    sem = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1]])
    value, parts = loss(masks, classes, pan, sem, torch.ones(2, 4, dtype=torch.float64))

    iou_a = 3.1 / 4.1  # (I + 0.1) / (U + 0.1), I = 3, U = 4
    t_a = iou_a**4 / (iou_a**4 + (1 - iou_a) ** 4)
    fg3, fg2, fg1 = _sigmoid(0.3), _sigmoid(0.2), _sigmoid(0.1)  # σ(0.1·area)
    num_a0, den_a0 = iou_a * t_a * fg3, t_a * fg3 + 0.5 * (1 - t_a)  # TP + ½FN
    iou_fp = 0.1 / 1.1  # the unmatched class-1 prediction against its empty ground truth
    t_fp = iou_fp**4 / (iou_fp**4 + (1 - iou_fp) ** 4)
    den_a1 = 0.5 * (1 - t_fp) * fg1  # ½FP
    num_b, den_b = fg2, fg2  # IoU 1, t 1: exact pairs, per class
    pooled = 0.5 * (
        (num_a0 + num_b + 0.1) / (den_a0 + den_b + 0.1) + (num_b + 0.1) / (den_a1 + den_b + 0.1)
    )
    torch.testing.assert_close(value, torch.tensor(1.0 - pooled, dtype=torch.float64))
    per_image = 0.5 * (
        0.5 * ((num_a0 + 0.1) / (den_a0 + 0.1) + 0.1 / (den_a1 + 0.1))
        + 0.5 * ((num_b + 0.1) / (den_b + 0.1) * 2)
    )
    assert abs(pooled - per_image) > 0.01  # the batch pooling matters on this batch
    assert float(parts["pq"]) == pytest.approx(0.5 * (0.5 * (0.75 / 1.0) + 1.0))  # exact PQ


def test_paper_surrogate_matches_every_possible_pair():
    """Paper mode: a thing prediction paired with a gt instance is never a false positive, even
    with no overlap; the gt then counts as a false negative (1 − t) instead. The foreground
    probability uses the unweighted area: the prediction's void pixel counts."""
    loss = PQSurrogateLoss([False, True], beta=4.0, mode="paper")
    masks = torch.zeros(1, 4, 2, dtype=torch.float64)
    masks[0, :2, 0] = 1.0
    masks[0, 3, 1] = 1.0  # predicted instance on pixel 3, gt instance on pixel 2
    classes = torch.tensor([[0, 1]])
    pan = torch.tensor([[1, 1, 2, 0]])
    sem = torch.tensor([[0, 0, 1, 255]])
    weights = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)  # pixel 3 is void
    value, _ = loss(masks, classes, pan, sem, weights)
    iou = 0.1 / 1.1  # I 0, U 1 (the prediction has no weighted area)
    t = iou**4 / (iou**4 + (1 - iou) ** 4)
    fg1 = _sigmoid(0.1)  # σ(0.1 · 1): one (void) pixel predicted
    thing = (iou * t * fg1 + 0.1) / (t * fg1 + 0.5 * (1 - t) + 0.1)
    fg2 = _sigmoid(0.2)
    stuff = (fg2 + 0.1) / (fg2 + 0.1)
    torch.testing.assert_close(
        value, torch.tensor(1.0 - 0.5 * (thing + stuff), dtype=torch.float64)
    )
