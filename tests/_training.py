"""Helpers shared by the training tests: a tiny dataset and in-process training runs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cops.datasets.class_tables import builtin_categories, category_info
from cops.datasets.synthetic import prepare_synthetic
from cops.models.checkpoint import Checkpoint
from cops.recipes.schema import Recipe
from cops.training.checkpoint import save_checkpoint
from cops.training.phase import Phase, phase_worker
from cops.training.pretrain import PRETRAIN
from cops.training.run import resolve_run

FAST = ["data.num_workers=0", "train.log_every=1", "train.val_every=0", "train.warmup_iters=2"]
"""Overrides that keep the synthetic-tiny recipe quick and fully logged."""


def tiny_dataset(root: Path) -> Path:
    """Four training and two validation images of the tiny synthetic preset."""
    prepare_synthetic(root, preset="tiny", num_train=4, num_val=2)
    return root


def run_phase(phase: Phase, data: Path, out: Path, overrides: list[str], **options) -> None:
    """Resolve the shared options as the CLI does (FAST first) and train in this process."""
    settings = dict(recipe="synthetic-tiny", device="cpu", nproc="1", resume=False, seed=None)
    settings.update(options)
    run = resolve_run(
        data=data,
        out=out,
        overrides=[*FAST, *overrides],
        weights=settings.pop("weights", None),
        under_launcher=False,
        **settings,
    )
    phase_worker(run, phase)


def run_pretrain(data: Path, out: Path, overrides: list[str], **options) -> None:
    """`cops pretrain` in this process (see :func:`run_phase`)."""
    run_phase(PRETRAIN, data, out, overrides, **options)


def metrics(out: Path, kind: str = "train") -> list[dict]:
    """The entries of one kind (train, val, replicas) in a run's metrics.jsonl."""
    entries = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [e for e in entries if e["kind"] == kind]


def save_net(
    net: torch.nn.Module, recipe: Recipe, folder: Path, iteration: int, phase: str
) -> Path:
    """Save `net` (of the synthetic classes) as a COPS checkpoint, as training would."""
    classes = category_info(builtin_categories("synthetic")).classes
    ckpt = Checkpoint(net.state_dict(), recipe.to_dict(), classes, iteration, phase)
    return save_checkpoint(ckpt, folder)


def checkpoint_dict(path: Path) -> dict:
    """A checkpoint file's dict (weights under ``model``), read through :class:`Checkpoint`."""
    return Checkpoint.load(path).to_dict()
