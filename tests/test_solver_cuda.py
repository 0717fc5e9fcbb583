"""GPU AMWC solver (cops.solver.amwc_cuda) on numba's CUDA simulator, plus a PTX build check.

The simulator must be switched on before numba is imported, so the solves run in one subprocess
(this file executed as a script with NUMBA_ENABLE_CUDASIM=1) that writes every result to JSON; the
tests below check those results against the CPU helpers. Instances are tiny because the simulator
runs each GPU thread as a Python thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cops.solver.amwc_cpu import solve_cpu
from cops.solver.checks import amwc_objective, check_feasible
from cops.solver.graph import grid_graph

pytestmark = pytest.mark.slow  # the GPU kernels under numba's CUDA simulator, in a subprocess

RANDOM_SEEDS = range(20)
GREEDY_SEEDS = range(4)
MWC_SEEDS = range(3)
SCENE_SEEDS = range(3)
EXACT_SEEDS = range(4)
BATCH_SEEDS = (0, 3, 6)


def random_instance(
    seed: int, height: int = 4, width: int = 5, distances: tuple[int, ...] = (1, 2)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random costs on a small grid; 3-5 classes with at least one stuff and one thing class."""
    rng = np.random.default_rng(seed)
    k = 3 + seed % 3
    part = rng.random(k) < 0.5
    part[0], part[1] = False, True
    edges = grid_graph(height, width, distances)
    costs = rng.normal(size=(height * width, k))
    weights = rng.normal(size=len(edges)) + 0.3
    return costs, edges, weights, part


