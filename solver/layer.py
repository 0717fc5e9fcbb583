"""Differentiable AMWC layer: panoptic segments out of the solver, perturbation gradients back in.

Forward: every image's AMWC instance is solved (``solve_amwc_batch``; on CUDA tensors the GPU
solver when numba can use it) and turned into segments by the one segment rule of
``cops.solver.segments``: ONE segment per stuff class present (all of its connected components
together) and one per thing component; stuff first by class id, then thing components.
``masks[b, n, s]`` is 1 where node ``n`` belongs to segment ``s``. ``amwc_solve`` can drop thing
components under ``min_thing_nodes`` nodes (the original's 12 // 4 = 3): their nodes are in no
segment. ``amwc_masks`` may append all-zero channels after the segments (the paper surrogate's
unmatched ground truths), each with a class of its own.

Backward (black-box differentiation of a combinatorial solver, DESIGN §6), two variants.

``backward="paper"``, the original's (``losses.py`` AMWCBackward, ``multicut_solvers.py``
solve_mc_grad_avg). With ``g = dL/dmasks`` per channel, the multiway cut (MWC, nothing
partitionable) of an image has one label per class WITHOUT a channel (ascending, cost ``c[k]``)
and then one label per channel, grouped by class (class order, channel order within), costing
``c[class] + λ·g[channel]``, stuff channels and zero (unmatched ground-truth) channels included;
edge costs are unchanged. For each of the ``T`` samples ``λ`` it is solved once and

    dL/dc[b, n, k] = mean_λ (onehot(class_λ) − onehot(class_forward))[n, k] / λ
    dL/dw[b, e]    = mean_λ (cut_λ − cut_forward)[e] / λ

against the FORWARD AMWC solution, in float32 as the original does. Node gradients are multiplied
by ``node_weights``, edge gradients by ``edge_weights`` (the fine-tuning boundary weights): the
MWC differs from the AMWC solver even where nothing is perturbed (void, padding), and only these
masks remove such differences. Every image is solved; nothing is pinned, skipped or rejected.
``lambda_per="batch"`` shares the ``T`` draws between the images (the original's forked workers
inherit one RNG state), drawn afresh at every call from ``generator``.

``backward="resolve"``, ours. With ``g = dL/dmasks``
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

Loss weights (resolve): node gradients are multiplied by ``node_weights[b, n]``, edge gradients
by the MIN of the two endpoint weights (an edge touching an ignored node is ignored, and
thing-weighted pixels do not get squared weights on their edges).

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

    lambda_min: float
    lambda_max: float
    num_samples: int
    backend: str
    generator: torch.Generator | None
    local_search: str = "fast"
    backward: str = "paper"
    lambda_per: str = "batch"


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
    """λ per (image, sample) [B, T], drawn from the caller's generator at every call: one row
    shared by the batch (``lambda_per="batch"``, the original) or one per image."""
    device = opts.generator.device if opts.generator is not None else "cpu"
    rows = 1 if opts.lambda_per == "batch" else b
    u = torch.rand(
        (rows, opts.num_samples), generator=opts.generator, dtype=torch.float64, device=device
    )
    lambdas = (opts.lambda_min + (opts.lambda_max - opts.lambda_min) * u).cpu().numpy()
    return np.broadcast_to(lambdas, (b, opts.num_samples))


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
    rows = torch.nonzero(segments >= 0).flatten()  # nodes of dropped components have no label
    costs[rows, plan.num_free + segments[rows]] -= pin
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
    solution: SegmentBatch,
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


def _paper_labels(channel_classes: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """The original's MWC labels of one image: classes with no channel (ascending), then every
    channel grouped by class (class order, channel order within): ``(label_class, channel)``,
    channel -1 for the plain class labels."""
    used = channel_classes >= 0
    has_channel = torch.zeros(num_classes, dtype=torch.bool, device=channel_classes.device)
    has_channel[channel_classes[used]] = True
    free = torch.nonzero(~has_channel).flatten()
    channels = torch.nonzero(used).flatten()
    order = torch.sort(channel_classes[channels], stable=True).indices
    channels = channels[order]
    label_class = torch.cat([free, channel_classes[channels]])
    channel = torch.cat([torch.full_like(free, -1), channels])
    return label_class, channel


def _paper_costs(c: Tensor, g: Tensor, label_class: Tensor, channel: Tensor, lam: float) -> Tensor:
    """The original's perturbed MWC costs [N, K′] in float32: ``c[class] + λ·g[channel]`` (λ
    rounded to float32 as the original's numpy does; plain class labels unperturbed)."""
    base = c[:, label_class]
    delta = torch.zeros_like(base)
    own = channel >= 0
    delta[:, own] = g[:, channel[own]]
    return base + delta * torch.tensor(lam, dtype=base.dtype, device=base.device)


