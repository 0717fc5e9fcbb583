"""Differentiable AMWC layer: segments forward, perturbation gradients backward."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import cops.solver.layer as layer
from cops.solver import grid_graph, solve_amwc_batch
from cops.solver.layer import SegmentBatch, amwc_segments, segments_from_solution

H, W = 6, 6
N = H * W
EDGES = torch.from_numpy(grid_graph(H, W, [1, 2]))
PART = torch.tensor([False, False, True, True])


def _costs(seed: int, b: int = 2, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """Random node costs [B, N, 4] and edge costs [B, E] that need gradients."""
    rng = np.random.default_rng(seed)
    c = torch.tensor(rng.normal(size=(b, N, len(PART))), dtype=dtype, requires_grad=True)
    w = torch.tensor(rng.normal(0.3, 1.0, size=(b, len(EDGES))), dtype=dtype, requires_grad=True)
    return c, w


def _grads(seg: SegmentBatch, g: torch.Tensor, c: torch.Tensor, w: torch.Tensor):
    """Gradients of the linear loss ``Σ g·masks`` w.r.t. the costs."""
    return torch.autograd.grad((seg.masks * g).sum(), (c, w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_shapes_dtypes_and_solver_agreement(dtype):
    c, w = _costs(0, dtype=dtype)
    seg = amwc_segments(c, w, EDGES, PART)
    s = seg.masks.shape[2]
    assert seg.masks.shape == (2, N, s) and seg.masks.dtype == dtype
    assert seg.masks.requires_grad and seg.masks.device == c.device
    assert seg.classes.shape == (2, s) and seg.classes.dtype == torch.long
    assert seg.labels.shape == (2, N) and seg.segments.shape == (2, N)
    assert seg.cut.shape == (2, len(EDGES)) and seg.cut.dtype == torch.bool
    assert seg.num_segments.tolist() == [int(seg.segments[b].max()) + 1 for b in range(2)]
    ref = solve_amwc_batch(c.detach(), EDGES, w.detach(), PART)
    assert torch.equal(seg.labels, ref.labels) and torch.equal(seg.cut, ref.cut)


def test_masks_partition_nodes_into_panoptic_segments():
    c, w = _costs(1, b=3)
    seg = amwc_segments(c, w, EDGES, PART)
    ref = solve_amwc_batch(c.detach(), EDGES, w.detach(), PART)
    assert torch.equal(seg.masks.sum(2), torch.ones(3, N, dtype=c.dtype))
    for b in range(3):
        count = int(seg.num_segments[b])
        assert torch.equal(seg.masks[b].argmax(1), seg.segments[b])
        assert torch.equal(seg.classes[b, seg.segments[b]], seg.labels[b])
        assert (seg.classes[b, count:] == -1).all() and (seg.classes[b, :count] >= 0).all()
        classes = seg.classes[b, :count]
        stuff = classes[~PART[classes]]
        # one segment per stuff class present, however many components it has
        assert stuff.tolist() == sorted(set(seg.labels[b][~PART[seg.labels[b]]].tolist()))
        # one segment per thing component of the solver
        thing_nodes = PART[seg.labels[b]]
        assert int(PART[classes].sum()) == len(set(ref.components[b][thing_nodes].tolist()))
        same = seg.segments[b][EDGES[:, 0]] == seg.segments[b][EDGES[:, 1]]
        assert torch.equal(~same, seg.cut[b])


def test_stuff_segment_joins_separate_components():
    labels = torch.tensor([[0, 2, 0, 2, 1]])
    components = torch.tensor([[0, 1, 2, 3, 4]])
    segments, classes, counts = segments_from_solution(labels, components, PART)
    assert segments.tolist() == [[0, 2, 0, 3, 1]]
    assert classes.tolist() == [[0, 1, 2, 2]] and counts.tolist() == [4]


def test_backward_shapes_finite_and_nonzero():
    c, w = _costs(2)
    seg = amwc_segments(c, w, EDGES, PART, lambda_min=0.5, lambda_max=3.0)
    g = torch.randn(seg.masks.shape, generator=torch.Generator().manual_seed(0), dtype=c.dtype)
    gc, gw = _grads(seg, g, c, w)
    assert gc.shape == c.shape and gw.shape == w.shape
    assert gc.dtype == c.dtype and gw.dtype == w.dtype
    assert torch.isfinite(gc).all() and torch.isfinite(gw).all()
    assert gc.abs().sum() > 0 and gw.abs().sum() > 0
    # every sample moves each node from one class to one class: node grads sum to 0 per node
    assert torch.allclose(gc.sum(2), torch.zeros(2, N, dtype=c.dtype), atol=1e-12)


def test_zero_upstream_gradient_gives_zero_gradient():
    c, w = _costs(3)
    seg = amwc_segments(c, w, EDGES, PART)
    g = torch.zeros_like(seg.masks)
    g[1] = torch.randn(seg.masks.shape[1:], dtype=c.dtype)
    gc, gw = _grads(seg, g, c, w)
    assert not gc[0].any() and not gw[0].any()  # image 0 has g = 0
    assert gc[1].any()
    seg = amwc_segments(c, w, EDGES, PART)
    gc, gw = _grads(seg, torch.zeros_like(seg.masks), c, w)
    assert not gc.any() and not gw.any()


def test_reproducible_with_seeded_generator():
    c, w = _costs(4)
    g = None
    results = []
    for seed in (7, 7, 8):
        gen = torch.Generator().manual_seed(seed)
        seg = amwc_segments(c, w, EDGES, PART, lambda_min=0.5, lambda_max=3.0, generator=gen)
        if g is None:
            g = torch.randn(seg.masks.shape, generator=torch.Generator().manual_seed(1))
        results.append(_grads(seg, g.to(c.dtype), c, w))
    assert all(torch.equal(a, b) for a, b in zip(results[0], results[1], strict=True))
    assert not torch.equal(results[0][0], results[2][0])


def test_node_weights_scale_node_and_edge_gradients():
    c, w = _costs(5)
    weights = torch.full((2, N), 2.0, dtype=c.dtype)
    weights[:, : N // 2] = 0.0
    weights[:, -3:] = 3.0
    outs = []
    for nw in (None, weights):
        gen = torch.Generator().manual_seed(0)
        seg = amwc_segments(
            c, w, EDGES, PART, lambda_min=0.5, lambda_max=3.0, node_weights=nw, generator=gen
        )
        g = torch.randn(seg.masks.shape, generator=torch.Generator().manual_seed(2))
        outs.append(_grads(seg, g.to(c.dtype), c, w))
    (gc, gw), (gc_w, gw_w) = outs
    assert gc.abs().sum() > 0
    assert not gc_w[:, : N // 2].any()
    assert torch.allclose(gc_w, gc * weights.unsqueeze(2))
    edge_weight = torch.minimum(weights[:, EDGES[:, 0]], weights[:, EDGES[:, 1]])
    assert torch.allclose(gw_w, gw * edge_weight)


def _anchor_loss(seg: SegmentBatch, hc: torch.Tensor, gp: torch.Tensor) -> torch.Tensor:
    """Per-segment upstream gradient of L = Σ_n hc[n, class(n)] + gp[n, first node of seg(n)].

    L is linear in the masks of any segmentation, and defined for every segmentation, so the
    loss of a re-solved instance is comparable to the original one.
    """
    s = seg.segments[0]
    first = torch.full((seg.masks.shape[2],), N).scatter_reduce(0, s, torch.arange(N), "amin")
    return hc[:, seg.classes[0].clamp(min=0)] + gp[:, first.clamp(max=N - 1)]


def _descent_trial(seed: int) -> tuple[float, float]:
    """Loss before and after one step against the perturbation gradient on a random instance."""
    rng = np.random.default_rng(seed)
    k, things = int(rng.integers(3, 5)), int(rng.integers(1, 3))
    part = torch.arange(k) >= k - things
    c = torch.tensor(rng.normal(size=(1, N, k)), requires_grad=True)
    w = torch.tensor(rng.normal(0.3, 1.0, size=(1, len(EDGES))), requires_grad=True)
    hc, gp = torch.tensor(rng.normal(size=(N, k))), torch.tensor(rng.normal(size=(N, N)))
    gen = torch.Generator().manual_seed(seed)
    seg = amwc_segments(c, w, EDGES, part, lambda_min=0.5, lambda_max=3.0, generator=gen)
    g = _anchor_loss(seg, hc, gp)
    gc, gw = _grads(seg, g.unsqueeze(0), c, w)
    before = float((seg.masks[0].detach() * g).sum())
    with torch.no_grad():
        after_seg = amwc_segments(c - gc, w - gw, EDGES, part)
    after = float((after_seg.masks[0] * _anchor_loss(after_seg, hc, gp)).sum())
    return before, after


def test_gradient_is_a_descent_direction():
    trials = [_descent_trial(seed) for seed in range(100)]
    strict = sum(after < before - 1e-12 for before, after in trials) / len(trials)
    non_increase = sum(after <= before + 1e-12 for before, after in trials) / len(trials)
    print(f"descent rate: strict {strict:.2f}, non-increase {non_increase:.2f} (100 trials)")
    assert strict > 0.6 and non_increase >= strict


def test_padded_batch_solver_agrees_with_thread_pool():
    """The GPU path's padded batching (run here with the CPU solver) gives the same solutions."""
    rng = np.random.default_rng(6)
    costs = [torch.tensor(rng.normal(size=(N, width))) for width in (3, 5, 2, 4)]
    w = torch.tensor(rng.normal(0.3, 1.0, size=(2, len(EDGES))))
    jobs = [(0, 1.0), (1, 1.0), (0, 2.0), (1, 2.0)]

    def build(image: int, lam: float) -> torch.Tensor:
        return costs[jobs.index((image, lam))]

    widths = [x.shape[1] for x in costs]
    monkey_chunk = layer._GPU_CHUNK_ELEMENTS
    try:
        layer._GPU_CHUNK_ELEMENTS = 2 * N * 5  # force two chunks
        batched = layer._solve_batched(jobs, build, widths, N, EDGES, w, "cpu")
    finally:
        layer._GPU_CHUNK_ELEMENTS = monkey_chunk
    pooled = layer._solve_cpu(jobs, build, EDGES.numpy(), w.numpy())
    for (lab_b, cut_b, obj_b), (lab_p, cut_p, obj_p), width in zip(
        batched, pooled, widths, strict=True
    ):
        assert int(lab_b.max()) < width  # the padding label is never used
        assert obj_b == pytest.approx(obj_p)
        assert torch.equal(lab_b, lab_p) and torch.equal(cut_b, cut_p)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"node_costs": torch.zeros(2, N)}, "node_costs"),
        ({"node_costs": torch.zeros(2, N, 4, dtype=torch.long)}, "node_costs"),
        ({"edge_costs": torch.zeros(3, len(EDGES))}, "edge_costs"),
        ({"edge_costs": torch.zeros(2, len(EDGES), dtype=torch.long)}, "edge_costs"),
        ({"edges": EDGES[:-1]}, "edges"),
        ({"edges": EDGES.double()}, "edges"),
        ({"edges": EDGES + N}, "edges"),
        ({"partitionable": torch.tensor([True, False])}, "partitionable"),
        ({"partitionable": torch.tensor([0, 0, 1, 1])}, "partitionable"),
        ({"node_weights": torch.ones(2, N + 1)}, "node_weights"),
        ({"lambda_min": 0.0}, "lambda_min"),
        ({"lambda_min": 5.0, "lambda_max": 1.0}, "lambda_min"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_bad_input_names_the_argument(change, name):
    args = {
        "node_costs": torch.zeros(2, N, 4),
        "edge_costs": torch.zeros(2, len(EDGES)),
        "edges": EDGES,
        "partitionable": PART,
    }
    args.update(change)
    with pytest.raises(ValueError, match=name):
        amwc_segments(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tensors_stay_on_the_device():
    c, w = (x.detach().cuda().requires_grad_(True) for x in _costs(8))
    seg = amwc_segments(c, w, EDGES.cuda(), PART.cuda(), lambda_min=0.5, lambda_max=3.0)
    assert seg.masks.is_cuda and seg.labels.is_cuda and seg.cut.is_cuda
    gc, gw = _grads(seg, torch.randn_like(seg.masks), c, w)
    assert gc.is_cuda and gw.is_cuda and torch.isfinite(gc).all() and gc.abs().sum() > 0


@pytest.mark.slow
def test_cuda_backend_under_simulator():
    """backend="cuda": forward and the padded MWC backward run the GPU solver (simulated)."""
    code = """
import torch
from cops.solver import grid_graph
from cops.solver.layer import amwc_segments
edges = torch.from_numpy(grid_graph(3, 4, [1, 2]))
gen = torch.Generator().manual_seed(0)
c = torch.randn(2, 12, 3, generator=gen, dtype=torch.float64, requires_grad=True)
w = (torch.randn(2, len(edges), generator=gen, dtype=torch.float64) + 0.3).requires_grad_(True)
part = torch.tensor([False, True, True])
seg = amwc_segments(c, w, edges, part, num_samples=2, lambda_min=0.5, lambda_max=2.0,
                    backend="cuda", generator=gen)
assert torch.equal(seg.masks.sum(2), torch.ones(2, 12, dtype=torch.float64))
g = torch.randn(seg.masks.shape, generator=gen, dtype=torch.float64)
gc, gw = torch.autograd.grad((seg.masks * g).sum(), (c, w))
assert gc.shape == c.shape and gw.shape == w.shape
assert torch.isfinite(gc).all() and gc.abs().sum() > 0
assert torch.allclose(gc.sum(2), torch.zeros(2, 12, dtype=torch.float64))
"""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
