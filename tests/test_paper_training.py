"""The paper's training settings (issue 12): fine-tuning parameter groups and learning rates,
frozen modules, node dropout, and the COCO recipe's values."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from cops.errors import CopsError
from cops.models import SemanticBoundaryNet
from cops.recipes.schema import ParamGroupConfig, TrainConfig, load_recipe
from cops.training.engine import build_optimizer, describe_groups
from cops.training.finetune import FINETUNE, drop_costs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net() -> SemanticBoundaryNet:
    torch.manual_seed(0)
    return SemanticBoundaryNet(3, (1, 4), backbone="resnet18", decoder_channels=32)


def _cityscapes_finetune() -> tuple[SemanticBoundaryNet, torch.optim.Optimizer, TrainConfig]:
    recipe = load_recipe("cityscapes-r50")
    cfg = FINETUNE.schedule(recipe)
    model = FINETUNE.prepare(_net(), recipe)
    return model, build_optimizer(model, cfg), cfg


def test_cityscapes_finetune_groups_and_rates_match_the_paper():
    model, optimizer, cfg = _cityscapes_finetune()
    lr = 1e-3
    assert cfg.lr == lr and cfg.amp is False and cfg.weight_decay == 0.0
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    expected = {
        "semantic_head": lr / 40,
        "semantic_predictor": lr / 20,
        "boundary_head": lr / 60,
        "boundary_predictor_last": lr / 20,
        "boundary_predictor": lr / 40,
        "costs": lr,
    }
    assert rates.keys() == expected.keys()  # no "other" group: every trainable parameter placed
    for name, value in expected.items():
        assert rates[name] == pytest.approx(value), name
    group_of = {
        id(p): g["name"] for g in optimizer.param_groups for p in g["params"]
    }  # parameter → its group's name
    params = dict(model.named_parameters())
    placed = {
        "semantic_head.convs.0.weight": "semantic_head",
        "semantic_head.classifier.weight": "semantic_predictor",
        "semantic_head.classifier.bias": "semantic_predictor",
        "boundary_head.trunk.1.weight": "boundary_head",
        "boundary_head.classifiers.0.2.weight": "boundary_predictor_last",
        "boundary_head.classifiers.1.2.bias": "boundary_predictor_last",
        "boundary_head.classifiers.0.0.weight": "boundary_predictor",
        "boundary_head.classifiers.1.1.weight": "boundary_predictor",
        "costs.a": "costs",
        "costs.alpha": "costs",
    }
    for name, group in placed.items():
        assert group_of[id(params[name])] == group, name
    for name, param in params.items():
        frozen = name.split(".")[0] in ("backbone", "semantic_decoder", "boundary_decoder")
        assert param.requires_grad is not frozen, name
        assert (id(param) in group_of) is not frozen, name
    rows = {row["name"]: row for row in describe_groups(model, optimizer)}
    assert rows["frozen"]["lr"] == 0.0 and rows["frozen"]["parameters"] > 0


def test_frozen_modules_get_no_gradient_and_do_not_change():
    model, optimizer, _ = _cityscapes_finetune()
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(torch.randn(2, 3, 64, 64), costs=True)
    loss = out["node_costs"].square().mean() + out["edge_costs"].square().mean()
    loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        if name.split(".")[0] in ("backbone", "semantic_decoder", "boundary_decoder"):
            assert param.grad is None, name
            assert torch.equal(param, before[name]), name
    for name in ("semantic_head.classifier.weight", "boundary_head.trunk.0.weight", "costs.a"):
        assert not torch.equal(dict(model.named_parameters())[name], before[name]), name


def test_pattern_matching_nothing_is_an_error():
    cfg = TrainConfig(param_groups=[ParamGroupConfig("x", ["semantic_head.nonexistent"], 0.1)])
    with pytest.raises(CopsError, match="semantic_head.nonexistent"):
        build_optimizer(_net(), cfg)
    with pytest.raises(CopsError, match="decoderz"):
        build_optimizer(_net(), TrainConfig(frozen=["decoderz"]))


def test_empty_groups_train_everything_at_lr():
    model = _net()
    optimizer = build_optimizer(model, TrainConfig(lr=0.01))
    assert [g["name"] for g in optimizer.param_groups] == ["other"]
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_node_dropout_drops_whole_nodes():
    torch.manual_seed(0)
    nodes = torch.randn(3, 200, 5) + 10.0  # no cost is 0 by chance
    edges = torch.randn(3, 400) + 10.0
    dropped_nodes, dropped_edges = drop_costs(nodes, edges, node_p=0.3, edge_p=0.0)
    assert torch.equal(dropped_edges, edges)
    zero_rows = (dropped_nodes == 0).all(-1)
    kept_rows = (dropped_nodes == nodes).all(-1)
    assert bool((zero_rows | kept_rows).all())  # every node is dropped whole or kept whole
    assert 0.2 < float(zero_rows.float().mean()) < 0.4
    kept_nodes, some_edges = drop_costs(nodes, edges, node_p=0.0, edge_p=0.3)
    assert torch.equal(kept_nodes, nodes)
    assert 0.2 < float((some_edges == 0).float().mean()) < 0.4


@pytest.mark.slow
def test_coco_recipe_resolves_to_the_coco_values():
    shown = subprocess.run(
        [sys.executable, "-m", "cops.cli", "recipes", "show", "coco-r50"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    recipe = yaml.safe_load(shown)
    assert recipe["data"]["crop_size"] == [640, 640]
    assert recipe["train"]["batch_size"] == 48
    assert recipe["loss"]["semantic_top_k"] == 1.0
    ft = recipe["finetune"]
    assert ft["lr"] == 1e-4 and ft["pq_weight"] == 100.0
    assert ft["surrogate"] == "paper" and ft["weights"] == "binary" and ft["amp"] is False
    assert ft["node_dropout"] == 0.1 and ft["cost_dropout"] == 0.1
    assert ft["frozen"] == ["backbone", "semantic_decoder", "boundary_decoder"]
    assert recipe["solver"]["lambda_min"] == 1000.0 and recipe["solver"]["lambda_max"] == 5000.0
    assert recipe["eval"]["stuff_min_area"] == 4096 and recipe["eval"]["thing_min_area"] == 200
    city = load_recipe("cityscapes-r50")
    assert city.loss.semantic_resolution == "full" and not city.loss.semantic_thing_weighting
    assert city.loss.boundary_terms == "per_map" and city.loss.boundary_weights == "pixel"
    assert city.loss.semantic_top_k == 0.2 and city.eval.stuff_min_area == 2048
