"""Differentiable AMWC layer: panoptic segments out of the solver, perturbation gradients back in.

Forward: every image's AMWC instance is solved (``solve_amwc_batch``; on CUDA tensors the GPU
solver when numba can use it) and turned into segments by the one segment rule of
``cops.solver.segments``: ONE segment per stuff class present (all of its connected components
together) and one per thing component; stuff first by class id, then thing components.
``masks[b, n, s]`` is 1 where node ``n`` belongs to segment ``s``.

Backward (black-box differentiation of a combinatorial solver, DESIGN §6). With ``g = dL/dmasks``
and, per image, ``F`` = classes without a predicted segment and ``S`` = its segments, every sample
``λ ~ U[λ_min, λ_max]`` builds a multiway cut (MWC, nothing partitionable) instance with ``|F| + S``
labels: label ``f ∈ F`` costs ``c[f, n]``, label ``s`` costs
``c[class(s), n] + λ·g[n, s] − δ·[n ∈ s]``; edge costs are unchanged. Its solution ``y_λ`` maps
back to classes and cuts, and

    dL/dc[b, n, k] = mean_λ (onehot(classes_λ) − onehot(classes_0))[n, k] / λ
    dL/dw[b, e]    = mean_λ (cuts_λ − cuts_0)[e] / λ

i.e. ``(y_λ − y_0)/λ`` for the solver ``y(c) = argmin ⟨c, y⟩``: moving the costs against it makes
the solver prefer ``y_λ``, which is better for the loss, so it is a descent direction.

Two details keep this unbiased with a heuristic solver. Segment labels of one class have identical
costs, and the greedy MWC solver resolves such exact ties along a different path for any λ > 0
(measured: ~4 % of nodes relabelled, a worse objective, at λ = 1e-9), which made ``(y_λ − y)/λ``
a bias of size 1/λ that pushed fine-tuning downhill. The tiny pin ``δ`` (1e-5 of the cost scale)
breaks the ties in favour of the forward segments, and the reference ``y_0`` is the same MWC solved
at λ = 0 (one extra solve per image), so the gradient vanishes as λ → 0. A perturbed result whose
objective is worse than the reference's (both are feasible for it) contributes zero instead of
noise. Images whose ``g`` is all zero get an exact zero gradient without solving.

Loss weights: node gradients are multiplied by ``node_weights[b, n]``, edge gradients by the MIN
of the two endpoint weights (an edge touching an ignored node is ignored, and thing-weighted
pixels do not get squared weights on their edges).

Parallelism: the numba CPU solver is compiled with ``nogil=True``, so the ``B × num_samples`` MWC
instances run on a thread pool, each built lazily with its own label count (no padding, memory
bounded by the number of workers). On the GPU they are stacked in chunks, the label axis padded to
the chunk's maximum with a cost no solution can afford, and solved by ``solve_amwc_batch``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cops.solver.api import resolve_backend, solve_amwc, solve_amwc_batch
from cops.solver.checks import validate_local_search
from cops.solver.segments import segments_from_solution

TIE_PIN = 1e-5
"""Relative cost bonus of a node's own segment label in the backward MWC (module doc)."""

# Node-cost entries (jobs × nodes × labels) per GPU MWC batch; bounds the padded cost tensor.
_GPU_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class SegmentBatch:
    """Panoptic segments of a batch of AMWC solutions.

    ``masks`` [B, N, S] float 0/1 (differentiable w.r.t. node and edge costs), ``classes`` [B, S]
    class per segment (-1 = padding), ``labels`` [B, N] class per node, ``segments`` [B, N]
    segment per node (0..S_b-1), ``cut`` [B, E] bool, ``num_segments`` [B].
    """

    masks: Tensor
    classes: Tensor
    labels: Tensor
    segments: Tensor
    cut: Tensor
    num_segments: Tensor


@dataclass(frozen=True)
class _Options:
    """Non-tensor settings of one layer call, carried from forward to backward."""

    partitionable: Tensor
    lambda_min: float
    lambda_max: float
    num_samples: int
    backend: str
    generator: torch.Generator | None
    local_search: str = "fast"


