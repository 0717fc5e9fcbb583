"""Sequential CPU AMWC solver: class-aware greedy edge contraction, then bounded local search.

All heavy work is numba-compiled (``cache=True``, ``nogil=True`` so batches run on a thread pool);
this module only sequences the compiled stages:

1. greedy contraction (:mod:`._cpu_contraction`, DESIGN §5), then adjacent clusters of the same
   stuff class are merged;
2. local search within an :class:`Effort` (:mod:`._cpu_local_search`): node and cluster moves
   (:mod:`._cpu_moves`) and Kernighan-Lin passes (:mod:`._cpu_kernighan_lin`). Small instances are
   also refined from a second start (the argmin labelling) and the better result is kept.

``LOCAL_SEARCH`` names the efforts users choose from: "off" (greedy only), "fast" (the default:
bounded so that the whole solve stays within about 1.5x the greedy time on the benchmark
families, see BENCHMARKS.md) and "full" (rounds until nothing improves, at most 20).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from cops.solver._cpu_contraction import greedy_contraction
from cops.solver._cpu_local_search import Effort, refine
from cops.solver._cpu_moves import csr
from cops.solver._cpu_structures import JIT, connected_components

LOCAL_SEARCH: dict[str, Effort] = {
    "off": Effort(rounds=0),
    "fast": Effort(
        rounds=4, sweep_moves=1.0, kl_work=0.1, kl_floor=4096, min_gain=0.02, multi_start_nodes=256
    ),
    "full": Effort(rounds=20),
}
"""Local-search efforts by name, for ``solve_amwc(local_search=...)`` and the recipe."""


@nb.njit(**JIT)
def _finish(node_costs, edges, edge_costs, cl, clab):
    """(labels, components, cut, objective) of the partition ``cl`` with cluster labels ``clab``."""
    n = node_costs.shape[0]
    m = edges.shape[0]
    labels = np.empty(n, np.int64)
    for v in range(n):
        labels[v] = clab[cl[v]]
    same = np.empty(m, np.bool_)
    for e in range(m):
        same[e] = cl[edges[e, 0]] == cl[edges[e, 1]]
    components = connected_components(n, edges, same)
    cut = np.empty(m, np.bool_)
    objective = 0.0
    for v in range(n):
        objective += node_costs[v, labels[v]]
    for e in range(m):
        cut[e] = components[edges[e, 0]] != components[edges[e, 1]]
        if cut[e]:
            objective += edge_costs[e]
    return labels, components, cut, objective


@nb.njit(**JIT)
def _argmin_start(node_costs, edges):
    """Connected regions of equal argmin class: (cluster per node, label per cluster)."""
    n = node_costs.shape[0]
    alab = np.empty(n, np.int64)
    for v in range(n):
        alab[v] = np.argmin(node_costs[v])
    same = np.empty(edges.shape[0], np.bool_)
    for e in range(edges.shape[0]):
        same[e] = alab[edges[e, 0]] == alab[edges[e, 1]]
    cl = connected_components(n, edges, same)
    rlab = np.empty(n, np.int64)
    for v in range(n):
        rlab[cl[v]] = alab[v]
    return cl, rlab


def solve_cpu(
    node_costs: np.ndarray,
    edges: np.ndarray,
    edge_costs: np.ndarray,
    thing: np.ndarray,
    effort: Effort | int,
    stats: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Greedy contraction, stuff merge and local search within ``effort``.

    Validated contiguous inputs (float64 [N, K], int64 [E, 2], float64 [E], bool [K]; ``thing``
    marks partitionable classes). ``effort`` is an :class:`Effort` or a number of unbounded rounds
    (0 = greedy only). ``stats``, when given, gains counters of the work done (``rounds``,
    ``sweep_moves``, ``kl_work`` and ``kl_budget`` in adjacency entries). Returns (labels,
    components, cut, objective); component ids are 0..C-1 in order of first node.
    """
    if not isinstance(effort, Effort):
        effort = Effort(rounds=int(effort))
    stats = {} if stats is None else stats
    n = node_costs.shape[0]
    root, rlab = greedy_contraction(node_costs, edges, edge_costs)
    graph = csr(n, edges, edge_costs)
    clab = refine(node_costs, edges, edge_costs, thing, root, rlab, effort, graph, stats)
    best = _finish(node_costs, edges, edge_costs, root, clab)
    if effort.rounds > 0 and 0 < n <= effort.multi_start_nodes:
        # Small instances: also refine from the argmin labelling (one cluster per same-class
        # connected region) and keep the better result.
        cl2, rlab2 = _argmin_start(node_costs, edges)
        clab2 = refine(node_costs, edges, edge_costs, thing, cl2, rlab2, effort, graph, stats)
        other = _finish(node_costs, edges, edge_costs, cl2, clab2)
        if other[3] < best[3]:
            best = other
    labels, components, cut, objective = best
    return labels, components, cut, float(objective)
