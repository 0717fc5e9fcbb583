"""CPU AMWC solver: feasibility, stuff/thing semantics, determinism and objective quality."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cops.datasets.solver_instances import baseline_objective, street_instance
from cops.solver import amwc_objective, check_feasible, grid_graph, solve_amwc


def _random_grid_instance(rng, h, w, k, distances=(1, 2)):
    edges = grid_graph(h, w, distances)
    node_costs = rng.normal(size=(h * w, k)) * rng.uniform(0.2, 3.0)
    edge_costs = rng.normal(rng.uniform(-1, 1), rng.uniform(0.2, 3.0), size=len(edges))
    part = rng.random(k) < 0.5
    return node_costs, edges, edge_costs, part


def _assert_valid(res, node_costs, edges, edge_costs, part):
    check_feasible(edges, res.labels, res.components, res.cut, part)
    obj = amwc_objective(node_costs, edges, edge_costs, res.labels, res.cut)
    assert res.objective == pytest.approx(obj, rel=1e-9, abs=1e-9)
    stuff_pair = (res.labels[edges[:, 0]] == res.labels[edges[:, 1]]) & ~part[
        res.labels[edges[:, 0]]
    ]
    assert not (res.cut & stuff_pair).any(), "stuff class split"


@pytest.mark.parametrize("seed", range(25))
def test_random_grids_feasible_and_objective(seed):
    rng = np.random.default_rng(seed)
    h, w, k = rng.integers(1, 9), rng.integers(1, 9), int(rng.integers(1, 6))
    inst = _random_grid_instance(rng, h, w, k, distances=(1, 2, 3))
    for local_search in (True, False):
        res = solve_amwc(*inst, backend="cpu", local_search=local_search)
        _assert_valid(res, *inst)


@st.composite
def _graphs(draw):
    n = draw(st.integers(1, 10))
    k = draw(st.integers(1, 4))
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] != p[1])
    edges = draw(st.lists(pairs, max_size=25)) if n > 1 else []
    finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
    node_costs = np.array(draw(st.lists(finite, min_size=n * k, max_size=n * k))).reshape(n, k)
    edge_costs = np.array(draw(st.lists(finite, min_size=len(edges), max_size=len(edges))))
    part = np.array(draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    return node_costs, np.array(edges, dtype=np.int64).reshape(-1, 2), edge_costs, part


@settings(max_examples=150, deadline=None)
@given(_graphs())
def test_arbitrary_graphs_feasible(inst):
    """Any graph, including parallel and reversed duplicate edges."""
    res = solve_amwc(*inst, backend="cpu")
    _assert_valid(res, *inst)


def test_things_split_when_it_pays():
    # Path 0-1-2-3, one stuff class (expensive) and one thing class; cutting 1-2 earns 5.
    edges = np.array([[0, 1], [1, 2], [2, 3]])
    node_costs = np.array([[5.0, 0.0]] * 4)
    edge_costs = np.array([1.0, -5.0, 1.0])
    res = solve_amwc(node_costs, edges, edge_costs, [False, True], backend="cpu")
    assert res.labels.tolist() == [1, 1, 1, 1]
    assert res.components.tolist() == [0, 0, 1, 1]
    assert res.cut.tolist() == [False, True, False]
    assert res.objective == pytest.approx(-5.0)


def test_stuff_never_split():
    # Same costs, but both classes are stuff: the 1-2 cut is only possible with different classes,
    # which costs more than it earns, so nothing is cut.
    edges = np.array([[0, 1], [1, 2], [2, 3]])
    node_costs = np.array([[5.0, 0.0]] * 4)
    edge_costs = np.array([1.0, -5.0, 1.0])
    res = solve_amwc(node_costs, edges, edge_costs, [False, False], backend="cpu")
    assert res.labels.tolist() == [1, 1, 1, 1]
    assert res.components.tolist() == [0, 0, 0, 0]
    assert not res.cut.any()
    assert res.objective == pytest.approx(0.0)


def test_separate_regions_of_one_stuff_class_are_separate_components():
    # Stuff regions of one class that do not touch stay separate components.
    edges = np.array([[0, 1], [1, 2]])
    node_costs = np.array([[0.0, 9.0], [9.0, 0.0], [0.0, 9.0]])
    res = solve_amwc(node_costs, edges, np.ones(2), [False, False], backend="cpu")
    assert res.labels.tolist() == [0, 1, 0]
    assert res.components.tolist() == [0, 1, 2]


@pytest.mark.parametrize("seed", range(8))
def test_multiway_cut(seed):
    """With no partitionable class every component is a maximal connected single-class region."""
    rng = np.random.default_rng(100 + seed)
    inst = _random_grid_instance(rng, 6, 7, 4)
    part = np.zeros(4, bool)
    res = solve_amwc(inst[0], inst[1], inst[2], part, backend="cpu")
    _assert_valid(res, inst[0], inst[1], inst[2], part)
    edges = inst[1]
    same = res.labels[edges[:, 0]] == res.labels[edges[:, 1]]
    np.testing.assert_array_equal(res.cut, ~same)


def test_deterministic():
    inst = street_instance(32, 64, seed=3)
    args = (inst["node_costs"], inst["edges"], inst["edge_costs"], inst["partitionable"])
    a = solve_amwc(*args, backend="cpu")
    b = solve_amwc(*args, backend="cpu")
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.components, b.components)
    np.testing.assert_array_equal(a.cut, b.cut)
    assert a.objective == b.objective


def test_better_than_trivial_baseline_on_street_instance():
    inst = street_instance(48, 96, seed=1)
    args = (inst["node_costs"], inst["edges"], inst["edge_costs"], inst["partitionable"])
    res = solve_amwc(*args, backend="cpu")
    _assert_valid(res, *args)
    base = baseline_objective(inst["node_costs"], inst["edges"], inst["edge_costs"])
    assert res.objective < base
    greedy = solve_amwc(*args, backend="cpu", local_search=False)
    assert res.objective <= greedy.objective + 1e-9
    # The solution is close to the ground truth: most pixels carry their true class, and the
    # objective is at least as good as that of the ground-truth segmentation.
    assert (res.labels == inst["classes"].ravel()).mean() > 0.95
    seg = inst["segments"].ravel()
    edges = inst["edges"]
    truth = amwc_objective(
        inst["node_costs"],
        edges,
        inst["edge_costs"],
        inst["classes"].ravel(),
        seg[edges[:, 0]] != seg[edges[:, 1]],
    )
    assert res.objective <= truth + 1e-6


def test_empty_and_edgeless_instances():
    res = solve_amwc(np.zeros((0, 3)), np.zeros((0, 2), int), np.zeros(0), [True, False, True])
    assert res.labels.shape == (0,) and res.cut.shape == (0,) and res.objective == 0.0
    costs = np.array([[1.0, 0.5], [0.0, 2.0]])
    res = solve_amwc(costs, np.zeros((0, 2), int), np.zeros(0), [False, True])
    assert res.labels.tolist() == [1, 0]
    assert res.components.tolist() == [0, 1]
    assert res.objective == pytest.approx(0.5)
