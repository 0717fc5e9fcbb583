"""`cops pretrain`: phase 1 of COPS, per-pixel semantic and boundary losses (DESIGN §4).

Wiring only: options → run config → worker processes; each worker opens the data, builds the
network and hands both to the shared training engine. Heavy imports happen inside the functions,
so registering the command keeps `cops --help` fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cops.train_options import (
    DataOpt,
    DeviceOpt,
    NprocOpt,
    OutOpt,
    RecipeOpt,
    ResumeOpt,
    SeedOpt,
    SetOpt,
    WeightsOpt,
    train_phase,
)
from cops.training import Phase

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from cops.config import Recipe, TrainConfig
    from cops.models import CopsNet, PretrainLoss


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


def _schedule(recipe: Recipe) -> TrainConfig:
    return recipe.train


def _prepare(model: CopsNet, recipe: Recipe) -> CopsNet:
    model.costs.requires_grad_(False)  # the cost scalars are learnt in finetune-pq only
    return model


def _objective(recipe: Recipe, classes: dict[str, list], device: torch.device) -> PixelObjective:
    from cops.models import PretrainLoss

    return PixelObjective(PretrainLoss(recipe.loss))


PRETRAIN = Phase("pretrain", _schedule, _prepare, _objective)


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
    train_phase(
        PRETRAIN,
        recipe=recipe,
        data=data,
        out=out,
        overrides=set_,
        device=device,
        nproc=nproc_per_node,
        resume=resume,
        seed=seed,
        weights=weights,
    )
