"""Hard-pixel-mined semantic CE, boundary BCE and the combined pretraining loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cops.models import (
    PretrainLoss,
    SemanticBoundaryNet,
    hard_boundary_bce,
    hard_pixel_cross_entropy,
)
from cops.models.losses import _top_k_mean
from cops.recipes.schema import LossConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _semantic_batch(seed: int = 0, classes: int = 4, shape=(2, 6, 7)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], classes, *shape[1:], generator=gen, requires_grad=True)
    target = torch.randint(0, classes, shape, generator=gen)
    target[0, 0, :3] = 255
    weights = torch.rand(shape, generator=gen) * 3 + 0.5
    weights[1, 2, :] = 0.0
    return logits, target, weights


def _plain_weighted_ce(logits, target, weights):
    valid = (weights > 0) & (target != 255)
    pixel = F.cross_entropy(logits, target.clamp(max=logits.shape[1] - 1), reduction="none")
    return (pixel * weights)[valid].mean(), (pixel * weights)[valid]


def test_top_k_one_equals_plain_weighted_ce():
    logits, target, weights = _semantic_batch()
    expected, _ = _plain_weighted_ce(logits, target, weights)
    got = hard_pixel_cross_entropy(logits, target, weights, top_k=1.0)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("top_k", [0.2, 0.5, 0.01, 0.999])
def test_top_k_averages_the_worst_valid_pixels(top_k):
    logits, target, weights = _semantic_batch(seed=1)
    _, valid_losses = _plain_weighted_ce(logits, target, weights)
    k = math.ceil(top_k * valid_losses.numel())
    expected = valid_losses.sort(descending=True).values[:k].mean()
    got = hard_pixel_cross_entropy(logits, target, weights, top_k=top_k)
    torch.testing.assert_close(got, expected)
    if k < valid_losses.numel():
        assert got > valid_losses.mean()


def test_top_k_gradient_only_reaches_selected_pixels():
    logits, target, weights = _semantic_batch(seed=2)
    hard_pixel_cross_entropy(logits, target, weights, top_k=0.2).backward()
    touched = (logits.grad.abs().sum(1) > 0).sum().item()
    num_valid = ((weights > 0) & (target != 255)).sum().item()
    assert touched == math.ceil(0.2 * num_valid)


def test_ignored_pixels_do_not_count():
    logits, target, weights = _semantic_batch(seed=3)
    base = hard_pixel_cross_entropy(logits, target, weights, top_k=0.3)
    ignored = (weights == 0) | (target == 255)
    changed = logits.detach().clone()
    changed[ignored.unsqueeze(1).expand_as(changed)] = 50.0 * torch.randn(int(ignored.sum()) * 4)
    changed.requires_grad_(True)
    again = hard_pixel_cross_entropy(changed, target, weights, top_k=0.3)
    torch.testing.assert_close(again, base)
    again.backward()
    assert (changed.grad.abs().sum(1)[ignored] == 0).all()


def _boundary_batch(seed: int = 0, shape=(2, 4, 5, 6)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, requires_grad=True)
    target = (torch.rand(shape, generator=gen) > 0.7).float()
    weights = torch.rand(shape, generator=gen) + 0.5
    weights[:, :, -1, :] = 0.0  # e.g. vertical partners outside the grid
    weights[0, 1] = 0.0
    return logits, target, weights


def test_boundary_bce_top_k_and_plain_mean():
    logits, target, weights = _boundary_batch()
    edge = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weights
    valid = edge[weights > 0]
    torch.testing.assert_close(hard_boundary_bce(logits, target, weights, 1.0), valid.mean())
    k = math.ceil(0.25 * valid.numel())
    expected = valid.sort(descending=True).values[:k].mean()
    torch.testing.assert_close(hard_boundary_bce(logits, target, weights, 0.25), expected)


def test_boundary_bce_ignores_zero_weight_edges():
    logits, target, weights = _boundary_batch(seed=1)
    base = hard_boundary_bce(logits, target, weights)
    ignored = weights == 0
    logits2 = logits.detach().clone()
    logits2[ignored] = -100.0
    target2 = target.clone()
    target2[ignored] = 1.0  # would be the worst possible edges if they counted
    logits2.requires_grad_(True)
    again = hard_boundary_bce(logits2, target2, weights)
    torch.testing.assert_close(again, base)
    again.backward()
    assert (logits2.grad[ignored] == 0).all()


def test_all_ignored_gives_zero_with_gradient():
    logits, target, weights = _semantic_batch()
    target = torch.full_like(target, 255)
    sem = hard_pixel_cross_entropy(logits, target, weights)
    b_logits, cut, _ = _boundary_batch()
    bnd = hard_boundary_bce(b_logits, cut, torch.zeros_like(cut))
    assert sem.item() == 0.0 and bnd.item() == 0.0
    assert sem.requires_grad and bnd.requires_grad
    (sem + bnd).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()
    assert torch.isfinite(b_logits.grad).all() and (b_logits.grad == 0).all()


def test_half_precision_logits_are_computed_in_float32():
    logits, target, weights = _semantic_batch()
    got = hard_pixel_cross_entropy(logits.detach().half(), target, weights, top_k=1.0)
    assert got.dtype == torch.float32
    expected, _ = _plain_weighted_ce(logits.detach().half().float(), target, weights)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("top_k", [0.0, -0.1, 1.5])
def test_invalid_top_k(top_k):
    logits, target, weights = _semantic_batch()
    with pytest.raises(ValueError, match="top_k"):
        hard_pixel_cross_entropy(logits, target, weights, top_k=top_k)
    with pytest.raises(ValueError, match="top_k"):
        PretrainLoss(LossConfig(boundary_top_k=top_k))


def test_pretrain_loss_combines_components():
    cfg = LossConfig(semantic_weight=2.0, boundary_weight=0.5, semantic_top_k=0.3)
    loss = PretrainLoss(cfg)
    sem_logits, target, weights = _semantic_batch(shape=(2, 5, 6))
    b_logits, cut, cut_w = _boundary_batch(shape=(2, 4, 5, 6))
    total, parts = loss(sem_logits, target, weights, b_logits, cut, cut_w)
    sem = hard_pixel_cross_entropy(sem_logits, target, weights, 0.3, mine_from="all")
    bnd = hard_boundary_bce(b_logits, cut, cut_w, 0.25, per_map=True, mine_from="all")  # paper
    torch.testing.assert_close(total, 2.0 * sem + 0.5 * bnd)
    assert set(parts) == {"semantic", "boundary"}
    torch.testing.assert_close(parts["semantic"], sem.detach())
    assert not parts["boundary"].requires_grad
    total.backward()
    assert sem_logits.grad is not None and b_logits.grad is not None


def test_pretrain_loss_upsamples_logits_to_full_resolution_targets():
    loss = PretrainLoss(LossConfig())
    sem_logits = torch.randn(1, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 3, (1, 16, 20))
    weights = torch.ones(1, 16, 20)
    b_logits, cut = torch.randn(1, 2, 4, 5), torch.zeros(1, 2, 4, 5)
    total, parts = loss(sem_logits, target, weights, b_logits, cut, torch.ones_like(cut))
    upsampled = F.interpolate(sem_logits, size=(16, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        parts["semantic"],
        hard_pixel_cross_entropy(upsampled, target, weights, mine_from="all").detach(),
    )
    assert torch.isfinite(total)


def test_top_k_over_all_positions_counts_ignored_and_padded_entries():
    """The paper's mining: k = int(top_k · numel) over every entry, zeros of void included."""
    losses = torch.tensor([4.0, 3.0, 2.0, 1.0, 9.0, 9.0, 0.5, 0.25])
    valid = torch.tensor([True, True, True, True, False, False, True, True])
    k = int(0.5 * 8)  # 4 of 8 entries; the invalid 9s count as 0
    assert _top_k_mean(losses, valid, 0.5, "all").item() == pytest.approx((4 + 3 + 2 + 1) / k)
    assert _top_k_mean(losses, valid, 1.0, "all").item() == pytest.approx(10.75 / 8)
    assert _top_k_mean(losses, valid, 0.5, "valid").item() == pytest.approx((4 + 3 + 2) / 3)
    with pytest.raises(ValueError, match="mine_from"):
        _top_k_mean(losses, valid, 0.5, "some")


