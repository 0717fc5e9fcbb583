"""Process pools that are safe to fork from a process that has already run OpenCV's threads."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from typing import Any

import cv2


@contextmanager
def fork_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[Pool]:
    """A fork-context pool whose workers run OpenCV single-threaded.

    OpenCV's thread pool is shut down in the parent before forking and restored afterwards:
    resizing it inside a forked child instead deadlocks (its condition variables still count the
    parent's worker threads as waiters). The pool already fills the cores, so one OpenCV thread per
    worker is also the faster setting.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer, initargs) as pool:
            yield pool
    finally:
        cv2.setNumThreads(threads)
