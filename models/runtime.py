"""The cost network as inference runs it: channels-last memory and a frozen TorchScript graph
(BatchNorm folded into the convolutions) by default, ``torch.compile`` or the plain eager module on
request, in fp32 or under bf16 autocast.

Training keeps the eager module; only prediction, evaluation and the benchmarks go through here.
The fp32 graph computes the eager network's outputs to float32 rounding (BENCHMARKS.md, "The CNN
on a CPU": what was tried, what each step gave, and why bf16 is not the default).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from cops.errors import CopsError

__all__ = ["PRECISIONS", "RUNTIMES", "InferenceNet", "bf16_supported", "cnn_gflop"]

PRECISIONS = ("fp32", "bf16")
"""Inference precisions: fp32 (exact, the default) or bf16 autocast (faster on some hardware)."""
RUNTIMES = ("frozen", "compile", "eager")
"""How the network runs at inference (:class:`InferenceNet`)."""


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` runs bf16 convolutions natively (CUDA with bf16, a CPU with AVX-512 bf16
    or AMX); elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    capability = torch.backends.cpu.get_cpu_capability()
    return capability in ("AVX512", "AMX") and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _check_options(precision: str, runtime: str, device: torch.device) -> None:
    """A clear error for an unknown precision or runtime, or bf16 on a device without it."""
    if precision not in PRECISIONS:
        raise CopsError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if runtime not in RUNTIMES:
        raise CopsError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision == "bf16" and not bf16_supported(device):
        raise CopsError(
            f"precision bf16: {device} has no native bf16 support (it would be emulated and "
            "slower than fp32); use fp32"
        )


def _prepared(net: nn.Module, device: torch.device, precision: str, runtime: str) -> nn.Module:
    """`net` as `runtime` runs it (a copy; see :class:`InferenceNet`)."""
    model = copy.deepcopy(net).eval().to(device)
    if runtime == "eager":
        return model
    model = model.to(memory_format=torch.channels_last)
    if runtime == "compile":
        return torch.compile(model, dynamic=False, options={"freezing": True})
    if precision == "bf16":  # TorchScript does not run autocast: bf16 stays eager
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.freeze(torch.jit.script(model))


class InferenceNet:
    """Call like the eager cost network (``image [B, 3, H, W]`` → its output tuple, float32).

    ``runtime``: ``frozen`` (default) converts the network to channels-last and freezes it as
    TorchScript (scripted, so every input size takes its own path; BatchNorm folded into the
    convolutions); ``compile`` runs channels-last through ``torch.compile`` with freezing (the
    fastest per image, but every new input size compiles anew, minutes for ResNet-50: for long
    evaluations at one test size); ``eager`` runs the module as trained. ``precision`` bf16 runs
    under bf16 autocast (``frozen`` then stays an eager channels-last module) with outputs cast
    back to float32. The caller's module is not modified.
    """

    def __init__(
        self,
        net: nn.Module,
        device: torch.device,
        precision: str = "fp32",
        runtime: str = "frozen",
    ) -> None:
        _check_options(precision, runtime, device)
        self.device, self.precision, self.runtime = device, precision, runtime
        self._model: Callable[[Tensor], tuple[Tensor, ...]] = _prepared(
            net, device, precision, runtime
        )

    def __call__(self, image: Tensor) -> tuple[Tensor, ...]:
        """The network's outputs for a normalised float32 batch on this runner's device."""
        if self.runtime != "eager":
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.precision == "fp32":
                outputs = self._model(image)
            else:
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    outputs = self._model(image)
        return tuple(out.float().contiguous() for out in outputs)


def cnn_gflop(net: nn.Module, height: int, width: int) -> float:
    """GFLOP of one forward pass of `net` on a 1×3×H×W image (a multiply-add counts 2), counted
    by torch's flop counter on the meta device, so nothing is computed."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(net).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, 3, height, width, device="meta"))
    return counter.get_total_flops() / 1e9
