"""Local search of the CPU AMWC solver: rounds of node moves, cluster moves and Kernighan-Lin.

A round is: the best-improvement sweep of single-node moves; the same sweep and a Kernighan-Lin
round on the contracted cluster graph, where whole clusters move; a Kernighan-Lin round over small
clusters on the nodes and one global Kernighan-Lin pass. Rounds repeat until nothing improves or an
``Effort`` bound is reached: a cap on the rounds, a cap on moves per sweep, a work budget for the
Kernighan-Lin passes (adjacency entries scanned, so it is counted, not timed: results do not depend
on the machine's speed), and a stop when a round gains little compared with the first round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from cops.solver._cpu_kernighan_lin import KL_CAP, KL_PATIENCE, kl_global, kl_round
from cops.solver._cpu_moves import (
    UNBOUNDED,
    Partition,
    Search,
    compact,
    fresh_state,
    make_search,
    sweep,
)
from cops.solver._cpu_moves import csr as build_csr
from cops.solver._cpu_structures import JIT, find_halving, id_of, id_table


@dataclass(frozen=True)
class Effort:
    """How much local search runs after the greedy contraction.

    ``rounds``: most rounds. ``sweep_moves``: most moves of one sweep, per item. ``kl_work``:
    Kernighan-Lin budget of one refinement, in adjacency entries scanned per adjacency entry of
    the node graph, plus ``kl_floor`` entries so small instances are searched in full.
    ``min_gain``: a round that gains less than this fraction of the first round's gain ends the
    search. ``multi_start_nodes``: instances up to this many nodes are also refined from the
    argmin labelling (a second start; the better result is kept).
    """

    rounds: int
    sweep_moves: float = float("inf")
    kl_work: float = float("inf")
    kl_floor: int = 0
    min_gain: float = 0.0
    multi_start_nodes: int = 4096

    def budget(self, half_edges: int) -> int:
        """Kernighan-Lin work budget (entries) of one refinement of a graph with ``half_edges``."""
        if self.kl_work == float("inf"):
            return int(UNBOUNDED)
        return int(self.kl_work * half_edges) + self.kl_floor

    def max_moves(self, items: int) -> int:
        """Most moves of one sweep over ``items`` items."""
        if self.sweep_moves == float("inf"):
            return int(UNBOUNDED)
        return max(1, int(self.sweep_moves * items))


@nb.njit(**JIT)
def merge_stuff(edges, thing, part):
    """Union every pair of touching clusters that carry the same stuff class."""
    cl, clab, csize, parent = part
    for e in range(edges.shape[0]):
        a = find_halving(parent, cl[edges[e, 0]])
        b = find_halving(parent, cl[edges[e, 1]])
        if a != b and clab[a] == clab[b] and not thing[clab[a]]:
            if csize[a] < csize[b]:
                a, b = b, a
            parent[b] = a
            csize[a] += csize[b]


@nb.njit(**JIT)
def resolve(cl, parent):
    """Replace every cluster id by its union-find root."""
    for v in range(cl.shape[0]):
        cl[v] = find_halving(parent, cl[v])


@nb.njit(**JIT)
def _cluster_graph(cl, n_cl, edges, weights):
    """Edges between distinct clusters with summed weights: (pairs [Ec, 2], weights [Ec])."""
    m = edges.shape[0]
    n_cut = 0
    for e in range(m):
        if cl[edges[e, 0]] != cl[edges[e, 1]]:
            n_cut += 1
    keys, ids, shift, mask = id_table(n_cut)
    pairs = np.empty((n_cut, 2), np.int64)
    cw = np.zeros(n_cut, np.float64)
    count = 0
    for e in range(m):
        a = cl[edges[e, 0]]
        b = cl[edges[e, 1]]
        if a == b:
            continue
        if a > b:
            a, b = b, a
        i, new = id_of(keys, ids, shift, mask, a * n_cl + b, count)
        if new:
            pairs[count, 0] = a
            pairs[count, 1] = b
            count += 1
        cw[i] += weights[e]
    return pairs[:count], cw[:count]


@nb.njit(**JIT)
def _cluster_costs(cl, n_cl, node_costs):
    """Summed class costs [n_cl, K] of the clusters ``cl`` (ids 0..n_cl-1)."""
    k_cls = node_costs.shape[1]
    ccost = np.zeros((n_cl, k_cls), np.float64)
    for v in range(cl.shape[0]):
        for k in range(k_cls):
            ccost[cl[v], k] += node_costs[v, k]
    return ccost


@nb.njit(**JIT)
def _relabel_items(cl, new_of):
    """``cl[v] = new_of[cl[v]]`` for every item."""
    for v in range(cl.shape[0]):
        cl[v] = new_of[cl[v]]


def _cluster_level(
    s: Search, part: Partition, edges: np.ndarray, edge_costs: np.ndarray, effort: Effort
) -> tuple[bool, float, Partition]:
    """Move sweep and Kernighan-Lin round on the cluster graph, where whole clusters move.

    Shares the work budget of the node-level search ``s``. Returns (changed, objective change,
    partition); on return ``cl`` holds cluster ids of the refined partition.
    """
    cl, clab, _, parent = part
    n_cl, nlab, _ = compact(cl, clab, parent)
    ccost = _cluster_costs(cl, n_cl, s.cost)
    pairs, cw = _cluster_graph(cl, n_cl, edges, edge_costs)
    sc = make_search(*build_csr(n_cl, pairs, cw), ccost, s.thing, s.work)
    part1, used = fresh_state(np.arange(n_cl), nlab, np.arange(n_cl), n_cl)
    moves, gain, part1, used = sweep(sc, part1, used, effort.max_moves(n_cl))
    part1, used = fresh_state(part1[0], part1[1], part1[3], n_cl)
    kl_gain, _ = kl_round(sc, part1, used, KL_CAP)
    _relabel_items(cl, part1[0])
    return moves > 0 or kl_gain < 0.0, gain + kl_gain, (cl, part1[1], part1[2], part1[3])


def refine(
    node_costs: np.ndarray,
    edges: np.ndarray,
    edge_costs: np.ndarray,
    thing: np.ndarray,
    cl: np.ndarray,
    rlab: np.ndarray,
    effort: Effort,
    graph: tuple[np.ndarray, np.ndarray, np.ndarray],
    stats: dict[str, int],
) -> np.ndarray:
    """Stuff merge and local search within ``effort`` from the partition ``cl``.

    ``cl`` maps nodes to cluster ids labelled by ``rlab``; on return it holds the refined
    partition's cluster ids, labelled by the returned array. ``graph`` is the node graph as CSR;
    ``stats`` (a dict) gains the rounds run, sweep moves and Kernighan-Lin work spent.
    """
    n = node_costs.shape[0]
    part, used = fresh_state(cl, rlab, np.arange(rlab.shape[0]), n)
    merge_stuff(edges, thing, part)
    first_gain = 0.0
    if effort.rounds > 0 and n > 0:
        budget = effort.budget(int(graph[0][n]))
        work = np.array([budget, 0], np.int64)
        s = make_search(*graph, node_costs, thing, work)
        for r in range(effort.rounds):
            moves, gain, part, used = sweep(s, part, used, effort.max_moves(n))
            changed, cgain, part1 = _cluster_level(s, part, edges, edge_costs, effort)
            part, used = fresh_state(part1[0], part1[1], part1[3], n)
            kgain, used = kl_round(s, part, used, KL_CAP)
            ggain, used = kl_global(s, part, used, KL_PATIENCE)
            stats["rounds"] = stats.get("rounds", 0) + 1
            stats["sweep_moves"] = stats.get("sweep_moves", 0) + moves
            total = gain + cgain + kgain + ggain
            if r == 0:
                first_gain = total
            # The sweep runs to convergence, so another round only helps after other changes.
            if not changed and kgain + ggain == 0.0:
                break
            if total > effort.min_gain * first_gain:
                break
        stats["kl_work"] = stats.get("kl_work", 0) + int(work[1])
        stats["kl_budget"] = stats.get("kl_budget", 0) + budget
    cl, clab, _, parent = part
    resolve(cl, parent)
    return clab
