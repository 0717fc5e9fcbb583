"""Package layering (DESIGN §2): every import runs downward, base ← algorithms ← use ← training ←
benchmarks ← CLI. A new upward import fails here with the file and line that made it."""

from __future__ import annotations

import ast
from pathlib import Path

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
    "cops_cli": 5,
}
"""Folder → layer; a module may import from its own layer's folder or from lower layers."""


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
                    if LAYER.get(target, -1) > LAYER[folder.name]:
                        problems.append(
                            f"{path.relative_to(root)}:{node.lineno}: {folder.name} imports "
                            f"{module} from {target}, a higher layer"
                        )
    return sorted(set(problems))


def test_imports_only_run_downward():
    problems = upward_imports(REPO)
    assert not problems, "\n".join(problems)


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
