"""Package layering (DESIGN §2): every import runs downward, base ← algorithms ← use ← training ←
benchmarks ← Python API ← CLI, and the CLI only wires. A new upward import, or a CLI function that
does the work itself, fails here with the file and line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]

LAYER = {
    "core": 0,
    "recipes": 0,
    "solver": 1,
    "models": 1,
    "datasets": 1,
    "evaluation": 2,
    "inference": 2,
    "training": 3,
    "benchmarks": 4,
    "api": 5,
    "cops_cli": 6,
}
"""Folder → layer; a module may import from its own layer's folder or from lower layers."""

FRONT_DOOR = ("core/__init__.py", "cops.api")
"""The one allowed upward import: ``import cops; cops.load(...)`` needs the base package to
reach the Python API. It sits inside a PEP 562 ``__getattr__``, so it runs on first use of
``cops.load``/``train``/``finetune``/``Model`` and never while ``cops`` itself is imported
(tested below); nothing in ``cops.api`` imports the bare ``cops`` package back."""


def _package_folders(root: Path) -> dict[str, Path]:
    """Import name → folder, from pyproject's setuptools package-dir."""
    config = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in mapping.items()}


def _owner(module: str, folders: dict[str, Path]) -> str | None:
    """The folder holding `module` (longest matching package name), or None if not ours."""
    best = None
    for name, folder in folders.items():
        if (module == name or module.startswith(name + ".")) and (
            best is None or len(name) > len(best[0])
        ):
            best = (name, folder)
    if best is None:
        return None
    if best[0] == "cops" and module != "cops":
        # A top-level name under `cops` that is a sub-package folder of its own belongs there.
        head = ".".join(module.split(".")[:2])
        if head in folders:
            return folders[head].name
    return best[1].name


def _imported(node: ast.AST, package: str) -> list[str]:
    """Module names an import statement reads, relative imports resolved against `package`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parent, base] if base else parent)
        return [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return []


def upward_imports(root: Path) -> list[str]:
    """``file:line: <folder> imports <module> from <folder>, a higher layer`` for each violation."""
    folders = _package_folders(root)
    problems = []
    for name, folder in folders.items():
        if folder.name not in LAYER:
            problems.append(f"{folder.name}: folder has no layer in tests/test_layers.py")
            continue
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            package = ".".join([name, *parts[:-1]])
            tree = ast.parse(path.read_text("utf-8"), str(path))
            for node in ast.walk(tree):
                for module in _imported(node, package):
                    target = _owner(module, folders)
                    if target is None or target == folder.name:
                        continue
                    here, api = path.relative_to(root).as_posix(), FRONT_DOOR[1]
                    if here == FRONT_DOOR[0] and (module == api or module.startswith(api + ".")):
                        continue
                    if LAYER.get(target, -1) > LAYER[folder.name]:
                        problems.append(
                            f"{path.relative_to(root)}:{node.lineno}: {folder.name} imports "
                            f"{module} from {target}, a higher layer"
                        )
    return sorted(set(problems))


def test_imports_only_run_downward():
    problems = upward_imports(REPO)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_the_front_door_imports_the_api_only_on_first_use():
    """``import cops`` leaves ``cops.api`` (and torch) unimported; ``cops.load`` brings it in."""
    tree = ast.parse((REPO / FRONT_DOOR[0]).read_text("utf-8"))
    lazy = [
        node
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef) and func.name == "__getattr__"
        for node in ast.walk(func)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    every = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert every == lazy and lazy, "core/__init__.py may import only inside __getattr__"
    code = (
        "import sys, cops\n"
        "assert 'cops.api' not in sys.modules and 'torch' not in sys.modules\n"
        "assert callable(cops.load) and 'cops.api' in sys.modules\n"
        "assert {'load', 'train', 'finetune', 'import_checkpoint', 'Model'} <= set(dir(cops))\n"
        "assert callable(cops.import_checkpoint) and callable(cops.train)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_package_folder_has_a_layer():
    assert {folder.name for folder in _package_folders(REPO).values()} <= LAYER.keys()


def test_a_planted_upward_import_is_named_with_file_and_line(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "cops" = "core", "cops.models" = "models", '
        '"cops.training" = "training", "cops.cli" = "cops_cli" }\n'
    )
    for folder in ("core", "models", "training", "cops_cli"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "core" / "errors.py").write_text("class CopsError(Exception): ...\n")
    (tmp_path / "training" / "engine.py").write_text("from cops.models.net import Net\n")
    (tmp_path / "models" / "net.py").write_text(
        "from cops.errors import CopsError\n\n\ndef f():\n    from cops.training import engine\n"
    )
    (tmp_path / "models" / "sub.py").write_text("from . import net\nfrom ..cli import app\n")
    (tmp_path / "cops_cli" / "app.py").write_text("from cops.training.engine import Net\n")
    assert upward_imports(tmp_path) == [
        "models/net.py:5: models imports cops.training from training, a higher layer",
        "models/net.py:5: models imports cops.training.engine from training, a higher layer",
        "models/sub.py:2: models imports cops.cli from cops_cli, a higher layer",
        "models/sub.py:2: models imports cops.cli.app from cops_cli, a higher layer",
    ]


WIRING = {"cops.cli", "cops.console", "cops.errors"}
"""Modules a CLI function may use freely: options, terminal output, user errors."""
WRITES = {
    "open",
    "write_text",
    "write_bytes",
    "mkdir",
    "unlink",
    "rename",
    "rmdir",
    "touch",
    "save",
}


def _wiring_problems(path: Path) -> list[str]:
    """A CLI module's functions that call more than one lower-layer function, or write files."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    lower: set[str] = set()  # names bound to something imported from a lower layer
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cops"):
            if not any(node.module == w or node.module.startswith(w + ".") for w in WIRING):
                lower.update(alias.asname or alias.name for alias in node.names)
    problems = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        called = set()
        for node in ast.walk(func):
            if not isinstance(node, ast.Call):
                continue
            target = node.func
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in lower:
                called.add(ast.unparse(target))
            if name in WRITES or name.startswith("atomic_"):
                problems.append(f"{path.name}:{node.lineno} {func.name}() writes files ({name})")
        if len(called) > 1:
            problems.append(
                f"{path.name}:{func.lineno} {func.name}() calls {len(called)} functions below the "
                f"CLI ({', '.join(sorted(called))}); give them one entry point there"
            )
    return problems


def test_cli_modules_only_wire():
    """Each CLI function parses options, calls at most one function of the layers below, prints."""
    problems = [
        p for path in sorted((REPO / "cops_cli").glob("*.py")) for p in _wiring_problems(path)
    ]
    assert not problems, "\n".join(problems)


def test_a_cli_function_doing_two_jobs_is_reported(tmp_path: Path):
    module = tmp_path / "fat.py"
    module.write_text(
        "from cops.models.build import load_checkpoint\n"
        "from cops.inference.export import export_model\n\n\n"
        "def export(path):\n"
        "    ckpt = load_checkpoint(path)\n"
        "    export_model(ckpt, path)\n"
        "    path.write_text('done')\n"
    )
    assert _wiring_problems(module) == [
        "fat.py:8 export() writes files (write_text)",
        "fat.py:5 export() calls 2 functions below the CLI (export_model, load_checkpoint); "
        "give them one entry point there",
    ]
