"""End-to-end prediction benchmark (`cops bench predict`): seconds per image by stage, and how
far the CNN is from the machine.

Images come from the synthetic street-scene generator at the requested size. Without
``--checkpoint`` the recipe's network is randomly initialised (seeded), which times the CNN
faithfully but gives the solver untrained costs; pass a checkpoint for representative solver
figures. One warm-up call (numba compilation, graph optimisation, cuDNN autotuning) is not timed;
the table shows the median over the timed images of each part (CNN, solver, the rest) and of
their sum. Side by side with every timed batch, the same network runs as a plain eager,
contiguous fp32 module on the same input size (the baseline the inference runtime is measured
against), and the CNN's GFLOP per image (torch's flop counter) turn both times into GFLOP/s.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from cops.benchmarks.report import BenchResult, environment
from cops.datasets.synthetic import generate_scene
from cops.device import resolve_device
from cops.errors import CopsError
from cops.inference.predictor import Predictor
from cops.inference.released import recipe_classes
from cops.models.checkpoint import Checkpoint, restorable_network
from cops.models.runtime import cnn_gflop
from cops.recipes.schema import Recipe, load_recipe

PARTS = ("cnn", "solver", "rest")


def random_checkpoint(recipe: Recipe) -> Checkpoint:
    """The recipe's network randomly initialised (seed: the recipe's) as a checkpoint; the
    classes are the recipe dataset's (built in for Cityscapes and COCO)."""
    classes = recipe_classes(recipe)
    torch.manual_seed(recipe.seed)
    weights = restorable_network(recipe.model, len(classes)).state_dict()
    return Checkpoint(weights, recipe.to_dict(), classes, phase="random-init")


def _baseline_seconds(net: torch.nn.Module, batch: torch.Tensor, predictor: Predictor) -> float:
    """Wall seconds of one plain eager forward of `net` on `batch` (synchronised on CUDA)."""
    predictor.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        net(batch)
    predictor.synchronize()
    return time.perf_counter() - start


def run(
    checkpoint: Path | None = None,
    recipe: str = "synthetic",
    height: int = 512,
    width: int = 1024,
    images: int = 5,
    batch: int = 1,
    device: str = "auto",
    backend: str = "auto",
    precision: str | None = None,
    runtime: str | None = None,
) -> BenchResult:
    """Time `images` predictions after a warm-up, each batch beside a plain eager forward of
    the same network; medians per part, GFLOP per image and GFLOP/s of both."""
    if min(height, width, images, batch) < 1:
        raise CopsError("height, width, images and batch must be positive")
    if checkpoint is not None:
        ckpt, model = Checkpoint.load(checkpoint), f"checkpoint {checkpoint}"
    else:
        ckpt = random_checkpoint(load_recipe(recipe))
        model = f"random-init {ckpt.recipe.model.backbone} ({recipe})"
    dev = resolve_device(device)
    predictor = Predictor.from_checkpoint(ckpt, dev, backend, precision=precision, runtime=runtime)
    eager = ckpt.cost_net(dev).eval()
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def scene(index: int):
        return generate_scene((0, 7, index), height, width)[0]

    size = predictor.cnn_size((height, width))
    predictor.predict([scene(images + j) for j in range(batch)])  # warm-up
    _baseline_seconds(eager, torch.randn(batch, 3, *size, device=dev), predictor)
    timings, baseline = [], []
    for start in range(0, images, batch):
        chunk = [scene(i) for i in range(start, min(start + batch, images))]
        timings += [p.timings for p in predictor.predict(chunk)]
        inputs = torch.randn(len(chunk), 3, *size, device=dev)
        baseline += [_baseline_seconds(eager, inputs, predictor) / len(chunk)] * len(chunk)
    medians = {part: statistics.median(t[part] for t in timings) for part in PARTS}
    medians["total"] = statistics.median(sum(t.values()) for t in timings)
    eager_cnn = statistics.median(baseline)
    gflop = cnn_gflop(eager, *size)
    figures = {
        "model": model,
        "height": height,
        "width": width,
        "cnn_input": list(size),
        "batch": batch,
        "images": len(timings),
        "device": str(predictor.device),
        "backend": backend,
        "precision": predictor.runner.precision,
        "runtime": predictor.runner.runtime,
        "seconds_per_image": {k: round(v, 5) for k, v in medians.items()},
        "eager_fp32_cnn_seconds": round(eager_cnn, 5),
        "cnn_speedup": round(eager_cnn / medians["cnn"], 3),
        "gflop_per_image": round(gflop, 2),
        "cnn_gflops": round(gflop / medians["cnn"], 2),
        "eager_fp32_cnn_gflops": round(gflop / eager_cnn, 2),
    }
    rows = [[part, f"{value:.4f}", ""] for part, value in medians.items()]
    rows[0][2] = (
        f"{figures['cnn_gflops']:.1f} GFLOP/s ({figures['runtime']}, {figures['precision']})"
    )
    rows.append(
        ["cnn, plain eager fp32 (baseline)", f"{eager_cnn:.4f}", f"{gflop / eager_cnn:.1f} GFLOP/s"]
    )
    rows.append(["cnn speed-up over the baseline", f"{figures['cnn_speedup']:.2f}×", ""])
    rows.append(["cnn GFLOP per image", f"{gflop:.1f}", f"at {size[0]}×{size[1]}"])
    title = (
        f"predict, {model}, {height}×{width}, batch {batch}, {predictor.device}, solver "
        f"{backend}: seconds per image (median of {len(timings)})"
    )
    env = environment(predictor.device)
    return BenchResult("predict", title, ["stage", "seconds", "rate"], rows, figures, env)
