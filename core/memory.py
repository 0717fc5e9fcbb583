"""How much memory this machine can still give, and a refusal before a job that would not fit.

A job that outgrows the memory ends in a ``MemoryError`` traceback or, worse, in the kernel's
out-of-memory killer after minutes of swapping; an estimate checked first ends in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from cops.errors import CopsError

GIB = 1 << 30


def available_bytes() -> int:
    """Memory available to a new allocation without swapping (Linux ``MemAvailable``; elsewhere
    the free physical pages)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(needed: int, what: str, hint: str) -> None:
    """A `CopsError` naming `what` when `needed` bytes exceed the memory available now."""
    free = available_bytes()
    if needed > free:
        raise CopsError(
            f"{what}: needs about {needed / GIB:.1f} GiB of memory, {free / GIB:.1f} GiB is "
            f"available; {hint}"
        )
