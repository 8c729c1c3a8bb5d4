"""Training throughput (images/s) of each detector at a TrainConfig profile's settings, on CPU or GPU.

    python -m benchmarks.train_speed [--profile cpu] [--detectors dbnet,tcm-dbnet,...] [--steps 10] [--threads 1]

Random weights (the profile's embedded CLIP architecture, or RN50 with --arch RN50: speed does not depend on the
weights) on real training batches: the profile's synthetic train split (generated on first use), its crop size,
batch size and augmentations, AdamW at the profile's rates. Each detector runs in its own process; after 2
warm-up steps, `--steps` steps are timed: the whole step (next batch from the dataset in this process + forward
+ loss + backward + optimiser) and, apart, the share spent building the batch. Prints a table with the ratio
to `dbnet` measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks import each_in_own_process

DEFAULT_DETECTORS = ("dbnet", "tcm-dbnet", "pan", "tcm-pan", "fcenet", "tcm-fcenet")


def measure(detector: str, profile: str, arch: str | None, steps: int, threads: int, device: str) -> dict:
    import torch

    from tcm_kit.clip import create_clip
    from tcm_kit.data.transforms import TextDetDataset, collate
    from tcm_kit.precision import autocast, precision_for
    from tcm_kit.train import TrainConfig, build_model, build_optimizer, split_dir, train_augmentation, train_step

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = TrainConfig.for_profile(profile, detector=detector)
    arch = arch or ("TCM-RN-tiny" if cfg.clip_weights == "embedded" else "RN50")
    model = build_model(cfg, clip=create_clip(arch, seed=0)).to(device).train()
    data = TextDetDataset(split_dir(cfg, "train", progress=False), size=cfg.aug.train_size, train=True, seed=0,
                          targets=model.target_fn(), aug=train_augmentation(cfg))
    opt = build_optimizer(model, cfg)  # the optimiser of tcm_kit.train.fit
    amp = autocast(device)
    step_s, data_s = [], []
    for i in range(steps + 2):  # 2 warm-up steps
        t0 = time.perf_counter()
        idx = [(i * cfg.optim.batch_size + j) % len(data) for j in range(cfg.optim.batch_size)]
        batch = collate([data[k] for k in idx])
        t1 = time.perf_counter()
        train_step(model, model, opt, batch, device, amp)  # the step of tcm_kit.train.fit
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            step_s.append(time.perf_counter() - t0)
            data_s.append(t1 - t0)
    med = float(np.median(step_s))
    return {"detector": detector, "arch": arch, "profile": profile, "device": device, "batch": cfg.optim.batch_size,
            "crop": cfg.aug.train_size, "steps": steps, "amp": precision_for(device),
            "median_step_ms": 1000 * med,
            "data_ms": 1000 * float(np.median(data_s)), "images_per_s": cfg.optim.batch_size / med}


def run(detectors=DEFAULT_DETECTORS, profile: str = "cpu", arch: str | None = None, steps: int = 10,
        threads: int = 1, device: str = "cpu") -> list[dict]:
    """One row per detector (each in its own process), with `x_dbnet`: step time over the first detector's."""
    args = ["--profile", profile, "--steps", str(steps), "--threads", str(threads), "--device", device]
    return each_in_own_process("benchmarks.train_speed", detectors, args + (["--arch", arch] if arch else []),
                               "median_step_ms")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "full"))
    p.add_argument("--detectors", default=",".join(DEFAULT_DETECTORS))
    p.add_argument("--arch", default=None, help="CLIP architecture (default: the profile's)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:  # child process: one detector, JSON on stdout
        print(json.dumps(measure(a.one, a.profile, a.arch, a.steps, a.threads, a.device)))
        return
    rows = run(tuple(a.detectors.split(",")), a.profile, a.arch, a.steps, a.threads, a.device)
    if a.json:
        print(json.dumps(rows))
        return
    print(f"{'detector':<12}{'arch':<13}{'batch':>6}{'crop':>6}{'step ms':>9}{'data ms':>9}{'images/s':>10}"
          f"{'x dbnet':>9}")
    for r in rows:
        print(f"{r['detector']:<12}{r['arch']:<13}{r['batch']:>6}{r['crop']:>6}{r['median_step_ms']:>9.0f}"
              f"{r['data_ms']:>9.0f}{r['images_per_s']:>10.1f}{r['x_dbnet']:>9.2f}")


if __name__ == "__main__":
    main()
