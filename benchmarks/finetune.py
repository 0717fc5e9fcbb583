"""Per-iteration time split of finetune-pq: CNN, forward solve, matching + loss, backward solves.

    cops bench finetune --recipe synthetic --weights runs/synthetic/last.pt --steps 10

Runs the fine-tuning objective and an optimizer step on real batches of the recipe's training
split. The backward pass is split with gradient hooks: the time between the gradient reaching the
segment masks and reaching the costs is the perturbed solves; the rest is the CNN's backward.
Prints the median seconds of each part over the steps after the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cops.console import counts_table, print_table
from cops.datasets.prepared import class_metadata
from cops.models import BackboneInitWarning, CopsNet
from cops.models.build import build_model
from cops.recipes.schema import Recipe, load_recipe
from cops.training.distributed import DistInfo
from cops.training.finetune import FINETUNE, PQObjective
from cops.training.loaders import TrainBatches, ensure_dataset, open_datasets


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


@dataclass
class FinetuneSetup:
    """What one fine-tuning step needs outside the engine: network, objective, batch stream."""

    recipe: Recipe  # with the fine-tuning schedule as its train section
    model: CopsNet
    objective: PQObjective
    stream: Iterator[tuple[int, list[dict[str, Any]]]]
    classes: dict[str, list]


def finetune_setup(recipe: Recipe, weights: Path | None, device: torch.device) -> FinetuneSetup:
    """The fine-tuning network (from `weights`, BN frozen, in train mode), objective and batches
    of the recipe's training split, as `cops finetune-pq` would start them on one process."""
    recipe = dataclasses.replace(recipe, train=FINETUNE.schedule(recipe))
    ensure_dataset(recipe)
    train_set, _ = open_datasets(recipe)
    classes = class_metadata(train_set.categories)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        model = build_model(recipe.model, len(classes["names"]), weights)
    model = FINETUNE.prepare(model, recipe).to(device).train()
    stream = TrainBatches(train_set, recipe.train, DistInfo(), recipe.seed).from_step(0)
    return FinetuneSetup(recipe, model, PQObjective(recipe, classes, device), stream, classes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument("--weights", type=Path, default=None, help="pretrain checkpoint")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], help="recipe override")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    setup = finetune_setup(load_recipe(args.recipe, args.set), args.weights, device)
    recipe, model, objective, stream = setup.recipe, setup.model, setup.objective, setup.stream
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    clock = _Clock(device)
    parts: dict[str, list[float]] = defaultdict(list)
    forward = model.forward

    def hooked_forward(image: torch.Tensor, costs: bool = False) -> dict[str, torch.Tensor]:
        out = forward(image, costs)
        out["node_costs"].register_hook(clock.hook("costs_grad"))
        return out

    model.forward = hooked_forward
    for step in range(args.steps + 1):
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
        parts["cnn backward + step"].append(
            marks["backward"] - marks["costs_grad"] + marks["step"] - marks["backward"]
        )
        parts["total"].append(marks["step"] - marks["start"])
    rows = [(name, f"{statistics.median(values):.3f}") for name, values in parts.items()]
    title = (
        f"finetune-pq seconds per iteration ({recipe.train.batch_size} images "
        f"{recipe.data.crop_size[0]}×{recipe.data.crop_size[1]}, {recipe.solver.num_samples} "
        f"λ samples, {args.device})"
    )
    print_table(counts_table(title, ["part", "median s"], rows))


if __name__ == "__main__":
    main()
