"""fork_pool: forking after OpenCV has run its thread pool must not deadlock the workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """\
    import cv2, numpy as np
    from cops.parallel import fork_pool

    image = np.random.default_rng(0).random((1500, 1500, 3), dtype=np.float32)

    def start():
        global STARTED_WITH
        STARTED_WITH = cv2.getNumThreads()
        # Resizing OpenCV's pool in a child forked while the parent's pool ran used to hang here.
        cv2.setNumThreads(1)

    def work(_):
        return STARTED_WITH, float(cv2.GaussianBlur(image, (7, 7), 2).sum())

    cv2.setNumThreads(2)
    for _ in range(3):  # make OpenCV start its worker threads in the parent
        cv2.GaussianBlur(cv2.resize(image, (2500, 2500)), (7, 7), 2)
    with fork_pool(2, start) as pool:
        results = pool.map(work, range(4))
    assert [threads for threads, _ in results] == [1] * 4, results
    assert len({total for _, total in results}) == 1
    assert cv2.getNumThreads() == 2, "the parent's OpenCV threads must be restored"
    print("ok")
    """
)


@pytest.mark.slow
def test_fork_pool_after_opencv_threads_ran() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
