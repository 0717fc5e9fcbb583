"""The training loop every training command shares: one optimizer step per iteration.

Each step runs the objective on this rank's micro-batches (mixed precision on CUDA, gradient
accumulation, DDP gradient averaging), checks that the loss is finite on every rank, then steps
the optimizer and the warm-up/poly schedule. Rank 0 logs to ``OUT/metrics.jsonl`` (and TensorBoard
when installed), drives the progress bar and writes checkpoints; validation loss is averaged over
all ranks. Resuming restores everything that influences later steps, so on CPU a resumed run ends
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.progress import Progress, TaskID, TextColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from cops.console import counts_table, make_progress, print_table
from cops.datasets.class_list import ClassList
from cops.errors import CopsError
from cops.models.checkpoint import Checkpoint
from cops.recipes.schema import TrainConfig
from cops.training import distributed
from cops.training.checkpoint import LAST, rng_state, save_checkpoint, set_rng_state
from cops.training.distributed import DistInfo
from cops.training.schedule import build_scheduler

log = logging.getLogger(__name__)


class BatchStream(Protocol):
    """Where training batches come from (:class:`~cops.training.loaders.TrainBatches` in runs)."""

    def from_step(self, start: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Yield ``(step, this rank's micro-batches)`` for ``step = start, start + 1, …``."""
        ...


Objective = Callable[[nn.Module, dict[str, Any]], tuple[Tensor, dict[str, Tensor]]]
"""``objective(model, batch) -> (loss, components)``: the loss of one micro-batch and its named,
detached parts (for logging). Called under autocast, with the DDP-wrapped model in training."""

METRICS = "metrics.jsonl"


class NonFiniteLossError(CopsError):
    """The loss became NaN or infinite; training stopped before applying the update."""


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def parameter_digest(model: nn.Module) -> str:
    """A short hash of all parameter values, to prove that DDP replicas hold the same weights."""
    digest = hashlib.blake2b(digest_size=8)
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class RunContext:
    """Where and how a training run happens, and what its checkpoints must carry."""

    out: Path
    device: torch.device
    dist: DistInfo
    recipe: dict[str, Any]
    classes: ClassList
    phase: str = "pretrain"
    sync_bn: bool = False


@dataclass
class FitResult:
    """What a finished (or already complete) run reports."""

    iterations: int
    start_iteration: int
    seconds: float
    images_per_s: float | None
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    checkpoint: Path | None


