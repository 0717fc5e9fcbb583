"""Sequential CPU AMWC solver: class-aware greedy edge contraction, then local search.

All heavy work is numba-compiled (``cache=True``, ``nogil=True`` so batches run on a thread pool);
Python only sequences the compiled stages.

Greedy stage (DESIGN §5): every node starts as its own cluster labelled ``argmin_k c[k]``; the gain
of joining clusters A and B is ``w_AB + c_A[l_A] + c_B[l_B] - min_k (c_A[k] + c_B[k])``. The edge of
largest positive gain is contracted repeatedly. Each cluster owns a block of half-edge ids in one
growing arena; a global open-addressing hash table keyed by the cluster pair finds parallel edges
(their costs are summed), and the shorter block is merged into the longer. Priorities are
``(gain code << 32) | edge`` in one int64: the initial gains are radix-sorted and consumed in order,
gains raised by folding parallel edges go to a 4-ary max-heap, and each step takes the larger head.
An entry is current when its gain code equals the edge's stamp. A gain is recomputed when its entry
is taken: if it dropped, the entry is re-queued (lazy correction); a sweep over the remaining edges
at the end re-queues gains that grew, so contraction stops only when no edge has a positive gain.
Adjacent clusters of the same stuff class are then merged.

Local search, in rounds until nothing improves: a best-improvement-first sweep moves single nodes
to a neighbouring thing cluster, to a stuff class (joining every adjacent cluster of that class,
which keeps "touching stuff of one class = one segment" true) or to a new thing singleton; the same
sweep then moves whole clusters on the contracted cluster graph; Kernighan-Lin passes (sequences of
moves that may pay only together, keeping the best prefix) work on small clusters: swaps between
adjacent clusters, splits, growth and new regions, plus one pass over all nodes. Small instances
are also refined from a second start (the argmin labelling) and the better result is kept.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_JIT = {"cache": True, "nogil": True}
_HASH_MUL = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer
_LOW32 = 0xFFFFFFFF
_DEAD = -1  # stamp of an edge that was contracted or folded into a parallel edge


# ----------------------------------------------------------------------------- hash table
# The table maps an unordered cluster pair to the edge joining them. Slots hold edge ids only; the
# key of a slot is read from the edge's current endpoints, so a slot left behind when an edge is
# re-attached to another cluster still answers correctly, and keys naming a merged-away cluster are
# never asked for again. Slots are therefore never deleted; the table is rebuilt when it fills.


@nb.njit(inline="always", **_JIT)
def _slot(u, v, n, shift, mask):
    """Fibonacci hash of the ordered pair u < v to a table slot."""
    return (((u * n + v) * _HASH_MUL) >> shift) & mask


@nb.njit(**_JIT)
def _hfind(table, shift, mask, ends, n, u, v):
    """Edge joining clusters u < v, or -1 (linear probing)."""
    i = _slot(u, v, n, shift, mask)
    while True:
        e = table[i]
        if e < 0:
            return -1
        a = ends[2 * e]
        b = ends[2 * e + 1]
        if (a == u and b == v) or (a == v and b == u):
            return e
        i = (i + 1) & mask


@nb.njit(**_JIT)
def _hinsert(table, shift, mask, n, u, v, e):
    """Record edge e as joining clusters u < v (the pair must be absent)."""
    i = _slot(u, v, n, shift, mask)
    while table[i] >= 0:
        i = (i + 1) & mask
    table[i] = e


@nb.njit(**_JIT)
def _rehash(table, shift, mask, ends, stamp, n):
    """Rebuild the table from the live edges; returns the number of filled slots."""
    table[:] = -1
    count = 0
    for e in range(stamp.shape[0]):
        if stamp[e] >= 0:
            u = np.int64(ends[2 * e])
            v = np.int64(ends[2 * e + 1])
            _hinsert(table, shift, mask, n, min(u, v), max(u, v), e)
            count += 1
    return count


# ----------------------------------------------------------------------------- max-heap


@nb.njit(**_JIT)
def _heap_push(heap, size, item):
    """Push ``item`` onto the 4-ary max-heap ``heap[:size]``; returns the new size."""
    i = size
    while i > 0:
        p = (i - 1) >> 2
        if heap[p] >= item:
            break
        heap[i] = heap[p]
        i = p
    heap[i] = item
    return size + 1


@nb.njit(**_JIT)
def _sift_down(heap, size, i):
    """Restore the 4-ary max-heap property below position ``i``."""
    item = heap[i]
    while True:
        c = 4 * i + 1
        if c >= size:
            break
        best = c
        bv = heap[c]
        end = min(c + 4, size)
        for j in range(c + 1, end):
            if heap[j] > bv:
                bv = heap[j]
                best = j
        if bv <= item:
            break
        heap[i] = bv
        i = best
    heap[i] = item


@nb.njit(**_JIT)
def _heap_pop(heap, size):
    """Pop the maximum of ``heap[:size]``; returns (item, new size)."""
    top = heap[0]
    size -= 1
    if size > 0:
        heap[0] = heap[size]
        _sift_down(heap, size, 0)
    return top, size


@nb.njit(**_JIT)
def _push_grow(heap, size, item):
    """Push onto the heap, doubling its storage when full; returns (heap, new size)."""
    if size == heap.shape[0]:
        heap = _grow(heap, 2 * size)
    return heap, _heap_push(heap, size, item)


@nb.njit(**_JIT)
def _copy(dst, d0, src, s0, count):
    """``dst[d0 : d0 + count] = src[s0 : s0 + count]`` for non-overlapping or forward-safe ranges.

    An explicit loop: numba compiles slice-to-slice assignment slowly.
    """
    for i in range(count):
        dst[d0 + i] = src[s0 + i]


# ----------------------------------------------------------------------------- union-find


@nb.njit(**_JIT)
def _find(parent, x):
    """Root of ``x`` with path halving."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


