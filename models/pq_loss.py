"""Smooth panoptic-quality surrogate on predicted segment masks (the finetune-pq loss, DESIGN §6).

Definitions, per image, with pixel weights ``w`` (0 = ignored: void and crowd):

- Weighted areas and overlaps: ``area(p) = Σ_n w_n m_p[n]`` for a predicted (soft) mask ``m_p``,
  ``area(u) = Σ_n w_n [gt_n = u]`` for a ground-truth segment ``u``, ``I(p, u) = Σ_n w_n m_p[n]
  [gt_n = u]``, ``IoU(p, u) = I / (area(p) + area(u) − I + eps)``. Segments with zero weighted
  area (and padding, class −1) do not exist; a gt segment's class is its ``gt_semantic`` value.
- Soft "is a true positive": ``t = IoU^β / (IoU^β + (1 − IoU)^β)`` (a smooth step at 0.5,
  computed as ``σ(β·logit(IoU))``).
- Soft "large enough to count": ``a_p = σ(area_slope·(size(p) − min_area(class)))`` for
  predicted segments, with ``size(p) = Σ_n m_p[n]`` the UNWEIGHTED pixel count: the evaluator
  drops predicted components by pixel count, so the threshold must not depend on the loss
  weights (thing pixels ×4, small instances heavier); gt segments always count.
- Matching, per class: predicted and gt segments of the same class are paired by a Hungarian
  assignment maximising ``Σ a_p·t·IoU`` on detached values (for stuff this is the direct pairing
  of the one predicted segment with the gt segment); pairs with zero score stay unmatched.
- Soft counts for class ``k`` with predicted segments ``P_k`` and gt segments ``G_k``:
  ``TP = Σ_matched a_p t``, ``FP = Σ_{P_k} a_p − TP`` (unmatched predictions plus the matched
  ones' ``a_p(1 − t)``), ``FN = |G_k| − TP`` (unmatched gts plus ``1 − a_p t`` of matched ones),
  and ``soft_PQ_k = Σ_matched a_p t IoU / (TP + ½FP + ½FN + eps)``; the denominator equals
  ``½(Σ a_p + |G_k|)``, as for exact PQ.
- Classes present: a class with a gt segment counts 1; a class with predictions only counts
  ``1 − Π_{P_k}(1 − a_p)`` (the soft chance that any of them survives the size threshold). The
  image's soft PQ is ``Σ_k soft_PQ_k / Σ_k present_k``; loss = 1 − mean over images (images
  where nothing is present are left out; if none is left, the loss is 0 and the metrics NaN).

With binary masks, ``β → ∞``, ``eps → 0`` and ``area_slope → ∞`` every soft quantity becomes
its hard counterpart (``t → [IoU > 0.5]``, ``a_p → [size ≥ min_area]``) and the surrogate is the
COCO panoptic PQ of the image (pixels of weight 0 leave every area, like panopticapi's void).
The hard version is returned alongside as ``"pq"``. This is ``mode="exact"``.

``mode="paper"`` is the original COPS surrogate, kept exactly (:mod:`cops.models.paper_pq`: its
ground-truth matching with one extra channel per unmatched ground truth, its soft IoU smoothed by
0.1, the foreground probability on the unweighted area, per-class sums over the whole batch); the
minimum areas are then in nodes of the stride-4 grid as the caller passes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from cops.models.paper_pq import (
    LossChannels,
    PaperTerms,
    match_channels,
    min_areas,
    paper_surrogate,
    segments_of_masks,
)

IGNORE = 255


class PQSurrogateLoss(nn.Module):
    """1 − smooth panoptic quality of predicted masks (module doc); gradients reach the masks."""

    def __init__(
        self,
        isthing: Sequence[bool],
        beta: float = 4.0,
        thing_min_area: float = 0.0,
        stuff_min_area: float = 0.0,
        area_slope: float = 0.1,
        eps: float = 1e-6,
        mode: Literal["exact", "paper"] = "exact",
    ) -> None:
        """``isthing`` per train id; min areas in pixels of the masks (not input pixels)."""
        super().__init__()
        if mode not in ("exact", "paper"):
            raise ValueError(f"mode: expected 'exact' or 'paper', got {mode!r}")
        self.mode = mode
        flags = torch.as_tensor([bool(x) for x in isthing], dtype=torch.bool)
        if flags.ndim != 1 or flags.numel() == 0:
            raise ValueError(f"isthing: expected a non-empty sequence of flags, got {isthing!r}")
        for name, value in (("beta", beta), ("area_slope", area_slope)):
            if not 0.0 < float(value) < float("inf"):
                raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
        if not 0.0 <= float(eps) < float("inf"):
            raise ValueError(f"eps: expected a non-negative finite number, got {eps!r}")
        self.register_buffer("isthing", flags, persistent=False)
        self.beta = float(beta)
        self.thing_min_area = float(thing_min_area)
        self.stuff_min_area = float(stuff_min_area)
        self.area_slope = float(area_slope)
        self.eps = float(eps)

    @property
    def num_classes(self) -> int:
        """Number of training classes."""
        return int(self.isthing.numel())

    def forward(
        self,
        masks: Tensor,
        classes: Tensor,
        gt_panoptic: Tensor,
        gt_semantic: Tensor,
        weights: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and detached ``{"soft_pq", "pq"}`` of a batch (shapes in the module doc).

        ``masks`` [B, N, S] float, ``classes`` [B, S] (-1 = padding), ``gt_panoptic`` [B, N]
        segment ids (0 = void), ``gt_semantic`` [B, N] train ids (255 = ignore), ``weights``
        [B, N] (0 = ignore).
        """
        self._check(masks, classes, gt_panoptic, gt_semantic, weights)
        classes = classes.long()
        if self.mode == "paper":
            segments = segments_of_masks(masks)
            channels = self.match(segments, classes, gt_panoptic, gt_semantic, weights)
            pred = nn.functional.pad(masks, (0, channels.gt.shape[2] - masks.shape[2]))
            soft_pq = 1.0 - self.paper(pred, channels, weights).loss
        else:
            soft_pq = _mean_defined(
                [
                    self._image_pq(
                        masks[b], classes[b], weights[b],
                        _GroundTruth.of(gt_panoptic[b], gt_semantic[b], weights[b], masks.dtype),
                        hard=False,
                    )
                    for b in range(masks.shape[0])
                ]
            )  # fmt: skip
        pq = self.hard_pq(masks, classes, gt_panoptic, gt_semantic, weights)
        loss = masks.sum() * 0.0 if soft_pq is None else 1.0 - soft_pq
        nan = masks.new_tensor(float("nan"))
        return loss, {"soft_pq": nan if soft_pq is None else soft_pq.detach(), "pq": pq}

    def match(
        self,
        segments: Tensor,
        classes: Tensor,
        gt_panoptic: Tensor,
        gt_semantic: Tensor,
        weights: Tensor,
    ) -> LossChannels:
        """The original's loss channels: predicted segments, then unmatched ground truths."""
        isthing = self.isthing.to(segments.device)
        return match_channels(segments, classes, gt_panoptic, gt_semantic, weights, isthing)

    def paper(self, pred: Tensor, channels: LossChannels, weights: Tensor) -> PaperTerms:
        """The original surrogate of loss channels ``pred`` [B, N, C] (its own min areas)."""
        areas = min_areas(self.isthing, self.thing_min_area, self.stuff_min_area)
        return paper_surrogate(pred, channels, weights, areas)

    def hard_pq(
        self,
        masks: Tensor,
        classes: Tensor,
        gt_panoptic: Tensor,
        gt_semantic: Tensor,
        weights: Tensor,
    ) -> Tensor:
        """Mean exact PQ of the images (NaN when nothing is present), for logging."""
        hard_masks = (masks.detach() > 0.5).to(masks.dtype)
        values = [
            self._image_pq(
                hard_masks[b], classes[b].long(), weights[b],
                _GroundTruth.of(gt_panoptic[b], gt_semantic[b], weights[b], masks.dtype), hard=True,
            )
            for b in range(masks.shape[0])
        ]  # fmt: skip
        pq = _mean_defined(values)
        return masks.new_tensor(float("nan")) if pq is None else pq.detach()

    def _image_pq(
        self, masks: Tensor, classes: Tensor, weights: Tensor, gt: _GroundTruth, hard: bool
    ) -> Tensor | None:
        """(Soft or exact) PQ of one image, or None when no class is present."""
        k = self.num_classes
        weighted = masks * weights.unsqueeze(1)
        pred_area = weighted.sum(0)
        keep = (classes >= 0) & (pred_area.detach() > 0)
        pred_class = classes[keep]
        pred_area = pred_area[keep]
        size = masks.sum(0)[keep]
        inter = weighted.new_zeros(gt.num_segments + 1, masks.shape[1])
        inter = inter.index_add(0, gt.index, weighted)[: gt.num_segments, keep]
        union = gt.area.unsqueeze(1) + pred_area.unsqueeze(0) - inter
        eps = 0.0 if hard else self.eps  # the exact PQ has no smoothing constant
        iou = inter / (union + eps)
        min_area = torch.where(
            self.isthing.to(pred_class.device)[pred_class],  # the module may stay on the CPU
            self.thing_min_area,
            self.stuff_min_area,
        ).to(size.dtype)
        if hard:
            t = (iou > 0.5).to(iou.dtype)
            large = (size >= min_area).to(iou.dtype)
            log_small = torch.where(large > 0, -torch.inf, 0.0).to(iou.dtype)
        else:
            tiny = torch.finfo(iou.dtype).eps
            clamped = iou.clamp(tiny, 1.0 - tiny)
            t = torch.sigmoid(self.beta * (torch.log(clamped) - torch.log1p(-clamped)))
            size_logit = self.area_slope * (size - min_area)
            large = torch.sigmoid(size_logit)
            log_small = torch.nn.functional.logsigmoid(-size_logit)  # log(1 - large), stable
        same = gt.classes.unsqueeze(1) == pred_class.unsqueeze(0)
        gain = large.unsqueeze(0) * t * iou * same
        rows, cols = linear_sum_assignment(gain.detach().cpu().numpy(), maximize=True)
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=gain.device)
        cols_t = torch.as_tensor(cols, dtype=torch.long, device=gain.device)
        pairs, pair_class = gain[rows_t, cols_t], pred_class[cols_t]
        positive = pairs.detach() > 0
        numerator = gain.new_zeros(k).index_add(0, pair_class[positive], pairs[positive])
        sum_large = gain.new_zeros(k).index_add(0, pred_class, large)
        num_gt = torch.bincount(gt.classes, minlength=k).to(gain.dtype)
        has_pred = torch.bincount(pred_class, minlength=k) > 0
        all_small = torch.exp(gain.new_zeros(k).index_add(0, pred_class, log_small))
        counted = torch.where(num_gt > 0, torch.ones_like(num_gt), 1.0 - all_small)
        present = (num_gt > 0) | has_pred
        total = counted[present].sum()
        if float(total.detach()) <= 0.0:
            return None
        denominator = 0.5 * (sum_large + num_gt) + eps
        pq = numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
        return pq[present].sum() / total

    def _check(
        self,
        masks: Tensor,
        classes: Tensor,
        gt_panoptic: Tensor,
        gt_semantic: Tensor,
        weights: Tensor,
    ) -> None:
        """Shapes, dtypes and value ranges of the inputs (ValueError naming the argument)."""
        if not isinstance(masks, Tensor) or masks.ndim != 3 or not masks.is_floating_point():
            raise ValueError(f"masks: expected a float tensor [B, N, S], got {_describe(masks)}")
        b, n, s = masks.shape
        expected = {
            "classes": (classes, (b, s)),
            "gt_panoptic": (gt_panoptic, (b, n)),
            "gt_semantic": (gt_semantic, (b, n)),
            "weights": (weights, (b, n)),
        }
        for name, (value, shape) in expected.items():
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                raise ValueError(
                    f"{name}: expected a tensor of shape {shape}, got {_describe(value)}"
                )
            if value.device != masks.device:
                raise ValueError(f"{name}: on {value.device}, but masks is on {masks.device}")
            floating = name == "weights"
            if value.is_floating_point() != floating or value.dtype == torch.bool:
                kind = "float" if floating else "integer"
                raise ValueError(f"{name}: expected a {kind} tensor, got {value.dtype}")
        k = self.num_classes
        if classes.numel() and (int(classes.min()) < -1 or int(classes.max()) >= k):
            raise ValueError(
                f"classes: expected values in [-1, {k}), got [{int(classes.min())}, "
                f"{int(classes.max())}]"
            )
        bad = (gt_semantic != IGNORE) & ((gt_semantic < 0) | (gt_semantic >= k))
        if bool(bad.any()):
            raise ValueError(f"gt_semantic: expected train ids in [0, {k}) or {IGNORE}")
        if bool((gt_panoptic < 0).any()):
            raise ValueError("gt_panoptic: segment ids must be non-negative (0 = void)")
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("weights: expected finite non-negative values")


