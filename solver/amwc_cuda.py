"""Parallel AMWC solver on the GPU (numba-cuda): greedy contraction in rounds (DESIGN §5).

Every node starts as its own cluster labelled ``argmin_k c[k]``. A round computes the gain of every
(merged) edge, ``w_AB + c_A[l_A] + c_B[l_B] - min_k (c_A[k] + c_B[k])``; each cluster picks its
best positive-gain edge (ties: lowest edge index); mutual picks are contracted at once under the
lower id. The global best edge is always mutual, so each round makes progress.

Satellites: in greedy contraction a large cluster absorbs its small neighbours one at a time, which
in rounds would cost one round per neighbour. A cluster u whose best neighbour v is in a mutual pair
(v, v') therefore joins that pair in the same round when ``w_uv - (c_u[L] - c_u[l_u]) > 0`` for the
pair's class ``L = argmin (c_v + c_v')`` and no negative edge lies inside the resulting group
(otherwise the higher-id satellite on that edge stays out). The joint gain is then at least the
pair's gain plus those positive terms, so every contraction still lowers the objective; on
street-scene-like grids this cuts the rounds from thousands to about a dozen.

After a round, edges are relabelled, self-loops dropped and parallel edges merged (a hash table on
the cluster pair finds them, the lowest edge index names the merged edge, and one thread sums each
group in index order), and class vectors of merged clusters are summed the same way, so the result
does not depend on thread scheduling.

Segments are then named by a key per unit: the class for stuff (so adjacent units of one stuff class
always end up joined) and the cluster for things. Local search runs first on the contracted graph
(units = greedy clusters, which can thus be relabelled or re-attached whole), then on the nodes. A
unit may move to a neighbour's segment (taking its class), to a stuff class no neighbour has, or
into a new thing segment. Every unit computes its best improving move and moves only if no neighbour
has a better one (lower change, then lower id), so the moving units are independent and the
objective drops by exactly the sum of their changes. The effort (``LOCAL_SEARCH``) caps the
iterations per level and, for "fast", stops an image once an iteration gains less than 1 % of its
first iteration's gain (gains are summed per image with integer atomics, so the stop does not
depend on thread order and a batch gives every image its single-solve result). Finally segments
are the connected components over edges with equal keys (hooking with atomic min plus pointer
jumping), numbered in order of their first node; an edge is cut when its ends lie in different
segments. All data stays on the device; per round only a few scalars (a progress stamp, counts,
the local-search gains) come back to the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
from numba import cuda

from cops.solver import _cuda_kernels as kern
from cops.solver import _cuda_refine_kernels as rk
from cops.solver.checks import is_torch, validate_local_search, validate_partitionable

__all__ = ["solve_amwc_cuda", "solve_amwc_cuda_batch"]


class LocalSearchBound(NamedTuple):
    """Bound on the parallel local search of one level (clusters, then nodes).

    ``iterations``: most iterations (each applies a conflict-free set of improving moves).
    ``min_gain``: an iteration that gains less than this fraction of the first one's gain ends
    the level (0 = run until no unit moves).
    """

    iterations: int
    min_gain: float


LOCAL_SEARCH = {
    "off": LocalSearchBound(0, 0.0),
    "fast": LocalSearchBound(16, 0.01),
    "full": LocalSearchBound(100, 0.0),
}
"""Local-search bounds by effort name (``solve_amwc(local_search=...)``)."""

_ERRORS = {
    kern.ERR_NONFINITE: "node_costs/edge_costs: contain NaN or infinite values",
    kern.ERR_RANGE: "edges: node ids out of range",
    kern.ERR_LOOP: "edges: self-loop (an edge from a node to itself)",
}


def _device_array(x: Any, name: str, kinds: str) -> Any:
    """Device view of ``x`` (zero-copy for torch CUDA tensors, device arrays) or a device copy."""
    if is_torch(x):
        x = x.detach()
        if x.is_cuda:
            arr = cuda.as_cuda_array(x)
        else:
            arr = cuda.to_device(np.ascontiguousarray(x.numpy()))
    elif not kern.SIMULATOR and cuda.is_cuda_array(x):
        arr = cuda.as_cuda_array(x)
    elif kern.SIMULATOR and hasattr(x, "copy_to_host"):
        arr = x
    else:
        arr = cuda.to_device(np.ascontiguousarray(np.asarray(x)))
    if np.dtype(arr.dtype).kind not in kinds:
        raise ValueError(f"{name}: unsupported dtype {arr.dtype}")
    return arr


def _host_flags(partitionable: Any, k: int) -> np.ndarray:
    """Per-class partitionable flags on the host."""
    if is_torch(partitionable):
        partitionable = partitionable.detach().cpu().numpy()
    elif hasattr(partitionable, "copy_to_host"):
        partitionable = partitionable.copy_to_host()
    return validate_partitionable(partitionable, k)


@contextmanager
def _device_of(*arrays: Any) -> Iterator[Any]:
    """Enter the CUDA device of any torch CUDA input and yield the stream to run on.

    Work is ordered after torch's current stream on that device; otherwise numba's default stream.
    """
    devices = {x.device.index for x in arrays if is_torch(x) and x.is_cuda}
    if len(devices) > 1:
        raise ValueError(f"inputs lie on different CUDA devices: {sorted(devices)}")
    if not devices:
        yield cuda.default_stream()
        return
    import torch

    dev = devices.pop()
    with cuda.gpus[dev]:
        yield cuda.external_stream(torch.cuda.current_stream(dev).cuda_stream)


class _Scan:
    """Exclusive prefix sums of int32 arrays with preallocated per-level tile buffers."""

    def __init__(self, nmax: int, stream: Any) -> None:
        self.stream = stream
        self.levels = []
        n = max(nmax, 1)
        while True:
            tiles = (n + kern.TILE - 1) // kern.TILE
            sums = cuda.device_array(tiles, np.int32, stream=stream)
            offs = cuda.device_array(tiles + 1, np.int32, stream=stream)
            self.levels.append((sums, offs))
            if tiles <= 1:
                break
            n = tiles

    def __call__(self, src: Any, n: int, out: Any, depth: int = 0) -> None:
        """out[i] = sum(src[:i]) for i <= n (so out[n] is the total)."""
        tiles = max(1, (n + kern.TILE - 1) // kern.TILE)
        sums, offs = self.levels[depth]
        grid = min(tiles, kern.MAX_BLOCKS)
        kern.k_scan_tiles[grid, kern.TPB, self.stream](src, n, out, sums, tiles)
        if tiles > 1:
            self(sums, tiles, offs, depth + 1)
            kern.k_scan_add[kern.blocks(n), kern.TPB, self.stream](out, n, offs, tiles)


class _Solver:
    """Device buffers and the stages of one (possibly batched) solve."""

    def __init__(self, ntot: int, k: int, etot: int, nb: int, stream: Any) -> None:
        s = stream
        self.stream = s
        self.k = k
        self.ntot = ntot
        self.nb = nb
        self.nper = ntot // nb
        self.etot = etot

        def dev(shape: Any, dtype: Any) -> Any:
            return cuda.device_array(shape, dtype, stream=s)

        # Index 0 keeps the loaded instance; contraction alternates between 1 and 2.
        self.cost = [dev((ntot, k), np.float64) for _ in range(3)]
        self.eu = [dev(etot, np.int32) for _ in range(3)]
        self.ev = [dev(etot, np.int32) for _ in range(3)]
        self.ew = [dev(etot, np.float64) for _ in range(3)]
        self.c = 0
        self.e = 0
        self.mval, self.bestg, self.delta = (dev(ntot, np.float64) for _ in range(3))
        self.lab, self.beste, self.ptr, self.mate, self.rep, self.sat = (
            dev(ntot, np.int32) for _ in range(6)
        )
        self.low, self.isroot, self.nid, self.node_cl, self.parent, self.cls, self.tcls = (
            dev(ntot, np.int32) for _ in range(7)
        )
        self.ccls = dev(ntot, np.int32)
        self.key, self.ckey, self.tkey = (dev(ntot, np.int64) for _ in range(3))
        self.ends, self.adj = dev(2 * etot, np.int32), dev(2 * etot, np.int32)
        self.adj_off = dev(ntot + 1, np.int32)
        self.ls_round = 0
        self.newid = dev(ntot + 1, np.int32)
        self.gain = dev(etot, np.float64)
        self.slot, self.flag, self.grp = (dev(etot, np.int32) for _ in range(3))
        self.pos = dev(etot + 1, np.int32)
        hsize = 2
        while hsize < 2 * etot:
            hsize *= 2
        self.keys = dev(hsize, np.int64)
        self.owner = dev(hsize, np.int32)
        gmax = max(ntot, etot)
        self.cnt = dev(max(gmax, 2 * etot), np.int32)  # zero between uses
        self._run(kern.k_zero, self.cnt.shape[0], self.cnt, self.cnt.shape[0])
        self.off = dev(gmax + 1, np.int32)
        self.members = dev(gmax, np.int32)
        self.err = cuda.to_device(np.zeros(1, np.int32), stream=s)
        self.stamp_buf = cuda.to_device(np.zeros(1, np.int32), stream=s)
        self.gain_buf = cuda.to_device(np.zeros(nb, np.int64), stream=s)
        self.live = cuda.to_device(np.ones(nb, np.uint8), stream=s)
        self.image = dev(ntot, np.int32)
        self.identity = dev(ntot, np.int32)
        self.stamp = 0
        self.scan = _Scan(max(gmax, 2 * etot), s)

    def _run(self, kernel: Any, n: int, *args: Any) -> None:
        """Grid-stride launch over ``n`` items."""
        kernel[kern.blocks(n), kern.TPB, self.stream](*args)

    def _read(self, arr: Any, i: int) -> int:
        """One int32 from the device (synchronises the stream)."""
        out = arr[i : i + 1].copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return int(out[0])

    def _next_stamp(self) -> int:
        """A fresh value for kernels to write into the progress flag."""
        self.stamp += 1
        return self.stamp

    def _changed(self, stamp: int) -> bool:
        """Whether a kernel wrote ``stamp`` into the progress flag."""
        return self._read(self.stamp_buf, 0) == stamp

    def check_errors(self) -> None:
        """Raise ValueError for the bad-input flags set while loading."""
        bits = self._read(self.err, 0)
        for bit, msg in _ERRORS.items():
            if bits & bit:
                raise ValueError(msg)

    def _group(self, grp: Any, n: int, ng: int, off: Any, members: Any) -> None:
        """CSR by group: members[off[g]:off[g+1]] = the items i with grp[i] == g, sorted."""
        self._run(kern.k_count, n, grp, n, self.cnt)
        self.scan(self.cnt, ng, off)
        self._run(kern.k_fill, n, grp, n, off, self.cnt, members)
        self._run(kern.k_sort_segments, ng, off, ng, members)

    def _merge_edges(self, nn: int, ne: int) -> int:
        """Relabel the live edges by ``nid``, drop self-loops, merge parallel edges; new count."""
        if ne == 0:
            return 0
        e = self.e
        eu, ev, ew = self.eu[e], self.ev[e], self.ew[e]
        hsize = 2
        while hsize < 2 * ne:
            hsize *= 2
        self._run(kern.k_clear_hash, hsize, self.keys, self.owner, hsize)
        self._run(
            kern.k_hash_insert, ne, eu, ev, ne, self.nid, nn, self.keys, self.owner, hsize - 1,
            self.slot,
        )  # fmt: skip
        self._run(kern.k_owner_flag, ne, self.slot, self.owner, ne, self.flag)
        self.scan(self.flag, ne, self.pos)
        ne2 = self._read(self.pos, ne)
        self._run(kern.k_edge_group, ne, self.slot, self.owner, self.pos, ne, self.grp)
        self._group(self.grp, ne, ne2, self.off, self.members)
        self.e = 1 if e != 1 else 2
        self._run(
            kern.k_sum_edges, ne2, self.off, self.members, ne2, eu, ev, ew, self.nid,
            self.eu[self.e], self.ev[self.e], self.ew[self.e],
        )  # fmt: skip
        return ne2

    def contract(self, satellites: bool) -> tuple[int, int]:
        """Greedy contraction rounds; returns the numbers of clusters and of edges between them.

        Afterwards node_cl maps nodes to clusters, lab/cost[c] hold the clusters' classes and
        class-cost vectors and eu/ev/ew[e] the contracted graph.
        """
        k, ntot = self.k, self.ntot
        self._run(kern.k_iota, ntot, self.nid, ntot)
        self._run(kern.k_iota, ntot, self.node_cl, ntot)
        n = ntot
        ne = self._merge_edges(n, self.etot)
        while True:
            cost = self.cost[self.c]
            self._run(
                kern.k_cluster_min, n, cost, n, k, self.mval, self.lab, self.bestg, self.beste
            )
            if ne == 0:
                break
            eu, ev, ew = self.eu[self.e], self.ev[self.e], self.ew[self.e]
            self._run(
                kern.k_edge_gain, ne, eu, ev, ew, ne, cost, k, self.mval, self.gain, self.bestg
            )
            self._run(kern.k_edge_pick, ne, eu, ev, ne, self.gain, self.bestg, self.beste)
            stamp = self._next_stamp()
            self._run(
                kern.k_match, n, eu, ev, self.beste, n, self.ptr, self.mate, self.stamp_buf, stamp
            )
            if not self._changed(stamp):
                break
            self._run(
                kern.k_satellite, n, self.beste, ew, self.ptr, self.mate, cost, k, self.mval, n,
                int(satellites), self.rep, self.sat, self.low,
            )  # fmt: skip
            self._run(kern.k_reject, ne, eu, ev, ew, ne, self.rep, self.sat)
            self._run(kern.k_lowest, n, self.rep, self.sat, n, self.low)
            self._run(kern.k_roots, n, self.rep, self.sat, self.low, n, self.isroot)
            self.scan(self.isroot, n, self.newid)
            nn = self._read(self.newid, n)
            self._run(kern.k_new_ids, n, self.rep, self.newid, n, self.nid)
            self._group(self.nid, n, nn, self.off, self.members)
            self.c = 1 if self.c != 1 else 2
            self._run(kern.k_sum_costs, nn, self.off, self.members, nn, cost, k, self.cost[self.c])
            self._run(kern.k_map_nodes, ntot, self.node_cl, ntot, self.nid)
            ne = self._merge_edges(nn, ne)
            n = nn
        return n, ne

    def _gains(self) -> np.ndarray:
        """Local-search gain per image (units of 1 / GAIN_UNIT); synchronises the stream."""
        out = self.gain_buf.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return out

    def _moves(
        self,
        n: int,
        ne: int,
        graph: tuple[Any, Any, Any],
        cost: Any,
        stuff: Any,
        bound: LocalSearchBound,
        unit_of: Any,
    ) -> int:
        """Parallel local search on ``n`` units (see ``k_ls_eval``) over ``ne`` edges within
        ``bound``; ``unit_of`` maps nodes to units. Returns the number of iterations run."""
        if bound.iterations <= 0 or ne == 0:
            return 0
        eu, ev, ew = graph
        self._run(rk.k_half_ends, ne, eu, ev, ne, self.ends)
        self._group(self.ends, 2 * ne, n, self.adj_off, self.adj)
        self._run(rk.k_unit_image, self.ntot, unit_of, self.ntot, self.nper, self.image)
        live = np.ones(self.nb, np.uint8)
        self.live.copy_to_device(live, stream=self.stream)
        first = before = self._gains()
        for it in range(bound.iterations):
            self.ls_round += 1
            fresh = self.k + self.ntot * self.ls_round
            self._run(
                rk.k_ls_eval, n, self.adj_off, self.adj, eu, ev, ew, cost, self.k, stuff, n,
                fresh, self.key, self.cls, self.delta, self.tkey, self.tcls,
            )  # fmt: skip
            stamp = self._next_stamp()
            self._run(
                rk.k_ls_apply, n, self.adj_off, self.adj, eu, ev, n, self.delta, self.tkey,
                self.tcls, self.key, self.cls, self.stamp_buf, stamp, self.image, self.live,
                self.gain_buf,
            )  # fmt: skip
            if not self._changed(stamp):
                return it + 1
            if bound.min_gain > 0.0:
                # Images whose iteration gained little compared with their first stop moving, so
                # a batch gives every image the result it would get alone.
                now = self._gains()
                if it == 0:
                    first = now - before
                else:
                    live &= (now - before >= bound.min_gain * first).astype(np.uint8)
                    if not live.any():
                        return it + 1
                    self.live.copy_to_device(live, stream=self.stream)
                before = now
        return bound.iterations

    def refine(self, n: int, ne: int, stuff: Any, bound: LocalSearchBound) -> tuple[int, int]:
        """Segment keys per node, improved by local search on clusters and then on nodes.

        Cluster-level moves relabel or re-attach whole greedy clusters (undoing, say, a stuff
        region that the stuff merge joined to a neighbour of its wrong class); node-level moves
        then fix single nodes on the segment boundaries. Returns the iterations run per level.
        """
        ntot = self.ntot
        self._run(rk.k_cluster_keys, n, n, self.lab, stuff, self.k, self.cls, self.key)
        graph = (self.eu[self.e], self.ev[self.e], self.ew[self.e])
        its = self._moves(n, ne, graph, self.cost[self.c], stuff, bound, self.node_cl)
        self.cls, self.ccls = self.ccls, self.cls
        self.key, self.ckey = self.ckey, self.key
        self._run(
            rk.k_node_keys, ntot, self.node_cl, ntot, self.ccls, self.ckey, self.cls, self.key
        )
        graph = (self.eu[0], self.ev[0], self.ew[0])
        self._run(kern.k_iota, ntot, self.identity, ntot)
        return its, self._moves(ntot, self.etot, graph, self.cost[0], stuff, bound, self.identity)

    def segments(self) -> None:
        """parent[v] = lowest node of v's segment (connected over edges with equal keys)."""
        ntot, etot = self.ntot, self.etot
        self._run(kern.k_iota, ntot, self.parent, ntot)
        while etot > 0:
            stamp = self._next_stamp()
            self._run(
                rk.k_hook, etot, self.eu[0], self.ev[0], etot, self.key, self.parent,
                self.stamp_buf, stamp,
            )  # fmt: skip
            self._run(rk.k_compress, ntot, self.parent, ntot)
            if not self._changed(stamp):
                break


