"""The original COPS training computations, checked against a capture of the original code.

The fixture (`tests/_training_fixture.py`; the folder `$COPS_TRAINING_FIXTURE` when that is set,
else the copy in tests/data/cops_reference_training) holds targets from a drawn ground truth, the
pretraining losses and gradients, the perturbation backward with every solver call recorded, and
the inference outputs. Every input here is derived from its documented files only, so the same
tests run on another capture of the same format.
"""

from __future__ import annotations

import numpy as np
import torch

from cops.models.heads import midpoint_to_source
from cops.models.losses import PretrainLoss, hard_boundary_bce, hard_pixel_cross_entropy
from cops.recipes.schema import LossConfig
from tests import _training_fixture as fixture


def _distances() -> list[int]:
    """The Cityscapes edge distances of the capture (its target generator's attributes)."""
    return list(
        fixture.meta("capture_info")["target_generator"]["img0"]["pretrain"]["edge_distances"]
    )


def _to_source(maps: np.ndarray, d: int) -> torch.Tensor:
    """A fixture edge array [B, 2, h, w] (midpoint layout) in the project's source layout."""
    return midpoint_to_source(torch.from_numpy(np.ascontiguousarray(maps)), d)


# ---------------------------------------------------------------------------------------------
# Section 2: pretraining losses (README "Using it" item 2): the original's DeepLabCE over the
# whole batch and one BCE per (distance, direction), top-k over all positions.


def _pretrain_inputs() -> dict[str, torch.Tensor]:
    """The capture's logits and Cityscapes pretraining targets as a batch of two, our layout."""
    targets, logits = fixture.arrays("targets"), fixture.arrays("network_outputs")
    distances = _distances()
    stack = lambda key: np.stack([targets[f"img{b}_{key}"] for b in range(2)])  # noqa: E731
    boundary = [_to_source(logits[f"aff_logits_d{d}"], d) for d in distances]
    cuts = [_to_source(stack(f"affinities_d{d}").astype(np.float32), d) for d in distances]
    weights = [_to_source(stack(f"affinity_weights_d{d}_pretrain"), d) for d in distances]
    return {
        "semantic": torch.from_numpy(logits["sem_logits"]).requires_grad_(True),
        "target": torch.from_numpy(stack("sem_seg").astype(np.int64)),
        "weights": torch.from_numpy(stack("sem_seg_weights_pretrain").astype(np.float32)),
        "boundary": torch.cat(boundary, dim=1).requires_grad_(True),
        "cuts": torch.cat(cuts, dim=1),
        "cut_weights": torch.cat(weights, dim=1),
    }


def test_pretraining_losses_and_gradients_equal_the_originals() -> None:
    x, ref = _pretrain_inputs(), fixture.arrays("pretrain_losses")
    cfg = LossConfig()  # the schema defaults are the paper's
    assert cfg.top_k_over == "all"
    upsampled = torch.nn.functional.interpolate(
        x["semantic"], size=x["target"].shape[-2:], mode="bilinear", align_corners=False
    )
    semantic = hard_pixel_cross_entropy(
        upsampled, x["target"], x["weights"], cfg.semantic_top_k, mine_from=cfg.top_k_over
    )
    np.testing.assert_allclose(semantic.item(), ref["loss_sem_seg"], rtol=1e-5)
    (grad,) = torch.autograd.grad(semantic, x["semantic"])
    np.testing.assert_allclose(grad.numpy(), ref["grad_sem_logits"], rtol=0, atol=1e-7)

    terms = []
    for i, d in enumerate(_distances()):
        for c in range(2):
            ch = slice(2 * i + c, 2 * i + c + 1)
            term = cfg.boundary_weight * hard_boundary_bce(
                x["boundary"][:, ch],
                x["cuts"][:, ch],
                x["cut_weights"][:, ch],
                cfg.boundary_top_k,
                mine_from=cfg.top_k_over,
            )
            np.testing.assert_allclose(
                term.item(), ref[f"loss_affinities_dist_{d}_c_{c}"], rtol=1e-5
            )
            terms.append(term)
    (grad,) = torch.autograd.grad(torch.stack(terms).sum(), x["boundary"])
    for i, d in enumerate(_distances()):
        expected = _to_source(ref[f"grad_aff_logits_d{d}"], d).numpy()
        np.testing.assert_allclose(grad[:, 2 * i : 2 * i + 2].numpy(), expected, rtol=0, atol=1e-7)

    # The recipe-level loss is the same sum: semantic + 0.25 · Σ of the per-map terms.
    total, parts = PretrainLoss(cfg)(
        x["semantic"], x["target"], x["weights"], x["boundary"], x["cuts"], x["cut_weights"]
    )
    expected_total = ref["loss_sem_seg"] + sum(
        ref[f"loss_affinities_dist_{d}_c_{c}"] for d in _distances() for c in range(2)
    )
    np.testing.assert_allclose(total.item(), expected_total, rtol=1e-5)
    np.testing.assert_allclose(parts["semantic"].item(), ref["loss_sem_seg"], rtol=1e-5)


def test_top_k_over_valid_positions_differs_on_the_capture() -> None:
    """Ours (`valid`) mines another set, so the option matters on the original's inputs."""
    x, ref = _pretrain_inputs(), fixture.arrays("pretrain_losses")
    ours = hard_boundary_bce(
        x["boundary"][:, -2:-1],
        x["cuts"][:, -2:-1],
        x["cut_weights"][:, -2:-1],
        0.25,
        mine_from="valid",
    )
    d = _distances()[-1]
    assert abs(0.25 * ours.item() - float(ref[f"loss_affinities_dist_{d}_c_0"])) > 1e-3
