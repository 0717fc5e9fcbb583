"""Careless and unlucky use, round 2 (issue 22): outputs never overwrite inputs, one metadata
file per export, one run per run folder, and the unclear messages made one clear line.

As in test_reliability.py, each test runs the CLI as a user would (a subprocess) where the user
would see the outcome, and checks the message (one ``error:`` line naming the file or key) and
that nothing was lost.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_reliability import ENV, cops, cops_patched, one_line_error

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
