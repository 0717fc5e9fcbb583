"""Backbones, decoders, CopsNet shapes, weight loading and the cost model."""

from __future__ import annotations

import math
import time
import warnings

import pytest
import torch
import torchvision
from torch import nn

from cops.models import (
    BackboneInitWarning,
    CopsNet,
    CostModel,
    ResNetBackbone,
    WeightsError,
    build_backbone,
    freeze_batchnorm,
    load_backbone_weights,
)
from cops.recipes.schema import ModelConfig

pytestmark = pytest.mark.filterwarnings("ignore::cops.models.BackboneInitWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads; one avoids oversubscription on shared CI cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _small_net(output_stride: int = 16, **kwargs) -> CopsNet:
    """A resnet18 network with a 32-channel decoder: fast enough for many CPU forwards."""
    return CopsNet(
        num_classes=5,
        edge_distances=[1, 4, 16],
        backbone="resnet18",
        output_stride=output_stride,
        decoder_channels=32,
        **kwargs,
    )


@pytest.fixture(scope="module")
def nets() -> dict[int, CopsNet]:
    torch.manual_seed(0)
    return {os_: _small_net(os_).eval() for os_ in (16, 8)}


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("size", [(64, 128), (67, 131), (96, 96), (33, 17)])
def test_output_shapes_are_ceil_quarter(nets, output_stride, size):
    height, width = size
    with torch.no_grad():
        out = nets[output_stride](torch.randn(1, 3, height, width))
    h, w = math.ceil(height / 4), math.ceil(width / 4)
    assert set(out) == {"semantic", "boundary"}
    assert out["semantic"].shape == (1, 5, h, w)
    assert out["boundary"].shape == (1, 6, h, w)
    assert torch.isfinite(out["semantic"]).all() and torch.isfinite(out["boundary"]).all()


@pytest.mark.parametrize("output_stride", [16, 8])
def test_backbone_feature_strides(output_stride):
    backbone = ResNetBackbone("resnet18", output_stride).eval()
    with torch.no_grad():
        res2, res3, res5 = backbone(torch.randn(1, 3, 67, 131))
    assert res2.shape == (1, 64, 17, 33)
    assert res3.shape == (1, 128, 9, 17)
    assert res5.shape == (1, 512, math.ceil(67 / output_stride), math.ceil(131 / output_stride))


@pytest.mark.parametrize("output_stride", [16, 8])
def test_bottleneck_dilation_matches_torchvision(output_stride):
    """Our generic stage dilation equals torchvision's own for bottleneck ResNets."""
    torch.manual_seed(1)
    ours = ResNetBackbone("resnet50", output_stride).eval()
    dilate = [False, output_stride == 8, True]
    ref = torchvision.models.resnet50(replace_stride_with_dilation=dilate).eval()
    ref.load_state_dict(ours.state_dict(), strict=False)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        stem = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(stem))))
        got = ours(x)[2]
    stride5 = (math.ceil(40 / output_stride), math.ceil(56 / output_stride))
    assert got.shape == expected.shape == (1, 2048, *stride5)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("resnet18", (64, 128, 512)),
        ("resnet34", (64, 128, 512)),
        ("resnet50", (256, 512, 2048)),
        ("resnet101", (256, 512, 2048)),
    ],
)
def test_all_backbones_construct(name, channels):
    net = CopsNet(3, [1, 2], backbone=name, decoder_channels=16)
    assert net.backbone.channels == channels
    assert net.semantic_decoder.aspp.branches[0][0].in_channels == channels[2]
    assert net.boundary_decoder.head[-1].out_channels == 4


def test_resnet34_forward():
    net = CopsNet(3, [1], backbone="resnet34", decoder_channels=16).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 45, 50))
    assert out["semantic"].shape == (1, 3, 12, 13)
    assert out["boundary"].shape == (1, 2, 12, 13)


def test_decoders_have_separate_weights(nets):
    sem = dict(nets[16].semantic_decoder.named_parameters())
    bnd = dict(nets[16].boundary_decoder.named_parameters())
    assert not any(p is bnd[k] for k, p in sem.items())
    assert not torch.equal(sem["aspp.project.0.weight"], bnd["aspp.project.0.weight"])


