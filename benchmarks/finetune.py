"""Per-iteration time split of finetune-pq (`cops bench finetune`): CNN, forward solve, matching +
loss, backward solves.

Runs the fine-tuning objective and an optimizer step on real batches of a training split. The
backward pass is split with gradient hooks: the time between the gradient reaching the segment
masks and reaching the costs is the perturbed solves; the rest is the CNN's backward. Reports the
median seconds of each part over the steps after the first.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from cops.benchmarks.report import BenchResult, environment
from cops.datasets.synthetic import prepare_synthetic
from cops.device import resolve_device
from cops.models import BackboneInitWarning
from cops.recipes.schema import Recipe, load_recipe
from cops.training.distributed import DistInfo
from cops.training.finetune import FINETUNE
from cops.training.phase import PhaseSetup, setup_phase


class _Clock:
    """Wall-clock marks set from autograd hooks (synchronising CUDA first)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.marks = device, {}

    def mark(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks[name] = time.perf_counter()

    def hook(self, name: str):
        def record(grad: torch.Tensor) -> torch.Tensor:
            self.mark(name)
            return grad

        return record


def finetune_setup(
    recipe: Recipe, weights: Path | None, device: torch.device, may_generate: bool = True
) -> PhaseSetup:
    """The fine-tuning phase as `cops finetune-pq` starts it on one process (its own setup,
    validation off), from `weights` or randomly initialised, the network on `device` in train mode.

    `may_generate`: the recipe's own synthetic root may be generated (not a user's folder)."""
    if weights is None:  # random init, whatever backbone file the recipe names
        recipe = dataclasses.replace(
            recipe, model=dataclasses.replace(recipe.model, backbone_weights=None)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        setup = setup_phase(
            recipe, FINETUNE, DistInfo(), device,
            weights=weights, may_generate=may_generate, validate=False,
        )  # fmt: skip
    setup.model = setup.model.to(device).train()
    return setup


def _temporary_data(recipe: Recipe, root: Path) -> Recipe:
    """`recipe` reading a small synthetic training split made at its crop size under `root`."""
    height, width = recipe.data.crop_size
    count = max(4, recipe.finetune.batch_size)
    prepare_synthetic(root, num_train=count, height=height, width=width, splits=("train",))
    data = dataclasses.replace(recipe.data, root=str(root), dataset="synthetic")
    return dataclasses.replace(recipe, data=data)


def run(
    recipe: str = "synthetic",
    weights: Path | None = None,
    data: Path | None = None,
    steps: int = 10,
    batch: int | None = None,
    device: str = "auto",
    overrides: Sequence[str] = (),
) -> BenchResult:
    """Median seconds of each part of a fine-tuning iteration over `steps` steps after a warm-up.

    Data: `data` if given; else the recipe's own (the synthetic one is generated if missing); a
    recipe whose data is not prepared here (e.g. Cityscapes on a GPU box) gets a temporary
    synthetic training split at its crop size, which times the same network and solver.
    Without `weights` the network is randomly initialised: right for the CNN, rough for the solver.
    """
    sets = [*overrides, *([f"finetune.batch_size={batch}"] if batch else [])]
    resolved = load_recipe(recipe, sets)
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="cops-bench-ft-") as tmp:
        source = "recipe"
        if data is not None:
            resolved = dataclasses.replace(
                resolved, data=dataclasses.replace(resolved.data, root=str(data))
            )
            source = str(data)
        elif resolved.data.dataset != "synthetic" and not Path(resolved.data.root).is_dir():
            resolved = _temporary_data(resolved, Path(tmp))
            source = "temporary synthetic"
        setup = finetune_setup(resolved, weights, dev, may_generate=data is None)
        parts = _time_steps(setup, dev, steps)
    cfg = setup.recipe
    medians = {name: statistics.median(values) for name, values in parts.items()}
    figures = {
        "recipe": recipe,
        "weights": str(weights) if weights else "random-init",
        "data": source,
        "batch": cfg.train.batch_size,
        "crop": list(cfg.data.crop_size),
        "lambda_samples": cfg.solver.num_samples,
        "device": str(dev),
        "steps": steps,
        "seconds_per_iteration": {k: round(v, 4) for k, v in medians.items()},
    }
    rows = [[name, f"{value:.3f}"] for name, value in medians.items()]
    title = (
        f"finetune-pq seconds per iteration ({cfg.train.batch_size} images "
        f"{cfg.data.crop_size[0]}×{cfg.data.crop_size[1]}, {cfg.solver.num_samples} "
        f"λ samples, {dev}, median of {steps})"
    )
    return BenchResult("finetune", title, ["part", "median s"], rows, figures, environment(dev))


def _time_steps(setup: PhaseSetup, device: torch.device, steps: int) -> dict[str, list[float]]:
    """Run `steps` + 1 iterations (the first is a warm-up) and split each one's seconds."""
    model, objective, stream = setup.model, setup.objective, setup.batches.from_step(0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    clock = _Clock(device)
    parts: dict[str, list[float]] = defaultdict(list)
    forward = model.forward

    def hooked_forward(image: torch.Tensor, costs: bool = False) -> dict[str, torch.Tensor]:
        out = forward(image, costs)
        out["node_costs"].register_hook(clock.hook("costs_grad"))
        return out

    model.forward = hooked_forward
    for step in range(steps + 1):
        _, (batch,) = next(stream)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        optimizer.zero_grad(set_to_none=True)
        clock.mark("start")
        loss, logged = objective(model, batch)
        clock.mark("forward")
        loss.backward()
        clock.mark("backward")
        optimizer.step()
        clock.mark("step")
        if step == 0:
            continue  # warm-up: numba compilation, allocator
        marks = clock.marks
        parts["cnn forward"].append(float(logged["cnn_s"]))
        parts["forward solve"].append(float(logged["solve_s"]))
        parts["matching + loss"].append(float(logged["loss_s"]))
        parts["backward solves (+ loss backward)"].append(marks["costs_grad"] - marks["forward"])
        parts["cnn backward + step"].append(marks["step"] - marks["costs_grad"])
        parts["total"].append(marks["step"] - marks["start"])
    return parts
