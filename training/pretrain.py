"""The pretraining phase (phase 1 of COPS, DESIGN §4): per-pixel semantic and boundary losses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cops.training.phase import Phase

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from cops.datasets.class_list import ClassList
    from cops.models import PretrainLoss, SemanticBoundaryNet
    from cops.recipes.schema import Recipe, TrainConfig


class PixelObjective:
    """The pretraining objective of a batch: network forward, then :class:`PretrainLoss` on the
    stride-4 semantic targets/weights and cut targets/weights."""

    def __init__(self, criterion: PretrainLoss) -> None:
        self.criterion = criterion

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        return pixel_losses(self.criterion, model(batch["image"]), batch)


def pixel_losses(
    criterion: PretrainLoss, out: dict[str, Tensor], batch: dict[str, Any]
) -> tuple[Tensor, dict[str, Tensor]]:
    """`criterion` on the network outputs `out` against the batch's targets and weights: semantic
    ones at full resolution when the loss asks for it (and the batch has them), else stride 4."""
    full = criterion.semantic_resolution == "full" and "semantic" in batch
    return criterion(
        out["semantic"],
        batch["semantic" if full else "semantic_s4"],
        batch["weights" if full else "weights_s4"],
        out["boundary"],
        batch["cut_targets"],
        batch["cut_weights"],
    )


def _schedule(recipe: Recipe) -> TrainConfig:
    return recipe.train


def _prepare(model: SemanticBoundaryNet, recipe: Recipe) -> SemanticBoundaryNet:
    model.costs.requires_grad_(False)  # the cost scalars are learnt in finetune-pq only
    return model


def _objective(recipe: Recipe, classes: ClassList, device: torch.device) -> PixelObjective:
    from cops.models import PretrainLoss

    return PixelObjective(PretrainLoss(recipe.loss))


PRETRAIN = Phase("pretrain", _schedule, _prepare, _objective)
