"""`cops pretrain`: phase 1 of COPS, per-pixel semantic and boundary losses (DESIGN §4).

Wiring only: the options go to :func:`cops.training.run.train_phase` with the pretraining phase.
"""

from __future__ import annotations

from cops.cli.options import (
    DataOpt,
    DeviceOpt,
    NprocOpt,
    OutOpt,
    RecipeOpt,
    ReinitHeadOpt,
    ResumeOpt,
    SeedOpt,
    SetOpt,
    WeightsOpt,
)
from cops.training.pretrain import PRETRAIN
from cops.training.run import train_phase


def pretrain(
    recipe: RecipeOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
    overrides: SetOpt = None,
    device: DeviceOpt = "auto",
    nproc: NprocOpt = "1",
    resume: ResumeOpt = False,
    seed: SeedOpt = None,
    weights: WeightsOpt = None,
    reinit_head: ReinitHeadOpt = False,
) -> None:
    """Pretrain the network on per-pixel semantic and boundary losses (phase 1 of COPS).

    Writes OUT/last.pt (the newest checkpoint), metrics.jsonl, recipe.yaml and loss.png.

    Several machines: torchrun --nnodes N --nproc-per-node G ... -m cops.cli pretrain ...
    """
    train_phase(PRETRAIN, **locals())  # the options under their resolve_run names
