"""`cops pretrain`: phase 1 of COPS, per-pixel semantic and boundary losses (DESIGN §4)."""

from __future__ import annotations

from cops.api.training import train
from cops.cli.options import training_command

pretrain = training_command(
    train,
    """Pretrain the network on per-pixel semantic and boundary losses (phase 1 of COPS).

    Writes OUT/last.pt (the newest checkpoint), metrics.jsonl, recipe.yaml and loss.png.

    Several machines: torchrun --nnodes N --nproc-per-node G ... -m cops.cli pretrain ...
    """,
)