class _GroundTruth:
    """Ground-truth segments of one image that count: id index per pixel, class and area."""

    def __init__(self, index: Tensor, classes: Tensor, area: Tensor, num_segments: int) -> None:
        """``index`` [N] row of each pixel (``num_segments`` = dropped row), rows' class/area."""
        self.index = index
        self.classes = classes
        self.area = area
        self.num_segments = num_segments

    @classmethod
    def of(
        cls, panoptic: Tensor, semantic: Tensor, weights: Tensor, dtype: torch.dtype
    ) -> _GroundTruth:
        """Segments with positive weighted area, non-void id and a known, constant class."""
        ids, index = torch.unique(panoptic.long(), return_inverse=True)
        semantic = semantic.long()
        w = weights.to(dtype)
        area = w.new_zeros(ids.numel()).index_add(0, index, w)
        counted = w > 0
        sem = semantic[counted]
        lo = torch.full_like(ids, IGNORE + 1).scatter_reduce(0, index[counted], sem, "amin")
        hi = torch.full_like(ids, -1).scatter_reduce(0, index[counted], sem, "amax")
        valid = (ids != 0) & (area > 0)
        if bool((valid & (lo != hi)).any()):
            bad = ids[valid & (lo != hi)][0]
            raise ValueError(
                f"gt_semantic: gt segment {int(bad)} has more than one class on its weighted pixels"
            )
        valid &= hi != IGNORE
        rows = torch.cumsum(valid.long(), 0) - 1
        count = int(valid.sum())
        row_of_pixel = torch.where(valid[index], rows[index], count)
        return cls(row_of_pixel, hi[valid], area[valid], count)


def _mean_defined(values: list[Tensor | None]) -> Tensor | None:
    """Mean of the per-image values that are defined (None: nothing present in that image)."""
    defined = [v for v in values if v is not None]
    return torch.stack(defined).mean() if defined else None


def _describe(x: object) -> str:
    """Type and shape of ``x`` for error messages."""
    if isinstance(x, Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
