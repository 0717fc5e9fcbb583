"""One training phase (pretrain or finetune-pq) from a resolved run: data, model, engine, report.

The phases differ only in what a :class:`Phase` says: their schedule section of the recipe, how the
network is prepared and which objective it is trained on. Everything else (data streams, resume,
DDP, checkpoints, loss plot and summary) is this one code path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cops.console import configure_logging, print_table
from cops.errors import CopsError

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch.utils.data import DataLoader

    from cops.datasets.class_list import ClassList
    from cops.models import SemanticBoundaryNet
    from cops.models.checkpoint import Checkpoint
    from cops.recipes.schema import Recipe, TrainConfig
    from cops.training.distributed import DistInfo
    from cops.training.engine import Objective
    from cops.training.loaders import TrainBatches
    from cops.training.run_config import RunConfig


@dataclass(frozen=True)
class Phase:
    """What distinguishes a training phase.

    ``schedule(recipe)`` gives the engine's TrainConfig, ``prepare(model, recipe)`` readies the
    freshly built (or restored) network, ``objective(recipe, classes, device)`` builds the loss.
    A phase with `start_hint` must start from ``--weights`` (the hint says which); its runs go
    to ``runs/RECIPE`` + `out_suffix` by default.
    """

    name: str
    schedule: Callable[[Recipe], TrainConfig]
    prepare: Callable[[SemanticBoundaryNet, Recipe], SemanticBoundaryNet]
    objective: Callable[[Recipe, ClassList, torch.device], Objective]
    out_suffix: str = ""
    start_hint: str | None = None


def phase_worker(run: RunConfig, phase: Phase) -> None:
    """One training process (of one or many): joins the group, trains, reports on rank 0."""
    from cops.training import distributed

    if distributed.under_launcher():  # a fresh process: apply the CLI's verbosity here too
        configure_logging(run.verbose, run.quiet)
    info, device = distributed.init(run.device)
    try:
        _train(run, phase, info, device)
    finally:
        distributed.teardown()


def _write_recipe(run: RunConfig) -> None:
    """Keep the run's resolved recipe beside its checkpoints (atomically)."""
    from cops.files import atomic_write_text

    atomic_write_text(run.out / "recipe.yaml", run.recipe.to_yaml())


@dataclass
class PhaseSetup:
    """A phase ready to train: the recipe with the phase's schedule as its train section, the
    class metadata, the prepared network, its objective, the training batches and validation."""

    recipe: Recipe
    classes: ClassList
    model: SemanticBoundaryNet
    objective: Objective
    batches: TrainBatches
    val: DataLoader | None
    checkpoint: Checkpoint | None


def setup_phase(
    recipe: Recipe,
    phase: Phase,
    info: DistInfo,
    device: torch.device,
    *,
    weights: Path | None = None,
    resume: Path | None = None,
    reinit_head: bool = False,
    may_generate: bool = True,
    validate: bool = True,
) -> PhaseSetup:
    """Seed, data, classes, network, objective and batches of `phase`, as its training starts.

    `resume`: the checkpoint to continue (checked against the data's classes and the phase);
    `may_generate`: the recipe's own synthetic root may be generated; `validate=False` turns
    validation off (no validation split is needed).
    """
    import dataclasses

    import torch

    from cops.datasets.recipe_data import ensure_dataset
    from cops.models.build import build_model
    from cops.models.checkpoint import Checkpoint
    from cops.training import distributed
    from cops.training.engine import seed_everything
    from cops.training.loaders import TrainBatches, open_datasets, val_loader

    schedule = phase.schedule(recipe)
    if not validate:
        schedule = dataclasses.replace(schedule, val_every=0)
    recipe = dataclasses.replace(recipe, train=schedule)  # data streams follow the phase
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    seed_everything(recipe.seed)
    if info.is_main:
        ensure_dataset(recipe, may_generate=may_generate)
    distributed.barrier()
    train_set, val_set = open_datasets(recipe)
    classes = train_set.categories.classes
    ckpt = Checkpoint.load(resume) if resume is not None else None
    if ckpt is not None and ckpt.classes != classes:
        raise CopsError(
            f"{resume}: the checkpoint's classes ({', '.join(ckpt.classes.names)}) "
            f"differ from those of {train_set.paths.json}"
        )
    if ckpt is not None and ckpt.phase not in ("", phase.name):
        raise CopsError(
            f"{resume}: a {ckpt.phase} checkpoint cannot be resumed by {phase.name}; "
            f"start {phase.name} from it with --weights instead"
        )
    model = build_model(
        recipe.model,
        len(classes),
        weights,
        ckpt is not None,
        classes=classes,
        reinit_head=reinit_head,
    )
    model = phase.prepare(model, recipe)
    pin = device.type == "cuda"
    workers = recipe.data.num_workers
    batches = TrainBatches(train_set, schedule, info, recipe.seed, workers, pin)
    val = None
    if val_set is not None:
        val = val_loader(val_set, info, schedule.val_images, workers, pin)
    objective = phase.objective(recipe, classes, device)
    return PhaseSetup(recipe, classes, model, objective, batches, val, ckpt)


def _train(run: RunConfig, phase: Phase, info: DistInfo, device: torch.device) -> None:
    from cops.training.checkpoint import LAST
    from cops.training.engine import METRICS, RunContext, Trainer
    from cops.training.report import plot_losses, read_metrics, summary_table

    setup = setup_phase(
        run.recipe,
        phase,
        info,
        device,
        weights=run.weights,
        resume=run.out / LAST if run.resume else None,
        reinit_head=run.reinit_head,
        may_generate=run.own_data,
    )
    if info.is_main:
        _write_recipe(run)
    context = RunContext(
        out=run.out,
        device=device,
        dist=info,
        recipe=run.recipe.to_dict(),
        classes=setup.classes,
        phase=phase.name,
        sync_bn=setup.recipe.model.sync_bn,
    )
    trainer = Trainer(
        setup.model,
        setup.objective,
        setup.recipe.train,
        setup.batches,
        setup.val,
        context,
        setup.checkpoint,
    )
    setup.checkpoint = None  # the trainer has restored it; free the memory before training
    result = trainer.fit()
    if info.is_main:
        title = f"cops {phase.name}: {run.name}"
        plot = plot_losses(read_metrics(run.out / METRICS), run.out / "loss.png", title)
        table = summary_table(f"{title} ({info.world_size} process(es))", result, run.out)
        table.add_row("loss curve", str(plot))
        print_table(table)
