"""The original COPS PQ surrogate on loss channels, with its ground-truth matching.

The original (``utils.ComputeBestGroundTruth`` and ``losses.PanopticQualityLoss``) works on
*channels*: first the predicted segments of an image, then one channel per ground-truth segment
that no prediction was matched to, whose prediction is an all-zero mask (so its false-negative term
still has a gradient, which the paper's backward turns into a multiway-cut label of its own).

Matching, per image and class ``c`` (ground-truth pixels of ``c``: ``gt_semantic == c`` with a
non-zero segment id, so void and crowd belong to no class):

- stuff: a predicted channel of ``c`` gets the class mask as its ground truth (possibly empty, a
  false positive); without a prediction, a non-empty class mask becomes an extra channel;
- things: the predicted channels of ``c`` and the instances of ``c`` (ascending segment id) are
  paired by a Hungarian assignment maximising the soft IoU; an unmatched prediction keeps an empty
  ground truth, unmatched instances become extra channels (class order, then instance order).

Loss, with pixel weights ``w``, per channel: soft IoU ``(Σ w·p·g + 0.1) / (Σ w·(p + g − p·g) +
0.1)``, ``t = IoU⁴ / (IoU⁴ + (1 − IoU)⁴)``, ``nz`` = ground truth non-empty and the foreground
probability ``fg = σ(0.1·(area − min_area[class]))`` on the UNWEIGHTED predicted area (void and
padding pixels count; the gradient flows through it). Per class over the whole batch:
``num = Σ t·fg·nz·IoU``, ``den = Σ t·fg·nz + ½Σ (1 − t)·nz + ½Σ (1 − nz)·(1 − t)·fg`` and
``pq_c = (num + 0.1) / (den + 0.1)`` for every class with a channel and ``den > 0``; the loss is
``1 − mean_c pq_c``. With several processes the per-class sums are pooled over the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

IGNORE = 255
SMOOTH = 0.1
"""The original's smoothing constant of soft IoU and of the per-class PQ ratio."""
AREA_SLOPE = 0.1
"""Slope of the original's foreground probability σ(0.1·(area − min_area))."""


@dataclass(frozen=True)
class LossChannels:
    """Loss channels of a batch: ``gt`` [B, N, C] float 0/1, ``classes`` [B, C] (-1 = padding),
    ``num_pred`` [B] (channels ``0..num_pred[b]-1`` are the predicted segments, then the
    unmatched ground truths)."""

    gt: Tensor
    classes: Tensor
    num_pred: Tensor


@dataclass(frozen=True)
class PaperTerms:
    """The surrogate's value and per-channel parts: ``ious``, ``foreground_prob`` [B, C]."""

    loss: Tensor
    ious: Tensor
    foreground_prob: Tensor


def soft_iou(pred: Tensor, gt: Tensor, weights: Tensor, dim: int) -> Tensor:
    """The original's smoothed weighted IoU of masks, summed over the node axis ``dim``."""
    inter = pred * gt
    num = (inter * weights).sum(dim)
    den = ((pred + gt - inter) * weights).sum(dim)
    return (num + SMOOTH) / (den + SMOOTH)


def match_channels(
    segments: Tensor,
    classes: Tensor,
    gt_panoptic: Tensor,
    gt_semantic: Tensor,
    weights: Tensor,
    isthing: Tensor,
) -> LossChannels:
    """Ground truth of every predicted segment plus the unmatched ground truths (module doc).

    ``segments`` [B, N] predicted segment per node (-1 = none), ``classes`` [B, S] class per
    segment (-1 = padding), ``gt_panoptic`` [B, N] segment ids (0 = void or crowd),
    ``gt_semantic`` [B, N] classes, ``weights`` [B, N] pixel weights of the soft IoU.
    """
    device = segments.device
    per_image = []
    for b in range(segments.shape[0]):
        pred_classes = classes[b][classes[b] >= 0].tolist()
        preds = torch.nn.functional.one_hot(segments[b] + 1, len(pred_classes) + 1)[:, 1:]
        per_image.append(
            _match_image(
                preds.to(weights.dtype), pred_classes, gt_panoptic[b], gt_semantic[b],
                weights[b], isthing.tolist(),
            )
        )  # fmt: skip
    width = max((gt.shape[1] for gt, _ in per_image), default=0)
    gt = weights.new_zeros(segments.shape[0], segments.shape[1], width)
    out_classes = torch.full((segments.shape[0], width), -1, dtype=torch.long, device=device)
    for b, (image_gt, image_classes) in enumerate(per_image):
        gt[b, :, : image_gt.shape[1]] = image_gt
        out_classes[b, : len(image_classes)] = torch.as_tensor(image_classes, device=device)
    num_pred = (classes >= 0).sum(1)
    return LossChannels(gt, out_classes, num_pred)


