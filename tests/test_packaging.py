"""The package imports under the single `cops` root, from the source tree and from a wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_namespaced_packages_and_recipes(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("cops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "cops/__init__.py",
        "cops/app.py",
        "cops/solver/__init__.py",
        "cops/datasets/__init__.py",
        "cops/models/__init__.py",
        "cops/recipes/synthetic-tiny.yaml",
        "cops/recipes/cityscapes-r50.yaml",
    ):
        assert module in names, module
    top_level = {n.split("/")[0] for n in names}
    assert not top_level & {"datasets", "models", "solver", "recipes", "cops_cli", "tests"}

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import cops, cops.solver, cops.datasets, cops.models;"
        "from cops.recipes.schema import builtin_recipes;"
        "assert 'synthetic-tiny' in builtin_recipes();"
        "print(cops.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip().startswith(str(site))
