"""CUDA kernels (numba-cuda) of the parallel AMWC solver up to the contraction; the driver is
:mod:`.amwc_cuda`, the local-search and output kernels are in :mod:`._cuda_refine_kernels`.

Kernels are compiled on first use and cached on disk (``cache=True``). Every element-wise kernel
is a grid-stride loop, so any launch size covers any problem size (the simulator runs one small
block, the GPU many). Threads combine results only through order-independent atomics (max/min,
integer add/or, compare-and-swap for hash slots); floating-point sums are formed by one thread in
increasing index order, so results do not depend on scheduling.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda
from numba.cuda import config

#: True when numba runs kernels in its pure-Python CUDA simulator.
SIMULATOR = bool(config.ENABLE_CUDASIM)
#: Threads per block (small under the simulator: every thread is a Python thread there).
TPB = 2 if SIMULATOR else 256
#: Elements summed serially by one thread of the tile scan.
ITEMS = 4 if SIMULATOR else 8
#: Elements scanned by one block.
TILE = TPB * ITEMS
#: Upper bound on blocks of a grid-stride launch.
MAX_BLOCKS = 1 if SIMULATOR else 4096
#: Distinct neighbouring segments a node considers in local search (grid graphs need ~20).
MAX_NEIGHBOUR_KEYS = 32
#: "No edge" marker of the per-cluster best-edge array.
NO_EDGE = np.int32(2**31 - 1)
_H1 = np.int64(2654435761)
_H2 = np.int64(2246822519)

ERR_NONFINITE = 1
ERR_RANGE = 2
ERR_LOOP = 4


def blocks(n: int) -> int:
    """Blocks for a grid-stride launch over ``n`` items."""
    return max(1, min(MAX_BLOCKS, (n + TPB - 1) // TPB))


# ----------------------------------------------------------------------------- input loading


@cuda.jit(cache=True)
def k_load_costs2(src, n, k, dst, err):
    """dst[i, c] = float64(src[i, c]) for a [N, K] input; flags non-finite values."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for f in range(start, n * k, step):
        i = f // k
        c = f - i * k
        x = np.float64(src[i, c])
        if not math.isfinite(x):
            cuda.atomic.or_(err, 0, ERR_NONFINITE)
            x = 0.0
        dst[i, c] = x


@cuda.jit(cache=True)
def k_load_costs3(src, nb, n, k, dst, err):
    """dst[b * N + i, c] = float64(src[b, i, c]) for a [B, N, K] input; flags non-finite values."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    per = n * k
    for f in range(start, nb * per, step):
        b = f // per
        r = f - b * per
        i = r // k
        c = r - i * k
        x = np.float64(src[b, i, c])
        if not math.isfinite(x):
            cuda.atomic.or_(err, 0, ERR_NONFINITE)
            x = 0.0
        dst[b * n + i, c] = x


@cuda.jit(cache=True)
def k_load_edges(src, m, n, nb, eu, ev, err):
    """Copy of image b's edges [E, 2] shifted by b * N, ordered u < v; flags bad node ids."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for f in range(start, nb * m, step):
        b = f // m
        j = f - b * m
        u = np.int64(src[j, 0])
        v = np.int64(src[j, 1])
        if u < 0 or v < 0 or u >= n or v >= n:
            cuda.atomic.or_(err, 0, ERR_RANGE)
            u = 0
            v = 1
        elif u == v:
            cuda.atomic.or_(err, 0, ERR_LOOP)
        base = np.int64(b) * n
        eu[f] = min(u, v) + base
        ev[f] = max(u, v) + base


