"""Exact AMWC by integer linear programming (scipy/HiGHS), for measuring the greedy solvers' gap.

Only for tiny graphs: it uses a cut variable for every node pair with all triangle inequalities.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from cops.solver._cpu_structures import connected_components
from cops.solver.checks import validate_instance

MAX_EXACT_NODES = 16


def solve_amwc_exact(
    node_costs: Any, edges: Any, edge_costs: Any, partitionable: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Optimal (labels, components, cut, objective) of a tiny AMWC instance (at most 16 nodes).

    Tests use it as ground truth for the heuristic solvers.
    """
    try:
        from scipy.optimize import LinearConstraint, milp
        from scipy.sparse import coo_matrix
    except ImportError as exc:  # pragma: no cover - scipy is a test dependency
        raise ImportError("solve_amwc_exact needs scipy (pip install scipy)") from exc
    c, e, w, part = validate_instance(node_costs, edges, edge_costs, partitionable)
    n, k = c.shape
    if n > MAX_EXACT_NODES:
        raise ValueError(
            f"node_costs: the exact solver handles at most {MAX_EXACT_NODES} nodes, got {n}"
        )
    if n == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(len(e), bool), 0.0)

    pairs = list(combinations(range(n), 2))
    pair_index = {p: i for i, p in enumerate(pairs)}
    nx = n * k

    def x(v: int, cls: int) -> int:
        return v * k + cls

    def y(u: int, v: int) -> int:
        return nx + pair_index[(min(u, v), max(u, v))]

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lo: list[float] = []
    hi: list[float] = []

    def add(entries: list[tuple[int, float]], lower: float, upper: float) -> None:
        r = len(lo)
        for col, val in entries:
            rows.append(r)
            cols.append(col)
            vals.append(val)
        lo.append(lower)
        hi.append(upper)

    for v in range(n):
        add([(x(v, cls), 1.0) for cls in range(k)], 1.0, 1.0)
    for a, b, d in combinations(range(n), 3):
        # Triangle inequalities make the pair variables a partition (multicut).
        add([(y(a, b), 1.0), (y(a, d), -1.0), (y(b, d), -1.0)], -np.inf, 0.0)
        add([(y(a, d), 1.0), (y(a, b), -1.0), (y(b, d), -1.0)], -np.inf, 0.0)
        add([(y(b, d), 1.0), (y(a, b), -1.0), (y(a, d), -1.0)], -np.inf, 0.0)
    for u, v in e:
        u, v = int(u), int(v)
        for cls in range(k):
            # Different classes on an edge force a cut.
            add([(y(u, v), 1.0), (x(u, cls), -1.0), (x(v, cls), 1.0)], 0.0, np.inf)
            add([(y(u, v), 1.0), (x(v, cls), -1.0), (x(u, cls), 1.0)], 0.0, np.inf)
            if not part[cls]:
                # The same stuff class on an edge forbids a cut.
                add([(y(u, v), 1.0), (x(u, cls), 1.0), (x(v, cls), 1.0)], -np.inf, 2.0)

    obj = np.zeros(nx + len(pairs))
    obj[:nx] = c.ravel()
    for (u, v), wv in zip(e, w, strict=True):
        obj[y(int(u), int(v))] += wv
    a_mat = coo_matrix((vals, (rows, cols)), shape=(len(lo), len(obj))).tocsr()
    res = milp(
        obj,
        constraints=LinearConstraint(a_mat, lo, hi),
        integrality=np.ones(len(obj)),
        bounds=(0, 1),
    )
    if res.x is None:  # pragma: no cover - the ILP is always feasible
        raise RuntimeError(f"exact AMWC failed: {res.message}")
    sol = np.round(res.x).astype(np.int64)
    labels = sol[:nx].reshape(n, k).argmax(axis=1).astype(np.int64)
    joined = np.array([sol[y(int(u), int(v))] == 0 for u, v in e], dtype=bool)
    components = connected_components(n, e, joined)
    cut = components[e[:, 0]] != components[e[:, 1]] if len(e) else np.zeros(0, bool)
    objective = float(c[np.arange(n), labels].sum() + w[cut].sum())
    return labels, components, cut, objective
