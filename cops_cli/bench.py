"""`cops bench`: measure the pipeline's parts on this machine (solver, predict, train, finetune,
eval, data, or all of them), print a table each and optionally write the figures as JSON.

Wiring only: each subcommand calls one function of :mod:`cops.benchmarks` and reports it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cops.cli.options import (
    BackendOpt,
    CheckpointOpt,
    InferDeviceOpt,
    PrecisionOpt,
    RuntimeOpt,
    SetOpt,
    check_backend,
    check_precision,
    check_runtime,
    parse_size,
)
from cops.console import console, print_table, state
from cops.errors import CopsError

if TYPE_CHECKING:
    from cops.benchmarks.report import BenchResult

app = typer.Typer(
    help=(
        "Benchmarks: measure the solver, prediction, training, fine-tuning, PQ evaluation and "
        "data generation on this machine. Each prints a table; --json PATH writes the figures."
    ),
    no_args_is_help=True,
)

JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
]
RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="Recipe name or YAML path.")]
ImagesOpt = Annotated[int, typer.Option("--images", min=1, help="Images to time.")]
HeightOpt = Annotated[int, typer.Option("--height", min=16, help="Image height in pixels.")]
WidthOpt = Annotated[int, typer.Option("--width", min=16, help="Image width in pixels.")]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Timed steps (after a warm-up).")]
RepeatsOpt = Annotated[int, typer.Option("--repeats", min=1, help="Timed runs after a warm-up.")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", "-j", min=1, help="Processes (default: all CPUs).")
]

FamilyOpt = Annotated[str, typer.Option("--family", help="Instance families: street, noisy.")]
GridSizesOpt = Annotated[
    str, typer.Option("--sizes", help="Stride-4 grid sizes HxW, comma-separated.")
]
BackendsOpt = Annotated[
    str | None,
    typer.Option("--backends", help="cpu, cuda or both (default: cpu, and cuda if present)."),
]
SigmasOpt = Annotated[str, typer.Option("--sigmas", help="Noise levels σ of the noisy family.")]
EffortsOpt = Annotated[
    str, typer.Option("--efforts", help="Local-search efforts to time: off, fast, full.")
]


def _report(measure: Callable[[], Iterable[BenchResult]], json_path: Path | None) -> None:
    """Run `measure`, printing each result's table as it comes; then write them all to
    `json_path` when given, a path checked writable before `measure` starts."""
    from cops.benchmarks.report import ResultsFile

    target = ResultsFile(json_path) if json_path is not None else None
    done = []
    for result in measure():
        print_table(result.table())
        done.append(result)
    if target is not None:
        target.write(done)
        if not state.quiet:
            console.print(f"Wrote {json_path}")


def _sizes(value: str) -> list[tuple[int, int]]:
    """``"64x128,256x512"`` → ``[(64, 128), (256, 512)]``."""
    return [parse_size(part, "--sizes") for part in value.split(",") if part.strip()]


def _choices(value: str, option: str, allowed: tuple[str, ...]) -> list[str]:
    """A comma-separated list of names, each one of `allowed`."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise CopsError(
            f"{option} '{value}': expected a comma-separated list of {', '.join(allowed)}"
        )
    return names


@app.command("solver")
def solver(
    family: FamilyOpt = "street,noisy",
    sizes: GridSizesOpt = "64x128,128x256,256x512",
    backends: BackendsOpt = None,
    sigmas: SigmasOpt = "0.5,1.0,1.5",
    efforts: EffortsOpt = "off,fast,full",
    repeats: RepeatsOpt = 5,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Instance seed.")] = 0,
    gap: Annotated[
        int,
        typer.Option(
            "--gap",
            min=0,
            help="Instead: the gap to the exact optimum on N random tiny instances.",
        ),
    ] = 0,
    json: JsonOpt = None,
) -> None:
    """AMWC solver seconds and objective per local-search effort (greedy only, fast, full)."""
    from cops.benchmarks import solver as bench

    try:
        noise = [float(s) for s in sigmas.split(",") if s.strip()]
    except ValueError as exc:
        raise CopsError(f"--sigmas '{sigmas}': expected comma-separated numbers") from exc
    families = _choices(family, "--family", bench.FAMILIES)
    grids = _sizes(sizes)
    devices = _choices(backends, "--backends", ("cpu", "cuda")) if backends else None
    chosen = _choices(efforts, "--efforts", bench.EFFORTS)
    _report(
        lambda: [
            bench.run(families, grids, devices, repeats, seed, noise, chosen, gap_instances=gap)
        ],
        json,
    )


