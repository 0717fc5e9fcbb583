"""What every benchmark returns: a titled table for people and a dict of figures for machines."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from cops.console import counts_table
from cops.files import atomic_write_json, check_writable


@dataclass
class BenchResult:
    """One benchmark's outcome: ``rows`` under ``columns`` for the table, ``figures`` for JSON."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    figures: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)

    def table(self) -> Table:
        """The rich table, captioned with where it ran."""
        table = counts_table(self.title, self.columns, self.rows)
        env = self.environment
        where = env.get("gpu") or f"{env.get('cpus')} CPUs, {env.get('torch_threads')} threads"
        table.caption = f"{where}; torch {env.get('torch')}; {env.get('date')}"
        return table


def environment(device: Any = None) -> dict[str, Any]:
    """The machine a figure was measured on: CPUs, torch threads, GPU name, versions, date."""
    import numba
    import torch

    env: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "numba": numba.__version__,
    }
    if device is not None and torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


class ResultsFile:
    """Where ``--json`` writes the figures, checked writable when made: before the benchmark
    runs, not after minutes of it (a folder in the way, a read-only folder)."""

    def __init__(self, path: Path) -> None:
        check_writable(path)
        self.path = Path(path)

    def write(self, results: list[BenchResult]) -> None:
        """Write `results` (see :func:`write_results`)."""
        write_results(self.path, results)


def write_results(path: Path, results: list[BenchResult]) -> None:
    """All results of one `cops bench` call as one JSON file: ``{name: result}``."""
    atomic_write_json(path, {r.name: asdict(r) for r in results})
