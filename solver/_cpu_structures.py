"""Data structures shared by the stages of the CPU AMWC solver (numba-compiled).

A cluster-pair hash table for the contraction, a 4-ary max-heap of int64 priorities, a binary
min-heap of (float key, int value) pairs, a counting-sort grouping, two union-find lookups (one that
shortens paths, one that leaves the tree alone so merges can be undone), connected components, and
an undo log for the Kernighan-Lin style passes that try moves and keep only the best prefix.
"""

from __future__ import annotations

import numba as nb
import numpy as np

JIT = {"cache": True, "nogil": True}
"""Options of every compiled function: cached on disk, GIL released so batches run on threads."""
HASH_MUL = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer


@nb.njit(**JIT)
def copy_range(dst, d0, src, s0, count):
    """``dst[d0 : d0 + count] = src[s0 : s0 + count]`` for non-overlapping or forward-safe ranges.

    An explicit loop: numba compiles slice-to-slice assignment slowly.
    """
    for i in range(count):
        dst[d0 + i] = src[s0 + i]


@nb.njit(**JIT)
def grow(arr, size):
    """Copy of ``arr`` zero-padded to ``size`` entries."""
    out = np.zeros(size, arr.dtype)
    copy_range(out, np.int64(0), arr, np.int64(0), arr.shape[0])
    return out


# ----------------------------------------------------------------------------- hash tables


@nb.njit(**JIT)
def table_bits(count):
    """log2 of a power-of-two table size that keeps ``count`` keys at most half full."""
    bits = 4
    while (1 << bits) < 2 * count + 2:
        bits += 1
    return bits


# The contraction's table maps an unordered cluster pair to the edge joining them. Slots hold edge
# ids only; the key of a slot is read from the edge's current endpoints, so a slot left behind when
# an edge is re-attached to another cluster still answers correctly, and keys naming a merged-away
# cluster are never asked for again. Slots are therefore never deleted; the table is rebuilt when
# it fills.


@nb.njit(inline="always", **JIT)
def _slot(u, v, n, shift, mask):
    """Fibonacci hash of the ordered pair u < v to a table slot."""
    return (((u * n + v) * HASH_MUL) >> shift) & mask


@nb.njit(**JIT)
def edge_find(table, shift, mask, ends, n, u, v):
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


@nb.njit(**JIT)
def edge_insert(table, shift, mask, n, u, v, e):
    """Record edge e as joining clusters u < v (the pair must be absent)."""
    i = _slot(u, v, n, shift, mask)
    while table[i] >= 0:
        i = (i + 1) & mask
    table[i] = e


@nb.njit(**JIT)
def edge_rehash(table, shift, mask, ends, stamp, n):
    """Rebuild the table from the live edges (``stamp >= 0``); returns the filled slot count."""
    table[:] = -1
    count = 0
    for e in range(stamp.shape[0]):
        if stamp[e] >= 0:
            u = np.int64(ends[2 * e])
            v = np.int64(ends[2 * e + 1])
            edge_insert(table, shift, mask, n, min(u, v), max(u, v), e)
            count += 1
    return count


@nb.njit(**JIT)
def id_table(count):
    """Empty table numbering up to ``count`` non-negative keys: (keys, ids, shift, mask)."""
    bits = table_bits(count)
    return (
        np.full(1 << bits, -1, np.int64),
        np.empty(1 << bits, np.int64),
        64 - bits,
        (1 << bits) - 1,
    )


@nb.njit(**JIT)
def id_of(keys, ids, shift, mask, key, fresh):
    """Id of ``key`` in an ``id_table``; an absent key is given id ``fresh``.

    Returns (id, whether the key was new).
    """
    i = ((key * HASH_MUL) >> shift) & mask
    while keys[i] != -1 and keys[i] != key:
        i = (i + 1) & mask
    if keys[i] == -1:
        keys[i] = key
        ids[i] = fresh
        return fresh, True
    return ids[i], False


# ----------------------------------------------------------------------------- 4-ary max-heap


@nb.njit(**JIT)
def maxheap_push(heap, size, item):
    """Push ``item`` onto the 4-ary max-heap ``heap[:size]``, doubling full storage.

    Returns (heap, new size).
    """
    if size == heap.shape[0]:
        heap = grow(heap, 2 * size)
    i = size
    while i > 0:
        p = (i - 1) >> 2
        if heap[p] >= item:
            break
        heap[i] = heap[p]
        i = p
    heap[i] = item
    return heap, size + 1


@nb.njit(**JIT)
def maxheap_pop(heap, size):
    """Pop the maximum of the 4-ary max-heap ``heap[:size]``; returns (item, new size)."""
    top = heap[0]
    size -= 1
    if size == 0:
        return top, size
    item = heap[size]
    i = 0
    while 4 * i + 1 < size:
        c = 4 * i + 1
        best = c
        bv = heap[c]
        for j in range(c + 1, min(c + 4, size)):
            if heap[j] > bv:
                bv = heap[j]
                best = j
        if bv <= item:
            break
        heap[i] = bv
        i = best
    heap[i] = item
    return top, size