def _matches(pattern: str, name: str) -> bool:
    """Whether dotted parameter `name` lies at or below `pattern` (``*`` = any one component)."""
    want, have = pattern.split("."), name.split(".")
    return len(have) >= len(want) and all(w in ("*", h) for w, h in zip(want, have, strict=False))


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Freeze ``cfg.frozen`` and sort the other trainable parameters into ``cfg.param_groups``.

    Frozen parameters get ``requires_grad = False``, so no gradient is even computed for them
    (the paper's fine-tuning freezes the backbone and decoders). Each remaining parameter joins
    the first group with a matching pattern and trains at ``lr_scale · lr``; unmatched ones form
    the group ``other`` at ``lr``. Empty groups are left out. Returns the optimizer's param-group
    dicts (``name``, ``params``, ``lr``); a pattern that matches nothing is a recipe error, so a
    renamed module cannot silently fall back to the full rate.
    """
    named = list(model.named_parameters())
    for pattern in [*cfg.frozen, *(m for g in cfg.param_groups for m in g.modules)]:
        if not any(_matches(pattern, name) for name, _ in named):
            raise CopsError(f"parameter pattern '{pattern}' matches no parameter of the model")
    for name, param in named:
        if any(_matches(pattern, name) for pattern in cfg.frozen):
            param.requires_grad_(False)
    groups: dict[str, dict[str, Any]] = {}
    for name, param in named:
        if not param.requires_grad:
            continue
        spec = next(
            (g for g in cfg.param_groups if any(_matches(m, name) for m in g.modules)), None
        )
        key, scale = (spec.name, spec.lr_scale) if spec is not None else ("other", 1.0)
        group = groups.setdefault(key, {"name": key, "params": [], "lr": cfg.lr * scale})
        group["params"].append(param)
    return list(groups.values())


def describe_groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """What trains at which rate: one row per optimizer group, plus one for frozen parameters."""
    rows = [
        {
            "name": group.get("name", f"group{i}"),
            "lr": group["initial_lr"] if "initial_lr" in group else group["lr"],
            "parameters": sum(p.numel() for p in group["params"]),
        }
        for i, group in enumerate(optimizer.param_groups)
    ]
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if frozen:
        rows.append({"name": "frozen", "lr": 0.0, "parameters": frozen})
    return rows


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD (with momentum) over the :func:`parameter_groups` of the recipe's ``train``."""
    groups = parameter_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _to_device(
    batch: dict[str, Any], device: torch.device, channels_last: bool = False
) -> dict[str, Any]:
    moved = {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


def use_channels_last(setting: str | bool, device: torch.device) -> bool:
    """Whether ``train.channels_last`` (true, false or ``auto``: CUDA only) holds on `device`."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class MetricsLog:
    """Rank 0's metrics file, one JSON object per line, mirrored to TensorBoard when installed.

    On resume, entries after the checkpoint's iteration (written by the interrupted run after its
    last checkpoint) are dropped, so the file reads as one uninterrupted run.
    """

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        kept: list[str] = []
        if keep_until is not None and path.is_file():
            for line in path.read_text("utf-8").splitlines():
                try:
                    if json.loads(line)["iteration"] <= keep_until:
                        kept.append(line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by the interruption
        path.write_text("".join(kept), "utf-8")
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            pass
        else:
            self._tensorboard = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, entry: dict[str, Any]) -> None:
        """Append one entry (``kind`` and ``iteration`` keys included) and flush it."""
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in entry.items():
                if key not in ("kind", "iteration") and isinstance(value, int | float):
                    tag = f"{entry['kind']}/{key}"
                    self._tensorboard.add_scalar(tag, value, entry["iteration"])

    def close(self) -> None:
        """Close the file (and the TensorBoard writer)."""
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


@dataclass
class _Window:
    """Running sums of the steps since the last log entry."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0

    def add(self, stats: dict[str, float], seconds: float) -> None:
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1
        self.seconds += seconds

    def means(self) -> dict[str, float]:
        return {key: value / self.steps for key, value in self.sums.items()}


@dataclass
class _FitRun:
    """What one ``Trainer.fit`` call carries from step to step."""

    result: FitResult
    metrics: MetricsLog | None
    progress: Progress | None = None
    task: TaskID | None = None
    window: _Window = field(default_factory=_Window)
    val_history: list[float] = field(default_factory=list)
    began: float = 0.0
    train_seconds: float = 0.0
    timed_images: int = 0


class Trainer:
    """Owns the model, optimizer, schedule, AMP scaler and loaders of one run; ``fit()`` trains.

    `model` is the plain network on any device; the trainer moves it to ``ctx.device``, converts
    BN to SyncBatchNorm when asked (DDP on CUDA), restores `resume` (a loaded checkpoint), then
    wraps it in DDP (several processes) and ``torch.compile`` (``train.compile``).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        cfg: TrainConfig,
        batches: BatchStream,
        val: DataLoader | None,
        ctx: RunContext,
        resume: Checkpoint | None = None,
    ) -> None:
        self.cfg, self.ctx, self.objective = cfg, ctx, objective
        self.batches, self.val = batches, val
        self.device, self.dist = ctx.device, ctx.dist
        ddp = self.dist.world_size > 1
        if ddp and ctx.sync_bn:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log.warning("model.sync_bn needs CUDA; CPU processes keep per-process BatchNorm")
        self.channels_last = use_channels_last(cfg.channels_last, self.device)
        model = model.to(self.device)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        if val is not None and len(val) == 0:
            raise CopsError(
                "validation needs at least one image per process; raise train.val_images or "
                "set train.val_every=0"
            )
        self.optimizer = build_optimizer(self.model, cfg)
        self.groups = describe_groups(self.model, self.optimizer)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.iterations, cfg.warmup_iters, cfg.poly_power, cfg.warmup_factor
        )
        self.amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = torch.float16 if cfg.amp_dtype == "float16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp and self.amp_dtype == torch.float16
        )
        self.start = 0
        self.last_saved: int | None = None
        if resume is not None:
            self._restore(resume)
        self.ddp = (
            DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if ddp
            else None
        )
        net: nn.Module = self.ddp if self.ddp is not None else self.model
        self.net = torch.compile(net) if cfg.compile else net

    def _restore(self, ckpt: Checkpoint) -> None:
        """Load weights, optimizer, schedule, scaler, RNG states and the step count."""
        state = ckpt.training
        self.model.load_state_dict(ckpt.weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        states = state.get("rng", [])
        if len(states) == self.dist.world_size:
            set_rng_state(states[self.dist.rank])
        else:
            log.warning(
                "checkpoint holds RNG states of %d process(es), this run has %d; generators "
                "keep their seeded state (data order and augmentation are unaffected)",
                len(states),
                self.dist.world_size,
            )
        self.start = self.last_saved = int(ckpt.iteration)

    # -- one optimizer step ---------------------------------------------------------------------

    def _train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """Forward/backward every micro-batch, average the loss over ranks, check it, update."""
        self.optimizer.zero_grad(set_to_none=True)
        count = len(micro_batches)
        sums: Tensor | None = None
        names: list[str] = []
        for index, batch in enumerate(micro_batches):
            batch = _to_device(batch, self.device, self.channels_last)
            # DDP averages gradients over ranks once, in the backward of the last micro-batch.
            sync = self.ddp.no_sync() if self.ddp and index < count - 1 else nullcontext()
            with sync:
                with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp):
                    loss, parts = self.objective(self.net, batch)
                self.scaler.scale(loss / count).backward()
            names = ["loss", *parts]
            parts = {name: part.detach().float() for name, part in parts.items()}
            values = torch.stack([loss.detach().float(), *parts.values()])
            sums = values / count if sums is None else sums + values / count
        assert sums is not None
        means = (distributed.all_reduce_sum(sums) / self.dist.world_size).tolist()
        stats = dict(zip(names, means, strict=True))
        first = self.optimizer.param_groups[0]  # the base lr now: lr × the schedule's factor
        stats["lr"] = self.cfg.lr * first["lr"] / first.get("initial_lr", first["lr"])
        if not all(math.isfinite(v) for v in means):
            raise self._non_finite(stats)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return stats

    def _non_finite(self, stats: dict[str, float]) -> NonFiniteLossError:
        iteration = self.scheduler.last_epoch + 1
        values = ", ".join(f"{k} {v:.4g}" for k, v in stats.items())
        if self.last_saved is None:
            kept = "no checkpoint had been written yet"
        else:
            kept = f"{self.ctx.out / LAST} keeps the last good state (iteration {self.last_saved})"
        return NonFiniteLossError(
            f"non-finite loss at iteration {iteration} ({values}); training stopped before that "
            f"update and {kept}. Lower train.lr or check the data, then continue with --resume."
        )

    # -- validation and checkpoints ---------------------------------------------------------------

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """Mean per-image validation loss (and parts) over all ranks' shares of the val split."""
        assert self.val is not None
        model = self.model
        training = model.training
        model.eval()
        sums: Tensor | None = None
        names: list[str] = []
        for batch in self.val:
            with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp):
                loss, parts = self.objective(
                    model, _to_device(batch, self.device, self.channels_last)
                )
            names = ["loss", *parts]
            values = torch.stack([loss.float(), *(p.float() for p in parts.values())])
            sums = values if sums is None else sums + values
        model.train(training)
        assert sums is not None
        images = len(self.val)
        totals = distributed.all_reduce_sum(
            torch.cat([sums, torch.tensor([float(images)], device=sums.device)])
        ).tolist()
        means = {name: total / totals[-1] for name, total in zip(names, totals, strict=False)}
        return {**means, "images": int(totals[-1])}

    def _save(self, iteration: int, metrics: dict[str, float | None]) -> list[str]:
        """Checkpoint the current state (collective: all ranks' RNG states, replica check).

        Returns every rank's parameter digest (empty in a single process); DDP must keep them equal.
        """
        rng = distributed.all_gather_object(rng_state())
        digests: list[str] = []
        if self.dist.world_size > 1:
            digests = distributed.all_gather_object(parameter_digest(self.model))
            if len(set(digests)) != 1:
                raise RuntimeError(
                    f"DDP replicas hold different weights at iteration {iteration} (parameter "
                    f"digests {digests}); this is a bug, please report it"
                )
        if self.dist.is_main:
            training = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "world_size": self.dist.world_size,
                "metrics": metrics,
            }
            ckpt = Checkpoint(
                self.model.state_dict(),
                self.ctx.recipe,
                self.ctx.classes,
                iteration,
                self.ctx.phase,
                training,
            )
            save_checkpoint(ckpt, self.ctx.out, self.cfg.keep_checkpoints)
        self.last_saved = iteration
        return digests

    def _report_groups(self, metrics: MetricsLog | None) -> None:
        """Print which parameter groups train at which base lr, and log them once."""
        print_table(
            counts_table(
                f"{self.ctx.phase}: parameter groups",
                ["group", "lr", "parameters"],
                [(g["name"], f"{g['lr']:.3g}", g["parameters"]) for g in self.groups],
            )
        )
        if metrics is not None and self.start == 0:
            metrics.write({"kind": "param_groups", "iteration": 0, "groups": self.groups})

    # -- the loop -------------------------------------------------------------------------------

    def _progress(self) -> Progress:
        return make_progress(
            TextColumn("{task.fields[stats]}"),
            description=self.ctx.phase,
            show=self.dist.is_main,
        )

    def fit(self) -> FitResult:
        """Train from the start (or restored) iteration to ``train.iterations``.

        Each iteration is one optimizer step followed by the named steps that are due: progress,
        logging (every ``log_every``), validation (``val_every``) and checkpoints
        (``checkpoint_every``); all three also run after the last iteration.
        """
        cfg, main = self.cfg, self.dist.is_main
        metrics = (
            MetricsLog(self.ctx.out / METRICS, self.start if self.start else None) if main else None
        )
        result = FitResult(cfg.iterations, self.start, 0.0, None, None, None, None, None)
        run = _FitRun(result, metrics)
        if main:
            self._report_groups(metrics)
        run.began = time.perf_counter()
        try:
            with self._progress() as progress:
                run.progress = progress
                run.task = progress.add_task(
                    "", total=cfg.iterations, completed=self.start, stats=""
                )
                if self.start == 0 and self.val is not None:
                    self._run_validation(run, 0)
                stream = self.batches.from_step(self.start)  # loader workers end with it
                for iteration in range(self.start + 1, cfg.iterations + 1):
                    tick = time.perf_counter()
                    _, micro = next(stream)
                    stats = self._train_step(micro)
                    self._track(run, iteration, stats, time.perf_counter() - tick)
                    if self._due(iteration, cfg.log_every):
                        self._log_window(run, iteration, stats)
                    if self.val is not None and self._due(iteration, cfg.val_every):
                        self._run_validation(run, iteration)
                    if self._due(iteration, cfg.checkpoint_every):
                        self._checkpoint(run, iteration)
        finally:
            if metrics is not None:
                metrics.close()
        return self._finish(run)

    def _due(self, iteration: int, every: int) -> bool:
        """Whether a step scheduled every `every` iterations (0: never) runs now; it always runs
        after the last iteration."""
        return every > 0 and (iteration % every == 0 or iteration == self.cfg.iterations)

    def _track(self, run: _FitRun, iteration: int, stats: dict[str, float], seconds: float) -> None:
        """Add a step to the log window and the throughput timer; show it on the progress bar."""
        run.window.add(stats, seconds)
        if iteration > self.start + 1:  # the first step pays for warm-up
            run.train_seconds += seconds
            run.timed_images += self.cfg.batch_size
        run.result.train_loss = stats["loss"]
        window = run.window
        run.progress.update(
            run.task,
            completed=iteration,
            stats=f"loss {stats['loss']:.4f}  lr {stats['lr']:.2e}  "
            f"{window.steps / window.seconds:.2f} it/s",
        )

    def _log_window(self, run: _FitRun, iteration: int, stats: dict[str, float]) -> None:
        """Write the means of the steps since the last entry to the metrics log; new window."""
        window = run.window
        means = window.means()
        run.result.train_loss = means["loss"]
        if run.metrics is not None:
            run.metrics.write(
                {
                    "kind": "train",
                    "iteration": iteration,
                    **means,
                    "lr": stats["lr"],
                    "images_per_s": self.cfg.batch_size * window.steps / window.seconds,
                    "time": time.perf_counter() - run.began,
                }
            )
        run.window = _Window()

    def _run_validation(self, run: _FitRun, iteration: int) -> None:
        """Validate (all ranks) and log the mean losses."""
        run.progress.update(run.task, stats="validating")
        values = self._validate()
        run.result.val_loss = values["loss"]
        run.val_history.append(values["loss"])
        if run.metrics is not None:
            clean = {k: _finite_or_none(v) for k, v in values.items()}
            run.metrics.write({"kind": "val", "iteration": iteration, **clean})

    def _checkpoint(self, run: _FitRun, iteration: int) -> None:
        """Save a checkpoint with the latest losses (all ranks) and log the replica digests."""
        losses = {"train_loss": run.result.train_loss, "val_loss": run.result.val_loss}
        digests = self._save(iteration, losses)
        run.result.checkpoint = self.ctx.out / LAST
        if run.metrics is not None and digests:
            run.metrics.write({"kind": "replicas", "iteration": iteration, "digests": digests})

    def _finish(self, run: _FitRun) -> FitResult:
        """Complete the run's result: time, throughput after warm-up, best validation loss."""
        result = run.result
        result.seconds = time.perf_counter() - run.began
        seconds = run.train_seconds
        result.images_per_s = run.timed_images / seconds if seconds > 0 else None
        result.best_val_loss = min(run.val_history) if run.val_history else None
        if result.checkpoint is None and self.last_saved is not None:
            result.checkpoint = self.ctx.out / LAST
        return result
