"""End-to-end prediction benchmark (`cops bench predict`): seconds per image by stage.

Images come from the synthetic street-scene generator at the requested size. Without
``--checkpoint`` the recipe's network is randomly initialised (seeded), which times the CNN
faithfully but gives the solver untrained costs; pass a checkpoint for representative solver
figures. One warm-up call (numba compilation, cuDNN autotuning) is not timed; the table shows the
median over the timed images of each part (CNN, solver, the rest) and of their sum.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from cops.benchmarks.report import BenchResult, environment
from cops.datasets.synthetic import generate_scene
from cops.device import resolve_device
from cops.errors import CopsError
from cops.inference.predictor import Predictor
from cops.inference.released import recipe_classes
from cops.models.checkpoint import Checkpoint, restorable_network
from cops.recipes.schema import Recipe, load_recipe

PARTS = ("cnn", "solver", "rest")


def random_predictor(recipe: Recipe, device: str, backend: str) -> Predictor:
    """A predictor with the recipe's network randomly initialised (seed: the recipe's); the
    classes are the recipe dataset's (COCO's come from its prepared data)."""
    classes = recipe_classes(recipe)
    torch.manual_seed(recipe.seed)
    weights = restorable_network(recipe.model, len(classes)).state_dict()
    ckpt = Checkpoint(weights, recipe.to_dict(), classes, phase="random-init")
    return Predictor.from_checkpoint(ckpt, resolve_device(device), backend)


def run(
    checkpoint: Path | None = None,
    recipe: str = "synthetic",
    height: int = 512,
    width: int = 1024,
    images: int = 5,
    batch: int = 1,
    device: str = "auto",
    backend: str = "auto",
) -> BenchResult:
    """Time `images` predictions after a warm-up; the median of each part and of the total."""
    if min(height, width, images, batch) < 1:
        raise CopsError("height, width, images and batch must be positive")
    if checkpoint is not None:
        predictor = Predictor.from_checkpoint(checkpoint, device, backend)
        model = f"checkpoint {checkpoint}"
    else:
        resolved = load_recipe(recipe)
        predictor = random_predictor(resolved, device, backend)
        model = f"random-init {resolved.model.backbone} ({recipe})"
    if predictor.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def scene(index: int):
        return generate_scene((0, 7, index), height, width)[0]

    predictor.predict([scene(images + j) for j in range(batch)])  # warm-up
    timings = []
    for start in range(0, images, batch):
        chunk = [scene(i) for i in range(start, min(start + batch, images))]
        timings += [p.timings for p in predictor.predict(chunk)]
    medians = {part: statistics.median(t[part] for t in timings) for part in PARTS}
    medians["total"] = statistics.median(sum(t.values()) for t in timings)
    figures = {
        "model": model,
        "height": height,
        "width": width,
        "batch": batch,
        "images": len(timings),
        "device": str(predictor.device),
        "backend": backend,
        "seconds_per_image": {k: round(v, 5) for k, v in medians.items()},
    }
    rows = [[part, f"{value:.4f}"] for part, value in medians.items()]
    title = (
        f"predict, {model}, {height}×{width}, batch {batch}, {predictor.device}, solver "
        f"{backend}: seconds per image (median of {len(timings)})"
    )
    env = environment(predictor.device)
    return BenchResult("predict", title, ["stage", "seconds"], rows, figures, env)