def _check_inputs(
    node_costs: Any,
    edge_costs: Any,
    edges: Any,
    partitionable: Any,
    node_weights: Any,
    lambda_min: float,
    lambda_max: float,
    num_samples: int,
) -> tuple[Tensor, Tensor]:
    """Validate the layer's inputs; return edges [E, 2] long and partitionable [K] bool tensors."""
    if not isinstance(node_costs, Tensor) or node_costs.ndim != 3:
        raise ValueError(f"node_costs: expected a tensor [B, N, K], got {_describe(node_costs)}")
    if not node_costs.is_floating_point():
        raise ValueError(f"node_costs: expected a float tensor, got {node_costs.dtype}")
    b, n, k = node_costs.shape
    if n == 0 or k == 0:
        raise ValueError(f"node_costs: needs at least one node and one class, got {(b, n, k)}")
    if not isinstance(edge_costs, Tensor) or edge_costs.ndim != 2 or edge_costs.shape[0] != b:
        raise ValueError(f"edge_costs: expected a tensor [{b}, E], got {_describe(edge_costs)}")
    if not edge_costs.is_floating_point():
        raise ValueError(f"edge_costs: expected a float tensor, got {edge_costs.dtype}")
    if edge_costs.device != node_costs.device:
        raise ValueError(
            f"edge_costs: on {edge_costs.device}, but node_costs is on {node_costs.device}"
        )
    edges = torch.as_tensor(edges)
    if edges.ndim != 2 or edges.shape[1] != 2 or edges.shape[0] != edge_costs.shape[1]:
        raise ValueError(
            f"edges: expected shape [{edge_costs.shape[1]}, 2] (one row per edge cost), "
            f"got {tuple(edges.shape)}"
        )
    if edges.dtype.is_floating_point or edges.dtype == torch.bool or edges.is_complex():
        raise ValueError(f"edges: expected integer node ids, got {edges.dtype}")
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= n):
        raise ValueError(f"edges: node ids must lie in [0, {n})")
    partitionable = torch.as_tensor(partitionable)
    if partitionable.dtype != torch.bool or partitionable.shape != (k,):
        raise ValueError(
            f"partitionable: expected a bool tensor [{k}] (one flag per class), got "
            f"{partitionable.dtype} {tuple(partitionable.shape)}"
        )
    if node_weights is not None:
        if not isinstance(node_weights, Tensor) or node_weights.shape != (b, n):
            raise ValueError(
                f"node_weights: expected a tensor [{b}, {n}], got {_describe(node_weights)}"
            )
        if not node_weights.is_floating_point():
            raise ValueError(f"node_weights: expected a float tensor, got {node_weights.dtype}")
    if not 0.0 < float(lambda_min) <= float(lambda_max) < float("inf"):
        raise ValueError(
            f"lambda_min, lambda_max: expected 0 < lambda_min <= lambda_max < inf, got "
            f"{lambda_min}, {lambda_max}"
        )
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")
    device = node_costs.device
    return edges.to(device=device, dtype=torch.long), partitionable.to(device)


def _describe(x: Any) -> str:
    """Type and shape of ``x`` for error messages."""
    if isinstance(x, Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _sample_lambdas(opts: _Options, b: int) -> np.ndarray:
    """λ per (image, sample) [B, T], drawn from the caller's generator."""
    device = opts.generator.device if opts.generator is not None else "cpu"
    u = torch.rand(
        (b, opts.num_samples), generator=opts.generator, dtype=torch.float64, device=device
    )
    return (opts.lambda_min + (opts.lambda_max - opts.lambda_min) * u).cpu().numpy()


@dataclass(frozen=True)
class _Solution:
    """The forward solution as the backward pass needs it (fields as in ``SegmentBatch``)."""

    labels: Tensor
    segments: Tensor
    classes: Tensor
    cut: Tensor
    num_segments: Tensor


@dataclass(frozen=True)
class _ImagePlan:
    """MWC label set of one image: ``label_class[j]`` is the class of MWC label ``j``.

    Labels ``0..num_free-1`` are the classes without a predicted segment, label ``num_free + s``
    is segment ``s``.
    """

    label_class: Tensor
    num_free: int


def _plan_image(classes: Tensor, num_segments: int, num_classes: int) -> _ImagePlan:
    """MWC labels of one image: its segment-free classes, then one label per segment."""
    seg_class = classes[:num_segments]
    has_segment = torch.zeros(num_classes, dtype=torch.bool, device=classes.device)
    has_segment[seg_class] = True
    free = torch.nonzero(~has_segment).flatten()
    return _ImagePlan(torch.cat([free, seg_class]), int(free.numel()))


def _mwc_costs(c: Tensor, g: Tensor, segments: Tensor, plan: _ImagePlan, lam: float) -> Tensor:
    """MWC node costs [N, F+S]: free classes ``c[k]``, segment labels ``c[class(s)] + λ·g[s]``,
    each node's own segment label pinned ``δ`` cheaper (module doc)."""
    costs = c[:, plan.label_class].clone()
    costs[:, plan.num_free :] += lam * g
    pin = TIE_PIN * (1.0 + float(c.abs().max())) if c.numel() else 0.0
    costs[torch.arange(costs.shape[0], device=costs.device), plan.num_free + segments] -= pin
    return costs


def _solve_cpu(
    jobs: list[tuple[int, float]],
    build: Callable[[int, float], Tensor],
    edges: np.ndarray,
    edge_costs: np.ndarray,
    local_search: str = "fast",
) -> list[tuple[Tensor, Tensor, float]]:
    """Solve MWC jobs ``(image, λ)`` with the numba solver on a thread pool (it drops the GIL)."""

    def run(job: tuple[int, float]) -> tuple[Tensor, Tensor, float]:
        costs = build(*job).numpy()
        flags = np.zeros(costs.shape[1], dtype=bool)
        res = solve_amwc(costs, edges, edge_costs[job[0]], flags, "cpu", local_search=local_search)
        return torch.from_numpy(res.labels), torch.from_numpy(res.cut), res.objective

    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, jobs))


