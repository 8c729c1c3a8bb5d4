"""The full-profile timing benchmark on a GPU -> reports/benchmarks_gpu.md (the device name in its header).

    python -m benchmarks.gpu [--runs 20] [--train-steps 10] [--device cuda]

RN50 architecture with random weights (speed does not depend on the weights), dbnet and tcm-dbnet:
  inference at 640x640, batch 1 and 16 (the full profile's batch), fp32 and bf16 / fp16 autocast: median and p90
  ms, FPS (images/s), peak resident memory, ratio to dbnet of the same setting (benchmarks.inference);
  one training step at the full profile's settings (640 crops, batch 16, AdamW, bf16 autocast on CUDA, real
  synthetic batches; benchmarks.train_speed).
Each configuration runs in its own process. Without a CUDA device it stops with a message, unless --device names
another device (e.g. `--device cpu --runs 1` to try the script; the report then says cpu).
"""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from benchmarks import inference, train_speed

PAIR = ("dbnet", "tcm-dbnet")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from benchmarks.peers import machine_line

    return machine_line(load=False)


def inference_rows(device: str, runs: int, batches=(1, 16), amps=("fp32", "bf16", "fp16"),
                   size: int = 640) -> pd.DataFrame:
    rows = []
    for amp in amps:
        for batch in batches:
            for r in inference.run(PAIR, "RN50", size, batch, runs, 1, device, amp):
                rows.append({"detector": r["detector"], "size": size, "amp": amp, "batch": batch,
                             "median ms": r["median_ms"], "p90 ms": r["p90_ms"], "FPS": r["fps"],
                             "x dbnet": r["x_dbnet"], "peak host MB": r["peak_rss_mb"]})
    return pd.DataFrame(rows)


def train_rows(device: str, steps: int) -> pd.DataFrame:
    rows = train_speed.run(PAIR, "full", "RN50", steps, 1, device)
    return pd.DataFrame([{"detector": r["detector"], "batch": r["batch"], "crop": r["crop"], "steps": r["steps"],
                          "median step ms": r["median_step_ms"], "data ms": r["data_ms"],
                          "images/s": r["images_per_s"], "x dbnet": r["x_dbnet"]} for r in rows])


def main(argv=None) -> None:
    import torch

    from tcm_kit.report import Stamp, _markdown, _write_meta, reports_dir
    from tcm_kit.utils import git_commit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--batches", default="1,16", help="inference batch sizes, comma-separated")
    ap.add_argument("--amps", default="fp32,bf16,fp16", help="autocast dtypes, comma-separated (fp32: none)")
    ap.add_argument("--size", type=int, default=640, help="inference input size (the full profile: 640)")
    ap.add_argument("--skip-train", action="store_true")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("benchmarks.gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a machine "
                 "with a GPU, or pass --device cpu to try the script")
    t0 = time.perf_counter()
    name = device_name(a.device)
    batches = tuple(int(b) for b in a.batches.split(","))
    amps = tuple(a.amps.split(","))
    inf = inference_rows(a.device, a.runs, batches, amps, a.size)
    print(inf.to_string(index=False), flush=True)
    tr = None if a.skip_train else train_rows(a.device, a.train_steps)
    if tr is not None:
        print(tr.to_string(index=False), flush=True)
    wall = time.perf_counter() - t0
    stamp = Stamp(profile="full (timing only)", seeds=(0,), wall_seconds=wall,
                  note=f"Device: {name} ({a.device}); torch {torch.__version__}.")
    lines = ["# GPU benchmark (full profile timings)", "", f"_Ours, from a run: {stamp.line()}._", "", stamp.note,
             "", f"Commit `{git_commit()}`. RN50 architecture, random weights, {a.size}x{a.size} inputs; each "
             f"configuration in its own process, 3 warm-ups then {a.runs} timed forward passes (no grad); FPS = "
             "batch / median time; `x dbnet` against dbnet of the same batch and autocast dtype.", "",
             "## Inference", "", _markdown(inf, 2), ""]
    if tr is not None:
        lines += ["## Training step (full profile: 640 crops, batch 16, AdamW, bf16 autocast on CUDA)", "",
                  f"{a.train_steps} steps after 2 warm-ups on batches of the full profile's synthetic train split.",
                  "", _markdown(tr, 2), ""]
    path = reports_dir() / "benchmarks_gpu.md"
    path.write_text("\n".join(lines))
    inf.to_csv(reports_dir() / "benchmarks_gpu_inference.csv", index=False)
    files = ["benchmarks_gpu.md", "benchmarks_gpu_inference.csv"]
    if tr is not None:
        tr.to_csv(reports_dir() / "benchmarks_gpu_train.csv", index=False)
        files.append("benchmarks_gpu_train.csv")
    _write_meta("benchmarks_gpu", "table", f"GPU benchmark on {name}", stamp, files)
    print(f"wrote {path} in {wall:.0f} s")


if __name__ == "__main__":
    main()
