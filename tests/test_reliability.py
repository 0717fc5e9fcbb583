"""Careless and unlucky use (issue 13): bad input and faults lose nothing and end in one line.

Each test runs the CLI as a user would (a subprocess) where the user would see the outcome, and
checks both the message and that no data was lost or silently corrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _training import run_pretrain, tiny_dataset

from cops.training.checkpoint import LAST

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80"}


def cops(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cops ARGS`` in a subprocess, capturing its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "cops.cli", *args],
        capture_output=True, text=True, env=ENV, cwd=cwd, check=False, timeout=300, **kwargs,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error line of a failed run, after checking it failed without a traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its content."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny prepared dataset and a one-iteration checkpoint trained on it."""
    root = tmp_path_factory.mktemp("reliability")
    data = tiny_dataset(root / "data")
    run_pretrain(data, root / "run", ["train.iterations=1"])
    return data, root / "run" / LAST


# 1. A --data folder the user gave is never written into.


def test_evaluate_refuses_empty_data_folder_instead_of_generating_into_it(trained, tmp_path):
    _, ckpt = trained
    empty = tmp_path / "e2"
    empty.mkdir()
    (empty / "half-converted.txt").write_text("user data")
    line = one_line_error(
        cops("evaluate", "-c", str(ckpt), "--data", str(empty), "--device", "cpu")
    )
    assert str(empty) in line and "panoptic_val.json" in line
    assert tree(empty) == {"half-converted.txt": b"user data"}


def test_pretrain_refuses_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    result = cops(
        "pretrain", "-r", "synthetic-tiny", "--data", str(missing), "--out", str(tmp_path / "run"),
        "--device", "cpu", "--set", "train.iterations=1",
    )  # fmt: skip
    line = one_line_error(result)
    assert str(missing) in line and "not found" in line
    assert not missing.exists() and not (tmp_path / "run" / LAST).exists()


def test_recipe_root_is_generated_once_whole(tmp_path):
    from cops.recipes.schema import load_recipe
    from cops.training.loaders import ensure_dataset

    root = tmp_path / "synthetic"
    recipe = load_recipe(
        "synthetic-tiny",
        [f"data.root={root}", "data.synthetic.num_train=2", "data.synthetic.num_val=1"],
    )
    ensure_dataset(recipe)
    assert sorted(p.name for p in root.glob("*.json")) == [
        "panoptic_train.json",
        "panoptic_val.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"], "no staging folder left"
    (root / "panoptic_val.json").unlink()  # an incomplete root is reported, not regenerated
    with pytest.raises(Exception, match="panoptic_val.json missing; splits there: train"):
        ensure_dataset(recipe)


# 2. A failed prepare-data re-run keeps the split that was there.


def test_failed_prepare_data_keeps_the_finished_split(tmp_path):
    from _prepared_fixture import street_item, write_split

    from cops.datasets.prepared import PanopticDataset

    out, source = tmp_path / "prepared", tmp_path / "source"
    write_split(out, "val", [street_item("a"), street_item("b", seed=1)])
    before = tree(out)
    bad = street_item("z")
    bad.image = bad.image[:, :30]  # image 24x30, its panoptic PNG 24x32
    write_split(source, "val", [street_item("c", seed=2), street_item("d", seed=3), bad])
    result = cops("prepare-data", "coco", str(source), "--out", str(out), "--splits", "val",
                  "--link", "copy", "-j", "1")  # fmt: skip
    line = one_line_error(result)
    assert "z.png" in line and "expected equal sizes" in line
    assert tree(out) == before, "the finished split must stay as it was"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [], "staging left behind"
    assert PanopticDataset(out, "val").validate() == []


def cops_patched(setup: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``cops ARGS`` in a subprocess after executing `setup` there (fault injection)."""
    run = f"import sys\nsys.argv = ['cops', *{list(args)!r}]\nfrom cops.cli.app import main\nmain()"
    code = f"{setup}\n{run}"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env=ENV, check=False, timeout=300,
    )  # fmt: skip


DISK_FULL = """
import errno, os
_fsync = os.fsync
def fsync(fd):
    if {match!r} in os.readlink(f"/proc/self/fd/{{fd}}"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _fsync(fd)
os.fsync = fsync
"""
"""Setup code: flushing a file whose path contains ``match`` fails as on a full disk."""

KILL_AFTER_WRITES = """
import os, signal
import cops.inference.outputs as outputs
_write, _count = outputs.write_panoptic_png, [0]
def write(path, ids):
    _write(path, ids)
    _count[0] += 1
    if _count[0] == {count}:
        os.kill(os.getpid(), signal.SIGKILL)
outputs.write_panoptic_png = write
"""
"""Setup code: the process is killed right after its `count`-th panoptic PNG."""


@pytest.fixture(scope="module")
def images(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve input images (the two validation images of the tiny dataset, repeated)."""
    data, _ = trained
    folder = tmp_path_factory.mktemp("images")
    sources = sorted((data / "images" / "val").iterdir())
    for i in range(12):
        (folder / f"img{i:02d}.png").write_bytes(sources[i % len(sources)].read_bytes())
    return folder


# 3. An interrupted predict re-run leaves no panoptic.json that no longer matches the PNGs.


def test_killed_predict_rerun_leaves_no_stale_json(trained, images, tmp_path):
    _, ckpt = trained
    out = tmp_path / "pred"
    args = ("predict", str(images), "-c", str(ckpt), "--out", str(out), "--device", "cpu")
    first = cops(*args)
    assert first.returncode == 0, first.stderr
    assert len(json.loads((out / "panoptic.json").read_text())["annotations"]) == 12
    killed = cops_patched(KILL_AFTER_WRITES.format(count=3), *args)
    assert killed.returncode == -9
    assert not (out / "panoptic.json").exists(), "the old JSON must not describe the new PNGs"
    again = cops(*args)
    assert again.returncode == 0, again.stderr
    assert len(json.loads((out / "panoptic.json").read_text())["annotations"]) == 12


# 5. and 9. A failed export (disk full) keeps the previous export; the message names the file.


def test_export_on_full_disk_keeps_previous_export(trained, tmp_path):
    _, ckpt = trained
    model = tmp_path / "model.pt"
    first = cops("export", "-c", str(ckpt), "--format", "torchscript", "--out", str(model))
    assert first.returncode == 0, first.stderr
    meta = model.with_suffix(".json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "marker": 1}))
    before = tree(tmp_path)
    result = cops_patched(
        DISK_FULL.format(match=".model.pt."),
        "export", "-c", str(ckpt), "--format", "torchscript", "--out", str(model),
    )  # fmt: skip
    line = one_line_error(result)
    assert str(model) in line and "No space left on device" in line and "disk is full" in line
    assert tree(tmp_path) == before, "the old model and its metadata stay, no temporary files"


def test_export_under_a_regular_file_names_the_path(trained, tmp_path):
    _, ckpt = trained
    (tmp_path / "file").write_text("")
    line = one_line_error(cops("export", "-c", str(ckpt), "--out", str(tmp_path / "file" / "m.pt"),
                               "--format", "torchscript"))  # fmt: skip
    assert str(tmp_path / "file") in line and "not a folder" in line
