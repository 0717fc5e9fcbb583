"""The backbone as torchvision's ResNet: equal to torchvision's own models under their weights,
torchvision weight files and ``torchvision:TAG`` names, stems that do not fit, older key names."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cops.models import BackboneInitWarning, ResNetBackbone, SemanticBoundaryNet, WeightsError
from cops.models.backbone_weights import load_backbone_weights, stem_dependent
from cops.models.build import load_model_weights
from cops.models.torchvision_weights import cached_file, resolve_name
from cops.recipes.schema import recipe_from_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LEGACY = Path(__file__).parent / "data" / "legacy_checkpoint" / "last.pt"


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with random BatchNorm statistics and affine terms (init ones are 0/1: too kind)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.normal_(m.weight, 1.0, 0.1)
            nn.init.normal_(m.bias, 0.0, 0.1)
    return model.eval()


def _stages(backbone: ResNetBackbone, x: torch.Tensor) -> list[torch.Tensor]:
    outs, x = [], backbone.stem(x)
    for stage in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
        x = stage(x)
        outs.append(x)
    return outs


def _torchvision_stages(model: torchvision.models.ResNet, x: torch.Tensor) -> list[torch.Tensor]:
    outs, x = [], model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = stage(x)
        outs.append(x)
    return outs


def _ours(name: str, path: Path) -> ResNetBackbone:
    """Our backbone in torchvision's configuration, loaded from a torchvision state-dict file."""
    backbone = ResNetBackbone(
        name, 16, stem="torchvision", multi_grid=(1, 1, 1), dilation_style="torchvision"
    )
    load_backbone_weights(backbone, path)
    return backbone.eval()


def test_resnet50_equals_torchvision_dilated_resnet50(tmp_path):
    reference = _randomised(
        torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]), seed=0
    )
    torch.save(reference.state_dict(), tmp_path / "tv_resnet50.pth")
    ours = _ours("resnet50", tmp_path / "tv_resnet50.pth")
    assert [b.conv2.dilation[0] for b in ours.layer4] == [1, 2, 2]
    x = torch.randn(1, 3, 83, 101)
    with torch.no_grad():
        pairs = zip(_stages(ours, x), _torchvision_stages(reference, x), strict=True)
        for i, (got, want) in enumerate(pairs, start=1):
            assert got.shape == want.shape, f"layer{i}"
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"layer{i}")


