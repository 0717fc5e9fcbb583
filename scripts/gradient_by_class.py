"""Which classes the fine-tuning gradient favours, on the ground-truth pixels of each class.

Runs the finetune-pq objective (CNN → AMWC → PQ surrogate, perturbation backward) on a few
training batches from a checkpoint and prints, for every ground-truth class (row), the mean
gradient of the loss w.r.t. the node cost of every class (column), × 1e3. A gradient step
lowers the costs where the entry is positive, so a positive diagonal means the step favours the
correct class; compare the rows' magnitudes to see which classes drive the update.

    python scripts/gradient_by_class.py runs/synthetic/last.pt --batches 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cops.benchmarks.finetune import finetune_setup
from cops.recipes.schema import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], help="recipe override")
    args = parser.parse_args()
    torch.manual_seed(0)
    recipe = load_recipe(args.recipe, [*args.set, "finetune.pixel_loss_weight=0"])
    setup = finetune_setup(recipe, args.checkpoint, torch.device("cpu"))
    model, names = setup.model, setup.classes.names
    forward, captured = model.forward, {}

    def keep_costs(image: torch.Tensor, costs: bool = False) -> dict[str, torch.Tensor]:
        out = forward(image, costs)
        out["node_costs"].retain_grad()
        captured["node_costs"] = out["node_costs"]
        return out

    model.forward = keep_costs
    stream = setup.batches.from_step(0)
    k = len(names)
    sums, counts = np.zeros((k, k)), np.zeros(k)
    for _ in range(args.batches):
        _, (batch,) = next(stream)
        loss, _ = setup.objective(model, batch)
        loss.backward()
        grad = captured["node_costs"].grad  # [B, N, K]
        semantic = batch["semantic_s4"].flatten(1)
        for c in range(k):
            pixels = semantic == c
            sums[c] += grad[pixels].sum(0).numpy()
            counts[c] += int(pixels.sum())
        model.zero_grad(set_to_none=True)
    print("gt \\ cost of " + " ".join(f"{n[:8]:>8}" for n in names))
    for c in range(k):
        if counts[c]:
            row = sums[c] / counts[c] * 1e3
            print(f"{names[c][:12]:>12} " + " ".join(f"{v:8.3f}" for v in row))


if __name__ == "__main__":
    main()
