"""A training run from the options every training command shares, and its launch.

`--recipe` names the recipe (default: synthetic; on `--resume` the checkpoint's own), `--set`,
`--data` and `--seed` amend it, `--out` is the run folder holding ``last.pt``. `--device` and
`--nproc-per-node` decide where the worker processes run; :func:`train_phase` launches them.
Torch is imported only when a command runs, so `cops --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cops.console import set_activity, state
from cops.device import resolve_device
from cops.errors import CopsError
from cops.files import not_a_file
from cops.recipes.schema import load_recipe, recipe_name, recipe_with_overrides
from cops.training.run_config import RunConfig

if TYPE_CHECKING:
    from cops.recipes.schema import Recipe
    from cops.training.phase import Phase

log = logging.getLogger(__name__)

DEFAULT_RECIPE = "synthetic"

SAME_TENSORS = frozenset(
    f"model.{key}"
    for key in (
        "pretrained",
        "backbone_weights",
        "reinit_stem",
        "output_stride",
        "aspp_pool_size",
        "size_divisibility",
        "sync_bn",
    )
)
"""Model keys that leave the network's tensors as they are: `--resume` may change them. Any
other ``model.*`` change would not fit the checkpoint's weights, so it is refused up front."""


def resolve_nproc(value: str, device: str, under_launcher: bool) -> int:
    """The number of local worker processes from a `--nproc-per-node` value."""
    import torch

    if value == "auto":
        count = torch.cuda.device_count() if device == "cuda" else 1
    else:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise CopsError(f"--nproc-per-node '{value}': expected a positive integer or auto")
    if device == "cuda" and count > torch.cuda.device_count():
        raise CopsError(
            f"--nproc-per-node {count}: only {torch.cuda.device_count()} GPU(s) are visible"
        )
    if under_launcher and count > 1:
        raise CopsError(
            "--nproc-per-node: this process was started by torchrun, which sets the process "
            "count itself; drop the option"
        )
    return 1 if under_launcher else count


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every recipe key whose value differs."""
    old, new = _flatten(before), _flatten(after)
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _check_resume_changes(stored: dict[str, Any], resolved: dict[str, Any], last: Path) -> None:
    """Refuse to resume `last` (recipe `stored`) with another network; warn about other changes."""
    changes = recipe_changes(stored, resolved)
    network = [c for c in changes if c.startswith("model.") and c.split(":")[0] not in SAME_TENSORS]
    if network:
        raise CopsError(
            f"--resume: {last} holds another network than the recipe asks for "
            f"({'; '.join(network)}); drop those --set options, or start a new run from its "
            f"weights with --weights {last} and another --out"
        )
    if changes:
        log.warning("resuming with recipe changes: %s", "; ".join(changes))


def _with_data_and_seed(recipe: Recipe, data: Path | None, seed: int | None) -> tuple[Recipe, bool]:
    """The recipe reading `data` and seeded with `seed` where given, and whether its data root
    is still its own (only then may the synthetic dataset be generated into it)."""
    own_data = data is None or Path(data) == Path(recipe.data.root)
    if data is not None:
        data_cfg = dataclasses.replace(recipe.data, root=str(data))
        recipe = dataclasses.replace(recipe, data=data_cfg)
    if seed is not None:
        recipe = dataclasses.replace(recipe, seed=seed)
    return recipe, own_data


def resolve_run(
    *,
    recipe: str | None,
    data: Path | None,
    out: Path | None,
    overrides: Sequence[str] | None,
    device: str,
    nproc: str,
    resume: bool,
    seed: int | None,
    weights: Path | None,
    under_launcher: bool,
    out_suffix: str = "",
    reinit_head: bool = False,
) -> RunConfig:
    """Turn the shared options into a run: recipe + overrides, run folder, device, processes.

    The run folder defaults to ``runs/RECIPE`` + `out_suffix` (``-ft`` for fine-tuning, so it
    never lands in its pretraining run). A new run refuses a folder that already holds
    ``last.pt``; `--resume` needs one and, without `--recipe`, continues with the checkpoint's
    recipe (with `--set` applied on top).
    """
    from cops.models.checkpoint import Checkpoint
    from cops.training.checkpoint import LAST

    name = recipe_name(recipe) if recipe else DEFAULT_RECIPE
    out = out if out is not None else Path("runs") / f"{name}{out_suffix}"
    if resume and not recipe:
        name = out.name
    last = out / LAST
    if resume:
        if weights is not None:
            raise CopsError(
                "--weights starts a new run from given weights and --resume continues "
                f"{last}; pass only one of them"
            )
        if not last.is_file():
            raise CopsError(f"--resume: no checkpoint to continue at {last}")
        stored = Checkpoint.load(last, mmap=True).recipe_dict
        if recipe:
            resolved = load_recipe(recipe, overrides or [])
        else:
            resolved = recipe_with_overrides(stored, overrides or [])
    else:
        if last.exists():
            iteration = Checkpoint.load(last, mmap=True).iteration
            raise CopsError(
                f"{out} already holds a run (last.pt at iteration {iteration}); add --resume to "
                "continue it, or choose another --out"
            )
        resolved = load_recipe(recipe or DEFAULT_RECIPE, overrides or [])
    resolved, own_data = _with_data_and_seed(resolved, data, seed)
    if resume:
        _check_resume_changes(stored, resolved.to_dict(), last)
    if weights is not None and not weights.is_file():
        from cops.models.torchvision_weights import is_torchvision_name

        if not is_torchvision_name(weights):
            raise CopsError(f"--weights {weights}: {not_a_file(weights)}")
    if reinit_head and weights is None:
        raise CopsError(
            "--reinit-head: it applies to the layers loaded with --weights; add --weights"
        )
    device_type = resolve_device(device).type
    return RunConfig(
        recipe=resolved,
        name=name,
        out=out,
        device=device_type,
        nproc=resolve_nproc(nproc, device_type, under_launcher),
        resume=resume,
        weights=weights,
        reinit_head=reinit_head,
        own_data=own_data,
        verbose=state.verbose,
        quiet=state.quiet,
    )


def train_phase(phase: Phase, **options: Any) -> Path:
    """Resolve the shared options (see :func:`resolve_run`) and train `phase`; returns the run's
    ``last.pt``.

    Runs here (one process, or one of torchrun's) or in `nproc` local processes; local workers
    are spawned only after the synthetic data exists, so they never race to make it.
    """
    from cops.datasets.recipe_data import ensure_dataset
    from cops.training.checkpoint import LAST
    from cops.training.distributed import launch_local, under_launcher
    from cops.training.phase import phase_worker
    from cops.training.run_lock import run_lock

    if phase.start_hint and options.get("weights") is None and not options.get("resume"):
        raise CopsError(f"--weights: {phase.start_hint}")
    launched = under_launcher()
    run = resolve_run(**options, under_launcher=launched, out_suffix=phase.out_suffix)
    set_activity(
        f"{phase.name} run {run.out}",
        "to continue from its last checkpoint, run the same command with --resume",
    )
    worker = partial(phase_worker, phase=phase)
    with run_lock(run.out):
        if launched or run.nproc == 1:
            worker(run)
            return run.out / LAST
        ensure_dataset(run.recipe, may_generate=run.own_data)
        launch_local(run.nproc, worker, run, verbose=run.verbose)
    return run.out / LAST
