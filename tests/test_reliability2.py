"""Careless and unlucky use, round 2 (issue 22): outputs never overwrite inputs, one metadata
file per export, one run per run folder, and the unclear messages made one clear line.

As in test_reliability.py, each test runs the CLI as a user would (a subprocess) where the user
would see the outcome, and checks the message (one ``error:`` line naming the file or key) and
that nothing was lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_reliability import ENV, cops, cops_patched, one_line_error, tree

from cops.training.checkpoint import LAST

pytestmark = pytest.mark.slow  # every test runs `cops` in a subprocess

# Errors name the target, not the hidden temporary beside it.

READ_ONLY = """
import errno, os, tempfile
_mkstemp = tempfile.mkstemp
def mkstemp(*args, dir=None, prefix="", suffix="", **kwargs):
    if {match!r} in str(dir):
        name = os.path.join(dir, prefix + "ms8fqquf" + suffix)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    return _mkstemp(*args, dir=dir, prefix=prefix, suffix=suffix, **kwargs)
tempfile.mkstemp = mkstemp
"""
"""Setup code: creating a file in a folder whose path contains ``match`` fails as in a read-only
folder (tests run as root, for whom permission bits do not stop a write)."""


def test_atomic_writer_names_the_target_not_its_temporary(tmp_path):
    from cops.errors import user_message
    from cops.files import atomic_write_json, check_writable

    folder = tmp_path / "adir"
    folder.mkdir()
    for write in (lambda: atomic_write_json(folder, {}), lambda: check_writable(folder)):
        with pytest.raises(IsADirectoryError) as caught:
            write()
        assert user_message(caught.value) == (
            f"{folder}: Is a directory (a folder is there, not a file; give a file name)"
        )
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == ["adir"]


def test_bench_json_is_checked_before_the_benchmark_runs(tmp_path):
    folder = tmp_path / "out.json"
    folder.mkdir()
    result = cops("bench", "solver", "--sizes", "8x8", "--repeats", "1", "--json", str(folder))
    line = one_line_error(result)
    assert (
        line == f"error: {folder}: Is a directory (a folder is there, not a file; give a file name)"
    )
    assert "AMWC solver" not in result.stdout, "refused before measuring"

    target = tmp_path / "readonly" / "b.json"
    result = cops_patched(
        READ_ONLY.format(match="readonly"),
        "bench", "solver", "--sizes", "8x8", "--repeats", "1", "--json", str(target),
    )  # fmt: skip
    line = one_line_error(result)
    assert str(target) in line and "Permission denied" in line
    assert ".tmp" not in line and "AMWC solver" not in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--family", "noisy", "--sigmas", "nan"], "--sigmas: nan is not a finite non-negative"),
        (["--family", "noisy", "--sigmas", "inf"], "--sigmas: inf is not a finite non-negative"),
        (["--sizes", "100000x100000"], "--sizes 100000x100000: needs about"),
        (["--sizes", ""], "--sizes: no grid size given"),
        (["--sizes", ","], "--sizes: no grid size given"),
        (["--sigmas", ""], "--sigmas: no noise level given"),
    ],
)
def test_bench_solver_refuses_bad_sizes_and_sigmas(args, expected):
    line = one_line_error(cops("bench", "solver", "--repeats", "1", *args))
    assert line.startswith(f"error: {expected}")


# Recipe validation: what `recipes show` accepts, training accepts.


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "model.edge_distances=[1,1]",
            "model.edge_distances: expected a non-empty list of distinct",
        ),
        ("train.param_groups=[{name: x}]", "train.param_groups[0].modules: expected a non-empty"),
        ("seed=99999999999999999999", "seed: expected a non-negative integer (at most 2**63 - 1)"),
    ],
)
def test_recipe_refuses_what_training_cannot_run(override, expected):
    line = one_line_error(cops("recipes", "show", "synthetic-tiny", "--set", override))
    assert line.startswith(f"error: {expected}")


def test_seed_out_of_range_is_one_line(tmp_path):
    result = cops("pretrain", "-r", "synthetic-tiny", "--seed", "99999999999999999999",
                  "--out", str(tmp_path / "run"), "--device", "cpu")  # fmt: skip
    assert one_line_error(result).startswith(
        "error: --seed 99999999999999999999: expected a non-negative integer"
    )
    assert not (tmp_path / "run").exists()


# 4. and 7. One run per run folder; a killed run's lock and temporaries are taken over.

HOLD_LOCK = """
import sys, time
from pathlib import Path
from cops.training.run_lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_second_run_into_a_busy_run_folder_names_the_running_process(tiny_pretrained, tmp_path):
    import signal

    data, _ = tiny_pretrained
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ("pretrain", "-r", "synthetic-tiny", "--data", str(data), "--out", str(out),
                "--device", "cpu", "--set", "train.iterations=1",
                "--set", "train.val_every=0")  # fmt: skip
        line = one_line_error(cops(*args))
        assert str(out) in line and f"pid {holder.pid} on" in line and "another --out" in line
        assert not (out / LAST).exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    stale = out / f".{LAST}.k2j4x9ab.tmp"
    stale.write_bytes(b"\0" * 1000)  # what a save killed halfway leaves
    result = cops(*args)
    assert result.returncode == 0, result.stderr
    assert f"pid {holder.pid}" in result.stderr and "taking over the lock" in result.stderr
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# 1. Predictions never overwrite inputs or files that are not earlier predictions.