# ----------------------------------------------------------------------------- greedy contraction


@nb.njit(inline="always", **_JIT)
def _gain(cvec, lab, mval, a, b, w):
    """Gain of joining clusters a and b whose summed edge cost is w."""
    if lab[a] == lab[b]:
        return w
    s = cvec[a, 0] + cvec[b, 0]
    for k in range(1, cvec.shape[1]):
        t = cvec[a, k] + cvec[b, k]
        if t < s:
            s = t
    return w + mval[a] + mval[b] - s


@nb.njit(inline="always", **_JIT)
def _gain_bits(g):
    """Order-preserving 31-bit code of a positive gain (9-bit exponent, 21-bit mantissa); 0 if <= 0.

    The code is the queue priority; it orders gains to a relative resolution of 2**-21.
    """
    if not g > 0.0:
        return np.int64(0)
    mant, ex = math.frexp(g)
    ex = min(max(ex, -200), 311) + 200
    return (np.int64(ex) << 22) | np.int64((mant - 0.5) * 8388608.0) | np.int64(1)


@nb.njit(**_JIT)
def _relabel(cvec, lab, mval, c):
    """Recompute argmin label and min value of cluster c."""
    best = 0
    m = cvec[c, 0]
    for k in range(1, cvec.shape[1]):
        if cvec[c, k] < m:
            m = cvec[c, k]
            best = k
    lab[c] = best
    mval[c] = m


@nb.njit(**_JIT)
def _radix_pass(src, dst, count, shift):
    """Stable counting-sort pass of ``src[:count]`` into ``dst`` on the 11 bits above ``shift``."""
    hist = np.zeros(2049, np.int64)
    for i in range(count):
        hist[((src[i] >> shift) & 2047) + 1] += 1
    for d in range(2048):
        hist[d + 1] += hist[d]
    for i in range(count):
        d = (src[i] >> shift) & 2047
        dst[hist[d]] = src[i]
        hist[d] += 1


@nb.njit(**_JIT)
def _sort_keys(keys, count, tmp):
    """Sort ``keys[:count]`` ascending by their upper 31 bits (stable LSD radix, 3 passes)."""
    for p in range(3):
        # Shifts 32, 43, 54; data alternates keys -> tmp -> keys -> tmp.
        if p % 2 == 0:
            _radix_pass(keys, tmp, count, 32 + 11 * p)
        else:
            _radix_pass(tmp, keys, count, 32 + 11 * p)
    _copy(keys, np.int64(0), tmp, np.int64(0), count)


@nb.njit(**_JIT)
def _queue_positive(cvec, lab, mval, ends, ew, stamp, keys, tmp):
    """Write the priority key of every live positive-gain edge into ``keys`` sorted ascending.

    Stamps are refreshed for all live edges; returns the number of keys.
    """
    count = np.int64(0)
    for e in range(stamp.shape[0]):
        if stamp[e] >= 0:
            a = np.int64(ends[2 * e])
            b = np.int64(ends[2 * e + 1])
            gb = _gain_bits(_gain(cvec, lab, mval, a, b, ew[e]))
            stamp[e] = gb
            if gb > 0:
                keys[count] = (gb << 32) | e
                count += 1
    _sort_keys(keys, count, tmp)
    return count


