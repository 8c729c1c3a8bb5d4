"""Numeric precision as an execution detail: the hardware decides, never a config.

One rule for every loop of the kit (CLIP pre-training, detector training, benchmarks): the forward pass runs
under bf16 autocast where bf16 arithmetic is native (a CUDA device, or a CPU whose instruction set has bf16
dot products: x86 avx512_bf16 / AMX, ARM bf16), and in plain fp32 everywhere else. Weights, optimiser state and
losses stay fp32 either way. Because precision follows the machine, it is not part of any config hash; each run
records the precision it used.

`torch.ops.mkldnn._is_mkldnn_bf16_supported()` alone is not enough: it is True on any avx512 CPU, where oneDNN
emulates bf16 at a fraction of fp32's speed, so the CPU's own flags are read as well.
"""
from __future__ import annotations

import contextlib
import functools
import platform

import torch

__all__ = ["native_bf16", "precision_for", "autocast"]

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (Cooper Lake / Sapphire Rapids on), ARMv8.6 bf16


def _cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags of `cpuinfo` ('flags' on x86, 'Features' on ARM); empty where unreadable."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def _mkldnn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=None)
def _native_cpu_bf16() -> bool:
    if platform.system() != "Linux":  # no flags to read: fp32 is the safe side
        return False
    return _mkldnn_bf16() and any(f in _cpu_flags() for f in _CPU_BF16_FLAGS)


def native_bf16(device) -> bool:
    """True where bf16 runs natively on `device`: CUDA, or a CPU with bf16 instructions."""
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    if kind == "cpu":
        return _native_cpu_bf16()
    return False


def precision_for(device) -> str:
    """"bf16" (autocast) or "fp32" for loops on `device`: what `autocast(device)` will do, for run records."""
    return "bf16" if native_bf16(device) else "fp32"


def autocast(device):
    """A context for forward passes on `device`: bf16 autocast where native, else nothing (fp32)."""
    kind = torch.device(device).type
    if native_bf16(device):
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()
