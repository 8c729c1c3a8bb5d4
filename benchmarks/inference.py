"""Inference latency and peak memory of DBNet vs TCM-DBNet on CPU (and GPU when present).

python -m benchmarks.inference [--size 640] [--arch TCM-RN-tiny|RN50] [--batch 1] [--runs 20] [--device cuda]
                               [--amp fp32|bf16|fp16]

Random weights (speed does not depend on them); each head at its paper's neck width (`paper_width`: DBNet and
FCENet 256, PAN 128). Each configuration runs in its own process so that the peak resident memory it reports is
its own. Prints a table with the ratio to `dbnet` measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import resource

import numpy as np

from benchmarks import each_in_own_process, repeat_timed


AMP_DTYPES = ("auto", "fp32", "bf16", "fp16")
# TCM settings beside the default (the authors'): name -> (detector, TCM options)
VARIANTS = {
    "tcm-dbnet [fast]": ("tcm-dbnet", dict(prompt_query="learned")),  # FastTCM's learned query, prompt cached
    "tcm-dbnet [value]": ("tcm-dbnet", dict(dense_attention="value")),  # MaskCLIP's value path
    "tcm-dbnet [fast, value]": ("tcm-dbnet", dict(prompt_query="learned", dense_attention="value")),  # both
}


def measure(detector: str, arch: str, size: int, batch: int, runs: int, device: str, threads: int,
            amp: str = "fp32") -> dict:
    """amp: "auto" (the kit's rule, tcm_kit.precision: bf16 where native, else fp32), "fp32" (no autocast), or
    autocast to "bf16" / "fp16" (GPU; bf16 also runs on CPU, emulated where not native)."""
    import contextlib

    import torch

    from tcm_kit.clip import create_clip
    from tcm_kit.detector import HEADS, build_detector, head_family
    from tcm_kit.precision import precision_for
    from tcm_kit.tcm import TCMConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    name, flags = VARIANTS.get(detector, (detector, {}))
    family, is_tcm, _ = head_family(name)
    width = HEADS[family].paper_width
    tcm = TCMConfig(**flags) if is_tcm else None
    model = build_detector(name, create_clip(arch, seed=0), head=HEADS[family].Config(width=width),
                           tcm=tcm).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {AMP_DTYPES}, got {amp!r}")
    amp = precision_for(device) if amp == "auto" else amp
    cast = contextlib.nullcontext() if amp == "fp32" else torch.autocast(
        device.split(":")[0], dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    with torch.no_grad(), cast:
        times = repeat_timed(lambda: model(x), runs, device)  # after 3 warm-up runs
    med = float(np.median(times))
    return {"detector": detector, "arch": arch, "size": size, "batch": batch, "device": device, "amp": amp,
            "median_ms": 1000 * med, "fps": batch / med, "p90_ms": 1000 * float(np.percentile(times, 90)),
            "neck_width": width, "peak_rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def run(detectors=("dbnet", "tcm-dbnet"), arch: str = "TCM-RN-tiny", size: int = 640, batch: int = 1,
        runs: int = 20, threads: int = 2, device: str = "cpu", amp: str = "auto") -> list[dict]:
    """One row per detector (`measure` in its own process, so the peak memory is its own), with `x dbnet`: the
    median over the median of the first detector measured (dbnet by default)."""
    return each_in_own_process("benchmarks.inference", detectors,
                               ["--arch", arch, "--size", str(size), "--batch", str(batch), "--runs", str(runs),
                                "--threads", str(threads), "--device", device, "--amp", amp], "median_ms")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--arch", default="TCM-RN-tiny")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="auto", choices=AMP_DTYPES,
                   help="autocast dtype (auto: bf16 where native, else fp32; fp32: none)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:  # child process: one configuration, JSON on stdout
        print(json.dumps(measure(a.one, a.arch, a.size, a.batch, a.runs, a.device, a.threads, a.amp)))
        return
    rows = run(("dbnet", "tcm-dbnet"), a.arch, a.size, a.batch, a.runs, a.threads, a.device, a.amp)
    if a.json:
        print(json.dumps(rows))
        return
    print(f"{'detector':<12}{'arch':<14}{'size':>6}{'batch':>6}{'median ms':>11}{'p90 ms':>9}{'x dbnet':>9}"
          f"{'peak MB':>9}{'params M':>10}")
    for r in rows:
        print(f"{r['detector']:<12}{r['arch']:<14}{r['size']:>6}{r['batch']:>6}{r['median_ms']:>11.1f}"
              f"{r['p90_ms']:>9.1f}{r['x_dbnet']:>9.2f}{r['peak_rss_mb']:>9.0f}{r['params_m']:>10.2f}")


if __name__ == "__main__":
    main()
