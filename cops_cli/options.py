"""Options the subcommands share (training: pretrain, finetune-pq; trained models: evaluate,
predict, export) and their plain checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cops.errors import CopsError
from cops.files import not_a_file

RecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        "-r",
        help="Built-in recipe name or YAML path (default: synthetic; with --resume: the "
        "checkpoint's recipe).",
    ),
]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Prepared dataset folder (overrides data.root).")
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Run folder for checkpoints and logs (default: runs/RECIPE, for fine-tuning "
        "runs/RECIPE-ft).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a recipe key, e.g. --set train.lr=1e-3 (repeatable)."
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="cpu, cuda, or auto (cuda when a GPU is visible).")
]
NprocOpt = Annotated[
    str,
    typer.Option(
        "--nproc-per-node",
        help="Worker processes on this machine: N, or auto (all visible GPUs; 1 on CPU). One per "
        "GPU on CUDA, gloo processes on CPU. train.batch_size is the global batch.",
    ),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out from its last.pt.")
]


def _check_seed(value: int | None) -> int | None:
    """A --seed within what every generator accepts (a larger one overflows torch's)."""
    from cops.recipes.schema import MAX_SEED

    if value is not None and not 0 <= value <= MAX_SEED:
        raise CopsError(f"--seed {value}: expected a non-negative integer (at most 2**63 - 1)")
    return value


SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", callback=_check_seed, help="Random seed (overrides the recipe's seed)."),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Initialise from a COPS checkpoint (e.g. runs/NAME/last.pt) or a backbone file "
        "(`cops import-checkpoint R-52.pkl --backbone-only`).",
    ),
]

ReinitHeadOpt = Annotated[
    bool,
    typer.Option(
        "--reinit-head",
        help="With --weights from a checkpoint of other classes: start the class-dependent layers "
        "from random values and load the rest (refused without this option).",
    ),
]


CheckpointOpt = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c", help="A COPS checkpoint (e.g. runs/synthetic-ft/last.pt)."),
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="AMWC solver: cpu, cuda, or auto (the GPU solver when the model runs on a GPU).",
    ),
]
InferDeviceOpt = Annotated[
    str, typer.Option("--device", help="Where the CNN runs: cpu, cuda, or auto.")
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", "-b", min=1, help="Images per CNN forward pass.")
]
TestSizeOpt = Annotated[
    str | None,
    typer.Option(
        "--test-size",
        help="Resize inputs to HxW (e.g. 512x1024) before the CNN; outputs keep the input size "
        "(default: the recipe's eval.test_size, else the input size).",
    ),
]


def parse_size(value: str | None, option: str = "--test-size") -> tuple[int, int] | None:
    """``"512x1024"`` → ``(512, 1024)``; None stays None; errors name `option`."""
    if value is None:
        return None
    parts = value.lower().replace(",", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        raise CopsError(f"{option} '{value}': expected HxW with positive integers, e.g. 512x1024")
    return height, width


def check_backend(value: str) -> str:
    """Validate a --backend value; ``cuda`` needs a GPU the solver can use, checked up front."""
    if value not in ("auto", "cpu", "cuda"):
        raise CopsError(f"--backend '{value}': expected cpu, cuda or auto")
    if value == "cuda":
        from cops.solver.api import cuda_available

        if not cuda_available():
            raise CopsError("--backend cuda: no CUDA GPU is usable here; use --backend cpu or auto")
    return value


PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="The CNN's arithmetic: fp32 (exact) or bf16 (autocast, where the device runs it "
        "natively; checkpoints only). Default: the recipe's eval.precision.",
    ),
]


RuntimeOpt = Annotated[
    str | None,
    typer.Option(
        "--runtime",
        help="How the CNN runs: frozen (channels-last TorchScript), compile (torch.compile: "
        "fastest per image, compiles minutes per new input size) or eager (checkpoints only). "
        "Default: the recipe's eval.runtime.",
    ),
]


def check_precision(value: str | None) -> str | None:
    """Validate a --precision value (None: the recipe's)."""
    if value not in (None, "fp32", "bf16"):
        raise CopsError(f"--precision '{value}': expected fp32 or bf16")
    return value


def check_runtime(value: str | None) -> str | None:
    """Validate a --runtime value (None: the recipe's)."""
    if value not in (None, "frozen", "compile", "eager"):
        raise CopsError(f"--runtime '{value}': expected frozen, compile or eager")
    return value


def model_options(
    device: str,
    backend: str,
    test_size: str | None,
    precision: str | None = None,
    runtime: str | None = None,
) -> dict[str, object]:
    """The checked --device, --backend, --test-size, --precision and --runtime of the commands
    that run a model."""
    return {
        "device": device,
        "backend": check_backend(backend),
        "test_size": parse_size(test_size),
        "precision": check_precision(precision),
        "runtime": check_runtime(runtime),
    }


def require_checkpoint(checkpoint: Path | None) -> Path:
    """The --checkpoint path, which must be given and exist."""
    if checkpoint is None:
        raise CopsError("--checkpoint: give the checkpoint to use, e.g. runs/synthetic-ft/last.pt")
    if not checkpoint.is_file():
        raise CopsError(f"--checkpoint {checkpoint}: {not_a_file(checkpoint)}")
    return checkpoint


def training_command(run: Callable[..., Path], doc: str) -> Callable[..., None]:
    """The Typer command of a training phase: every training option, passed to `run`
    (:func:`cops.api.training.train` or :func:`~cops.api.training.finetune`).

    The parameters carry the names :func:`cops.training.run.resolve_run` takes.
    """

    def command(
        recipe: RecipeOpt = None,
        weights: WeightsOpt = None,
        data: DataOpt = None,
        out: OutOpt = None,
        overrides: SetOpt = None,
        device: DeviceOpt = "auto",
        nproc: NprocOpt = "1",
        resume: ResumeOpt = False,
        seed: SeedOpt = None,
        reinit_head: ReinitHeadOpt = False,
    ) -> None:
        run(
            recipe=recipe,
            weights=weights,
            data=data,
            out=out,
            overrides=overrides,
            device=device,
            nproc=nproc,
            resume=resume,
            seed=seed,
            reinit_head=reinit_head,
        )

    command.__doc__ = doc
    return command
