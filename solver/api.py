"""Public AMWC entry points: backend dispatch, input checks and output wrapping.

Inputs may be numpy arrays, torch tensors (CPU or CUDA) or numba CUDA device arrays; results come
back in the kind (and on the device) of ``node_costs``. torch is imported only when a tensor is
passed, so numpy-only use needs no torch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from cops.solver.amwc_cpu import LOCAL_SEARCH, Effort, solve_cpu
from cops.solver.checks import (
    is_torch,
    to_numpy,
    validate_edges,
    validate_instance,
    validate_local_search,
    validate_partitionable,
)

BACKENDS = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class AMWCResult:
    """Solution of an AMWC instance (or of a batch: every field gains a leading batch axis).

    ``labels`` class per node, ``components`` segment id per node (0..C-1), ``cut`` per edge,
    ``objective`` = sum of chosen node costs + costs of cut edges (float, or [B] for a batch).
    """

    labels: Any
    components: Any
    cut: Any
    objective: Any


def _on_gpu(x: Any) -> bool:
    """True for torch CUDA tensors and numba device arrays."""
    if is_torch(x):
        return bool(x.is_cuda)
    return hasattr(x, "__cuda_array_interface__") and hasattr(x, "copy_to_host")


def cuda_available() -> bool:
    """Whether numba can reach a CUDA device (or its simulator)."""
    try:
        from numba import cuda
    except ImportError:  # pragma: no cover - numba always ships numba.cuda
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver or toolkit means "not available"
        return False


def resolve_backend(backend: str, *arrays: Any) -> str:
    """Map ``backend`` to "cpu" or "cuda".

    "auto" picks cuda only when an input is on a GPU and numba can use it (otherwise the CPU
    solver runs on host copies); an explicit "cuda" without a usable GPU is an error.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        on_gpu = any(_on_gpu(a) for a in arrays)
        return "cuda" if on_gpu and cuda_available() else "cpu"
    if backend == "cuda" and not cuda_available():
        raise RuntimeError(
            "backend='cuda' needs a CUDA GPU, but numba.cuda.is_available() is False; "
            "use backend='cpu' (or 'auto')"
        )
    return backend


