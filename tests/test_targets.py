"""Target generation on hand-made panoptic maps."""

from __future__ import annotations

import numpy as np
import pytest

from cops.datasets.targets import TargetConfig, make_targets, stride_indices


def _seg(seg_id: int, train_id: int, isthing: bool, area: int = 10_000, crowd: int = 0) -> dict:
    return {"id": seg_id, "train_id": train_id, "isthing": isthing, "iscrowd": crowd, "area": area}


def _reference_cuts(ids: np.ndarray, valid: np.ndarray, distances: list[int]):
    """Pixel-by-pixel loops over the edge layout, independent of the vectorised code."""
    h, w = ids.shape
    targets = np.zeros((2 * len(distances), h, w))
    weights = np.zeros_like(targets)
    for i, d in enumerate(distances):
        for y in range(h):
            for x in range(w):
                for channel, (y2, x2) in ((2 * i, (y + d, x)), (2 * i + 1, (y, x + d))):
                    if y2 < h and x2 < w:
                        targets[channel, y, x] = ids[y, x] != ids[y2, x2]
                        weights[channel, y, x] = valid[y, x] and valid[y2, x2]
    return targets, weights


def test_cut_between_two_halves() -> None:
    panoptic = np.array([[1, 1, 1, 2, 2, 2]] * 4)
    segments = [_seg(1, 0, False), _seg(2, 1, False)]
    out = make_targets(panoptic, segments, TargetConfig(edge_distances=(1, 2), stride=1))
    cuts, weights = out["cut_targets"], out["cut_weights"]
    assert cuts.shape == (4, 4, 6) and cuts.dtype == np.float32
    assert not cuts[0].any() and not cuts[2].any()
    np.testing.assert_array_equal(cuts[1], [[0, 0, 1, 0, 0, 0]] * 4)
    np.testing.assert_array_equal(cuts[3], [[0, 1, 1, 0, 0, 0]] * 4)
    np.testing.assert_array_equal(weights[0], [[1] * 6] * 3 + [[0] * 6])
    np.testing.assert_array_equal(weights[3], [[1, 1, 1, 1, 0, 0]] * 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_cuts_match_pixel_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    panoptic = np.repeat(np.repeat(rng.integers(0, 5, (5, 6)), 3, 0), 2, 1)[:13, :11]
    segments = [_seg(1, 0, True), _seg(2, 0, True), _seg(3, 2, False), _seg(4, 1, True, crowd=1)]
    distances = [1, 2, 3, 5, 20]
    out = make_targets(panoptic, segments, TargetConfig(edge_distances=distances, stride=1))
    valid = (panoptic != 0) & (panoptic != 4)
    targets, weights = _reference_cuts(panoptic, valid, distances)
    np.testing.assert_array_equal(out["cut_weights"], weights)
    np.testing.assert_array_equal(out["cut_targets"] * out["cut_weights"], targets * weights)
    assert not out["cut_weights"][-2:].any(), "d = 20 leaves the 13x11 grid"


def test_semantic_and_weights() -> None:
    panoptic = np.zeros((4, 4), dtype=np.int64)
    panoptic[0] = 10
    panoptic[1] = 11
    panoptic[2, :2] = 12
    panoptic[2, 2:] = 13
    segments = [
        _seg(10, 2, False),
        _seg(11, 0, True, area=100),
        _seg(12, 0, True, area=5000),
        _seg(13, 1, True, area=4, crowd=1),
    ]
    config = TargetConfig(
        edge_distances=(1,), stride=1, thing_weight=4, small_instance_weight=3, crowd_weight=0.5
    )
    out = make_targets(panoptic, segments, config)
    assert out["semantic"].dtype == np.int64 and out["weights"].dtype == np.float32
    np.testing.assert_array_equal(out["semantic"], [[2] * 4, [0] * 4, [0, 0, 1, 1], [255] * 4])
    np.testing.assert_array_equal(out["weights"], [[1] * 4, [12] * 4, [4, 4, 0.5, 0.5], [0] * 4])
    vertical = out["cut_weights"][0]
    np.testing.assert_array_equal(vertical, [[1] * 4, [1, 1, 0, 0], [0] * 4, [0] * 4])


def test_boundary_thing_weight() -> None:
    panoptic = np.array([[1, 1, 2, 2, 3, 3]])
    segments = [_seg(1, 0, False), _seg(2, 1, True), _seg(3, 1, True)]
    config = TargetConfig(edge_distances=(1,), stride=1, boundary_thing_weight=2.5)
    out = make_targets(panoptic, segments, config)
    np.testing.assert_array_equal(out["cut_weights"][1], [[1, 2.5, 2.5, 2.5, 2.5, 0]])
    np.testing.assert_array_equal(out["cut_targets"][1], [[0, 1, 0, 1, 0, 0]])


def test_stride_sampling_positions() -> None:
    np.testing.assert_array_equal(stride_indices(10, 4), [2, 6, 9])
    np.testing.assert_array_equal(stride_indices(8, 4), [2, 6])
    np.testing.assert_array_equal(stride_indices(1, 4), [0])
    panoptic = np.arange(1, 71).reshape(10, 7)
    segments = [_seg(i, i % 3, False) for i in range(1, 71)]
    out = make_targets(panoptic, segments, TargetConfig(edge_distances=(1, 2)))
    expected = panoptic[np.ix_([2, 6, 9], [2, 6])]
    np.testing.assert_array_equal(out["panoptic_s4"], expected)
    np.testing.assert_array_equal(out["semantic_s4"], expected % 3)
    assert out["cut_targets"].shape == (4, 3, 2)
    assert out["semantic"].shape == (10, 7)
    # Every stride-4 sample is a distinct segment: each in-grid edge is cut.
    np.testing.assert_array_equal(out["cut_targets"], out["cut_weights"])
    np.testing.assert_array_equal(out["cut_weights"][3], np.zeros((3, 2)))
    np.testing.assert_array_equal(out["cut_weights"][2], [[1, 1], [0, 0], [0, 0]])


def test_unknown_id_and_bad_config_raise() -> None:
    with pytest.raises(ValueError, match=r"\[5\]"):
        make_targets(np.array([[1, 5]]), [_seg(1, 0, False)])
    with pytest.raises(ValueError, match="no segments"):
        make_targets(np.array([[0, 5]]), [])
    with pytest.raises(ValueError, match="positive"):
        TargetConfig(edge_distances=(0, 1))
    with pytest.raises(ValueError, match="repeats"):
        TargetConfig(edge_distances=(1, 1))


def test_crowd_pixels_ignored_by_default() -> None:
    panoptic = np.array([[1, 1, 2, 2]], dtype=np.int64)
    segments = [_seg(1, 0, True, crowd=1), _seg(2, 1, False)]
    out = make_targets(panoptic, segments, TargetConfig(edge_distances=(1,), stride=1))
    np.testing.assert_array_equal(out["semantic"], [[0, 0, 1, 1]])  # class kept
    np.testing.assert_array_equal(out["weights"], [[0, 0, 1, 1]])  # but not supervised
    np.testing.assert_array_equal(out["cut_weights"][1], [[0, 0, 1, 0]])


def test_paper_pixel_weights() -> None:
    """The paper's weights: semantics weigh only small instances (×3); an edge weighs the larger
    of its end pixels' boundary weights (thing ×4, small instance ×3 on top, stuff 1)."""
    panoptic = np.array([[1, 1, 2, 2, 3, 3, 4]])
    segments = [
        _seg(1, 0, False),
        _seg(2, 1, True, area=10_000),
        _seg(3, 1, True, area=100),
        _seg(4, 1, True, crowd=1),
    ]
    config = TargetConfig(
        edge_distances=(1,),
        stride=1,
        thing_weight=4,
        small_instance_area=4096,
        small_instance_weight=3,
        semantic_thing_weighting=False,
        boundary_pixel_weights=True,
    )
    out = make_targets(panoptic, segments, config)
    np.testing.assert_array_equal(out["weights"], [[1, 1, 1, 1, 3, 3, 0]])
    # stuff-stuff 1, stuff-thing 4, thing-thing 4, big-small max(4, 12), small-small 12,
    # small-crowd 0 (crowd edges stay unsupervised), last column has no partner.
    np.testing.assert_array_equal(out["cut_weights"][1], [[1, 4, 4, 12, 12, 0, 0]])
    ours = make_targets(panoptic, segments, TargetConfig(edge_distances=(1,), stride=1))
    np.testing.assert_array_equal(ours["weights"], [[1, 1, 4, 4, 12, 12, 0]])
    np.testing.assert_array_equal(ours["cut_weights"][1], [[1, 1, 1, 1, 1, 0, 0]])
