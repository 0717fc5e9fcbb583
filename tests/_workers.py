"""Worker bodies for launcher tests: importable by spawned processes without pulling in torch."""

from __future__ import annotations

import os

from cops.errors import CopsError


def fail_on_rank_one(message: str) -> None:
    """Raise a user error on rank 1 only; rank 0 finishes normally."""
    if os.environ["RANK"] == "1":
        raise CopsError(message)


def pooled_surrogate_case() -> tuple:
    """A fixed batch of two images for the paper PQ surrogate: soft predictions [2, 12, 3], their
    loss channels and weights (the reference of the two-process pooling test)."""
    import torch

    from cops.models.paper_pq import LossChannels

    gen = torch.Generator().manual_seed(7)
    pred = torch.rand(2, 12, 3, generator=gen, dtype=torch.float64)
    gt = (torch.rand(2, 12, 3, generator=gen) > 0.5).double()
    classes = torch.tensor([[0, 1, 1], [1, 0, -1]])
    pred[1, :, 2] = 0.0
    gt[1, :, 2] = 0.0
    weights = torch.ones(2, 12, dtype=torch.float64)
    channels = LossChannels(gt, classes, torch.tensor([3, 2]))
    return pred, channels, weights, torch.tensor([2.0, 3.0], dtype=torch.float64)


def pooled_surrogate_on_rank(folder: str) -> None:
    """Rank r evaluates the paper surrogate on image r of :func:`pooled_surrogate_case` under a
    gloo process group and saves its loss and the gradient w.r.t. its own predictions."""
    import dataclasses

    import torch
    import torch.distributed as dist

    from cops.models.paper_pq import paper_surrogate

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    pred, channels, weights, min_area = pooled_surrogate_case()
    own = slice(rank, rank + 1)
    mine = pred[own].clone().requires_grad_(True)
    part = dataclasses.replace(
        channels, gt=channels.gt[own], classes=channels.classes[own],
        num_pred=channels.num_pred[own],
    )  # fmt: skip
    loss = paper_surrogate(mine, part, weights[own], min_area).loss
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": mine.grad}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()
