"""Panoptic, semantic and instance metrics: PQ/SQ/RQ (panopticapi-exact), mIoU, mask AP."""
