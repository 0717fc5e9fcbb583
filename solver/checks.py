"""Input validation, the AMWC objective and a feasibility check for any labelling."""

from __future__ import annotations

from typing import Any

import numpy as np

LOCAL_SEARCH_EFFORTS = ("off", "fast", "full")
"""Names of the local-search efforts of both solvers (``solve_amwc(local_search=...)``)."""


def validate_local_search(local_search: Any) -> str:
    """The effort name for ``local_search``: one of LOCAL_SEARCH_EFFORTS, or a bool (True means
    the default "fast", False "off"); anything else raises ValueError."""
    if isinstance(local_search, bool):
        return "fast" if local_search else "off"
    if isinstance(local_search, str) and local_search in LOCAL_SEARCH_EFFORTS:
        return local_search
    raise ValueError(
        f"local_search: expected one of {LOCAL_SEARCH_EFFORTS} or a bool, got {local_search!r}"
    )


def is_torch(x: Any) -> bool:
    """True when ``x`` is a torch tensor (checked without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """View/copy an array-like (numpy, torch on any device, nested lists) as a numpy array."""
    if is_torch(x):
        return x.detach().cpu().numpy()
    if hasattr(x, "copy_to_host"):  # numba CUDA device array
        return x.copy_to_host()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array") from exc


def _float_array(x: Any, name: str, ndim: int) -> np.ndarray:
    """Finite float64 array with ``ndim`` dimensions."""
    a = to_numpy(x, name)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if a.dtype == np.bool_ or not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    ):
        raise ValueError(f"{name}: expected a real-valued array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def _int_array(x: Any, name: str) -> np.ndarray:
    """Integer array converted to int64 (rejects non-integral floats and booleans)."""
    a = to_numpy(x, name)
    if a.dtype == np.bool_:
        raise ValueError(f"{name}: expected integers, got booleans")
    if np.issubdtype(a.dtype, np.floating):
        if not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise ValueError(f"{name}: expected integers, got non-integral values")
    elif not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: expected integers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def validate_edges(edges: Any, num_nodes: int) -> np.ndarray:
    """Edges as int64 [E, 2] with ids in range and no self-loops."""
    e = _int_array(edges, "edges")
    if e.ndim != 2 or e.shape[1] != 2:
        if e.size == 0:
            return np.zeros((0, 2), np.int64)
        raise ValueError(f"edges: expected shape [E, 2], got {e.shape}")
    if e.size and (e.min() < 0 or e.max() >= num_nodes):
        raise ValueError(
            f"edges: node ids must lie in [0, {num_nodes}), got range [{e.min()}, {e.max()}]"
        )
    loops = np.flatnonzero(e[:, 0] == e[:, 1])
    if loops.size:
        raise ValueError(f"edges: self-loop at edge {loops[0]} (node {e[loops[0], 0]})")
    return e


def validate_partitionable(partitionable: Any, num_classes: int) -> np.ndarray:
    """Per-class bool flags of length ``num_classes``."""
    p = to_numpy(partitionable, "partitionable")
    if p.ndim != 1 or p.shape[0] != num_classes:
        raise ValueError(
            f"partitionable: expected {num_classes} flags (one per class), got shape {p.shape}"
        )
    if p.dtype != np.bool_:
        if not (np.issubdtype(p.dtype, np.integer) and np.isin(p, (0, 1)).all()):
            raise ValueError(f"partitionable: expected booleans, got dtype {p.dtype}")
    return np.ascontiguousarray(p, dtype=np.bool_)


def validate_instance(
    node_costs: Any, edges: Any, edge_costs: Any, partitionable: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated host copies (float64 [N, K], int64 [E, 2], float64 [E], bool [K]) of an instance.

    Raises ValueError naming the offending argument.
    """
    c = _float_array(node_costs, "node_costs", 2)
    n, k = c.shape
    if k == 0:
        raise ValueError("node_costs: needs at least one class (K = 0)")
    e = validate_edges(edges, n)
    w = _float_array(edge_costs, "edge_costs", 1)
    if w.shape[0] != e.shape[0]:
        raise ValueError(
            f"edge_costs: expected {e.shape[0]} values (one per edge), got {w.shape[0]}"
        )
    return c, e, w, validate_partitionable(partitionable, k)