@nb.njit(**_JIT)
def greedy_contraction(node_costs, edges, edge_costs):
    """Class-aware greedy additive edge contraction; returns (cluster root per node, root labels).

    Roots are node ids; a root's label is the argmin of its cluster's summed class costs.
    """
    n, k_cls = node_costs.shape
    m = edges.shape[0]
    cvec = node_costs.copy()
    lab = np.empty(n, np.int64)
    mval = np.empty(n, np.float64)
    for v in range(n):
        _relabel(cvec, lab, mval, v)
    parent = np.arange(n)
    if m == 0:
        return parent, lab

    bits = 4
    while (1 << bits) < 2 * m + 2:
        bits += 1
    mask = (1 << bits) - 1
    shift = 64 - bits
    table = np.full(1 << bits, -1, np.int32)
    filled = 0

    # Half-edge h = 2e + side: ends[h] is the cluster on that side. Each cluster owns a block
    # adj[start : start + length] (capacity cap) of its half-edges inside one growing arena.
    ends = np.empty(2 * m, np.int32)
    ew = np.empty(m, np.float64)
    stamp = np.full(m, _DEAD, np.int32)
    length = np.zeros(n, np.int64)
    for e in range(m):
        u = np.int64(min(edges[e, 0], edges[e, 1]))
        v = np.int64(max(edges[e, 0], edges[e, 1]))
        e2 = _hfind(table, shift, mask, ends, n, u, v)
        if e2 >= 0:
            ew[e2] += edge_costs[e]
            continue
        ends[2 * e] = u
        ends[2 * e + 1] = v
        _hinsert(table, shift, mask, n, u, v, e)
        filled += 1
        ew[e] = edge_costs[e]
        stamp[e] = 0
        length[u] += 1
        length[v] += 1
    start = np.empty(n, np.int64)
    cap = length.copy()
    top = 0
    for v in range(n):
        start[v] = top
        top += cap[v]
    adj = np.empty(2 * top + 16, np.int32)
    fill = start.copy()
    for e in range(m):
        if stamp[e] >= 0:
            for h in (2 * e, 2 * e + 1):
                x = ends[h]
                adj[fill[x]] = h
                fill[x] += 1

    # Initial (and re-swept) entries are consumed in sorted order from ``keys``; entries queued
    # while contracting go to the 4-ary max-heap. Each step takes the larger of the two heads.
    keys = np.empty(m, np.int64)
    tmp = np.empty(m, np.int64)
    heap = np.empty(m + 16, np.int64)
    size = np.int64(0)
    ptr = _queue_positive(cvec, lab, mval, ends, ew, stamp, keys, tmp) - 1
    while ptr >= 0:
        while ptr >= 0 or size > 0:
            if size == 0 or (ptr >= 0 and keys[ptr] > heap[0]):
                item = keys[ptr]
                ptr -= 1
            else:
                item, size = _heap_pop(heap, size)
            e = item & _LOW32
            ib = item >> 32
            if stamp[e] != ib:
                continue
            a = np.int64(ends[2 * e])
            b = np.int64(ends[2 * e + 1])
            gb = _gain_bits(_gain(cvec, lab, mval, a, b, ew[e]))
            if gb < ib:
                # The gain dropped since the entry was queued: queue it again at its true value.
                stamp[e] = gb
                if gb > 0:
                    heap, size = _push_grow(heap, size, (gb << 32) | e)
                continue
            # Contract e: the cluster with the shorter edge list (a) is merged into b.
            if length[a] > length[b]:
                a, b = b, a
            stamp[e] = _DEAD
            for k in range(k_cls):
                cvec[b, k] += cvec[a, k]
            _relabel(cvec, lab, mval, b)
            # Half-edges of a that survive are moved to the end of b's block; make room first.
            need = length[b] + length[a]
            if need > cap[b]:
                new_cap = max(2 * cap[b], need)
                if top + new_cap > adj.shape[0]:
                    adj, top = _compact_arena(adj, start, length, cap, parent, max(top, new_cap))
                _copy(adj, top, adj, start[b], length[b])
                start[b] = top
                cap[b] = new_cap
                top += new_cap
            out = start[b] + length[b]
            for i in range(start[a], start[a] + length[a]):
                h = adj[i]
                e2 = h >> 1
                if stamp[e2] < 0:
                    continue
                c = np.int64(ends[h ^ 1])
                e3 = _hfind(table, shift, mask, ends, n, min(b, c), max(b, c))
                if e3 >= 0:
                    # Parallel edge: fold e2 into e3 and re-queue e3 if its gain grew.
                    stamp[e2] = _DEAD
                    ew[e3] += ew[e2]
                    gb = _gain_bits(_gain(cvec, lab, mval, b, c, ew[e3]))
                    if gb > stamp[e3]:
                        stamp[e3] = gb
                        heap, size = _push_grow(heap, size, (gb << 32) | e3)
                else:
                    ends[h] = b
                    _hinsert(table, shift, mask, n, min(b, c), max(b, c), e2)
                    filled += 1
                    adj[out] = h
                    out += 1
            length[b] = out - start[b]
            length[a] = 0
            parent[a] = b
            if filled > (mask >> 1) + (mask >> 2):
                filled = _rehash(table, shift, mask, ends, stamp, n)
        # Gains may have grown while their entries were stale: re-queue every positive one.
        ptr = _queue_positive(cvec, lab, mval, ends, ew, stamp, keys, tmp) - 1

    for v in range(n):
        parent[v] = _find(parent, v)
    return parent, lab


@nb.njit(**_JIT)
def _compact_arena(adj, start, length, cap, parent, extra):
    """Copy the blocks of live clusters into a fresh arena with ``extra`` free slots at the end.

    Returns (new arena, first free slot).
    """
    total = 0
    for v in range(start.shape[0]):
        if parent[v] == v:
            total += length[v]
    new = np.empty(2 * (total + extra) + 16, np.int32)
    top = np.int64(0)
    for v in range(start.shape[0]):
        if parent[v] == v:
            _copy(new, top, adj, start[v], length[v])
            start[v] = top
            cap[v] = length[v]
            top += length[v]
        else:
            cap[v] = 0
    return new, top


# ----------------------------------------------------------------------------- local search

_JOIN = 1
_STUFF = 2
_SINGLE = 3
_KL_CAP = 64  # Kernighan-Lin passes start from clusters of at most this many items
_KL_LABELS = 3  # KL passes that change classes try the 3 cheapest classes of the items moved
_KL_PATIENCE = 32  # a global KL pass stops after this many moves without a new best
_MULTI_START_NODES = 4096  # instances up to this size are also refined from a second start


@nb.njit(**_JIT)
def _csr(n, edges, weights):
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


@nb.njit(**_JIT)
def _compact(cl, clab, parent):
    """Point every item at a root and renumber the used clusters 0..C-1 in order of first use.

    Returns (C, labels of the new clusters, sizes of the new clusters).
    """
    cap = parent.shape[0]
    newid = np.full(cap, -1, np.int64)
    count = 0
    for v in range(cl.shape[0]):
        r = _find(parent, cl[v])
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


@nb.njit(**_JIT)
def _state(cl, clab, parent, spare):
    """Compact a partition and allocate union-find storage with ``spare`` free cluster ids.

    Returns (parent, labels, sizes, number of clusters in use).
    """
    count, nlab, nsize = _compact(cl, clab, parent)
    cap = count + spare + 1
    parent = np.arange(cap)
    labels = np.zeros(cap, np.int64)
    sizes = np.zeros(cap, np.int64)
    _copy(labels, np.int64(0), nlab, np.int64(0), count)
    _copy(sizes, np.int64(0), nsize, np.int64(0), count)
    return parent, labels, sizes, count


@nb.njit(**_JIT)
def _best_move(v, p, indptr, nbr, wt, cost, cl, clab, parent, thing, ws, bound):
    """Best move of item v out of its cluster p, if its objective change is below ``bound``.

    Candidates: join an adjacent thing cluster, join every adjacent cluster of a stuff class (or
    start that class alone when none is adjacent), become a thing singleton. ``ws`` = (acc, mark,
    touched, lsum, token) scratch; on return ``touched[:count]`` lists v's neighbouring clusters.
    Returns (change, kind, target cluster or class, count); kind 0 when nothing beats ``bound``.
    """
    acc, mark, touched, lsum, token = ws
    token[0] += 1
    tok = token[0]
    k_cls = cost.shape[1]
    lp = clab[p]
    nt = 0
    for j in range(indptr[v], indptr[v + 1]):
        q = _root(parent, cl[nbr[j]])
        if mark[q] != tok:
            mark[q] = tok
            acc[q] = 0.0
            touched[nt] = q
            nt += 1
        acc[q] += wt[j]
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
                kind = _JOIN
                target = q
        else:
            lsum[lq] += acc[q]
    for k in range(k_cls):
        if thing[k]:
            d = cost[v, k] - base
            if d < best:
                best = d
                kind = _SINGLE
                target = k
        elif k != lp:
            d = cost[v, k] - base - lsum[k]
            if d < best:
                best = d
                kind = _STUFF
                target = k
    return best, kind, target, nt


