"""AMWC solver benchmark (`cops bench solver`): seconds and objective per local-search effort.

Takes AMWC instances on the synthetic dataset's street scenes (`cops.datasets.solver_instances`:
node costs from noisy class scores, edge costs from noisy same/different-segment evidence), or
the noisy family (pixel noise of σ, unscaled edge costs), and times the solver per backend and
local-search effort (off = greedy only, fast = the default, full). :func:`gap` instead measures
how far the CPU solver is from the exact ILP optimum on random tiny instances.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from cops.benchmarks.report import BenchResult, environment
from cops.datasets.solver_instances import (
    DISTANCES,
    baseline_objective,
    noisy_instance,
    random_tiny_instance,
    street_instance,
)
from cops.errors import CopsError
from cops.memory import check_fits
from cops.solver.api import cuda_available, solve_amwc

SIZES = ((64, 128), (128, 256), (256, 512))
FAMILIES = ("street", "noisy")
NOISE_SIGMAS = (0.5, 1.0, 1.5)
EFFORTS = ("off", "fast", "full")


def _time_efforts(
    inst: dict[str, Any], backend: str, repeats: int, efforts: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per effort: median/min seconds over ``repeats`` solves after one warm-up, and the result.

    The efforts take turns within every repeat, so a change in the machine's load (it is shared)
    touches all of them alike and their ratios stay fair.
    """
    args = [inst["node_costs"], inst["edges"], inst["edge_costs"], inst["partitionable"]]
    if backend == "cuda":
        from numba import cuda

        args = [cuda.to_device(np.ascontiguousarray(a)) for a in args[:3]] + [args[3]]
    results = {e: solve_amwc(*args, backend=backend, local_search=e) for e in efforts}
    times: dict[str, list[float]] = {e: [] for e in efforts}
    for _ in range(repeats):
        for effort in efforts:
            t0 = time.perf_counter()
            results[effort] = solve_amwc(*args, backend=backend, local_search=effort)
            times[effort].append(time.perf_counter() - t0)
    out = {}
    for effort, res in results.items():
        comps = res.components
        comps = comps if isinstance(comps, np.ndarray) else comps.copy_to_host()
        out[effort] = {
            "seconds": round(statistics.median(times[effort]), 4),
            "seconds_min": round(min(times[effort]), 4),
            "objective": round(res.objective, 3),
            "components": int(comps.max()) + 1 if comps.size else 0,
        }
    return out


BYTES_PER_NODE = 1100
"""Peak memory per grid node of building and solving one instance (measured: 1.1 GB more at
512×1024 than at 16×16 for both families, CPU backend)."""


def check_instances(sizes: Sequence[tuple[int, int]], sigmas: Sequence[float]) -> None:
    """Refuse, with one line naming the option, an empty size or σ list, a σ that is not a finite
    non-negative number, and a grid whose instance would not fit in the memory available."""
    if not sizes:
        raise CopsError("--sizes: no grid size given; expected HxW values, e.g. 64x128,256x512")
    if not sigmas:
        raise CopsError("--sigmas: no noise level given; expected numbers, e.g. 0.5,1.0")
    for sigma in sigmas:
        if not math.isfinite(sigma) or sigma < 0:
            raise CopsError(f"--sigmas: {sigma} is not a finite non-negative number")
    for h, w in sizes:
        check_fits(
            h * w * BYTES_PER_NODE,
            f"--sizes {h}x{w}",
            "choose a smaller grid (256x512 is a Cityscapes image at stride 4)",
        )


def measure(
    family: str = "street",
    sizes: Sequence[tuple[int, int]] = SIZES,
    backends: Sequence[str] = ("cpu", "cuda"),
    repeats: int = 5,
    seed: int = 0,
    sigmas: Sequence[float] = NOISE_SIGMAS,
    efforts: Sequence[str] = EFFORTS,
) -> list[dict[str, Any]]:
    """Time the solver on one instance family; one row per (noise, size, backend).

    ``family``: "street" (``street_instance``) or "noisy" (``noisy_instance``, once per σ in
    ``sigmas``). Every row holds, for each local-search effort in ``efforts`` ("off" = greedy
    only, "fast" = the default, "full"), the median and least seconds and the objective
    (``seconds_<effort>``, ``seconds_min_<effort>``, ``objective_<effort>``), plus the trivial
    argmin baseline.
    """
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    rows = []
    for sigma in sigmas if family == "noisy" else (None,):
        for h, w in sizes:
            inst = (
                street_instance(h, w, seed=seed)
                if sigma is None
                else noisy_instance(h, w, seed, sigma)
            )
            base = {
                "family": family,
                "size": f"{h}x{w}",
                "nodes": h * w,
                "edges": len(inst["edges"]),
                "classes": int(inst["partitionable"].size),
                "distances": list(DISTANCES),
                "seed": seed,
                "repeats": repeats,
                "baseline_objective": round(
                    baseline_objective(inst["node_costs"], inst["edges"], inst["edge_costs"]), 3
                ),
            }
            if sigma is not None:
                base["sigma"] = sigma
            for backend in backends:
                row = {**base, "backend": backend}
                if backend == "cuda" and not cuda_available():
                    row["skipped"] = "no CUDA GPU available (numba.cuda.is_available() is False)"
                    rows.append(row)
                    continue
                for effort, timed in _time_efforts(inst, backend, repeats, efforts).items():
                    row[f"seconds_{effort}"] = timed["seconds"]
                    row[f"seconds_min_{effort}"] = timed["seconds_min"]
                    row[f"objective_{effort}"] = timed["objective"]
                if "off" in efforts and "fast" in efforts:
                    row["fast_over_off"] = round(row["seconds_fast"] / row["seconds_off"], 3)
                rows.append(row)
    return rows


