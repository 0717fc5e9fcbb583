"""Bounded local search of the CPU solver: effort names, quality of the default, work bounds."""

import numpy as np
import pytest

from cops.datasets.solver_instances import noisy_instance, random_tiny_instance
from cops.solver import solve_amwc, solve_amwc_batch
from cops.solver.amwc_cpu import LOCAL_SEARCH, solve_cpu
from cops.solver.exact import solve_amwc_exact


def _noisy(height: int, width: int, seed: int = 0, sigma: float = 1.5) -> tuple:
    d = noisy_instance(height, width, seed, sigma)
    return d["node_costs"], d["edges"], d["edge_costs"], d["partitionable"]


def _same(a, b) -> bool:
    return (
        np.array_equal(a.labels, b.labels)
        and np.array_equal(a.components, b.components)
        and np.array_equal(a.cut, b.cut)
        and a.objective == b.objective
    )


def test_default_gap_to_exact_optimum():
    """The default ("fast") stays within 0.5 % of the optimum on average on tiny instances."""
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(40):
        inst = random_tiny_instance(rng)
        opt = solve_amwc_exact(*inst)[3]
        gaps.append((solve_amwc(*inst, backend="cpu").objective - opt) / abs(opt))
    assert min(gaps) >= -1e-9
    assert float(np.mean(gaps)) <= 0.005


def test_effort_names_and_bools():
    inst = _noisy(24, 32, seed=1)
    off = solve_amwc(*inst, backend="cpu", local_search="off")
    fast = solve_amwc(*inst, backend="cpu", local_search="fast")
    full = solve_amwc(*inst, backend="cpu", local_search="full")
    assert _same(off, solve_amwc(*inst, backend="cpu", local_search=False))
    assert _same(fast, solve_amwc(*inst, backend="cpu", local_search=True))
    assert _same(fast, solve_amwc(*inst, backend="cpu"))
    # "off" is the greedy contraction alone, "full" the unbounded search of old (20 rounds).
    assert off.objective == solve_cpu(*inst, 0)[3]
    assert full.objective == solve_cpu(*inst, 20)[3]
    # Local search only ever lowers the objective of the greedy start.
    assert fast.objective < off.objective
    assert full.objective < off.objective
    batch = solve_amwc_batch(inst[0][None], inst[1], inst[2][None], inst[3], "cpu")
    assert batch.objective[0] == fast.objective
    for bad in ("medium", 1, None):
        with pytest.raises(ValueError, match="local_search"):
            solve_amwc(*inst, backend="cpu", local_search=bad)


@pytest.mark.parametrize("seed", range(4))
def test_fast_never_worse_than_greedy(seed):
    inst = _noisy(16, 24, seed=seed, sigma=1.0 + 0.25 * seed)
    off = solve_amwc(*inst, backend="cpu", local_search="off").objective
    assert solve_amwc(*inst, backend="cpu").objective <= off


def test_work_bound_on_noisy_instance():
    """Counted work, not time: the Kernighan-Lin passes stop at the budget, rounds at the cap."""
    inst = _noisy(64, 128)
    n, half_edges = inst[0].shape[0], 2 * len(inst[1])
    fast = LOCAL_SEARCH["fast"]
    stats: dict[str, int] = {}
    res = solve_cpu(*inst, fast, stats)
    assert stats["kl_budget"] == fast.budget(half_edges)
    # No pass starts after the budget is spent; one pass of at most 4 * 64 moves may run over it.
    assert stats["kl_work"] <= stats["kl_budget"] + 0.05 * half_edges
    assert 1 <= stats["rounds"] <= fast.rounds
    assert stats["sweep_moves"] <= stats["rounds"] * fast.max_moves(n)
    full_stats: dict[str, int] = {}
    full = solve_cpu(*inst, LOCAL_SEARCH["full"], full_stats)
    # The unbounded search works far beyond the budget on this noisy instance, for little more.
    assert full_stats["kl_work"] > 50 * stats["kl_budget"]
    greedy = solve_cpu(*inst, LOCAL_SEARCH["off"])[3]
    assert full[3] <= res[3] < greedy
    assert (greedy - res[3]) >= 0.9 * (greedy - full[3])


def test_small_gain_ends_the_search():
    """A round that gains less than ``min_gain`` of the first round's gain is the last one."""
    inst = _noisy(32, 48, seed=2)
    capped = LOCAL_SEARCH["fast"]
    strict = type(capped)(
        rounds=capped.rounds,
        sweep_moves=capped.sweep_moves,
        kl_work=capped.kl_work,
        kl_floor=capped.kl_floor,
        min_gain=1.0,
        multi_start_nodes=0,
    )
    stats: dict[str, int] = {}
    solve_cpu(*inst, strict, stats)
    # Only a round gaining at least as much as the first could be followed by another.
    assert stats["rounds"] <= 2


def test_recipe_key():
    """``solver.local_search`` in a recipe: the effort names, and a bare YAML ``off`` (false)."""
    from cops.recipes.schema import RecipeError, load_recipe
    from cops.solver.checks import validate_local_search

    assert load_recipe("synthetic-tiny").solver.local_search == "fast"
    for text, effort in (("off", "off"), ("fast", "fast"), ("full", "full"), ("true", "fast")):
        value = load_recipe("synthetic-tiny", [f"solver.local_search={text}"]).solver.local_search
        assert validate_local_search(value) == effort
    with pytest.raises(RecipeError, match="solver.local_search"):
        load_recipe("synthetic-tiny", ["solver.local_search=medium"])