@nb.njit(**_JIT)
def _move_scratch(cap, indptr, k_cls):
    """Scratch (acc, mark, touched, lsum, token) for ``_best_move`` over ``cap`` cluster ids."""
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


@nb.njit(**_JIT)
def _sweep(indptr, nbr, wt, cost, cl, clab, csize, parent, used, thing, tol):
    """Move items (nodes, or clusters on the cluster graph) between clusters while it pays.

    Best improvement first: the item whose ``_best_move`` lowers the objective most (by more than
    ``tol``) moves, then its neighbours are re-evaluated. ``cl`` maps items to cluster ids
    (union-find ``parent``), ``clab``/``csize`` are per cluster. Returns (number of moves, number
    of cluster ids in use, the possibly reallocated clab, csize, parent).
    """
    n_items, k_cls = cost.shape
    cap = parent.shape[0]
    ws = _move_scratch(cap, indptr, k_cls)
    touched = ws[2]
    hkey = np.empty(64, np.float64)
    hval = np.empty(64, np.int64)
    size = np.int64(0)
    for v in range(n_items):
        d, kind, _, _ = _best_move(
            v, _root(parent, cl[v]), indptr, nbr, wt, cost, cl, clab, parent, thing, ws, -tol
        )
        if kind != 0:
            hkey, hval, size = _minheap_push(hkey, hval, size, d, v)
    moves = 0
    while size > 0:
        if used == cap:
            # Out of fresh cluster ids: renumber the clusters in use and enlarge the id space.
            used, nlab, nsize = _compact(cl, clab, parent)
            cap = 2 * used + 2
            parent = np.arange(cap)
            clab = _grow(nlab, cap)
            csize = _grow(nsize, cap)
            ws = _move_scratch(cap, indptr, k_cls)
            touched = ws[2]
        d, v, size = _minheap_pop(hkey, hval, size)
        p = _find(parent, cl[v])
        cl[v] = p
        d2, kind, target, nt = _best_move(
            v, p, indptr, nbr, wt, cost, cl, clab, parent, thing, ws, -tol
        )
        if kind == 0:
            continue
        if d2 > d + tol:
            # The entry is out of date: queue the item again at its current value.
            hkey, hval, size = _minheap_push(hkey, hval, size, d2, v)
            continue
        csize[p] -= 1
        if kind == _JOIN:
            dest = target
        else:
            dest = -1
            if kind == _STUFF:
                for t in range(nt):
                    q = touched[t]
                    if q != p and clab[q] == target:
                        if dest < 0:
                            dest = q
                        else:
                            parent[q] = dest
                            csize[dest] += csize[q]
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
        for j in range(indptr[v], indptr[v + 1]):
            u = np.int64(nbr[j])
            du, ku, _, _ = _best_move(
                u, _root(parent, cl[u]), indptr, nbr, wt, cost, cl, clab, parent, thing, ws, -tol
            )
            if ku != 0:
                hkey, hval, size = _minheap_push(hkey, hval, size, du, u)
    return moves, used, clab, csize, parent


@nb.njit(**_JIT)
def _kl_global(indptr, nbr, wt, cost, cl, clab, csize, parent, used, thing, tol, patience):
    """Kernighan-Lin pass over all items with the ``_best_move`` moves.

    Repeatedly applies the best move of any unmoved item (even when it does not pay), each item
    at most once, stopping after ``patience`` moves without a new best; the best prefix is kept.
    Needs ``clab.shape[0] - used >= number of items`` free cluster ids. Returns (change, used).
    """
    n_items, k_cls = cost.shape
    cap = clab.shape[0]
    ws = _move_scratch(cap, indptr, k_cls)
    touched = ws[2]
    hkey = np.empty(max(16, 2 * n_items), np.float64)
    hval = np.empty(hkey.shape[0], np.int64)
    size = np.int64(0)
    for v in range(n_items):
        d, kind, _, _ = _best_move(
            v, _root(parent, cl[v]), indptr, nbr, wt, cost, cl, clab, parent, thing, ws, np.inf
        )
        if kind != 0:
            hkey, hval, size = _minheap_push(hkey, hval, size, d, v)
    locked = np.zeros(n_items, np.bool_)
    # Log of changes: kind 0 = item moved (who, its previous cl entry), kind 1 = cluster merged
    # (who, into); undone in reverse order.
    lkind = np.empty(64, np.int64)
    who = np.empty(64, np.int64)
    whr = np.empty(64, np.int64)
    n_log = 0
    steps = 0
    total = 0.0
    best = -tol
    best_log = 0
    best_step = 0
    used_at_best = used
    while size > 0 and steps - best_step < patience and used < cap:
        d, v, size = _minheap_pop(hkey, hval, size)
        if locked[v]:
            continue
        p = _root(parent, cl[v])
        d2, kind, target, nt = _best_move(
            v, p, indptr, nbr, wt, cost, cl, clab, parent, thing, ws, np.inf
        )
        if kind == 0:
            continue
        if d2 > d + tol:
            # The entry is out of date: queue the item again at its current value.
            hkey, hval, size = _minheap_push(hkey, hval, size, d2, v)
            continue
        if n_log + nt + 1 > lkind.shape[0]:
            lkind = _grow(lkind, 2 * lkind.shape[0] + nt)
            who = _grow(who, lkind.shape[0])
            whr = _grow(whr, lkind.shape[0])
        dest = target
        if kind != _JOIN:
            dest = -1
            if kind == _STUFF:
                for t in range(nt):
                    q = touched[t]
                    if q != p and clab[q] == target:
                        if dest < 0:
                            dest = q
                        else:
                            parent[q] = dest
                            csize[dest] += csize[q]
                            lkind[n_log] = 1
                            who[n_log] = q
                            whr[n_log] = dest
                            n_log += 1
            if dest < 0:
                dest = used
                used += 1
                clab[dest] = target
                csize[dest] = 0
        lkind[n_log] = 0
        who[n_log] = v
        whr[n_log] = cl[v]
        n_log += 1
        cl[v] = dest
        csize[p] -= 1
        csize[dest] += 1
        locked[v] = True
        steps += 1
        total += d2
        if total < best:
            best = total
            best_log = n_log
            best_step = steps
            used_at_best = used
        for j in range(indptr[v], indptr[v + 1]):
            u = np.int64(nbr[j])
            if not locked[u]:
                du, ku, _, _ = _best_move(
                    u,
                    _root(parent, cl[u]),
                    indptr,
                    nbr,
                    wt,
                    cost,
                    cl,
                    clab,
                    parent,
                    thing,
                    ws,
                    np.inf,
                )
                if ku != 0:
                    hkey, hval, size = _minheap_push(hkey, hval, size, du, u)
    for i in range(n_log - 1, best_log - 1, -1):
        if lkind[i] == 0:
            v = who[i]
            csize[_root(parent, cl[v])] -= 1
            cl[v] = whr[i]
            csize[_root(parent, cl[v])] += 1
        else:
            parent[who[i]] = who[i]
            csize[whr[i]] -= csize[who[i]]
    return (best if best_log > 0 else 0.0), used_at_best