def scene_instance(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """6x8 scene: stuff class 0 on the left, two touching instances of thing class 2 on the right.

    Returns the instance and the ground-truth segment per node (0 stuff, 1 and 2 the instances).
    """
    rng = np.random.default_rng(100 + seed)
    h, w = 6, 8
    seg = np.zeros((h, w), np.int64)
    seg[:3, 3:] = 1
    seg[3:, 3:] = 2
    seg = seg.ravel()
    cls = np.where(seg == 0, 0, 2)
    edges = grid_graph(h, w, (1, 2, 4))
    costs = rng.normal(0.0, 0.3, (h * w, 3))
    costs[np.arange(h * w), cls] -= 3.0
    same = seg[edges[:, 0]] == seg[edges[:, 1]]
    weights = np.where(same, 2.0, -2.0) + rng.normal(0.0, 0.3, len(edges))
    return costs, edges, weights, np.array([False, False, True]), seg


def bench_instance() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 16x32 street-scene instance (distances 1, 4, 16)."""
    from cops.datasets.solver_instances import street_instance

    inst = street_instance(16, 32, 0, distances=(1, 4, 16))
    return inst["node_costs"], inst["edges"], inst["edge_costs"], inst["partitionable"]


def noisy_small(seed: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 12x16 instance of the noisy family (sigma 1.5): many small clusters."""
    from cops.datasets.solver_instances import noisy_instance

    d = noisy_instance(12, 16, seed=seed, sigma=1.5)
    return d["node_costs"], d["edges"], d["edge_costs"], d["partitionable"]


def _simulate(out_path: str) -> None:
    """Run every simulator case and write {case: outputs or error} to ``out_path`` as JSON."""
    import torch
    from numba import cuda

    from cops.solver.amwc_cuda import solve_amwc_cuda, solve_amwc_cuda_batch

    res: dict[str, Any] = {}

    def host(out: tuple[Any, ...]) -> dict[str, Any]:
        arrays = [a.copy_to_host() for a in out]
        return {
            "labels": arrays[0].tolist(),
            "components": arrays[1].tolist(),
            "cut": arrays[2].astype(int).tolist(),
            "dtypes": [str(a.dtype) for a in arrays],
            "shapes": [list(a.shape) for a in arrays],
        }

    def run(name: str, *args: Any, **kwargs: Any) -> None:
        try:
            res[name] = host(solve_amwc_cuda(*args, **kwargs))
        except ValueError as exc:
            res[name] = {"error": str(exc)}

    for s in RANDOM_SEEDS:
        run(f"random{s}", *random_instance(s))
    run("repeat0", *random_instance(0))
    for s in GREEDY_SEEDS:
        run(f"greedy{s}", *random_instance(s), local_search=False)
        run(f"mutual{s}", *random_instance(s), local_search=False, satellites=False)
    for s in MWC_SEEDS:
        c, e, w, part = random_instance(s)
        run(f"mwc{s}", c, e, w, np.zeros_like(part))
    c, e, w, part = random_instance(7)
    run("allthings", c, e, w, np.ones_like(part))
    for s in SCENE_SEEDS:
        run(f"scene{s}", *scene_instance(s)[:4])
    for s in EXACT_SEEDS:
        run(f"exact{s}", *random_instance(s, 3, 4))
    run("bench", *bench_instance())
    for effort in ("off", "fast", "full"):
        stats: dict[str, int] = {}
        run(f"noisy_{effort}", *noisy_small(), local_search=effort, stats=stats)
        res[f"noisy_{effort}"]["stats"] = stats
    # A strict gain threshold in place of "fast": an image stops after its second iteration unless
    # that gains at least as much as its first; in a batch each image stops on its own gains.
    from cops.solver import amwc_cuda

    fast = amwc_cuda.LOCAL_SEARCH["fast"]
    amwc_cuda.LOCAL_SEARCH["fast"] = amwc_cuda.LocalSearchBound(100, 0.99)
    try:
        pair = [noisy_small(s) for s in (4, 5)]
        for s, (c, e, w, part) in zip((4, 5), pair, strict=True):
            stats = {}
            run(f"strict{s}", c, e, w, part, stats=stats)
            res[f"strict{s}"]["stats"] = stats
        stacked = [np.stack([inst[i] for inst in pair]) for i in (0, 2)]
        res["strict_batch"] = host(solve_amwc_cuda_batch(stacked[0], e, stacked[1], part))
    finally:
        amwc_cuda.LOCAL_SEARCH["fast"] = fast

    c, e, w, part = random_instance(1)
    run("float32", c.astype(np.float32), e.astype(np.int32), w.astype(np.float32), part)
    run("device", cuda.to_device(c), cuda.to_device(e), cuda.to_device(w), part)
    run("torch", torch.from_numpy(c), torch.from_numpy(e), torch.from_numpy(w), part.tolist())
    run("reversed", c, np.ascontiguousarray(e[:, ::-1]), w, part)

    part0 = random_instance(BATCH_SEEDS[0])[3]
    costs, weights = [], []
    for s in BATCH_SEEDS:
        c, e, w, _ = random_instance(s)
        costs.append(c)
        weights.append(w)
        run(f"single{s}", c, e, w, part0)
    out = solve_amwc_cuda_batch(np.stack(costs), e, np.stack(weights), part0)
    res["batch"] = host(out)

    run(
        "noedges", np.arange(12.0).reshape(4, 3)[:, ::-1], np.zeros((0, 2), np.int64), [], [1, 0, 1]
    )
    run("onenode", [[1.0, 0.0]], np.zeros((0, 2), np.int64), np.zeros(0), [True, False])
    run("empty", np.zeros((0, 2)), np.zeros((0, 2), np.int64), np.zeros(0), [True, False])
    e = grid_graph(2, 3, (1,))
    run("oneclass_stuff", np.zeros((6, 1)), e, -np.ones(len(e)), [False])
    run("oneclass_thing", np.zeros((6, 1)), e, -np.ones(len(e)), [True])

    c, e, w, part = random_instance(2)
    bad = e.copy()
    bad[3, 1] = 20
    run("err_range", c, bad, w, part)
    loop = e.copy()
    loop[2, 1] = loop[2, 0]
    run("err_loop", c, loop, w, part)
    nan = c.copy()
    nan[5, 1] = np.nan
    run("err_nan", nan, e, w, part)
    run("err_shape", c, e[:, :1], w, part)
    run("err_part", c, e, w, part[:-1])
    run("err_nonodes", np.zeros((0, 2)), e[:1], w[:1], [True, False])
    Path(out_path).write_text(json.dumps(res))


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Results of all simulator cases (one subprocess for the whole module)."""
    out = tmp_path_factory.mktemp("cudasim") / "results.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, __file__, str(out)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def _arrays(r: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels, components, cut of one simulator result."""
    assert "error" not in r, r.get("error")
    return np.array(r["labels"]), np.array(r["components"]), np.array(r["cut"], bool)


def _objective(inst: tuple[np.ndarray, ...], r: dict[str, Any]) -> float:
    """Objective of a simulator result, after checking it is a feasible AMWC solution."""
    c, e, w, part = inst[:4]
    labels, comp, cut = _arrays(r)
    check_feasible(e, labels, comp, cut, part)
    return amwc_objective(c, e, w, labels, cut)


def _rel_gaps(sim: dict[str, Any], prefix: str, seeds: Any, cpu_rounds: int) -> np.ndarray:
    """(GPU - CPU) / |CPU| objective per seed."""
    gaps = []
    for s in seeds:
        inst = random_instance(s)
        gpu = _objective(inst, sim[f"{prefix}{s}"])
        cpu = float(solve_cpu(*inst, cpu_rounds)[3])
        gaps.append((gpu - cpu) / abs(cpu))
    return np.array(gaps)


def test_outputs_are_feasible_device_arrays(sim: dict[str, Any]) -> None:
    for s in RANDOM_SEEDS:
        r = sim[f"random{s}"]
        _objective(random_instance(s), r)
        assert r["dtypes"] == ["int32", "int32", "bool"]
        assert r["shapes"] == [[20], [20], [len(random_instance(s)[1])]]
    for s in GREEDY_SEEDS:
        _objective(random_instance(s), sim[f"greedy{s}"])
        _objective(random_instance(s), sim[f"mutual{s}"])


def test_objective_matches_recomputation(sim: dict[str, Any]) -> None:
    c, e, w, _ = random_instance(4)
    labels, comp, cut = _arrays(sim["random4"])
    by_hand = c[np.arange(len(c)), labels].sum() + w[comp[e[:, 0]] != comp[e[:, 1]]].sum()
    assert amwc_objective(c, e, w, labels, cut) == pytest.approx(by_hand, abs=1e-12)


def test_local_search_never_hurts(sim: dict[str, Any]) -> None:
    for s in GREEDY_SEEDS:
        inst = random_instance(s)
        assert _objective(inst, sim[f"random{s}"]) <= _objective(inst, sim[f"greedy{s}"]) + 1e-9


def test_gap_to_cpu_solver(sim: dict[str, Any]) -> None:
    # Both are heuristics; on tiny random instances either may win, so the bound is loose.
    full = _rel_gaps(sim, "random", RANDOM_SEEDS, 20)
    greedy = _rel_gaps(sim, "greedy", GREEDY_SEEDS, 0)
    print(f"GPU vs CPU relative objective gap: with local search mean {full.mean():+.4f} "
          f"(max {full.max():+.4f}); greedy only mean {greedy.mean():+.4f}")  # fmt: skip
    assert full.mean() < 0.05
    assert full.max() < 0.25


def test_gap_on_benchmark_scene(sim: dict[str, Any]) -> None:
    inst = bench_instance()
    gpu = _objective(inst, sim["bench"])
    cpu = float(solve_cpu(*inst, 20)[3])
    print(f"benchmark scene 16x32: GPU {gpu:.4f}, CPU {cpu:.4f}, gap {(gpu - cpu) / abs(cpu):+.4%}")
    assert gpu - cpu <= 0.005 * abs(cpu)


def test_within_reach_of_optimum(sim: dict[str, Any]) -> None:
    pytest.importorskip("scipy")
    from cops.solver.exact import solve_amwc_exact

    for s in EXACT_SEEDS:
        inst = random_instance(s, 3, 4)
        best = solve_amwc_exact(*inst)[3]
        got = _objective(inst, sim[f"exact{s}"])
        assert got >= best - 1e-9
        assert got - best <= 0.25 * abs(best)


def test_scene_separates_touching_instances(sim: dict[str, Any]) -> None:
    for s in SCENE_SEEDS:
        c, e, w, part, seg = scene_instance(s)
        labels, comp, _ = _arrays(sim[f"scene{s}"])
        _objective((c, e, w, part), sim[f"scene{s}"])
        assert (labels == np.where(seg == 0, 0, 2)).all()
        # Components equal the ground-truth segments up to renaming, numbered by first node.
        assert comp.max() == 2
        assert all(len(set(comp[seg == g])) == 1 for g in range(3))
        assert comp[0] == 0


def test_multiway_cut_and_all_things(sim: dict[str, Any]) -> None:
    for s in MWC_SEEDS:
        c, e, w, part = random_instance(s)
        mwc = np.zeros_like(part)
        labels, comp, _ = _arrays(sim[f"mwc{s}"])
        _objective((c, e, w, mwc), sim[f"mwc{s}"])
        # One segment per connected region of a class: components follow labels exactly.
        same = labels[e[:, 0]] == labels[e[:, 1]]
        assert ((comp[e[:, 0]] == comp[e[:, 1]]) == same).all()
    c, e, w, part = random_instance(7)
    _objective((c, e, w, np.ones_like(part)), sim["allthings"])


def test_deterministic(sim: dict[str, Any]) -> None:
    assert sim["repeat0"] == sim["random0"]


def test_input_kinds(sim: dict[str, Any]) -> None:
    for name in ("device", "torch", "reversed"):
        assert sim[name] == sim["random1"], name
    c, e, w, part = random_instance(1)
    _objective((c.astype(np.float32), e, w.astype(np.float32), part), sim["float32"])


def test_batch_equals_single_solves(sim: dict[str, Any]) -> None:
    batch = sim["batch"]
    assert batch["dtypes"] == ["int32", "int32", "bool"]
    m = len(random_instance(0)[1])
    assert batch["shapes"] == [[3, 20], [3, 20], [3, m]]
    for i, s in enumerate(BATCH_SEEDS):
        single = sim[f"single{s}"]
        for field in ("labels", "components", "cut"):
            assert batch[field][i] == single[field], (s, field)


def test_edge_cases(sim: dict[str, Any]) -> None:
    r = sim["noedges"]
    assert r["labels"] == [2, 2, 2, 2] and r["components"] == [0, 1, 2, 3] and r["cut"] == []
    assert sim["onenode"]["labels"] == [1] and sim["onenode"]["components"] == [0]
    assert sim["empty"]["shapes"] == [[0], [0], [0]]
    assert sim["oneclass_stuff"]["components"] == [0] * 6
    assert not any(sim["oneclass_stuff"]["cut"])
    # Thing class with repulsive edges: every node alone.
    assert sim["oneclass_thing"]["components"] == list(range(6))
    assert all(sim["oneclass_thing"]["cut"])


def test_local_search_bound(sim: dict[str, Any]) -> None:
    """Efforts bound the parallel local search: "off" runs none, "fast" at most its iteration cap
    per level (fewer when an iteration gains little), "full" is never cut shorter than "fast"."""
    from cops.solver.amwc_cuda import LOCAL_SEARCH

    inst = noisy_small()
    stats = {e: sim[f"noisy_{e}"]["stats"] for e in ("off", "fast", "full")}
    objective = {e: _objective(inst, sim[f"noisy_{e}"]) for e in ("off", "fast", "full")}
    levels = ("cluster_iterations", "node_iterations")
    assert all(stats["off"][k] == 0 for k in levels)
    assert all(1 <= stats["fast"][k] <= LOCAL_SEARCH["fast"].iterations for k in levels)
    assert all(stats["fast"][k] <= stats["full"][k] for k in levels)
    assert objective["full"] <= objective["fast"] < objective["off"]


def test_local_search_stops_on_small_gain(sim: dict[str, Any]) -> None:
    """With a gain threshold the search ends early, image by image, also inside a batch."""
    assert sim["strict4"]["stats"]["node_iterations"] <= 2
    assert (
        sim["strict4"]["stats"]["node_iterations"] < sim["noisy_full"]["stats"]["node_iterations"]
    )
    batch = sim["strict_batch"]
    for i, s in enumerate((4, 5)):
        single = sim[f"strict{s}"]
        for key in ("labels", "components", "cut"):
            assert batch[key][i] == single[key], (s, key)


def test_bad_input_raises(sim: dict[str, Any]) -> None:
    assert "out of range" in sim["err_range"]["error"]
    assert "self-loop" in sim["err_loop"]["error"]
    assert "NaN" in sim["err_nan"]["error"]
    assert "edges" in sim["err_shape"]["error"]
    assert "partitionable" in sim["err_part"]["error"]
    assert "out of range" in sim["err_nonodes"]["error"]


def test_kernels_compile_for_hopper() -> None:
    """Type-check every kernel by compiling it to PTX for sm_90 (needs NVVM, not a GPU)."""
    from numba import cuda
    from numba import types as t

    from cops.solver import _cuda_kernels as kern
    from cops.solver import _cuda_refine_kernels as refine_kern

    if kern.SIMULATOR:
        pytest.skip("numba runs in CUDA simulator mode")
    try:
        cuda.compile_ptx(kern.k_zero.py_func, (t.int32[:], t.int64), cc=(9, 0))
    except Exception as exc:  # no NVVM/toolkit on this machine
        pytest.skip(f"cannot compile PTX here: {exc}")
    f1, f2, i1, l1 = t.float64[:], t.float64[:, :], t.int32[:], t.int64[:]
    u1, b1, n = t.uint8[:], t.boolean[:], t.int64
    sigs = {
        "k_load_costs2": (t.float32[:, :], n, n, f2, i1),
        "k_load_costs3": (t.float32[:, :, :], n, n, n, f2, i1),
        "k_load_edges": (t.int64[:, :], n, n, n, i1, i1, i1),
        "k_load_weights1": (t.float32[:], n, f1, i1),
        "k_load_weights2": (t.float32[:, :], n, n, f1, i1),
        "k_zero": (i1, n),
        "k_iota": (i1, n),
        "k_scan_tiles": (i1, n, i1, i1, n),
        "k_scan_add": (i1, n, i1, n),
        "k_cluster_min": (f2, n, n, f1, i1, f1, i1),
        "k_edge_gain": (i1, i1, f1, n, f2, n, f1, f1, f1),
        "k_edge_pick": (i1, i1, n, f1, f1, i1),
        "k_match": (i1, i1, i1, n, i1, i1, i1, n),
        "k_satellite": (i1, f1, i1, i1, f2, n, f1, n, n, i1, i1, i1),
        "k_reject": (i1, i1, f1, n, i1, i1),
        "k_lowest": (i1, i1, n, i1),
        "k_roots": (i1, i1, i1, n, i1),
        "k_new_ids": (i1, i1, n, i1),
        "k_map_nodes": (i1, n, i1),
        "k_count": (i1, n, i1),
        "k_fill": (i1, n, i1, i1, i1),
        "k_sort_segments": (i1, n, i1),
        "k_sum_costs": (i1, i1, n, f2, n, f2),
        "k_clear_hash": (l1, i1, n),
        "k_hash_insert": (i1, i1, n, i1, n, l1, i1, n, i1),
        "k_owner_flag": (i1, i1, n, i1),
        "k_edge_group": (i1, i1, i1, n, i1),
        "k_sum_edges": (i1, i1, n, i1, i1, f1, i1, i1, i1, f1),
        "k_half_ends": (i1, i1, n, i1),
        "k_cluster_keys": (n, i1, u1, n, i1, l1),
        "k_node_keys": (i1, n, i1, l1, i1, l1),
        "k_ls_eval": (i1, i1, i1, i1, f1, f2, n, u1, n, n, l1, i1, f1, l1, i1),
        "k_unit_image": (i1, n, n, i1),
        "k_ls_apply": (i1, i1, i1, i1, n, f1, l1, i1, l1, i1, i1, n, i1, u1, l1),
        "k_hook": (i1, i1, n, l1, i1, i1, n),
        "k_compress": (i1, n),
        "k_is_root": (i1, n, i1),
        "k_outputs": (n, n, i1, i1, i1, i1, i1),
        "k_cut": (t.int64[:, :], n, n, n, i1, b1),
    }
    kernels = {
        name: getattr(mod, name)
        for mod in (kern, refine_kern)
        for name in dir(mod)
        if name.startswith("k_")
    }
    assert set(sigs) == set(kernels)
    for name, sig in sigs.items():
        ptx, _ = cuda.compile_ptx(kernels[name].py_func, sig, cc=(9, 0))
        assert ".entry" in ptx, name


if __name__ == "__main__":
    # Simulator threads hand the GIL over far more often than the 5 ms default: much faster.
    sys.setswitchinterval(1e-4)
    _simulate(sys.argv[1])
