"""Panoptic, semantic and instance metrics: PQ/SQ/RQ (panopticapi-exact), mIoU, mask AP."""

from cops.evaluation.evaluator import PER_IMAGE_COLUMNS, PanopticEvaluator
from cops.evaluation.instance_ap import MaskAP, segment_rles
from cops.evaluation.panoptic_quality import (
    CategoryIndex,
    PQStats,
    image_pq_stats,
    pq_compute_files,
    segment_buckets,
    segment_runs,
)
from cops.evaluation.semantic import IGNORE, ConfusionMatrix, semantic_from_panoptic

__all__ = [
    "IGNORE",
    "PER_IMAGE_COLUMNS",
    "CategoryIndex",
    "ConfusionMatrix",
    "MaskAP",
    "PQStats",
    "PanopticEvaluator",
    "image_pq_stats",
    "pq_compute_files",
    "segment_buckets",
    "segment_rles",
    "segment_runs",
    "semantic_from_panoptic",
]