def _solve_batched(
    jobs: list[tuple[int, float]],
    build: Callable[[int, float], Tensor],
    widths: list[int],
    num_nodes: int,
    edges: Tensor,
    edge_costs: Tensor,
    backend: str,
    local_search: str = "fast",
) -> list[tuple[Tensor, Tensor, float]]:
    """Solve MWC jobs with ``solve_amwc_batch`` in chunks, the label axis padded per chunk.

    The padding label costs more at every node than any real label plus all edge costs, so no
    solution (greedy start, contraction or local move) can prefer it.
    """
    out: list[tuple[Tensor, Tensor, float]] = []
    start = 0
    while start < len(jobs):
        stop, width = start + 1, widths[start]
        while stop < len(jobs):
            wider = max(width, widths[stop])
            if (stop + 1 - start) * wider * num_nodes > _GPU_CHUNK_ELEMENTS:
                break
            stop, width = stop + 1, wider
        costs = [build(*job) for job in jobs[start:stop]]
        w = edge_costs[[image for image, _ in jobs[start:stop]]]
        bound = max(float(x.abs().max()) for x in costs) + float(w.abs().sum(1).max())
        padded = torch.full(
            (len(costs), num_nodes, width), 2.0 * bound + 1.0, dtype=w.dtype, device=w.device
        )
        for i, x in enumerate(costs):
            padded[i, :, : x.shape[1]] = x
        flags = torch.zeros(width, dtype=torch.bool)
        res = solve_amwc_batch(padded, edges, w, flags, backend, local_search=local_search)
        objective = torch.as_tensor(res.objective).cpu().tolist()
        out.extend(zip(res.labels.long(), res.cut.bool(), objective, strict=True))
        start = stop
    return out


def _perturbation_gradients(
    node_costs: Tensor,
    edge_costs: Tensor,
    edges: Tensor,
    solution: _Solution,
    grad_masks: Tensor,
    node_weights: Tensor | None,
    opts: _Options,
) -> tuple[Tensor, Tensor]:
    """Black-box gradients ``(dL/dnode_costs [B, N, K], dL/dedge_costs [B, E])`` (module doc)."""
    b, n, k = node_costs.shape
    device = node_costs.device
    lambdas = _sample_lambdas(opts, b)
    backend = resolve_backend(opts.backend, node_costs, edge_costs)
    work = device if backend == "cuda" else torch.device("cpu")
    c = node_costs.detach().to(work, torch.float64)
    w = edge_costs.detach().to(work, torch.float64)
    g = grad_masks.detach().to(work, torch.float64)
    segments, classes = solution.segments.to(work), solution.classes.to(work)
    counts = solution.num_segments.tolist()
    active = [i for i in range(b) if bool(g[i, :, : counts[i]].any())]
    plans = {i: _plan_image(classes[i], counts[i], k) for i in active}

    def build(image: int, lam: float) -> Tensor:
        grad = g[image, :, : counts[image]]
        return _mwc_costs(c[image], grad, segments[image], plans[image], lam)

    # Each image's MWC is also solved unperturbed (λ = 0): differences are taken against that
    # reference, not the forward AMWC solution, so the heuristic's own deviations from the
    # forward solution (present even as λ → 0) do not turn into a bias of size 1/λ.
    jobs = [(i, 0.0) for i in active] + [(i, float(lam)) for i in active for lam in lambdas[i]]
    if backend == "cuda":
        widths = [int(plans[i].label_class.numel()) for i, _ in jobs]
        results = _solve_batched(
            jobs, build, widths, n, edges.to(work), w, backend, opts.local_search
        )
    else:
        results = _solve_cpu(jobs, build, edges.cpu().numpy(), w.numpy(), opts.local_search)
    references = dict(zip(active, results[: len(active)], strict=True))

    nodes = torch.arange(n, device=work)
    grad_c = torch.zeros(b * n * k, dtype=torch.float64, device=work)
    grad_w = torch.zeros(b, w.shape[1], dtype=torch.float64, device=work)
    for (image, lam), (mwc_labels, mwc_cut, objective) in zip(
        jobs[len(active) :], results[len(active) :], strict=True
    ):
        plan = plans[image]
        ref_labels, ref_cut, ref_objective = references[image]
        ref_labels = ref_labels.to(work)
        # The reference's objective in the perturbed instance: only segment labels carry λ·g.
        in_segment = ref_labels >= plan.num_free
        seg = (ref_labels - plan.num_free).clamp(min=0)
        lin = (g[image].gather(1, seg.unsqueeze(1)).squeeze(1) * in_segment).sum()
        reference = float(ref_objective + lam * lin)
        if objective > reference + 1e-9 * (1.0 + abs(reference)):
            continue  # the heuristic missed a solution it knows: this sample adds zero
        coef = 1.0 / (lam * opts.num_samples)
        offset = (image * n + nodes) * k
        step = torch.full((n,), coef, dtype=torch.float64, device=work)
        grad_c.index_add_(0, offset + plan.label_class[mwc_labels.to(work)], step)
        grad_c.index_add_(0, offset + plan.label_class[ref_labels], -step)
        grad_w[image] += coef * (mwc_cut.to(work).double() - ref_cut.to(work).double())
    grad_c = grad_c.reshape(b, n, k)
    if node_weights is not None:
        nw = node_weights.detach().to(work, torch.float64)
        grad_c = grad_c * nw.unsqueeze(2)
        grad_w = grad_w * torch.minimum(nw[:, edges[:, 0].to(work)], nw[:, edges[:, 1].to(work)])
    return grad_c.to(device, node_costs.dtype), grad_w.to(device, edge_costs.dtype)


