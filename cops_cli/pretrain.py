"""`cops pretrain`: phase 1 of COPS, per-pixel semantic and boundary losses (DESIGN §4).

Wiring only: options → run config → worker processes; each worker opens the data, builds the
network and hands both to the shared training engine. Heavy imports happen inside the functions,
so registering the command keeps `cops --help` fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from cops.console import configure_logging, print_table
from cops.errors import CopsError
from cops.train_options import (
    DataOpt,
    DeviceOpt,
    NprocOpt,
    OutOpt,
    RecipeOpt,
    ResumeOpt,
    RunConfig,
    SeedOpt,
    SetOpt,
    WeightsOpt,
    resolve_run,
    start,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from cops.distributed import DistInfo
    from cops.models import PretrainLoss


class PixelObjective:
    """The pretraining objective of a batch: network forward, then :class:`PretrainLoss` on the
    stride-4 semantic targets/weights and cut targets/weights."""

    def __init__(self, criterion: PretrainLoss) -> None:
        self.criterion = criterion

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(batch["image"])
        return self.criterion(
            out["semantic"],
            batch["semantic_s4"],
            batch["weights_s4"],
            out["boundary"],
            batch["cut_targets"],
            batch["cut_weights"],
        )


def pretrain_worker(run: RunConfig) -> None:
    """One training process (of one or many): joins the group, trains, reports on rank 0."""
    from cops import distributed

    if distributed.under_launcher():  # a fresh process: apply the CLI's verbosity here too
        configure_logging(run.verbose, run.quiet)
    info, device = distributed.init(run.device)
    try:
        _train(run, info, device)
    finally:
        distributed.teardown()


def _train(run: RunConfig, info: DistInfo, device: torch.device) -> None:
    import torch

    from cops import distributed
    from cops.checkpoint import LAST, build_model, class_metadata, load_checkpoint
    from cops.data import TrainBatches, ensure_dataset, open_datasets, val_loader
    from cops.engine import METRICS, RunContext, Trainer, seed_everything
    from cops.models import PretrainLoss
    from cops.report import plot_losses, read_metrics, summary_table

    recipe = run.recipe
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    seed_everything(recipe.seed)
    if info.is_main:
        ensure_dataset(recipe)
    distributed.barrier()
    train_set, val_set = open_datasets(recipe)
    classes = class_metadata(train_set.categories)
    ckpt = load_checkpoint(run.out / LAST) if run.resume else None
    if ckpt is not None and ckpt["classes"] != classes:
        raise CopsError(
            f"{run.out / LAST}: the checkpoint's classes ({', '.join(ckpt['classes']['names'])}) "
            f"differ from those of {train_set.paths.json}"
        )
    model = build_model(recipe.model, len(classes["names"]), run.weights, ckpt is not None)
    model.costs.requires_grad_(False)  # cost scalars are learnt in finetune-pq only
    pin = device.type == "cuda"
    workers = recipe.data.num_workers
    batches = TrainBatches(train_set, recipe.train, info, recipe.seed, workers, pin)
    val = None
    if val_set is not None:
        val = val_loader(val_set, info, recipe.train.val_images, workers, pin)
    if info.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        tmp = run.out / f".recipe.yaml.{os.getpid()}.tmp"
        tmp.write_text(recipe.to_yaml(), "utf-8")
        os.replace(tmp, run.out / "recipe.yaml")
    context = RunContext(
        out=run.out,
        device=device,
        dist=info,
        recipe=recipe.to_dict(),
        classes=classes,
        phase="pretrain",
        sync_bn=recipe.model.sync_bn,
    )
    trainer = Trainer(
        model, PixelObjective(PretrainLoss(recipe.loss)), recipe.train, batches, val, context, ckpt
    )
    del ckpt
    result = trainer.fit()
    if info.is_main:
        plot = plot_losses(
            read_metrics(run.out / METRICS), run.out / "loss.png", f"cops pretrain: {run.name}"
        )
        title = f"Pretrained {run.name} ({info.world_size} process(es))"
        table = summary_table(title, result, run.out)
        table.add_row("loss curve", str(plot))
        print_table(table)


def pretrain(
    recipe: RecipeOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    nproc_per_node: NprocOpt = "1",
    resume: ResumeOpt = False,
    seed: SeedOpt = None,
    weights: WeightsOpt = None,
) -> None:
    """Pretrain the network on per-pixel semantic and boundary losses (phase 1 of COPS).

    Writes OUT/last.pt (the newest checkpoint), metrics.jsonl, recipe.yaml and loss.png.

    Several machines: torchrun --nnodes N --nproc-per-node G ... -m cops pretrain ...
    """
    from cops.distributed import under_launcher

    launched = under_launcher()
    run = resolve_run(
        recipe=recipe,
        data=data,
        out=out,
        overrides=set_,
        device=device,
        nproc=nproc_per_node,
        resume=resume,
        seed=seed,
        weights=weights,
        under_launcher=launched,
    )
    start(run, pretrain_worker, launched)
