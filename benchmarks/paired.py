"""Latency ratios against DBNet measured in rounds, all models in one process, so the ratio does not ride on the
machine's state between two processes.

python -m benchmarks.paired [--arch RN50] [--size 640] [--batch 1] [--rounds 15] [--threads 1]

Each round times one forward of every model, in an order rotated from round to round, and divides each model's
time by dbnet's in the same round. The figure is the median of the per-round ratios, with a 95 % bootstrap interval
over rounds and the interquartile range: a load spike on a shared machine slows one round's dbnet and tcm-dbnet
alike, where `benchmarks.inference` (one process after the other, for their peak memory) can catch it in one
detector's process only. Random weights, eval mode, no grad, the papers' neck widths, fp32.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.inference import VARIANTS

DEFAULT_DETECTORS = ("dbnet", "tcm-dbnet", *VARIANTS)


def ratio_summary(times: dict[str, list[float]], base: str = "dbnet", n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """times: detector -> seconds per round (rounds aligned) -> one row per detector: median ms, the median of the
    per-round ratios to `base`, its 95 % bootstrap interval over rounds, and the ratios' quartiles."""
    ref = np.asarray(times[base], float)
    rng = np.random.default_rng(seed)
    rows = []
    for det, ts in times.items():
        ts = np.asarray(ts, float)
        if ts.shape != ref.shape:
            raise ValueError(f"{det}: {ts.size} rounds, {base}: {ref.size}; rounds must be aligned")
        ratio = ts / ref
        boot = np.median(ratio[rng.integers(0, ratio.size, size=(n_boot, ratio.size))], axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        q1, q3 = np.percentile(ratio, [25, 75])
        rows.append({"detector": det, "rounds": int(ratio.size), "median_ms": 1000 * float(np.median(ts)),
                     "x_dbnet": float(np.median(ratio)), "ci_lo": float(lo), "ci_hi": float(hi),
                     "q1": float(q1), "q3": float(q3)})
    return rows


def measure(detectors=DEFAULT_DETECTORS, arch: str = "RN50", size: int = 640, batch: int = 1, rounds: int = 15,
            threads: int = 1, warmup: int = 2) -> list[dict]:
    """Build every detector (dbnet first), warm each up `warmup` times, then `rounds` rounds -> ratio_summary."""
    import torch

    from tcm_kit.clip import create_clip
    from tcm_kit.detector import HEADS, build_detector, head_family
    from tcm_kit.tcm import TCMConfig

    if detectors[0] != "dbnet":
        raise ValueError(f"the first detector is the baseline and must be dbnet, got {detectors[0]!r}")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = {}
    for det in detectors:
        name, flags = VARIANTS.get(det, (det, {}))
        family, is_tcm, _ = head_family(name)
        models[det] = build_detector(name, create_clip(arch, seed=0), head=HEADS[family].Config(
            width=HEADS[family].paper_width), tcm=TCMConfig(**flags) if is_tcm else None).eval()
    x = torch.randn(batch, 3, size, size)
    times = {d: [] for d in detectors}
    with torch.no_grad():
        for _ in range(warmup):
            for m in models.values():
                m(x)
        for r in range(rounds):
            order = list(detectors[r % len(detectors):]) + list(detectors[:r % len(detectors)])
            for det in order:
                t0 = time.perf_counter()
                models[det](x)
                times[det].append(time.perf_counter() - t0)
    rows = ratio_summary(times)
    for row in rows:
        row.update(arch=arch, size=size, batch=batch, threads=threads)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="RN50")
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--detectors", default=";".join(DEFAULT_DETECTORS), help="';'-separated, dbnet first")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    rows = measure(tuple(a.detectors.split(";")), a.arch, a.size, a.batch, a.rounds, a.threads)
    if a.json:
        print(json.dumps(rows))
        return
    print(f"{'detector':<26}{'median ms':>10}{'x dbnet':>9}{'95% CI':>16}{'IQR':>14}")
    for r in rows:
        ci = f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"
        iqr = f"[{r['q1']:.2f}, {r['q3']:.2f}]"
        print(f"{r['detector']:<26}{r['median_ms']:>10.1f}{r['x_dbnet']:>9.3f}{ci:>16}{iqr:>14}")

if __name__ == "__main__":
    main()
