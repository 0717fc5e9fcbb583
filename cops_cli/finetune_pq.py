"""`cops finetune-pq`: phase 2 of COPS, end-to-end training through the AMWC solver (DESIGN §6)."""

from __future__ import annotations

from cops.api.training import finetune
from cops.cli.options import training_command

finetune_pq = training_command(
    finetune,
    """Fine-tune end to end on the smooth PQ loss, differentiating through the AMWC solver.

    Starts from --weights (a pretrain checkpoint) with BatchNorm frozen and the cost scalars
    learnable; the recipe's finetune and solver sections set the schedule, PQ-loss weight,
    cost dropout and the perturbation (lambda range, samples). Writes OUT/last.pt,
    metrics.jsonl (PQ surrogate, training PQ, solver seconds), recipe.yaml and loss.png.

    Several machines: torchrun --nnodes N --nproc-per-node G ... -m cops.cli finetune-pq ...
    """,
)
