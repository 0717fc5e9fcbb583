"""Grid graphs and the edge-order contract shared with dataset targets and the boundary head."""

import numpy as np
import pytest
import torch

from cops.solver import edge_costs_to_maps, edge_maps_to_costs, grid_graph, num_grid_edges


def _reference_edges(h, w, distances):
    """Edges listed the slow, obvious way: channel by channel, row-major over the source pixel."""
    out = []
    for d in distances:
        for y in range(h):
            for x in range(w):
                if y + d < h:
                    out.append((y * w + x, (y + d) * w + x))
        for y in range(h):
            for x in range(w):
                if x + d < w:
                    out.append((y * w + x, y * w + x + d))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


@pytest.mark.parametrize(
    ("h", "w", "distances"),
    [(5, 7, [1, 3, 6]), (1, 1, [1]), (4, 3, [2, 5]), (64, 128, [1, 4, 16, 32, 64])],
)
def test_grid_graph_matches_reference_order(h, w, distances):
    edges = grid_graph(h, w, distances)
    assert edges.dtype == np.int64
    assert edges.shape == (num_grid_edges(h, w, distances), 2)
    np.testing.assert_array_equal(edges, _reference_edges(h, w, distances))


def test_cityscapes_stride4_edge_count():
    # 256 x 512 nodes with distances 1, 4, 16, 32, 64: the ~1.2 M edges quoted in the design.
    n = num_grid_edges(256, 512, [1, 4, 16, 32, 64])
    assert n == sum((256 - d) * 512 + 256 * (512 - d) for d in [1, 4, 16, 32, 64]) == 1220864


def test_edge_maps_to_costs_contract():
    """``edge_maps_to_costs(m)[j]`` is the value the boundary map holds for ``grid_graph()[j]``."""
    h, w, distances = 6, 9, [1, 2, 4]
    edges = grid_graph(h, w, distances)
    # Encode (channel, y, x) in each map entry, then decode it per edge.
    c, y, x = np.meshgrid(np.arange(2 * len(distances)), np.arange(h), np.arange(w), indexing="ij")
    maps = (c * 10000 + y * 100 + x).astype(np.float64)
    costs = edge_maps_to_costs(maps, distances)
    assert costs.shape == (len(edges),)
    ch, sy, sx = costs // 10000, (costs // 100) % 100, costs % 100
    d = np.array(distances)[(ch // 2).astype(int)]
    vertical = ch % 2 == 0
    np.testing.assert_array_equal(edges[:, 0], sy * w + sx)
    end = np.where(vertical, (sy + d) * w + sx, sy * w + sx + d)
    np.testing.assert_array_equal(edges[:, 1], end)


def test_edge_maps_batched_torch_and_round_trip():
    h, w, distances = 5, 8, [1, 3]
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 3, 2 * len(distances), h, w))
    costs = edge_maps_to_costs(maps, distances)
    assert costs.shape == (2, 3, num_grid_edges(h, w, distances))
    t = edge_maps_to_costs(torch.from_numpy(maps), distances)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), costs)
    back = edge_costs_to_maps(costs, distances, h, w, fill=-7.0)
    valid = np.zeros((2 * len(distances), h, w), bool)
    for i, d in enumerate(distances):
        valid[2 * i, : h - d, :] = True
        valid[2 * i + 1, :, : w - d] = True
    np.testing.assert_array_equal(back[..., valid], maps[..., valid])
    assert (back[..., ~valid] == -7.0).all()
    tback = edge_costs_to_maps(torch.from_numpy(costs), distances, h, w, fill=-7.0)
    np.testing.assert_array_equal(tback.numpy(), back)


def test_distance_larger_than_image_gives_no_edges():
    assert grid_graph(3, 10, [5]).tolist() == _reference_edges(3, 10, [5]).tolist()
    assert num_grid_edges(3, 3, [4]) == 0
    assert edge_maps_to_costs(np.zeros((2, 3, 3)), [4]).shape == (0,)


@pytest.mark.parametrize("bad", [[0], [-1], [1, 1], [1.5], ["a"]])
def test_bad_distances(bad):
    with pytest.raises(ValueError, match="distances"):
        grid_graph(4, 4, bad)


def test_bad_maps_and_costs_shapes():
    with pytest.raises(ValueError, match="maps"):
        edge_maps_to_costs(np.zeros((3, 4, 4)), [1, 2])
    with pytest.raises(ValueError, match="costs"):
        edge_costs_to_maps(np.zeros(5), [1], 4, 4)
    with pytest.raises(ValueError, match="height"):
        grid_graph(-1, 4, [1])
