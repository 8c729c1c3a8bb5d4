"""Speed of the synthetic scene-text generator, one core (prints figures, asserts nothing).

    .venv/bin/python -m benchmarks.synth_speed [--n 40 --size 640 --caption-n 400 --caption-size 224]

Per preset: render_scene images/s at --size (one process, OpenCV single-threaded, CPU time so that other
load on the machine counts less), and the writer's path (_encode_scene: no JPEG decode). Then captioned_scene
images/s at --caption-size (and 128) for the CLIP pre-training. The first image of each run warms the caches
(photos, fonts, noise tile) and is not timed.
"""
from __future__ import annotations

import argparse
import os
import time

import cv2

from tcm_kit.data import synth


def _rate(fn, n: int) -> tuple[float, float]:
    """(images per CPU-second, images per wall-second) over n calls of fn(i)."""
    fn(10_000)  # warm-up
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.process_time() - c0), n / (time.perf_counter() - w0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--caption-n", type=int, default=400)
    ap.add_argument("--caption-size", type=int, default=224)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    print(f"synthetic generator speed, 1 process, {os.cpu_count()} cores visible (load: {os.getloadavg()[0]:.1f})")
    print(f"{'preset':14s} {'size':>5s} {'render img/s (cpu)':>19s} {'(wall)':>7s} {'writer img/s (cpu)':>19s}")
    for name, cfg in synth.PRESETS.items():
        cpu, wall = _rate(lambda i: synth.render_scene(name, 0, i, args.size), args.n)
        wcpu, _ = _rate(lambda i: synth._encode_scene(cfg, 0, i, args.size), args.n)
        print(f"{name:14s} {args.size:5d} {cpu:19.1f} {wall:7.1f} {wcpu:19.1f}")
    for size in sorted({args.caption_size, 128}):
        cpu, wall = _rate(lambda i: synth.captioned_scene(0, i, size), args.caption_n)
        print(f"{'captioned':14s} {size:5d} {cpu:19.1f} {wall:7.1f}")


if __name__ == "__main__":
    main()