def _paper_gradients(
    node_costs: Tensor,
    edge_costs: Tensor,
    edges: Tensor,
    solution: SegmentBatch,
    channel_classes: Tensor,
    grad_masks: Tensor,
    weights: tuple[Tensor | None, Tensor | None],
    opts: _Options,
) -> tuple[Tensor, Tensor]:
    """The original's perturbation gradients (module doc, ``backward="paper"``): every image's
    perturbed multiway cut against the forward AMWC solution, ``mean_λ (y_λ − y_forward)/λ``."""
    b, n, k = node_costs.shape
    lambdas = _sample_lambdas(opts, b)
    backend = resolve_backend(opts.backend, node_costs, edge_costs)
    work = node_costs.device if backend == "cuda" else torch.device("cpu")
    c = node_costs.detach().to(work, torch.float32)
    w = edge_costs.detach().to(work, torch.float32)
    g = grad_masks.detach().to(work, torch.float32)
    plans = [_paper_labels(channel_classes[i].to(work), k) for i in range(b)]

    def build(image: int, lam: float) -> Tensor:
        return _paper_costs(c[image], g[image], *plans[image], lam)

    jobs = [(i, float(lam)) for i in range(b) for lam in lambdas[i]]
    if backend == "cuda":
        widths = [int(plans[i][0].numel()) for i, _ in jobs]
        results = _solve_batched(
            jobs, build, widths, n, edges.to(work), w, backend, opts.local_search
        )
    else:
        results = _solve_cpu(jobs, build, edges.cpu().numpy(), w.numpy(), opts.local_search)
    labels, cut = solution.labels.to(work), solution.cut.to(work)
    grad_c = torch.zeros(b, n, k, dtype=torch.float32, device=work)
    grad_w = torch.zeros(b, w.shape[1], dtype=torch.float64, device=work)
    for (image, lam), (mwc_labels, mwc_cut, _) in zip(jobs, results, strict=True):
        moved = torch.nn.functional.one_hot(plans[image][0][mwc_labels.to(work).long()], k)
        forward = torch.nn.functional.one_hot(labels[image], k)
        # float32 steps as in the original (numpy): difference / float32(λ), summed in order
        step = (moved - forward).float() / torch.tensor(lam, dtype=torch.float32, device=work)
        grad_c[image] += step
        grad_w[image] += (mwc_cut.to(work).double() - cut[image].double()) / lam
    grad_c = grad_c / opts.num_samples
    grad_w = (grad_w / opts.num_samples).float()
    node_weights, edge_weights = weights
    if node_weights is not None:
        grad_c = grad_c * node_weights.detach().to(work, torch.float32).unsqueeze(2)
    if edge_weights is not None:
        grad_w = grad_w * edge_weights.detach().to(work, torch.float32)
    return grad_c.to(node_costs.device, node_costs.dtype), grad_w.to(
        edge_costs.device, edge_costs.dtype
    )


