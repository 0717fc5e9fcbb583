"""CNN backbones, decoders, losses and the cost model."""

from .backbone import (
    BACKBONES,
    BackboneInitWarning,
    ResNetBackbone,
    WeightsError,
    build_backbone,
    freeze_batchnorm,
    load_backbone_weights,
)
from .cops_net import CopsNet, CostNet
from .costs import CostModel
from .decoder import ASPP, DeepLabDecoder
from .losses import PretrainLoss, hard_boundary_bce, hard_pixel_cross_entropy
from .pq_loss import PQSurrogateLoss

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
