"""The original COPS training computations, checked against a capture of the original code.

The fixture (`tests/_training_fixture.py`; the folder `$COPS_TRAINING_FIXTURE` when that is set,
else the copy in tests/data/cops_reference_training) holds targets from a drawn ground truth, the
pretraining losses and gradients, the perturbation backward with every solver call recorded, and
the inference outputs. Every input here is derived from its documented files only, so the same
tests run on another capture of the same format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from cops.datasets.targets import make_targets
from cops.inference.released import recipe_classes
from cops.models.costs import AffineCosts
from cops.models.heads import midpoint_to_source, source_to_midpoint
from cops.models.losses import PretrainLoss, hard_boundary_bce, hard_pixel_cross_entropy
from cops.models.paper_pq import LossChannels
from cops.recipes.schema import LossConfig, load_recipe
from cops.solver import AMWCResult, amwc_masks, amwc_solve, edge_maps_to_costs, grid_graph, layer
from cops.training.finetune import PQObjective
from cops.training.loaders import target_config
from tests import _training_fixture as fixture


def _distances() -> list[int]:
    """The Cityscapes edge distances of the capture (its target generator's attributes)."""
    return list(
        fixture.meta("capture_info")["target_generator"]["img0"]["pretrain"]["edge_distances"]
    )


def _to_source(maps: np.ndarray, d: int) -> torch.Tensor:
    """A fixture edge array [B, 2, h, w] (midpoint layout) in the project's source layout."""
    return midpoint_to_source(torch.from_numpy(np.ascontiguousarray(maps)), d)


# ---------------------------------------------------------------------------------------------
# Section 2: targets (README "Using it" item 1): the original's target generator on the drawn
# ground truth, both images with both configs, and COCO padded to the size divisibility.


def _generator_recipe(attributes: dict, base: str) -> object:
    """The paper recipe `base` with the capture's target-generator attributes set."""
    overrides = [
        f"model.edge_distances={attributes['edge_distances']}",
        f"loss.thing_weight={attributes['instance_loss_weight']}",
        f"loss.small_instance_weight={attributes['small_instance_weight']}",
        f"loss.small_instance_area={attributes['small_instance_area']}",
        f"loss.crowd_weight={0.0 if attributes['ignore_crowd'] else 1.0}",
    ]
    return load_recipe(base, overrides)


def _segments(segments_info: list[dict]) -> list[dict]:
    """The capture's segments_info as the target generator's segment dicts."""
    return [{**seg, "train_id": seg["category_id"]} for seg in segments_info]


def _original_panoptic(ours: np.ndarray, segments: list[dict], present: set[int]) -> np.ndarray:
    """Our stride-4 segment ids in the original's numbering (README "targets.npz"): stuff
    class·1000, thing class·1000 + k (k from 1 per class in segments_info order, over the
    segments present in the crop), void and crowd -1."""
    out = np.full(ours.shape, -1, dtype=np.int64)
    count: dict[int, int] = {}
    for seg in segments:
        if seg["iscrowd"] or seg["id"] not in present:
            continue
        cls = seg["category_id"]
        if seg["isthing"]:
            count[cls] = count.get(cls, 0) + 1
        out[ours == seg["id"]] = cls * 1000 + (count[cls] if seg["isthing"] else 0)
    return out


def _check_targets(ours: dict, ref: dict, prefix: str, phase: str, distances: list[int]) -> None:
    """Compare our targets with the capture's arrays `prefix*` of one config, exactly."""
    height, width = ref[f"{prefix}sem_seg"].shape
    np.testing.assert_array_equal(ours["semantic"][:height, :width], ref[f"{prefix}sem_seg"])
    np.testing.assert_array_equal(
        ours["weights"][:height, :width], ref[f"{prefix}sem_seg_weights_{phase}"]
    )
    np.testing.assert_array_equal(ours["weights_s4"] > 0, ref[f"{prefix}panoptic_weights"] > 0)
    for i, d in enumerate(distances):
        cuts = torch.from_numpy(ours["cut_targets"][None, 2 * i : 2 * i + 2])
        weights = torch.from_numpy(ours["cut_weights"][None, 2 * i : 2 * i + 2])
        np.testing.assert_array_equal(
            source_to_midpoint(cuts, d)[0].numpy(), ref[f"{prefix}affinities_d{d}"]
        )
        np.testing.assert_array_equal(
            source_to_midpoint(weights, d)[0].numpy(),
            ref[f"{prefix}affinity_weights_d{d}_{phase}"],
        )


@pytest.mark.parametrize("phase", ["pretrain", "finetune"])
@pytest.mark.parametrize("image", [0, 1])
def test_cityscapes_targets_equal_the_originals(image: int, phase: str) -> None:
    ref = fixture.arrays("targets")
    attributes = fixture.meta("capture_info")["target_generator"][f"img{image}"][phase]
    assert attributes["size_divisibility"] <= 0 and attributes["downsampling_factor"] == 4
    recipe = _generator_recipe(attributes, "cityscapes-r50")
    segments = _segments(fixture.meta("gt_meta")["images"][image]["segments_info"])
    panoptic = ref[f"img{image}_panoptic_input"]
    ours = make_targets(panoptic, segments, target_config(recipe))
    _check_targets(ours, ref, f"img{image}_", phase, attributes["edge_distances"])
    present = set(np.unique(panoptic).tolist())
    np.testing.assert_array_equal(
        _original_panoptic(ours["panoptic_s4"], segments, present), ref[f"img{image}_panoptic"]
    )


def _coco_segments(panoptic: np.ndarray) -> list[dict]:
    """The COCO entry of gt_meta drawn as `panoptic` (fed unaugmented: areas are pixel counts)."""
    for entry in fixture.meta("gt_meta")["coco"]:
        segments = entry["segments_info"]
        if all(int((panoptic == s["id"]).sum()) == s["area"] for s in segments):
            return _segments(segments)
    raise AssertionError("no COCO segments_info of gt_meta.json matches coco_panoptic_input")


@pytest.mark.parametrize("phase", ["pretrain", "finetune"])
def test_coco_targets_padded_to_the_size_divisibility_equal_the_originals(phase: str) -> None:
    ref = fixture.arrays("targets")
    attributes = fixture.meta("capture_info")["target_generator"][f"coco_{phase}"]
    divisibility = attributes["size_divisibility"]
    assert divisibility > 0
    recipe = _generator_recipe(attributes, "coco-r50")
    panoptic = ref["coco_panoptic_input"]
    segments = _coco_segments(panoptic)
    ours = make_targets(panoptic, segments, target_config(recipe, divisibility))
    assert ours["semantic"].shape == ref[f"coco_model_sem_seg_padded_{phase}"].shape
    np.testing.assert_array_equal(ours["semantic"], ref[f"coco_model_sem_seg_padded_{phase}"])
    np.testing.assert_array_equal(
        ours["weights"], ref[f"coco_model_sem_seg_weights_padded_{phase}"]
    )
    _check_targets(ours, ref, "coco_", phase, attributes["edge_distances"])
    present = set(np.unique(panoptic).tolist())
    np.testing.assert_array_equal(
        _original_panoptic(ours["panoptic_s4"], segments, present), ref["coco_panoptic"]
    )


# ---------------------------------------------------------------------------------------------
# Section 2: pretraining losses (README "Using it" item 2): the original's DeepLabCE over the
# whole batch and one BCE per (distance, direction), top-k over all positions.


def _pretrain_inputs() -> dict[str, torch.Tensor]:
    """The capture's logits and Cityscapes pretraining targets as a batch of two, our layout."""
    targets, logits = fixture.arrays("targets"), fixture.arrays("network_outputs")
    distances = _distances()
    stack = lambda key: np.stack([targets[f"img{b}_{key}"] for b in range(2)])  # noqa: E731
    boundary = [_to_source(logits[f"aff_logits_d{d}"], d) for d in distances]
    cuts = [_to_source(stack(f"affinities_d{d}").astype(np.float32), d) for d in distances]
    weights = [_to_source(stack(f"affinity_weights_d{d}_pretrain"), d) for d in distances]
    return {
        "semantic": torch.from_numpy(logits["sem_logits"]).requires_grad_(True),
        "target": torch.from_numpy(stack("sem_seg").astype(np.int64)),
        "weights": torch.from_numpy(stack("sem_seg_weights_pretrain").astype(np.float32)),
        "boundary": torch.cat(boundary, dim=1).requires_grad_(True),
        "cuts": torch.cat(cuts, dim=1),
        "cut_weights": torch.cat(weights, dim=1),
    }


def test_pretraining_losses_and_gradients_equal_the_originals() -> None:
    x, ref = _pretrain_inputs(), fixture.arrays("pretrain_losses")
    cfg = LossConfig()  # the schema defaults are the paper's
    assert cfg.top_k_over == "all"
    upsampled = torch.nn.functional.interpolate(
        x["semantic"], size=x["target"].shape[-2:], mode="bilinear", align_corners=False
    )
    semantic = hard_pixel_cross_entropy(
        upsampled, x["target"], x["weights"], cfg.semantic_top_k, mine_from=cfg.top_k_over
    )
    np.testing.assert_allclose(semantic.item(), ref["loss_sem_seg"], rtol=1e-5)
    (grad,) = torch.autograd.grad(semantic, x["semantic"])
    np.testing.assert_allclose(grad.numpy(), ref["grad_sem_logits"], rtol=0, atol=1e-7)

    terms = []
    for i, d in enumerate(_distances()):
        for c in range(2):
            ch = slice(2 * i + c, 2 * i + c + 1)
            term = cfg.boundary_weight * hard_boundary_bce(
                x["boundary"][:, ch],
                x["cuts"][:, ch],
                x["cut_weights"][:, ch],
                cfg.boundary_top_k,
                mine_from=cfg.top_k_over,
            )
            np.testing.assert_allclose(
                term.item(), ref[f"loss_affinities_dist_{d}_c_{c}"], rtol=1e-5
            )
            terms.append(term)
    (grad,) = torch.autograd.grad(torch.stack(terms).sum(), x["boundary"])
    for i, d in enumerate(_distances()):
        expected = _to_source(ref[f"grad_aff_logits_d{d}"], d).numpy()
        np.testing.assert_allclose(grad[:, 2 * i : 2 * i + 2].numpy(), expected, rtol=0, atol=1e-7)

    # The recipe-level loss is the same sum: semantic + 0.25 · Σ of the per-map terms.
    total, parts = PretrainLoss(cfg)(
        x["semantic"], x["target"], x["weights"], x["boundary"], x["cuts"], x["cut_weights"]
    )
    expected_total = ref["loss_sem_seg"] + sum(
        ref[f"loss_affinities_dist_{d}_c_{c}"] for d in _distances() for c in range(2)
    )
    np.testing.assert_allclose(total.item(), expected_total, rtol=1e-5)
    np.testing.assert_allclose(parts["semantic"].item(), ref["loss_sem_seg"], rtol=1e-5)


def test_top_k_over_valid_positions_differs_on_the_capture() -> None:
    """Ours (`valid`) mines another set, so the option matters on the original's inputs."""
    x, ref = _pretrain_inputs(), fixture.arrays("pretrain_losses")
    ours = hard_boundary_bce(
        x["boundary"][:, -2:-1],
        x["cuts"][:, -2:-1],
        x["cut_weights"][:, -2:-1],
        0.25,
        mine_from="valid",
    )
    d = _distances()[-1]
    assert abs(0.25 * ours.item() - float(ref[f"loss_affinities_dist_{d}_c_0"])) > 1e-3


# ---------------------------------------------------------------------------------------------
# Section 2: the paper's pretraining settings in the paper recipes (no fixture needed).


@pytest.mark.parametrize("name", ["cityscapes-r50", "coco-r50"])
def test_paper_recipes_carry_the_original_pretraining_settings(name: str) -> None:
    recipe = load_recipe(name)
    loss, data, train = recipe.loss, recipe.data, recipe.train
    assert (loss.top_k_over, loss.crowd_weight, loss.small_instance_area_in) == ("all", 1.0, "crop")
    assert (data.scale, data.crop) == ("shortest_edge", "clip")
    assert (train.amp, train.warmup_iters, train.warmup_factor) == (False, 1000, 0.001)
    assert recipe.model.aspp_dropout == 0.1
    # Cityscapes: per-GPU BatchNorm (NORM "BN"); COCO's pretraining uses SyncBN.
    assert recipe.model.sync_bn is (name == "coco-r50")
    if name == "cityscapes-r50":
        assert len(data.shortest_edges) == 16 and data.shortest_edges[::15] == [512, 2048]
        assert data.max_size == 4096 and recipe.finetune.shortest_edges is None
    else:
        assert data.shortest_edges == list(range(320, 961, 64)) and data.max_size == 960
        assert recipe.finetune.shortest_edges == list(range(448, 769, 64))


def test_warm_up_from_a_factor_is_detectron2s_linear_warm_up() -> None:
    from cops.training.schedule import warmup_poly_factor

    assert warmup_poly_factor(0, 100, 10, 0.0, factor=0.001) == pytest.approx(0.001)
    assert warmup_poly_factor(5, 100, 10, 0.0, factor=0.001) == pytest.approx(0.0005 + 0.5)
    assert warmup_poly_factor(10, 100, 10, 0.0, factor=0.001) == 1.0
    assert warmup_poly_factor(50, 100, 10, 0.9, factor=0.001) == pytest.approx(0.5**0.9)
    assert warmup_poly_factor(0, 100, 10, 0.0) == pytest.approx(0.1)  # ours: (step + 1) / 10


def test_aspp_dropout_acts_in_train_mode_only() -> None:
    from cops.models.decoder import ASPP

    torch.manual_seed(0)
    aspp = ASPP(8, 16, [1, 2], None, dropout=0.1)
    x = torch.randn(2, 8, 6, 6)
    aspp.eval()
    assert torch.equal(aspp(x), aspp(x))
    aspp.train()
    for parameter in aspp.parameters():  # frozen (no gradient) but in train mode: still drops
        parameter.requires_grad_(False)
    dropped = aspp(x)
    aspp.dropout = 0.0
    kept = aspp(x)
    live = kept != 0
    zeroed = (dropped[live] == 0).float().mean().item()
    assert 0.05 < zeroed < 0.2
    survivors = live & (dropped != 0)
    torch.testing.assert_close(dropped[survivors], kept[survivors] / 0.9)


# ---------------------------------------------------------------------------------------------
# PQ surrogate, matching, perturbation backward (README "Using it" items 3, 4, 5): the capture's
# fine-tuning step. Every number below comes from capture_info.json "finetune" (classes, things,
# distances, areas, λ range and samples, loss weight), so a COCO capture runs the same tests.


def _finetune() -> dict:
    """The fine-tuning step's recorded settings (capture_info.json "finetune")."""
    return fixture.meta("capture_info")["finetune"]


def _isthing() -> list[bool]:
    """Thing flag per contiguous class of the fine-tuning capture."""
    params = _finetune()["params"]
    return [c in params["thing_ids"] for c in range(params["num_classes"])]


def _objective() -> PQObjective:
    """Our paper fine-tuning objective with the capture's settings written as recipe keys, on the
    built-in class table (Cityscapes or COCO) whose thing classes are the capture's."""
    ft, params = _finetune(), _finetune()["params"]
    sets = [
        f"model.edge_distances={json.dumps(params['edge_distances'])}",
        f"eval.thing_min_area={ft['instance_area']}",
        f"eval.stuff_min_area={ft['stuff_area']}",
        f"finetune.stuff_area_factor={ft['downsampling_factor_stuff_areas']}",
        f"finetune.min_thing_nodes={params['ignore_instance_size_amc']}",
        f"finetune.pq_weight={ft['amc_loss_weight']}",
        f"solver.lambda_min={params['lambda_val_start']}",
        f"solver.lambda_max={params['lambda_val_end']}",
        f"solver.num_samples={params['backprop_num_samples']}",
    ]
    for name in ("cityscapes-r50", "coco-r50"):
        recipe = load_recipe(name, sets)
        objective = PQObjective(recipe, recipe_classes(recipe), torch.device("cpu"))
        if objective.partitionable.tolist() == _isthing():
            break
    else:
        pytest.fail("no built-in class table has the capture's thing classes")
    assert recipe.solver.backward == "paper" and recipe.solver.lambda_per == "batch"
    assert recipe.finetune.surrogate == "paper" and recipe.finetune.weights == "binary"
    return objective


def _label_divisor() -> int:
    """The target generator's label divisor (class·divisor + instance ids)."""
    generator = fixture.meta("capture_info")["target_generator"]
    return next(v["finetune"]["label_divisor"] for v in generator.values() if "finetune" in v)


def _grid() -> tuple[int, int, int]:
    """Batch size and stride-4 grid (h, w) of the fine-tuning capture."""
    b, h, w = fixture.arrays("finetune_pq")["panoptic_weights"].shape
    return b, h, w


def _edge_values(maps: dict[int, np.ndarray]) -> torch.Tensor:
    """Per-distance [B, 2, h, w] arrays in the original's layout → our per-edge values [B, E]."""
    distances = _finetune()["params"]["edge_distances"]
    ours = [_to_source(maps[d], d) for d in distances]
    return edge_maps_to_costs(torch.cat(ours, dim=1), distances)


def _ft_batch() -> dict[str, torch.Tensor]:
    """The capture's fine-tuning ground truth as our batch keys (stride-4 ids, 0 = void/crowd)."""
    batch_size, _, _ = _grid()
    targets, distances = fixture.arrays("targets"), _finetune()["params"]["edge_distances"]
    panoptic = np.stack([targets[f"img{b}_panoptic"] for b in range(batch_size)]).astype(np.int64)
    weights = {
        d: np.stack([targets[f"img{b}_affinity_weights_d{d}_finetune"] for b in range(batch_size)])
        for d in distances
    }
    cut_weights = torch.cat([_to_source(weights[d], d) for d in distances], dim=1)
    return {
        "panoptic_s4": torch.from_numpy(np.where(panoptic >= 0, panoptic + 1, 0)),
        "semantic_s4": torch.from_numpy(np.where(panoptic >= 0, panoptic // _label_divisor(), 255)),
        "weights_s4": torch.from_numpy(fixture.arrays("finetune_pq")["panoptic_weights"]),
        "cut_weights": cut_weights.float(),
    }


def _sha(x: np.ndarray) -> str:
    """The capture's input hash: sha256(dtype + shape + bytes)."""
    x = np.ascontiguousarray(x)
    return hashlib.sha256((str(x.dtype) + str(x.shape)).encode() + x.tobytes()).hexdigest()


class _RecordedSolvers:
    """The solver replaced by the capture's calls: each input must hash to a recorded one."""

    def __init__(self) -> None:
        self.calls = fixture.arrays("finetune_solver_calls")
        self.num_edges = self.calls["edges"].shape[0]
        self.mwc_keys = {v["node_costs"]: k for k, v in _finetune()["mwc_input_sha256"].items()}
        self.mwc_calls: list[str] = []
        self.atol = 0.0

    def cut(self, key: str) -> np.ndarray:
        return np.unpackbits(self.calls[f"{key}_edge_labels_packed"])[: self.num_edges] > 0

    def amwc_batch(self, node_costs, edges, edge_costs, partitionable, backend, **_):
        hashes = _finetune()["amwc_input_sha256"]
        labels, components, cuts = [], [], []
        for b in range(node_costs.shape[0]):
            assert _sha(node_costs[b].numpy()) == hashes[b]["node_costs"], f"AMWC input {b}"
            assert _sha(edge_costs[b].numpy()) == hashes[b]["edge_costs"], f"AMWC edges {b}"
            part = torch.as_tensor(self.calls[f"amwc_img{b}_partitionable"])
            assert torch.equal(partitionable.cpu(), part)
            labels.append(torch.from_numpy(self.calls[f"amwc_img{b}_node_label"].astype(np.int64)))
            components.append(torch.from_numpy(self.calls[f"amwc_img{b}_instance_id"]).long())
            cuts.append(torch.from_numpy(self.cut(f"amwc_img{b}")))
        stack = torch.stack
        return AMWCResult(stack(labels), stack(components), stack(cuts), torch.zeros(len(cuts)))

    def recorded_input(self, key: str) -> np.ndarray:
        """A multiway cut's recorded input [N, K′]: class costs + float32(λ)·delta."""
        image_key, sample_key = key.split("_")  # "img{b}_s{s}"
        image, sample = int(image_key[3:]), int(sample_key[1:])
        logits = fixture.arrays("network_outputs")["sem_logits"][image]
        labels = self.calls[f"mwc_img{image}_index_to_category"]
        lam = np.float32(self.calls["lambda"][image, sample])
        costs = -logits[labels] + lam * self.calls[f"mwc_img{image}_delta_costs"]
        return costs.reshape(costs.shape[0], -1).T

    def mwc(self, node_costs, edges, edge_costs, partitionable, backend, **_):
        key = self.mwc_keys.get(_sha(node_costs))
        if key is None and self.atol:  # a loss gradient equal up to float32 summation order
            near = [
                k for k in self.mwc_keys.values()
                if self.recorded_input(k).shape == node_costs.shape
                and np.abs(self.recorded_input(k) - node_costs).max() <= self.atol
            ]  # fmt: skip
            key = near[0] if len(near) == 1 else None
        assert key is not None, "a multiway cut input differs from every recorded one"
        assert not partitionable.any()
        self.mwc_calls.append(key)
        labels = self.calls[f"mwc_{key}_node_label"].astype(np.int64)
        return AMWCResult(labels, labels, self.cut(f"mwc_{key}"), 0.0)


@pytest.fixture
def solvers(monkeypatch: pytest.MonkeyPatch) -> _RecordedSolvers:
    """The capture's solver calls and λ draws replayed in place of our solver and generator."""
    recorded = _RecordedSolvers()
    monkeypatch.setattr(layer, "solve_amwc_batch", recorded.amwc_batch)
    monkeypatch.setattr(layer, "solve_amwc", recorded.mwc)
    lambdas = recorded.calls["lambda"]
    monkeypatch.setattr(layer, "_sample_lambdas", lambda opts, b: lambdas[:b])
    return recorded


def _costs() -> tuple[AffineCosts, torch.Tensor, torch.Tensor]:
    """Our affine cost maps on the capture's logits: (module, node costs [B, N, K], edge costs)."""
    logits, distances = fixture.arrays("network_outputs"), _finetune()["params"]["edge_distances"]
    costs = AffineCosts(distances)
    boundary = torch.cat([_to_source(logits[f"aff_logits_d{d}"], d) for d in distances], dim=1)
    node = costs.node_costs(torch.from_numpy(logits["sem_logits"]))
    edge = edge_maps_to_costs(costs.edge_costs(boundary), distances)
    return costs, node, edge


def _channel_classes() -> torch.Tensor:
    """Class per loss channel [B, C] from the capture's category_indices_gt (-1 = padding)."""
    categories = _finetune()["category_indices_gt"]
    width = fixture.arrays("finetune_pq")["gt_panoptic_one_hot"].shape[1]
    classes = torch.full((len(categories), width), -1, dtype=torch.long)
    for b, per_class in enumerate(categories):
        for c, channels in per_class.items():
            classes[b, channels] = int(c)
    return classes


def test_the_captures_edge_list_is_ours() -> None:
    calls, (_, h, w) = fixture.arrays("finetune_solver_calls"), _grid()
    distances = _finetune()["params"]["edge_distances"]
    np.testing.assert_array_equal(calls["edges"], grid_graph(h, w, distances))
    logits = fixture.arrays("network_outputs")
    flat = np.concatenate([-logits[f"aff_logits_d{d}"][0].ravel() for d in distances])
    ours = _edge_values({d: -logits[f"aff_logits_d{d}"] for d in distances})[0]
    np.testing.assert_array_equal(ours.numpy(), flat[calls["edge_cost_source_index"]])


def test_pq_surrogate_equals_the_originals() -> None:
    ref, objective = fixture.arrays("finetune_pq"), _objective()
    to_ours = lambda x: torch.from_numpy(x).float().flatten(2).transpose(1, 2)  # noqa: E731
    pred = to_ours(ref["padded_pred_panoptic_one_hot"]).requires_grad_(True)
    classes = _channel_classes()
    num_pred = torch.tensor([len(x) for x in _finetune()["pred_index_to_class"]])
    channels = LossChannels(to_ours(ref["gt_panoptic_one_hot"]), classes, num_pred)
    weights = torch.from_numpy(ref["panoptic_weights"]).flatten(1)
    terms = objective.pq_loss.paper(pred, channels, weights)
    loss = objective.finetune.pq_weight * terms.loss
    np.testing.assert_allclose(terms.ious.detach().numpy(), ref["ious"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        terms.foreground_prob.detach().numpy(), ref["foreground_prob"], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(loss.item(), ref["loss_PQ"], rtol=1e-6)
    (grad,) = torch.autograd.grad(loss, pred)
    expected = torch.from_numpy(ref["grad_loss_wrt_padded_pred_one_hot"]).flatten(2)
    np.testing.assert_allclose(grad.transpose(1, 2).numpy(), expected.numpy(), rtol=0, atol=1e-8)


def test_matching_rebuilds_the_originals_channels(solvers: _RecordedSolvers) -> None:
    ref, ft, objective = fixture.arrays("finetune_pq"), _finetune(), _objective()
    batch_size, h, w = _grid()
    _, node, edge = _costs()
    edges = torch.from_numpy(grid_graph(h, w, ft["params"]["edge_distances"]))
    solution = amwc_solve(
        node, edge, edges, torch.tensor(_isthing()),
        min_thing_nodes=objective.finetune.min_thing_nodes,
    )  # fmt: skip
    batch = _ft_batch()
    weights = batch["weights_s4"].flatten(1)
    gt = (batch["panoptic_s4"].flatten(1), batch["semantic_s4"].flatten(1))
    channels = objective.pq_loss.match(solution.segments, solution.classes, *gt, weights)
    for b in range(batch_size):
        theirs = ref[f"pred_panoptic_one_hot_img{b}"].reshape(-1, h * w).astype(bool)
        their_class = ref[f"pred_index_to_class_img{b}"]
        count = int(solution.num_segments[b])
        ours = solution.masks[b, :, :count].T.numpy().astype(bool)
        # Channels hold the same masks; within a class, in the same (component) order.
        order = [np.flatnonzero((theirs == mask).all(1)) for mask in ours]
        assert all(len(o) == 1 for o in order), "a predicted segment is not one of the original's"
        index = np.concatenate(order)
        assert sorted(index.tolist()) == list(range(len(their_class)))
        np.testing.assert_array_equal(their_class[index], solution.classes[b, :count].numpy())
        for c in set(their_class.tolist()):
            mine = index[solution.classes[b, :count].numpy() == c]
            assert list(mine) == sorted(mine)
        # Every channel's ground truth; extra channels in the original's order, after the preds.
        total = ft["num_valid_channels_gt"][b]
        index = np.concatenate([index, np.arange(len(their_class), total)])
        assert int((channels.classes[b] >= 0).sum()) == total
        theirs_gt = ref["gt_panoptic_one_hot"][b].reshape(-1, h * w)[index]
        np.testing.assert_array_equal(channels.gt[b, :, :total].T.numpy(), theirs_gt)
        categories = {}
        for j, c in enumerate(channels.classes[b, :total].tolist()):
            categories.setdefault(str(c), []).append(int(index[j]))
        assert categories == ft["category_indices_gt"][b]


def test_perturbation_backward_replays_the_original(solvers: _RecordedSolvers) -> None:
    ref, ft, calls = fixture.arrays("finetune_pq"), _finetune(), solvers.calls
    batch_size, h, w = _grid()
    distances = ft["params"]["edge_distances"]
    _, node, edge = _costs()
    edges = torch.from_numpy(grid_graph(h, w, distances))
    min_nodes = ft["params"]["ignore_instance_size_amc"]
    solution = amwc_solve(node, edge, edges, torch.tensor(_isthing()), min_thing_nodes=min_nodes)
    # The original's channel order (classes, channels) with its recorded loss gradient.
    segments = torch.full_like(solution.segments, -1)
    for b in range(batch_size):
        for j, mask in enumerate(ref["padded_pred_panoptic_one_hot"][b].reshape(-1, h * w)):
            segments[b, mask > 0] = j
    num = torch.tensor([len(x) for x in ft["pred_index_to_class"]])
    replay = dataclasses.replace(solution, segments=segments, num_segments=num)
    classes = _channel_classes()
    for b in range(batch_size):
        label_class, _ = layer._paper_labels(classes[b], ft["params"]["num_classes"])
        np.testing.assert_array_equal(label_class, calls[f"mwc_img{b}_index_to_category"])
    grad = torch.from_numpy(ref["grad_loss_wrt_padded_pred_one_hot"]).flatten(2).transpose(1, 2)
    node = node.detach().requires_grad_(True)
    edge = edge.detach().requires_grad_(True)
    batch = _ft_batch()
    edge_weights = edge_maps_to_costs(batch["cut_weights"], distances)
    cases = [  # unweighted: the recorded average; weighted: the gradients w.r.t. the costs
        ((None, None), "mwc_avg_grad_node_labels", "mwc_avg_grad_edge_labels"),
        ((batch["weights_s4"].flatten(1), edge_weights), "grad_node_costs", "grad_edge_costs"),
    ]
    for (node_weights, weights), node_key, edge_key in cases:
        solvers.mwc_calls.clear()
        masks = amwc_masks(
            node, edge, edges, replay, classes, num_samples=ft["params"]["backprop_num_samples"],
            backward="paper", lambda_per="batch", node_weights=node_weights,
            edge_weights=weights,
        )  # fmt: skip
        grad_node, grad_edge = torch.autograd.grad(masks, [node, edge], grad)
        assert sorted(solvers.mwc_calls) == sorted(ft["mwc_input_sha256"])  # every image solved
        expected = torch.from_numpy(ref[node_key]).flatten(2).transpose(1, 2)
        np.testing.assert_allclose(grad_node.numpy(), expected.numpy(), rtol=0, atol=1e-9)
        expected = _edge_values({d: ref[f"{edge_key}_d{d}"] for d in distances})
        np.testing.assert_allclose(grad_edge.numpy(), expected.numpy(), rtol=0, atol=1e-9)


def test_finetuning_step_gradients_equal_the_originals(solvers: _RecordedSolvers) -> None:
    ref, ft = fixture.arrays("finetune_pq"), _finetune()
    distances = ft["params"]["edge_distances"]
    _, h, w = _grid()
    costs, node, edge = _costs()
    node.retain_grad()
    edge.retain_grad()
    objective = _objective()
    solvers.atol = 1e-4  # λ ≤ 5000 times loss gradients equal to ~1e-9 (summation order)
    loss, _, _ = objective.surrogate(node, edge, (h, w), _ft_batch())
    (objective.finetune.pq_weight * loss).backward()
    np.testing.assert_allclose(
        objective.finetune.pq_weight * loss.item(), ref["loss_PQ"], rtol=1e-6
    )
    assert sorted(solvers.mwc_calls) == sorted(ft["mwc_input_sha256"])
    expected_node = torch.from_numpy(ref["grad_node_costs"]).flatten(2).transpose(1, 2)
    np.testing.assert_allclose(node.grad.numpy(), expected_node.numpy(), rtol=0, atol=1e-9)
    expected_edge = _edge_values({d: ref[f"grad_edge_costs_d{d}"] for d in distances})
    np.testing.assert_allclose(edge.grad.numpy(), expected_edge.numpy(), rtol=0, atol=1e-9)
    seg, aff = ref["grad_seg_cost_weights"], ref["grad_edge_costs_weights"]
    np.testing.assert_allclose(costs.a.grad.item(), seg[0], rtol=1e-5)
    np.testing.assert_allclose(costs.b.grad.item(), seg[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(costs.alpha.grad.numpy(), aff[0::2], rtol=1e-5)
    np.testing.assert_allclose(costs.beta.grad.numpy(), aff[1::2], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_cityscapes_recipe_shows_the_paper_backward() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "cops.cli", "recipes", "show", "cityscapes-r50"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    recipe = yaml.safe_load(shown)
    assert recipe["solver"]["backward"] == "paper" and recipe["solver"]["lambda_per"] == "batch"
    assert recipe["finetune"]["min_thing_nodes"] == 3
    assert recipe["finetune"]["stuff_area_factor"] == 4.0


# ---------------------------------------------------------------------------------------------
# Section 4: inference (README "Using it" item 6): from the same costs and the recorded AMWC
# solution, the original's sem_seg, panoptic map and instances (labels, boxes, scores).


def _original_panoptic_map(pred: object) -> np.ndarray:
    """Our prediction in the original's numbering: stuff class·1000, thing class·1000 + k (k
    from 0 per class in our id order, i.e. by solver component), void -1."""
    out = np.full(pred.ids.shape, -1, dtype=np.int64)
    count: dict[int, int] = {}
    for seg in sorted(pred.segments, key=lambda s: s["id"]):
        cls = seg["category_id"]
        k = count.get(cls, 0) if seg["isthing"] else 0
        count[cls] = k + 1
        out[pred.ids == seg["id"]] = cls * 1000 + k
    return out


@pytest.mark.parametrize("image", [0, 1])
def test_inference_outputs_equal_the_originals(image: int) -> None:
    from cops.inference.instance_score import logits_from_costs
    from cops.inference.postprocess import postprocess

    calls, logits, ref = (
        fixture.arrays(n) for n in ("finetune_solver_calls", "network_outputs", "inference")
    )
    recipe = load_recipe("cityscapes-r50")
    assert (recipe.eval.semantic, recipe.eval.instance_score) == ("nodes", "paper")
    distances = _distances()
    semantic = logits["sem_logits"][image]
    boundary = torch.cat(
        [_to_source(logits[f"aff_logits_d{d}"][image : image + 1], d)[0] for d in distances]
    ).numpy()
    # What a predictor holds: the cost maps of the identity cost scalars (node = -logit).
    one, zero = [1.0] * len(distances), [0.0] * len(distances)
    recovered = logits_from_costs(-semantic, -boundary, 1.0, 0.0, one, zero)
    isthing = calls[f"amwc_img{image}_partitionable"]
    height, width = ref[f"img{image}_panoptic_seg"].shape
    pred = postprocess(
        calls[f"amwc_img{image}_node_label"],
        calls[f"amwc_img{image}_instance_id"],
        1.0 / (1.0 + np.exp(-boundary)),
        edge_distances=distances,
        isthing=isthing,
        category_ids=np.arange(isthing.size),
        thing_min_area=recipe.eval.thing_min_area,
        stuff_min_area=recipe.eval.stuff_min_area,
        output_size=(height, width),
        semantic_from=recipe.eval.semantic,
        instance_score=recipe.eval.instance_score,
        logits=recovered,
    )
    np.testing.assert_array_equal(pred.semantic, ref[f"img{image}_sem_seg_argmax"])
    panoptic = _original_panoptic_map(pred)
    np.testing.assert_array_equal(panoptic, ref[f"img{image}_panoptic_seg"])

    things = [s for s in pred.segments if s["isthing"]]
    labels = np.array([int(panoptic[pred.ids == s["id"]][0]) for s in things])
    order = np.argsort(labels)
    np.testing.assert_array_equal(labels[order], ref[f"img{image}_instance_panoptic_label"])
    classes = np.array([s["category_id"] for s in things])[order]
    np.testing.assert_array_equal(classes, ref[f"img{image}_instance_class"])
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (s["bbox"] for s in things)])
    np.testing.assert_array_equal(boxes[order], ref[f"img{image}_instance_box_xyxy"])
    scores = np.array([s["score"] for s in things])[order]
    np.testing.assert_allclose(scores, ref[f"img{image}_instance_score"], rtol=0, atol=1e-5)


def test_our_semantic_and_scores_differ_on_the_capture() -> None:
    """Ours voids the semantics of dropped segments and scores instances in [0, 1]."""
    from cops.inference.postprocess import postprocess

    calls, logits, ref = (
        fixture.arrays(n) for n in ("finetune_solver_calls", "network_outputs", "inference")
    )
    distances = _distances()
    boundary = torch.cat([_to_source(logits[f"aff_logits_d{d}"][:1], d)[0] for d in distances])
    isthing = calls["amwc_img0_partitionable"]
    pred = postprocess(
        calls["amwc_img0_node_label"],
        calls["amwc_img0_instance_id"],
        boundary.sigmoid().numpy(),
        edge_distances=distances,
        isthing=isthing,
        category_ids=np.arange(isthing.size),
        thing_min_area=200,
        stuff_min_area=2048,
        output_size=ref["img0_panoptic_seg"].shape,
    )
    void = pred.ids == 0
    assert (pred.semantic[void] == 255).all()
    np.testing.assert_array_equal(pred.semantic[~void], ref["img0_sem_seg_argmax"][~void])
    scores = np.array([s["score"] for s in pred.segments if s["isthing"]])
    assert np.all((scores >= 0) & (scores <= 1))
    assert not np.allclose(np.sort(scores), np.sort(ref["img0_instance_score"]), atol=1e-3)


def test_logits_from_costs_inverts_the_cost_scalars() -> None:
    """The paper score reads logits back from the cost maps (what predictors and exports hold)."""
    from cops.inference.instance_score import logits_from_costs
    from cops.models.costs import AffineCosts

    torch.manual_seed(0)
    costs = AffineCosts([1, 4])
    with torch.no_grad():
        costs.a.fill_(0.7)
        costs.b.fill_(-0.3)
        costs.alpha.copy_(torch.tensor([-1.5, 0.5]))
        costs.beta.copy_(torch.tensor([0.2, -0.1]))
    semantic, boundary = torch.randn(1, 3, 5, 6), torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        node, edge = costs.node_cost_maps(semantic)[0], costs.edge_costs(boundary)[0]
    s = costs.scalars()
    got = logits_from_costs(node.numpy(), edge.numpy(), s["a"], s["b"], s["alpha"], s["beta"])
    np.testing.assert_allclose(got[0], semantic[0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[1], boundary[0].numpy(), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="non-zero"):
        logits_from_costs(node.numpy(), edge.numpy(), 0.0, 0.0, s["alpha"], s["beta"])


def test_solving_the_padded_grid_measures_areas_there() -> None:
    """``valid_input`` (eval.solve_padded, the original's COCO inference): the solution covers
    the padded grid, a segment's minimum area counts its padding nodes, and segments wholly in
    the padding leave the output."""
    from cops.inference.postprocess import postprocess

    # Padded input 16x24 (grid 4x6); the image is its top-left 8x16 (grid 2x4).
    labels = np.zeros((4, 6), dtype=np.int64)  # stuff 0 on the image
    labels[1:, 3:] = 1  # stuff 1: 1 node in the image, 8 in the padding
    labels[3, 0] = 2  # a thing wholly in the padding
    components = np.arange(24).reshape(4, 6)
    common = dict(edge_distances=[1], isthing=[False, False, True], category_ids=[5, 6, 7],
                  thing_min_area=1, stuff_min_area=9 * 16, output_size=(8, 16))  # fmt: skip
    padded = postprocess(labels.ravel(), components.ravel(), np.zeros((2, 4, 6)),
                         input_size=(16, 24), valid_input=(8, 16), **common)  # fmt: skip
    assert padded.ids.shape == (8, 16)
    by_category = {s["category_id"]: s for s in padded.segments}
    assert set(by_category) == {5, 6}  # kept by 14 and 9 nodes of the padded grid; no thing 7
    assert (by_category[5]["area"], by_category[6]["area"]) == (7 * 16, 1 * 16)  # output pixels
    assert (padded.ids > 0).all()
    ours = postprocess(labels[:2, :4].ravel(), components[:2, :4].ravel(), np.zeros((2, 2, 4)),
                       input_size=(8, 16), **common)  # fmt: skip
    assert ours.segments == []  # the image's part alone: 7 and 1 nodes, under 9
