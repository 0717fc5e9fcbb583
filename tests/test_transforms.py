"""Augmentation keeps image and labels aligned, is seeded, pads correctly; collate pads batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cops.datasets.targets import TargetConfig
from cops.datasets.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    collate_panoptic,
)

TARGETS = TargetConfig(edge_distances=(1, 4))


def _coded_sample(height: int = 64, width: int = 96, block: int = 8) -> dict:
    """Blocks of distinct segment ids whose pixels carry a colour that encodes the id."""
    rows, cols = np.indices((height, width))
    panoptic = (rows // block) * 100 + (cols // block) + 1
    colour = np.stack([(panoptic * 37) % 256, (panoptic * 91) % 256, (panoptic * 13) % 256], -1)
    segments = [
        {"id": int(i), "train_id": int(i) % 5, "isthing": bool(i % 2), "iscrowd": 0, "area": 64}
        for i in np.unique(panoptic)
    ]
    return {
        "image": colour.astype(np.uint8),
        "panoptic": panoptic.astype(np.int64),
        "segments": segments,
        "image_id": 3,
        "file_name": "coded.png",
    }


def _denormalise(image: torch.Tensor) -> np.ndarray:
    array = image.numpy().transpose(1, 2, 0)
    return array * np.asarray(IMAGENET_STD) * 255 + np.asarray(IMAGENET_MEAN) * 255


def _expected_colour(panoptic: np.ndarray) -> np.ndarray:
    return np.stack([(panoptic * 37) % 256, (panoptic * 91) % 256, (panoptic * 13) % 256], -1)


@pytest.mark.parametrize("seed", range(8))
def test_image_and_labels_stay_aligned(seed: int) -> None:
    transform = TrainTransform((48, 80), scale_range=(0.5, 2.0), flip=True, targets=TARGETS)
    out = transform(_coded_sample(), np.random.default_rng(seed))
    panoptic = out["panoptic"].numpy()
    assert out["image"].shape == (3, 48, 80) and panoptic.shape == (48, 80)
    image = _denormalise(out["image"])
    # Away from block borders (where bilinear blends neighbours) colour must encode the label.
    uniform = np.ones_like(panoptic, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(panoptic, (dy, dx), axis=(0, 1))
            uniform &= shifted == panoptic
    interior = uniform & (panoptic > 0)
    interior[[0, -1]] = False
    interior[:, [0, -1]] = False
    assert interior.sum() > 100
    np.testing.assert_allclose(image[interior], _expected_colour(panoptic)[interior], atol=1.5)
    np.testing.assert_array_equal(out["image"].numpy()[:, panoptic == 0], 0.0)


def test_flip_and_identity_are_exact() -> None:
    sample = _coded_sample()
    transform = TrainTransform((64, 96), scale_range=(1.0, 1.0), flip=True, targets=TARGETS)
    seen = set()
    for seed in range(10):
        out = transform(sample, np.random.default_rng(seed))
        panoptic, image = out["panoptic"].numpy(), _denormalise(out["image"])
        flipped = bool(np.array_equal(panoptic, sample["panoptic"][:, ::-1]))
        assert flipped or np.array_equal(panoptic, sample["panoptic"])
        source = sample["image"][:, ::-1] if flipped else sample["image"]
        np.testing.assert_allclose(image, source, atol=1e-3)
        seen.add(flipped)
    assert seen == {True, False}


def test_same_seed_same_output() -> None:
    transform = TrainTransform((40, 40), scale_range=(0.7, 1.6), targets=TARGETS)
    sample = _coded_sample()
    first = transform(sample, np.random.default_rng(5))
    again = transform(sample, np.random.default_rng(5))
    other = transform(sample, np.random.default_rng(6))
    for key in ("image", "panoptic", "semantic", "weights", "cut_targets", "cut_weights"):
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["panoptic"], other["panoptic"])


def test_crop_larger_than_image_pads() -> None:
    sample = _coded_sample(height=20, width=24)
    transform = TrainTransform((32, 40), scale_range=(1.0, 1.0), flip=False, targets=TARGETS)
    out = transform(sample, np.random.default_rng(0))
    panoptic = out["panoptic"].numpy()
    assert panoptic.shape == (32, 40)
    inside = panoptic > 0
    assert inside.sum() == 20 * 24
    ys, xs = np.nonzero(inside)
    window = panoptic[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    np.testing.assert_array_equal(window, sample["panoptic"])
    assert (out["semantic"].numpy()[~inside] == 255).all()
    assert (out["weights"].numpy()[~inside] == 0).all()
    assert (out["image"].numpy()[:, ~inside] == 0).all()
    void_s4 = out["panoptic_s4"].numpy() == 0
    assert void_s4.any() and (out["cut_weights"].numpy()[:, void_s4] == 0).all()


def test_crop_smaller_than_image() -> None:
    sample = _coded_sample()
    transform = TrainTransform((16, 24), scale_range=(1.0, 1.0), flip=False, targets=TARGETS)
    out = transform(sample, np.random.default_rng(3))
    panoptic = out["panoptic"].numpy()
    assert panoptic.shape == (16, 24) and (panoptic > 0).all()
    windows = [
        (y, x)
        for y in range(64 - 16 + 1)
        for x in range(96 - 24 + 1)
        if np.array_equal(sample["panoptic"][y : y + 16, x : x + 24], panoptic)
    ]
    assert len(windows) == 1
    assert out["semantic_s4"].shape == (4, 6) and out["cut_targets"].shape == (4, 4, 6)


def test_eval_transform() -> None:
    sample = _coded_sample(height=30, width=50)
    out = EvalTransform(targets=TARGETS)(sample)
    np.testing.assert_array_equal(out["panoptic"].numpy(), sample["panoptic"])
    np.testing.assert_allclose(_denormalise(out["image"]), sample["image"], atol=1e-3)
    assert out["orig_size"] == (30, 50) and out["semantic_s4"].shape == (8, 13)
    resized = EvalTransform(targets=TARGETS, short_side=15)(sample)
    assert resized["image"].shape == (3, 15, 25) and resized["orig_size"] == (30, 50)
    # Halving maps output pixel i to source pixel 2i + 1 (pixel centres 2i + 0.5 round up).
    np.testing.assert_array_equal(resized["panoptic"].numpy(), sample["panoptic"][1::2, 1::2])
    source = sample["image"].astype(float)
    blended = (
        source[0::2, 0::2] + source[0::2, 1::2] + source[1::2, 0::2] + source[1::2, 1::2]
    ) / 4
    np.testing.assert_allclose(_denormalise(resized["image"]), blended, atol=0.6)


def test_collate_pads_different_sizes() -> None:
    transform = EvalTransform(targets=TARGETS)
    small = transform(_coded_sample(height=20, width=30))
    large = transform(_coded_sample(height=37, width=41))
    batch = collate_panoptic([small, large])
    assert batch["image"].shape == (2, 3, 64, 64)
    assert batch["panoptic"].shape == (2, 64, 64) and batch["panoptic"].dtype == torch.int64
    assert batch["cut_targets"].shape == (2, 4, 16, 16)
    assert batch["semantic_s4"].shape == (2, 16, 16)
    assert batch["image_sizes"].tolist() == [[20, 30], [37, 41]]
    assert torch.equal(batch["semantic"][0, :20, :30], small["semantic"])
    assert (batch["semantic"][0, 20:] == 255).all() and (batch["semantic"][0, :, 30:] == 255).all()
    assert (batch["weights"][0, 20:] == 0).all() and (batch["panoptic"][0, :, 30:] == 0).all()
    assert (batch["image"][0, :, 20:] == 0).all()
    assert torch.equal(batch["cut_weights"][1, :, :10, :11], large["cut_weights"])
    assert (batch["cut_weights"][1, :, 10:] == 0).all()
    assert (batch["semantic_s4"][0, 5:] == 255).all()
    assert batch["file_name"] == ["coded.png", "coded.png"]
    assert isinstance(batch["segments"], list) and len(batch["segments"]) == 2
    assert batch["orig_size"] == [(20, 30), (37, 41)]
    assert collate_panoptic([small], size_divisibility=4)["image"].shape == (1, 3, 20, 32)
