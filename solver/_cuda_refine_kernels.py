"""CUDA kernels (numba-cuda) of the parallel AMWC solver after the contraction: local search on
segment keys, segments as connected components, and the outputs (driver: :mod:`.amwc_cuda`).

Launch conventions are those of :mod:`._cuda_kernels` (grid-stride loops, order-independent
atomics only).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from cops.solver._cuda_kernels import MAX_NEIGHBOUR_KEYS

#: Resolution of the local-search gain counter: changes are summed in units of 2**-20.
GAIN_UNIT = float(2**20)

# ----------------------------------------------------------------------------- local search


@cuda.jit(cache=True)
def k_half_ends(eu, ev, m, ends):
    """ends[2e] = eu[e], ends[2e + 1] = ev[e]: the node owning each half-edge."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, m, step):
        ends[2 * e] = eu[e]
        ends[2 * e + 1] = ev[e]


@cuda.jit(cache=True)
def k_unit_image(node_cl, ntot, nper, image):
    """image[node_cl[i]] = the image of node i (all nodes of a unit lie in one image)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, ntot, step):
        image[node_cl[i]] = i // nper


@cuda.jit(cache=True)
def k_cluster_keys(n, lab, stuff, k, cls, key):
    """Segment key of every cluster: its class for stuff, K + cluster id for things."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        c = lab[u]
        cls[u] = c
        key[u] = c if stuff[c] != 0 else k + np.int64(u)


@cuda.jit(cache=True)
def k_node_keys(node_cl, ntot, ccls, ckey, cls, key):
    """Every node takes the class and segment key of its cluster."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, ntot, step):
        cls[i] = ccls[node_cl[i]]
        key[i] = ckey[node_cl[i]]


@cuda.jit(cache=True)
def k_ls_eval(off, half, eu, ev, ew, cost, k, stuff, n, fresh, key, cls, delta, tkey, tcls):
    """Best move of every unit (node or cluster) and its objective change (0 when none improves).

    Units lie in segments named by ``key`` (stuff: the class, so adjacent units of one stuff class
    are always joined; things: an id). A unit may join the segment of a neighbour (taking its
    class), join a stuff class no neighbour has, or open a new thing segment ``fresh + unit``.
    ``cost`` holds the units' class-cost vectors, the graph the (summed) edges between units.
    Only the first MAX_NEIGHBOUR_KEYS distinct neighbouring segments are candidates; beyond that
    the stuff moves, which need the full list, are skipped.
    """
    ks = cuda.local.array(MAX_NEIGHBOUR_KEYS, np.int64)
    ss = cuda.local.array(MAX_NEIGHBOUR_KEYS, np.float64)
    kc = cuda.local.array(MAX_NEIGHBOUR_KEYS, np.int32)
    start, step = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, n, step):
        a = key[v]
        lv = cls[v]
        here = cost[v, lv]
        scale = abs(here)
        own = 0.0
        m = 0
        overflow = False
        for j in range(off[v], off[v + 1]):
            h = half[j]
            e = h >> 1
            x = ev[e] if (h & 1) == 0 else eu[e]
            w = ew[e]
            scale += abs(w)
            b = key[x]
            if b == a:
                own += w
                continue
            q = 0
            while q < m and ks[q] != b:
                q += 1
            if q == m:
                if m == MAX_NEIGHBOUR_KEYS:
                    overflow = True
                    continue
                ks[m] = b
                ss[m] = 0.0
                kc[m] = cls[x]
                m += 1
            ss[q] += w
        best = 0.0
        bkey = a
        bcls = lv
        for q in range(m):
            d = cost[v, kc[q]] - here + own - ss[q]
            if d < best:
                best = d
                bkey = ks[q]
                bcls = kc[q]
        for c in range(k):
            target = fresh + v
            if stuff[c] != 0:
                if overflow or a == c:
                    continue
                q = 0
                while q < m and ks[q] != c:
                    q += 1
                if q < m:
                    continue
                target = np.int64(c)
            d = cost[v, c] - here + own
            if d < best:
                best = d
                bkey = target
                bcls = c
        delta[v] = best if best < -1e-9 * scale else 0.0
        tkey[v] = bkey
        tcls[v] = bcls


@cuda.jit(cache=True)
def k_ls_apply(off, half, eu, ev, n, delta, tkey, tcls, key, cls, flag, stamp, image, live, gain):
    """Applies the moves that beat every improving neighbour (lower change, then lower id).

    Moving units are never adjacent, so the changes add up exactly and the objective drops. Only
    units of images ``b = image[unit]`` with ``live[b] != 0`` move; their drop is added to
    ``gain[b]`` in units of ``1 / GAIN_UNIT`` (integer atomics, so the sums do not depend on the
    order of the threads).
    """
    start, step = cuda.grid(1), cuda.gridsize(1)
    for v in range(start, n, step):
        d = delta[v]
        if d >= 0.0 or live[image[v]] == 0:
            continue
        wins = True
        for j in range(off[v], off[v + 1]):
            e = half[j] >> 1
            x = ev[e] if (half[j] & 1) == 0 else eu[e]
            dx = delta[x]
            if dx < d or (dx == d and x < v):
                wins = False
                break
        if wins:
            key[v] = tkey[v]
            cls[v] = tcls[v]
            flag[0] = stamp
            cuda.atomic.add(gain, image[v], np.int64(-d * GAIN_UNIT))


# ----------------------------------------------------------------------------- segments, output


@cuda.jit(cache=True)
def k_hook(eu, ev, m, key, parent, flag, stamp):
    """Links the roots of the ends of every uncut edge (equal keys); the lower id wins."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for e in range(start, m, step):
        u = eu[e]
        v = ev[e]
        if key[u] == key[v]:
            pu = parent[u]
            pv = parent[v]
            if pu != pv:
                cuda.atomic.min(parent, max(pu, pv), min(pu, pv))
                flag[0] = stamp


@cuda.jit(cache=True)
def k_compress(parent, n):
    """Pointer jumping until every node points at its root."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        p = parent[u]
        q = parent[p]
        while p != q:
            p = q
            q = parent[p]
        parent[u] = p


@cuda.jit(cache=True)
def k_is_root(parent, n, isroot):
    """isroot[u] = 1 when node u is its segment's root (its lowest node)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for u in range(start, n, step):
        isroot[u] = 1 if parent[u] == u else 0


@cuda.jit(cache=True)
def k_outputs(ntot, nper, parent, cls, compid, labels, comp):
    """Per node: class and segment id, numbered from 0 inside each image in order of first node."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, ntot, step):
        labels[i] = cls[i]
        comp[i] = compid[parent[i]] - compid[(i // nper) * nper]


@cuda.jit(cache=True)
def k_cut(src, m, nper, nb, comp, cut):
    """cut[b * E + e] = the ends of edge e lie in different segments of image b."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for f in range(start, nb * m, step):
        b = f // m
        e = f - b * m
        base = np.int64(b) * nper
        cut[f] = comp[base + src[e, 0]] != comp[base + src[e, 1]]
