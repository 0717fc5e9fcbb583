"""One training run per run folder: an ``fcntl`` lock held for the whole run, and the clean-up of
the temporaries a killed run left behind.

Two runs writing one folder would interleave ``metrics.jsonl`` and keep one of their ``last.pt``
files; the second run therefore stops at once with one line naming the process that holds the
folder. The kernel releases the lock of a process that dies (``kill -9`` included), so a lock
file left behind is taken over by the next run, with a warning naming the dead process.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cops.errors import CopsError

log = logging.getLogger(__name__)

LOCK_NAME = ".cops-run.lock"
_TEMPORARY = re.compile(r"\..+\.tmp")
"""Hidden temporaries of the atomic writer (``.last.pt.k2j4x9.tmp``) and of numbered copies."""


def remove_stale_temporaries(out: Path) -> int:
    """Remove the atomic writer's temporaries a killed run left in the run folder `out`; return
    how many bytes that freed. Only safe while this run holds the folder (see :func:`run_lock`)."""
    freed = 0
    if not out.is_dir():
        return freed
    for path in out.iterdir():
        if path.name != LOCK_NAME and _TEMPORARY.fullmatch(path.name) and path.is_file():
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
            log.debug("%s: removed a temporary file left by an interrupted save", path)
    return freed


def _holder(fd: int) -> str:
    """Who holds (or held) the lock, as its owner wrote it: ``pid N on HOST since TIME``."""
    return os.pread(fd, 512, 0).decode("utf-8", "replace").strip()


def _acquire(path: Path) -> int:
    """An open descriptor of `path` with the lock held; a `CopsError` naming the holder when
    another process has it. Retries when a finishing run removed the file in between."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise CopsError(
                f"{path.parent}: another training run is writing this run folder "
                f"({holder or 'process unknown'}); wait for it to end, or choose another --out"
            ) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold the run folder `out` for the block: no other run may train into it meanwhile.

    Creates `out`; takes over a lock a dead process left (with a warning); removes that run's
    stale temporaries; removes the lock file at the end. In a torchrun process other than rank 0
    it does nothing: rank 0 holds the folder for all of them.
    """
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = _acquire(path)
    try:
        left = _holder(fd)
        if left:
            log.warning("%s: taking over the lock of a run that ended without releasing it (%s)",
                        out, left)  # fmt: skip
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0)
        freed = remove_stale_temporaries(out)
        if freed:
            log.warning("%s: removed %.1f MB of temporaries of an interrupted checkpoint save",
                        out, freed / 1e6)  # fmt: skip
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