def _solve(
    costs: Any, edges: Any, weights: Any, partitionable: Any, nb: int, satellites: bool,
    bound: LocalSearchBound, stream: Any, stats: dict[str, int],
) -> tuple[Any, Any, Any]:  # fmt: skip
    """Shared body of the single and batched entry points (inputs already on the device)."""
    n, k = tuple(costs.shape)[-2:]
    m = edges.shape[0]
    if k == 0:
        raise ValueError("node_costs: needs at least one class (K = 0)")
    stuff = cuda.to_device((~_host_flags(partitionable, k)).astype(np.uint8), stream=stream)
    ntot, etot = nb * n, nb * m
    if n == 0 and m > 0:
        raise ValueError(_ERRORS[kern.ERR_RANGE])
    labels = cuda.device_array(ntot, np.int32, stream=stream)
    comp = cuda.device_array(ntot, np.int32, stream=stream)
    cut = cuda.device_array(etot, np.bool_, stream=stream)
    if ntot > 0:
        sv = _Solver(ntot, k, etot, nb, stream)
        run = sv._run
        if len(costs.shape) == 3:
            run(kern.k_load_costs3, ntot * k, costs, nb, n, k, sv.cost[0], sv.err)
            run(kern.k_load_weights2, etot, weights, nb, m, sv.ew[0], sv.err)
        else:
            run(kern.k_load_costs2, ntot * k, costs, n, k, sv.cost[0], sv.err)
            run(kern.k_load_weights1, etot, weights, m, sv.ew[0], sv.err)
        run(kern.k_load_edges, etot, edges, m, n, nb, sv.eu[0], sv.ev[0], sv.err)
        sv.check_errors()
        nc, ne = sv.contract(satellites)
        stats["cluster_iterations"], stats["node_iterations"] = sv.refine(nc, ne, stuff, bound)
        sv.segments()
        run(rk.k_is_root, ntot, sv.parent, ntot, sv.isroot)
        sv.scan(sv.isroot, ntot, sv.newid)
        run(rk.k_outputs, ntot, ntot, n, sv.parent, sv.cls, sv.newid, labels, comp)
        run(rk.k_cut, etot, edges, m, n, nb, comp, cut)
    stream.synchronize()
    if len(costs.shape) == 3:
        return labels.reshape(nb, n), comp.reshape(nb, n), cut.reshape(nb, m)
    return labels, comp, cut