def test_pretrain_loss_rejects_mismatched_shapes():
    loss = PretrainLoss(LossConfig())
    sem_logits, target, weights = _semantic_batch(shape=(2, 4, 4))
    b_logits = torch.randn(2, 2, 4, 4)
    with pytest.raises(ValueError, match="cut target"):
        loss(sem_logits, target, weights, b_logits, torch.zeros(2, 2, 8, 8), torch.ones(2, 2, 8, 8))
    with pytest.raises(ValueError, match="semantic target"):
        loss(sem_logits, target, weights[:, :2], b_logits, b_logits, torch.ones_like(b_logits))


@pytest.mark.filterwarnings("ignore::cops.models.BackboneInitWarning")
@pytest.mark.slow
def test_tiny_overfit_decreases_pretrain_loss():
    torch.manual_seed(0)
    distances = [1, 2]
    net = SemanticBoundaryNet(3, distances, backbone="resnet18", decoder_channels=16)
    loss_fn = PretrainLoss(LossConfig())
    image = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, :2] = 255
    weights = torch.where(target == 1, 4.0, 1.0)
    cut = (torch.rand(2, 4, 8, 8) > 0.6).float()
    cut_w = torch.ones_like(cut)
    for i, d in enumerate(distances):
        cut_w[:, 2 * i, -d:, :] = 0.0
        cut_w[:, 2 * i + 1, :, -d:] = 0.0
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    history = []
    for _ in range(40):
        out = net(image)
        total, _ = loss_fn(out["semantic"], target, weights, out["boundary"], cut, cut_w)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.5 * history[0]


