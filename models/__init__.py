"""The paper's network (backbone, decoders, heads, cost layer), its losses and weight loading."""

from cops.models.backbone import (
    BACKBONES,
    BackboneInitWarning,
    ResNetBackbone,
    WeightsError,
    freeze_batchnorm,
)
from cops.models.backbone_weights import build_backbone, load_backbone_weights
from cops.models.costs import AffineCosts
from cops.models.decoder import ASPP, DeepLabDecoder
from cops.models.heads import BoundaryHead, SemanticHead
from cops.models.losses import PretrainLoss, hard_boundary_bce, hard_pixel_cross_entropy
from cops.models.network import CostMapNet, SemanticBoundaryNet
from cops.models.pq_loss import PQSurrogateLoss

__all__ = [
    "ASPP",
    "BACKBONES",
    "AffineCosts",
    "BackboneInitWarning",
    "BoundaryHead",
    "CostMapNet",
    "DeepLabDecoder",
    "PQSurrogateLoss",
    "PretrainLoss",
    "ResNetBackbone",
    "SemanticBoundaryNet",
    "SemanticHead",
    "WeightsError",
    "build_backbone",
    "freeze_batchnorm",
    "hard_boundary_bce",
    "hard_pixel_cross_entropy",
    "load_backbone_weights",
]
