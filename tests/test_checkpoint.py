"""Checkpoints: atomic writes, weights_only loading, RNG round trips, kept copies, weight files."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cops.errors import CopsError
from cops.files import atomic_save
from cops.models import BackboneInitWarning, ResNetBackbone, SemanticBoundaryNet, WeightsError
from cops.models.build import FORMAT, load_checkpoint, load_model_weights
from cops.training.checkpoint import LAST, rng_state, save_checkpoint, set_rng_state


def _net(num_classes: int = 3) -> SemanticBoundaryNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        return SemanticBoundaryNet(
            num_classes, [1, 2], "resnet18", aspp_rates=[1], decoder_channels=8
        )


def _state(iteration: int) -> dict:
    return {"iteration": iteration, "model": {"w": torch.full((3,), float(iteration))}}


def test_failing_save_keeps_previous_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    save_checkpoint(_state(1), tmp_path)

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2), tmp_path)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / LAST)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [LAST], "no temporary file may remain"


def test_checkpoint_loads_with_weights_only_and_restores_rng(tmp_path: Path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))
    save_checkpoint({"iteration": 5, "rng": [state], "recipe": {"seed": 0}}, tmp_path)
    loaded = torch.load(tmp_path / LAST, weights_only=True)  # plain containers and tensors only
    assert loaded["iteration"] == 5 and loaded["format"] == FORMAT
    random.random(), np.random.rand(), torch.rand(7)
    set_rng_state(load_checkpoint(tmp_path / LAST)["rng"][0])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])


def test_keep_last_numbered_checkpoints(tmp_path: Path):
    for iteration in (1, 2, 3):
        save_checkpoint(_state(iteration), tmp_path, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt_0000002.pt", "ckpt_0000003.pt", LAST]
    assert load_checkpoint(tmp_path / "ckpt_0000002.pt")["iteration"] == 2
    assert load_checkpoint(tmp_path / LAST)["iteration"] == 3


def test_load_checkpoint_names_bad_files(tmp_path: Path):
    with pytest.raises(CopsError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    atomic_save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CopsError, match="plain.pt: not a COPS checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CopsError, match="junk.pt: cannot read"):
        load_checkpoint(tmp_path / "junk.pt")


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
    save_checkpoint({"iteration": 7, "model": source.state_dict()}, tmp_path)
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
