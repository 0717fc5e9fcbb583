"""Multi-process training: process groups from launcher env vars, rank helpers, a local launcher.

Workers learn their place from the variables torchrun (or :func:`launch_local`, which uses the same
elastic agent) sets: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT. NCCL serves
GPUs, gloo CPUs. Every helper is a no-op in a single process, so training code calls them always.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cops.errors import CopsError


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and progress."""
        return self.rank == 0


def under_launcher() -> bool:
    """Whether this process was started by torchrun or the elastic agent (RANK/WORLD_SIZE set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_info() -> DistInfo:
    """Read the rank layout from the environment; a single process when no launcher set it."""
    if not under_launcher():
        return DistInfo()
    env = os.environ
    world = int(env["WORLD_SIZE"])
    return DistInfo(
        rank=int(env["RANK"]),
        world_size=world,
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
    )


def init(device_type: str) -> tuple[DistInfo, torch.device]:
    """Join the process group (when there are several processes) and pick this rank's device.

    CUDA ranks use GPU ``LOCAL_RANK`` and NCCL; CPU ranks use gloo and, unless OMP_NUM_THREADS
    says otherwise, share the cores evenly instead of each starting one thread per core.
    """
    info = env_info()
    if device_type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        if info.local_world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.local_world_size))
    if info.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return info, device


def teardown() -> None:
    """Leave the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether collectives are needed (a process group with more than one member)."""
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place and return it."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for all ranks."""
    if active():
        dist.barrier()


def _run_worker(fn: Callable[..., None], error_dir: str, *args: Any) -> None:
    """Worker entry point: on a user error, leave its message for the launcher, then fail."""
    try:
        fn(*args)
    except CopsError as exc:
        Path(error_dir, f"{os.environ.get('RANK', '0')}.txt").write_text(str(exc), "utf-8")
        raise


def launch_local(nproc: int, fn: Callable[..., None], *args: Any, verbose: bool = False) -> None:
    """Run ``fn(*args)`` in `nproc` worker processes on this machine, as torchrun would.

    Uses torch's elastic agent (c10d rendezvous on a free local port, spawn start method, no
    restarts). A :class:`CopsError` in any worker comes back as one CopsError with its message
    (the lowest failing rank's); any other failure raises RuntimeError with the worker's traceback.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The agent installs handlers that turn these signals into exceptions and never removes them;
    # left in place they would outlive the launch (and be inherited by any process forked later).
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
    handlers = {sig: signal.getsignal(sig) for sig in handled}
    noisy = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.multiprocessing")]
    levels = [logger.level for logger in noisy]
    if not verbose:  # the agent logs each start and dumps failures we report ourselves
        for logger in noisy:
            logger.setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="cops-launch-") as tmp:
        errors = Path(tmp, "errors")
        errors.mkdir()
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=nproc,
            run_id=f"cops-{uuid.uuid4().hex[:12]}",
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0",
            max_restarts=0,
            monitor_interval=0.2,
            start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=str(Path(tmp, "logs"))),
        )
        try:
            elastic_launch(config, _run_worker)(fn, str(errors), *args)
        except SignalException as exc:  # the agent stopped the workers; report it like Ctrl-C
            if exc.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise
        except ChildFailedError as exc:
            reported = sorted(errors.glob("*.txt"), key=lambda p: int(p.stem))
            if reported:
                rank = int(reported[0].stem)
                where = "" if rank == 0 else f" (rank {rank})"
                raise CopsError(reported[0].read_text("utf-8") + where) from None
            rank, failure = exc.get_first_failure()
            message = failure.message
            if isinstance(message, dict):
                message = message.get("extraInfo", {}).get("py_callstack") or message.get("message")
            raise RuntimeError(
                f"training worker rank {rank} failed (exit code {failure.exitcode}):\n{message}"
            ) from None
        finally:
            for logger, level in zip(noisy, levels, strict=True):
                logger.setLevel(level)
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
