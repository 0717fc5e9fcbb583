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
    shortest_edge_size,
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


def test_shortest_edge_size_is_detectron2s_rounding() -> None:
    assert shortest_edge_size(1024, 2048, 512, 4096) == (512, 1024)
    assert shortest_edge_size(1024, 2048, 2048, 4096) == (2048, 4096)
    assert shortest_edge_size(480, 640, 960, 960) == (720, 960)  # the long side caps the scale
    assert shortest_edge_size(333, 500, 448, 960) == (448, 673)  # int(672.67 + 0.5)


def test_paper_crop_clips_to_the_image_and_pads_bottom_right() -> None:
    """``data.crop: clip``: min(crop, image) at a random offset, then padding to the size
    divisibility at the bottom/right, where the boundary weight is 1 and the image meets it as
    a cut."""
    sample = _coded_sample(64, 96)
    targets = TargetConfig(edge_distances=(1,), boundary_pixel_weights=True, size_divisibility=64)
    transform = TrainTransform(
        (128, 80), flip=False, targets=targets, shortest_edges=[64], max_size=1000, clip_crop=True
    )
    out = transform(sample, np.random.default_rng(0))
    assert out["image"].shape == (3, 64, 128) and out["panoptic"].shape == (64, 128)
    inside = out["panoptic"][:, :80].numpy()
    assert (inside != 0).all() and (out["panoptic"][:, 80:] == 0).all()
    assert (out["image"][:, :, 80:] == 0).all()
    assert (out["weights"][:, 80:] == 0).all() and (out["semantic"][:, 80:] == 255).all()
    # Stride 4: columns 0..19 are image, 20..31 padding; the horizontal distance-1 edge 19-20
    # is a supervised cut, edges inside the padding are supervised joins.
    cuts, weights = out["cut_targets"][1], out["cut_weights"][1]
    assert (cuts[:, 19] == 1).all() and (weights[:, 19] > 0).all()
    assert (cuts[:, 20:31] == 0).all() and (weights[:, 20:31] == 1).all()
    # The window starts at a random column of the 96 wide image and keeps 80 of them.
    starts = [x for x in range(17) if np.array_equal(inside, sample["panoptic"][:, x : x + 80])]
    assert len(starts) == 1


def test_paper_scale_draws_a_shortest_edge_from_the_list() -> None:
    sample = _coded_sample(64, 96)
    transform = TrainTransform(
        (1000, 1000), flip=False, targets=TARGETS, shortest_edges=[32, 48], clip_crop=True
    )
    sizes = {tuple(transform(sample, np.random.default_rng(s))["panoptic"].shape) for s in range(8)}
    assert sizes == {(32, 48), (48, 72)}


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


def test_recipe_transforms_follow_the_phase() -> None:
    """coco-r50 pretrains on shorter sides 320…960 and fine-tunes on 448…768, both clipped and
    padded to 640; synthetic keeps our uniform scale and fixed-size crop."""
    import dataclasses

    from cops.recipes.schema import load_recipe
    from cops.training.finetune import FINETUNE
    from cops.training.loaders import train_transform

    coco = load_recipe("coco-r50")
    pretrain = train_transform(coco)
    assert pretrain.shortest_edges == list(range(320, 961, 64)) and pretrain.max_size == 960
    assert pretrain.clip_crop and pretrain.targets.size_divisibility == 640
    finetune = train_transform(dataclasses.replace(coco, train=FINETUNE.schedule(coco)))
    assert finetune.shortest_edges == list(range(448, 769, 64))
    ours = train_transform(load_recipe("synthetic"))
    assert ours.shortest_edges is None and not ours.clip_crop
    assert ours.targets.size_divisibility == 0