@cuda.jit(cache=True)
def k_load_weights1(src, m, dst, err):
    """dst[e] = float64(src[e]) for an [E] input; flags non-finite values."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, m, step):
        x = np.float64(src[e])
        if not math.isfinite(x):
            cuda.atomic.or_(err, 0, ERR_NONFINITE)
            x = 0.0
        dst[e] = x


@cuda.jit(cache=True)
def k_load_weights2(src, nb, m, dst, err):
    """dst[b * E + e] = float64(src[b, e]) for a [B, E] input; flags non-finite values."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for f in range(start, nb * m, step):
        x = np.float64(src[f // m, f % m])
        if not math.isfinite(x):
            cuda.atomic.or_(err, 0, ERR_NONFINITE)
            x = 0.0
        dst[f] = x


@cuda.jit(cache=True)
def k_zero(arr, n):
    """arr[i] = 0."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, step):
        arr[i] = 0


@cuda.jit(cache=True)
def k_iota(arr, n):
    """arr[i] = i."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, step):
        arr[i] = i


# ----------------------------------------------------------------------------- exclusive scan


@cuda.jit(cache=True)
def k_scan_tiles(src, n, out, sums, ntiles):
    """Exclusive scan inside tiles of TILE items; sums[t] = total of tile t.

    With a single tile, out[n] receives the grand total.
    """
    buf = cuda.shared.array(TPB, np.int32)
    tid = cuda.threadIdx.x
    for t in range(cuda.blockIdx.x, ntiles, cuda.gridDim.x):
        base = t * TILE + tid * ITEMS
        s = 0
        for j in range(ITEMS):
            if base + j < n:
                s += src[base + j]
        buf[tid] = s
        cuda.syncthreads()
        d = 1
        while d < TPB:
            x = 0
            if tid >= d:
                x = buf[tid - d]
            cuda.syncthreads()
            buf[tid] += x
            cuda.syncthreads()
            d *= 2
        run = buf[tid] - s
        for j in range(ITEMS):
            if base + j < n:
                out[base + j] = run
                run += src[base + j]
        if tid == TPB - 1:
            sums[t] = buf[tid]
            if ntiles == 1:
                out[n] = buf[tid]
        cuda.syncthreads()


@cuda.jit(cache=True)
def k_scan_add(out, n, offs, ntiles):
    """Adds the scanned tile offsets to a tile-wise scan; out[n] = grand total."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, step):
        out[i] += offs[i // TILE]
    if start == 0:
        out[n] = offs[ntiles]


# ----------------------------------------------------------------------------- contraction rounds


@cuda.jit(cache=True)
def k_cluster_min(cost, n, k, mval, lab, bestg, beste):
    """Per cluster: cheapest class (lowest index on ties) and its cost; resets round state."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        best = cost[u, 0]
        arg = 0
        for c in range(1, k):
            x = cost[u, c]
            if x < best:
                best = x
                arg = c
        mval[u] = best
        lab[u] = arg
        bestg[u] = 0.0
        beste[u] = NO_EDGE


@cuda.jit(cache=True)
def k_edge_gain(eu, ev, ew, ne, cost, k, mval, gain, bestg):
    """gain[e] = w + c_u[l_u] + c_v[l_v] - min_k (c_u + c_v)[k]; bestg = per-cluster max gain."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, ne, step):
        u = eu[e]
        v = ev[e]
        joint = cost[u, 0] + cost[v, 0]
        for c in range(1, k):
            x = cost[u, c] + cost[v, c]
            if x < joint:
                joint = x
        g = ew[e] + mval[u] + mval[v] - joint
        gain[e] = g
        if g > 0.0:
            cuda.atomic.max(bestg, u, g)
            cuda.atomic.max(bestg, v, g)


@cuda.jit(cache=True)
def k_edge_pick(eu, ev, ne, gain, bestg, beste):
    """beste[u] = lowest index among u's edges whose positive gain equals u's best gain."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, ne, step):
        g = gain[e]
        if g > 0.0:
            u = eu[e]
            v = ev[e]
            if g == bestg[u]:
                cuda.atomic.min(beste, u, e)
            if g == bestg[v]:
                cuda.atomic.min(beste, v, e)


@cuda.jit(cache=True)
def k_match(eu, ev, beste, n, ptr, mate, flag, stamp):
    """ptr[u] = neighbour across u's best edge; mate[u] = it too when the choice is mutual.

    Writes ``stamp`` to flag[0] when some pair is mutual.
    """
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        e = beste[u]
        p = -1
        m = -1
        if e != NO_EDGE:
            p = eu[e]
            if p == u:
                p = ev[e]
            if beste[p] == e:
                m = p
                flag[0] = stamp
        ptr[u] = p
        mate[u] = m


@cuda.jit(cache=True)
def k_satellite(beste, ew, ptr, mate, cost, k, mval, n, use_sat, rep, sat, low):
    """Representative of every cluster for this round.

    A mutual pair joins under its lower id. With ``use_sat``, a cluster whose best neighbour v is in
    a mutual pair (v, v') becomes a satellite of that pair when ``w_uv - (c_u[L] - c_u[l_u]) > 0``
    for L = argmin (c_v + c_v'): then the joint gain is at least the pair's gain plus the
    satellites' terms, provided no negative edge lies inside the group (see :func:`k_reject`).
    """
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        m = mate[u]
        r = u
        s = 0
        if m >= 0:
            r = min(u, m)
        elif use_sat != 0 and ptr[u] >= 0:
            v = ptr[u]
            v2 = mate[v]
            if v2 >= 0:
                best = cost[v, 0] + cost[v2, 0]
                arg = 0
                for c in range(1, k):
                    x = cost[v, c] + cost[v2, c]
                    if x < best:
                        best = x
                        arg = c
                if ew[beste[u]] - (cost[u, arg] - mval[u]) > 0.0:
                    r = min(v, v2)
                    s = 1
        rep[u] = r
        sat[u] = s
        low[u] = u


@cuda.jit(cache=True)
def k_reject(eu, ev, ew, ne, rep, sat):
    """Drops (sat = 2) a satellite from every negative edge inside a tentative group.

    When both ends are satellites the higher id goes, which takes the edge out of the group.
    """
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, ne, step):
        if ew[e] < 0.0:
            u = eu[e]
            v = ev[e]
            if rep[u] == rep[v]:
                if sat[v] != 0:
                    sat[v] = 2
                elif sat[u] != 0:
                    sat[u] = 2


@cuda.jit(cache=True)
def k_lowest(rep, sat, n, low):
    """low[r] = lowest id in the group of pair representative r (a satellite may be lower)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        if sat[u] == 1:
            cuda.atomic.min(low, rep[u], u)


@cuda.jit(cache=True)
def k_roots(rep, sat, low, n, isroot):
    """Final representative = lowest member of the group (rejected satellites stay alone), so
    cluster ids keep the order of their lowest node; isroot[u] = 1 for representatives."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        r = u if sat[u] == 2 else low[rep[u]]
        rep[u] = r
        isroot[u] = 1 if r == u else 0


@cuda.jit(cache=True)
def k_new_ids(rep, newid, n, nid):
    """nid[u] = compact id of u's group."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        nid[u] = newid[rep[u]]


@cuda.jit(cache=True)
def k_map_nodes(node_cl, ntot, nid):
    """Moves every original node to its cluster's new id."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, ntot, step):
        node_cl[i] = nid[node_cl[i]]


# ----------------------------------------------------------------------------- grouping (CSR)


@cuda.jit(cache=True)
def k_count(grp, n, cnt):
    """cnt[g] += number of items i with grp[i] == g (items with grp < 0 are skipped)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, step):
        g = grp[i]
        if g >= 0:
            cuda.atomic.add(cnt, g, 1)


@cuda.jit(cache=True)
def k_fill(grp, n, off, cnt, members):
    """Places every item in its group's segment, counting cnt back down to zero."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, n, step):
        g = grp[i]
        if g >= 0:
            old = cuda.atomic.sub(cnt, g, 1)
            members[off[g] + old - 1] = i


@cuda.jit(cache=True)
def k_sort_segments(off, ng, members):
    """Sorts every group's segment members[off[g]:off[g+1]] in place (heapsort: O(s log s) per
    thread, so a cluster absorbing thousands of satellites in one round stays cheap)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for g in range(start, ng, step):
        s = off[g]
        end = off[g + 1] - s
        i = end // 2
        while True:
            if i > 0:  # heap construction
                i -= 1
                root = i
            else:  # move the maximum behind the shrinking heap
                end -= 1
                if end <= 0:
                    break
                x = members[s]
                members[s] = members[s + end]
                members[s + end] = x
                root = 0
            while True:  # sift members[s + root] down within the first ``end`` items
                child = 2 * root + 1
                if child >= end:
                    break
                if child + 1 < end and members[s + child] < members[s + child + 1]:
                    child += 1
                if members[s + root] >= members[s + child]:
                    break
                x = members[s + root]
                members[s + root] = members[s + child]
                members[s + child] = x
                root = child


@cuda.jit(cache=True)
def k_sum_costs(off, members, ng, old, k, new):
    """new[g] = sum of old[m] over g's (sorted) members, in increasing order."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for g in range(start, ng, step):
        s = off[g]
        t = off[g + 1]
        for c in range(k):
            acc = 0.0
            for a in range(s, t):
                acc += old[members[a], c]
            new[g, c] = acc


# ----------------------------------------------------------------------------- parallel edges


@cuda.jit(cache=True)
def k_clear_hash(keys, owner, h):
    """Empties the first h slots of the edge hash table."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, h, step):
        keys[i] = -1
        owner[i] = NO_EDGE


@cuda.jit(cache=True)
def k_hash_insert(eu, ev, ne, nid, nn, keys, owner, mask, slot):
    """Relabels edge e to clusters (a, b) = nid[...]; self-loops get slot -1, others the hash slot
    of the pair (linear probing); owner[slot] = lowest edge index of the pair."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, ne, step):
        a = np.int64(nid[eu[e]])
        b = np.int64(nid[ev[e]])
        if a == b:
            slot[e] = -1
            continue
        lo = min(a, b)
        hi = max(a, b)
        key = lo * nn + hi
        h = ((lo * _H1) ^ (hi * _H2)) >> 16
        h = h & mask
        while True:
            prev = cuda.atomic.cas(keys, h, np.int64(-1), key)
            if prev == -1 or prev == key:
                break
            h = (h + 1) & mask
        slot[e] = h
        cuda.atomic.min(owner, h, e)


@cuda.jit(cache=True)
def k_owner_flag(slot, owner, ne, flag):
    """flag[e] = 1 when e is the lowest-index edge of its cluster pair."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, ne, step):
        s = slot[e]
        flag[e] = 1 if s >= 0 and owner[s] == e else 0


@cuda.jit(cache=True)
def k_edge_group(slot, owner, pos, ne, grp):
    """grp[e] = new index of e's cluster pair (-1 for self-loops)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, ne, step):
        s = slot[e]
        grp[e] = pos[owner[s]] if s >= 0 else -1


@cuda.jit(cache=True)
def k_sum_edges(off, members, ng, eu, ev, ew, nid, eu2, ev2, ew2):
    """New edge g joins the relabelled ends of its first member; its cost sums its members'."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for g in range(start, ng, step):
        s = off[g]
        t = off[g + 1]
        first = members[s]
        a = nid[eu[first]]
        b = nid[ev[first]]
        eu2[g] = min(a, b)
        ev2[g] = max(a, b)
        acc = 0.0
        for i in range(s, t):
            acc += ew[members[i]]
        ew2[g] = acc