@app.command("predict")
def predict(
    checkpoint: CheckpointOpt = None,
    recipe: RecipeOpt = "synthetic",
    height: HeightOpt = 512,
    width: WidthOpt = 1024,
    images: ImagesOpt = 5,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Images per predict call.")] = 1,
    device: InferDeviceOpt = "auto",
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    runtime: RuntimeOpt = None,
    json: JsonOpt = None,
) -> None:
    """Seconds per image of `cops predict` (CNN, solver, the rest) on synthetic images, the
    CNN's GFLOP and GFLOP/s, and a plain eager fp32 forward of the same network beside it.

    Without --checkpoint the recipe's network is randomly initialised: faithful for the CNN,
    untrained costs for the solver.
    """
    from cops.benchmarks.predict import run

    backend, precision = check_backend(backend), check_precision(precision)
    runtime = check_runtime(runtime)
    args = (checkpoint, recipe, height, width, images, batch, device, backend, precision, runtime)
    _report(lambda: [run(*args)], json)


@app.command("train")
def train(
    recipe: RecipeOpt = "synthetic",
    batch: Annotated[
        int | None, typer.Option("--batch", min=1, help="Images per step (default: the recipe's).")
    ] = None,
    steps: StepsOpt = 20,
    classes: Annotated[int, typer.Option("--classes", min=1, help="Number of classes.")] = 19,
    device: InferDeviceOpt = "auto",
    set_: SetOpt = None,
    json: JsonOpt = None,
) -> None:
    """Pretraining images/s of the real engine on random batches of the recipe's crop size."""
    from cops.benchmarks.train import run

    _report(lambda: [run(recipe, batch, steps, classes, device, set_ or [])], json)


@app.command("finetune")
def finetune(
    recipe: RecipeOpt = "synthetic",
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="A pretrain checkpoint (default: random initialisation)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Prepared dataset folder (default: the recipe's data)."),
    ] = None,
    steps: StepsOpt = 10,
    batch: Annotated[
        int | None, typer.Option("--batch", min=1, help="Images per step (default: the recipe's).")
    ] = None,
    device: InferDeviceOpt = "auto",
    set_: SetOpt = None,
    json: JsonOpt = None,
) -> None:
    """Seconds per finetune-pq iteration split into CNN, forward solve, loss and backward solves."""
    from cops.benchmarks.finetune import run

    _report(lambda: [run(recipe, weights, data, steps, batch, device, set_ or [])], json)


def _file_bench(name: str, height: int, width: int, summary: str) -> None:
    """Register `cops bench NAME`: a benchmark of `images` synthetic images of a size, run by
    `workers` processes, best of `repeats` (the eval and data benchmarks share these options)."""

    def command(
        images: ImagesOpt = 200,
        height: HeightOpt = height,
        width: WidthOpt = width,
        workers: WorkersOpt = None,
        repeats: RepeatsOpt = 3,
        json: JsonOpt = None,
    ) -> None:
        run = importlib.import_module(f"cops.benchmarks.{name}").run
        _report(lambda: [run(images, height, width, workers, repeats)], json)

    command.__doc__ = summary
    app.command(name)(command)


_file_bench("eval", 512, 1024, "PQ evaluation seconds per 1000 images, ours against panopticapi's.")
_file_bench(
    "data", 256, 512, "Synthetic data generation images/s, alone and with writing the files."
)


@app.command("all")
def all_(
    device: InferDeviceOpt = "auto",
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer repetitions (minutes on one GPU).")
    ] = False,
    json: JsonOpt = None,
) -> None:
    """The machine check: solver, predict, a training and a fine-tuning step, Cityscapes sizes.

    The solver on a Cityscapes-size instance (CPU, and GPU with --device cuda), predict at
    1024×2048, a training step and a fine-tuning step of cityscapes-r50 (random weights,
    synthetic data). `cops bench all --device cuda --quick` is the one-command GPU check.
    """
    from cops.benchmarks.suite import run_all

    _report(lambda: run_all(device, quick), json)