def run_gap(count: int, seed: int) -> dict[str, float]:
    """Relative gap (heuristic - optimum) / |optimum| of the CPU solver on random tiny instances.

    ``mean_gap``/``max_gap`` are for the default local search ("fast"), ``*_full`` for "full" and
    ``*_greedy_only`` for "off".
    """
    from cops.solver.exact import solve_amwc_exact

    rng = np.random.default_rng(seed)
    gaps, gaps_full, gaps_greedy = [], [], []
    for _ in range(count):
        inst = random_tiny_instance(rng)
        opt = solve_amwc_exact(*inst)[3]
        gaps.append((solve_amwc(*inst, backend="cpu").objective - opt) / abs(opt))
        full = solve_amwc(*inst, backend="cpu", local_search="full").objective
        gaps_full.append((full - opt) / abs(opt))
        greedy = solve_amwc(*inst, backend="cpu", local_search=False).objective
        gaps_greedy.append((greedy - opt) / abs(opt))
    g, gf, gg = np.array(gaps), np.array(gaps_full), np.array(gaps_greedy)
    return {
        "gap_instances": count,
        "grid": "3x4",
        "distances": [1, 2],
        "classes": 4,
        "partitionable": 2,
        "seed": seed,
        "mean_gap": round(float(g.mean()), 5),
        "max_gap": round(float(g.max()), 5),
        "optimal_fraction": round(float((g <= 1e-9).mean()), 4),
        "mean_gap_full": round(float(gf.mean()), 5),
        "max_gap_full": round(float(gf.max()), 5),
        "mean_gap_greedy_only": round(float(gg.mean()), 5),
        "max_gap_greedy_only": round(float(gg.max()), 5),
    }


def _table_rows(rows: list[dict[str, Any]], efforts: Sequence[str]) -> list[list[Any]]:
    """One table row per measured row: instance, backend, then seconds and objective per effort."""
    table = []
    for row in rows:
        head = [row["family"], row.get("sigma", "–"), row["size"], row["backend"]]
        if "skipped" in row:  # no GPU: the row says so instead of figures
            table.append([*head, *["–"] * (2 * len(efforts)), "no GPU"])
            continue
        cells = []
        for effort in efforts:
            cells += [f"{row[f'seconds_{effort}']:.3f}", f"{row[f'objective_{effort}']:.1f}"]
        ratio = row.get("fast_over_off")
        table.append([*head, *cells, "–" if ratio is None else f"{ratio:.2f}"])
    return table


def run(
    families: Sequence[str] = FAMILIES,
    sizes: Sequence[tuple[int, int]] = SIZES,
    backends: Sequence[str] | None = None,
    repeats: int = 5,
    seed: int = 0,
    sigmas: Sequence[float] = NOISE_SIGMAS,
    efforts: Sequence[str] = EFFORTS,
    gap_instances: int = 0,
) -> BenchResult:
    """:func:`measure` for each family, as one table: seconds (median) and objective per effort.

    `backends` defaults to the CPU, plus the GPU when one is present. With `gap_instances` > 0
    the gap to the exact optimum is measured instead (:func:`gap`).
    """
    if gap_instances:
        return gap(gap_instances, seed)
    if backends is None:
        backends = ("cpu", "cuda") if cuda_available() else ("cpu",)
    for effort in efforts:
        if effort not in EFFORTS:
            raise ValueError(f"effort: expected one of {', '.join(EFFORTS)}, got {effort!r}")
    check_instances(sizes, sigmas if "noisy" in families else (1.0,))
    rows = [
        row
        for family in families
        for row in measure(family, sizes, backends, repeats, seed, sigmas, efforts)
    ]
    columns = ["family", "σ", "grid", "backend"]
    for effort in efforts:
        columns += [f"{effort} s", f"{effort} obj"]
    columns.append("fast/off")
    title = f"AMWC solver, median of {repeats}, efforts take turns (objective: lower is better)"
    figures = {"rows": rows}
    gpu = "cuda" if "cuda" in backends and cuda_available() else None
    return BenchResult(
        "solver", title, columns, _table_rows(rows, efforts), figures, environment(gpu)
    )


def run_check(device: str = "cpu", repeats: int = 3) -> BenchResult:
    """The machine check's solver figures: a Cityscapes-size grid (256×512 nodes), clean and
    noisy (σ 1.5), greedy only and the default effort, on the CPU and on `device` if a GPU."""
    backends = ("cpu", "cuda") if device.startswith("cuda") else ("cpu",)
    result = run(FAMILIES, [(256, 512)], backends, repeats, 0, (1.5,), ("off", "fast"))
    result.title = f"AMWC solver on a Cityscapes-size grid, median of {repeats}"
    return result


def gap(count: int = 200, seed: int = 0) -> BenchResult:
    """:func:`run_gap` as a table: mean and worst relative gap to the optimum per effort."""
    figures = run_gap(count, seed)

    def percent(value: float) -> str:
        return f"{value if abs(value) > 1e-12 else 0.0:.3%}"  # no "-0.000%" from rounding

    rows = [
        [name, percent(figures[f"mean_gap{suffix}"]), percent(figures[f"max_gap{suffix}"])]
        for name, suffix in (("fast (default)", ""), ("full", "_full"), ("off", "_greedy_only"))
    ]
    title = (
        f"gap to the exact optimum, {count} random 3×4 instances (seed {seed}); "
        f"default optimal on {figures['optimal_fraction']:.0%}"
    )
    return BenchResult(
        "solver-gap", title, ["effort", "mean gap", "max gap"], rows, figures, environment()
    )
