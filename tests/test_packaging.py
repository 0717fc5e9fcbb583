"""The package imports under the single `cops` root, from the source tree and from a wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
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
    names = set(zipfile.ZipFile(wheel).namelist())
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    package_dir = config["tool"]["setuptools"]["package-dir"]
    for package, folder in package_dir.items():  # every module of every sub-package
        for source in (REPO / folder).rglob("*.py"):
            inside = source.relative_to(REPO / folder).as_posix()
            module = f"{package.replace('.', '/')}/{inside}"
            assert module in names, module
    for recipe in (REPO / "recipes").glob("*.yaml"):
        assert f"cops/recipes/{recipe.name}" in names, recipe.name
    assert "cops/datasets/coco_categories.json" in names
    top_level = {n.split("/")[0] for n in names}
    assert not top_level & {*package_dir.values(), "tests"} - {"cops"}

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import cops, cops.solver, cops.datasets, cops.models, cops.training, cops.cli.app;"
        "from cops.recipes.schema import builtin_recipes;"
        "assert 'synthetic-tiny' in builtin_recipes();"
        "from cops.datasets.class_tables import coco_categories;"
        "assert len(coco_categories()) == 133;"
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
