"""Turn network logits into AMWC costs with a few learnable scalars (trained in finetune-pq)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AffineCosts"]


class AffineCosts(nn.Module):
    """Affine maps from logits to AMWC node and edge costs, as in the paper's network.

    Node cost of class k at pixel p: ``c[k, p] = a·(−semantic_logit[k, p]) + b``.
    Edge cost of the edge e at distance d: ``w[e] = |α_d|·(−boundary_logit[e]) + β_d``; positive
    costs attract (cutting them is paid), negative ones repel, so a confident boundary makes cutting
    cheap. ``α_d`` and ``β_d`` are per distance, shared by the vertical (channel 2i) and
    horizontal (channel 2i+1) edge maps of ``d = edge_distances[i]``. The ``abs()`` keeps the
    logit→cost direction fixed whatever sign the optimiser drives ``α_d`` to. Initialised to
    a = α = 1, b = β = 0. No Python branches on tensor values (TorchScript/ONNX).
    """

    def __init__(self, edge_distances: Sequence[int]) -> None:
        super().__init__()
        num_distances = len(edge_distances)
        if num_distances < 1:
            raise ValueError("edge_distances must not be empty")
        self.edge_distances = tuple(int(d) for d in edge_distances)
        self.a = nn.Parameter(torch.ones(()))
        self.b = nn.Parameter(torch.zeros(()))
        self.alpha = nn.Parameter(torch.ones(num_distances))
        self.beta = nn.Parameter(torch.zeros(num_distances))

    def node_cost_maps(self, semantic_logits: Tensor) -> Tensor:
        """Map ``[B, K, h, w]`` logits to node costs of the same shape."""
        return self.a * (-semantic_logits) + self.b

    def node_costs(self, semantic_logits: Tensor) -> Tensor:
        """Map ``[B, K, h, w]`` logits to node costs ``[B, h*w, K]`` (row-major nodes y*w + x)."""
        return self.node_cost_maps(semantic_logits).flatten(2).transpose(1, 2)

    def edge_costs(self, boundary_logits: Tensor) -> Tensor:
        """Map ``[B, 2D, h, w]`` boundary logits to dense edge-cost maps of the same shape.

        Entries whose partner pixel lies outside the grid are meaningless; the solver's
        flattening to its edge list drops them.
        """
        alpha = self.alpha.abs().repeat_interleave(2).view(1, -1, 1, 1)
        beta = self.beta.repeat_interleave(2).view(1, -1, 1, 1)
        return alpha * (-boundary_logits) + beta

    def forward(self, semantic_logits: Tensor, boundary_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(node_costs [B, h*w, K], edge_cost_maps [B, 2D, h, w])``."""
        return self.node_costs(semantic_logits), self.edge_costs(boundary_logits)

    @torch.jit.unused
    def scalars(self) -> dict[str, object]:
        """Current scalars as Python numbers (export metadata, logs); alpha is |α|, as used."""
        return {
            "a": self.a.item(),
            "b": self.b.item(),
            "alpha": self.alpha.detach().abs().tolist(),
            "beta": self.beta.detach().tolist(),
            "edge_distances": list(self.edge_distances),
        }
