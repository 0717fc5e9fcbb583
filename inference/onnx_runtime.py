"""onnxruntime imported with its telemetry off, so that predicting writes nothing outside --out.

onnxruntime ≥ 1.29 starts a telemetry client when it is imported on Linux too: it writes a device
id and an event database under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` (and may send
the events). Its ``ORT_DISABLE_TELEMETRY`` environment variable, set before the import, turns the
client off completely: no file, no upload. ``disable_telemetry_events()`` after the import only
stops further events, so it is called as well for a process that imported onnxruntime earlier.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, imported with telemetry disabled (unless the user set
    ``ORT_DISABLE_TELEMETRY`` themselves); an ImportError if it is not installed."""
    if "onnxruntime" not in sys.modules:
        os.environ.setdefault(TELEMETRY_VARIABLE, "1")
    import onnxruntime

    if os.environ.get(TELEMETRY_VARIABLE) == "1":
        onnxruntime.disable_telemetry_events()
    return onnxruntime
