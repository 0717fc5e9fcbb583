"""The COPS network: a dilated ResNet with a semantic and a boundary DeepLabV3+ decoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn

from cops.models.backbone import build_backbone
from cops.models.costs import CostModel
from cops.models.decoder import DeepLabDecoder

if TYPE_CHECKING:
    from cops.recipes.schema import ModelConfig

__all__ = ["CopsNet", "CostNet"]


class CopsNet(nn.Module):
    """Predict stride-4 semantic logits and pixel-pair boundary logits from a normalised image.

    ``forward`` returns ``{"semantic": [B, K, h, w], "boundary": [B, 2D, h, w]}`` with
    ``h = ceil(H/4)``, ``w = ceil(W/4)`` and ``D = len(edge_distances)``. Boundary channel ``2i`` is
    the vertical edge (y, x)-(y+d, x) and ``2i+1`` the horizontal edge (y, x)-(y, x+d) for
    ``d = edge_distances[i]``, stored at the source pixel (y, x); a high logit means "cut".
    ``costs`` holds the learnable scalars that turn logits into AMWC costs (trained only in
    finetune-pq; pretraining freezes them).
    """

    def __init__(
        self,
        num_classes: int,
        edge_distances: Sequence[int],
        backbone: str = "resnet50",
        output_stride: int = 16,
        aspp_rates: Sequence[int] = (6, 12, 18),
        decoder_channels: int = 256,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        distances = tuple(int(d) for d in edge_distances)
        if not distances or min(distances) < 1 or len(set(distances)) != len(distances):
            raise ValueError(f"edge_distances must be distinct positive ints, got {distances}")
        self.num_classes = int(num_classes)
        self.edge_distances = distances
        self.backbone = build_backbone(backbone, output_stride, pretrained, weights_path)
        channels = self.backbone.channels
        self.semantic_decoder = DeepLabDecoder(channels, num_classes, aspp_rates, decoder_channels)
        self.boundary_decoder = DeepLabDecoder(
            channels, 2 * len(distances), aspp_rates, decoder_channels
        )
        self.costs = CostModel(distances)

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, num_classes: int) -> CopsNet:
        """Build the network of a recipe's ``model`` section for ``num_classes`` classes."""
        return cls(
            num_classes=num_classes,
            edge_distances=model_cfg.edge_distances,
            backbone=model_cfg.backbone,
            output_stride=model_cfg.output_stride,
            aspp_rates=model_cfg.aspp_rates,
            decoder_channels=model_cfg.decoder_channels,
            pretrained=model_cfg.pretrained,
            weights_path=model_cfg.backbone_weights,
        )

    def forward(self, image: Tensor, costs: bool = False) -> dict[str, Tensor]:
        """Return semantic and boundary logits at stride 4 for an image batch ``[B, 3, H, W]``.

        With ``costs`` also ``node_costs [B, h*w, K]`` and ``edge_costs [B, 2D, h, w]`` (maps),
        computed inside forward so DDP sees the cost scalars as used parameters.
        """
        res2, res3, res5 = self.backbone(image)
        out = {
            "semantic": self.semantic_decoder(res2, res3, res5),
            "boundary": self.boundary_decoder(res2, res3, res5),
        }
        if costs:
            out["node_costs"] = self.costs.node_costs(out["semantic"])
            out["edge_costs"] = self.costs.edge_costs(out["boundary"])
        return out


class CostNet(nn.Module):
    """A :class:`CopsNet` and its cost scalars as one graph, for inference and export.

    ``forward(image)`` returns ``(node_costs [B, K, h, w], edge_costs [B, 2D, h, w],
    boundary_prob [B, 2D, h, w])``: the AMWC costs at stride 4 and the sigmoid boundary strength
    that instance confidence scores are computed from.
    """

    def __init__(self, net: CopsNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Costs and boundary probabilities of a normalised image batch ``[B, 3, H, W]``."""
        out = self.net(image)
        boundary = out["boundary"]
        node = self.net.costs.node_cost_maps(out["semantic"])
        return node, self.net.costs.edge_costs(boundary), boundary.sigmoid()
