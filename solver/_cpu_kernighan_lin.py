"""Kernighan-Lin passes of the CPU local search: sequences of moves that may pay only together.

A pass moves items one at a time, best first, each at most once and even when a move alone does
not pay, and keeps the best prefix of the sequence (the rest is undone from a log). ``kl_round``
runs passes over small clusters: swaps between adjacent clusters, splits against a fresh cluster
of a cheap class, growth into the neighbours, and new regions grown from single items;
``kl_global`` is one pass of ``best_move`` moves over all items.

Every pass charges the adjacency entries its move evaluations scan to ``s.work`` (see ``Search``),
and a round or global pass its set-up scans, up front: a stage starts only when the work left
covers its set-up, and no pass starts once the budget is spent, so the work done exceeds the
budget by at most one pass. This bounds the local search on large noisy inputs, where small
clusters abound, to what is cheap next to the contraction.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from cops.solver._cpu_moves import JOIN, STUFF, best_move, join_stuff, move_scratch
from cops.solver._cpu_structures import (
    JIT,
    find_readonly,
    group_by,
    id_of,
    id_table,
    log_merge,
    log_reserve,
    minheap_pop,
    minheap_push,
    move_logged,
    new_log,
    undo,
)

KL_CAP = 64
"""Kernighan-Lin passes start from clusters of at most this many items."""
KL_LABELS = 3
"""Passes that change classes try the 3 cheapest classes of the items moved."""
KL_PATIENCE = 32
"""A global pass stops after this many moves without a new best."""


@nb.njit(**JIT)
def _charge(s, amount):
    """Book ``amount`` adjacency entries of work against the budget."""
    s.work[0] -= amount
    s.work[1] += amount


@nb.njit(**JIT)
def _move_delta(s, part, v, x, y):
    """Objective change of moving item v from cluster x to cluster y.

    When y is a stuff cluster, every other cluster of that class touching v merges with it too, so
    all of v's edges into that class become uncut.
    """
    cl, clab, _, parent = part
    ly = clab[y]
    stuff = not s.thing[ly]
    wx = 0.0
    wy = 0.0
    for j in range(s.indptr[v], s.indptr[v + 1]):
        q = find_readonly(parent, cl[s.nbr[j]])
        if q == x:
            wx += s.wt[j]
        elif q == y or (stuff and clab[q] == ly):
            wy += s.wt[j]
    return s.cost[v, ly] - s.cost[v, clab[x]] + wx - wy


@nb.njit(**JIT)
def _kl_target(x, a, b):
    """Destination of an item in cluster x: the other side of pair (a, b), or a when growing a."""
    if b < 0:
        return a if x != a else -1
    if x == a:
        return b
    return a if x == b else -1


@nb.njit(**JIT)
def kl_scratch(n_items):
    """Work arrays (version, lock, seen, lock id) shared by the passes of one round."""
    rows = np.zeros((3, n_items), np.int64)
    return rows[0], rows[1], rows[2], np.zeros(1, np.int64)


@nb.njit(**JIT)
def kl_pass(s, part, ws, a, b, seeds, max_steps):
    """One pass between clusters a and b (b >= 0), or growing cluster a from any neighbour (b < 0).

    Seeds are the items first considered; neighbours of moved items join the candidates; at most
    ``max_steps`` moves are tried. ``ws`` is the ``kl_scratch``. Returns the objective change kept
    (<= -tol, or 0.0 when nothing was kept).
    """
    cl, clab, csize, parent = part
    indptr, nbr = s.indptr, s.nbr
    ver, lock, seen, lock_ref = ws
    lock_ref[0] += 1
    lock_id = lock_ref[0]
    hkey = np.empty(max(16, 2 * seeds.shape[0]), np.float64)
    hval = np.empty(hkey.shape[0], np.int64)
    size = np.int64(0)
    n_seeds = 0
    spent = 0
    for i in range(seeds.shape[0]):
        v = seeds[i]
        if seen[v] == lock_id:
            continue
        seen[v] = lock_id
        x = find_readonly(parent, cl[v])
        y = _kl_target(x, a, b)
        if y >= 0:
            n_seeds += 1
            ver[v] += 1
            d = _move_delta(s, part, v, x, y)
            spent += indptr[v + 1] - indptr[v]
            hkey, hval, size = minheap_push(hkey, hval, size, d, v * 65536 + (ver[v] & 65535))
    limit = min(2 * n_seeds + 16, max_steps)
    if b >= 0:
        limit = min(limit, csize[a] + csize[b])
    log = new_log(4 * limit + 4)
    n_log = 0
    steps = 0
    total = 0.0
    best = -s.tol
    best_log = 0
    while size > 0 and steps < limit:
        d, item, size = minheap_pop(hkey, hval, size)
        v = item // 65536
        if lock[v] == lock_id or (ver[v] & 65535) != item % 65536:
            continue
        steps += 1
        x = find_readonly(parent, cl[v])
        y = _kl_target(x, a, b)
        deg = indptr[v + 1] - indptr[v]
        log = log_reserve(log, n_log, deg + 1)
        if not s.thing[clab[y]]:
            for j in range(indptr[v], indptr[v + 1]):
                q = find_readonly(parent, cl[nbr[j]])
                if q != x and q != y and clab[q] == clab[y]:
                    parent[q] = y
                    csize[y] += csize[q]
                    n_log = log_merge(log, n_log, q, y)
            spent += deg
        n_log = move_logged(log, n_log, part, v, x, y)
        lock[v] = lock_id
        total += d
        if total < best:
            best, best_log = total, n_log
        for j in range(indptr[v], indptr[v + 1]):
            u = np.int64(nbr[j])
            xu = find_readonly(parent, cl[u])
            yu = _kl_target(xu, a, b)
            if yu >= 0 and lock[u] != lock_id:
                ver[u] += 1
                du = _move_delta(s, part, u, xu, yu)
                spent += indptr[u + 1] - indptr[u]
                hkey, hval, size = minheap_push(hkey, hval, size, du, u * 65536 + (ver[u] & 65535))
        spent += deg
    undo(log, n_log, best_log, cl, csize, parent)
    _charge(s, spent)
    return best if best_log > 0 else 0.0


@nb.njit(**JIT)
def _kth_smallest(vec, k):
    """The k-th smallest entry of ``vec`` (the largest entry when it has fewer than k).

    Partial selection sort: k and the number of classes are small.
    """
    work = vec.copy()
    n = work.shape[0]
    for i in range(min(k, n)):
        m = i
        for j in range(i + 1, n):
            if work[j] < work[m]:
                m = j
        work[i], work[m] = work[m], work[i]
    return work[min(k, n) - 1]


@nb.njit(**JIT)
def _roots(part):
    """Root cluster of every item."""
    cl, _, _, parent = part
    root = np.empty(cl.shape[0], np.int64)
    for v in range(cl.shape[0]):
        root[v] = find_readonly(parent, cl[v])
    return root


@nb.njit(**JIT)
def _boundary(s, root):
    """Half-edges between different clusters: (cluster inside, item inside, item outside)."""
    indptr, nbr = s.indptr, s.nbr
    n_items = root.shape[0]
    n_out = 0
    for v in range(n_items):
        for j in range(indptr[v], indptr[v + 1]):
            if root[nbr[j]] != root[v]:
                n_out += 1
    inside = np.empty(n_out, np.int64)
    item = np.empty(n_out, np.int64)
    outside = np.empty(n_out, np.int64)
    t = 0
    for v in range(n_items):
        for j in range(indptr[v], indptr[v + 1]):
            if root[nbr[j]] != root[v]:
                inside[t] = root[v]
                item[t] = v
                outside[t] = nbr[j]
                t += 1
    return inside, item, outside


@nb.njit(**JIT)
def _pair_passes(s, part, ws, kl_cap):
    """Swap passes between adjacent clusters, in order of first appearance, when one is small.

    Each pass is seeded with the items on the pair's common boundary. Returns the change kept.
    """
    _, clab, csize, parent = part
    cap = clab.shape[0]
    root = _roots(part)
    inside, item, outside = _boundary(s, root)
    n_cut = inside.shape[0]
    keys, ids, shift, mask = id_table(n_cut)
    pa = np.empty(n_cut, np.int64)
    pb = np.empty(n_cut, np.int64)
    item_pair = np.empty(n_cut, np.int64)
    n_pairs = np.int64(0)
    for t in range(n_cut):
        a = inside[t]
        b = root[outside[t]]
        if a > b:
            a, b = b, a
        p, new = id_of(keys, ids, shift, mask, a * cap + b, n_pairs)
        if new:
            pa[p] = a
            pb[p] = b
            n_pairs += 1
        item_pair[t] = p
    start, order = group_by(item_pair, n_pairs)
    seeds = item[order]
    gain = 0.0
    for p in range(n_pairs):
        if s.work[0] <= 0:
            break
        a = find_readonly(parent, pa[p])
        b = find_readonly(parent, pb[p])
        if a != b and min(csize[a], csize[b]) <= kl_cap:
            gain += kl_pass(s, part, ws, a, b, seeds[start[p] : start[p + 1]], 4 * kl_cap)
    return gain


@nb.njit(**JIT)
def _fresh_pass(s, part, ws, used, c, k, seeds, kl_cap):
    """Pass from cluster c (or growth when c < 0) into a fresh empty cluster of class k.

    The fresh id ``used`` is kept when the pass pays. Returns (change kept, ids in use).
    """
    _, clab, csize, _ = part
    fresh = used
    clab[fresh] = k
    csize[fresh] = 0
    if c >= 0:
        g = kl_pass(s, part, ws, c, fresh, seeds, 4 * kl_cap)
    else:
        g = kl_pass(s, part, ws, fresh, np.int64(-1), seeds, 4 * kl_cap)
    if g < 0.0:
        return g, used + 1
    return 0.0, used


@nb.njit(**JIT)
def kl_round(s, part, used, kl_cap):
    """One round of passes over small clusters (at most ``kl_cap`` items): each adjacent pair with
    a small side, each small cluster against a fresh empty cluster of every cheap class (splits
    and partial relabelling), each small cluster growing into its neighbours, and new regions grown
    from each item of a small cluster. The round starts only when the work left covers its
    set-up (four scans of the adjacency, charged up front); no pass starts once it is spent.

    Returns (objective change, number of cluster ids in use).
    """
    cl, clab, csize, parent = part
    cost, thing = s.cost, s.thing
    n_items, k_cls = cost.shape
    cap = clab.shape[0]
    setup = 4 * s.indptr[n_items]  # two boundary listings of two scans each
    if s.work[0] < setup:
        return 0.0, used
    _charge(s, setup)
    ws = kl_scratch(n_items)
    gain = _pair_passes(s, part, ws, kl_cap)
    # Splits: clusters against a fresh empty cluster of each of their cheapest classes (a thing
    # cluster's own class included).
    start, members = group_by(_roots(part), cap)
    vec = np.empty(k_cls, np.float64)
    for c in range(cap):
        size_c = start[c + 1] - start[c]
        if size_c < 2 or size_c > kl_cap or s.work[0] <= 0:
            continue
        vec[:] = 0.0
        for i in range(start[c], start[c + 1]):
            for k in range(k_cls):
                vec[k] += cost[members[i], k]
        limit = _kth_smallest(vec, KL_LABELS)
        for k in range(k_cls):
            if used == cap:
                break
            if (k == clab[c] and not thing[k]) or (k != clab[c] and vec[k] > limit):
                continue
            if find_readonly(parent, c) != c:
                break
            g, used = _fresh_pass(s, part, ws, used, c, k, members[start[c] : start[c + 1]], kl_cap)
            gain += g
    # Growth: every cluster against all its neighbours, seeded with the items just outside it.
    if s.work[0] > 0:
        inside, _, outside = _boundary(s, _roots(part))
        start, order = group_by(inside, cap)
        outside = outside[order]
        for c in range(cap):
            if s.work[0] <= 0:
                break
            if start[c + 1] > start[c] and find_readonly(parent, c) == c and 0 < csize[c] <= kl_cap:
                gain += kl_pass(
                    s, part, ws, c, np.int64(-1), outside[start[c] : start[c + 1]], 4 * kl_cap
                )
    # New regions: each item of a small cluster starts a fresh cluster (one of its cheapest other
    # classes, or a new instance of its thing class) that then grows into its neighbours.
    seed = np.empty(1, np.int64)
    for v in range(n_items):
        if csize[find_readonly(parent, cl[v])] > kl_cap or s.work[0] <= 0:
            continue
        limit = _kth_smallest(cost[v], KL_LABELS)
        for k in range(k_cls):
            if used == cap:
                break
            own = k == clab[find_readonly(parent, cl[v])]
            if (own and not thing[k]) or (not own and cost[v, k] > limit):
                continue
            seed[0] = v
            g, used = _fresh_pass(s, part, ws, used, np.int64(-1), k, seed, kl_cap)
            gain += g
    return gain, used


@nb.njit(**JIT)
def kl_global(s, part, used, patience):
    """Pass over all items with the ``best_move`` moves.

    Repeatedly applies the best move of any unmoved item (even when it does not pay), each item
    at most once, stopping after ``patience`` moves without a new best; the best prefix is kept.
    Needs ``clab.shape[0] - used >= number of items`` free cluster ids; runs only when the work
    left covers its first evaluation of every item. Returns (change, used).
    """
    cl, clab, csize, parent = part
    indptr, nbr = s.indptr, s.nbr
    if s.work[0] < indptr[indptr.shape[0] - 1]:
        return 0.0, used
    n_items, k_cls = s.cost.shape
    cap = clab.shape[0]
    ws = move_scratch(cap, indptr, k_cls)
    touched = ws[2]
    hkey = np.empty(max(16, 2 * n_items), np.float64)
    hval = np.empty(hkey.shape[0], np.int64)
    size = np.int64(0)
    for v in range(n_items):
        d, kind, _, _ = best_move(s, part, v, find_readonly(parent, cl[v]), ws, np.inf)
        if kind != 0:
            hkey, hval, size = minheap_push(hkey, hval, size, d, v)
    spent = indptr[n_items]
    locked = np.zeros(n_items, np.bool_)
    log = new_log(64)
    n_log = 0
    steps = 0
    total = 0.0
    best = -s.tol
    best_log = 0
    best_step = 0
    used_at_best = used
    while size > 0 and steps - best_step < patience and used < cap:
        d, v, size = minheap_pop(hkey, hval, size)
        if locked[v]:
            continue
        p = find_readonly(parent, cl[v])
        d2, kind, target, nt = best_move(s, part, v, p, ws, np.inf)
        spent += indptr[v + 1] - indptr[v]
        if kind == 0:
            continue
        if d2 > d + s.tol:
            # The entry is out of date: queue the item again at its current value.
            hkey, hval, size = minheap_push(hkey, hval, size, d2, v)
            continue
        log = log_reserve(log, n_log, nt + 1)
        dest = target
        if kind != JOIN:
            dest = -1
            if kind == STUFF:
                dest, n_log = join_stuff(part, touched, nt, p, target, log, n_log)
            if dest < 0:
                dest = used
                used += 1
                clab[dest] = target
                csize[dest] = 0
        n_log = move_logged(log, n_log, part, v, p, dest)
        locked[v] = True
        steps += 1
        total += d2
        if total < best:
            best, best_log, best_step, used_at_best = total, n_log, steps, used
        for j in range(indptr[v], indptr[v + 1]):
            u = np.int64(nbr[j])
            if not locked[u]:
                du, ku, _, _ = best_move(s, part, u, find_readonly(parent, cl[u]), ws, np.inf)
                spent += indptr[u + 1] - indptr[u]
                if ku != 0:
                    hkey, hval, size = minheap_push(hkey, hval, size, du, u)
    undo(log, n_log, best_log, cl, csize, parent)
    _charge(s, spent)
    return (best if best_log > 0 else 0.0), used_at_best