def _match_image(
    preds: Tensor,
    pred_classes: list[int],
    panoptic: Tensor,
    semantic: Tensor,
    weights: Tensor,
    isthing: list[bool],
) -> tuple[Tensor, list[int]]:
    """One image's ground truth [N, C_b] for its predictions [N, S_b], and the channel classes."""
    gt = torch.zeros_like(preds)
    extras: list[Tensor] = []
    extra_classes: list[int] = []
    by_class: dict[int, list[int]] = {}
    for index, c in enumerate(pred_classes):
        by_class.setdefault(c, []).append(index)
    panoptic = panoptic.long()
    for c in range(len(isthing)):
        in_class = (semantic.long() == c) & (panoptic != 0)
        own = by_class.get(c, [])
        if not isthing[c]:
            if own:
                gt[:, own[0]] = in_class.to(gt.dtype)
            elif bool(in_class.any()):
                extras.append(in_class)
                extra_classes.append(c)
            continue
        ids = torch.unique(panoptic[in_class])
        masks = (panoptic.unsqueeze(1) == ids.unsqueeze(0)).to(gt.dtype)  # [N, G]
        unmatched = list(range(ids.numel()))
        if own and ids.numel():
            sim = soft_iou(preds[:, own, None], masks[:, None], weights[:, None, None], 0)
            rows, cols = linear_sum_assignment(sim.detach().cpu().numpy(), maximize=True)
            for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
                gt[:, own[row]] = masks[:, col]
                unmatched.remove(col)
        extras.extend(masks[:, i] > 0 for i in unmatched)
        extra_classes.extend([c] * len(unmatched))
    if extras:
        gt = torch.cat([gt, torch.stack(extras, 1).to(gt.dtype)], 1)
    return gt, pred_classes + extra_classes


def paper_surrogate(
    pred: Tensor,
    channels: LossChannels,
    weights: Tensor,
    min_area: Tensor,
) -> PaperTerms:
    """The original's 1 − PQ surrogate of loss channels ``pred`` [B, N, C] (module doc).

    ``min_area`` [K] is the minimum predicted area per class in nodes (thing and stuff values).
    """
    gt, classes = channels.gt, channels.classes
    ious = soft_iou(pred, gt, weights.unsqueeze(-1), 1)
    t = ious.pow(4) / (ious.pow(4) + (1.0 - ious).pow(4))
    nz = (gt > 0).any(1).to(pred.dtype)
    area = pred.sum(1)
    valid = classes >= 0
    threshold = min_area.to(pred)[classes.clamp(min=0)]
    fg = torch.where(valid, torch.sigmoid(AREA_SLOPE * (area - threshold)), 0.0)
    tp = t * fg * nz
    k = int(min_area.numel())
    index = classes.clamp(min=0).flatten()
    keep = valid.flatten().to(pred.dtype)

    def per_class(x: Tensor) -> Tensor:
        return pred.new_zeros(k).index_add(0, index, x.flatten() * keep)

    num = per_class(tp * ious)
    den = per_class(tp + 0.5 * (1.0 - t) * nz + 0.5 * (1.0 - nz) * (1.0 - t) * fg)
    count = per_class(torch.ones_like(fg))
    num, den, count = _global_sums(num, den, count)
    scored = (count > 0) & (den > 0)
    if not bool(scored.any()):
        return PaperTerms(pred.sum() * 0.0, ious, fg)
    pq = (num[scored] + SMOOTH) / (den[scored] + SMOOTH)
    return PaperTerms(1.0 - pq.mean(), ious, fg)


def _global_sums(*local: Tensor) -> tuple[Tensor, ...]:
    """Per-class sums over every process's batch: the others' parts enter as constants, so each
    process's gradient is the global loss's through its own images."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    stacked = torch.stack([x.detach() for x in local])
    total = stacked.clone()
    dist.all_reduce(total)
    return tuple(x + (total[i] - stacked[i]) for i, x in enumerate(local))


def segments_of_masks(masks: Tensor) -> Tensor:
    """Segment per node [B, N] of one-hot masks [B, N, S] (-1 where no mask is set)."""
    hard = masks.detach() > 0.5
    return torch.where(hard.any(-1), hard.to(torch.uint8).argmax(-1), -1).long()


def min_areas(isthing: Tensor, thing: float, stuff: float) -> Tensor:
    """Minimum area per class [K]: ``thing`` for thing classes, ``stuff`` otherwise."""
    return torch.where(isthing, thing, stuff).to(torch.float64)