def test_from_config():
    cfg = ModelConfig(
        backbone="resnet18",
        output_stride=8,
        pretrained=False,
        edge_distances=[1, 2, 4, 8],
        aspp_rates=[2, 4],
        decoder_channels=24,
    )
    net = CopsNet.from_config(cfg, num_classes=7)
    assert net.edge_distances == (1, 2, 4, 8)
    assert net.backbone.output_stride == 8
    assert len(net.semantic_decoder.aspp.branches) == 3
    assert net.semantic_decoder.aspp.branches[2][0].dilation == (4, 4)
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 32, 48))
    assert out["semantic"].shape == (1, 7, 8, 12)
    assert out["boundary"].shape == (1, 8, 8, 12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backbone": "resnet152"},
        {"output_stride": 32},
        {"num_classes": 0},
        {"edge_distances": []},
        {"edge_distances": [1, 1]},
        {"edge_distances": [0, 2]},
    ],
)
def test_invalid_arguments(kwargs):
    args = {"num_classes": 3, "edge_distances": [1], "backbone": "resnet18"} | kwargs
    with pytest.raises(ValueError):
        CopsNet(**args, decoder_channels=8)


def test_train_step_with_batch_of_one():
    net = _small_net().train()
    out = net(torch.randn(1, 3, 32, 32))
    (out["semantic"].sum() + out["boundary"].sum()).backward()
    assert net.backbone.conv1.weight.grad is not None


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_matches_eager(nets):
    scripted = torch.jit.script(nets[16])
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        eager, traced = nets[16](x), scripted(x)
    torch.testing.assert_close(traced["semantic"], eager["semantic"])
    torch.testing.assert_close(traced["boundary"], eager["boundary"])


# ---------------------------------------------------------------- weights


def _torchvision_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """A random torchvision classifier state dict (fc included), as an ImageNet file has."""
    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None).state_dict()


