"""``cops.train`` and ``cops.finetune``: the two training phases, as ``cops pretrain`` and
``cops finetune-pq`` run them (same options, same run folder, same files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cops.training.finetune import FINETUNE
from cops.training.phase import Phase
from cops.training.pretrain import PRETRAIN
from cops.training.run import train_phase


def _run(
    phase: Phase,
    recipe: str | None,
    weights: str | Path | None,
    data: str | Path | None,
    out: str | Path | None,
    overrides: Sequence[str] | None,
    device: str,
    nproc: str | int,
    resume: bool,
    seed: int | None,
    reinit_head: bool,
) -> Path:
    def path(value: str | Path | None) -> Path | None:
        return None if value is None else Path(value)

    return train_phase(
        phase,
        recipe=recipe,
        weights=path(weights),
        data=path(data),
        out=path(out),
        overrides=list(overrides or []),
        device=device,
        nproc=str(nproc),
        resume=resume,
        seed=seed,
        reinit_head=reinit_head,
    )


def train(
    recipe: str | None = None,
    *,
    weights: str | Path | None = None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    device: str = "auto",
    nproc: str | int = 1,
    resume: bool = False,
    seed: int | None = None,
    reinit_head: bool = False,
) -> Path:
    """Pretrain (phase 1: per-pixel losses) as ``cops pretrain`` does; returns ``OUT/last.pt``.

    `recipe` is a built-in name or a YAML path (default: synthetic), `overrides` are ``--set``
    strings (``"train.iterations=100"``), `out` the run folder (default ``runs/RECIPE``).
    """
    return _run(
        PRETRAIN, recipe, weights, data, out, overrides, device, nproc, resume, seed, reinit_head
    )


def finetune(
    weights: str | Path | None = None,
    recipe: str | None = None,
    *,
    data: str | Path | None = None,
    out: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    device: str = "auto",
    nproc: str | int = 1,
    resume: bool = False,
    seed: int | None = None,
    reinit_head: bool = False,
) -> Path:
    """Fine-tune on the PQ surrogate through the solver (phase 2) as ``cops finetune-pq`` does,
    from the pretrained checkpoint `weights`; returns ``OUT/last.pt`` (default run folder
    ``runs/RECIPE-ft``)."""
    return _run(
        FINETUNE, recipe, weights, data, out, overrides, device, nproc, resume, seed, reinit_head
    )
