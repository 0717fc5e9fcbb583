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


class _Program:
    """The AMWC integer program of a tiny graph: ``x[v, class]`` node labels, then one cut
    variable ``y[u, v]`` per node pair; constraint rows ``lower <= A @ vars <= upper``."""

    def __init__(self, n: int, k: int) -> None:
        self.n, self.k = n, k
        self.pair_index = {p: i for i, p in enumerate(combinations(range(n), 2))}
        self.size = n * k + len(self.pair_index)
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def x(self, v: int, cls: int) -> int:
        """Index of the variable "node `v` takes class `cls`"."""
        return v * self.k + cls

    def y(self, u: int, v: int) -> int:
        """Index of the variable "nodes `u` and `v` are cut apart"."""
        return self.n * self.k + self.pair_index[(min(u, v), max(u, v))]

    def add(self, entries: list[tuple[int, float]], lower: float, upper: float) -> None:
        """Append the row ``lower <= sum(val * var[col] for col, val in entries) <= upper``."""
        r = len(self.lo)
        for col, val in entries:
            self.rows.append(r)
            self.cols.append(col)
            self.vals.append(val)
        self.lo.append(lower)
        self.hi.append(upper)


def _constrain(prog: _Program, e: np.ndarray, part: np.ndarray) -> None:
    """One class per node, a multicut over all pairs, and the AMWC coupling on every edge."""
    y, x, k = prog.y, prog.x, prog.k
    for v in range(prog.n):
        prog.add([(x(v, cls), 1.0) for cls in range(k)], 1.0, 1.0)
    for a, b, d in combinations(range(prog.n), 3):
        # Triangle inequalities make the pair variables a partition (multicut).
        prog.add([(y(a, b), 1.0), (y(a, d), -1.0), (y(b, d), -1.0)], -np.inf, 0.0)
        prog.add([(y(a, d), 1.0), (y(a, b), -1.0), (y(b, d), -1.0)], -np.inf, 0.0)
        prog.add([(y(b, d), 1.0), (y(a, b), -1.0), (y(a, d), -1.0)], -np.inf, 0.0)
    for u, v in e:
        u, v = int(u), int(v)
        for cls in range(k):
            # Different classes on an edge force a cut.
            prog.add([(y(u, v), 1.0), (x(u, cls), -1.0), (x(v, cls), 1.0)], 0.0, np.inf)
            prog.add([(y(u, v), 1.0), (x(v, cls), -1.0), (x(u, cls), 1.0)], 0.0, np.inf)
            if not part[cls]:
                # The same stuff class on an edge forbids a cut.
                prog.add([(y(u, v), 1.0), (x(u, cls), 1.0), (x(v, cls), 1.0)], -np.inf, 2.0)


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

    prog = _Program(n, k)
    _constrain(prog, e, part)
    obj = np.zeros(prog.size)
    obj[: n * k] = c.ravel()
    for (u, v), wv in zip(e, w, strict=True):
        obj[prog.y(int(u), int(v))] += wv
    shape = (len(prog.lo), prog.size)
    a_mat = coo_matrix((prog.vals, (prog.rows, prog.cols)), shape=shape).tocsr()
    res = milp(
        obj,
        constraints=LinearConstraint(a_mat, prog.lo, prog.hi),
        integrality=np.ones(len(obj)),
        bounds=(0, 1),
    )
    if res.x is None:  # pragma: no cover - the ILP is always feasible
        raise RuntimeError(f"exact AMWC failed: {res.message}")
    sol = np.round(res.x).astype(np.int64)
    labels = sol[: n * k].reshape(n, k).argmax(axis=1).astype(np.int64)
    joined = np.array([sol[prog.y(int(u), int(v))] == 0 for u, v in e], dtype=bool)
    components = connected_components(n, e, joined)
    cut = components[e[:, 0]] != components[e[:, 1]] if len(e) else np.zeros(0, bool)
    objective = float(c[np.arange(n), labels].sum() + w[cut].sum())
    return labels, components, cut, objective