@nb.njit(**_JIT)
def _grow(arr, size):
    """Copy of ``arr`` zero-padded to ``size`` entries."""
    out = np.zeros(size, arr.dtype)
    _copy(out, np.int64(0), arr, np.int64(0), arr.shape[0])
    return out


@nb.njit(**_JIT)
def _cluster_graph(cl, n_cl, edges, weights):
    """Edges between distinct clusters with summed weights: (pairs [Ec, 2], weights [Ec])."""
    m = edges.shape[0]
    n_cut = 0
    for e in range(m):
        if cl[edges[e, 0]] != cl[edges[e, 1]]:
            n_cut += 1
    bits = 4
    while (1 << bits) < 2 * n_cut + 2:
        bits += 1
    mask = (1 << bits) - 1
    shift = 64 - bits
    keys = np.full(1 << bits, -1, np.int64)
    slot_idx = np.empty(1 << bits, np.int64)
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
        key = a * n_cl + b
        i = ((key * _HASH_MUL) >> shift) & mask
        while keys[i] != -1 and keys[i] != key:
            i = (i + 1) & mask
        if keys[i] == -1:
            keys[i] = key
            slot_idx[i] = count
            pairs[count, 0] = a
            pairs[count, 1] = b
            count += 1
        cw[slot_idx[i]] += weights[e]
    return pairs[:count], cw[:count]


@nb.njit(**_JIT)
def _cluster_costs(cl, n_cl, node_costs):
    """Summed class costs [n_cl, K] of the clusters ``cl`` (ids 0..n_cl-1)."""
    k_cls = node_costs.shape[1]
    ccost = np.zeros((n_cl, k_cls), np.float64)
    for v in range(cl.shape[0]):
        for k in range(k_cls):
            ccost[cl[v], k] += node_costs[v, k]
    return ccost


@nb.njit(**_JIT)
def _relabel_items(cl, new_of):
    """``cl[v] = new_of[cl[v]]`` for every item."""
    for v in range(cl.shape[0]):
        cl[v] = new_of[cl[v]]


def _cluster_level(cl, clab, parent, node_costs, edges, edge_costs, thing):
    """Move sweep and KL round on the cluster graph, where whole clusters move.

    Returns (changed, parent, labels); on return ``cl`` holds cluster ids of the refined
    partition under the returned union-find.
    """
    n_cl, nlab, _ = _compact(cl, clab, parent)
    ccost = _cluster_costs(cl, n_cl, node_costs)
    pairs, cw = _cluster_graph(cl, n_cl, edges, edge_costs)
    indptr, nbr, wt = _csr(n_cl, pairs, cw)
    cl1 = np.arange(n_cl)
    parent1, clab1, csize1, used = _state(cl1, nlab, np.arange(n_cl), n_cl)
    scale = (np.abs(ccost).max() if n_cl else 0.0) + (np.abs(cw).max() if cw.size else 0.0)
    tol = 1e-9 * scale
    moves, used, clab1, csize1, parent1 = _sweep(
        indptr, nbr, wt, ccost, cl1, clab1, csize1, parent1, used, thing, tol
    )
    parent1, clab1, csize1, used = _state(cl1, clab1, parent1, n_cl)
    gain, _ = _kl_round(
        indptr, nbr, wt, ccost, cl1, clab1, csize1, parent1, used, thing, tol, _KL_CAP
    )
    _relabel_items(cl, cl1)
    return moves > 0 or gain < 0.0, parent1, clab1


@nb.njit(**_JIT)
def _root(parent, x):
    """Union-find root without path compression (so merges can be undone in reverse order)."""
    while parent[x] != x:
        x = parent[x]
    return x


