"""AMWC solver benchmark (`cops bench solver`): seconds and objective per local-search effort.

Builds street-scene-like AMWC instances on stride-4 grids (a procedural panoptic map, node costs
from noisy class scores, edge costs from noisy same/different-segment evidence), or the noisy
family (pixel noise of σ, unscaled edge costs), and times the solver per backend and
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
from cops.errors import CopsError
from cops.memory import check_fits
from cops.solver.api import cuda_available, solve_amwc
from cops.solver.graph import grid_graph

NUM_STUFF = 11  # Cityscapes-like train ids 0..10 are stuff (road ... sky)
NUM_THING = 8  # 11..18 are things (person ... bicycle)
NUM_CLASSES = NUM_STUFF + NUM_THING
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
DISTANCES = (1, 4, 16, 32, 64)
SIZES = ((64, 128), (128, 256), (256, 512))
FAMILIES = ("street", "noisy")
NOISE_SIGMAS = (0.5, 1.0, 1.5)
EFFORTS = ("off", "fast", "full")


def _ellipse(mask_shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipse."""
    yy, xx = np.ogrid[: mask_shape[0], : mask_shape[1]]
    return ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _rect(mask_shape: tuple[int, int], y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """Boolean mask of the rectangle [y0, y1) x [x0, x1) (clipped)."""
    m = np.zeros(mask_shape, bool)
    m[max(int(y0), 0) : max(int(y1), 0), max(int(x0), 0) : max(int(x1), 0)] = True
    return m


def panoptic_scene(
    height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A procedural street scene: (class id map, segment id map), both int64 [height, width].

    Stuff pixels get segment id = class id (one segment per stuff class); thing instances get ids
    from 1000 on. Cars and pedestrians are placed in touching same-class groups, so separating
    instances needs boundary evidence, not class scores.
    """
    h, w = height, width
    shape = (h, w)
    cls = np.full(shape, SKY, np.int64)
    seg = np.full(shape, SKY, np.int64)
    xs = np.arange(w)
    horizon = (h * rng.uniform(0.38, 0.5) + h * 0.03 * np.sin(xs / w * rng.uniform(2, 6))).astype(
        int
    )
    below = np.arange(h)[:, None] >= horizon[None, :]

    def paint(mask: np.ndarray, c: int, s: int | None = None) -> None:
        cls[mask] = c
        seg[mask] = c if s is None else s

    paint(below, ROAD)
    for side in (0, 1):  # sidewalks widening towards the bottom
        slope = rng.uniform(0.6, 1.2)
        yy = np.arange(h)[:, None] - horizon[None, :]
        edge = (yy * slope * 0.5).clip(0)
        xpos = xs[None, :] if side == 0 else (w - 1 - xs)[None, :]
        paint(below & (xpos < edge * 0.6 + w * 0.04), SIDEWALK)
    x = 0
    while x < w:  # facades, walls and trees along the horizon
        bw = int(rng.uniform(0.08, 0.25) * w)
        top = int(h * rng.uniform(0.05, 0.3))
        c = rng.choice([BUILDING, BUILDING, BUILDING, WALL, VEGETATION])
        m = _rect(shape, top, x, h, x + bw) & ~below
        paint(m, int(c))
        x += bw
    for _ in range(rng.integers(2, 5)):
        cx = rng.uniform(0, w)
        paint(
            _ellipse(shape, h * rng.uniform(0.25, 0.45), cx, h * 0.12, w * 0.06) & ~below,
            VEGETATION,
        )
    for _ in range(rng.integers(1, 3)):
        cx = rng.uniform(0, w)
        cy = h * rng.uniform(0.75, 0.95)
        paint(_ellipse(shape, cy, cx, h * 0.05, w * 0.08) & below, TERRAIN)
    fence_y = int(h * rng.uniform(0.45, 0.55))
    paint(_rect(shape, fence_y - h * 0.04, 0, fence_y, w * rng.uniform(0.1, 0.3)), FENCE)
    for _ in range(rng.integers(2, 5)):
        px = rng.uniform(0, w)
        pw = max(1.0, w * 0.006)
        paint(_rect(shape, h * 0.15, px, h * 0.6, px + pw), POLE)
        c = SIGN if rng.random() < 0.5 else LIGHT
        paint(_rect(shape, h * 0.15, px - pw, h * 0.15 + h * 0.04, px + 2 * pw), c)

    inst = 1000
    # Cars in touching rows on the road, drawn back to front so nearer ones occlude.
    for _ in range(rng.integers(2, 4)):
        row_y = h * rng.uniform(0.55, 0.85)
        size = row_y / h
        x0 = rng.uniform(0, w * 0.7)
        for _ in range(rng.integers(1, 4)):
            cw, ch = w * 0.09 * size * rng.uniform(0.8, 1.3), h * 0.09 * size
            c = CAR if rng.random() < 0.8 else int(rng.choice([TRUCK, BUS]))
            body = _rect(shape, row_y - ch, x0, row_y, x0 + cw)
            roof = _ellipse(shape, row_y - ch, x0 + cw / 2, ch * 0.5, cw * 0.35)
            paint(body | roof, c, inst)
            inst += 1
            x0 += cw * rng.uniform(0.85, 1.0)  # next car touches or overlaps this one
    # Pedestrians and riders in small touching groups on the sidewalks.
    for _ in range(rng.integers(2, 5)):
        gx = rng.choice([rng.uniform(0, w * 0.2), rng.uniform(w * 0.8, w)])
        gy = h * rng.uniform(0.55, 0.8)
        for _ in range(rng.integers(1, 4)):
            ph, pw = h * 0.12 * gy / h, w * 0.012 * gy / h
            c = PERSON if rng.random() < 0.8 else RIDER
            paint(_ellipse(shape, gy - ph / 2, gx, ph / 2, pw), c, inst)
            inst += 1
            gx += pw * rng.uniform(1.4, 2.0)
    if rng.random() < 0.7:
        bx, by = rng.uniform(0, w), h * rng.uniform(0.6, 0.8)
        c = BICYCLE if rng.random() < 0.6 else MOTORCYCLE
        paint(_ellipse(shape, by, bx, h * 0.03, w * 0.025), c, inst)
        inst += 1
    return cls, seg


def _smooth_noise(shape: tuple[int, ...], cell: int, rng: np.random.Generator) -> np.ndarray:
    """Blocky low-frequency noise (coarse normals upsampled by ``cell``) of the given shape."""
    h, w = shape[0], shape[1]
    coarse = rng.normal(size=(-(-h // cell), -(-w // cell), *shape[2:]))
    return np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:h, :w]


def _instance(
    node_costs: np.ndarray,
    edges: np.ndarray,
    edge_costs: np.ndarray,
    classes: np.ndarray,
    segments: np.ndarray,
) -> dict[str, Any]:
    """An instance as the benchmarks and tests take it; classes from ``NUM_STUFF`` on are things."""
    thing = np.zeros(NUM_CLASSES, bool)
    thing[NUM_STUFF:] = True
    return {
        "node_costs": node_costs.reshape(-1, NUM_CLASSES),
        "edges": edges,
        "edge_costs": edge_costs,
        "partitionable": thing,
        "classes": classes,
        "segments": segments,
    }


def make_instance(
    height: int,
    width: int,
    seed: int = 0,
    distances: Sequence[int] = DISTANCES,
    class_scale: float = 4.0,
    class_noise: float = 1.0,
    edge_margin: float = 2.0,
    edge_noise: float = 1.5,
) -> dict[str, Any]:
    """A benchmark instance on a ``height x width`` grid with its ground-truth panoptic map.

    Node costs are ``-log softmax(class_scale * onehot + noise)`` (pixel noise plus blocky
    low-frequency noise, so errors come in blobs). Edge costs are ``(+margin if same segment else
    -margin) + noise`` scaled by ``1 / (1 + log2 d)`` so long edges, which are many, weigh less.
    """
    rng = np.random.default_rng(seed)
    cls, seg = panoptic_scene(height, width, rng)
    logits = class_scale * np.eye(NUM_CLASSES)[cls]
    logits += class_noise * rng.normal(size=logits.shape)
    logits += class_noise * _smooth_noise(logits.shape, 8, rng)
    logits -= logits.max(axis=-1, keepdims=True)
    node_costs = -(logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True)))
    edges = grid_graph(height, width, distances)
    flat = seg.ravel()
    same = flat[edges[:, 0]] == flat[edges[:, 1]]
    scale = np.concatenate(
        [
            np.full(n, 1.0 / (1.0 + np.log2(d)))
            for d in distances
            for n in (max(height - d, 0) * width, height * max(width - d, 0))
        ]
    )
    edge_costs = (
        np.where(same, edge_margin, -edge_margin) + edge_noise * rng.normal(size=len(edges))
    ) * scale
    return _instance(node_costs, edges, edge_costs, cls, seg)


def noisy_instance(height: int, width: int, seed: int = 0, sigma: float = 1.5) -> dict[str, Any]:
    """An instance of the noisy family on the same street scenes: pixel noise only, unscaled edges.

    Node costs ``-log softmax(3 * onehot(class) + N(0, sigma^2))``, edge costs ``+-1 + N(0,
    sigma^2)`` (+1 where the scene says same segment). Much noisier than ``make_instance``, it
    leaves many small clusters after contraction, where local search has the most to do.
    """
    rng = np.random.default_rng(seed)
    cls, seg = panoptic_scene(height, width, rng)
    logits = 3.0 * np.eye(NUM_CLASSES)[cls] + sigma * rng.normal(size=(height, width, NUM_CLASSES))
    logits -= logits.max(axis=-1, keepdims=True)
    node_costs = -(logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True)))
    edges = grid_graph(height, width, DISTANCES)
    flat = seg.ravel()
    same = flat[edges[:, 0]] == flat[edges[:, 1]]
    edge_costs = np.where(same, 1.0, -1.0) + sigma * rng.normal(size=len(edges))
    return _instance(node_costs, edges, edge_costs, cls, seg)


def baseline_objective(node_costs: np.ndarray, edges: np.ndarray, edge_costs: np.ndarray) -> float:
    """Objective of the trivial solution: argmin classes, cut exactly between different classes."""
    lab = node_costs.argmin(axis=1)
    cut = lab[edges[:, 0]] != lab[edges[:, 1]]
    return float(node_costs.min(axis=1).sum() + edge_costs[cut].sum())


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

    ``family``: "street" (``make_instance``) or "noisy" (``noisy_instance``, once per σ in
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
                make_instance(h, w, seed=seed)
                if sigma is None
                else noisy_instance(h, w, seed, sigma)
            )
            base = {
                "family": family,
                "size": f"{h}x{w}",
                "nodes": h * w,
                "edges": len(inst["edges"]),
                "classes": NUM_CLASSES,
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


def random_tiny_instance(
    rng: np.random.Generator, height: int = 3, width: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random tiny AMWC instance: distances 1, 2; 4 classes of which 2 partitionable.

    Node costs ``-log softmax`` of N(0, 1.5^2) logits; edge costs N(0.5, 1) (mostly favouring
    joins, as within-segment pairs dominate in images; negative about 30 % of the time).
    """
    logits = rng.normal(0.0, 1.5, size=(height * width, 4))
    node_costs = -(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    edges = grid_graph(height, width, (1, 2))
    edge_costs = rng.normal(0.5, 1.0, size=len(edges))
    return node_costs, edges, edge_costs, np.array([False, False, True, True])


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
