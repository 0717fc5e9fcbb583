"""`cops pretrain` through the engine: learning, exact resume, non-finite loss, weights, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _training import checkpoint_dict, metrics, run_pretrain, tiny_dataset

from cops.errors import CopsError, RecipeError
from cops.models import PretrainLoss
from cops.models.backbone import ResNetBackbone
from cops.training.checkpoint import LAST
from cops.training.distributed import DistInfo
from cops.training.engine import NonFiniteLossError, Trainer, use_channels_last
from cops.training.loaders import RankBatchSampler
from cops.training.pretrain import PixelObjective
from cops.training.schedule import warmup_poly_factor

pytestmark = pytest.mark.filterwarnings("ignore::cops.models.BackboneInitWarning")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("synthetic-tiny"))


def test_warmup_then_poly_schedule():
    factors = [warmup_poly_factor(t, total=10, warmup=4, power=1.0) for t in range(10)]
    assert factors[:4] == pytest.approx([0.25, 0.5 * 0.9, 0.75 * 0.8, 0.7])
    assert factors[4:] == pytest.approx([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert warmup_poly_factor(0, total=10, warmup=0, power=0.9) == 1.0


def test_ranks_and_micro_batches_partition_the_global_batch():
    def steps(world: int, micro: int) -> list[list[int]]:
        per_rank = [
            list(RankBatchSampler(12, 4, micro, DistInfo(rank, world), seed=3, epoch=1))
            for rank in range(world)
        ]
        # step t of the global stream = every rank's micro-batches of step t, in rank order
        chunks = 4 // world // micro
        return [
            [i for batches in per_rank for c in range(chunks) for i in batches[t * chunks + c]]
            for t in range(3)
        ]

    single = steps(1, 4)
    assert sorted(i for step in single for i in step) == list(range(12))
    assert steps(2, 2) == single and steps(2, 1) == single and steps(1, 1) == single
    resumed = list(RankBatchSampler(12, 4, 4, DistInfo(), seed=3, epoch=1, start=2))
    assert resumed == [single[2]]


@pytest.mark.slow
def test_loss_decreases_on_a_tiny_overfit_run(data: Path, tmp_path: Path):
    run_pretrain(
        data, tmp_path / "run", ["train.iterations=16", "train.lr=2e-3", "data.flip=false"]
    )
    losses = [e["loss"] for e in metrics(tmp_path / "run")]
    assert len(losses) == 16
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.6 * first, losses
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0


@pytest.mark.slow
def test_resume_ends_bit_identical(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    settings = ["train.iterations=6", "train.checkpoint_every=3", "train.val_every=3"]
    run_pretrain(data, tmp_path / "straight", settings)

    original = Trainer._train_step
    calls = {"n": 0}

    def interrupted(self, micro_batches):
        calls["n"] += 1
        if calls["n"] == 5:  # Ctrl-C during iteration 5, after the checkpoint of iteration 3
            raise KeyboardInterrupt
        return original(self, micro_batches)

    monkeypatch.setattr(Trainer, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(data, tmp_path / "resumed", settings)
    monkeypatch.undo()
    assert checkpoint_dict(tmp_path / "resumed" / LAST)["iteration"] == 3
    run_pretrain(data, tmp_path / "resumed", settings, recipe=None, resume=True)

    straight = checkpoint_dict(tmp_path / "straight" / LAST)
    resumed = checkpoint_dict(tmp_path / "resumed" / LAST)
    assert resumed["iteration"] == straight["iteration"] == 6
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for index, state in straight["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, resumed["optimizer"]["state"][index][name]), (index, name)
    assert straight["scheduler"] == resumed["scheduler"]
    for kind in ("train", "val"):
        a, b = metrics(tmp_path / "straight", kind), metrics(tmp_path / "resumed", kind)
        assert [e["iteration"] for e in a] == [e["iteration"] for e in b]
        assert [e["loss"] for e in a] == [e["loss"] for e in b]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    original = PretrainLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        loss, parts = original(self, *args)
        return (loss * float("nan"), parts) if calls["n"] == 3 else (loss, parts)

    monkeypatch.setattr(PretrainLoss, "forward", poisoned)
    out = tmp_path / "run"
    message = r"non-finite loss at iteration 3 \(loss nan"
    with pytest.raises(NonFiniteLossError, match=message) as exc:
        run_pretrain(data, out, ["train.iterations=5", "train.checkpoint_every=2"])
    assert f"{out / LAST} keeps the last good state (iteration 2)" in str(exc.value)
    kept = checkpoint_dict(out / LAST)
    assert kept["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_weights_option_initialises_from_a_file(data: Path, tmp_path: Path):
    """One step at a 1e-9 learning rate leaves the weights within 1e-6 of where they started."""
    torch.manual_seed(7)
    backbone = ResNetBackbone("resnet18").state_dict()  # an ImageNet backbone file's layout
    torch.save(backbone, tmp_path / "resnet18.pth")
    tiny_step = ["train.iterations=1", "train.lr=1e-9"]
    run_pretrain(data, tmp_path / "a", tiny_step, weights=tmp_path / "resnet18.pth")
    first = checkpoint_dict(tmp_path / "a" / LAST)["model"]
    key = "layer3.0.conv1.weight"
    assert (first[f"backbone.{key}"] - backbone[key]).abs().max() < 1e-6
    run_pretrain(data, tmp_path / "b", tiny_step, weights=tmp_path / "a" / LAST)
    second = checkpoint_dict(tmp_path / "b" / LAST)["model"]
    for key in ("backbone.stem.conv1.weight", "semantic_head.classifier.weight"):
        assert (second[key] - first[key]).abs().max() < 1e-6, key


def test_run_folder_rules(data: Path, tmp_path: Path):
    out = tmp_path / "run"
    with pytest.raises(CopsError, match="--resume: no checkpoint to continue"):
        run_pretrain(data, out, [], resume=True)
    run_pretrain(data, out, ["train.iterations=1"])
    with pytest.raises(CopsError, match="already holds a run .* iteration 1.*--resume"):
        run_pretrain(data, out, ["train.iterations=1"])
    with pytest.raises(CopsError, match="pass only one"):
        run_pretrain(data, out, [], resume=True, weights=out / LAST)
    with pytest.raises(RecipeError, match="cannot be split evenly"):
        run_pretrain(data, tmp_path / "odd", ["train.batch_size=3", "train.grad_accum=2"])
    with pytest.raises(CopsError, match="--nproc-per-node 'two'"):
        run_pretrain(data, tmp_path / "x", [], nproc="two")


def _layout(tensor: torch.Tensor) -> str:
    if tensor.is_contiguous():
        return "contiguous"
    return "channels-last" if tensor.is_contiguous(memory_format=torch.channels_last) else "other"


def test_channels_last_trains_to_the_same_losses(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """train.channels_last changes memory layouts only: the same losses to float rounding.

    Train-mode BatchNorm sums in another order per layout; in float32 that moves the gradients of
    this random network by up to ~10 % in a few weights (float64: 1e-11), so the check stops
    after the second loss and uses SGD (Adam's first steps are ±lr whatever the gradient's size).
    """
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_channels_last("auto", cpu) and not use_channels_last(False, cuda)
    assert use_channels_last("auto", cuda) and use_channels_last(True, cpu)
    original, seen = PixelObjective.__call__, []

    def spy(self, model, batch):
        stem = next(p for p in model.parameters() if p.dim() == 4)  # a 7×7 or 3×3 kernel
        seen.append((_layout(batch["image"]), _layout(stem)))
        return original(self, model, batch)

    monkeypatch.setattr(PixelObjective, "__call__", spy)
    runs = {}
    for setting in ("false", "true"):
        out = tmp_path / setting
        settings = ["train.iterations=2", "train.optimizer=sgd", f"train.channels_last={setting}"]
        run_pretrain(data, out, settings)
        runs[setting] = metrics(out)
    assert seen == [("contiguous", "contiguous")] * 2 + [("channels-last", "channels-last")] * 2
    plain, last = runs["false"], runs["true"]
    assert last[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-6)
    assert last[1]["loss"] == pytest.approx(plain[1]["loss"], rel=1e-4)
    assert last[1]["loss"] != pytest.approx(plain[0]["loss"], rel=1e-3)  # the update took effect


@pytest.mark.slow
def test_cli_prepares_trains_and_writes_run_files(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "cops.cli"]
    data, out = tmp_path / "data", tmp_path / "run"
    prepared = subprocess.run(
        [*cli, "-q", "prepare-data", "synthetic", "--preset", "tiny", "--out", str(data),
         "--num-train", "4", "--num-val", "2"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    trained = subprocess.run(
        [*cli, "pretrain", "--recipe", "synthetic-tiny", "--data", str(data), "--out", str(out),
         "--device", "cpu", "--set", "train.iterations=4", "--set", "train.val_every=2",
         "--set", "train.log_every=2", "--set", "data.num_workers=0"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "cops pretrain: synthetic-tiny" in trained.stdout
    assert {p.name for p in out.iterdir()} >= {LAST, "metrics.jsonl", "recipe.yaml", "loss.png"}
    ckpt = torch.load(out / LAST, weights_only=True)
    assert ckpt["iteration"] == 4 and ckpt["phase"] == "pretrain"
    assert ckpt["recipe"]["train"]["iterations"] == 4
    assert ckpt["recipe"]["data"]["root"] == str(data)
    classes = ckpt["classes"]
    assert "car" in classes["names"] and len(classes["colors"]) == len(classes["isthing"])
    assert [e["iteration"] for e in metrics(out, "val")] == [0, 2, 4]
