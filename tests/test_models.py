"""Backbones, decoders, SemanticBoundaryNet shapes, weight loading and the cost model."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from cops.models import (
    AffineCosts,
    BackboneInitWarning,
    ResNetBackbone,
    SemanticBoundaryNet,
    WeightsError,
    build_backbone,
    freeze_batchnorm,
    load_backbone_weights,
)
from cops.models.heads import midpoint_to_source, source_to_midpoint
from cops.recipes.schema import ModelConfig

pytestmark = [
    pytest.mark.filterwarnings("ignore::cops.models.BackboneInitWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def _small_net(output_stride: int = 16, **kwargs) -> SemanticBoundaryNet:
    """A resnet18 network with a 32-channel decoder: fast enough for many CPU forwards."""
    return SemanticBoundaryNet(
        num_classes=5,
        edge_distances=[1, 4, 16],
        backbone="resnet18",
        output_stride=output_stride,
        decoder_channels=32,
        **kwargs,
    )


@pytest.fixture(scope="module")
def nets() -> dict[int, SemanticBoundaryNet]:
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
def test_deeplab_stem_and_multi_grid(output_stride):
    """Three 3×3 stem convs (the first of stride 2), stride in the 3×3 conv, res5 multi-grid."""
    net = ResNetBackbone("resnet50", output_stride)
    convs = [c for c in net.stem if isinstance(c, nn.Conv2d)]
    stem = [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs]
    assert stem == [(3, 64, (3, 3), (2, 2)), (64, 64, (3, 3), (1, 1)), (64, 128, (3, 3), (1, 1))]
    assert net.layer1[0].conv1.in_channels == 128
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    base = 2 if output_stride == 16 else 4
    assert [b.conv2.dilation[0] for b in net.layer4] == [base, 2 * base, 4 * base]
    assert [b.conv2.padding[0] for b in net.layer4] == [base, 2 * base, 4 * base]
    assert net.layer4[0].downsample[0].stride == (1, 1)
    assert net.layer3[0].conv2.stride == ((2, 2) if output_stride == 16 else (1, 1))
    assert {b.conv2.dilation[0] for b in net.layer3} == ({1} if output_stride == 16 else {2})


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
    net = SemanticBoundaryNet(3, [1, 2], backbone=name, decoder_channels=16)
    assert net.backbone.channels == channels
    assert net.semantic_decoder.aspp.branches[0].in_channels == channels[2]
    assert net.boundary_head.classifiers[-1][-1].out_channels == 2


def test_resnet34_forward():
    net = SemanticBoundaryNet(3, [1], backbone="resnet34", decoder_channels=16).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 45, 50))
    assert out["semantic"].shape == (1, 3, 12, 13)
    assert out["boundary"].shape == (1, 2, 12, 13)


def test_decoders_have_separate_weights(nets):
    sem = dict(nets[16].semantic_decoder.named_parameters())
    bnd = dict(nets[16].boundary_decoder.named_parameters())
    assert not any(p is bnd[k] for k, p in sem.items())
    assert not torch.equal(sem["aspp.project.weight"], bnd["aspp.project.weight"])


def test_from_config():
    cfg = ModelConfig(
        backbone="resnet18",
        output_stride=8,
        edge_distances=[1, 2, 4, 8],
        aspp_rates=[2, 4],
        decoder_channels=24,
    )
    net = SemanticBoundaryNet.from_config(cfg, num_classes=7)
    assert net.edge_distances == (1, 2, 4, 8)
    assert net.backbone.output_stride == 8
    assert len(net.semantic_decoder.aspp.branches) == 3
    assert net.semantic_decoder.aspp.branches[2].depthwise.dilation == (4, 4)
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
        SemanticBoundaryNet(**args, decoder_channels=8)


def test_train_step_with_batch_of_one():
    net = _small_net().train()
    out = net(torch.randn(1, 3, 32, 32))
    (out["semantic"].sum() + out["boundary"].sum()).backward()
    assert net.backbone.stem.conv1.weight.grad is not None


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_matches_eager(nets):
    scripted = torch.jit.script(nets[16])
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        eager, traced = nets[16](x), scripted(x)
    torch.testing.assert_close(traced["semantic"], eager["semantic"])
    torch.testing.assert_close(traced["boundary"], eager["boundary"])


# ---------------------------------------------------------------- weights


def _backbone_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """A random backbone state dict, as `cops import-checkpoint --backbone-only` writes one."""
    torch.manual_seed(seed)
    net = ResNetBackbone(name)
    for p in net.parameters():
        nn.init.normal_(p)
    return {f"backbone.{k}": v for k, v in net.state_dict().items()}


def _assert_backbone_equals(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = backbone.state_dict()
    assert {f"backbone.{k}" for k in own} == set(state)
    for key, value in own.items():
        assert torch.equal(value, state[f"backbone.{key}"]), key


def test_load_backbone_weights_file(tmp_path):
    state = _backbone_state("resnet18", seed=3)
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    backbone = ResNetBackbone("resnet18")
    load_backbone_weights(backbone, path)
    _assert_backbone_equals(backbone, state)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackboneInitWarning)
        net = _small_net(weights_path=str(path))
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


def test_file_without_batch_counters_loads(tmp_path):
    state = _backbone_state("resnet18", seed=5)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "frozen.pt"
    torch.save(state, path)
    backbone = ResNetBackbone("resnet18")
    load_backbone_weights(backbone, path)
    assert torch.equal(backbone.layer3[1].conv2.weight, state["backbone.layer3.1.conv2.weight"])


def test_mismatched_weights_file_names_file_and_keys(tmp_path):
    path = tmp_path / "resnet34.pt"
    torch.save(_backbone_state("resnet34", seed=0), path)
    backbone = ResNetBackbone("resnet18")
    before = backbone.layer1[0].conv1.weight.clone()
    with pytest.raises(WeightsError, match=r"resnet34\.pt.*resnet18.*unexpected: layer1\.2"):
        load_backbone_weights(backbone, path)
    assert torch.equal(backbone.layer1[0].conv1.weight, before)
    path50 = tmp_path / "resnet50.pt"
    torch.save(_backbone_state("resnet50", seed=0), path50)
    with pytest.raises(WeightsError, match=r"resnet50\.pt.*shape: .*conv1\.weight"):
        load_backbone_weights(backbone, path50)


def test_missing_key_and_bad_files(tmp_path):
    state = _backbone_state("resnet18", seed=0)
    del state["backbone.layer4.1.bn2.weight"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"partial\.pt.*missing: layer4\.1\.bn2\.weight"):
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


def test_random_init_warns():
    with pytest.warns(BackboneInitWarning, match="random weights"):
        build_backbone("resnet18")


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
    assert "backbone.stem.bn1.weight" not in trainable
    assert "backbone.stem.conv1.weight" in trainable
    net.load_state_dict(state)  # checkpoints of unfrozen nets still load


def test_freeze_batchnorm_then_load_backbone_weights(tmp_path):
    state = _backbone_state("resnet18", seed=6)
    path = tmp_path / "r18.pt"
    torch.save(state, path)
    backbone = freeze_batchnorm(ResNetBackbone("resnet18"))
    load_backbone_weights(backbone, path)
    var = state["backbone.stem.bn1.running_var"]
    assert torch.equal(backbone.stem.bn1.running_var, var)


@pytest.mark.slow
def test_full_resolution_cityscapes_forward():
    net = SemanticBoundaryNet(
        19, [1, 4, 16, 32, 64], backbone="resnet18", decoder_channels=32
    ).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 1024, 2048))
    assert out["semantic"].shape == (1, 19, 256, 512)
    assert out["boundary"].shape == (1, 10, 256, 512)
    assert torch.isfinite(out["boundary"]).all()


# ---------------------------------------------------------------- cost model


def test_affine_costs_hand_values():
    costs = AffineCosts([1, 4])
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
    expected = torch.tensor([-3 * 1 + 1, -3 * 2 + 1, -0.5 * 3 - 2, -0.5 * 4 - 2])
    torch.testing.assert_close(edges[0, :, 1, 1], expected)
    assert costs.scalars() == {
        "a": 2.0,
        "b": 0.5,
        "alpha": [3.0, 0.5],
        "beta": [1.0, -2.0],
        "edge_distances": [1, 4],
    }


def test_affine_costs_init_and_gradients():
    costs = AffineCosts([1, 2, 8])
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
def test_affine_costs_scripts():
    costs = AffineCosts([1, 4])
    scripted = torch.jit.script(costs)
    semantic, boundary = torch.randn(2, 3, 4, 6), torch.randn(2, 4, 4, 6)
    for got, want in zip(scripted(semantic, boundary), costs(semantic, boundary), strict=True):
        torch.testing.assert_close(got, want)


def test_edge_layout_conversion_keeps_every_in_grid_edge():
    """Midpoint (original) → source (project) layout and back is exact on in-grid edges."""
    maps = torch.randn(1, 2, 9, 11)
    for d in (1, 2, 4, 5):
        lo, hi = d // 2, d - d // 2
        source = midpoint_to_source(maps, d)
        # the source-layout value at (y, x) is the midpoint value at (y + lo, x) / (y, x + lo)
        torch.testing.assert_close(source[0, 0, : 9 - d], maps[0, 0, lo : 9 - hi])
        torch.testing.assert_close(source[0, 1, :, : 11 - d], maps[0, 1, :, lo : 11 - hi])
        back = source_to_midpoint(source, d)
        torch.testing.assert_close(back[0, 0, lo : 9 - hi], maps[0, 0, lo : 9 - hi])
        torch.testing.assert_close(back[0, 1, :, lo : 11 - hi], maps[0, 1, :, lo : 11 - hi])
