"""`cops finetune-pq`: cost scalars learn, BN stays frozen, losses stay finite, resume is exact."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _training import checkpoint_dict, metrics, run_phase

from cops.errors import CopsError
from cops.training.checkpoint import LAST
from cops.training.engine import Trainer
from cops.training.finetune import FINETUNE

pytestmark = pytest.mark.slow  # fine-tuning runs through the solver, from a pretraining

FT = [
    "finetune.batch_size=2",
    "finetune.warmup_iters=1",
    "finetune.lr=1e-2",
    "solver.num_samples=2",
]


def test_finetune_learns_cost_scalars_with_frozen_bn(tiny_pretrained: tuple[Path, Path], tmp_path):
    data, weights = tiny_pretrained
    out = tmp_path / "ft"
    run_phase(FINETUNE, data, out, [*FT, "finetune.iterations=3"], weights=weights)
    pre, ft = checkpoint_dict(weights), checkpoint_dict(out / LAST)
    assert ft["phase"] == "finetune-pq" and ft["iteration"] == 3
    changed = [k for k in ("costs.a", "costs.b", "costs.alpha", "costs.beta")
               if not torch.equal(pre["model"][k], ft["model"][k])]  # fmt: skip
    assert changed, "no cost scalar moved"
    bn = next(k for k in pre["model"] if k.endswith("running_mean"))
    assert torch.equal(pre["model"][bn], ft["model"][bn])  # frozen statistics
    rows = metrics(out)
    assert len(rows) == 3
    for row in rows:
        assert math.isfinite(row["loss"]) and math.isfinite(row["pq_loss"])
        assert 0.0 <= row["soft_pq"] <= 1.0 and 0.0 <= row["pq"] <= 1.0
        assert row["solve_s"] > 0 and row["cnn_s"] > 0


def test_finetune_with_the_paper_backward_moves_the_costs(tiny_pretrained, tmp_path: Path):
    """The paper's chain (surrogate with unmatched ground-truth channels, backward against the
    forward solution, λ shared by the batch) trains end to end: finite losses, costs move."""
    data, weights = tiny_pretrained
    paper = [
        "solver.backward=paper", "solver.lambda_per=batch", "finetune.surrogate=paper",
        "finetune.weights=binary", "finetune.min_thing_nodes=3", "finetune.iterations=2",
    ]  # fmt: skip
    run_phase(FINETUNE, data, tmp_path / "ft", [*FT, *paper], weights=weights)
    pre, ft = checkpoint_dict(weights), checkpoint_dict(tmp_path / "ft" / LAST)
    assert not torch.equal(pre["model"]["costs.a"], ft["model"]["costs.a"])
    for row in metrics(tmp_path / "ft"):
        assert math.isfinite(row["loss"]) and 0.0 <= row["soft_pq"] <= 1.0


def test_finetune_resume_ends_bit_identical(
    tiny_pretrained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data, weights = tiny_pretrained
    settings = [*FT, "finetune.iterations=4", "train.checkpoint_every=2"]
    run_phase(FINETUNE, data, tmp_path / "straight", settings, weights=weights)
    original = Trainer._train_step
    calls = {"n": 0}

    def interrupted(self, micro_batches):
        calls["n"] += 1
        if calls["n"] == 4:  # stop during iteration 4, after the checkpoint of iteration 2
            raise KeyboardInterrupt
        return original(self, micro_batches)

    monkeypatch.setattr(Trainer, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_phase(FINETUNE, data, tmp_path / "resumed", settings, weights=weights)
    monkeypatch.undo()
    assert checkpoint_dict(tmp_path / "resumed" / LAST)["iteration"] == 2
    run_phase(FINETUNE, data, tmp_path / "resumed", settings, recipe=None, resume=True)
    straight = checkpoint_dict(tmp_path / "straight" / LAST)
    resumed = checkpoint_dict(tmp_path / "resumed" / LAST)
    assert straight["iteration"] == resumed["iteration"] == 4
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


def test_finetune_in_channels_last_gives_the_same_losses(tiny_pretrained, tmp_path: Path):
    """train.channels_last reaches fine-tuning: the cost maps and the solver take channels-last
    outputs, and the first step's loss and PQ agree to float rounding (later steps drift apart
    as in pretraining: float32 gradients through train-mode BatchNorm, lr 1e-2)."""
    data, weights = tiny_pretrained
    rows = {}
    for setting in ("false", "true"):
        out = tmp_path / setting
        settings = [*FT, "finetune.iterations=1", f"train.channels_last={setting}"]
        run_phase(FINETUNE, data, out, settings, weights=weights)
        rows[setting] = metrics(out)
    (plain,), (last,) = rows["false"], rows["true"]
    assert last["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert last["pq"] == pytest.approx(plain["pq"], abs=1e-6)


def test_pretrain_checkpoint_cannot_be_resumed_by_finetune(tiny_pretrained, tmp_path: Path):
    data, weights = tiny_pretrained
    out = tmp_path / "pre"
    out.mkdir()
    (out / LAST).write_bytes(weights.read_bytes())
    with pytest.raises(CopsError, match="cannot be resumed by finetune-pq"):
        run_phase(FINETUNE, data, out, FT, recipe=None, resume=True)


def test_cli_needs_weights_and_defaults_to_a_separate_run_folder(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "cops.cli", "finetune-pq", "--recipe", "synthetic-tiny"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--weights" in out.stderr and "pretrain" in out.stderr
    help_out = subprocess.run(
        [sys.executable, "-m", "cops.cli", "finetune-pq", "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "runs/RECIPE-ft" in help_out.stdout