# ----------------------------------------------------------------------------- binary min-heap


@nb.njit(inline="always", **JIT)
def _less(k1, v1, k2, v2):
    """Lexicographic order on (key, value) pairs."""
    return k1 < k2 or (k1 == k2 and v1 < v2)


@nb.njit(inline="always", **JIT)
def _put(hkey, hval, i, key, val):
    """Store (key, val) at heap position i."""
    hkey[i] = key
    hval[i] = val


@nb.njit(**JIT)
def minheap_push(hkey, hval, size, key, val):
    """Push (key, val) onto a binary min-heap, growing storage when full.

    Returns (keys, values, new size).
    """
    if size == hkey.shape[0]:
        hkey = grow(hkey, 2 * size)
        hval = grow(hval, 2 * size)
    i = size
    while i > 0:
        p = (i - 1) >> 1
        if not _less(key, val, hkey[p], hval[p]):
            break
        _put(hkey, hval, i, hkey[p], hval[p])
        i = p
    _put(hkey, hval, i, key, val)
    return hkey, hval, size + 1


@nb.njit(**JIT)
def minheap_pop(hkey, hval, size):
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
            _put(hkey, hval, i, hkey[c], hval[c])
            i = c
        _put(hkey, hval, i, lk, lv)
    return key, val, size


# ----------------------------------------------------------------------------- grouping


@nb.njit(**JIT)
def group_by(keys, n_groups):
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


# ----------------------------------------------------------------------------- union-find


@nb.njit(**JIT)
def find_halving(parent, x):
    """Union-find root of ``x``, halving the path on the way (merges cannot be undone after)."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@nb.njit(**JIT)
def find_readonly(parent, x):
    """Union-find root of ``x`` without changing ``parent`` (so merges can be undone in order)."""
    while parent[x] != x:
        x = parent[x]
    return x


@nb.njit(**JIT)
def connected_components(n, edges, joined):
    """Component id (0..C-1, in order of first node) of every node over the ``joined`` edges."""
    uf = np.arange(n)
    for e in range(edges.shape[0]):
        if joined[e]:
            ru = find_halving(uf, edges[e, 0])
            rv = find_halving(uf, edges[e, 1])
            if ru != rv:
                uf[max(ru, rv)] = min(ru, rv)
    comp = np.full(n, -1, np.int64)
    count = 0
    for v in range(n):
        r = find_halving(uf, v)
        if comp[r] < 0:
            comp[r] = count
            count += 1
        comp[v] = comp[r]
    return comp


# ----------------------------------------------------------------------------- undo log
# Passes that try a sequence of moves and keep its best prefix log every change: kind 0 = item
# ``who`` moved (``where`` = its previous cluster entry), kind 1 = cluster ``who`` merged into
# ``where``. Cluster trees are walked with ``find_readonly`` meanwhile, so undoing in reverse order
# restores the partition exactly.


@nb.njit(**JIT)
def new_log(capacity):
    """Empty undo log (kind, who, where) with room for ``capacity`` entries."""
    return (
        np.empty(capacity, np.int64),
        np.empty(capacity, np.int64),
        np.empty(capacity, np.int64),
    )


@nb.njit(**JIT)
def log_reserve(log, n_log, extra):
    """The log, enlarged if ``extra`` more entries would not fit after ``n_log``."""
    kind, who, where = log
    if n_log + extra <= kind.shape[0]:
        return log
    size = 2 * kind.shape[0] + extra
    return grow(kind, size), grow(who, size), grow(where, size)


@nb.njit(**JIT)
def log_merge(log, n_log, q, into):
    """Log that cluster q was merged into ``into``; returns the new length."""
    kind, who, where = log
    kind[n_log], who[n_log], where[n_log] = 1, q, into
    return n_log + 1


@nb.njit(**JIT)
def move_logged(log, n_log, part, v, x, y):
    """Move item v from its cluster x to cluster y and log it; returns the new log length."""
    cl, _, csize, _ = part
    kind, who, where = log
    kind[n_log], who[n_log], where[n_log] = 0, v, cl[v]
    cl[v] = y
    csize[x] -= 1
    csize[y] += 1
    return n_log + 1


@nb.njit(**JIT)
def undo(log, n_log, keep, cl, csize, parent):
    """Undo the entries ``keep .. n_log - 1`` of the log, newest first."""
    kind, who, where = log
    for i in range(n_log - 1, keep - 1, -1):
        if kind[i] == 0:
            v = who[i]
            csize[find_readonly(parent, cl[v])] -= 1
            cl[v] = where[i]
            csize[find_readonly(parent, cl[v])] += 1
        else:
            parent[who[i]] = who[i]
            csize[where[i]] -= csize[who[i]]