def amwc_objective(node_costs: Any, edges: Any, edge_costs: Any, labels: Any, cut: Any) -> float:
    """``sum_i node_costs[i, labels[i]] + sum_{cut e} edge_costs[e]`` as a Python float."""
    c = _float_array(node_costs, "node_costs", 2)
    e = validate_edges(edges, c.shape[0])
    w = _float_array(edge_costs, "edge_costs", 1)
    lab = _int_array(labels, "labels")
    if lab.shape != (c.shape[0],):
        raise ValueError(f"labels: expected shape ({c.shape[0]},), got {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= c.shape[1]):
        raise ValueError(f"labels: classes must lie in [0, {c.shape[1]})")
    ct = to_numpy(cut, "cut").astype(bool)
    if ct.shape != (e.shape[0],) or w.shape != (e.shape[0],):
        raise ValueError(
            f"cut: expected shape ({e.shape[0]},) like edge_costs, got cut {ct.shape}, "
            f"edge_costs {w.shape}"
        )
    return float(c[np.arange(c.shape[0]), lab].sum() + w[ct].sum())


def check_feasible(edges: Any, labels: Any, components: Any, cut: Any, partitionable: Any) -> None:
    """Raise ValueError describing the first violated AMWC constraint; return None if feasible.

    Checks: component ids 0..C-1, one class per component, cut exactly between components, each
    component connected by uncut edges, and no cut between adjacent nodes of one stuff class.
    """
    lab = _int_array(labels, "labels")
    comp = _int_array(components, "components")
    if lab.ndim != 1 or comp.shape != lab.shape:
        raise ValueError(f"components: expected shape {lab.shape} like labels, got {comp.shape}")
    n = lab.shape[0]
    e = validate_edges(edges, n)
    ct = to_numpy(cut, "cut")
    if ct.shape != (e.shape[0],):
        raise ValueError(f"cut: expected shape ({e.shape[0]},), got {ct.shape}")
    ct = ct.astype(bool)
    part = to_numpy(partitionable, "partitionable").astype(bool)
    if lab.size and (lab.min() < 0 or lab.max() >= part.shape[0]):
        raise ValueError(f"labels: classes must lie in [0, {part.shape[0]})")
    if n == 0:
        return
    num = int(comp.max()) + 1
    if comp.min() < 0 or np.unique(comp).size != num:
        raise ValueError("components: ids must be exactly 0..C-1")
    first = np.full(num, -1, np.int64)
    first[comp[::-1]] = np.arange(n)[::-1]
    bad = np.flatnonzero(lab != lab[first[comp]])
    if bad.size:
        v = bad[0]
        raise ValueError(
            f"labels: component {comp[v]} mixes classes {lab[first[comp[v]]]} and {lab[v]}"
        )
    u, v = e[:, 0], e[:, 1]
    between = comp[u] != comp[v]
    bad = np.flatnonzero(between != ct)
    if bad.size:
        j = bad[0]
        state = "cut" if ct[j] else "not cut"
        raise ValueError(
            f"cut: edge {j} ({u[j]}-{v[j]}) is {state} but its nodes lie in components "
            f"{comp[u[j]]} and {comp[v[j]]} (the cut must be exactly the edges between components)"
        )
    stuff = (lab[u] == lab[v]) & ~part[lab[u]] & ct
    bad = np.flatnonzero(stuff)
    if bad.size:
        j = bad[0]
        raise ValueError(f"cut: edge {j} ({u[j]}-{v[j]}) splits stuff class {lab[u[j]]}")
    # Every component must be connected through its own (uncut) edges.
    from cops.solver._cpu_structures import connected_components

    if int(connected_components(n, e, ~ct).max()) + 1 != num:
        raise ValueError("components: a component is not connected by uncut edges")
