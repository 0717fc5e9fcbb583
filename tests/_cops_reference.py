"""The reference fixture of the original COPS network (tests/data/cops_reference): its synthetic
weights, regenerated from the key list by the rules the fixture documents, and its files."""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).parent / "data" / "cops_reference"
PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)


def key_entries(dataset: str) -> list[dict]:
    """The state-dict entries (key, shape, dtype …) of the original network for a dataset."""
    return json.loads((DATA / f"state_dict_keys_{dataset}.json").read_text())["state_dict"]


def _draw(key: str, shape: tuple[int, ...], keys: set[str], seed: int) -> np.ndarray:
    """float64 values of one float entry: each key has its own generator (order-independent)."""
    rng = np.random.RandomState((seed * 1_000_003 + zlib.crc32(key.encode("utf-8"))) % 2**32)
    normal = rng.standard_normal
    stem = key.rsplit(".", 1)[0]
    if key == "pixel_mean":
        return np.array(PIXEL_MEAN).reshape(shape)
    if key == "pixel_std":
        return np.array(PIXEL_STD).reshape(shape)
    if key.endswith(".running_mean"):
        return 0.1 * normal(shape)
    if key.endswith(".running_var"):
        return rng.uniform(0.5, 1.5, shape)
    if key.endswith(".weight") and f"{stem}.running_var" in keys:
        return 1.0 + 0.1 * normal(shape)
    if key.endswith(".bias"):
        return 0.1 * normal(shape)
    if key == "amwc_layer.seg_cost_weights.0":
        return 1.0 + 0.1 * normal(shape)
    if key.startswith("amwc_layer.edge_costs_weights."):
        index = int(key.rsplit(".", 1)[1])
        if index % 2 == 0:
            return (-1.0) ** (index // 2) * (1.0 + 0.1 * normal(shape))
        return 0.1 * normal(shape)
    if key == "amwc_layer.seg_cost_weights.1":
        return 0.1 * normal(shape)
    if len(shape) >= 2:
        return normal(shape) * 1.2 / math.sqrt(math.prod(shape[1:]))
    return 0.02 * normal(shape)


def original_state_dict(dataset: str = "cityscapes", seed: int = 0) -> OrderedDict:
    """The fixture's synthetic weights for the original network's key list (seed 0 by default)."""
    entries = key_entries(dataset)
    keys = {e["key"] for e in entries}
    state = OrderedDict()
    for entry in entries:
        shape = tuple(int(s) for s in entry["shape"])
        if entry["dtype"].startswith("torch.float"):
            values = _draw(entry["key"], shape, keys, seed).astype(np.float32)
            state[entry["key"]] = torch.from_numpy(np.ascontiguousarray(values))
        else:
            state[entry["key"]] = torch.zeros(shape, dtype=torch.int64)
    return state


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the keys in sorted order, each key's UTF-8 bytes then its raw tensor bytes."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode("utf-8"))
        digest.update(state[key].numpy().tobytes())
    return digest.hexdigest()


def save_as_original_checkpoint(state: dict[str, torch.Tensor], path: Path) -> Path:
    """Save weights as detectron2's trainer saves a checkpoint: model beside trainer state."""
    torch.save(
        {
            "model": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.0001, "params": [0, 1]}]},
            "scheduler": {"base_lrs": [0.0001], "last_epoch": 89999},
            "iteration": 89999,
        },
        path,
    )
    return path
