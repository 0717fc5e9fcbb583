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

from cops.datasets.class_list import ClassList
from cops.training.checkpoint import LAST

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}

pytestmark = pytest.mark.slow  # nearly every test runs `cops` in a subprocess
"""Wide enough that rich does not wrap the long paths the tests look for in messages."""


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


# 1. A --data folder the user gave is never written into.


def test_evaluate_refuses_empty_data_folder_instead_of_generating_into_it(
    tiny_pretrained, tmp_path
):
    _, ckpt = tiny_pretrained
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
    from cops.datasets.recipe_data import ensure_dataset
    from cops.recipes.schema import load_recipe

    root = tmp_path / "synthetic"
    recipe = load_recipe(
        "synthetic-tiny",
        [f"data.root={root}", "data.synthetic.num_train=2", "data.synthetic.num_val=1"],
    )
    ensure_dataset(recipe)
    assert sorted(p.name for p in root.glob("*.json")) == [
        "panoptic_train.json",
        "panoptic_val.json",
        "summary.json",
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
def images(tiny_pretrained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve input images (the two validation images of the tiny dataset, repeated)."""
    data, _ = tiny_pretrained
    folder = tmp_path_factory.mktemp("images")
    sources = sorted((data / "images" / "val").iterdir())
    for i in range(12):
        (folder / f"img{i:02d}.png").write_bytes(sources[i % len(sources)].read_bytes())
    return folder


# 3. An interrupted predict re-run leaves no panoptic.json that no longer matches the PNGs.


def test_killed_predict_rerun_leaves_no_stale_json(tiny_pretrained, images, tmp_path):
    _, ckpt = tiny_pretrained
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


def test_export_on_full_disk_keeps_previous_export(tiny_pretrained, tmp_path):
    _, ckpt = tiny_pretrained
    model = tmp_path / "model.pt"
    first = cops("export", "-c", str(ckpt), "--format", "torchscript", "--out", str(model))
    assert first.returncode == 0, first.stderr
    meta = model.with_name("model.pt.json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "marker": 1}))
    before = tree(tmp_path)
    result = cops_patched(
        DISK_FULL.format(match=".model.pt."),
        "export", "-c", str(ckpt), "--format", "torchscript", "--out", str(model),
    )  # fmt: skip
    line = one_line_error(result)
    assert str(model) in line and "No space left on device" in line and "disk is full" in line
    assert tree(tmp_path) == before, "the old model and its metadata stay, no temporary files"


def test_export_under_a_regular_file_names_the_path(tiny_pretrained, tmp_path):
    _, ckpt = tiny_pretrained
    (tmp_path / "file").write_text("")
    line = one_line_error(cops("export", "-c", str(ckpt), "--out", str(tmp_path / "file" / "m.pt"),
                               "--format", "torchscript"))  # fmt: skip
    assert str(tmp_path / "file") in line and "not a folder" in line


# 4. --weights compares the checkpoint's classes with the dataset's.


def _synthetic_classes(order: list[int]) -> ClassList:
    from cops.datasets.street_scene import SYNTHETIC_CATEGORIES

    cats = [SYNTHETIC_CATEGORIES[i] for i in order]
    return ClassList(
        [c.name for c in cats], [c.id for c in cats], [c.isthing for c in cats],
        [list(c.color) for c in cats],
    )  # fmt: skip


def test_weights_with_classes_in_another_order_are_remapped(tmp_path, caplog):
    import torch

    from cops.models.build import build_model
    from cops.models.checkpoint import Checkpoint
    from cops.recipes.schema import load_recipe
    from cops.training.checkpoint import save_checkpoint

    recipe = load_recipe("synthetic-tiny")
    from cops.datasets.street_scene import SYNTHETIC_CATEGORIES

    count = len(SYNTHETIC_CATEGORIES)
    torch.manual_seed(0)
    source = build_model(recipe.model, count, restoring=True).eval()
    with torch.no_grad():  # give BatchNorm statistics and biases non-trivial values
        for name, tensor in source.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor).abs() if "running_var" in name else
                             torch.randn_like(tensor) * 0.1)  # fmt: skip
    classes = _synthetic_classes(list(range(count)))
    stored = Checkpoint(source.state_dict(), recipe.to_dict(), classes, 1, "pretrain")
    ckpt = save_checkpoint(stored, tmp_path)
    order = list(reversed(range(count)))
    with caplog.at_level("WARNING"):
        target = build_model(recipe.model, count, ckpt, classes=_synthetic_classes(order)).eval()
    assert "another order" in caplog.text
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = source(image), target(image)
    torch.testing.assert_close(got["semantic"], expected["semantic"][:, order])
    torch.testing.assert_close(got["boundary"], expected["boundary"], rtol=1e-4, atol=1e-5)

    other = _synthetic_classes(list(range(count - 1)))  # one class fewer
    with pytest.raises(Exception, match="--reinit-head"):
        build_model(recipe.model, count - 1, ckpt, classes=other)
    caplog.clear()
    with caplog.at_level("WARNING"):
        build_model(recipe.model, count - 1, ckpt, classes=other, reinit_head=True)
    assert "semantic_head" in caplog.text and "not loaded" in caplog.text


def test_pretrain_refuses_weights_of_other_classes(tiny_pretrained, tmp_path):
    from _prepared_fixture import street_item, write_split

    _, ckpt = tiny_pretrained
    data = tmp_path / "street"
    write_split(data, "train", [street_item(f"s{i}", seed=i) for i in range(2)])
    result = cops(
        "pretrain", "-r", "synthetic-tiny", "--data", str(data), "--out", str(tmp_path / "run"),
        "--device", "cpu", "--weights", str(ckpt), "--set", "train.val_every=0",
    )  # fmt: skip
    line = one_line_error(result)
    assert str(ckpt) in line and "--reinit-head" in line and "person" in line
    assert not (tmp_path / "run" / LAST).exists()


# 6. Every output respects the umask.

UMASK_RUN = """
import os
os.umask(0o022)
from cops.cli.app import app
for argv in {commands!r}:
    app(argv, standalone_mode=False)
"""


def test_outputs_respect_the_umask(tmp_path):
    commands = [
        ["-q", "pretrain", "-r", "synthetic-tiny", "--out", "run", "--device", "cpu",
         "--set", "data.root=gen", "--set", "data.synthetic.num_train=2",
         "--set", "data.synthetic.num_val=1", "--set", "train.iterations=1",
         "--set", "train.val_every=0"],
        ["-q", "prepare-data", "synthetic", "--preset", "tiny", "--out", "prep",
         "--num-train", "1", "--num-val", "1", "-j", "1"],
        ["-q", "evaluate", "-c", "run/last.pt", "--data", "prep", "--out", "eval",
         "--device", "cpu", "--workers", "0", "--save-predictions"],
        ["-q", "predict", "prep/images/val", "-c", "run/last.pt", "--out", "pred",
         "--device", "cpu"],
        ["-q", "export", "-c", "run/last.pt", "--format", "torchscript", "--out", "exp/model.pt"],
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", UMASK_RUN.format(commands=commands)],
        capture_output=True, text=True, env=ENV, cwd=tmp_path, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    modes = {
        p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")
    }
    for name in ("gen/panoptic_train.json", "run/last.pt", "prep/panoptic_val.json",
                 "eval/metrics.json", "eval/predictions.json", "pred/panoptic.json",
                 "exp/model.pt", "exp/model.pt.json"):  # fmt: skip
        assert name in modes
    wrong = {name: oct(mode) for name, mode in modes.items() if mode not in (0o644, 0o755)}
    assert wrong == {}
    assert all(modes[p.relative_to(tmp_path).as_posix()] == 0o755 for p in tmp_path.rglob("*")
               if p.is_dir())  # fmt: skip


# 7. Tracebacks that became one line.


def test_predict_backend_cuda_without_gpu_is_one_line(tiny_pretrained, images, tmp_path):
    from cops.solver.api import cuda_available

    if cuda_available():
        pytest.skip("a GPU is usable here")
    _, ckpt = tiny_pretrained
    result = cops("predict", str(images), "-c", str(ckpt), "--out", str(tmp_path / "p"),
                  "--backend", "cuda", "--device", "cpu")  # fmt: skip
    assert "--backend cuda" in one_line_error(result)
    assert not (tmp_path / "p").exists()


def test_resume_with_another_network_is_refused(tiny_pretrained, tmp_path):
    _, ckpt = tiny_pretrained
    run = tmp_path / "run"
    run.mkdir()
    (run / LAST).write_bytes(ckpt.read_bytes())
    result = cops("pretrain", "--resume", "--out", str(run), "--device", "cpu",
                  "--set", "model.decoder_channels=16")  # fmt: skip
    line = one_line_error(result)
    assert "--resume" in line and "model.decoder_channels" in line and "--weights" in line
    assert (run / LAST).read_bytes() == ckpt.read_bytes()


def test_corrupt_image_in_a_dataloader_worker_names_the_file(tiny_pretrained, tmp_path):
    import shutil

    data, _ = tiny_pretrained
    copy = shutil.copytree(data, tmp_path / "data")
    broken = sorted((copy / "images" / "train").iterdir())[0]
    broken.write_bytes(b"not an image")
    result = cops(
        "pretrain", "-r", "synthetic-tiny", "--data", str(copy), "--out", str(tmp_path / "run"),
        "--device", "cpu", "--set", "data.num_workers=1", "--set", "train.val_every=0",
        "--set", "train.iterations=2",
    )  # fmt: skip
    line = one_line_error(result)
    assert str(broken) in line and "not a readable image" in line
    assert "DataLoader worker" not in line


def test_files_that_are_not_utf8_are_one_line(tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("# caf\xe9\n_base_: synthetic-tiny\n".encode("latin-1"))
    line = one_line_error(cops("recipes", "show", str(recipe)))
    assert str(recipe) in line and "not UTF-8" in line

    source = tmp_path / "source"
    source.mkdir()
    (source / "panoptic_val.json").write_bytes(b'{"info": "caf\xe9"}')
    (source / "panoptic" / "val").mkdir(parents=True)
    (source / "images" / "val").mkdir(parents=True)
    result = cops("prepare-data", "coco", str(source), "--out", str(tmp_path / "out"),
                  "--splits", "val")  # fmt: skip
    line = one_line_error(result)
    assert "panoptic_val.json" in line and "not UTF-8" in line


def test_disk_full_while_saving_a_checkpoint_keeps_the_last_one(tiny_pretrained, tmp_path):
    _, ckpt = tiny_pretrained
    run = tmp_path / "run"
    run.mkdir()
    (run / LAST).write_bytes(ckpt.read_bytes())
    result = cops_patched(
        DISK_FULL.format(match=f".{LAST}."),
        "pretrain", "--resume", "--out", str(run), "--device", "cpu",
        "--set", "train.iterations=3", "--set", "train.val_every=0",
    )  # fmt: skip
    line = one_line_error(result)
    assert str(run / LAST) in line and "No space left on device" in line
    assert (run / LAST).read_bytes() == ckpt.read_bytes()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


# 8. Ctrl-C says what was interrupted and how to continue.


def test_ctrl_c_during_training_says_how_to_resume(tiny_pretrained, tmp_path):
    import signal
    import time

    data, _ = tiny_pretrained
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "cops.cli", "pretrain", "-r", "synthetic-tiny", "--data", str(data),
         "--out", str(out), "--device", "cpu", "--set", "train.iterations=10000",
         "--set", "train.val_every=0", "--set", "train.log_every=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert str(out) in line and "--resume" in line


# 9. Vague messages made precise.


def test_precise_messages_for_empty_checkpoint_and_missing_split(tiny_pretrained, tmp_path):
    data, ckpt = tiny_pretrained
    empty = tmp_path / "empty.pt"
    empty.touch()
    line = one_line_error(cops("evaluate", "-c", str(empty), "--data", str(data)))
    assert str(empty) in line and "empty file (0 bytes)" in line

    result = cops("evaluate", "-c", str(ckpt), "--data", str(data), "--split", "test",
                  "--device", "cpu", "--out", str(tmp_path / "eval"))  # fmt: skip
    line = one_line_error(result)
    assert "no split 'test'" in line and "splits there: train, val" in line


def test_disk_full_during_prepare_data_names_the_file(tmp_path):
    out = tmp_path / "prep"
    result = cops_patched(
        DISK_FULL.format(match="val_000001.png"),
        "prepare-data", "synthetic", "--preset", "tiny", "--out", str(out),
        "--num-train", "1", "--num-val", "2", "-j", "1",
    )  # fmt: skip
    line = one_line_error(result)
    assert "val_000001.png" in line and "No space left on device" in line
    assert not (out / "panoptic_val.json").exists()
    assert (out / "panoptic_train.json").exists(), "the finished split stays"


# 10. Machine-readable output is not wrapped when piped.


def test_recipes_show_piped_is_valid_unwrapped_yaml(tmp_path):
    import yaml

    root = "data/" + "a-very-long-folder-name/" * 6 + "synthetic"
    result = subprocess.run(
        [sys.executable, "-m", "cops.cli", "recipes", "show", "synthetic-tiny",
         "--set", f"data.root={root}"],
        capture_output=True, text=True, env={**ENV, "COLUMNS": "80"}, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = tmp_path / "my.yaml"
    shown.write_text(result.stdout)
    assert yaml.safe_load(result.stdout)["data"]["root"] == root

    from cops.recipes.schema import load_recipe

    assert load_recipe(str(shown)).data.root == root


# 11. Minor: corrupt JPEG, broken symlink, duplicate YAML keys, non-finite numbers.


def test_truncated_jpeg_and_broken_symlink_are_reported_by_name(tiny_pretrained, images, tmp_path):
    import cv2

    _, ckpt = tiny_pretrained
    folder = tmp_path / "in"
    folder.mkdir()
    image = cv2.imread(str(sorted(images.iterdir())[0]))
    data = cv2.imencode(".jpg", image)[1].tobytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    result = cops("predict", str(folder), "-c", str(ckpt), "--out", str(tmp_path / "p"),
                  "--device", "cpu")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(folder / "cut.jpg") in result.stderr and "truncated" in result.stderr
    assert str(folder / "gone.png") in result.stderr + result.stdout
    assert "broken symbolic link" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("_base_: synthetic-tiny\ntrain:\n  lr: 0.1\n  lr: 0.2\n", "duplicate key 'lr' at line 4"),
        ("_base_: synthetic-tiny\ntrain:\n  lr: .inf\n", "train.lr: expected a finite number"),
        ("_base_: synthetic-tiny\nloss:\n  thing_weight: .nan\n", "expected a finite number"),
    ],
)
def test_recipe_duplicate_keys_and_non_finite_numbers_are_refused(tmp_path, text, expected):
    from cops.errors import RecipeError
    from cops.recipes.schema import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=expected):
        load_recipe(str(path))
