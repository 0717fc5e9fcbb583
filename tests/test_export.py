"""Exports (ONNX, TorchScript) of the cost network: same outputs as eager, metadata, errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _training import save_net

from cops.datasets.class_list import ClassList
from cops.datasets.synthetic import SYNTHETIC_CATEGORIES, generate_scene
from cops.errors import CopsError
from cops.inference.export import (
    ONNX_OPSET,
    ExportedCostMapNet,
    export_model,
    load_export,
    metadata_path,
)
from cops.inference.predictor import Predictor
from cops.models import CostMapNet
from cops.models.build import build_model
from cops.models.checkpoint import Checkpoint
from cops.models.model_card import OUTPUTS, ModelCard
from cops.recipes.schema import load_recipe

SIZES = [(64, 128), (96, 160)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[CostMapNet, ModelCard, Path]:
    """A random-init synthetic-tiny net with non-trivial cost scalars, as a checkpoint too."""
    recipe = load_recipe("synthetic-tiny")
    torch.manual_seed(0)
    net = build_model(recipe.model, len(SYNTHETIC_CATEGORIES), None, restoring=True)
    with torch.no_grad():
        net.costs.a.fill_(1.5)
        net.costs.b.fill_(0.25)
        net.costs.alpha.copy_(torch.tensor([0.5, -1.0, 2.0, 1.25]))
        net.costs.beta.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        # BatchNorm statistics measured on synthetic scenes: the random net's features then vary
        # over the image, so its predictions mix things and stuff (a non-trivial comparison).
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average
        scenes = [generate_scene((3, 1, s), 64, 128)[0] for s in range(4)]
        batch = torch.stack([torch.from_numpy(im.copy()).permute(2, 0, 1).float() for im in scenes])
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
        net.train()((batch - mean) / std)
        net.semantic_head.classifier.weight.mul_(4.0)
    net.eval()
    path = save_net(net, recipe, tmp_path_factory.mktemp("ckpt"), 7, "finetune-pq")
    return CostMapNet(net).eval(), Checkpoint.load(path).card, path


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory) -> dict[str, Path]:
    """The net exported once per format (the ONNX export takes seconds)."""
    net, card, _ = trained
    folder = tmp_path_factory.mktemp("exports")
    return {
        "onnx": export_model(net, card, folder / "model.onnx", "onnx"),
        "torchscript": export_model(net, card, folder / "model.pt", "torchscript"),
    }


def _images(size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(sum(size)))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.slow
def test_export_outputs_equal_eager_on_other_sizes(trained, exports, fmt):
    net, card, _ = trained
    model = load_export(exports[fmt], device="cpu")
    assert isinstance(model, ExportedCostMapNet) and model.format == fmt
    assert dataclasses.replace(model.card, min_input_size=None) == card
    for size, batch in zip(SIZES, (2, 1), strict=True):
        image = _images(size, batch)
        with torch.no_grad():
            expected = net(image)
        got = model(image)
        assert len(got) == 3
        for name, a, b in zip(OUTPUTS, got, expected, strict=True):
            assert a.device.type == "cpu" and a.dtype == torch.float32, name
            assert a.shape == b.shape == (batch, b.shape[1], size[0] // 4, size[1] // 4), name
            # float32 kernels of onnxruntime and torch round differently: about 1e-6 of the
            # largest value (costs reach ~150 here), so the bound scales with it.
            scale = float(b.abs().max())
            atol = max(1e-4, 2e-5 * scale)
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-4, msg=f"{fmt} {name} {size}")


@pytest.mark.slow
def test_onnx_graph_opset_names_and_symbolic_sizes(exports):
    model = onnx.load(str(exports["onnx"]))
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset[""] >= 17 and ONNX_OPSET >= 17
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "image" and len(dims) == 4
    assert dims[1].dim_value == 3
    for axis in (0, 2, 3):
        assert dims[axis].dim_param and not dims[axis].dim_value, f"axis {axis} is fixed"
    assert [o.name for o in model.graph.output] == OUTPUTS
    # One self-contained file: no external weight data beside the model.
    assert sorted(p.name for p in exports["onnx"].parent.iterdir()) == [
        "model.onnx",
        "model.onnx.json",
        "model.pt",
        "model.pt.json",
    ]


@pytest.mark.slow
def test_metadata_json_round_trip(trained, exports):
    _, card, checkpoint = trained
    for path in exports.values():
        written = json.loads(metadata_path(path).read_text())
        assert written.pop("model_sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
        written.pop("min_input_size", None)  # ONNX only: the traced pooling window's crop
        assert written == card.to_dict()
    assert card.cost_scalars.alpha == [0.5, 1.0, 2.0, 1.25]
    assert dataclasses.asdict(card.source) == {
        "checkpoint": str(checkpoint),
        "iteration": 7,
        "phase": "finetune-pq",
    }


def test_torchscript_suffixes_and_caller_net_untouched(trained, tmp_path):
    net, card, _ = trained
    net.train()
    try:
        out = export_model(net, card, tmp_path / "costs.ts", "torchscript", (32, 64))
    finally:
        assert net.training, "export_model must not switch the caller's net to eval"
        net.eval()
    assert out == tmp_path / "costs.ts"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["costs.ts", "costs.ts.json"]
    image = _images((128, 96), 1)
    with torch.no_grad():
        expected = net(image)
    torch.testing.assert_close(load_export(out, device="cpu")(image), expected)


def test_export_errors(trained, tmp_path, monkeypatch):
    net, card, _ = trained
    with pytest.raises(ValueError, match="fmt"):
        export_model(net, card, tmp_path / "m.onnx", "tflite")
    with pytest.raises(CopsError, match=r"m\.onnx: a torchscript export needs the suffix \.pt"):
        export_model(net, card, tmp_path / "m.onnx", "torchscript")
    with pytest.raises(ValueError, match="example_size"):
        export_model(net, card, tmp_path / "m.pt", "torchscript", (48, 64))
    three = {k: v[:3] for k, v in card.classes.to_dict().items()}
    other = dataclasses.replace(card, classes=ClassList(**three))
    with pytest.raises(ValueError, match="classes"):
        export_model(net, other, tmp_path / "m.pt", "torchscript")
    with pytest.raises(TypeError, match="card: expected a ModelCard, got dict"):
        export_model(net, card.to_dict(), tmp_path / "m.pt", "torchscript")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(CopsError, match=r'pip install "cops\[onnx\]"'):
        export_model(net, card, tmp_path / "m.onnx", "onnx")
    assert list(tmp_path.iterdir()) == [], "a failed export must leave nothing behind"


def _copy_export(source: Path, folder: Path, name: str) -> Path:
    """A copy of an export (model and metadata) under another name."""
    target = folder / name
    target.write_bytes(source.read_bytes())
    metadata_path(target).write_text(metadata_path(source).read_text())
    return target


@pytest.mark.slow
def test_load_export_errors(exports, tmp_path, monkeypatch):
    with pytest.raises(CopsError, match=r"missing\.onnx: exported model not found"):
        load_export(tmp_path / "missing.onnx")
    with pytest.raises(CopsError, match=r"unknown model file suffix '\.bin'"):
        load_export(_copy_export(exports["onnx"], tmp_path, "model.bin"))

    lonely = tmp_path / "lonely.pt"
    lonely.write_bytes(exports["torchscript"].read_bytes())
    with pytest.raises(CopsError, match=r"lonely\.pt\.json: metadata of export lonely\.pt not"):
        load_export(lonely)
    metadata_path(lonely).write_text("{not json")
    with pytest.raises(CopsError, match=r"lonely\.pt\.json: invalid JSON"):
        load_export(lonely)
    broken = json.loads(metadata_path(exports["torchscript"]).read_text())
    del broken["classes"]["colors"]
    metadata_path(lonely).write_text(json.dumps(broken))
    with pytest.raises(CopsError, match=r"lonely\.pt\.json: classes\.colors: missing"):
        load_export(lonely)

    garbage = _copy_export(exports["onnx"], tmp_path, "garbage.onnx")
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(CopsError, match=r"garbage\.onnx: cannot load as an ONNX model"):
        load_export(garbage)
    garbage_ts = _copy_export(exports["torchscript"], tmp_path, "garbage.pt")
    garbage_ts.write_bytes(b"not a zip archive")
    with pytest.raises(CopsError, match=r"garbage\.pt: cannot load as a TorchScript model"):
        load_export(garbage_ts)

    with pytest.raises(ValueError, match="device"):
        load_export(exports["onnx"], device="tpu")
    model = load_export(exports["torchscript"], device="cpu")
    with pytest.raises(ValueError, match=r"image: expected a float tensor \[B, 3, H, W\]"):
        model(torch.zeros(3, 64, 64))

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CopsError, match=r'model\.onnx: .*pip install "cops\[onnx\]"'):
        load_export(exports["onnx"])


@pytest.mark.slow
def test_predictions_from_exports_equal_checkpoint(trained, exports):
    _, _, checkpoint = trained
    scenes = [generate_scene((3, 1, 0), 61, 97)[0], generate_scene((3, 1, 1), 40, 72)[0]]
    reference = Predictor.from_checkpoint(checkpoint, device="cpu", backend="cpu").predict(scenes)
    for fmt, path in exports.items():
        predictor = Predictor.from_export(path, backend="cpu")
        for image, ref, pred in zip(scenes, reference, predictor.predict(scenes), strict=True):
            assert pred.ids.shape == ref.ids.shape == image.shape[:2]
            assert len(ref.segments) > 1 and len({s["isthing"] for s in ref.segments}) == 2
            same = np.mean(pred.ids == ref.ids)
            assert same >= 0.999, f"{fmt}: only {same:.2%} of the pixels agree"
            assert np.mean(pred.semantic == ref.semantic) >= 0.999, fmt
