"""`cops finetune-pq`: phase 2 of COPS, end-to-end training through the AMWC solver (DESIGN §6).

Wiring only: the options go to :func:`cops.training.run.train_phase` with the fine-tuning phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cops.cli.options import (
    DataOpt,
    DeviceOpt,
    NprocOpt,
    RecipeOpt,
    ReinitHeadOpt,
    ResumeOpt,
    SeedOpt,
    SetOpt,
    WeightsOpt,
)
from cops.errors import CopsError
from cops.training.finetune import FINETUNE
from cops.training.run import train_phase

FinetuneOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Run folder for checkpoints and logs (default: runs/RECIPE-ft)."
    ),
]


def finetune_pq(
    recipe: RecipeOpt = None,
    weights: WeightsOpt = None,
    data: DataOpt = None,
    out: FinetuneOutOpt = None,
    overrides: SetOpt = None,
    device: DeviceOpt = "auto",
    nproc: NprocOpt = "1",
    resume: ResumeOpt = False,
    seed: SeedOpt = None,
    reinit_head: ReinitHeadOpt = False,
) -> None:
    """Fine-tune end to end on the smooth PQ loss, differentiating through the AMWC solver.

    Starts from --weights (a pretrain checkpoint) with BatchNorm frozen and the cost scalars
    learnable; the recipe's finetune and solver sections set the schedule, PQ-loss weight,
    cost dropout and the perturbation (lambda range, samples). Writes OUT/last.pt,
    metrics.jsonl (PQ surrogate, training PQ, solver seconds), recipe.yaml and loss.png.

    Several machines: torchrun --nnodes N --nproc-per-node G ... -m cops.cli finetune-pq ...
    """
    if weights is None and not resume:
        raise CopsError(
            "--weights: fine-tuning starts from a pretrained checkpoint (cops pretrain ...); "
            "pass --weights runs/NAME/last.pt, or --resume to continue a fine-tuning run"
        )
    train_phase(FINETUNE, out_suffix="-ft", **locals())  # the options under their resolve_run names
