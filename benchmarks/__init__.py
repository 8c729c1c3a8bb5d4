"""Speed and memory benchmarks (`python -m benchmarks.<name>`, all together: `python -m benchmarks.report`)."""
from __future__ import annotations

import json
import subprocess
import sys
import time


def each_in_own_process(module: str, detectors, args: list[str], time_key: str) -> list[dict]:
    """Run `python -m <module> --one <detector> <args>` for each detector, one at a time (so each measures its
    own memory and warms its own caches); each child prints its row as JSON on its last stdout line. Adds
    `x_dbnet` = row[time_key] over the first detector's (dbnet first, by convention)."""
    rows = []
    for det in detectors:
        cmd = [sys.executable, "-m", module, "--one", det, *args]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{module} {det} failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0][time_key]
    for r in rows:
        r["x_dbnet"] = r[time_key] / base
    return rows


def repeat_timed(fn, runs: int, device: str = "cpu", warmup: int = 3) -> list[float]:
    """Call fn() `warmup` times untimed, then `runs` times timed -> the seconds of each timed call (on CUDA each
    call is synchronised before its clock stops)."""
    sync = None
    if device.startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times
