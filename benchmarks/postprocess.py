"""Post-processing time per image for each detection head (prints figures, asserts nothing).

    .venv/bin/python -m benchmarks.postprocess [--size 640 --images 10 --preset synth-ic15]

Maps are the ones a well-trained head would output on real scenes: each head's own training targets of
rendered synthetic scenes (synth-ic15: many straight words; synth-total: curved words), blurred and with noise
added, so contours, kernels and candidate pixels look like a detector's. Times are the head's `decode` alone
(what runs after the network), per image, median and p90 over the images after one warm-up, and the
detections found, with DBNet's time as the ratio base.
"""
from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np


def realistic_maps(family: str, target: dict, rng) -> dict:
    """Decoder inputs from targets: probabilities blurred and noised, regressions jittered."""
    def soft(m, sigma=1.5):  # full-resolution maps; FCENet's stride-8..32 maps get a sub-cell blur
        m = cv2.GaussianBlur(m.astype(np.float32), (0, 0), sigma)
        return np.clip(m * rng.uniform(0.85, 1.0) + rng.normal(0, 0.03, m.shape), 0, 1).astype(np.float32)

    if family == "dbnet":
        return {"prob": soft(target["prob"])}
    if family == "pan":
        ids = target["pan_text_ids"].astype(int)
        vecs = rng.normal(0, 3.0, (ids.max() + 1, 4)).astype(np.float32)
        vecs[0] = 0
        emb = np.moveaxis(vecs[ids], -1, 0) + rng.normal(0, 0.2, (4, *ids.shape)).astype(np.float32)
        return {"text": soft(target["pan_text"]), "kernel": soft(target["pan_kernel"]), "embedding": emb}
    if family == "fcenet":
        out = {}
        for k, v in target.items():
            kind = k.split("_")[0]
            if kind in ("tr", "tcl"):
                out[k] = soft(v, 0.5)
            elif kind == "reg":
                out[k] = (v + rng.normal(0, 0.05, v.shape)).astype(np.float32)
        return out
    raise ValueError(family)


def run(size: int = 640, images: int = 10, presets=("synth-ic15", "synth-total"), threads: int = 1) -> list[dict]:
    """One row per (preset, head): decode time per image (median, p90 ms), ratio to DBNet, detections and gt
    words per image."""
    import torch

    from tcm_kit.clip import create_clip
    from tcm_kit.data.synth import render_scene
    from tcm_kit.detector import HEADS, build_detector

    torch.set_num_threads(threads)
    clip = create_clip("TCM-RN-tiny", seed=0)
    heads = {f: build_detector(f, clip, head=HEADS[f].Config(width=32)).head for f in HEADS}
    rows = []
    for preset in presets:
        scenes = [render_scene(preset, 0, i, size) for i in range(images + 1)]
        base = None
        for family, head in heads.items():
            fn = head.target_fn()
            rng = np.random.default_rng(0)
            maps = [realistic_maps(family, fn(s.instances, size, size), rng) for s in scenes]
            times, dets = [], []
            for i, m in enumerate(maps):
                t0 = time.perf_counter()
                d = head.decode(m, 1.0, box_thresh=0.3)
                if i:  # the first is warm-up
                    times.append(time.perf_counter() - t0)
                    dets.append(len(d))
            med, p90 = 1e3 * np.median(times), 1e3 * np.percentile(times, 90)
            base = base or med
            gts = np.mean([sum(not x.ignore for x in s.instances) for s in scenes[1:]])
            rows.append({"preset": preset, "head": family, "median_ms": float(med), "p90_ms": float(p90),
                         "x_dbnet": float(med / base), "dets_per_img": float(np.mean(dets)),
                         "gt_per_img": float(gts)})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--presets", default="synth-ic15,synth-total")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    a = ap.parse_args(argv)
    rows = run(a.size, a.images, tuple(a.presets.split(",")), a.threads)
    if a.json:
        print(json.dumps(rows))
        return
    print(f"decode time per {a.size}x{a.size} image, {a.images} scenes per preset (+1 warm-up), "
          f"{a.threads} thread(s)")
    print(f"{'preset':12s} {'head':8s} {'median ms':>10s} {'p90 ms':>8s} {'vs dbnet':>9s} {'dets/img':>9s} "
          f"{'gt/img':>7s}")
    for r in rows:
        print(f"{r['preset']:12s} {r['head']:8s} {r['median_ms']:10.1f} {r['p90_ms']:8.1f} {r['x_dbnet']:9.2f} "
              f"{r['dets_per_img']:9.1f} {r['gt_per_img']:7.1f}")


if __name__ == "__main__":
    main()