class _SegmentMasks(torch.autograd.Function):
    """Autograd node: the solution's masks forward, perturbation gradients backward."""

    @staticmethod
    def forward(
        ctx: Any,
        node_costs: Tensor,
        edge_costs: Tensor,
        edges: Tensor,
        node_weights: Tensor | None,
        edge_weights: Tensor | None,
        solution: SegmentBatch,
        channel_classes: Tensor,
        opts: _Options,
    ) -> Tensor:
        """Masks [B, N, C] of the channels: the solution's segments, zeros after them."""
        ctx.save_for_backward(node_costs, edge_costs, edges, node_weights, edge_weights)
        ctx.solution, ctx.channel_classes, ctx.opts = solution, channel_classes, opts
        return _channel_masks_of(solution.segments, channel_classes.shape[1], node_costs.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_masks: Tensor) -> tuple[Tensor | None, ...]:
        """Perturbation gradients for node and edge costs; nothing for the other inputs."""
        node_costs, edge_costs, edges, node_weights, edge_weights = ctx.saved_tensors
        sol, opts = ctx.solution, ctx.opts
        if opts.backward == "paper":
            grad_c, grad_w = _paper_gradients(
                node_costs, edge_costs, edges, sol, ctx.channel_classes, grad_masks,
                (node_weights, edge_weights), opts,
            )  # fmt: skip
        else:
            grad_c, grad_w = _perturbation_gradients(
                node_costs, edge_costs, edges, sol,
                grad_masks[:, :, : sol.classes.shape[1]], node_weights, opts,
            )  # fmt: skip
        return grad_c, grad_w, None, None, None, None, None, None