def _run_entry(
    node_costs: Any,
    edges: Any,
    edge_costs: Any,
    partitionable: Any,
    batched: bool,
    options: dict[str, Any],
) -> tuple[Any, Any, Any]:
    """Check shapes, bring the inputs to the device and solve (one instance or a batch)."""
    bound = LOCAL_SEARCH[validate_local_search(options.get("local_search", "fast"))]
    stats = options.get("stats")
    with _device_of(node_costs, edges, edge_costs) as stream:
        c = _device_array(node_costs, "node_costs", "fiub")
        e = _device_array(edges, "edges", "iu")
        w = _device_array(edge_costs, "edge_costs", "fiu")
        if batched and len(c.shape) != 3:
            raise ValueError(f"node_costs: expected shape [B, N, K], got {tuple(c.shape)}")
        if not batched and len(c.shape) != 2:
            raise ValueError(f"node_costs: expected shape [N, K], got {tuple(c.shape)}")
        nb = c.shape[0] if batched else 1
        want = (nb, "E") if batched else ("E",)
        if len(w.shape) != len(want) or (batched and w.shape[0] != nb):
            raise ValueError(f"edge_costs: expected shape {list(want)}, got {tuple(w.shape)}")
        if len(e.shape) != 2 or e.shape[1] != 2:
            raise ValueError(f"edges: expected shape [E, 2], got {tuple(e.shape)}")
        m = w.shape[len(w.shape) - 1]  # the simulator's shapes take no negative index
        if e.shape[0] != m:
            raise ValueError(f"edge_costs: expected {e.shape[0]} values (one per edge), got {m}")
        return _solve(
            c, e, w, partitionable, nb, options.get("satellites", True), bound, stream,
            {} if stats is None else stats,
        )  # fmt: skip


