"""The inference runtime (channels-last, frozen TorchScript in fp32, bf16 autocast on request)
computes what the eager network computes; its precision is an option, never silent; the GFLOP
counter counts what a hand count gives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cops.errors import CopsError
from cops.inference.predictor import Predictor
from cops.inference.released import recipe_classes
from cops.models import CostMapNet, runtime
from cops.models.checkpoint import Checkpoint, restorable_network
from cops.models.runtime import InferenceNet, cnn_gflop
from cops.recipes.schema import load_recipe

pytestmark = pytest.mark.filterwarnings("ignore::cops.models.BackboneInitWarning")
CPU = torch.device("cpu")


def _measured_net() -> CostMapNet:
    """The synthetic-tiny cost network with non-trivial BatchNorm statistics (so folding them
    into the convolutions is exercised), in eval mode."""
    torch.manual_seed(0)
    net = CostMapNet(restorable_network(load_recipe("synthetic-tiny").model, 5)).eval()
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return net


def _max_error(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    """Largest difference relative to each output's magnitude (at least 1)."""
    pairs = zip(a, b, strict=True)
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1)) for x, y in pairs)


def test_fp32_runtime_computes_the_eager_outputs_at_every_size(one_torch_thread):
    net = _measured_net()
    fast = InferenceNet(net, CPU)
    for height, width in ((64, 96), (96, 160), (128, 64)):
        image = torch.randn(2, 3, height, width)
        with torch.inference_mode():
            expected = net(image)
        outputs = fast(image)
        assert all(o.dtype == torch.float32 and o.is_contiguous() for o in outputs)
        assert [o.shape for o in outputs] == [e.shape for e in expected]
        assert _max_error(outputs, expected) < 1e-5
    # the caller's module is left as it was
    assert next(net.parameters()).is_contiguous()


def test_eager_runtime_is_the_module_as_trained(one_torch_thread):
    net = _measured_net()
    image = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        expected = net(image)
    outputs = InferenceNet(net, CPU, runtime="eager")(image)
    assert all(torch.equal(o, e) for o, e in zip(outputs, expected, strict=True))


@pytest.mark.slow
def test_compiled_runtime_computes_the_eager_outputs(one_torch_thread):
    net = _measured_net()
    image = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        expected = net(image)
    assert _max_error(InferenceNet(net, CPU, runtime="compile")(image), expected) < 1e-5


def test_bf16_is_an_option_close_to_fp32(one_torch_thread, monkeypatch):
    net = _measured_net()
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)
    image = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        expected = net(image)
    outputs = InferenceNet(net, CPU, "bf16")(image)
    assert all(o.dtype == torch.float32 for o in outputs)
    error = _max_error(outputs, expected)
    assert 0 < error < 0.1  # bf16 keeps 8 bits of mantissa: close, and not bit-equal


def test_precision_and_runtime_errors_are_one_clear_line(monkeypatch):
    net = _measured_net()
    with pytest.raises(CopsError, match="precision: expected one of fp32, bf16, got 'fp16'"):
        InferenceNet(net, CPU, "fp16")
    with pytest.raises(CopsError, match="runtime: expected one of frozen, compile, eager, got 'x'"):
        InferenceNet(net, CPU, runtime="x")
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    with pytest.raises(CopsError, match="no native bf16 support .* use fp32"):
        InferenceNet(net, CPU, "bf16")


def test_gflop_counts_multiply_adds_twice():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False))
    # 8 outputs × 3 inputs × 9 taps per pixel, 2 FLOP per multiply-add, 16×20 pixels
    assert cnn_gflop(conv, 16, 20) == pytest.approx(2 * 8 * 3 * 9 * 16 * 20 / 1e9)


def test_predictor_runs_the_recipes_precision_unless_told(monkeypatch):
    recipe = load_recipe("synthetic-tiny", ["eval.precision=bf16"])
    classes = recipe_classes(recipe)
    weights = restorable_network(recipe.model, len(classes)).state_dict()
    ckpt = Checkpoint(weights, recipe.to_dict(), classes, phase="random-init")
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)
    assert Predictor.from_checkpoint(ckpt, CPU).runner.precision == "bf16"
    assert Predictor.from_checkpoint(ckpt, CPU, precision="fp32").runner.precision == "fp32"
    runner = Predictor.from_checkpoint(ckpt, CPU, precision="fp32", runtime="eager").runner
    assert runner.runtime == "eager"


def test_cli_precision_and_runtime_flags(cops, tiny_pretrained, tmp_path):
    data, ckpt = tiny_pretrained
    images = data / "images" / "val"
    bad = cops("predict", str(images), "--checkpoint", str(ckpt), "--precision", "fp16")
    assert bad.returncode != 0
    assert "--precision 'fp16': expected fp32 or bf16" in bad.stderr
    out = tmp_path / "eager"
    done = cops(
        "predict", str(images), "--checkpoint", str(ckpt), "--out", str(out), "--runtime", "eager"
    )
    assert done.returncode == 0, done.stderr
    frozen = tmp_path / "frozen"
    assert (
        cops("predict", str(images), "--checkpoint", str(ckpt), "--out", str(frozen)).returncode
        == 0
    )
    # the frozen channels-last graph predicts the eager network's panoptic maps
    names = sorted(p.name for p in (out / "panoptic").glob("*.png"))
    assert names and names == sorted(p.name for p in (frozen / "panoptic").glob("*.png"))
    for name in names:
        assert (out / "panoptic" / name).read_bytes() == (frozen / "panoptic" / name).read_bytes()
