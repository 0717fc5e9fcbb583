"""Public solver API: input checking, backends, torch in/out, batching, feasibility checks."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import cops.solver.api as api
from cops.datasets.solver_instances import street_instance
from cops.solver import (
    AMWCResult,
    amwc_objective,
    check_feasible,
    grid_graph,
    solve_amwc,
    solve_amwc_batch,
)


@pytest.fixture
def inst():
    rng = np.random.default_rng(0)
    edges = grid_graph(4, 5, [1, 2])
    return (
        rng.normal(size=(20, 3)),
        edges,
        rng.normal(0.3, 1.0, size=len(edges)),
        np.array([False, True, True]),
    )


def _replace(inst, i, value):
    out = list(inst)
    out[i] = value
    return out


@pytest.mark.parametrize(
    ("index", "value", "name"),
    [
        (0, np.zeros(20), "node_costs"),
        (0, np.zeros((20, 0)), "node_costs"),
        (0, np.full((20, 3), np.nan), "node_costs"),
        (0, np.full((20, 3), "a"), "node_costs"),
        (1, np.zeros((4, 3), int), "edges"),
        (1, np.array([[0, 20]]), "edges"),
        (1, np.array([[-1, 2]]), "edges"),
        (1, np.array([[3, 3]]), "edges"),
        (1, np.array([[0.5, 1.0]]), "edges"),
        (2, np.zeros(3), "edge_costs"),
        (2, np.zeros((2, 2)), "edge_costs"),
        (3, [True, False], "partitionable"),
        (3, [0.5, 1, 0], "partitionable"),
    ],
)
def test_bad_input_names_the_argument(inst, index, value, name):
    args = _replace(inst, index, value)
    if index == 1 and name == "edges":
        args[2] = np.zeros(len(value))
    with pytest.raises(ValueError, match=name):
        solve_amwc(*args, backend="cpu")


def test_infinite_edge_cost(inst):
    w = inst[2].copy()
    w[3] = np.inf
    with pytest.raises(ValueError, match="edge_costs"):
        solve_amwc(inst[0], inst[1], w, inst[3])


def test_unknown_backend(inst):
    with pytest.raises(ValueError, match="backend"):
        solve_amwc(*inst, backend="gpu")
    with pytest.raises(ValueError, match="backend"):
        solve_amwc_batch(inst[0][None], inst[1], inst[2][None], inst[3], backend="tpu")


def test_cuda_backend_without_gpu_is_a_clear_error(inst, monkeypatch):
    monkeypatch.setattr(api, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA"):
        solve_amwc(*inst, backend="cuda")
    assert api.resolve_backend("auto", *inst) == "cpu"


def test_auto_uses_cpu_for_host_inputs(inst):
    res = solve_amwc(*inst)
    ref = solve_amwc(*inst, backend="cpu")
    assert isinstance(res, AMWCResult)
    np.testing.assert_array_equal(res.labels, ref.labels)


def test_numpy_output_types(inst):
    res = solve_amwc(*inst)
    assert res.labels.dtype == np.int64 and res.labels.shape == (20,)
    assert res.components.dtype == np.int64
    assert res.cut.dtype == np.bool_ and res.cut.shape == (len(inst[1]),)
    assert isinstance(res.objective, float)


def test_torch_in_torch_out(inst):
    t = [torch.from_numpy(np.asarray(x)) for x in inst]
    t[0].requires_grad_(True)
    res = solve_amwc(*t, backend="cpu")
    ref = solve_amwc(*inst, backend="cpu")
    pairs = zip(
        (res.labels, res.components, res.cut), (ref.labels, ref.components, ref.cut), strict=True
    )
    for got, want in pairs:
        assert isinstance(got, torch.Tensor)
        assert got.device == t[0].device
        np.testing.assert_array_equal(got.numpy(), want)
    assert res.labels.dtype == torch.int64 and res.cut.dtype == torch.bool
    assert res.objective == pytest.approx(ref.objective)
    # float32 and int32 inputs are accepted too.
    res32 = solve_amwc(t[0].detach().float(), t[1].int(), t[2].float(), t[3])
    check_feasible(inst[1], res32.labels, res32.components, res32.cut, inst[3])


def test_batch_equals_per_image():
    insts = [street_instance(24, 40, seed=s) for s in range(3)]
    edges = insts[0]["edges"]
    part = insts[0]["partitionable"]
    c = np.stack([i["node_costs"] for i in insts])
    w = np.stack([i["edge_costs"] for i in insts])
    res = solve_amwc_batch(c, edges, w, part, backend="cpu", num_threads=2)
    assert res.labels.shape == (3, c.shape[1]) and res.cut.shape == (3, len(edges))
    assert res.objective.shape == (3,)
    for b in range(3):
        one = solve_amwc(c[b], edges, w[b], part, backend="cpu")
        np.testing.assert_array_equal(res.labels[b], one.labels)
        np.testing.assert_array_equal(res.components[b], one.components)
        np.testing.assert_array_equal(res.cut[b], one.cut)
        assert res.objective[b] == pytest.approx(one.objective)
    tres = solve_amwc_batch(torch.from_numpy(c), torch.from_numpy(edges), torch.from_numpy(w), part)
    assert isinstance(tres.objective, torch.Tensor)
    np.testing.assert_array_equal(tres.labels.numpy(), res.labels)


def test_batch_bad_shapes(inst):
    with pytest.raises(ValueError, match="node_costs"):
        solve_amwc_batch(inst[0], inst[1], inst[2][None], inst[3])
    with pytest.raises(ValueError, match="edge_costs"):
        solve_amwc_batch(inst[0][None], inst[1], inst[2], inst[3])
    empty = solve_amwc_batch(np.zeros((0, 20, 3)), inst[1], np.zeros((0, len(inst[1]))), inst[3])
    assert empty.labels.shape == (0, 20) and empty.cut.shape == (0, len(inst[1]))


def test_amwc_objective_and_check_feasible_errors(inst):
    edges = np.array([[0, 1], [1, 2], [2, 3], [0, 3]])
    part = np.array([False, True])
    labels = np.array([0, 0, 1, 1])
    comps = np.array([0, 0, 1, 1])
    cut = np.array([False, True, False, True])
    check_feasible(edges, labels, comps, cut, part)
    costs = np.array([[1.0, 2.0]] * 4)
    assert amwc_objective(costs, edges, np.array([1.0, 2.0, 3.0, 4.0]), labels, cut) == 12.0
    with pytest.raises(ValueError, match="cut"):
        check_feasible(edges, labels, comps, np.array([False, False, False, True]), part)
    with pytest.raises(ValueError, match="mixes classes"):
        check_feasible(edges, np.array([0, 1, 1, 1]), comps, cut, part)
    with pytest.raises(ValueError, match="stuff"):
        check_feasible(edges, np.array([0, 0, 0, 0]), comps, cut, part)
    with pytest.raises(ValueError, match="0..C-1"):
        check_feasible(edges, labels, np.array([0, 0, 2, 2]), cut, part)
    # A component split in two pieces that share an id is not connected.
    path = np.array([[0, 1], [1, 2], [2, 3]])
    with pytest.raises(ValueError, match="not connected"):
        check_feasible(
            path,
            np.array([1, 0, 0, 1]),
            np.array([0, 1, 1, 0]),
            np.array([True, False, True]),
            part,
        )
    with pytest.raises(ValueError, match="labels"):
        amwc_objective(costs, edges, np.ones(4), np.array([0, 0, 5, 0]), cut)


@pytest.mark.slow
def test_cuda_dispatch_under_simulator():
    """backend="cuda" reaches the GPU solver and wraps its outputs (numba's CUDA simulator)."""
    code = """
import numpy as np
from cops.solver import amwc_objective, check_feasible, grid_graph, solve_amwc, solve_amwc_batch
edges = grid_graph(3, 4, [1, 2])
rng = np.random.default_rng(0)
c, w, p = rng.random((12, 4)), rng.normal(0.3, 1, size=len(edges)), [False, False, True, True]
res = solve_amwc(c, edges, w, p, backend="cuda")
assert res.labels.dtype == np.int64 and res.cut.dtype == np.bool_
check_feasible(edges, res.labels, res.components, res.cut, p)
assert abs(res.objective - amwc_objective(c, edges, w, res.labels, res.cut)) < 1e-9
batch = solve_amwc_batch(np.stack([c, c]), edges, np.stack([w, w]), p, backend="cuda")
assert batch.labels.shape == (2, 12) and np.allclose(batch.objective, res.objective)
"""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
