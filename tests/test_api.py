"""The Python API is the CLI's twin: ``cops.load(PATH)`` predicts, evaluates and exports as
``cops predict / evaluate / export`` do; the checkpoint format lives in one module; no import
cycles, lazy imports included."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _training import save_net, tiny_dataset

import cops
from cops.api.model import Model
from cops.datasets.panoptic_io import read_image
from cops.errors import CopsError
from cops.inference.export import metadata_path
from cops.models.build import build_model
from cops.recipes.schema import load_recipe

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::cops.models.BackboneInitWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A prepared tiny synthetic dataset and a random-init synthetic-tiny checkpoint of its
    classes (BatchNorm statistics measured on its images, so predictions mix classes)."""
    root = tmp_path_factory.mktemp("api")
    data = tiny_dataset(root / "data")
    recipe = load_recipe("synthetic-tiny")
    torch.manual_seed(0)
    net = build_model(recipe.model, 9, None, restoring=True)
    images = sorted((data / "images" / "val").glob("*.png"))
    batch = torch.stack([torch.from_numpy(read_image(p)).permute(2, 0, 1).float() for p in images])
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        net.train()((batch - 120.0) / 60.0)
    return data, save_net(net.eval(), recipe, root / "run", 5, "pretrain")


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_load_gives_the_checkpoint_model(setup):
    _, ckpt = setup
    model = cops.load(ckpt, device="cpu", backend="cpu")
    assert isinstance(model, Model) and model.checkpoint is not None
    assert model.classes.names[:2] == ["road", "sidewalk"]
    assert model.card.source.iteration == 5
    with pytest.raises(CopsError, match=r"nope\.pt: file not found"):
        cops.load(ckpt.parent / "nope.pt")


@pytest.mark.slow
def test_predict_arrays_paths_and_folders_agree(setup):
    data, ckpt = setup
    model = cops.load(str(ckpt), device="cpu", backend="cpu")
    folder = data / "images" / "val"
    paths = sorted(folder.glob("*.png"))
    arrays = [read_image(p) for p in paths]
    from_arrays = model.predict(arrays)
    from_paths = model.predict([str(p) for p in paths])
    from_folder = model.predict(folder)
    assert len(from_arrays) == len(from_paths) == len(from_folder) == len(paths) == 2
    for a, b, c in zip(from_arrays, from_paths, from_folder, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.ids, c.ids)
        assert a.segments == b.segments == c.segments
    assert len({seg["category_id"] for p in from_arrays for seg in p.segments}) > 1
    with pytest.raises(CopsError, match="pass image files"):
        model.predict(arrays, out=data.parent / "never")


@pytest.mark.slow
def test_predict_out_writes_what_cops_predict_writes(cops, setup, tmp_path, one_torch_thread):
    # one torch thread on both sides, as the `cops` fixture runs the CLI: a convolution's float
    # sums depend on the thread count, and the JSON holds the instance scores to the last digit
    data, ckpt = setup
    image = sorted((data / "images" / "val").glob("*.png"))[0]
    api = _load(ckpt).predict([image], out=tmp_path / "api", overlay=True)
    done = cops("predict", str(image), "--checkpoint", str(ckpt), "--out", str(tmp_path / "cli"),
                "--overlay", "--device", "cpu", "--backend", "cpu")  # fmt: skip
    assert done.returncode == 0, done.stderr
    written, expected = _tree(tmp_path / "api"), _tree(tmp_path / "cli")
    assert sorted(written) == sorted(expected)
    outputs = ["overlay/" + image.stem + ".png", "panoptic.json", "panoptic/" + image.stem + ".png"]
    assert set(outputs) <= set(expected)
    for name in outputs:
        assert written[name] == expected[name], f"{name} differs (byte for byte)"
    segments = json.loads(expected["panoptic.json"])["annotations"][0]["segments_info"]
    assert [s["id"] for s in segments] == [s["id"] for s in api[0].segments]


def _load(ckpt: Path) -> Model:
    return cops.load(ckpt, device="cpu", backend="cpu")