def solve_amwc_cuda(
    node_costs: Any, edges: Any, edge_costs: Any, partitionable: Any, *,
    local_search: bool | str = "fast", satellites: bool = True,
    stats: dict[str, int] | None = None,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """Solve one AMWC instance on the GPU.

    Args:
        node_costs: [N, K] class costs (numpy, numba device array or torch tensor; any real dtype).
        edges: [E, 2] integer node pairs.
        edge_costs: [E] cost paid when an edge is cut (positive favours joining).
        partitionable: [K] bool, True for thing classes (may be split into instances).
        local_search: "off", "fast" (default) or "full" (see ``LOCAL_SEARCH``), or a bool (True
            = "fast"): how far parallel moves refine the contraction (see module doc).
        satellites: also contract safe star-shaped groups around mutual pairs (see module doc);
            False restricts every round to mutual pairs (closer to the sequential greedy order,
            but one round per absorbed neighbour).
        stats: if given, gains the local-search iterations run per level
            (``cluster_iterations``, ``node_iterations``).

    Returns numba device arrays ``(labels int32 [N], components int32 [N], cut bool [E])``;
    components are numbered 0..C-1 in order of their first node. Torch CUDA inputs are read in
    place on their device, after torch's current stream; wrap outputs with ``torch.as_tensor(x,
    device="cuda")``. The device is synchronised before returning, so wall-clock timing is valid.
    """
    options = {"local_search": local_search, "satellites": satellites, "stats": stats}
    return _run_entry(node_costs, edges, edge_costs, partitionable, False, options)


def solve_amwc_cuda_batch(
    node_costs: Any, edges: Any, edge_costs: Any, partitionable: Any, *,
    local_search: bool | str = "fast", satellites: bool = True,
    stats: dict[str, int] | None = None,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """Solve B instances sharing one graph as a single problem on their disjoint union.

    ``node_costs`` [B, N, K], ``edges`` [E, 2] (the same for every image), ``edge_costs`` [B, E].
    Returns device arrays ``(labels int32 [B, N], components int32 [B, N], cut bool [B, E])`` with
    component ids 0..C_b-1 per image; each image's result equals :func:`solve_amwc_cuda` on it
    (the local-search bound is applied per image). Keyword arguments as for
    :func:`solve_amwc_cuda`.
    """
    options = {"local_search": local_search, "satellites": satellites, "stats": stats}
    return _run_entry(node_costs, edges, edge_costs, partitionable, True, options)
