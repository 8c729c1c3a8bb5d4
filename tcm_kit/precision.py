"""Numeric precision of the training loops: chosen by the user, or by the hardware when the user says `auto`.

One rule for every loop of the kit (CLIP pre-training, detector training, benchmarks). The forward pass runs
under bf16 autocast or in plain fp32; weights, optimiser state and losses stay fp32 either way, and evaluation
is always fp32. `TCM_KIT_PRECISION` (or `tcm-kit ... --precision`, `make reproduce PRECISION=...`) picks it:
  - auto (the default): bf16 where bf16 arithmetic is native (a CUDA device, or a CPU whose instruction set has
    bf16 dot products: x86 avx512_bf16 / AMX, ARM bf16), fp32 everywhere else;
  - fp32: plain fp32 on every device, the precision the committed cpu reports were made in;
  - bf16: bf16 autocast on every device; where the CPU only emulates bf16 this warns once, since it is slower.

bf16 and fp32 runs of one config round differently, so the precision joins a detector run's cache key
(tcm_kit.train.run_hash) and every table is stamped with it (tcm_kit.report.Stamp).

`torch.ops.mkldnn._is_mkldnn_bf16_supported()` alone is not enough to call bf16 native: it is True on any
avx512 CPU, where oneDNN emulates bf16 at a fraction of fp32's speed, so the CPU's own flags are read as well.
`TCM_KIT_NATIVE_BF16=1|0` overrides that reading (for tests and CI: it makes the kit decide as on a CPU with or
without native bf16; the arithmetic is still the host's).
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings

import torch

__all__ = ["PRECISIONS", "requested_precision", "native_bf16", "precision_for", "autocast", "default_device",
           "PrecisionError"]

PRECISIONS = ("auto", "fp32", "bf16")
ENV = "TCM_KIT_PRECISION"
NATIVE_ENV = "TCM_KIT_NATIVE_BF16"

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (Cooper Lake / Sapphire Rapids on), ARMv8.6 bf16

# CLIP pre-training in bf16 where it is emulated (oneDNN without bf16 instructions) against fp32 on the same CPU,
# as issue 32 measured it on such a CPU (reports/NOTES.md, 2026-12-05)
EMULATED_BF16_SLOWDOWN = "15-20x"


class PrecisionError(ValueError):
    """An unknown precision name in TCM_KIT_PRECISION or --precision."""


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


def _forced_native() -> bool | None:
    """TCM_KIT_NATIVE_BF16 as a bool, None when unset or empty."""
    value = os.environ.get(NATIVE_ENV, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise PrecisionError(f"{NATIVE_ENV}={value!r}: expected 1 or 0")


@functools.lru_cache(maxsize=None)
def _native_cpu_bf16() -> bool:
    forced = _forced_native()
    if forced is not None:
        return forced
    if platform.system() != "Linux":  # no flags to read: fp32 is the safe side
        return False
    return _mkldnn_bf16() and any(f in _cpu_flags() for f in _CPU_BF16_FLAGS)


def requested_precision() -> str:
    """The precision asked for: TCM_KIT_PRECISION (auto | fp32 | bf16), "auto" when unset."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise PrecisionError(f"{ENV}={value!r}: expected one of {', '.join(PRECISIONS)}")
    return value


def native_bf16(device) -> bool:
    """True where bf16 runs natively on `device`: CUDA, or a CPU with bf16 instructions."""
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    if kind == "cpu":
        return _native_cpu_bf16()
    return False


def default_device() -> str:
    """Where the kit trains when no device is named: CUDA if available, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


_warned: set[str] = set()


def _warn_emulated(kind: str) -> None:
    if kind in _warned:
        return
    _warned.add(kind)
    warnings.warn(f"{ENV}=bf16 on a {kind.upper()} without native bf16: oneDNN emulates it, measured "
                  f"{EMULATED_BF16_SLOWDOWN} slower than fp32 in CLIP pre-training on such a CPU; use "
                  f"{ENV}=fp32 or auto unless you need this CPU to reproduce bf16 numbers", stacklevel=3)


def precision_for(device=None) -> str:
    """"bf16" (autocast) or "fp32": what `autocast(device)` does, for run keys and records (device None: the
    default device)."""
    device = default_device() if device is None else device
    asked = requested_precision()
    if asked == "fp32":
        return "fp32"
    native = native_bf16(device)
    if asked == "bf16":
        if not native:
            _warn_emulated(torch.device(device).type)
        return "bf16"
    return "bf16" if native else "fp32"


def autocast(device):
    """A context for forward passes on `device`: bf16 autocast or nothing (fp32), as precision_for says."""
    kind = torch.device(device).type
    if precision_for(device) == "bf16":
        return torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext()
