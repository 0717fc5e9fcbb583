"""End-to-end prediction benchmark: seconds per image split into CNN, solver and the rest.

    python -m cops.benchmarks.predict --recipe synthetic --height 512 --width 1024 --images 5

Images come from the synthetic street-scene generator at the requested size. Without
``--checkpoint`` the recipe's network is randomly initialised (seeded), which times the CNN
faithfully but gives the solver untrained costs; pass a checkpoint for representative solver
figures. One warm-up call (numba compilation, cuDNN autotuning) is not timed; the table shows the
median over ``--images`` images of each part and of their sum.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence

import torch

from cops.console import counts_table, print_table
from cops.datasets.conversion import Category
from cops.datasets.synthetic import SYNTHETIC_CATEGORIES, generate_scene
from cops.device import resolve_device
from cops.errors import CopsError
from cops.inference.metadata import model_metadata
from cops.inference.predictor import Predictor
from cops.models import CostNet
from cops.models.build import build_model
from cops.recipes.schema import Recipe, load_recipe

PARTS = ("cnn", "solver", "rest")


def _categories(recipe: Recipe) -> Sequence[Category]:
    """The fixed class list of the recipe's dataset (a random-init model needs one)."""
    if recipe.data.dataset == "synthetic":
        return SYNTHETIC_CATEGORIES
    if recipe.data.dataset == "cityscapes":
        from cops.datasets.cityscapes import CATEGORIES

        return CATEGORIES
    raise CopsError(
        f"a {recipe.data.dataset} model's classes come from its data: pass --checkpoint"
    )


def random_predictor(recipe: Recipe, device: str, backend: str) -> Predictor:
    """A predictor with the recipe's network randomly initialised (seed: the recipe's)."""
    categories = _categories(recipe)
    classes = {
        "names": [c.name for c in categories],
        "category_ids": [c.id for c in categories],
        "isthing": [c.isthing for c in categories],
        "colors": [list(c.color) for c in categories],
    }
    torch.manual_seed(recipe.seed)
    net = build_model(recipe.model, len(categories), None, restoring=True)
    dev = resolve_device(device)
    source = {"checkpoint": "", "iteration": 0, "phase": "random-init"}
    metadata = model_metadata(recipe, classes, net.costs.scalars(), source)
    return Predictor(CostNet(net).eval().to(dev), metadata, device=dev, backend=backend)


def main(argv: list[str] | None = None) -> None:
    """Parse options, time `--images` predictions after a warm-up, print the table."""
    parser = argparse.ArgumentParser(prog="python -m cops.benchmarks.predict", description=__doc__)
    parser.add_argument("--checkpoint", help="a COPS checkpoint (default: random-init model)")
    parser.add_argument("--recipe", default="synthetic", help="recipe of the random-init model")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--images", type=int, default=5, help="images to time (after a warm-up)")
    parser.add_argument("--batch", type=int, default=1, help="images per predict call")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N]")
    parser.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    if min(args.height, args.width, args.images, args.batch) < 1:
        parser.error("--height, --width, --images and --batch must be positive")

    if args.checkpoint:
        predictor = Predictor.from_checkpoint(args.checkpoint, args.device, args.backend)
        model = f"checkpoint {args.checkpoint}"
    else:
        recipe = load_recipe(args.recipe)
        predictor = random_predictor(recipe, args.device, args.backend)
        model = f"random-init {recipe.model.backbone} ({args.recipe})"
    if predictor.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def scene(index: int):
        return generate_scene((0, 7, index), args.height, args.width)[0]

    predictor.predict([scene(args.images + j) for j in range(args.batch)])  # warm-up
    timings = []
    for start in range(0, args.images, args.batch):
        images = [scene(i) for i in range(start, min(start + args.batch, args.images))]
        timings += [p.timings for p in predictor.predict(images)]

    rows = [(part, f"{statistics.median(t[part] for t in timings):.4f}") for part in PARTS]
    rows.append(("total", f"{statistics.median(sum(t.values()) for t in timings):.4f}"))
    if predictor.device.type == "cuda":
        where = torch.cuda.get_device_name(predictor.device)
    else:
        where = f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    print(
        f"{model}, {args.height}x{args.width}, batch {args.batch}, device {predictor.device}, "
        f"solver backend {args.backend}, {where}, torch {torch.__version__}"
    )
    title = f"seconds per image (median of {len(timings)})"
    print_table(counts_table(title, ["stage", "seconds"], rows))


if __name__ == "__main__":
    main()
