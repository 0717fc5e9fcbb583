"""The paper's network and its inference wrapper.

:class:`SemanticBoundaryNet` is the COPS network layer for layer (DeepLab-stem ResNet, two
DeepLabV3+ decoders, a semantic and a boundary head, the affine cost scalars), so the authors'
released checkpoints load into it (:mod:`cops.models.original_import`). :class:`CostMapNet` wraps it
into the one function inference and exports need: image → cost maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn

from cops.models.backbone import MULTI_GRID
from cops.models.backbone_weights import build_backbone
from cops.models.costs import AffineCosts
from cops.models.decoder import DeepLabDecoder
from cops.models.heads import BoundaryHead, SemanticHead

if TYPE_CHECKING:
    from cops.recipes.schema import ModelConfig

__all__ = ["CostMapNet", "SemanticBoundaryNet"]


class SemanticBoundaryNet(nn.Module):
    """Predict stride-4 semantic logits and pixel-pair boundary logits from a normalised image.

    ``forward`` returns ``{"semantic": [B, K, h, w], "boundary": [B, 2D, h, w]}`` with
    ``h = ceil(H/4)``, ``w = ceil(W/4)`` and ``D = len(edge_distances)``. Boundary channel ``2i`` is
    the vertical edge (y, x)-(y+d, x) and ``2i+1`` the horizontal edge (y, x)-(y, x+d) for
    ``d = edge_distances[i]``, stored at the source pixel (y, x); a high logit means "cut".
    ``costs`` holds the learnable scalars that turn logits into AMWC costs (trained only in
    finetune-pq; pretraining freezes them). ``decoder_channels`` sets the width of both decoders
    and heads (256 in the paper; the narrow projections and classifiers scale with it).
    ``aspp_pool_size`` is the image-pooling window on the stride-``output_stride`` map: the
    training crop divided by the output stride in the original, ``None`` for a global pool.
    ``aspp_dropout`` drops the ASPP outputs of both decoders in train mode (0.1 in the paper).
    ``stem``, ``multi_grid``, ``dilation_style`` and ``reinit_stem`` shape the backbone
    (:class:`~cops.models.backbone.ResNetBackbone`).
    """

    def __init__(
        self,
        num_classes: int,
        edge_distances: Sequence[int],
        backbone: str = "resnet50",
        output_stride: int = 16,
        aspp_rates: Sequence[int] = (6, 12, 18),
        decoder_channels: int = 256,
        aspp_pool_size: Sequence[int] | None = None,
        weights_path: str | Path | None = None,
        *,
        stem: str = "deeplab",
        multi_grid: Sequence[int] = MULTI_GRID,
        dilation_style: str = "deeplab",
        reinit_stem: bool = False,
        aspp_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        distances = tuple(int(d) for d in edge_distances)
        if not distances or min(distances) < 1 or len(set(distances)) != len(distances):
            raise ValueError(f"edge_distances must be distinct positive ints, got {distances}")
        if decoder_channels < 8 or decoder_channels % 8:
            raise ValueError(f"decoder_channels must be a multiple of 8, got {decoder_channels}")
        self.num_classes = int(num_classes)
        self.edge_distances = distances
        self.backbone = build_backbone(
            backbone,
            output_stride,
            weights_path,
            stem=stem,
            multi_grid=tuple(multi_grid),
            dilation_style=dilation_style,
            reinit_stem=reinit_stem,
        )
        channels = self.backbone.channels
        width = int(decoder_channels)
        decoder = (channels, width, aspp_rates, aspp_pool_size, aspp_dropout)
        self.semantic_decoder = DeepLabDecoder(*decoder)
        self.boundary_decoder = DeepLabDecoder(*decoder)
        self.semantic_head = SemanticHead(width, width, num_classes)
        self.boundary_head = BoundaryHead(width, num_classes, width, distances)
        self.costs = AffineCosts(distances)

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, num_classes: int) -> SemanticBoundaryNet:
        """Build the network of a recipe's ``model`` section for ``num_classes`` classes."""
        return cls(
            num_classes=num_classes,
            edge_distances=model_cfg.edge_distances,
            backbone=model_cfg.backbone,
            output_stride=model_cfg.output_stride,
            aspp_rates=model_cfg.aspp_rates,
            decoder_channels=model_cfg.decoder_channels,
            aspp_pool_size=model_cfg.aspp_pool_size,
            aspp_dropout=model_cfg.aspp_dropout,
            weights_path=model_cfg.backbone_weights,
            stem=model_cfg.stem,
            multi_grid=model_cfg.multi_grid,
            dilation_style=model_cfg.dilation_style,
            reinit_stem=model_cfg.reinit_stem,
        )

    def forward(self, image: Tensor, costs: bool = False) -> dict[str, Tensor]:
        """Return semantic and boundary logits at stride 4 for an image batch ``[B, 3, H, W]``.

        With ``costs`` also ``node_costs [B, h*w, K]`` and ``edge_costs [B, 2D, h, w]`` (maps),
        computed inside forward so DDP sees the cost scalars as used parameters.
        """
        res2, res3, res5 = self.backbone(image)
        semantic = self.semantic_head(self.semantic_decoder(res2, res3, res5))
        boundary = self.boundary_head(self.boundary_decoder(res2, res3, res5), semantic)
        out = {"semantic": semantic, "boundary": boundary}
        if costs:
            out["node_costs"] = self.costs.node_costs(semantic)
            out["edge_costs"] = self.costs.edge_costs(boundary)
        return out


class CostMapNet(nn.Module):
    """A :class:`SemanticBoundaryNet` and its cost scalars as one graph: image → cost maps.

    ``forward(image)`` returns ``(node_costs [B, K, h, w], edge_costs [B, 2D, h, w],
    boundary_prob [B, 2D, h, w])``: the AMWC costs at stride 4 and the sigmoid boundary strength
    that instance confidence scores are computed from. This is what inference runs and exports
    contain.
    """

    def __init__(self, net: SemanticBoundaryNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Costs and boundary probabilities of a normalised image batch ``[B, 3, H, W]``."""
        out = self.net(image)
        boundary = out["boundary"]
        node = self.net.costs.node_cost_maps(out["semantic"])
        return node, self.net.costs.edge_costs(boundary), boundary.sigmoid()
