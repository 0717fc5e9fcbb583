"""The fine-tuning phase (phase 2 of COPS, DESIGN §6): end to end through the AMWC solver.

The objective composes the network's costs, the differentiable solver layer
(:func:`cops.solver.amwc_segments`) and the smooth PQ loss (:class:`cops.models.PQSurrogateLoss`);
the shared training phase does the rest.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from cops.training.phase import Phase
from cops.training.pretrain import pixel_losses

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from cops.datasets.class_list import ClassList
    from cops.models import SemanticBoundaryNet
    from cops.recipes.schema import Recipe, TrainConfig


STRIDE_AREA = 16
"""Input pixels per stride-4 node: the recipe's minimum areas are in input pixels."""

PAPER_AREA_DIVISOR = 4
"""The original converts its minimum areas to nodes by dividing by the stride, not its square
(200 px → 50 nodes), and stuff areas further by ``finetune.stuff_area_factor`` (2048 → 128); the
paper surrogate keeps that, so its size gate matches the original's."""


def drop_costs(
    node_costs: Tensor, edge_costs: Tensor, node_p: float, edge_p: float
) -> tuple[Tensor, Tensor]:
    """Cost dropout while fine-tuning: neutralise (set to 0) random edges and whole nodes.

    ``node_costs [B, N, K]``: a dropped node loses every class cost at once, so the solver must
    label it from its neighbours alone; ``edge_costs [B, E]``: each edge independently. Kept
    costs are not rescaled, so the solver sees the same cost scale in training and at test time.
    """
    import torch

    if edge_p > 0:
        edge_costs = edge_costs * (torch.rand_like(edge_costs) >= edge_p)
    if node_p > 0:
        keep = torch.rand(node_costs.shape[:-1], device=node_costs.device) >= node_p
        node_costs = node_costs * keep.unsqueeze(-1)
    return node_costs, edge_costs


