"""Single-item moves of the CPU local search: the search context, the best move of one item, and
the best-improvement-first sweep that applies improving moves until none is left.

Items are nodes, or whole clusters on the contracted cluster graph; a partition is the tuple
``(cl, clab, csize, parent)``: cluster entry per item, and per cluster id its class, its size and
its union-find parent (merged clusters point at the cluster they joined). A move takes an item to a
neighbouring thing cluster, to a stuff class (joining every adjacent cluster of that class, which
keeps "touching stuff of one class = one segment" true) or to a new thing singleton.
"""

from __future__ import annotations

from collections import namedtuple

import numba as nb
import numpy as np

from cops.solver._cpu_structures import (
    JIT,
    copy_range,
    find_halving,
    find_readonly,
    grow,
    log_merge,
    minheap_pop,
    minheap_push,
)

JOIN = 1
STUFF = 2
SINGLE = 3
UNBOUNDED = np.int64(1) << 62
"""Work budget that never runs out."""

Search = namedtuple("Search", ["indptr", "nbr", "wt", "cost", "thing", "tol", "work"])
"""What every local-search pass reads: the item graph as CSR (``indptr``, neighbour ``nbr``, edge
weight ``wt``), class costs per item [items, K], thing flags [K], the smallest change that counts as
an improvement ``tol``, and ``work`` [2] int64: (Kernighan-Lin work left, work spent), in
adjacency entries scanned."""