class _AMWCSegments(torch.autograd.Function):
    """Autograd node: AMWC solve + segments forward, perturbation gradients backward."""

    @staticmethod
    def forward(
        ctx: Any,
        node_costs: Tensor,
        edge_costs: Tensor,
        edges: Tensor,
        node_weights: Tensor | None,
        opts: _Options,
    ) -> tuple[Tensor, ...]:
        """Solve every image and return masks plus the (non-differentiable) solution tensors."""
        res = solve_amwc_batch(
            node_costs.detach(), edges, edge_costs.detach(), opts.partitionable, opts.backend,
            local_search=opts.local_search,
        )  # fmt: skip
        labels = res.labels.to(node_costs.device).long()
        components = res.components.to(node_costs.device).long()
        cut = res.cut.to(node_costs.device).bool()
        segments, classes, counts = segments_from_solution(labels, components, opts.partitionable)
        num = classes.shape[1]
        masks = torch.nn.functional.one_hot(segments, num).to(node_costs.dtype)
        ctx.mark_non_differentiable(classes, labels, segments, cut, counts)
        ctx.save_for_backward(
            node_costs, edge_costs, edges, node_weights, labels, segments, classes, cut, counts
        )
        ctx.opts = opts
        return masks, classes, labels, segments, cut, counts

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_masks: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        """Perturbation gradients for node and edge costs; nothing for the other inputs."""
        node_costs, edge_costs, edges, node_weights, *solution = ctx.saved_tensors
        grad_c, grad_w = _perturbation_gradients(
            node_costs, edge_costs, edges, _Solution(*solution), grad_masks, node_weights, ctx.opts
        )
        return grad_c, grad_w, None, None, None


def amwc_segments(
    node_costs: Tensor,
    edge_costs: Tensor,
    edges: Tensor,
    partitionable: Tensor,
    *,
    lambda_min: float = 1.0,
    lambda_max: float = 5000.0,
    num_samples: int = 5,
    backend: str = "auto",
    node_weights: Tensor | None = None,
    generator: torch.Generator | None = None,
    local_search: bool | str = "fast",
) -> SegmentBatch:
    """Solve the AMWC of every image and return its panoptic segments, differentiably.

    ``node_costs`` [B, N, K] class costs, ``edge_costs`` [B, E] paid when an edge is cut,
    ``edges`` [E, 2] shared by the batch (``grid_graph`` order), ``partitionable`` [K] True for
    thing classes. ``masks`` carries perturbation gradients (module doc) back to both cost
    tensors, with ``num_samples`` λ drawn from U[lambda_min, lambda_max] by ``generator``; node
    gradients are scaled by ``node_weights`` [B, N], edge gradients by the min of their endpoints'
    weights. ``local_search`` bounds the solver's local search in the forward solve and the
    backward multiway cuts (see ``solve_amwc``). Results live on ``node_costs``' device; bad
    shapes or dtypes raise ValueError.
    """
    edges, partitionable = _check_inputs(
        node_costs,
        edge_costs,
        edges,
        partitionable,
        node_weights,
        lambda_min,
        lambda_max,
        num_samples,
    )
    opts = _Options(
        partitionable, float(lambda_min), float(lambda_max), int(num_samples), backend, generator,
        validate_local_search(local_search),
    )  # fmt: skip
    out = _AMWCSegments.apply(node_costs, edge_costs, edges, node_weights, opts)
    return SegmentBatch(*out)
