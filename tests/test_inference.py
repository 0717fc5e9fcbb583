"""Inference: post-processing of solver outputs, model metadata and the predictor end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _training import save_net

from cops.datasets.class_list import ClassList
from cops.datasets.synthetic import SYNTHETIC_CATEGORIES, generate_scene
from cops.datasets.targets import stride_indices
from cops.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from cops.errors import CopsError
from cops.inference.postprocess import axis_nodes, postprocess
from cops.inference.predictor import Predictor, input_size
from cops.models.build import build_model
from cops.models.checkpoint import Checkpoint
from cops.models.model_card import CardSource, ModelCard
from cops.recipes.schema import load_recipe
from cops.solver import edge_costs_to_maps, grid_graph
from cops.training.checkpoint import save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::cops.models.BackboneInitWarning")

# Hand-made classes: train ids 0 road, 1 sky (stuff), 2 car, 3 person (things).
CATEGORY_IDS = [7, 23, 26, 24]
ISTHING = [False, False, True, True]
DISTANCES = [1, 2]


def _post(labels, components, prob=None, **kwargs):
    """postprocess() with the hand-made classes; the grid size comes from `labels` [h, w]."""
    labels = np.asarray(labels)
    h, w = labels.shape
    if prob is None:
        prob = np.full((2 * len(DISTANCES), h, w), 0.5, np.float32)
    options = {
        "edge_distances": DISTANCES,
        "isthing": ISTHING,
        "category_ids": CATEGORY_IDS,
        "thing_min_area": 0,
        "stuff_min_area": 0,
        "output_size": (4 * h, 4 * w),
    }
    options.update(kwargs)
    return postprocess(labels.ravel(), np.asarray(components).ravel(), prob, **options)


def _check_consistent(pred, train_of_category: dict[int, int]) -> None:
    """ids 1..S each listed once; area, bbox and semantic equal what the final map says."""
    ids = pred.ids
    listed = [s["id"] for s in pred.segments]
    assert listed == list(range(1, len(listed) + 1))
    assert sorted(set(np.unique(ids).tolist()) - {0}) == listed
    assert ids.dtype == np.int32 and pred.semantic.dtype == np.uint8
    assert np.all(pred.semantic[ids == 0] == 255)
    for seg in pred.segments:
        ys, xs = np.nonzero(ids == seg["id"])
        assert seg["area"] == ys.size
        box = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        assert seg["bbox"] == box
        assert np.all(pred.semantic[ys, xs] == train_of_category[seg["category_id"]])
        assert 0.0 <= seg["score"] <= 1.0
        if not seg["isthing"]:
            assert seg["score"] == 1.0


HAND = {c: t for t, c in enumerate(CATEGORY_IDS)}

# A 4x6 grid: sky on top in two components, road in two separate components, two cars and a
# one-node person.
LABELS = np.array(
    [
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 3],
        [0, 2, 2, 0, 2, 2],
        [0, 2, 2, 0, 2, 2],
    ]
)
COMPONENTS = np.array(
    [
        [0, 0, 0, 1, 1, 1],
        [0, 0, 0, 1, 1, 6],
        [2, 4, 4, 3, 5, 5],
        [2, 4, 4, 3, 5, 5],
    ]
)


def test_stuff_merged_things_separate_ids_renumbered():
    pred = _post(LABELS, COMPONENTS)
    _check_consistent(pred, HAND)
    by_category = {}
    for seg in pred.segments:
        by_category.setdefault(seg["category_id"], []).append(seg)
    assert [s["area"] for s in by_category[23]] == [11 * 16]  # both sky components, one segment
    assert [s["area"] for s in by_category[7]] == [4 * 16]  # both road components
    assert sorted(s["area"] for s in by_category[26]) == [4 * 16, 4 * 16]  # two cars
    assert [s["area"] for s in by_category[24]] == [16]
    assert pred.ids.shape == (16, 24)
    # The two cars are different segments, each with its own box.
    cars = sorted(by_category[26], key=lambda s: s["bbox"][0])
    assert [c["bbox"] for c in cars] == [[4, 8, 8, 8], [16, 8, 8, 8]]
    assert cars[0]["id"] != cars[1]["id"]


def test_min_area_drops_to_void_and_renumbers():
    kept = _post(LABELS, COMPONENTS, thing_min_area=16)
    dropped = _post(LABELS, COMPONENTS, thing_min_area=17)
    assert len(kept.segments) == 5 and len(dropped.segments) == 4
    person = (slice(4, 8), slice(20, 24))
    assert np.all(dropped.ids[person] == 0) and np.all(dropped.semantic[person] == 255)
    assert np.all(kept.ids[person] > 0)
    _check_consistent(dropped, HAND)
    # Stuff has its own threshold: road (64 px) goes, sky (176 px) stays.
    no_road = _post(LABELS, COMPONENTS, stuff_min_area=65)
    assert 7 not in [s["category_id"] for s in no_road.segments]
    assert 23 in [s["category_id"] for s in no_road.segments]
    _check_consistent(no_road, HAND)


def _blocks(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A grid of random 2x3-node blocks: random classes, one component per block."""
    rng = np.random.default_rng(seed)
    by, bx = np.arange(h)[:, None] // 2, np.arange(w)[None, :] // 3
    block = by * (w // 3 + 1) + bx
    classes = rng.integers(0, 4, block.max() + 1)
    return classes[block], block


@pytest.mark.parametrize(("out_size", "in_size"), [((61, 97), None), ((61, 97), (32, 48))])
def test_upsampling_to_odd_sizes(out_size, in_size):
    size = in_size or out_size
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    labels, comps = _blocks(h, w, seed=3)
    pred = _post(labels, comps, output_size=out_size, input_size=in_size, thing_min_area=20)
    assert pred.ids.shape == out_size and pred.semantic.shape == out_size
    _check_consistent(pred, HAND)
    # Pixel (y, x) takes node (⌊(y+½)·H'/H⌋ // 4, ...), computed here independently in floats.
    rows = np.floor((np.arange(out_size[0]) + 0.5) * size[0] / out_size[0]).astype(int) // 4
    cols = np.floor((np.arange(out_size[1]) + 0.5) * size[1] / out_size[1]).astype(int) // 4
    np.testing.assert_array_equal(axis_nodes(out_size[0], size[0], 4), rows)
    sem = np.where(pred.ids > 0, labels[np.ix_(rows, cols)], 255)
    np.testing.assert_array_equal(pred.semantic, sem)
    if in_size is None:
        # The stride-4 targets' sampling of the upsampled map gives back the grid.
        back = pred.semantic[np.ix_(stride_indices(61, 4), stride_indices(97, 4))]
        np.testing.assert_array_equal(back, np.where(back == 255, 255, labels))


def _edge_prob(segment: np.ndarray, rules: dict[int, tuple[float, float]]) -> np.ndarray:
    """Boundary maps: per thing block id, (border prob, inside prob); 0.1 elsewhere."""
    h, w = segment.shape
    edges = grid_graph(h, w, DISTANCES)
    flat = segment.ravel()
    a, b = flat[edges[:, 0]], flat[edges[:, 1]]
    prob = np.full(len(edges), 0.1)
    for seg_id, (border, inside) in rules.items():
        prob[(a == seg_id) & (b == seg_id)] = inside
        prob[(a == seg_id) ^ (b == seg_id)] = border
    return edge_costs_to_maps(prob.astype(np.float32), DISTANCES, h, w)


def test_score_prefers_well_separated_instances():
    labels = np.zeros((8, 12), int)
    comps = np.zeros((8, 12), int)
    labels[1:4, 1:5], comps[1:4, 1:5] = 2, 1  # crisp car
    labels[4:7, 7:11], comps[4:7, 7:11] = 2, 2  # weakly bounded car
    prob = _edge_prob(comps, {1: (0.95, 0.05), 2: (0.3, 0.2)})
    pred = _post(labels, comps, prob)
    _check_consistent(pred, HAND)
    cars = {s["bbox"][0]: s["score"] for s in pred.segments if s["isthing"]}
    crisp, weak = cars[4], cars[28]
    assert crisp == pytest.approx((1 + 0.95 - 0.05) / 2)
    assert weak == pytest.approx((1 + 0.3 - 0.2) / 2)
    assert 0 <= weak < crisp <= 1
    assert [s["score"] for s in pred.segments if not s["isthing"]] == [1.0]


def test_postprocess_rejects_mismatched_grid():
    with pytest.raises(ValueError, match="grid 4x6 does not match"):
        _post(LABELS, COMPONENTS, output_size=(16, 24), input_size=(20, 24))
    with pytest.raises(ValueError, match="labels"):
        _post(np.full((4, 6), 4), COMPONENTS)


# ---------------------------------------------------------------------------------------------
# Metadata


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init synthetic-tiny network saved as a COPS checkpoint (as training writes)."""
    recipe = load_recipe("synthetic-tiny")
    torch.manual_seed(0)
    net = build_model(recipe.model, len(SYNTHETIC_CATEGORIES), None, restoring=True)
    return save_net(net, recipe, tmp_path_factory.mktemp("ckpt"), 3, "pretrain")


def test_model_card_round_trip(tiny_checkpoint):
    ckpt = Checkpoint.load(tiny_checkpoint)
    card = ckpt.card
    assert card.format == "cops-model" and card.version == 1
    assert card.classes.names[:2] == ["road", "sidewalk"]
    assert card.edge_distances == [1, 2, 4, 8]
    assert (card.min_area.thing, card.min_area.stuff) == (4, 16)
    assert card.normalization.mean == list(IMAGENET_MEAN)
    assert card.normalization.std == list(IMAGENET_STD)
    assert card.cost_scalars.alpha == [1.0] * 4
    assert (card.source.checkpoint, card.source.iteration, card.source.phase) == (
        str(tiny_checkpoint),
        3,
        "pretrain",
    )
    data = json.loads(json.dumps(card.to_dict()))
    assert ModelCard.from_dict(data, "model.json") == card
    # Without the cost scalars in the state dict (older checkpoints) the initial values stand.
    ckpt.weights = {k: v for k, v in ckpt.weights.items() if not k.startswith("costs.")}
    older = ckpt.card.cost_scalars
    assert (older.a, older.b, older.alpha) == (1.0, 0.0, card.cost_scalars.alpha)
    recipe = load_recipe("synthetic-tiny", ["eval.test_size=[32, 64]"])
    scalars = dataclasses.asdict(card.cost_scalars)
    assert ModelCard.of(recipe, card.classes, scalars, card.source).test_size == [32, 64]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("edge_distances"), "edge_distances: missing"),
        (lambda m: m["classes"].update(isthing=["yes"] * 9), r"classes\.isthing\[0\]: expected"),
        (lambda m: m["classes"].update(colors=[[0, 0, 0]]), "classes: names, category_ids"),
        (lambda m: m["normalization"].update(std=[0.2, 0.2, 0.0]), "normalization.std: expected"),
        (lambda m: m["min_area"].pop("thing"), r"min_area\.thing: missing"),
        (lambda m: m.update(test_size=[32]), "test_size: expected"),
        (lambda m: m["cost_scalars"].update(alpha=[1.0]), r"cost_scalars\.alpha: expected"),
        (lambda m: m.update(format="onnx"), "format: expected one of 'cops-model'"),
        (lambda m: m.update(size_divisibility=30), "size_divisibility: expected a positive"),
        (lambda m: m.update(colour=1), "unknown model metadata key 'colour'"),
    ],
)
def test_model_card_errors_name_file_and_key(tiny_checkpoint, edit, message):
    data = json.loads(json.dumps(Checkpoint.load(tiny_checkpoint).card.to_dict()))
    edit(data)
    with pytest.raises(CopsError, match=rf"^model\.json: {message}"):
        ModelCard.from_dict(data, "model.json")


def test_model_card_newer_version(tiny_checkpoint):
    data = Checkpoint.load(tiny_checkpoint).card.to_dict()
    with pytest.raises(CopsError, match="model.json: model metadata version 2 is newer"):
        ModelCard.from_dict({**data, "version": 2}, "model.json")


# ---------------------------------------------------------------------------------------------
# Predictor


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def scenes() -> list[np.ndarray]:
    """Two synthetic street images of different sizes (one odd)."""
    return [generate_scene((0, 1, 0), 61, 97)[0], generate_scene((0, 1, 1), 64, 128)[0]]


def _train_ids(predictor: Predictor) -> dict[int, int]:
    return {c: t for t, c in enumerate(predictor.classes.category_ids)}


def test_predictor_batch_of_sizes_is_deterministic(predictor, scenes):
    first = predictor.predict(scenes)
    second = predictor.predict(scenes)
    assert [p.ids.shape for p in first] == [(61, 97), (64, 128)]
    for a, b in zip(first, second, strict=True):
        _check_consistent(a, _train_ids(predictor))
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.semantic, b.semantic)
        assert a.segments == b.segments
        assert set(a.timings) == {"cnn", "solver", "rest"}
        assert all(v >= 0 for v in a.timings.values())
    assert predictor.classes.names[-1] == "truck"
    assert predictor.card.edge_distances == [1, 2, 4, 8]
    assert predictor.predict([]) == []


def test_predictor_test_size_maps_back(tiny_checkpoint, scenes):
    resized = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", test_size=[32, 64])
    assert resized.card.test_size == [32, 64]
    (pred,) = resized.predict(scenes[:1])
    assert pred.ids.shape == (61, 97)
    _check_consistent(pred, _train_ids(resized))
    # Every output pixel follows one node of the 8x16 grid of the 32x64 network input.
    node = axis_nodes(61, 32, 4)[:, None] * 16 + axis_nodes(97, 64, 4)[None, :]
    pairs = np.unique(np.stack([node.ravel(), pred.ids.ravel()]), axis=1)
    assert pairs.shape[1] == np.unique(node).size == 8 * 16


def test_predictor_normalises_pads_and_crops():
    """A fake runner sees the normalised, zero-padded batch; constant costs: one stuff segment."""
    seen = []

    def runner(batch: torch.Tensor):
        seen.append(batch.clone())
        b, _, height, width = batch.shape
        node = torch.zeros(b, 4, height // 4, width // 4)
        node[:, 1] = -5.0  # sky everywhere
        edge = torch.full((b, 4, height // 4, width // 4), 3.0)
        return node, edge, torch.full_like(edge, 0.25)

    meta = _hand_card()
    # The first and last share a 2x18 grid (solved together), the middle one has its own.
    images = [
        np.full((5, 70, 3), 200, np.uint8),
        np.zeros((33, 9, 3), np.uint8),
        np.zeros((8, 72, 3), np.uint8),
    ]
    preds = Predictor(runner, meta).predict(images)
    (batch,) = seen
    assert tuple(batch.shape) == (3, 3, 64, 96)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    expected = (200 / 255 - mean) / std
    torch.testing.assert_close(batch[0, :, :5, :70], expected.expand(3, 5, 70))
    assert batch[0, :, 5:].abs().max() == 0 and batch[0, :, :, 70:].abs().max() == 0
    assert batch[1, :, 33:].abs().max() == 0 and batch[1, :, :, 9:].abs().max() == 0
    for pred, image in zip(preds, images, strict=True):
        assert pred.ids.shape == image.shape[:2]
        assert [(s["category_id"], s["area"]) for s in pred.segments] == [(23, image[..., 0].size)]
        assert np.all(pred.semantic == 1)


def _hand_card() -> ModelCard:
    return ModelCard.of(
        load_recipe("synthetic-tiny", ["model.edge_distances=[1, 2]"]),
        ClassList(["road", "sky", "car", "person"], CATEGORY_IDS, ISTHING, [[0, 0, 0]] * 4),
        {"a": 1.0, "b": 0.0, "alpha": [1.0, 1.0], "beta": [0.0, 0.0], "edge_distances": [1, 2]},
        CardSource("", 0, "test"),
    )


def test_predictor_errors(tiny_checkpoint, predictor, tmp_path):
    with pytest.raises(ValueError, match=r"images\[1\]: expected a uint8 RGB array"):
        predictor.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])

    def wrong_runner(batch):
        b, _, height, width = batch.shape
        maps = torch.zeros(b, 3, height // 4, width // 4)
        return maps, maps, maps

    with pytest.raises(CopsError, match="node_costs of shape"):
        Predictor(wrong_runner, _hand_card()).predict([np.zeros((8, 8, 3), np.uint8)])
    ckpt = Checkpoint.load(tiny_checkpoint)
    ckpt.recipe_dict["model"]["decoder_channels"] = 16
    broken = save_checkpoint(ckpt, tmp_path)
    with pytest.raises(CopsError, match=f"{broken}: the weights do not fit"):
        Predictor.from_checkpoint(broken, device="cpu")


@pytest.mark.parametrize(
    ("shape", "resize", "expected"),
    [
        ((1024, 2048), (1024, 2048), (1024, 2048)),  # Cityscapes: already at its test size
        ((480, 640), (640, 640), (480, 640)),  # COCO: the longer side caps the scale at 1
        ((333, 500), (640, 640), (426, 640)),  # 333 * 1.28 = 426.24
        ((500, 333), (640, 640), (640, 426)),
        ((300, 300), (640, 640), (640, 640)),
        ((50, 200), (1024, 2048), (512, 2048)),
        ((7, 9), None, (7, 9)),
    ],
)
def test_input_size_resizes_the_shortest_edge_as_the_original(shape, resize, expected):
    assert input_size(shape, resize) == expected


def test_predictor_resizes_shortest_edge_and_maps_back():
    """With ``resize_shortest_edge`` the CNN sees the resized image; outputs keep the input size."""
    seen = []

    def runner(batch: torch.Tensor):
        seen.append(tuple(batch.shape))
        b, _, height, width = batch.shape
        node = torch.zeros(b, 4, height // 4, width // 4)
        node[:, 1] = -5.0
        edge = torch.full((b, 4, height // 4, width // 4), 3.0)
        return node, edge, torch.full_like(edge, 0.25)

    meta = dataclasses.replace(_hand_card(), resize_shortest_edge=[40, 64])
    (pred,) = Predictor(runner, meta).predict([np.zeros((30, 90, 3), np.uint8)])
    div = meta.size_divisibility  # 30x90 -> scale min(40/30, 64/90): 21x64, then padded
    assert seen == [(1, 3, -(-21 // div) * div, -(-64 // div) * div)]
    assert pred.ids.shape == (30, 90)