class PQObjective:
    """The fine-tuning objective of a batch.

    Network → costs (edge and node dropout while training, :func:`drop_costs`) → AMWC segments →
    smooth PQ loss (``finetune.surrogate``, pixel weights by ``finetune.weights``), weighted by
    ``finetune.pq_weight``, plus the per-pixel pretrain losses weighted by
    ``finetune.pixel_loss_weight`` when that is positive. Logged parts: the PQ surrogate, the
    exact PQ of the batch at stride 4, and seconds spent in the CNN forward, the forward solve and
    matching + loss.
    """

    def __init__(self, recipe: Recipe, classes: ClassList, device: torch.device) -> None:
        import torch

        from cops.models import PQSurrogateLoss, PretrainLoss

        ft, ev = recipe.finetune, recipe.eval
        self.finetune, self.solver = ft, recipe.solver
        self.distances = tuple(recipe.model.edge_distances)
        self.partitionable = torch.tensor(classes.isthing, dtype=torch.bool)
        paper = ft.surrogate == "paper"
        per_node = PAPER_AREA_DIVISOR if paper else STRIDE_AREA
        stuff_per_node = per_node * ft.stuff_area_factor if paper else per_node
        self.pq_loss = PQSurrogateLoss(
            classes.isthing,
            beta=ft.beta,
            thing_min_area=ev.thing_min_area / per_node,
            stuff_min_area=ev.stuff_min_area / stuff_per_node,
            mode=ft.surrogate,
        )
        self.pixel_loss = PretrainLoss(recipe.loss) if ft.pixel_loss_weight > 0 else None
        self._edges: dict[tuple[int, int, str], Tensor] = {}

    def edges(self, height: int, width: int, device: torch.device) -> Tensor:
        """The stride-4 grid graph of a batch (cached per size and device)."""
        import torch

        from cops.solver import grid_graph

        key = (height, width, str(device))
        if key not in self._edges:
            graph = grid_graph(height, width, self.distances)
            self._edges[key] = torch.from_numpy(graph).to(device)
        return self._edges[key]

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        import torch

        from cops.solver import edge_maps_to_costs

        tick = time.perf_counter()
        out = model(batch["image"], costs=True)
        edge_maps = out["edge_costs"]
        height, width = edge_maps.shape[-2:]
        edge_costs = edge_maps_to_costs(edge_maps, self.distances).float()
        node_costs = out["node_costs"].float()
        if model.training:
            node_costs, edge_costs = drop_costs(
                node_costs, edge_costs, self.finetune.node_dropout, self.finetune.cost_dropout
            )
        cnn = time.perf_counter() - tick

        pq_loss, parts, seconds = self.surrogate(node_costs, edge_costs, (height, width), batch)
        loss = self.finetune.pq_weight * pq_loss
        logged = {"pq_loss": pq_loss.detach(), **parts}
        if self.pixel_loss is not None:
            pixel, pixel_parts = pixel_losses(self.pixel_loss, out, batch)
            loss = loss + self.finetune.pixel_loss_weight * pixel
            logged.update(pixel_parts)
        seconds = [cnn, *seconds]
        for name, value in zip(("cnn_s", "solve_s", "loss_s"), seconds, strict=True):
            logged[name] = torch.tensor(value, device=loss.device)
        return loss, logged

    def surrogate(
        self, node_costs: Tensor, edge_costs: Tensor, size: tuple[int, int], batch: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Tensor], list[float]]:
        """PQ surrogate of the solver's segments (differentiable w.r.t. both costs), its logged
        parts and the seconds of the forward solve and of matching + loss.

        The paper surrogate matches the segments first, so that unmatched ground truths become
        zero loss channels whose classes the paper backward perturbs as well.
        """
        from cops.solver import amwc_masks, amwc_solve, edge_maps_to_costs

        tick = time.perf_counter()
        solver, device = self.solver, edge_costs.device
        edges = self.edges(*size, device)
        solution = amwc_solve(
            node_costs, edge_costs, edges, self.partitionable.to(device),
            backend=solver.backend, local_search=solver.local_search,
            min_thing_nodes=self.finetune.min_thing_nodes,
        )  # fmt: skip
        solve = time.perf_counter() - tick

        tick = time.perf_counter()
        weights = batch["weights_s4"].flatten(1)
        if self.finetune.weights == "binary":  # the paper: 0 on void and padding, 1 elsewhere
            weights = (weights > 0).to(weights.dtype)
        gt = (batch["panoptic_s4"].flatten(1), batch["semantic_s4"].flatten(1))
        paper = self.pq_loss.mode == "paper"
        channels = (
            self.pq_loss.match(solution.segments, solution.classes, *gt, weights) if paper else None
        )
        edge_weights = None
        if solver.backward == "paper":  # the original's 0/1 boundary weights of fine-tuning
            edge_weights = edge_maps_to_costs(batch["cut_weights"], self.distances) > 0
            edge_weights = edge_weights.to(edge_costs.dtype)
        masks = amwc_masks(
            node_costs, edge_costs, edges, solution,
            None if channels is None else channels.classes,
            lambda_min=solver.lambda_min, lambda_max=solver.lambda_max,
            num_samples=solver.num_samples, backward=solver.backward,
            lambda_per=solver.lambda_per, backend=solver.backend, node_weights=weights,
            edge_weights=edge_weights, local_search=solver.local_search,
        )  # fmt: skip
        if channels is None:
            loss, parts = self.pq_loss(masks, solution.classes, *gt, weights)
        else:
            loss = self.pq_loss.paper(masks, channels, weights).loss
            pred = masks[:, :, : solution.classes.shape[1]]
            pq = self.pq_loss.hard_pq(pred, solution.classes, *gt, weights)
            parts = {"soft_pq": 1.0 - loss.detach(), "pq": pq}
        return loss, parts, [solve, time.perf_counter() - tick]


def _schedule(recipe: Recipe) -> TrainConfig:
    """The pretraining schedule with fine-tuning's length, rates, precision and frozen modules."""
    ft = recipe.finetune
    return dataclasses.replace(
        recipe.train,
        iterations=ft.iterations,
        batch_size=ft.batch_size,
        lr=ft.lr,
        warmup_iters=ft.warmup_iters,
        amp=ft.amp,
        frozen=list(ft.frozen),
        param_groups=list(ft.param_groups),
        shortest_edges=ft.shortest_edges,
    )


def _prepare(model: SemanticBoundaryNet, recipe: Recipe) -> SemanticBoundaryNet:
    from cops.models import freeze_batchnorm

    if recipe.finetune.freeze_bn:
        model = freeze_batchnorm(model)
    model.costs.requires_grad_(True)
    return model


def _objective(recipe: Recipe, classes: ClassList, device: torch.device) -> PQObjective:
    return PQObjective(recipe, classes, device)


FINETUNE = Phase(
    "finetune-pq",
    _schedule,
    _prepare,
    _objective,
    out_suffix="-ft",
    start_hint="fine-tuning starts from a pretrained checkpoint (cops pretrain ...); pass "
    "--weights runs/NAME/last.pt, or --resume to continue a fine-tuning run",
)
