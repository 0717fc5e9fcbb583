"""AMWC instances for the solver's tests and benchmark, built on the synthetic street scenes.

A scene of :mod:`cops.datasets.street_scene` is painted directly at the grid size; its classes are
the synthetic dataset's (in :data:`SYNTHETIC_CATEGORIES` order, things partitionable) plus one
stuff label for its void pixels (poles, the ego-vehicle hood, remnants of occluded things), since
the solver labels every node. Noisy costs around that ground truth make the instance: the
"street" family (blob noise, distance-scaled edges) and the noisier "noisy" family. Random tiny
instances, small enough for the exact solver, complete the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cops.datasets.street_scene import SYNTHETIC_CATEGORIES, render_scene
from cops.solver.graph import grid_graph

DISTANCES = (1, 4, 16, 32, 64)
"""The Cityscapes recipe's edge distances."""


def scene_labels(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A street scene as solver ground truth: class [H, W], segment id [H, W], thing flag [K].

    Classes index :data:`SYNTHETIC_CATEGORIES`; the last class (K - 1) is the void pixels', a
    stuff label. Segment ids are the panoptic ids (one per stuff class, one per thing; void 0).
    """
    scene = render_scene(seed, height, width)
    index = {c.id: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}
    void = len(SYNTHETIC_CATEGORIES)
    class_of = {s["id"]: index[s["category_id"]] for s in scene.segments}
    ids = scene.ids
    present, inverse = np.unique(ids, return_inverse=True)
    lut = np.array([class_of.get(int(i), void) for i in present], np.int64)
    thing = np.array([c.isthing for c in SYNTHETIC_CATEGORIES] + [False])
    return lut[inverse].reshape(ids.shape), ids, thing


def _smooth_noise(shape: tuple[int, ...], cell: int, rng: np.random.Generator) -> np.ndarray:
    """Blocky low-frequency noise (coarse normals upsampled by ``cell``) of the given shape."""
    h, w = shape[0], shape[1]
    coarse = rng.normal(size=(-(-h // cell), -(-w // cell), *shape[2:]))
    return np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)[:h, :w]


def _softmax_costs(logits: np.ndarray) -> np.ndarray:
    """``-log softmax`` over the last axis, flattened to [nodes, classes]."""
    logits = logits - logits.max(axis=-1, keepdims=True)
    costs = -(logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True)))
    return costs.reshape(-1, logits.shape[-1])


def _instance(
    node_costs: np.ndarray,
    edges: np.ndarray,
    edge_costs: np.ndarray,
    thing: np.ndarray,
    classes: np.ndarray,
    segments: np.ndarray,
) -> dict[str, Any]:
    """An instance as the benchmark and tests take it, with its ground truth."""
    return {
        "node_costs": node_costs,
        "edges": edges,
        "edge_costs": edge_costs,
        "partitionable": thing,
        "classes": classes,
        "segments": segments,
    }


def street_instance(
    height: int,
    width: int,
    seed: int = 0,
    distances: Sequence[int] = DISTANCES,
    class_scale: float = 4.0,
    class_noise: float = 1.0,
    edge_margin: float = 2.0,
    edge_noise: float = 1.5,
) -> dict[str, Any]:
    """An instance on a ``height x width`` street scene, with its ground-truth panoptic map.

    Node costs are ``-log softmax(class_scale * onehot + noise)`` (pixel noise plus blocky
    low-frequency noise, so errors come in blobs). Edge costs are ``(+margin if same segment else
    -margin) + noise`` scaled by ``1 / (1 + log2 d)`` so long edges, which are many, weigh less.
    """
    cls, seg, thing = scene_labels(height, width, seed)
    rng = np.random.default_rng([seed, 1])
    logits = class_scale * np.eye(thing.size)[cls]
    logits += class_noise * rng.normal(size=logits.shape)
    logits += class_noise * _smooth_noise(logits.shape, 8, rng)
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
    return _instance(_softmax_costs(logits), edges, edge_costs, thing, cls, seg)


def noisy_instance(height: int, width: int, seed: int = 0, sigma: float = 1.5) -> dict[str, Any]:
    """An instance of the noisy family on the same street scenes: pixel noise only, unscaled edges.

    Node costs ``-log softmax(3 * onehot(class) + N(0, sigma^2))``, edge costs ``+-1 + N(0,
    sigma^2)`` (+1 where the scene says same segment). Much noisier than ``street_instance``, it
    leaves many small clusters after contraction, where local search has the most to do.
    """
    cls, seg, thing = scene_labels(height, width, seed)
    rng = np.random.default_rng([seed, 1])
    logits = 3.0 * np.eye(thing.size)[cls] + sigma * rng.normal(size=(height, width, thing.size))
    edges = grid_graph(height, width, DISTANCES)
    flat = seg.ravel()
    same = flat[edges[:, 0]] == flat[edges[:, 1]]
    edge_costs = np.where(same, 1.0, -1.0) + sigma * rng.normal(size=len(edges))
    return _instance(_softmax_costs(logits), edges, edge_costs, thing, cls, seg)


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


def baseline_objective(node_costs: np.ndarray, edges: np.ndarray, edge_costs: np.ndarray) -> float:
    """Objective of the trivial solution: argmin classes, cut exactly between different classes."""
    lab = node_costs.argmin(axis=1)
    cut = lab[edges[:, 0]] != lab[edges[:, 1]]
    return float(node_costs.min(axis=1).sum() + edge_costs[cut].sum())
