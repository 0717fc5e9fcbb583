"""Shared test fixtures and the quick lane.

``python -m pytest`` (what CI runs) runs everything; ``python -m pytest --quick`` skips the tests
marked ``slow`` (subprocesses, distributed runs, the CUDA simulator, long trainings) for a fast
edit-test loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CopsRunner = Callable[..., subprocess.CompletedProcess]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true", help="skip the tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that run `cops` in a subprocess (the ``cops`` fixture) are ``slow`` like the ones
    marked by hand; ``--quick`` skips them all."""
    for item in items:
        if "cops" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    if not config.getoption("--quick"):
        return
    skip = pytest.mark.skip(reason="slow: runs without --quick (as in CI)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _run_cops(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`cops ARGS` as a user runs it: a subprocess with a wide terminal and one torch thread."""
    full_env = {**os.environ, "COLUMNS": "120", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cops.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        check=False,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def cops() -> CopsRunner:
    """Run the `cops` command in a subprocess: ``cops("predict", ...)`` → CompletedProcess."""
    return _run_cops


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, checkpoint): the tiny synthetic dataset and a 2-iteration pretraining on it, made
    once per session for every test that needs a trained model; tests only read them."""
    from _training import run_pretrain, tiny_dataset

    from cops.training.checkpoint import LAST

    root = tmp_path_factory.mktemp("tiny-pretrained")
    data = tiny_dataset(root / "data")
    run_pretrain(data, root / "run", ["train.iterations=2"])
    return data, root / "run" / LAST


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads; one avoids oversubscription on shared CI cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
