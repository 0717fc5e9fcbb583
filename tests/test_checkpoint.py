"""Checkpoints: atomic writes, weights_only loading, RNG round trips, kept copies, weight files."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cops.datasets.class_list import ClassList
from cops.errors import CopsError
from cops.files import atomic_save
from cops.models import BackboneInitWarning, ResNetBackbone, SemanticBoundaryNet, WeightsError
from cops.models.build import load_model_weights
from cops.models.checkpoint import FORMAT, Checkpoint
from cops.training.checkpoint import LAST, rng_state, save_checkpoint, set_rng_state


def _net(num_classes: int = 3) -> SemanticBoundaryNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        return SemanticBoundaryNet(
            num_classes, [1, 2], "resnet18", aspp_rates=[1], decoder_channels=8
        )


def _classes(count: int) -> ClassList:
    return ClassList(
        [f"c{k}" for k in range(count)], list(range(count)), [False] * count, [[0] * 3] * count
    )


def _state(iteration: int, weights: dict | None = None, **training) -> Checkpoint:
    weights = weights if weights is not None else {"w": torch.full((3,), float(iteration))}
    return Checkpoint(weights, {"seed": 0}, _classes(3), iteration, "pretrain", training)


def test_failing_save_keeps_previous_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    save_checkpoint(_state(1), tmp_path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2), tmp_path)
    monkeypatch.undo()
    assert Checkpoint.load(tmp_path / LAST).iteration == 1
    assert [p.name for p in tmp_path.iterdir()] == [LAST], "no temporary file may remain"


def test_checkpoint_loads_with_weights_only_and_restores_rng(tmp_path: Path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))
    save_checkpoint(_state(5, rng=[state]), tmp_path)
    loaded = torch.load(tmp_path / LAST, weights_only=True)  # plain containers and tensors only
    assert loaded["iteration"] == 5 and loaded["format"] == FORMAT
    random.random(), np.random.rand(), torch.rand(7)
    set_rng_state(Checkpoint.load(tmp_path / LAST).training["rng"][0])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])


def test_keep_last_numbered_checkpoints(tmp_path: Path):
    for iteration in (1, 2, 3):
        save_checkpoint(_state(iteration), tmp_path, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt_0000002.pt", "ckpt_0000003.pt", LAST]
    assert Checkpoint.load(tmp_path / "ckpt_0000002.pt").iteration == 2
    assert Checkpoint.load(tmp_path / LAST).iteration == 3


def test_load_checkpoint_names_bad_files(tmp_path: Path):
    with pytest.raises(CopsError, match=r"missing\.pt: file not found \(expected a checkpoint\)"):
        Checkpoint.load(tmp_path / "missing.pt")
    atomic_save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CopsError, match="plain.pt: not a COPS checkpoint"):
        Checkpoint.load(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CopsError, match=r"junk\.pt: not a torch file .*expected a checkpoint"):
        Checkpoint.load(tmp_path / "junk.pt")


def test_weights_from_backbone_state_dict(tmp_path: Path):
    reference = {
        f"backbone.{k}": torch.randn_like(v.float()).to(v.dtype)
        for k, v in ResNetBackbone("resnet18").state_dict().items()
    }
    torch.save(reference, tmp_path / "resnet18.pth")
    net = _net()
    assert "backbone weights" in load_model_weights(net, tmp_path / "resnet18.pth")
    got = net.backbone.layer4[1].conv2.weight
    assert torch.equal(got, reference["backbone.layer4.1.conv2.weight"])
    torch.save(ResNetBackbone("resnet34").state_dict(), tmp_path / "r34.pth")
    with pytest.raises(WeightsError, match="r34.pth: weights do not fit backbone resnet18"):
        load_model_weights(_net(), tmp_path / "r34.pth")


def test_weights_from_checkpoint_with_other_class_count(tmp_path: Path):
    source = _net(num_classes=5)
    save_checkpoint(_state(7, source.state_dict()), tmp_path)
    net = _net(num_classes=3)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    message = load_model_weights(net, tmp_path / LAST)
    assert "iteration 7" in message
    # the per-class layers: the classifier and the boundary trunk's conv over the class logits
    per_class = ("semantic_head.classifier.", "boundary_head.trunk.0.weight")
    assert "boundary_head.trunk.0.weight, semantic_head.classifier.bias" in message
    loaded, source_state = net.state_dict(), source.state_dict()
    for key, value in loaded.items():
        if key.startswith(per_class):
            assert torch.equal(value, initial[key]), key
        else:
            assert torch.equal(value, source_state[key]), key


LEGACY = Path(__file__).parent / "data" / "legacy_checkpoint"
"""A checkpoint written by the engine before `Checkpoint` existed (cops 0.1.0 as of 2026-12-06:
synthetic-tiny, ResNet-18, 2 pretraining iterations, every weight and BatchNorm statistic shrunk
to a stride-0 expansion of a seeded random row and re-saved by that version's save_checkpoint,
optimizer state dropped: 288 KB), the model metadata and the prediction that version made."""


def test_a_checkpoint_of_the_previous_format_still_loads_and_predicts(tmp_path: Path):
    import dataclasses
    import json

    from cops.inference.predictor import Predictor
    from cops.models.model_card import Postprocess

    ckpt = Checkpoint.load(LEGACY / "last.pt")
    assert (ckpt.iteration, ckpt.phase, len(ckpt.classes)) == (2, "pretrain", 9)
    assert {"optimizer", "scheduler", "scaler", "rng", "world_size"} <= set(ckpt.training)
    expected = json.loads((LEGACY / "model.json").read_text())
    expected["source"]["checkpoint"] = str(LEGACY / "last.pt")
    card = ckpt.card.to_dict()
    # Post-processing options came later; their recipe defaults (the paper's) now apply.
    assert card.pop("postprocess") == {
        "semantic": "nodes",
        "instance_score": "paper",
        "solve_padded": True,
    }
    assert card == expected
    # The prediction of that version, with its post-processing (the card's defaults: ours).
    reference = np.load(LEGACY / "prediction.npz")
    image = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    then = dataclasses.replace(ckpt.card, postprocess=Postprocess())
    (pred,) = Predictor(ckpt.cost_net(), then, backend="cpu").predict([image])
    np.testing.assert_array_equal(pred.ids, reference["ids"])
    np.testing.assert_array_equal(pred.semantic, reference["semantic"])
    assert pred.segments == json.loads(str(reference["segments"]))
    # Saved again by this version, it is the same checkpoint.
    again = Checkpoint.load(ckpt.save(tmp_path / "again.pt"))
    assert again.card.classes == ckpt.classes and again.training.keys() == ckpt.training.keys()
    for key, value in ckpt.weights.items():
        assert torch.equal(again.weights[key], value), key