@pytest.fixture(scope="module")
def images(tiny_pretrained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two input images (the tiny dataset's validation images)."""
    data, _ = tiny_pretrained
    folder = tmp_path_factory.mktemp("images")
    for source in sorted((data / "images" / "val").iterdir()):
        (folder / source.name).write_bytes(source.read_bytes())
    return folder


def predict(ckpt: Path, inputs: Path, out: Path, *more: str) -> subprocess.CompletedProcess:
    return cops(
        "predict", str(inputs), "-c", str(ckpt), "--out", str(out), "--device", "cpu", *more
    )


def test_predict_refuses_an_out_overlapping_its_input(tiny_pretrained, tmp_path):
    import shutil

    data, ckpt = tiny_pretrained
    dataset = shutil.copytree(data, tmp_path / "syn_d")
    before = tree(dataset)
    line = one_line_error(predict(ckpt, dataset / "images", dataset))
    assert f"--out {dataset}: contains the input folder {dataset / 'images'}" in line
    line = one_line_error(predict(ckpt, dataset / "images", dataset / "images"))
    assert "is the input folder" in line
    line = one_line_error(predict(ckpt, dataset / "images", dataset / "images" / "pred"))
    assert "lies inside the input folder" in line
    one_file = sorted((dataset / "images" / "val").iterdir())[0]
    line = one_line_error(predict(ckpt, one_file, dataset / "images" / "val"))
    assert f"contains the input file {one_file}" in line
    assert tree(dataset) == before


def test_predict_overwrites_only_its_own_earlier_outputs(tiny_pretrained, images, tmp_path):
    _, ckpt = tiny_pretrained
    out = tmp_path / "pred"
    user = out / "panoptic" / "img00.png"  # a user's file where a prediction would go
    user.parent.mkdir(parents=True)
    user.write_bytes(b"user data")
    (images / "img00.png").write_bytes(sorted(images.iterdir())[0].read_bytes())
    try:
        line = one_line_error(predict(ckpt, images, out))
    finally:
        (images / "img00.png").unlink()
    assert line.startswith(f"error: {user}: exists and is not an output of an earlier prediction")
    assert tree(out) == {"panoptic/img00.png": b"user data"}

    fresh = tmp_path / "fresh"
    for more in ((), ("--overlay",), ()):  # re-runs replace their own PNGs and overlays
        result = predict(ckpt, images, fresh, *more)
        assert result.returncode == 0, result.stderr
        assert not (fresh / ".cops-outputs").exists(), "a finished run's JSON lists its files"
    killed = cops_patched(KILL_AFTER_FIRST_PNG, "predict", str(images), "-c", str(ckpt),
                          "--out", str(fresh), "--device", "cpu", "--overlay")  # fmt: skip
    assert killed.returncode == -9 and not (fresh / "panoptic.json").exists()
    assert (fresh / ".cops-outputs").is_file(), "claimed before the first PNG"
    assert predict(ckpt, images, fresh).returncode == 0


KILL_AFTER_FIRST_PNG = """
import os, signal
import cops.inference.outputs as outputs
_write = outputs.write_panoptic_png
def write(path, ids):
    _write(path, ids)
    os.kill(os.getpid(), signal.SIGKILL)
outputs.write_panoptic_png = write
"""
"""Setup code: the process is killed right after its first panoptic PNG."""


# 5. Symbolically linked sub-folders are searched, a link loop once; a symlink loop is named.


def test_predict_follows_linked_folders_and_names_link_loops(tiny_pretrained, images, tmp_path):
    _, ckpt = tiny_pretrained
    inputs = tmp_path / "in"
    (inputs / "real").mkdir(parents=True)
    (inputs / "real" / "a.png").write_bytes(sorted(images.iterdir())[0].read_bytes())
    (inputs / "linked").symlink_to(images, target_is_directory=True)
    (inputs / "real" / "up").symlink_to("..", target_is_directory=True)  # a loop
    (inputs / "loop1.png").symlink_to("loop2.png")
    (inputs / "loop2.png").symlink_to("loop1.png")
    out = tmp_path / "out"
    result = predict(ckpt, inputs, out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{inputs / 'loop1.png'}: symbolic link loop" in result.stderr
    assert "a symbolic link to a folder already searched" in result.stderr
    names = {a["file_name"] for a in json.loads((out / "panoptic.json").read_text())["annotations"]}
    assert names == {"real/a.png", *(f"linked/{p.name}" for p in images.iterdir())}


# 7. A huge image is refused with the size that fits, not predicted until the memory runs out.


def test_huge_image_is_skipped_with_the_size_to_predict_it_at(tiny_pretrained, images, tmp_path):
    import cv2
    import numpy as np

    _, ckpt = tiny_pretrained
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "huge.jpg"), np.full((4000, 6000, 3), 90, np.uint8))
    (inputs / "small.png").write_bytes(sorted(images.iterdir())[0].read_bytes())
    result = predict(ckpt, inputs, tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{inputs / 'huge.jpg'}: 6000×4000 pixels are more than predict takes unasked" in (
        " ".join(result.stderr.split())
    )
    assert "--test-size 2336x3520" in result.stderr.replace("\n", "")
    assert list((tmp_path / "out" / "panoptic").iterdir()) == [tmp_path / "out/panoptic/small.png"]


# 8. Predicting from an ONNX export writes nothing outside --out (onnxruntime's telemetry off).


def test_onnx_predict_writes_nothing_in_the_home_folder(tiny_pretrained, images, tmp_path):
    pytest.importorskip("onnxruntime")
    _, ckpt = tiny_pretrained
    model = tmp_path / "export" / "m.onnx"
    assert cops("export", "-c", str(ckpt), "--format", "onnx", "--out", str(model)).returncode == 0
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in ENV.items() if k not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY")}
    result = subprocess.run(
        [sys.executable, "-m", "cops.cli", "predict", str(images), "--model", str(model),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env={**env, "HOME": str(home)}, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [p for p in home.rglob("*")] == [], "nothing under the home folder"


def test_the_next_checkpoint_save_removes_stale_temporaries(tiny_pretrained, tmp_path):
    from cops.models.checkpoint import Checkpoint
    from cops.training.checkpoint import save_checkpoint

    _, ckpt = tiny_pretrained
    stale = [tmp_path / f".{LAST}.a1b2c3d4.tmp", tmp_path / ".ckpt_0000002.pt.4242.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 100)
    save_checkpoint(Checkpoint.load(ckpt), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]


# 2., 3. and 6. Exports and imports never replace their source or a file that is not theirs;
# every model file has its own metadata, tied to it by a hash.


def export(ckpt: Path, fmt: str, *out: str) -> subprocess.CompletedProcess:
    return cops("export", "-c", str(ckpt), "--format", fmt, *(("--out", *out) if out else ()))


def test_export_never_replaces_its_checkpoint_or_another_file(tiny_pretrained, tmp_path):
    _, ckpt = tiny_pretrained
    named = tmp_path / "model.pt"  # a checkpoint named as the default export
    named.write_bytes(ckpt.read_bytes())
    line = one_line_error(export(named, "torchscript"))
    assert line.startswith(f"error: {named}: is the checkpoint being exported")
    other = tmp_path / "notes.pt"
    other.write_text("mine")
    line = one_line_error(export(ckpt, "torchscript", str(other)))
    assert line.startswith(f"error: {other}: exists and is not an earlier export")
    assert named.read_bytes() == ckpt.read_bytes() and other.read_text() == "mine"
    assert export(ckpt, "torchscript", str(tmp_path / "m.pt")).returncode == 0
    assert export(ckpt, "torchscript", str(tmp_path / "m.pt")).returncode == 0, "replaces itself"


def test_each_export_has_its_own_metadata_tied_by_hash(tiny_pretrained, images, tmp_path):
    pytest.importorskip("onnxruntime")
    _, ckpt = tiny_pretrained
    onnx, script = tmp_path / "m.onnx", tmp_path / "m.pt"
    assert export(ckpt, "onnx", str(onnx)).returncode == 0
    assert export(ckpt, "torchscript", str(script)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.onnx",
        "m.onnx.json",
        "m.pt",
        "m.pt.json",
    ]
    assert "min_input_size" in json.loads((tmp_path / "m.onnx.json").read_text())
    (tmp_path / "m.onnx.json").write_text((tmp_path / "m.pt.json").read_text())  # B's metadata
    line = one_line_error(cops("predict", str(images), "--model", str(onnx),
                               "--out", str(tmp_path / "p")))  # fmt: skip
    assert line.startswith(
        f"error: {tmp_path / 'm.onnx.json'}: describes another model than m.onnx"
    )

    old = tmp_path / "old"  # an export of an earlier version: one m.json for every m.*
    old.mkdir()
    (old / "m.pt").write_bytes(script.read_bytes())
    meta = json.loads((tmp_path / "m.pt.json").read_text())
    del meta["model_sha256"]
    (old / "m.json").write_text(json.dumps(meta))
    line = one_line_error(cops("predict", str(images), "--model", str(old / "m.pt"),
                               "--out", str(tmp_path / "q")))  # fmt: skip
    assert line.startswith(f"error: {old / 'm.json'}: metadata of an older export")
    assert "export again" in line


def test_a_checkpoint_given_as_model_says_to_use_checkpoint(tiny_pretrained, images, tmp_path):
    _, ckpt = tiny_pretrained
    result = cops("predict", str(images), "--model", str(ckpt), "--out", str(tmp_path / "p"))
    line = one_line_error(result)
    assert line == f"error: {ckpt}: a training checkpoint, not an export of `cops export`; " + (
        f"pass it with --checkpoint {ckpt}"
    )


def test_import_checkpoint_refuses_to_replace_its_source(tmp_path):
    import torch

    source = tmp_path / "released.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, source)
    before = source.read_bytes()
    for out in (source, tmp_path / "." / "released.pth"):
        line = one_line_error(cops("import-checkpoint", str(source), "--out", str(out),
                                   "-r", "synthetic-tiny"))  # fmt: skip
        assert line.startswith(f"error: --out {out}: is the file being imported")
    assert source.read_bytes() == before


# Messages: weights that are not finite, files that are not weights-only, folders, pickles.


def _with_nan(ckpt: Path, out: Path) -> tuple[Path, str]:
    from cops.models.checkpoint import Checkpoint

    loaded = Checkpoint.load(ckpt)
    key = next(k for k, v in loaded.weights.items() if v.is_floating_point())
    loaded.weights[key] = loaded.weights[key].contiguous().clone()  # trained channels-last
    loaded.weights[key].view(-1)[0] = float("nan")
    loaded.save(out)
    return out, key


def test_nan_weights_are_one_line_naming_the_tensor(tiny_pretrained, images, tmp_path):
    import torch

    data, ckpt = tiny_pretrained
    nan, key = _with_nan(ckpt, tmp_path / "nan.pt")
    expected = f"error: {nan}: tensor '{key}' holds non-finite values (NaN)"
    assert one_line_error(predict(nan, images, tmp_path / "p")).startswith(expected)
    result = cops("evaluate", "-c", str(nan), "--data", str(data), "--device", "cpu",
                  "--out", str(tmp_path / "e"))  # fmt: skip
    assert one_line_error(result).startswith(expected)
    released = tmp_path / "released.pth"
    torch.save({"model": {"sem_seg_head.w": torch.tensor([1.0, float("inf")])}}, released)
    result = cops("import-checkpoint", str(released), "--out", str(tmp_path / "i.pt"),
                  "-r", "synthetic-tiny")  # fmt: skip
    line = one_line_error(result)
    assert line.startswith(f"error: {released}: tensor 'sem_seg_head.w' holds non-finite values")
    assert not (tmp_path / "i.pt").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned",))


@pytest.mark.parametrize("zipped", [True, False])
def test_pickles_that_run_code_are_refused_in_one_line(tiny_pretrained, tmp_path, zipped):
    import re

    import torch

    data, _ = tiny_pretrained
    evil = tmp_path / "evil.pth"
    torch.save({"model": _Evil()}, evil, _use_new_zipfile_serialization=zipped)
    runs = [
        cops("evaluate", "-c", str(evil), "--data", str(data), "--device", "cpu"),
        cops("pretrain", "-r", "synthetic-tiny", "--data", str(data), "--weights", str(evil),
             "--out", str(tmp_path / "run"), "--device", "cpu"),
        cops("import-checkpoint", str(evil), "--out", str(tmp_path / "i.pt"), "--backbone-only"),
    ]  # fmt: skip
    for result in runs:
        line = one_line_error(result)
        pattern = rf"error: {re.escape(str(evil))}: not a weights-only file \(it contains a " + (
            r"pickled object `(posix|nt|os)\.system`\); refusing to load it"
        )
        assert re.fullmatch(pattern, line), line
        assert "weights_only" not in result.stderr and "mmap" not in result.stderr


def test_files_that_are_not_torch_files_are_named_as_what_they_are(tiny_pretrained, tmp_path):
    import pickle

    import numpy as np

    data, _ = tiny_pretrained
    empty, folder, pkl = tmp_path / "empty.pth", tmp_path / "folder.pth", tmp_path / "r52.pth"
    empty.touch()
    folder.mkdir()
    pkl.write_bytes(pickle.dumps({"conv1_w": np.zeros(3)}))  # a .pkl renamed .pth
    expected = {
        empty: "empty file (0 bytes)",
        folder: "a folder, not a file",
        pkl: "a plain Python pickle (pickle.dump), not a torch file",
    }
    for path, what in expected.items():
        line = one_line_error(cops("import-checkpoint", str(path), "--out",
                                   str(tmp_path / "o.pt"), "--backbone-only"))  # fmt: skip
        assert line.startswith(f"error: {path}: {what}"), line
    line = one_line_error(cops("evaluate", "-c", str(folder), "--data", str(data)))
    assert line == f"error: --checkpoint {folder}: a folder, not a file"


def test_outputs_onto_a_folder_or_into_a_read_only_one_name_the_target(tiny_pretrained, tmp_path):
    _, ckpt = tiny_pretrained
    folder = tmp_path / "adir.pt"
    folder.mkdir()
    line = one_line_error(export(ckpt, "torchscript", str(folder)))
    assert line.startswith(f"error: {folder}") and ".tmp" not in line
    line = one_line_error(cops("import-checkpoint", str(ckpt), "--out", str(folder),
                               "-r", "synthetic-tiny"))  # fmt: skip
    assert line.startswith(f"error: {folder}") and ".tmp" not in line
    target = tmp_path / "readonly" / "m.pt"
    result = cops_patched(READ_ONLY.format(match="readonly"), "export", "-c", str(ckpt),
                          "--format", "torchscript", "--out", str(target))  # fmt: skip
    line = one_line_error(result)
    assert "Permission denied" in line and ".tmp" not in line and "readonly/m.pt" in line


def test_an_empty_validation_split_is_named(tiny_pretrained, tmp_path):
    import shutil

    data, _ = tiny_pretrained
    copy = shutil.copytree(data, tmp_path / "data")
    listing = json.loads((copy / "panoptic_val.json").read_text())
    listing["images"], listing["annotations"] = [], []
    (copy / "panoptic_val.json").write_text(json.dumps(listing))
    result = cops("pretrain", "-r", "synthetic-tiny", "--data", str(copy), "--device", "cpu",
                  "--out", str(tmp_path / "run"), "--set", "train.val_every=1")  # fmt: skip
    line = one_line_error(result)
    assert line.startswith(f"error: {copy / 'panoptic_val.json'}: the 'val' split lists no images")
    assert "train.val_every=0" in line
