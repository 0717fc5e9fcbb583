"""One segment rule for training and inference: the layer's segments (torch, batched) and the
post-processing's (numpy, one image) agree on random solver outputs and hand-made corner cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cops.inference.postprocess import postprocess, solver_segments
from cops.solver import grid_graph, segments_from_solution, solve_amwc_batch

H, W = 6, 7
DISTANCES = (1, 2)
THING = np.array([False, True, False, True, True])  # stuff and thing classes interleaved
CATEGORY_IDS = [7, 24, 11, 26, 27]


def _postprocess_segments(labels: np.ndarray, components: np.ndarray) -> tuple[list, list]:
    """Segment per node (0-based) and category per segment as `postprocess` outputs them, at
    stride 1 and no minimum area, so every solver segment survives and ids are 1..S in order."""
    pred = postprocess(
        labels,
        components,
        np.full((2 * len(DISTANCES), H, W), 0.5, np.float32),
        edge_distances=DISTANCES,
        isthing=THING.tolist(),
        category_ids=CATEGORY_IDS,
        thing_min_area=0,
        stuff_min_area=0,
        output_size=(H, W),
        stride=1,
    )
    assert (pred.ids > 0).all()
    return (pred.ids.ravel() - 1).tolist(), [s["category_id"] for s in pred.segments]


def _layer_segments(labels: np.ndarray, components: np.ndarray, b: int = 0) -> tuple[list, list]:
    """Segment per node and category per segment of image `b` as the training layer makes them."""
    segments, classes, counts = segments_from_solution(
        torch.from_numpy(labels), torch.from_numpy(components), torch.from_numpy(THING)
    )
    cats = [CATEGORY_IDS[c] for c in classes[b, : int(counts[b])].tolist()]
    return segments[b].tolist(), cats


def test_layer_and_postprocess_agree_on_random_solver_outputs():
    rng = np.random.default_rng(0)
    edges = grid_graph(H, W, DISTANCES)
    batch = 8
    node_costs = rng.normal(0.0, 1.0, (batch, H * W, THING.size))
    edge_costs = rng.normal(0.3, 1.0, (batch, len(edges)))
    res = solve_amwc_batch(node_costs, edges, edge_costs, THING, backend="cpu")
    labels, components = np.asarray(res.labels, np.int64), np.asarray(res.components, np.int64)
    thing_segments = 0
    for b in range(batch):
        layer = _layer_segments(labels, components, b)
        assert layer == _postprocess_segments(labels[b], components[b])
        thing_segments += sum(cat in (24, 26, 27) for cat in layer[1])
        # The solver's components carry one class each, so its thing components never span two
        # classes (the hand-made case below covers that input anyway).
        for comp in np.unique(components[b]):
            assert np.unique(labels[b][components[b] == comp]).size == 1
    assert thing_segments > batch  # the instances do split things into several components


def test_a_component_spanning_two_thing_classes_gives_one_segment_per_class():
    labels = np.zeros((1, H * W), np.int64)
    components = np.zeros((1, H * W), np.int64)
    labels[0, :10], components[0, :10] = 1, 5  # component 5: person and car
    labels[0, 10:14], components[0, 10:14] = 3, 5
    labels[0, 14:20], components[0, 14:20] = 3, 2  # another car component
    labels[0, 20:25], components[0, 20:25] = 2, 7  # stuff: components do not matter
    labels[0, 25:30], components[0, 25:30] = 2, 8
    segments, cats = _layer_segments(labels, components)
    assert (segments, cats) == _postprocess_segments(labels[0], components[0])
    # stuff classes 0 (7) and 2 (11) first, then (component, class): (2, car), (5, person), (5, car)
    assert cats == [7, 11, 26, 24, 26]
    assert segments[:10] == [3] * 10 and segments[10:14] == [4] * 4 and segments[14:20] == [2] * 6
    assert segments[20:30] == [1] * 10 and segments[30:] == [0] * (H * W - 30)


@pytest.mark.parametrize("seed", range(3))
def test_solver_segments_is_the_layer_rule_for_one_image(seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, THING.size, H * W)
    components = rng.integers(0, 4, H * W)
    segment, classes = solver_segments(labels, components, THING)
    layer_segments, layer_cats = _layer_segments(labels[None], components[None])
    assert segment.tolist() == layer_segments
    assert [CATEGORY_IDS[c] for c in classes] == layer_cats
