"""Class-aware greedy edge contraction, the first stage of the CPU AMWC solver (DESIGN §5).

Every node starts as its own cluster labelled ``argmin_k c[k]``; the gain of joining clusters A and
B is ``w_AB + c_A[l_A] + c_B[l_B] - min_k (c_A[k] + c_B[k])``. The edge of largest positive gain is
contracted repeatedly. Each cluster owns a block of half-edge ids in one growing arena; a global
open-addressing hash table keyed by the cluster pair finds parallel edges (their costs are summed),
and the shorter block is merged into the longer. Priorities are ``(gain code << 32) | edge`` in one
int64: the initial gains are radix-sorted and consumed in order, gains raised by folding parallel
edges go to a 4-ary max-heap, and each step takes the larger head. An entry is current when its
gain code equals the edge's stamp. A gain is recomputed when its entry is taken: if it dropped, the
entry is re-queued (lazy correction); a sweep over the remaining edges at the end re-queues gains
that grew, so contraction stops only when no edge has a positive gain.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from cops.solver._cpu_structures import (
    JIT,
    copy_range,
    edge_find,
    edge_insert,
    edge_rehash,
    find_halving,
    maxheap_pop,
    maxheap_push,
    table_bits,
)

_LOW32 = 0xFFFFFFFF
_DEAD = -1  # stamp of an edge that was contracted or folded into a parallel edge


@nb.njit(inline="always", **JIT)
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


@nb.njit(inline="always", **JIT)
def _gain_bits(g):
    """Order-preserving 31-bit code of a positive gain (9-bit exponent, 21-bit mantissa); 0 if <= 0.

    The code is the queue priority; it orders gains to a relative resolution of 2**-21.
    """
    if not g > 0.0:
        return np.int64(0)
    mant, ex = math.frexp(g)
    ex = min(max(ex, -200), 311) + 200
    return (np.int64(ex) << 22) | np.int64((mant - 0.5) * 8388608.0) | np.int64(1)


@nb.njit(**JIT)
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


@nb.njit(**JIT)
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


@nb.njit(**JIT)
def _sort_keys(keys, count, tmp):
    """Sort ``keys[:count]`` ascending by their upper 31 bits (stable LSD radix, 3 passes)."""
    for p in range(3):
        # Shifts 32, 43, 54; data alternates keys -> tmp -> keys -> tmp.
        if p % 2 == 0:
            _radix_pass(keys, tmp, count, 32 + 11 * p)
        else:
            _radix_pass(tmp, keys, count, 32 + 11 * p)
    copy_range(keys, np.int64(0), tmp, np.int64(0), count)


@nb.njit(**JIT)
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


@nb.njit(**JIT)
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

    bits = table_bits(m)
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
        e2 = edge_find(table, shift, mask, ends, n, u, v)
        if e2 >= 0:
            ew[e2] += edge_costs[e]
            continue
        ends[2 * e] = u
        ends[2 * e + 1] = v
        edge_insert(table, shift, mask, n, u, v, e)
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
                item, size = maxheap_pop(heap, size)
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
                    heap, size = maxheap_push(heap, size, (gb << 32) | e)
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
                copy_range(adj, top, adj, start[b], length[b])
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
                e3 = edge_find(table, shift, mask, ends, n, min(b, c), max(b, c))
                if e3 >= 0:
                    # Parallel edge: fold e2 into e3 and re-queue e3 if its gain grew.
                    stamp[e2] = _DEAD
                    ew[e3] += ew[e2]
                    gb = _gain_bits(_gain(cvec, lab, mval, b, c, ew[e3]))
                    if gb > stamp[e3]:
                        stamp[e3] = gb
                        heap, size = maxheap_push(heap, size, (gb << 32) | e3)
                else:
                    ends[h] = b
                    edge_insert(table, shift, mask, n, min(b, c), max(b, c), e2)
                    filled += 1
                    adj[out] = h
                    out += 1
            length[b] = out - start[b]
            length[a] = 0
            parent[a] = b
            if filled > (mask >> 1) + (mask >> 2):
                filled = edge_rehash(table, shift, mask, ends, stamp, n)
        # Gains may have grown while their entries were stale: re-queue every positive one.
        ptr = _queue_positive(cvec, lab, mval, ends, ew, stamp, keys, tmp) - 1

    for v in range(n):
        parent[v] = find_halving(parent, v)
    return parent, lab


@nb.njit(**JIT)
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
            copy_range(new, top, adj, start[v], length[v])
            start[v] = top
            cap[v] = length[v]
            top += length[v]
        else:
            cap[v] = 0
    return new, top