def drop_small_things(
    segments: Tensor, classes: Tensor, partitionable: Tensor, min_nodes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Drop thing segments under ``min_nodes`` nodes (the original's ``ignore_instance_size_amc``
    12 // 4 = 3): their nodes get segment -1; the rest keep their order, renumbered."""
    b, s = classes.shape
    sizes = torch.zeros(b, s + 1, dtype=torch.long, device=segments.device)
    sizes.scatter_add_(1, segments + 1, torch.ones_like(segments))
    sizes = sizes[:, 1:]
    thing = partitionable.to(classes.device)[classes.clamp(min=0)] & (classes >= 0)
    keep = (classes >= 0) & ~(thing & (sizes < min_nodes))
    new_index = torch.cumsum(keep.long(), 1) - 1
    counts = keep.sum(1)
    mapped = torch.where(keep, new_index, -1)
    segments = torch.where(segments >= 0, mapped.gather(1, segments.clamp(min=0)), -1)
    width = int(counts.max()) if b else 0
    out = torch.full((b, width), -1, dtype=classes.dtype, device=classes.device)
    rows, cols = torch.nonzero(keep, as_tuple=True)
    out[rows, new_index[rows, cols]] = classes[rows, cols]
    return segments, out, counts


def amwc_solve(
    node_costs: Tensor,
    edge_costs: Tensor,
    edges: Tensor,
    partitionable: Tensor,
    *,
    backend: str = "auto",
    local_search: bool | str = "fast",
    min_thing_nodes: int = 0,
) -> SegmentBatch:
    """Solve every image's AMWC and return its segments, not differentiable (``masks`` one-hot).

    Shapes as in :func:`amwc_segments`; thing components under ``min_thing_nodes`` nodes are no
    segment (their nodes have segment -1 and no mask).
    """
    edges, partitionable = _check_inputs(
        node_costs, edge_costs, edges, partitionable, None, 1.0, 1.0, 1
    )
    res = solve_amwc_batch(
        node_costs.detach(), edges, edge_costs.detach(), partitionable, backend,
        local_search=validate_local_search(local_search),
    )  # fmt: skip
    device = node_costs.device
    labels = res.labels.to(device).long()
    components = res.components.to(device).long()
    segments, classes, counts = segments_from_solution(labels, components, partitionable)
    if min_thing_nodes > 0:
        segments, classes, counts = drop_small_things(
            segments, classes, partitionable, min_thing_nodes
        )
    masks = _channel_masks_of(segments, classes.shape[1], node_costs.dtype)
    return SegmentBatch(masks, classes, labels, segments, res.cut.to(device).bool(), counts)


def _channel_masks_of(segments: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    """One-hot masks [B, N, width] of a segment map (segment -1: no mask)."""
    return torch.nn.functional.one_hot(segments + 1, width + 1)[..., 1:].to(dtype)


BACKWARDS = ("paper", "resolve")
LAMBDA_PER = ("batch", "image")


def amwc_masks(
    node_costs: Tensor,
    edge_costs: Tensor,
    edges: Tensor,
    solution: SegmentBatch,
    channel_classes: Tensor | None = None,
    *,
    lambda_min: float = 1.0,
    lambda_max: float = 5000.0,
    num_samples: int = 5,
    backward: str = "resolve",
    lambda_per: str = "image",
    backend: str = "auto",
    node_weights: Tensor | None = None,
    edge_weights: Tensor | None = None,
    generator: torch.Generator | None = None,
    local_search: bool | str = "fast",
) -> Tensor:
    """Differentiable masks [B, N, C] of a solution's segments (module doc for the gradients).

    ``channel_classes`` [B, C] (-1 = none; default ``solution.classes``): channel ``s <
    num_segments[b]`` is segment ``s``, later channels are all-zero masks whose class gets its own
    perturbed label in the paper backward. ``backward``: "paper" (the original, against the
    forward solution) or "resolve" (ours, against a λ = 0 multiway cut); ``lambda_per``: "batch"
    (one draw shared by the batch, the original) or "image". Node gradients are scaled by
    ``node_weights`` [B, N]; edge gradients by ``edge_weights`` [B, E] (paper) or by the min of
    their endpoints' node weights (resolve).
    """
    if backward not in BACKWARDS:
        raise ValueError(f"backward: expected one of {BACKWARDS}, got {backward!r}")
    if lambda_per not in LAMBDA_PER:
        raise ValueError(f"lambda_per: expected one of {LAMBDA_PER}, got {lambda_per!r}")
    edges, _ = _check_inputs(
        node_costs, edge_costs, edges, solution.labels.new_zeros(node_costs.shape[2]).bool(),
        node_weights, lambda_min, lambda_max, num_samples,
    )  # fmt: skip
    if edge_weights is not None and edge_weights.shape != edge_costs.shape:
        raise ValueError(
            f"edge_weights: expected a tensor {tuple(edge_costs.shape)}, got "
            f"{_describe(edge_weights)}"
        )
    if channel_classes is None:
        channel_classes = solution.classes
    opts = _Options(
        float(lambda_min), float(lambda_max),
        int(num_samples), backend, generator, validate_local_search(local_search), backward,
        lambda_per,
    )  # fmt: skip
    return _SegmentMasks.apply(
        node_costs, edge_costs, edges, node_weights, edge_weights, solution, channel_classes, opts
    )


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
    backward: str = "resolve",
    lambda_per: str = "image",
    edge_weights: Tensor | None = None,
    min_thing_nodes: int = 0,
) -> SegmentBatch:
    """Solve the AMWC of every image and return its panoptic segments, differentiably.

    ``node_costs`` [B, N, K] class costs, ``edge_costs`` [B, E] paid when an edge is cut,
    ``edges`` [E, 2] shared by the batch (``grid_graph`` order), ``partitionable`` [K] True for
    thing classes. ``masks`` carries perturbation gradients (module doc; ``backward``,
    ``lambda_per``, ``node_weights`` and ``edge_weights`` as in :func:`amwc_masks`) back to both
    cost tensors, with ``num_samples`` λ drawn from U[lambda_min, lambda_max] by ``generator``.
    ``local_search`` bounds the solver's local search in the forward solve and the backward
    multiway cuts (see ``solve_amwc``). Results live on ``node_costs``' device; bad shapes or
    dtypes raise ValueError.
    """
    _check_inputs(
        node_costs, edge_costs, edges, partitionable, node_weights, lambda_min, lambda_max,
        num_samples,
    )  # fmt: skip
    solution = amwc_solve(
        node_costs, edge_costs, edges, partitionable, backend=backend,
        local_search=local_search, min_thing_nodes=min_thing_nodes,
    )  # fmt: skip
    masks = amwc_masks(
        node_costs, edge_costs, edges, solution, lambda_min=lambda_min, lambda_max=lambda_max,
        num_samples=num_samples, backward=backward, lambda_per=lambda_per, backend=backend,
        node_weights=node_weights, edge_weights=edge_weights, generator=generator,
        local_search=local_search,
    )  # fmt: skip
    return SegmentBatch(
        masks, solution.classes, solution.labels, solution.segments, solution.cut,
        solution.num_segments,
    )  # fmt: skip