def _wrap(template: Any, arrays: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    """Host results as the kind of ``template``: torch tensors on its device, or numpy arrays."""
    if is_torch(template):
        import torch

        return tuple(torch.from_numpy(a).to(template.device) for a in arrays)
    if _on_gpu(template):
        from numba import cuda

        return tuple(cuda.to_device(a) for a in arrays)
    return arrays


def _solve_host(
    c: np.ndarray, e: np.ndarray, w: np.ndarray, thing: np.ndarray, effort: Effort
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Run the numba solver on validated host arrays."""
    labels, comp, cut, obj = solve_cpu(c, e, w, thing, effort)
    return labels, comp, cut, float(obj)


def _cuda_outputs(template: Any, labels: Any, comp: Any, cut: Any) -> tuple[Any, Any, Any]:
    """GPU solver outputs (numba device arrays) as int64/bool in the kind of ``template``."""
    if is_torch(template):
        import torch

        if template.is_cuda:
            out = tuple(torch.as_tensor(x, device=template.device) for x in (labels, comp, cut))
        else:
            out = tuple(torch.from_numpy(x.copy_to_host()) for x in (labels, comp, cut))
        return out[0].long(), out[1].long(), out[2].bool()
    if _on_gpu(template):
        return labels, comp, cut
    return (
        labels.copy_to_host().astype(np.int64),
        comp.copy_to_host().astype(np.int64),
        cut.copy_to_host().astype(bool),
    )


def _solve_cuda(
    batched: bool, node_costs: Any, edges: Any, edge_costs: Any, partitionable: Any, effort: str
) -> tuple[Any, Any, Any]:
    """The GPU solver's (labels, components, cut) in the kind of ``node_costs``."""
    from cops.solver import amwc_cuda

    solve = amwc_cuda.solve_amwc_cuda_batch if batched else amwc_cuda.solve_amwc_cuda
    return _cuda_outputs(
        node_costs, *solve(node_costs, edges, edge_costs, partitionable, local_search=effort)
    )


def _objective_like(node_costs: Any, edge_costs: Any, labels: Any, cut: Any) -> Any:
    """Objective per instance (last two axes of node_costs), computed where the data lives."""
    if is_torch(node_costs) and is_torch(labels):
        c = node_costs.detach().double()
        w = edge_costs.detach().double().to(c.device)
        chosen = c.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1)
        return chosen + (w * cut.to(w.dtype)).sum(-1)
    c = to_numpy(node_costs, "node_costs").astype(np.float64)
    w = to_numpy(edge_costs, "edge_costs").astype(np.float64)
    lab = to_numpy(labels, "labels").astype(np.int64)
    ct = to_numpy(cut, "cut").astype(bool)
    chosen = np.take_along_axis(c, lab[..., None], axis=-1)[..., 0].sum(-1)
    return chosen + np.where(ct, w, 0.0).sum(-1)


def solve_amwc(
    node_costs: Any, edges: Any, edge_costs: Any, partitionable: Any, backend: str = "auto", *,
    local_search: bool | str = "fast",
) -> AMWCResult:  # fmt: skip
    """Solve one AMWC instance: class per node, segments (instances of thing classes) and cut edges.

    ``node_costs`` [N, K] cost of class k at node i; ``edges`` [E, 2]; ``edge_costs`` [E] paid when
    an edge is cut (positive favours joining); ``partitionable`` [K] True for thing classes. With
    ``partitionable`` all False this is multiway cut. ``backend``: "cpu" (greedy contraction),
    "cuda" (parallel greedy contraction on the GPU) or "auto" (cuda only when the inputs are on a
    GPU); both refine the contraction by local search. ``local_search``: "off" (greedy only),
    "fast" (default: bounded work, the whole solve within about 1.5x the greedy time), "full"
    (until nothing improves; can take many times the greedy time on noisy costs); True means
    "fast", False "off". Bad input raises ValueError.
    """
    local_search = validate_local_search(local_search)
    backend = resolve_backend(backend, node_costs, edges, edge_costs)
    if backend == "cuda":
        labels, comp, cut = _solve_cuda(
            False, node_costs, edges, edge_costs, partitionable, local_search
        )
        objective = float(_objective_like(node_costs, edge_costs, labels, cut))
        return AMWCResult(labels, comp, cut, objective)
    c, e, w, thing = validate_instance(node_costs, edges, edge_costs, partitionable)
    labels, comp, cut, objective = _solve_host(c, e, w, thing, LOCAL_SEARCH[local_search])
    labels, comp, cut = _wrap(node_costs, (labels, comp, cut))
    return AMWCResult(labels, comp, cut, objective)


def solve_amwc_batch(
    node_costs: Any, edges: Any, edge_costs: Any, partitionable: Any, backend: str = "auto", *,
    local_search: bool | str = "fast", num_threads: int | None = None,
) -> AMWCResult:  # fmt: skip
    """Solve B instances on one shared graph; fields are batched ([B, N], [B, N], [B, E], [B]).

    ``node_costs`` [B, N, K], ``edges`` [E, 2], ``edge_costs`` [B, E]. On the CPU, images run in
    parallel on ``num_threads`` threads (default: all cores); each result equals ``solve_amwc``
    on that image (``local_search`` as there).
    """
    local_search = validate_local_search(local_search)
    backend = resolve_backend(backend, node_costs, edges, edge_costs)
    if backend == "cuda":
        labels, comp, cut = _solve_cuda(
            True, node_costs, edges, edge_costs, partitionable, local_search
        )
        return AMWCResult(labels, comp, cut, _objective_like(node_costs, edge_costs, labels, cut))

    c = to_numpy(node_costs, "node_costs")
    w = to_numpy(edge_costs, "edge_costs")
    if c.ndim != 3:
        raise ValueError(f"node_costs: expected shape [B, N, K], got {c.shape}")
    if w.ndim != 2 or w.shape[0] != c.shape[0]:
        raise ValueError(f"edge_costs: expected shape [{c.shape[0]}, E], got {w.shape}")
    b, n, k = c.shape
    if k == 0:
        raise ValueError("node_costs: needs at least one class (K = 0)")
    thing = validate_partitionable(partitionable, k)
    e = validate_edges(edges, n)
    instances = [validate_instance(c[i], e, w[i], thing) for i in range(b)]
    effort = LOCAL_SEARCH[local_search]
    workers = max(1, min(b, num_threads or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda inst: _solve_host(*inst, effort), instances))
    m = e.shape[0]
    labels = np.stack([r[0] for r in results]) if results else np.zeros((0, n), np.int64)
    comp = np.stack([r[1] for r in results]) if results else np.zeros((0, n), np.int64)
    cut = np.stack([r[2] for r in results]) if results else np.zeros((0, m), bool)
    objective = np.array([r[3] for r in results], dtype=np.float64)
    labels, comp, cut, objective = _wrap(node_costs, (labels, comp, cut, objective))
    return AMWCResult(labels, comp, cut, objective)