Partition = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(cl, clab, csize, parent): cluster entry per item; class, size and union-find parent per id."""


def make_search(
    indptr: np.ndarray,
    nbr: np.ndarray,
    wt: np.ndarray,
    cost: np.ndarray,
    thing: np.ndarray,
    work: np.ndarray,
) -> Search:
    """Search context over the CSR graph with ``tol`` relative to the largest cost and weight.

    ``work`` is the (left, spent) counter; searches that share one share their budget.
    """
    # max |x| without an |x| copy of the arrays (the same value, for less work per refinement)
    scale = (max(cost.max(), -cost.min()) if cost.size else 0.0) + (
        max(wt.max(), -wt.min()) if wt.size else 0.0
    )
    return Search(indptr, nbr, wt, cost, thing, 1e-9 * scale, work)


@nb.njit(**JIT)
def csr(n, edges, weights):
    """Symmetric adjacency (indptr, neighbour, weight) of an edge list over n nodes."""
    m = edges.shape[0]
    indptr = np.zeros(n + 1, np.int64)
    for e in range(m):
        indptr[edges[e, 0] + 1] += 1
        indptr[edges[e, 1] + 1] += 1
    for v in range(n):
        indptr[v + 1] += indptr[v]
    fill = indptr[:-1].copy()
    nbr = np.empty(2 * m, np.int32)
    wt = np.empty(2 * m, np.float64)
    for e in range(m):
        u = edges[e, 0]
        v = edges[e, 1]
        nbr[fill[u]] = v
        wt[fill[u]] = weights[e]
        fill[u] += 1
        nbr[fill[v]] = u
        wt[fill[v]] = weights[e]
        fill[v] += 1
    return indptr, nbr, wt


@nb.njit(**JIT)
def compact(cl, clab, parent):
    """Point every item at a root and renumber the used clusters 0..C-1 in order of first use.

    Returns (C, labels of the new clusters, sizes of the new clusters).
    """
    cap = parent.shape[0]
    newid = np.full(cap, -1, np.int64)
    count = 0
    for v in range(cl.shape[0]):
        r = find_halving(parent, cl[v])
        if newid[r] < 0:
            newid[r] = count
            count += 1
        cl[v] = newid[r]
    nlab = np.empty(count, np.int64)
    nsize = np.zeros(count, np.int64)
    for r in range(cap):
        if newid[r] >= 0:
            nlab[newid[r]] = clab[r]
    for v in range(cl.shape[0]):
        nsize[cl[v]] += 1
    return count, nlab, nsize


@nb.njit(**JIT)
def fresh_state(cl, clab, parent, spare):
    """Compact a partition and allocate union-find storage with ``spare`` free cluster ids.

    Returns ((cl, labels, sizes, parent), number of clusters in use).
    """
    count, nlab, nsize = compact(cl, clab, parent)
    cap = count + spare + 1
    labels = np.zeros(cap, np.int64)
    sizes = np.zeros(cap, np.int64)
    copy_range(labels, np.int64(0), nlab, np.int64(0), count)
    copy_range(sizes, np.int64(0), nsize, np.int64(0), count)
    return (cl, labels, sizes, np.arange(cap)), count


@nb.njit(**JIT)
def move_scratch(cap, indptr, k_cls):
    """Scratch (acc, mark, touched, lsum, token) for ``best_move`` over ``cap`` cluster ids."""
    max_deg = 0
    for v in range(indptr.shape[0] - 1):
        max_deg = max(max_deg, indptr[v + 1] - indptr[v])
    return (
        np.zeros(cap, np.float64),
        np.zeros(cap, np.int64),
        np.empty(max_deg + 1, np.int64),
        np.zeros(k_cls, np.float64),
        np.zeros(1, np.int64),
    )


@nb.njit(**JIT)
def best_move(s, part, v, p, ws, bound):
    """Best move of item v out of its cluster p, if its objective change is below ``bound``.

    Candidates: join an adjacent thing cluster, join every adjacent cluster of a stuff class (or
    start that class alone when none is adjacent), become a thing singleton. ``ws`` is the
    ``move_scratch``; on return ``ws[2][:count]`` lists v's neighbouring clusters.
    Returns (change, kind, target cluster or class, count); kind 0 when nothing beats ``bound``.
    """
    cl, clab, _, parent = part
    acc, mark, touched, lsum, token = ws
    cost, thing = s.cost, s.thing
    token[0] += 1
    tok = token[0]
    k_cls = cost.shape[1]
    lp = clab[p]
    nt = 0
    for j in range(s.indptr[v], s.indptr[v + 1]):
        q = find_readonly(parent, cl[s.nbr[j]])
        if mark[q] != tok:
            mark[q] = tok
            acc[q] = 0.0
            touched[nt] = q
            nt += 1
        acc[q] += s.wt[j]
    base = cost[v, lp] - (acc[p] if mark[p] == tok else 0.0)
    best = bound
    kind = 0
    target = -1
    for k in range(k_cls):
        lsum[k] = 0.0
    for t in range(nt):
        q = touched[t]
        if q == p:
            continue
        lq = clab[q]
        if thing[lq]:
            d = cost[v, lq] - base - acc[q]
            if d < best:
                best = d
                kind = JOIN
                target = q
        else:
            lsum[lq] += acc[q]
    for k in range(k_cls):
        if thing[k]:
            d = cost[v, k] - base
            if d < best:
                best = d
                kind = SINGLE
                target = k
        elif k != lp:
            d = cost[v, k] - base - lsum[k]
            if d < best:
                best = d
                kind = STUFF
                target = k
    return best, kind, target, nt


@nb.njit(**JIT)
def join_stuff(part, touched, nt, p, k, log, n_log):
    """Merge every cluster of stuff class k among ``touched[:nt]`` (except p) into the first one.

    Merges are logged (``log_merge``; the log must have room for ``nt`` entries). Returns (the
    surviving cluster or -1 when none carries class k, new log length).
    """
    _, clab, csize, parent = part
    dest = -1
    for t in range(nt):
        q = touched[t]
        if q != p and clab[q] == k:
            if dest < 0:
                dest = q
            else:
                parent[q] = dest
                csize[dest] += csize[q]
                n_log = log_merge(log, n_log, q, dest)
    return dest, n_log


@nb.njit(**JIT)
def sweep(s, part, used, max_moves):
    """Move items between clusters while it pays, at most ``max_moves`` times.

    Best improvement first: the item whose ``best_move`` lowers the objective most (by more than
    ``s.tol``) moves, then its neighbours are re-evaluated. Returns (number of moves, objective
    change, the partition with possibly reallocated cluster arrays, number of cluster ids in use).
    """
    cl, clab, csize, parent = part
    n_items, k_cls = s.cost.shape
    cap = parent.shape[0]
    ws = move_scratch(cap, s.indptr, k_cls)
    scratch = np.empty(ws[2].shape[0], np.int64)
    merges = (scratch, scratch, scratch)  # join_stuff's log; a sweep never undoes
    hkey = np.empty(64, np.float64)
    hval = np.empty(64, np.int64)
    size = np.int64(0)
    for v in range(n_items):
        d, kind, _, _ = best_move(s, part, v, find_readonly(parent, cl[v]), ws, -s.tol)
        if kind != 0:
            hkey, hval, size = minheap_push(hkey, hval, size, d, v)
    moves = 0
    total = 0.0
    while size > 0 and moves < max_moves:
        if used == cap:
            # Out of fresh cluster ids: renumber the clusters in use and enlarge the id space.
            used, nlab, nsize = compact(cl, clab, parent)
            cap = 2 * used + 2
            parent = np.arange(cap)
            clab = grow(nlab, cap)
            csize = grow(nsize, cap)
            part = (cl, clab, csize, parent)
            ws = move_scratch(cap, s.indptr, k_cls)
        d, v, size = minheap_pop(hkey, hval, size)
        p = find_halving(parent, cl[v])
        cl[v] = p
        d2, kind, target, nt = best_move(s, part, v, p, ws, -s.tol)
        if kind == 0:
            continue
        if d2 > d + s.tol:
            # The entry is out of date: queue the item again at its current value.
            hkey, hval, size = minheap_push(hkey, hval, size, d2, v)
            continue
        csize[p] -= 1
        dest = target
        if kind != JOIN:
            dest = -1
            if kind == STUFF:
                dest, _ = join_stuff(part, ws[2], nt, p, target, merges, 0)
            if dest < 0:
                if csize[p] == 0:
                    dest = p
                else:
                    dest = used
                    used += 1
                clab[dest] = target
        cl[v] = dest
        csize[dest] += 1
        moves += 1
        total += d2
        for j in range(s.indptr[v], s.indptr[v + 1]):
            u = np.int64(s.nbr[j])
            du, ku, _, _ = best_move(s, part, u, find_readonly(parent, cl[u]), ws, -s.tol)
            if ku != 0:
                hkey, hval, size = minheap_push(hkey, hval, size, du, u)
    return moves, total, part, used