@pytest.mark.slow
def test_evaluate_returns_what_cops_evaluate_writes(cops, setup, tmp_path):
    data, ckpt = setup
    metrics = _load(ckpt).evaluate(data=data, split="val", out=tmp_path / "api", workers=0)
    done = cops("evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--split", "val",
                "--out", str(tmp_path / "cli"), "--device", "cpu", "--backend", "cpu",
                "--workers", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["panoptic"]["all"]["pq"] == written["panoptic"]["all"]["pq"]
    metrics.pop("seconds_per_image"), written.pop("seconds_per_image")
    assert metrics == written
    assert json.loads((tmp_path / "api" / "metrics.json").read_text())["split"] == "val"


@pytest.mark.slow
def test_export_and_load_the_export(setup, tmp_path):
    data, ckpt = setup
    model = _load(ckpt)
    exported = model.export(tmp_path / "net.pt", format="torchscript")
    assert exported == tmp_path / "net.pt" and metadata_path(exported).is_file()
    again = cops.load(exported, backend="cpu")
    assert again.checkpoint is None and again.classes == model.classes
    image = read_image(sorted((data / "images" / "val").glob("*.png"))[0])
    np.testing.assert_array_equal(again.predict(image)[0].ids, model.predict(image)[0].ids)
    with pytest.raises(CopsError, match="evaluate needs a checkpoint, not an export"):
        again.evaluate(data=data)


# ---------------------------------------------------------------------------------------------
# Structure: one module for the checkpoint format, no import cycles.

CHECKPOINT_IO = {
    "models/checkpoint.py": "the checkpoint format's one reader and writer",
    "models/weights_only.py": "the one torch.load (weights only, one-line errors) of any file",
    "core/files.py": "defines atomic_save (a torch.save behind a temporary file)",
    "models/original_import.py": "reads the authors' detectron2 .pth files, not COPS checkpoints",
    "models/backbone_weights.py": "reads backbone state dicts (--weights, backbone_weights)",
}
"""Files allowed to call torch.load / torch.save / atomic_save, with the reason."""


def _package_files() -> dict[str, Path]:
    """Module name → file of every package in pyproject's package-dir."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    files = {}
    for name, folder in config["tool"]["setuptools"]["package-dir"].items():
        for path in (REPO / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts]
            module = ".".join([name, *(p for p in parts if p != "__init__")])
            files.setdefault(module, path)
    return files


def _checkpoint_io_calls(path: Path, root: Path = REPO) -> list[str]:
    """``file:line call`` of every torch.load / torch.save / atomic_save call in `path`."""
    tree = ast.parse(path.read_text("utf-8"))
    return [
        f"{path.relative_to(root).as_posix()}:{node.lineno} {ast.unparse(node.func)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("torch.load", "torch.save", "atomic_save")
    ]


def test_the_checkpoint_format_is_read_and_written_in_one_module():
    found = [
        call
        for path in _package_files().values()
        if path.relative_to(REPO).as_posix() not in CHECKPOINT_IO
        for call in _checkpoint_io_calls(path)
    ]
    assert not found, "checkpoint files go through cops.models.checkpoint:\n" + "\n".join(found)
    marker = [
        path.relative_to(REPO).as_posix()
        for path in _package_files().values()
        if '"cops-checkpoint"' in path.read_text("utf-8")
    ]
    assert marker == ["models/checkpoint.py"]


def test_the_io_scan_finds_a_planted_save(tmp_path):
    planted = tmp_path / "probe.py"
    planted.write_text("import torch\n\n\ndef f(x, p):\n    torch.save(x, p)\n")
    assert _checkpoint_io_calls(planted, tmp_path) == ["probe.py:5 torch.save"]


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Our modules `module` imports anywhere in its file (function bodies and TYPE_CHECKING
    blocks included): the longest known prefix of each imported name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            # A package's own __init__ is where its submodules live, not a dependency of them.
            if name and name != module and not module.startswith(name + "."):
                found.add(name)
    return found


def import_cycles(files: dict[str, Path]) -> list[list[str]]:
    """Every set of modules that import each other in a circle (strongly connected components
    of more than one module, Tarjan's algorithm)."""
    graph = {m: _imports(m, p, set(files)) for m, p in files.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_lazy_imports_included():
    cycles = import_cycles(_package_files())
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_a_lazy_import_cycle_is_found(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (tmp_path / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n"
    )
    (tmp_path / "c.py").write_text("from pkg import a\n")
    files = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py", "pkg.c": tmp_path / "c.py"}
    assert import_cycles(files) == [["pkg.a", "pkg.b"]]
