"""`cops bench all`: one command that checks a machine end to end — the solver on a
Cityscapes-size instance (CPU and, on a GPU, the GPU solver), predict at 1024×2048, a training
step and a fine-tuning step of the paper recipe."""

from __future__ import annotations

from collections.abc import Iterator

from cops.benchmarks.report import BenchResult
from cops.device import resolve_device

RECIPE = "cityscapes-r50"


def run_all(device: str = "auto", quick: bool = False) -> Iterator[BenchResult]:
    """Yield each benchmark's result as it finishes; `quick` shrinks the counts, not the sizes.

    The device is checked before anything runs, so ``--device cuda`` without a GPU fails at once.
    """
    from cops.benchmarks import finetune, predict, solver, train

    dev = str(resolve_device(device))
    yield solver.run_check(device=dev, repeats=1 if quick else 3)
    yield predict.run(recipe=RECIPE, height=1024, width=2048, images=2 if quick else 5, device=dev)
    yield train.run(recipe=RECIPE, batch=2 if quick else None, steps=3 if quick else 20, device=dev)
    yield finetune.run(
        recipe=RECIPE, steps=2 if quick else 10, batch=2 if quick else None, device=dev
    )