@nb.njit(**_JIT)
def _move_delta(v, x, y, indptr, nbr, wt, cost, cl, clab, parent, thing):
    """Objective change of moving item v from cluster x to cluster y.

    When y is a stuff cluster, every other cluster of that class touching v merges with it too, so
    all of v's edges into that class become uncut.
    """
    ly = clab[y]
    stuff = not thing[ly]
    wx = 0.0
    wy = 0.0
    for j in range(indptr[v], indptr[v + 1]):
        q = _root(parent, cl[nbr[j]])
        if q == x:
            wx += wt[j]
        elif q == y or (stuff and clab[q] == ly):
            wy += wt[j]
    return cost[v, ly] - cost[v, clab[x]] + wx - wy


@nb.njit(**_JIT)
def _kl_target(x, a, b):
    """Destination of an item in cluster x: the other side of pair (a, b), or a when growing a."""
    if b < 0:
        return a if x != a else -1
    if x == a:
        return b
    return a if x == b else -1


@nb.njit(**_JIT)
def _kl(a, b, seeds, indptr, nbr, wt, cost, cl, clab, csize, parent, thing, tol, ws, max_steps):
    """Kernighan-Lin pass: move items one at a time (each at most once, best first, even when a
    move alone does not pay) and keep the best prefix of the sequence.

    With ``b >= 0`` items swap between clusters a and b; with ``b < 0`` cluster a grows by taking
    items from any neighbour. Seeds are the items first considered; neighbours of moved items join
    the candidates; at most ``max_steps`` moves are tried. ``ws`` = (version, lock, seen, lock id)
    work arrays. Returns the objective change kept (<= -tol, or 0.0 when nothing was kept).
    """
    ver, lock, seen, lock_ref = ws
    lock_ref[0] += 1
    lock_id = lock_ref[0]
    hkey = np.empty(max(16, 2 * seeds.shape[0]), np.float64)
    hval = np.empty(hkey.shape[0], np.int64)
    size = np.int64(0)
    n_seeds = 0
    for i in range(seeds.shape[0]):
        v = seeds[i]
        if seen[v] == lock_id:
            continue
        seen[v] = lock_id
        x = _root(parent, cl[v])
        y = _kl_target(x, a, b)
        if y >= 0:
            n_seeds += 1
            ver[v] += 1
            d = _move_delta(v, x, y, indptr, nbr, wt, cost, cl, clab, parent, thing)
            hkey, hval, size = _minheap_push(hkey, hval, size, d, v * 65536 + (ver[v] & 65535))
    limit = min(2 * n_seeds + 16, max_steps)
    if b >= 0:
        limit = min(limit, csize[a] + csize[b])
    # Log of changes: kind 0 = item moved (who, its previous cl entry), kind 1 = cluster merged
    # (who, into); undone in reverse order.
    kind = np.empty(4 * limit + 4, np.int64)
    who = np.empty(kind.shape[0], np.int64)
    whr = np.empty(kind.shape[0], np.int64)
    n_log = 0
    steps = 0
    total = 0.0
    best = -tol
    best_log = 0
    while size > 0 and steps < limit:
        d, item, size = _minheap_pop(hkey, hval, size)
        v = item // 65536
        if lock[v] == lock_id or (ver[v] & 65535) != item % 65536:
            continue
        x = _root(parent, cl[v])
        y = _kl_target(x, a, b)
        if n_log + indptr[v + 1] - indptr[v] + 1 > kind.shape[0]:
            kind = _grow(kind, 2 * kind.shape[0] + indptr[v + 1] - indptr[v])
            who = _grow(who, kind.shape[0])
            whr = _grow(whr, kind.shape[0])
        if not thing[clab[y]]:
            for j in range(indptr[v], indptr[v + 1]):
                q = _root(parent, cl[nbr[j]])
                if q != x and q != y and clab[q] == clab[y]:
                    parent[q] = y
                    csize[y] += csize[q]
                    kind[n_log] = 1
                    who[n_log] = q
                    whr[n_log] = y
                    n_log += 1
        kind[n_log] = 0
        who[n_log] = v
        whr[n_log] = cl[v]
        n_log += 1
        cl[v] = y
        csize[x] -= 1
        csize[y] += 1
        lock[v] = lock_id
        steps += 1
        total += d
        if total < best:
            best = total
            best_log = n_log
        for j in range(indptr[v], indptr[v + 1]):
            u = np.int64(nbr[j])
            xu = _root(parent, cl[u])
            yu = _kl_target(xu, a, b)
            if yu >= 0 and lock[u] != lock_id:
                ver[u] += 1
                du = _move_delta(u, xu, yu, indptr, nbr, wt, cost, cl, clab, parent, thing)
                hkey, hval, size = _minheap_push(hkey, hval, size, du, u * 65536 + (ver[u] & 65535))
    for i in range(n_log - 1, best_log - 1, -1):
        if kind[i] == 0:
            v = who[i]
            csize[_root(parent, cl[v])] -= 1
            cl[v] = whr[i]
            csize[_root(parent, cl[v])] += 1
        else:
            parent[who[i]] = who[i]
            csize[whr[i]] -= csize[who[i]]
    return best if best_log > 0 else 0.0


@nb.njit(**_JIT)
def _less(k1, v1, k2, v2):
    """Lexicographic order on (key, value) pairs."""
    return k1 < k2 or (k1 == k2 and v1 < v2)


@nb.njit(**_JIT)
def _minheap_push(hkey, hval, size, key, val):
    """Push (key, val) onto a binary min-heap, growing storage when full.

    Returns (keys, values, new size).
    """
    if size == hkey.shape[0]:
        hkey = _grow(hkey, 2 * size)
        hval = _grow(hval, 2 * size)
    i = size
    while i > 0:
        p = (i - 1) >> 1
        if not _less(key, val, hkey[p], hval[p]):
            break
        hkey[i] = hkey[p]
        hval[i] = hval[p]
        i = p
    hkey[i] = key
    hval[i] = val
    return hkey, hval, size + 1