def test_paper_boundary_loss_has_one_term_per_distance_and_direction():
    """``per_map``: each (distance, direction) channel is mined on its own, the terms summed."""
    logits, target, weights = _boundary_batch(shape=(2, 4, 5, 6))
    got = hard_boundary_bce(logits, target, weights, top_k=0.25, per_map=True)
    terms = [
        hard_boundary_bce(logits[:, c : c + 1], target[:, c : c + 1], weights[:, c : c + 1], 0.25)
        for c in range(4)
    ]
    torch.testing.assert_close(got, torch.stack(terms).sum())
    pooled = hard_boundary_bce(logits, target, weights, top_k=0.25)
    assert not torch.allclose(got, pooled)  # the two modes differ on this batch
    # Each term is that channel's own mean: scaling one channel's BCE scales only its term.
    one = torch.zeros(1, 4, 1, 2)
    channel_weights = torch.zeros(1, 4, 1, 2)
    channel_weights[0, 0] = 1.0  # channel 0 has two edges, channel 3 one edge
    channel_weights[0, 3, 0, 0] = 1.0
    bce0 = math.log(2.0)  # logit 0 against target 0
    total = hard_boundary_bce(one, one, channel_weights, top_k=1.0, per_map=True)
    torch.testing.assert_close(total, torch.tensor(2 * bce0))
    pooled_one = hard_boundary_bce(one, one, channel_weights, top_k=1.0)
    torch.testing.assert_close(pooled_one, torch.tensor(bce0))


def test_pretrain_loss_pooled_boundary_option():
    """``loss.boundary_terms: pooled`` (ours) is one hard-mined term over all edge maps."""
    cfg = LossConfig(boundary_terms="pooled", boundary_weight=1.0, top_k_over="valid")
    loss = PretrainLoss(cfg)
    sem_logits, target, weights = _semantic_batch(shape=(2, 4, 5))
    b_logits, cut, cut_w = _boundary_batch(shape=(2, 4, 4, 5))
    _, parts = loss(sem_logits, target, weights, b_logits, cut, cut_w)
    torch.testing.assert_close(parts["boundary"], hard_boundary_bce(b_logits, cut, cut_w, 0.25))
