"""CNN backbones, decoders, losses and the cost model."""

from cops.models.backbone import (
    BACKBONES,
    BackboneInitWarning,
    ResNetBackbone,
    WeightsError,
    build_backbone,
    freeze_batchnorm,
    load_backbone_weights,
)
from cops.models.cops_net import CopsNet, CostNet
from cops.models.costs import CostModel
from cops.models.decoder import ASPP, DeepLabDecoder
from cops.models.losses import PretrainLoss, hard_boundary_bce, hard_pixel_cross_entropy
from cops.models.pq_loss import PQSurrogateLoss

__all__ = [
    "ASPP",
    "BACKBONES",
    "BackboneInitWarning",
    "CopsNet",
    "CostModel",
    "CostNet",
    "DeepLabDecoder",
    "PQSurrogateLoss",
    "PretrainLoss",
    "ResNetBackbone",
    "WeightsError",
    "build_backbone",
    "freeze_batchnorm",
    "hard_boundary_bce",
    "hard_pixel_cross_entropy",
    "load_backbone_weights",
]