@nb.njit(**_JIT)
def _minheap_pop(hkey, hval, size):
    """Pop the smallest (key, val) of a binary min-heap; returns key, val and the new size."""
    key = hkey[0]
    val = hval[0]
    size -= 1
    if size > 0:
        lk = hkey[size]
        lv = hval[size]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= size:
                break
            if c + 1 < size and _less(hkey[c + 1], hval[c + 1], hkey[c], hval[c]):
                c += 1
            if not _less(hkey[c], hval[c], lk, lv):
                break
            hkey[i] = hkey[c]
            hval[i] = hval[c]
            i = c
        hkey[i] = lk
        hval[i] = lv
    return key, val, size


@nb.njit(**_JIT)
def _group(keys, n_groups):
    """Counting sort of positions by key: (start offsets [n_groups + 1], positions grouped)."""
    start = np.zeros(n_groups + 1, np.int64)
    for i in range(keys.shape[0]):
        start[keys[i] + 1] += 1
    for g in range(n_groups):
        start[g + 1] += start[g]
    fill = start[:-1].copy()
    order = np.empty(keys.shape[0], np.int64)
    for i in range(keys.shape[0]):
        order[fill[keys[i]]] = i
        fill[keys[i]] += 1
    return start, order


@nb.njit(**_JIT)
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


@nb.njit(**_JIT)
def _kl_round(indptr, nbr, wt, cost, cl, clab, csize, parent, used, thing, tol, kl_cap):
    """One Kernighan-Lin round over small clusters (at most ``kl_cap`` items): each adjacent pair
    with a small side, each small cluster against a fresh empty cluster of every class (splits and
    partial relabelling), each small cluster growing into its neighbours, and new regions grown
    from each item of a small cluster.

    Returns (objective change, number of cluster ids in use).
    """
    n_items = cost.shape[0]
    cap = clab.shape[0]
    ws = (
        np.zeros(n_items, np.int64),
        np.zeros(n_items, np.int64),
        np.zeros(n_items, np.int64),
        np.zeros(1, np.int64),
    )
    gain = 0.0
    # Adjacent cluster pairs, each with the items on its boundary, in order of first appearance.
    root = np.empty(n_items, np.int64)
    for v in range(n_items):
        root[v] = _root(parent, cl[v])
    n_cut = 0
    for v in range(n_items):
        for j in range(indptr[v], indptr[v + 1]):
            if root[nbr[j]] != root[v]:
                n_cut += 1
    bits = 4
    while (1 << bits) < 2 * n_cut + 2:
        bits += 1
    mask = (1 << bits) - 1
    shift = 64 - bits
    keys = np.full(1 << bits, -1, np.int64)
    pidx = np.empty(1 << bits, np.int64)
    pa = np.empty(n_cut, np.int64)
    pb = np.empty(n_cut, np.int64)
    item_pair = np.empty(n_cut, np.int64)
    item = np.empty(n_cut, np.int64)
    n_pairs = np.int64(0)
    t = 0
    for v in range(n_items):
        for j in range(indptr[v], indptr[v + 1]):
            a = root[v]
            b = root[nbr[j]]
            if a == b:
                continue
            if a > b:
                a, b = b, a
            key = a * cap + b
            i = ((key * _HASH_MUL) >> shift) & mask
            while keys[i] != -1 and keys[i] != key:
                i = (i + 1) & mask
            if keys[i] == -1:
                keys[i] = key
                pidx[i] = n_pairs
                pa[n_pairs] = a
                pb[n_pairs] = b
                n_pairs += 1
            item_pair[t] = pidx[i]
            item[t] = v
            t += 1
    start, order = _group(item_pair, n_pairs)
    seeds = item[order]
    for p in range(n_pairs):
        a = _root(parent, pa[p])
        b = _root(parent, pb[p])
        if a != b and min(csize[a], csize[b]) <= kl_cap:
            gain += _kl(
                a,
                b,
                seeds[start[p] : start[p + 1]],
                indptr,
                nbr,
                wt,
                cost,
                cl,
                clab,
                csize,
                parent,
                thing,
                tol,
                ws,
                4 * kl_cap,
            )
    # Splits: clusters against a fresh empty cluster of each of their cheapest classes (a thing
    # cluster's own class included).
    for v in range(n_items):
        root[v] = _root(parent, cl[v])
    start, members = _group(root, cap)
    k_cls = cost.shape[1]
    vec = np.empty(k_cls, np.float64)
    for c in range(cap):
        size_c = start[c + 1] - start[c]
        if size_c < 2 or size_c > kl_cap:
            continue
        vec[:] = 0.0
        for i in range(start[c], start[c + 1]):
            for k in range(k_cls):
                vec[k] += cost[members[i], k]
        limit = _kth_smallest(vec, _KL_LABELS)
        for k in range(k_cls):
            if used == cap:
                break
            if (k == clab[c] and not thing[k]) or (k != clab[c] and vec[k] > limit):
                continue
            if _root(parent, c) != c:
                break
            fresh = used
            clab[fresh] = k
            csize[fresh] = 0
            g = _kl(
                c,
                fresh,
                members[start[c] : start[c + 1]],
                indptr,
                nbr,
                wt,
                cost,
                cl,
                clab,
                csize,
                parent,
                thing,
                tol,
                ws,
                4 * kl_cap,
            )
            if g < 0.0:
                gain += g
                used += 1
    # Growth: every cluster against all its neighbours, seeded with the items just outside it.
    for v in range(n_items):
        root[v] = _root(parent, cl[v])
    n_out = 0
    for v in range(n_items):
        for j in range(indptr[v], indptr[v + 1]):
            if root[nbr[j]] != root[v]:
                n_out += 1
    inside = np.empty(n_out, np.int64)
    outside = np.empty(n_out, np.int64)
    t = 0
    for v in range(n_items):
        for j in range(indptr[v], indptr[v + 1]):
            if root[nbr[j]] != root[v]:
                inside[t] = root[v]
                outside[t] = nbr[j]
                t += 1
    start, order = _group(inside, cap)
    outside = outside[order]
    for c in range(cap):
        if start[c + 1] > start[c] and _root(parent, c) == c and 0 < csize[c] <= kl_cap:
            gain += _kl(
                c,
                np.int64(-1),
                outside[start[c] : start[c + 1]],
                indptr,
                nbr,
                wt,
                cost,
                cl,
                clab,
                csize,
                parent,
                thing,
                tol,
                ws,
                4 * kl_cap,
            )
    # New regions: each item of a small cluster starts a fresh cluster (one of its cheapest other
    # classes, or a new instance of its thing class) that then grows into its neighbours.
    seed = np.empty(1, np.int64)
    for v in range(n_items):
        if csize[_root(parent, cl[v])] > kl_cap:
            continue
        limit = _kth_smallest(cost[v], _KL_LABELS)
        for k in range(k_cls):
            if used == cap:
                break
            own = k == clab[_root(parent, cl[v])]
            if (own and not thing[k]) or (not own and cost[v, k] > limit):
                continue
            fresh = used
            clab[fresh] = k
            csize[fresh] = 0
            seed[0] = v
            g = _kl(
                fresh,
                np.int64(-1),
                seed,
                indptr,
                nbr,
                wt,
                cost,
                cl,
                clab,
                csize,
                parent,
                thing,
                tol,
                ws,
                4 * kl_cap,
            )
            if g < 0.0:
                gain += g
                used += 1
    return gain, used


