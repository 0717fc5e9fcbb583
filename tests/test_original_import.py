"""The paper's network against the original COPS code (reference fixture), `cops
import-checkpoint`, and the refusal of files whose pickle would run code."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _cops_reference import (
    DATA,
    key_entries,
    original_state_dict,
    save_as_original_checkpoint,
    state_dict_sha256,
)

from cops.datasets.panoptic_io import read_image
from cops.models import BackboneInitWarning, SemanticBoundaryNet
from cops.models.checkpoint import Checkpoint
from cops.models.heads import source_to_midpoint
from cops.models.original_import import (
    RefusedFileError,
    WeightsError,
    convert_original,
    read_original_file,
)
from cops.recipes.schema import load_recipe

CITYSCAPES_DISTANCES = [1, 4, 16, 32, 64]
ATOL = 1e-3
CROP = (slice(24, 56), slice(16, 80))


@pytest.fixture(scope="module")
def imported(tmp_path_factory, cops) -> Path:
    """The fixture's weights saved as a detectron2 training checkpoint, then imported."""
    folder = tmp_path_factory.mktemp("released")
    state = original_state_dict("cityscapes", seed=0)
    capture = json.loads((DATA / "capture_info.json").read_text())
    assert state_dict_sha256(state) == capture["sha256_state_dict"]
    source = save_as_original_checkpoint(state, folder / "cops_cityscapes_r50.pth")
    out = folder / "cs-r50.pt"
    done = cops("import-checkpoint", str(source), "--recipe", "cityscapes-r50", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "amwc_layer.training_per_class_areas" in done.stdout
    return out


def _network(checkpoint: Path) -> torch.nn.Module:
    ckpt = Checkpoint.load(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        net = SemanticBoundaryNet.from_config(ckpt.recipe.model, 19)
    net.load_state_dict(ckpt.weights)
    return net.eval()


def _forward(net: torch.nn.Module, image: np.ndarray) -> dict[str, torch.Tensor]:
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    x = (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() - mean) / std
    with torch.no_grad():
        return {k: v[0] for k, v in net(x[None], costs=True).items()}


def _compare(ours: torch.Tensor, reference: np.ndarray, what: str, errors: dict) -> None:
    diff = (ours - torch.from_numpy(reference)).abs().max().item()
    errors[what] = diff
    assert diff <= ATOL, f"{what}: max |diff| {diff:.2e}"


def _valid(maps: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The entries of a midpoint-layout [2, H, W] map that are edges inside the grid."""
    lo, hi = d // 2, d - d // 2
    return maps[0, lo : maps.shape[1] - hi], maps[1, :, lo : maps.shape[2] - hi]


def _compare_edge_crops(edge_costs: torch.Tensor, reference: Any, errors: dict) -> None:
    """Edge costs [2D, 128, 256] (source layout) against the fixture's crops, in-grid edges only
    (rows 24..55, cols 16..79 of the midpoint layout)."""
    for i, d in enumerate(CITYSCAPES_DISTANCES):
        costs = source_to_midpoint(edge_costs[None, 2 * i : 2 * i + 2], d)[0]
        lo, hi = d // 2, d - d // 2
        rows = [r - 24 for r in range(24, 56) if lo <= r < 128 - hi]
        cols = [c - 16 for c in range(16, 80) if lo <= c < 256 - hi]
        crop, ref_crop = costs[:, CROP[0], CROP[1]], reference[f"edge_costs_d{d}_crop"]
        _compare(crop[0][rows], ref_crop[0][rows], f"edge_costs_d{d}_crop[0]", errors)
        _compare(crop[1][:, cols], ref_crop[1][:, cols], f"edge_costs_d{d}_crop[1]", errors)


@pytest.mark.slow
def test_imported_network_reproduces_the_original(imported):
    reference = np.load(DATA / "cops_reference_outputs.npz")
    net = _network(imported)
    torch.testing.assert_close(
        torch.cat([net.costs.a.view(1), net.costs.b.view(1)]),
        torch.from_numpy(reference["seg_cost_weights"]),
    )
    errors: dict[str, float] = {}
    image = read_image(DATA / "input_rgb_512x1024.png")
    out = _forward(net, image)
    _compare(out["semantic"], reference["sem_seg_logits"], "sem_seg_logits", errors)
    node = out["node_costs"].T.reshape(19, 128, 256)
    _compare(node[:, CROP[0], CROP[1]], reference["node_costs_crop"], "node_costs", errors)
    for i, d in enumerate(CITYSCAPES_DISTANCES):
        logits = source_to_midpoint(out["boundary"][None, 2 * i : 2 * i + 2], d)[0]
        ref = torch.from_numpy(reference[f"aff_logits_d{d}"])
        for ch, (a, b) in enumerate(zip(_valid(logits, d), _valid(ref, d), strict=True)):
            _compare(a, b.numpy(), f"aff_logits_d{d}[{ch}]", errors)
    _compare_edge_crops(out["edge_costs"], reference, errors)

    # 1024×2048: the ASPP image pooling is a 32×64 sliding mean there, not a global pool.
    big = _forward(net, np.repeat(np.repeat(image, 2, 0), 2, 1))
    _compare(
        big["semantic"][:, ::8, ::8],
        reference["fullres_sem_seg_logits_sub8"],
        "fullres_sem",
        errors,
    )
    for i, d in enumerate(CITYSCAPES_DISTANCES):
        logits = source_to_midpoint(big["boundary"][None, 2 * i : 2 * i + 2], d)[0]
        ref = reference[f"fullres_aff_logits_d{d}_sub8"]
        # subsampled rows/cols 8k: compare the in-grid ones
        lo, hi = d // 2, d - d // 2
        rows = [k for k in range(32) if lo <= 8 * k < 256 - hi]
        cols = [k for k in range(64) if lo <= 8 * k < 512 - hi]
        sub = logits[:, ::8, ::8]
        _compare(sub[0][rows], ref[0][rows], f"fullres_aff_d{d}[0]", errors)
        _compare(sub[1][:, cols], ref[1][:, cols], f"fullres_aff_d{d}[1]", errors)
    print("max |diff| per array:", json.dumps({k: float(f"{v:.2e}") for k, v in errors.items()}))


def test_coco_key_list_converts_without_unmapped_keys():
    recipe = load_recipe("coco-r50")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        net = SemanticBoundaryNet.from_config(recipe.model, 133)
    shapes = {e["key"]: e["shape"] for e in key_entries("coco")}
    original = {k: torch.zeros(s) for k, s in shapes.items()}
    converted = convert_original(original, net.state_dict(), "coco")
    assert list(net.edge_distances) == [1, 4, 16, 32]
    assert set(converted.state) == {
        k for k in net.state_dict() if not k.endswith("num_batches_tracked")
    } | {k for k in net.state_dict() if k.endswith("num_batches_tracked")} & set(converted.state)
    assert list(converted.dropped) == ["amwc_layer.training_per_class_areas"]


def test_missing_and_unmapped_keys_are_named(tmp_path):
    recipe = load_recipe("coco-r50")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        own = SemanticBoundaryNet.from_config(recipe.model, 133).state_dict()
    original = {e["key"]: torch.zeros(e["shape"]) for e in key_entries("coco")}
    del original["AFF_EMBED_head.classifiers.2.1.norm.running_var"]
    original["mask_scorer.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError) as info:
        convert_original(original, own, "x.pth")
    message = str(info.value)
    assert "boundary_head.classifiers.2.1.norm.running_var" in message
    assert "mask_scorer.weight" in message


class _Payload:
    """Pickles as a call of ``open(marker, "w")``: running it would create the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_files_whose_pickle_calls_a_function_are_refused(tmp_path, cops, suffix):
    marker = tmp_path / "ran"
    source = tmp_path / f"evil{suffix}"
    payload = {"model": {"stem.conv1.weight": np.zeros((64, 3, 3, 3))}, "x": _Payload(marker)}
    if suffix == ".pth":
        torch.save(payload, source)
    else:
        source.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(
        RefusedFileError,
        match=r"not a weights-only file \(it contains a pickled object `(io|__builtin__|builtins)"
        r"\.open`\); refusing to load it",
    ):
        read_original_file(source)
    args = ["import-checkpoint", str(source), "--out", str(tmp_path / "o.pt")]
    done = cops(*args, "--backbone-only")
    assert done.returncode != 0 and "refusing to load" in done.stderr and "open" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not marker.exists()


def test_backbone_pkl_converts_and_loads_for_pretraining(tmp_path, cops):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        net = SemanticBoundaryNet.from_config(load_recipe("cityscapes-r50").model, 19)
    rng = np.random.default_rng(0)
    arrays = {  # DeepLab's R-52.pkl holds the original's (detectron2's) backbone names
        e["key"].removeprefix("backbone."): rng.standard_normal(e["shape"]).astype(np.float32)
        for e in key_entries("cityscapes")
        if e["key"].startswith("backbone.") and e["dtype"].startswith("torch.float")
    }
    arrays["stem.fc.weight"] = np.zeros((1000, 2048), dtype=np.float32)
    source = tmp_path / "R-52.pkl"
    source.write_bytes(pickle.dumps({"model": arrays, "__author__": "test"}, protocol=2))
    out = tmp_path / "r52.pt"
    done = cops("import-checkpoint", str(source), "--backbone-only", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "stem.fc.weight" in done.stdout
    from cops.models.build import load_model_weights

    load_model_weights(net, out)
    own = net.backbone.state_dict()
    for theirs, ours in [
        ("res5.2.conv3.norm.running_var", "layer4.2.bn3.running_var"),
        ("stem.conv2.norm.weight", "stem.bn2.weight"),
        ("res2.0.shortcut.weight", "layer1.0.downsample.0.weight"),
        ("res3.0.shortcut.norm.bias", "layer2.0.downsample.1.bias"),
    ]:
        np.testing.assert_array_equal(own[ours].numpy(), arrays[theirs])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_import_reproduces_the_original_costs(imported, tmp_path, fmt):
    """`cops export` of the imported network: its metadata carries the fixture's normalisation and
    the exported model maps the normalised input to the original's node and edge costs."""
    from cops.inference.export import export_checkpoint, load_export

    out = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    model = load_export(export_checkpoint(imported, fmt, out), device="cpu")
    norm = model.card.normalization
    np.testing.assert_allclose(np.array(norm.mean) * 255, [123.675, 116.28, 103.53])
    np.testing.assert_allclose(np.array(norm.std) * 255, [58.395, 57.12, 57.375])
    reference = np.load(DATA / "cops_reference_outputs.npz")
    image = read_image(DATA / "input_rgb_512x1024.png")
    mean = torch.tensor(norm.mean).view(3, 1, 1) * 255
    std = torch.tensor(norm.std).view(3, 1, 1) * 255
    x = (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() - mean) / std
    node, edge, _ = (t[0] for t in model(x[None]))
    errors: dict[str, float] = {}
    _compare(node[:, CROP[0], CROP[1]], reference["node_costs_crop"], "node_costs", errors)
    _compare_edge_crops(edge, reference, errors)
