"""Training throughput (`cops bench train`): the real engine on random batches of a recipe's crops.

No data loading is timed (batches are made once, on the device), so the figure is the model +
loss + optimizer rate of the engine's actual step (AMP, accumulation, schedule, memory format):
images/s (first step excluded), the network's GFLOP per image for a training forward + backward
and the GFLOP/s achieved (how far from the machine's peak), and, on CUDA, peak memory. For
end-to-end figures with data loading, read ``images_per_s`` in a real run's ``metrics.jsonl``.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from cops.benchmarks.report import BenchResult, environment
from cops.datasets.class_list import ClassList
from cops.device import resolve_device
from cops.models import BackboneInitWarning, PretrainLoss, SemanticBoundaryNet
from cops.recipes.schema import Recipe, load_recipe
from cops.training.distributed import DistInfo
from cops.training.engine import RunContext, Trainer, seed_everything
from cops.training.pretrain import PixelObjective


def _conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: list[bool],
    **kwargs: Any,
) -> int:
    """A convolution's backward: each gradient asked for (input, weight) costs one forward.

    Replaces torch's formula, which counts a grouped convolution's weight gradient `groups`
    times over (the boundary head's grouped convolutions)."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def train_gflop(model: torch.nn.Module, height: int, width: int) -> float:
    """GFLOP per image of one training forward + backward of `model` as it trains (frozen
    parameters get no weight gradient) on H×W crops, counted on the meta device (a multiply-add
    counts 2; convolutions and matrix products only)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(model).to("meta").train()
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:  # two images: train-mode BatchNorm needs more than one value per channel
        out = net(torch.empty(2, 3, height, width, device="meta"))
        sum(value.sum() for value in out.values()).backward()
    return counter.get_total_flops() / 2 / 1e9


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


def run(
    recipe: str = "synthetic",
    batch: int | None = None,
    steps: int = 20,
    classes: int = 19,
    device: str = "auto",
    overrides: Sequence[str] = (),
) -> BenchResult:
    """Train `steps` iterations on random batches; images/s (first step excluded), peak memory."""
    overrides = [*overrides, f"train.iterations={steps + 1}"]
    if batch:
        overrides.append(f"train.batch_size={batch}")
    resolved = load_recipe(recipe, overrides)
    dev = resolve_device(device)
    seed_everything(resolved.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackboneInitWarning)
        model = SemanticBoundaryNet.from_config(resolved.model, classes)
    cfg = resolved.train
    with tempfile.TemporaryDirectory(prefix="cops-bench-") as out:
        names = [f"class{k}" for k in range(classes)]
        table = ClassList(names, list(range(classes)), [False] * classes, [[0, 0, 0]] * classes)
        context = RunContext(Path(out), dev, DistInfo(), resolved.to_dict(), table)
        objective = PixelObjective(PretrainLoss(resolved.loss))
        batches = RandomBatches(resolved, classes, dev)
        trainer = Trainer(model, objective, cfg, batches, None, context)
        result = trainer.fit()
    height, width = resolved.data.crop_size
    gflop = train_gflop(trainer.model, height, width)
    precision = f"AMP {cfg.amp_dtype}" if trainer.amp else "fp32"
    memory = "channels-last" if trainer.channels_last else "contiguous"
    figures: dict[str, Any] = {
        "recipe": recipe,
        "backbone": resolved.model.backbone,
        "crop": [height, width],
        "batch": cfg.batch_size,
        "precision": precision,
        "memory_format": memory,
        "steps": steps,
        "device": str(dev),
        "images_per_s": round(result.images_per_s, 3),
        "gflop_per_image": round(gflop, 2),
        "gflop_per_s": round(gflop * result.images_per_s, 1),
    }
    rows = [
        ["training images/s", f"{result.images_per_s:.2f}"],
        ["GFLOP per image (forward + backward)", f"{gflop:.1f}"],
        ["GFLOP/s achieved", f"{figures['gflop_per_s']:.1f}"],
    ]
    if dev.type == "cuda":
        figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
        rows.append(["peak GPU memory (GiB)", f"{figures['peak_memory_gib']:.2f}"])
    title = (
        f"pretrain step, {resolved.model.backbone}, crop {height}×{width}, batch "
        f"{cfg.batch_size}, {precision}, {memory}, {dev}, {steps} steps"
    )
    return BenchResult("train", title, ["", "value"], rows, figures, environment(dev))