def _assert_backbone_equals(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = backbone.state_dict()
    assert set(own) == {k for k in state if not k.startswith("fc.")}
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_load_torchvision_weights_file(tmp_path):
    state = _torchvision_state("resnet18", seed=3)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    backbone = ResNetBackbone("resnet18")
    load_backbone_weights(backbone, path)
    _assert_backbone_equals(backbone, state)

    with warnings.catch_warnings():
        warnings.simplefilter("error", BackboneInitWarning)
        net = _small_net(weights_path=str(path), pretrained=True)  # file wins: no download
    _assert_backbone_equals(net.backbone, state)


def test_load_weights_from_cops_checkpoint(tmp_path):
    torch.manual_seed(4)
    source = _small_net()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict(), "iteration": 7}, path)
    target = ResNetBackbone("resnet18")
    load_backbone_weights(target, path)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_old_file_without_batch_counters_loads(tmp_path):
    state = _torchvision_state("resnet18", seed=5)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    backbone = ResNetBackbone("resnet18")
    load_backbone_weights(backbone, path)
    assert torch.equal(backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_mismatched_weights_file_names_file_and_keys(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(_torchvision_state("resnet34", seed=0), path)
    backbone = ResNetBackbone("resnet18")
    before = backbone.layer1[0].conv1.weight.clone()
    with pytest.raises(WeightsError, match=r"resnet34\.pth.*resnet18.*unexpected: layer1\.2"):
        load_backbone_weights(backbone, path)
    assert torch.equal(backbone.layer1[0].conv1.weight, before)

    path50 = tmp_path / "resnet50.pth"
    torch.save(_torchvision_state("resnet50", seed=0), path50)
    with pytest.raises(WeightsError, match=r"resnet50\.pth.*shape: .*conv1\.weight"):
        load_backbone_weights(backbone, path50)


def test_missing_key_and_bad_files(tmp_path):
    state = _torchvision_state("resnet18", seed=0)
    del state["layer4.1.bn2.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"partial\.pth.*missing: layer4\.1\.bn2\.weight"):
        load_backbone_weights(ResNetBackbone("resnet18"), path)

    with pytest.raises(WeightsError, match="not found"):
        load_backbone_weights(ResNetBackbone("resnet18"), tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"garbage\.pth.*cannot read"):
        load_backbone_weights(ResNetBackbone("resnet18"), garbage)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(WeightsError, match=r"list\.pth.*state dict"):
        load_backbone_weights(ResNetBackbone("resnet18"), listing)


def test_pretrained_offline_warns_and_keeps_random_init(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", offline)
    torch.manual_seed(9)
    expected = ResNetBackbone("resnet18").state_dict()
    torch.manual_seed(9)
    with pytest.warns(BackboneInitWarning, match=r"network is unreachable.*backbone_weights="):
        backbone = build_backbone("resnet18", pretrained=True)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, expected[key])


def test_pretrained_download_path_loads_enum_weights(monkeypatch):
    state = _torchvision_state("resnet18", seed=11)
    calls = []

    def fake_download(self, *args, **kwargs):
        calls.append(self)
        return state

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", fake_download)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackboneInitWarning)
        backbone = build_backbone("resnet18", pretrained=True)
    assert calls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    _assert_backbone_equals(backbone, state)


def test_random_init_warns():
    with pytest.warns(BackboneInitWarning, match="random weights"):
        build_backbone("resnet18", pretrained=False)


def test_freeze_batchnorm():
    torch.manual_seed(2)
    net = _small_net()
    net.train()
    x = torch.randn(2, 3, 32, 40)
    net(x)  # move running statistics away from their init
    net.eval()
    with torch.no_grad():
        before = net(x)
    state = net.state_dict()
    freeze_batchnorm(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    net.train()  # frozen BN ignores the mode
    with torch.no_grad():
        after = net(x)
    torch.testing.assert_close(after["semantic"], before["semantic"])
    torch.testing.assert_close(after["boundary"], before["boundary"])
    trainable = {name for name, _ in net.named_parameters()}
    assert "backbone.bn1.weight" not in trainable
    assert "backbone.conv1.weight" in trainable
    net.load_state_dict(state)  # checkpoints of unfrozen nets still load


def test_freeze_batchnorm_then_load_backbone_weights(tmp_path):
    state = _torchvision_state("resnet18", seed=6)
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    backbone = freeze_batchnorm(ResNetBackbone("resnet18"))
    load_backbone_weights(backbone, path)
    assert torch.equal(backbone.bn1.running_var, state["bn1.running_var"])


def test_full_resolution_cityscapes_forward():
    net = CopsNet(19, [1, 4, 16, 32, 64], backbone="resnet18", decoder_channels=32).eval()
    start = time.perf_counter()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 1024, 2048))
    elapsed = time.perf_counter() - start
    assert out["semantic"].shape == (1, 19, 256, 512)
    assert out["boundary"].shape == (1, 10, 256, 512)
    assert torch.isfinite(out["boundary"]).all()
    assert elapsed < 120


# ---------------------------------------------------------------- cost model


def test_cost_model_hand_values():
    costs = CostModel([1, 4])
    with torch.no_grad():
        costs.a.fill_(2.0)
        costs.b.fill_(0.5)
        costs.alpha.copy_(torch.tensor([-3.0, 0.5]))  # only |α| counts
        costs.beta.copy_(torch.tensor([1.0, -2.0]))
    semantic = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    boundary = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1).expand(2, 4, 2, 2)
    nodes, edges = costs(semantic, boundary)
    assert nodes.shape == (2, 4, 3)
    # node p = y*w + x of image 1, class k: 2·(−logit) + 0.5
    assert nodes[1, 2, 1].item() == 2.0 * -semantic[1, 1, 1, 0].item() + 0.5
    torch.testing.assert_close(nodes, (-2.0 * semantic + 0.5).flatten(2).transpose(1, 2))
    assert edges.shape == (2, 4, 2, 2)
    # channels (vertical, horizontal) of d=1 use α=3, β=1; of d=4 use α=0.5, β=−2
    expected = torch.tensor([-(3 * 1 + 1), -(3 * 2 + 1), -(0.5 * 3 - 2), -(0.5 * 4 - 2)])
    torch.testing.assert_close(edges[0, :, 1, 1], expected)
    assert costs.scalars() == {
        "a": 2.0,
        "b": 0.5,
        "alpha": [3.0, 0.5],
        "beta": [1.0, -2.0],
        "edge_distances": [1, 4],
    }


def test_cost_model_init_and_gradients():
    costs = CostModel([1, 2, 8])
    semantic = torch.randn(1, 4, 3, 5)
    boundary = torch.randn(1, 6, 3, 5)
    nodes, edges = costs(semantic, boundary)
    torch.testing.assert_close(nodes, -semantic.flatten(2).transpose(1, 2))
    torch.testing.assert_close(edges, -boundary)
    (nodes.sum() + (edges * torch.rand_like(edges)).sum()).backward()
    for name in ("a", "b", "alpha", "beta"):
        grad = getattr(costs, name).grad
        assert grad is not None and (grad != 0).all(), name


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_cost_model_scripts():
    costs = CostModel([1, 4])
    scripted = torch.jit.script(costs)
    semantic, boundary = torch.randn(2, 3, 4, 6), torch.randn(2, 4, 4, 6)
    for got, want in zip(scripted(semantic, boundary), costs(semantic, boundary), strict=True):
        torch.testing.assert_close(got, want)