def _basic_block(x: torch.Tensor, state: dict, prefix: str, dilation: int) -> torch.Tensor:
    """torchvision's BasicBlock at stride 1 and `dilation`, written with torch.nn.functional."""

    def bn(t: torch.Tensor, name: str) -> torch.Tensor:
        p = f"{prefix}.{name}"
        stats = (state[f"{p}.running_mean"], state[f"{p}.running_var"])
        return F.batch_norm(t, *stats, state[f"{p}.weight"], state[f"{p}.bias"], False, 0.0, 1e-5)

    def conv(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.conv2d(t, state[f"{prefix}.{name}.weight"], padding=dilation, dilation=dilation)

    out = bn(conv(F.relu(bn(conv(x, "conv1"), "bn1")), "conv2"), "bn2")
    if f"{prefix}.downsample.0.weight" in state:
        x = bn(F.conv2d(x, state[f"{prefix}.downsample.0.weight"]), "downsample.1")
    return F.relu(out + x)


def test_resnet18_equals_torchvision_resnet18_where_torchvision_allows(tmp_path):
    """torchvision's BasicBlock refuses dilation, so resnet18 cannot be built with
    replace_stride_with_dilation: layer1-3 are compared with the undilated torchvision resnet18,
    layer4 (stride 1, dilations 1 and 2) with its weights applied by torch.nn.functional."""
    with pytest.raises(NotImplementedError):
        torchvision.models.resnet18(replace_stride_with_dilation=[False, False, True])
    reference = _randomised(torchvision.models.resnet18(), seed=1)
    state = reference.state_dict()
    torch.save(state, tmp_path / "tv_resnet18.pth")
    ours = _ours("resnet18", tmp_path / "tv_resnet18.pth")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        got = _stages(ours, x)
        want = _torchvision_stages(reference, x)
        for i in range(3):
            torch.testing.assert_close(got[i], want[i], atol=1e-5, rtol=0, msg=f"layer{i + 1}")
        layer4 = _basic_block(_basic_block(want[2], state, "layer4.0", 1), state, "layer4.1", 2)
    torch.testing.assert_close(got[3], layer4, atol=1e-5, rtol=0)
    assert got[3].shape[-2:] == want[2].shape[-2:]


def test_paper_dilations_and_torchvision_style():
    paper = ResNetBackbone("resnet101", 8)
    assert {b.conv2.dilation[0] for b in paper.layer3} == {2}
    assert [b.conv2.dilation[0] for b in paper.layer4] == [4, 8, 16]
    tv = ResNetBackbone("resnet101", 8, multi_grid=(1, 2, 4), dilation_style="torchvision")
    assert [b.conv2.dilation[0] for b in tv.layer3] == [1] + [2] * 22
    assert [b.conv2.dilation[0] for b in tv.layer4] == [2, 8, 16]
    reference = torchvision.models.resnet101(replace_stride_with_dilation=[False, True, True])
    tv = ResNetBackbone("resnet101", 8, multi_grid=(1, 1, 1), dilation_style="torchvision")
    for stage in ("layer3", "layer4"):
        got = [(c.stride, c.dilation, c.padding) for c in getattr(tv, stage).modules()
               if isinstance(c, nn.Conv2d)]  # fmt: skip
        want = [(c.stride, c.dilation, c.padding) for c in getattr(reference, stage).modules()
                if isinstance(c, nn.Conv2d)]  # fmt: skip
        assert got == want, stage


def test_torchvision_name_resolves_without_download():
    weights = resolve_name("torchvision:IMAGENET1K_V2", "resnet50")
    assert weights is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    assert weights.url == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    assert cached_file(weights).name == "resnet50-11ad3fa6.pth"
    assert cached_file(weights).parent == Path(torch.hub.get_dir()) / "checkpoints"
    assert resolve_name("torchvision:DEFAULT", "resnet101").url.endswith("resnet101-cd907fc2.pth")
    assert cached_file(resolve_name("torchvision:IMAGENET1K_V1", "resnet18")).name == (
        "resnet18-f37072fd.pth"
    )
    with pytest.raises(WeightsError, match=r"torchvision:IMAGENET9K.*resnet50.*IMAGENET1K_V2"):
        resolve_name("torchvision:IMAGENET9K", "resnet50")


def test_torchvision_name_loads_from_torch_cache(tmp_path, monkeypatch):
    """With the file already in torch's hub cache the name loads it; nothing is downloaded."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    reference = _randomised(torchvision.models.resnet18(), seed=2)
    target = cached_file(resolve_name("torchvision:IMAGENET1K_V1", "resnet18"))
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    backbone = ResNetBackbone("resnet18", stem="torchvision")
    load_backbone_weights(backbone, "torchvision:IMAGENET1K_V1")
    assert torch.equal(backbone.stem.conv1.weight, reference.conv1.weight)
    assert torch.equal(backbone.layer3[1].bn2.running_var, reference.layer3[1].bn2.running_var)
    target.unlink()
    with pytest.raises(WeightsError, match=r"torchvision:IMAGENET1K_V1: cannot load .*resnet18"):
        load_backbone_weights(backbone, "torchvision:IMAGENET1K_V1")


def test_deeplab_stem_refuses_torchvision_weights_unless_reinit_stem(tmp_path, caplog):
    reference = _randomised(torchvision.models.resnet18(), seed=3)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    with pytest.raises(WeightsError, match=r"tv\.pth: .*torchvision stem.*model\.stem=torchvision"):
        load_backbone_weights(ResNetBackbone("resnet18"), tmp_path / "tv.pth")
    backbone = ResNetBackbone("resnet18", reinit_stem=True)
    initial = {k: v.clone() for k, v in backbone.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        load_backbone_weights(backbone, tmp_path / "tv.pth")
    assert "start anew" in caplog.text
    theirs = reference.state_dict()
    for key, value in backbone.state_dict().items():
        if stem_dependent(key):
            assert torch.equal(value, initial[key]), key
        else:
            assert torch.equal(value, theirs[key]), key
    # and the other way round: a DeepLab-stem file into the torchvision stem
    torch.save(ResNetBackbone("resnet18").state_dict(), tmp_path / "deeplab.pth")
    with pytest.raises(WeightsError, match=r"deeplab stem.*model\.stem=deeplab.*reinit_stem"):
        load_backbone_weights(
            ResNetBackbone("resnet18", stem="torchvision"), tmp_path / "deeplab.pth"
        )


def test_checkpoints_in_the_earlier_names_still_load():
    """A checkpoint written before the backbone took torchvision's names (res2…res5, ``.norm``,
    ``.shortcut``: tests/data/legacy_checkpoint) loads strictly, and as ``--weights``."""
    ckpt = torch.load(LEGACY, weights_only=True)
    old = ckpt["model"]
    assert "backbone.res5.1.conv2.norm.running_var" in old
    model_cfg = recipe_from_dict(ckpt["recipe"]).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        net = SemanticBoundaryNet.from_config(model_cfg, len(ckpt["classes"]["names"]))
        fresh = SemanticBoundaryNet.from_config(model_cfg, len(ckpt["classes"]["names"]))
    net.load_state_dict(old)  # strict: every key renamed and used
    for theirs, ours in [
        ("res5.1.conv2.norm.running_var", net.backbone.layer4[1].bn2.running_var),
        ("res2.0.shortcut.weight", net.backbone.layer1[0].downsample[0].weight),
        ("res3.0.shortcut.norm.bias", net.backbone.layer2[0].downsample[1].bias),
        ("stem.conv3.norm.weight", net.backbone.stem.bn3.weight),
        ("stem.conv2.weight", net.backbone.stem.conv2.weight),
    ]:
        assert torch.equal(ours, old[f"backbone.{theirs}"]), theirs
    load_model_weights(fresh, LEGACY)
    for key, value in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.slow
def test_pretrain_starts_from_a_torchvision_state_dict(tmp_path):
    """The acceptance run: `cops pretrain --recipe synthetic-tiny` with model.stem=torchvision and
    model.backbone_weights=FILE (a random-init torchvision resnet50) starts from FILE: no
    random-init warning, and at a 1e-9 learning rate the convolutions end where FILE has them."""
    reference = torchvision.models.resnet50().state_dict()
    weights = tmp_path / "tv_resnet50.pth"
    torch.save(reference, weights)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "cops.cli"]
    data, out = tmp_path / "data", tmp_path / "run"
    prepared = subprocess.run(
        [*cli, "-q", "prepare-data", "synthetic", "--preset", "tiny", "--out", str(data),
         "--num-train", "2", "--num-val", "1"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    settings = ["model.backbone=resnet50", "model.stem=torchvision",
                f"model.backbone_weights={weights}", "train.iterations=2", "train.batch_size=1",
                "train.lr=1e-9", "train.val_every=0", "data.num_workers=0"]  # fmt: skip
    trained = subprocess.run(
        [*cli, "pretrain", "--recipe", "synthetic-tiny", "--data", str(data), "--out", str(out),
         "--device", "cpu", *(x for s in settings for x in ("--set", s))],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "BackboneInitWarning" not in trained.stderr
    assert "random weights" not in trained.stderr + trained.stdout
    model = torch.load(out / "last.pt", weights_only=True)["model"]
    for ours, theirs in [
        ("stem.conv1.weight", "conv1.weight"),
        ("layer1.0.conv1.weight", "layer1.0.conv1.weight"),
        ("layer4.2.conv3.weight", "layer4.2.conv3.weight"),
    ]:
        assert (model[f"backbone.{ours}"] - reference[theirs]).abs().max() < 1e-6, ours
