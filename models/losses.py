"""Pretraining losses: hard-pixel-mined semantic cross-entropy and boundary (cut) BCE.

Both average the worst ``top_k`` fraction of their entries, in one of two ways (``mine_from``):

- ``"all"`` (the paper, detectron2's ``DeepLabCE``): every position counts, ignored, zero-weight
  and padded ones included (their loss is 0): the mean of the ``k = int(top_k · numel)`` largest
  weighted losses; with ``top_k = 1`` the plain mean over all positions.
- ``"valid"`` (ours): only the valid entries (weight > 0 and, for semantics, label ≠ ignore)
  count: the mean of the ``ceil(top_k · #valid)`` largest, so void and padding do not dilute the
  signal; with ``top_k = 1`` ``Σ w·ℓ / #valid``. Sorting instead of ``topk`` keeps the number of
  selected entries a tensor, so no host synchronisation is needed on the GPU.

No entry to average gives an exact 0 that still carries a (zero) gradient, never NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from cops.recipes.schema import LossConfig

__all__ = ["PretrainLoss", "hard_boundary_bce", "hard_pixel_cross_entropy"]

IGNORE_INDEX = 255


def _check_fraction(top_k: float) -> None:
    """Reject a top-k fraction outside (0, 1]."""
    if not 0.0 < top_k <= 1.0:
        raise ValueError(f"top_k must be in (0, 1], got {top_k}")


def _top_k_mean(losses: Tensor, valid: Tensor, top_k: float, mine_from: str = "valid") -> Tensor:
    """Mean of the largest non-negative ``losses``: among all (``"all"``) or ``valid`` entries."""
    _check_fraction(top_k)
    if mine_from == "all":
        flat = torch.where(valid, losses, 0.0).flatten()
        k = max(int(top_k * flat.numel()), 1)
        if k >= flat.numel():
            return flat.sum() / flat.numel()
        return flat.topk(k, sorted=False).values.sum() / k
    if mine_from != "valid":
        raise ValueError(f"mine_from must be 'all' or 'valid', got {mine_from!r}")
    num_valid = valid.sum()
    if top_k == 1.0:
        return torch.where(valid, losses, 0.0).sum() / num_valid.clamp(min=1)
    flat = torch.where(valid, losses, -1.0).flatten()  # invalid entries sort last
    ordered = flat.sort(descending=True).values
    k = torch.ceil(num_valid.double() * top_k - 1e-9).long()
    ranks = torch.arange(ordered.numel(), device=ordered.device)
    return torch.where(ranks < k, ordered, 0.0).sum() / k.clamp(min=1)


def hard_pixel_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weights: Tensor,
    top_k: float = 0.2,
    ignore_index: int = IGNORE_INDEX,
    mine_from: str = "valid",
) -> Tensor:
    """Weighted per-pixel cross-entropy averaged over the worst ``top_k`` fraction of the pixels.

    ``logits [B, K, h, w]``, ``target [B, h, w]`` int64 (``ignore_index`` = void), ``weights
    [B, h, w]``; pixels with weight ≤ 0 or the ignore label have loss 0, and count in the
    fraction only with ``mine_from="all"`` (module doc), mined over the whole batch. Float32.
    """
    pixel = F.cross_entropy(logits.float(), target, reduction="none", ignore_index=ignore_index)
    valid = (weights > 0) & (target != ignore_index)
    return _top_k_mean(pixel * weights, valid, top_k, mine_from)


def hard_boundary_bce(
    logits: Tensor,
    target: Tensor,
    weights: Tensor,
    top_k: float = 0.25,
    per_map: bool = False,
    mine_from: str = "valid",
) -> Tensor:
    """Weighted binary cross-entropy of cut logits averaged over the worst ``top_k`` valid edges.

    ``logits``, ``target`` (1 = cut, 0 = joined) and ``weights`` are ``[B, 2D, h, w]``; edges with
    weight ≤ 0 (void, or partner outside the image) have loss 0 and count in the fraction only
    with ``mine_from="all"`` (module doc). Computed in float32. With ``per_map`` (the paper) each
    channel, one (distance, direction), is mined over the batch and averaged on its own and the
    2D terms are summed: long-distance edges, which are few and mostly easy, keep a term of their
    own instead of being outvoted by the distance-1 maps.
    """
    edge = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    weighted, valid = edge * weights, weights > 0
    if not per_map:
        return _top_k_mean(weighted, valid, top_k, mine_from)
    terms = [
        _top_k_mean(weighted[:, c], valid[:, c], top_k, mine_from) for c in range(weighted.shape[1])
    ]
    return torch.stack(terms).sum()


class PretrainLoss(nn.Module):
    """``semantic_weight · semantic CE + boundary_weight · boundary BCE`` from a recipe's ``loss``.

    Targets are expected at the logits' stride 4. Semantic targets at another size (full
    resolution, ``loss.semantic_resolution: full``, the paper) are scored by bilinearly upsampling
    the logits to them; cut targets must match the boundary logits exactly, as edge distances are
    defined on the stride-4 grid. ``loss.boundary_terms`` picks one term per edge map (the paper)
    or one pooled term.
    """

    def __init__(self, loss_cfg: LossConfig) -> None:
        super().__init__()
        _check_fraction(loss_cfg.semantic_top_k)
        _check_fraction(loss_cfg.boundary_top_k)
        self.semantic_weight = float(loss_cfg.semantic_weight)
        self.boundary_weight = float(loss_cfg.boundary_weight)
        self.semantic_top_k = float(loss_cfg.semantic_top_k)
        self.boundary_top_k = float(loss_cfg.boundary_top_k)
        self.per_map = loss_cfg.boundary_terms == "per_map"
        self.semantic_resolution = loss_cfg.semantic_resolution
        self.mine_from = loss_cfg.top_k_over

    def forward(
        self,
        semantic_logits: Tensor,
        semantic_target: Tensor,
        semantic_weights: Tensor,
        boundary_logits: Tensor,
        cut_target: Tensor,
        cut_weights: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the total loss and its unweighted, detached ``semantic``/``boundary`` parts."""
        if semantic_target.shape != semantic_weights.shape:
            raise ValueError(
                f"semantic target {tuple(semantic_target.shape)} and weights "
                f"{tuple(semantic_weights.shape)} differ in shape"
            )
        if not (boundary_logits.shape == cut_target.shape == cut_weights.shape):
            raise ValueError(
                f"boundary logits {tuple(boundary_logits.shape)}, cut target "
                f"{tuple(cut_target.shape)} and cut weights {tuple(cut_weights.shape)} must match"
            )
        if semantic_logits.shape[-2:] != semantic_target.shape[-2:]:
            semantic_logits = F.interpolate(
                semantic_logits,
                size=semantic_target.shape[-2:],
                mode="bilinear",
                align_corners=False,
            )
        semantic = hard_pixel_cross_entropy(
            semantic_logits,
            semantic_target,
            semantic_weights,
            self.semantic_top_k,
            mine_from=self.mine_from,
        )
        boundary = hard_boundary_bce(
            boundary_logits,
            cut_target,
            cut_weights,
            self.boundary_top_k,
            self.per_map,
            self.mine_from,
        )
        total = self.semantic_weight * semantic + self.boundary_weight * boundary
        return total, {"semantic": semantic.detach(), "boundary": boundary.detach()}
