"""Training throughput benchmark: the real engine on random in-memory batches of a recipe's crops.

    python -m cops.benchmarks.train --recipe cityscapes-r50 --batch 4 --steps 30 --device cuda

No data loading is timed (batches are made once, on the device), so the figure is the model +
loss + optimizer rate of the engine's actual step (AMP, accumulation, schedule). Prints images/s
(first step excluded) and, on CUDA, peak memory. For end-to-end figures with data loading, read
``images_per_s`` in a real run's ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cops.models import BackboneInitWarning, CopsNet, PretrainLoss
from cops.recipes.schema import Recipe, load_recipe
from cops.training.distributed import DistInfo
from cops.training.engine import RunContext, Trainer, seed_everything
from cops.training.pretrain import PixelObjective


class RandomBatches:
    """A batch stream (like `TrainBatches` of cops.training.loaders) of one random micro-batch."""

    def __init__(self, recipe: Recipe, num_classes: int, device: torch.device) -> None:
        height, width = recipe.data.crop_size
        batch = recipe.train.batch_size // recipe.train.grad_accum
        edges = 2 * len(recipe.model.edge_distances)
        size = (batch, -(-height // 4), -(-width // 4))
        self.micro = {
            "image": torch.randn(batch, 3, height, width, device=device),
            "semantic_s4": torch.randint(0, num_classes, size, device=device),
            "weights_s4": torch.ones(size, device=device),
            "cut_targets": torch.randint(0, 2, (size[0], edges, *size[1:]), device=device).float(),
            "cut_weights": torch.ones((size[0], edges, *size[1:]), device=device),
        }
        self.grad_accum = recipe.train.grad_accum

    def from_step(self, start: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Yield ``(step, micro_batches)`` forever, like the real stream."""
        step = start
        while True:
            yield step, [self.micro] * self.grad_accum
            step += 1


def main(argv: list[str] | None = None) -> None:
    """Parse options, train `--steps` iterations on random batches, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m cops.benchmarks.train", description=__doc__)
    parser.add_argument("--recipe", default="synthetic", help="recipe name or path")
    parser.add_argument("--batch", type=int, help="images per step (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps to time")
    parser.add_argument("--classes", type=int, default=19, help="number of classes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", action="append", default=[], help="recipe override key=value")
    args = parser.parse_args(argv)
    overrides = [*args.set, f"train.iterations={args.steps + 1}", "model.pretrained=false"]
    if args.batch:
        overrides.append(f"train.batch_size={args.batch}")
    recipe = load_recipe(args.recipe, overrides)
    device = torch.device(args.device)
    seed_everything(recipe.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        model = CopsNet.from_config(recipe.model, args.classes)
    cfg = recipe.train
    with tempfile.TemporaryDirectory(prefix="cops-bench-") as out:
        context = RunContext(Path(out), device, DistInfo(), recipe.to_dict(), {"names": []})
        trainer = Trainer(
            model,
            PixelObjective(PretrainLoss(recipe.loss)),
            cfg,
            RandomBatches(recipe, args.classes, device),
            None,
            context,
        )
        result = trainer.fit()
    height, width = recipe.data.crop_size
    amp = f"AMP {cfg.amp_dtype}" if trainer.amp else "fp32"
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    print(
        f"{recipe.model.backbone}, crop {height}x{width}, batch {cfg.batch_size}, {amp}, "
        f"{where}, torch {torch.__version__}"
    )
    print(f"training images/s: {result.images_per_s:.2f} over {args.steps} steps")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"peak GPU memory: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
