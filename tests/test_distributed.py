"""DDP with two real gloo processes on the CPU, launched by `cops pretrain --nproc-per-node 2`.

Reference: one process with the same global batch of 2 split into two accumulation steps of one
image, so every image is normalised by BatchNorm alone in both runs (train-mode batch statistics
of a single image), and gradients are the same mean of two per-image losses. The parameters must
then agree up to float summation order. BN running statistics are not compared: each DDP rank
tracks only its own images and the checkpoint holds rank 0's (DDP broadcasts them before each
forward), whereas the single process sees both. Plain SGD keeps the comparison linear in the
gradients; Adam's first step, g/|g|, would magnify rounding of near-zero gradients.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _training import FAST, checkpoint_dict, metrics, run_pretrain, tiny_dataset
from _workers import fail_on_rank_one, pooled_surrogate_case, pooled_surrogate_on_rank

from cops.errors import CopsError
from cops.models.paper_pq import paper_surrogate
from cops.training.checkpoint import LAST
from cops.training.distributed import launch_local

pytestmark = [
    pytest.mark.slow,  # process groups of spawned workers
    pytest.mark.filterwarnings("ignore::cops.models.BackboneInitWarning"),
]

SETTINGS = [
    "train.iterations=3",
    "train.batch_size=2",
    "train.optimizer=sgd",
    "train.lr=0.02",
    "train.checkpoint_every=3",
    "train.val_every=3",
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_gloo_processes_match_one_process(tmp_path: Path):
    data = tiny_dataset(tmp_path / "data")
    overrides = [arg for item in [*FAST, *SETTINGS] for arg in ("--set", item)]
    ddp = subprocess.run(
        [sys.executable, "-m", "cops.cli", "pretrain", "--recipe", "synthetic-tiny",
         "--data", str(data), "--out", str(tmp_path / "ddp"), "--device", "cpu",
         "--nproc-per-node", "2", *overrides],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    assert "2 process(es)" in ddp.stdout

    (replicas,) = metrics(tmp_path / "ddp", "replicas")
    assert replicas["iteration"] == 3 and len(replicas["digests"]) == 2
    assert replicas["digests"][0] == replicas["digests"][1], "ranks must hold identical weights"

    run_pretrain(data, tmp_path / "single", [*SETTINGS, "train.grad_accum=2"])
    parallel = checkpoint_dict(tmp_path / "ddp" / LAST)
    single = checkpoint_dict(tmp_path / "single" / LAST)
    assert parallel["world_size"] == 2 and single["world_size"] == 1
    compared = 0
    for key, value in single["model"].items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        torch.testing.assert_close(parallel["model"][key], value, rtol=1e-4, atol=1e-5)
        compared += 1
    assert compared > 100
    for a, b in zip(metrics(tmp_path / "ddp"), metrics(tmp_path / "single"), strict=True):
        assert a["iteration"] == b["iteration"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    # Validation at iteration 0 (untouched running statistics): a per-image mean over all ranks.
    val_ddp, val_single = metrics(tmp_path / "ddp", "val"), metrics(tmp_path / "single", "val")
    assert val_ddp[0]["images"] == val_single[0]["images"] == 2
    assert val_ddp[0]["loss"] == pytest.approx(val_single[0]["loss"], rel=1e-5)


def test_launcher_reports_a_worker_error_and_restores_signal_handlers():
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
    before = [signal.getsignal(sig) for sig in handled]
    with pytest.raises(CopsError, match=r"^bad input \(rank 1\)$"):
        launch_local(2, fail_on_rank_one, "bad input")
    assert [signal.getsignal(sig) for sig in handled] == before


@pytest.mark.slow
def test_paper_surrogate_pools_classes_over_all_processes(tmp_path: Path):
    """Two gloo processes with one image each give the one-process loss of both images, and each
    the gradient of that loss w.r.t. its own image's predictions."""
    launch_local(2, pooled_surrogate_on_rank, str(tmp_path))
    pred, channels, weights, min_area = pooled_surrogate_case()
    pred.requires_grad_(True)
    loss = paper_surrogate(pred, channels, weights, min_area).loss
    loss.backward()
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(out["loss"], loss.detach())
        torch.testing.assert_close(out["grad"][0], pred.grad[rank])
    first = dataclasses.replace(
        channels, gt=channels.gt[:1], classes=channels.classes[:1], num_pred=channels.num_pred[:1]
    )
    alone = paper_surrogate(pred[:1].detach(), first, weights[:1], min_area)
    assert abs(float(alone.loss) - float(loss)) > 1e-3  # pooling matters on this batch