@nb.njit(**_JIT)
def _merge_stuff(edges, thing, cl, clab, csize, parent):
    """Union every pair of touching clusters that carry the same stuff class."""
    for e in range(edges.shape[0]):
        a = _find(parent, cl[edges[e, 0]])
        b = _find(parent, cl[edges[e, 1]])
        if a != b and clab[a] == clab[b] and not thing[clab[a]]:
            if csize[a] < csize[b]:
                a, b = b, a
            parent[b] = a
            csize[a] += csize[b]


@nb.njit(**_JIT)
def _resolve(cl, parent):
    """Replace every cluster id by its union-find root."""
    for v in range(cl.shape[0]):
        cl[v] = _find(parent, cl[v])


def _refine(node_costs, edges, edge_costs, thing, cl, rlab, max_rounds, csr):
    """Stuff merge and up to ``max_rounds`` local-search rounds from the partition ``cl``.

    ``cl`` maps nodes to cluster ids labelled by ``rlab``; on return it holds the refined
    partition's cluster ids, labelled by the returned array.
    """
    n = node_costs.shape[0]
    parent, clab, csize, used = _state(cl, rlab, np.arange(rlab.shape[0]), n)
    _merge_stuff(edges, thing, cl, clab, csize, parent)
    if max_rounds > 0 and n > 0:
        indptr, nbr, wt = csr
        scale = np.abs(node_costs).max() + (np.abs(edge_costs).max() if edge_costs.size else 0.0)
        tol = 1e-9 * scale
        for _ in range(max_rounds):
            _, used, clab, csize, parent = _sweep(
                indptr, nbr, wt, node_costs, cl, clab, csize, parent, used, thing, tol
            )
            changed, parent1, clab1 = _cluster_level(
                cl, clab, parent, node_costs, edges, edge_costs, thing
            )
            parent, clab, csize, used = _state(cl, clab1, parent1, n)
            gain, used = _kl_round(
                indptr, nbr, wt, node_costs, cl, clab, csize, parent, used, thing, tol, _KL_CAP
            )
            gain2, used = _kl_global(
                indptr, nbr, wt, node_costs, cl, clab, csize, parent, used, thing, tol, _KL_PATIENCE
            )
            # The sweep runs to convergence, so another round only helps after other changes.
            if not changed and gain + gain2 == 0.0:
                break
    _resolve(cl, parent)
    return clab


@nb.njit(**_JIT)
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


@nb.njit(**_JIT)
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
    max_rounds: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Greedy contraction, stuff merge and up to ``max_rounds`` local-search rounds.

    Validated contiguous inputs (float64 [N, K], int64 [E, 2], float64 [E], bool [K]; ``thing``
    marks partitionable classes). Returns (labels, components, cut, objective); component ids are
    0..C-1 in order of first node. Python only sequences the compiled (GIL-free) stages.
    """
    n = node_costs.shape[0]
    root, rlab = greedy_contraction(node_costs, edges, edge_costs)
    csr = _csr(n, edges, edge_costs)
    clab = _refine(node_costs, edges, edge_costs, thing, root, rlab, max_rounds, csr)
    best = _finish(node_costs, edges, edge_costs, root, clab)
    if max_rounds > 0 and 0 < n <= _MULTI_START_NODES:
        # Small instances: also refine from the argmin labelling (one cluster per same-class
        # connected region) and keep the better result.
        cl2, rlab2 = _argmin_start(node_costs, edges)
        clab2 = _refine(node_costs, edges, edge_costs, thing, cl2, rlab2, max_rounds, csr)
        other = _finish(node_costs, edges, edge_costs, cl2, clab2)
        if other[3] < best[3]:
            best = other
    labels, components, cut, objective = best
    return labels, components, cut, float(objective)


@nb.njit(**_JIT)
def connected_components(n, edges, joined):
    """Component id (0..C-1, in order of first node) of every node over the ``joined`` edges."""
    uf = np.arange(n)
    for e in range(edges.shape[0]):
        if joined[e]:
            ru = _find(uf, edges[e, 0])
            rv = _find(uf, edges[e, 1])
            if ru != rv:
                uf[max(ru, rv)] = min(ru, rv)
    comp = np.full(n, -1, np.int64)
    count = 0
    for v in range(n):
        r = _find(uf, v)
        if comp[r] < 0:
            comp[r] = count
            count += 1
        comp[v] = comp[r]
    return comp
