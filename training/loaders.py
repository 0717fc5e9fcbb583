"""Datasets and loaders of a recipe: augmented splits and sharded deterministic batches.

The images of every optimizer step are a pure function of (seed, iteration): epoch ``e`` visits
the training set in the order ``permutation(seed, e)``, step ``t`` of that epoch takes the next
``batch_size`` images (the global batch; an incomplete tail is dropped), and rank ``r`` of ``W``
takes the ``r``-th of ``W`` equal slices of it, split further into ``grad_accum`` micro-batches.
Augmentation is seeded per (seed, epoch, image) by the dataset. A resumed run, or one with another
number of processes, therefore sees exactly the same images, augmented the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, Subset

from cops.datasets.prepared import PanopticDataset
from cops.datasets.targets import TargetConfig
from cops.datasets.transforms import EvalTransform, TrainTransform, collate_panoptic
from cops.errors import DatasetError, RecipeError
from cops.recipes.schema import Recipe, TrainConfig
from cops.training.distributed import DistInfo

TRAIN_KEYS = (
    "image",
    "semantic",
    "weights",
    "semantic_s4",
    "weights_s4",
    "panoptic_s4",
    "cut_targets",
    "cut_weights",
)
"""Batch entries the training objectives need (per-pixel losses, PQ loss); the rest stays in the
workers."""


def target_config(recipe: Recipe, size_divisibility: int = 0) -> TargetConfig:
    """Stride-4 target settings from the recipe's model (edge distances) and loss sections;
    `size_divisibility` > 0 pads the targets bottom/right as the original's generator does."""
    return TargetConfig(
        edge_distances=tuple(recipe.model.edge_distances),
        stride=4,
        thing_weight=recipe.loss.thing_weight,
        small_instance_area=recipe.loss.small_instance_area,
        small_instance_weight=recipe.loss.small_instance_weight,
        crowd_weight=recipe.loss.crowd_weight,
        semantic_thing_weighting=recipe.loss.semantic_thing_weighting,
        boundary_pixel_weights=recipe.loss.boundary_weights == "pixel",
        small_instance_area_in=recipe.loss.small_instance_area_in,
        size_divisibility=size_divisibility,
    )


def train_transform(recipe: Recipe) -> TrainTransform:
    """The training augmentation of the recipe's phase (``recipe.train`` is the phase's
    schedule, whose ``shortest_edges`` replace ``data.shortest_edges`` when set)."""
    data = recipe.data
    clip = data.crop == "clip"
    shortest = recipe.train.shortest_edges or data.shortest_edges
    return TrainTransform(
        tuple(data.crop_size),
        tuple(data.scale_range),
        data.flip,
        target_config(recipe, recipe.model.size_divisibility if clip else 0),
        shortest_edges=shortest if data.scale == "shortest_edge" else None,
        max_size=data.max_size,
        clip_crop=clip,
    )


def open_datasets(recipe: Recipe) -> tuple[PanopticDataset, PanopticDataset | None]:
    """The augmented training split and (when validation is on) the plain validation split."""
    data, targets = recipe.data, target_config(recipe)
    train = PanopticDataset(Path(data.root), data.train_split, train_transform(recipe), recipe.seed)
    if recipe.train.val_every == 0:
        return train, None
    val = PanopticDataset(Path(data.root), data.val_split, EvalTransform(targets), seed=recipe.seed)
    if len(val) == 0:
        raise DatasetError(
            f"{val.paths.json}: the '{data.val_split}' split lists no images, and validation "
            "needs at least one; add images to it, or train without validation "
            "(train.val_every=0)"
        )
    if list(val.categories.category_ids) != list(train.categories.category_ids):
        raise DatasetError(
            f"{val.paths.json}: categories differ from those of {train.paths.json}; both splits "
            "must list the same categories in the same order"
        )
    return train, val


def epoch_permutation(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The visiting order of the training set in `epoch`."""
    return np.random.default_rng((seed, epoch)).permutation(num_items)


class RankBatchSampler(Sampler[list[int]]):
    """One rank's micro-batches for steps ``start..stop-1`` of one epoch (see module docstring)."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        micro_batch: int,
        dist: DistInfo,
        seed: int,
        epoch: int,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        self.num_items, self.batch_size, self.micro_batch = num_items, batch_size, micro_batch
        self.dist, self.seed, self.epoch = dist, seed, epoch
        self.start = start
        self.stop = num_items // batch_size if stop is None else stop
        self.per_rank = batch_size // dist.world_size

    def __len__(self) -> int:
        return (self.stop - self.start) * (self.per_rank // self.micro_batch)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_permutation(self.num_items, self.seed, self.epoch)
        first = self.dist.rank * self.per_rank
        for step in range(self.start, self.stop):
            shard = order[step * self.batch_size + first :][: self.per_rank]
            for i in range(0, self.per_rank, self.micro_batch):
                yield shard[i : i + self.micro_batch].tolist()


def collate_keys(batch: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """Collate samples (see :func:`collate_panoptic`) and keep only `keys`."""
    collated = collate_panoptic(batch)
    return {key: collated[key] for key in keys}


class TrainBatches:
    """The training stream: for each step from a start step, this rank's list of micro-batches."""

    def __init__(
        self,
        dataset: PanopticDataset,
        cfg: TrainConfig,
        dist: DistInfo,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        parts = dist.world_size * cfg.grad_accum
        if cfg.batch_size % parts:
            raise RecipeError(
                f"train.batch_size: {cfg.batch_size} images cannot be split evenly over "
                f"{dist.world_size} process(es) × train.grad_accum {cfg.grad_accum}; "
                f"use a multiple of {parts}"
            )
        self.steps_per_epoch = len(dataset) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise DatasetError(
                f"{dataset.paths.json}: {len(dataset)} training images, fewer than one batch "
                f"(train.batch_size {cfg.batch_size})"
            )
        self.dataset, self.dist, self.seed = dataset, dist, seed
        self.batch_size, self.grad_accum = cfg.batch_size, cfg.grad_accum
        self.micro_batch = cfg.batch_size // parts
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def _loader(self, epoch: int, start: int) -> DataLoader:
        sampler = RankBatchSampler(
            len(self.dataset), self.batch_size, self.micro_batch, self.dist, self.seed, epoch, start
        )
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=partial(collate_keys, keys=TRAIN_KEYS),
            pin_memory=self.pin_memory,
            # Worker seeds come from here, not from the global torch generator it would advance.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def from_step(self, start: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Yield ``(step, micro_batches)`` for ``step = start, start + 1, …`` without end."""
        step = start
        while True:
            epoch, first = divmod(step, self.steps_per_epoch)
            self.dataset.set_epoch(epoch)
            micro = iter(self._loader(epoch, first))
            for _ in range(first, self.steps_per_epoch):
                yield step, [next(micro) for _ in range(self.grad_accum)]
                step += 1


def val_loader(
    dataset: PanopticDataset,
    dist: DistInfo,
    max_images: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """This rank's share (every W-th image) of the first `max_images` validation images, one by one.

    Batches of one image make the validation loss a per-image mean, whatever the process count.
    """
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    return DataLoader(
        Subset(dataset, range(dist.rank, count, dist.world_size)),
        batch_size=1,
        num_workers=num_workers,
        collate_fn=partial(collate_keys, keys=TRAIN_KEYS),
        pin_memory=pin_memory,
    )
