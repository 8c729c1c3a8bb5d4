"""Speed of tcm_kit.metrics.hmean_iou on synthetic data (prints figures, asserts nothing).

    .venv/bin/python -m benchmarks.metric_speed [--images 500 --gts 20 --preds 20 --repeats 3]

Each image: `gts` rotated rectangles (2 of them don't-care), predictions = jittered copies of most gts plus
random false positives, so bounding-box overlaps look like a real detector's output.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tcm_kit.data.formats import Instance
from tcm_kit.metrics import best_threshold_sweep, hmean_iou


def _rect(cx, cy, w, h, angle):
    """(4, 2) rotated rectangle."""
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


def make_dataset(n_images: int, n_gts: int, n_preds: int, seed: int = 0, size=(1280, 720)):
    rng = np.random.default_rng(seed)
    preds, gts, scored = [], [], []
    for _ in range(n_images):
        boxes = [_rect(rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(40, 200),
                       rng.uniform(15, 40), rng.uniform(-0.5, 0.5)) for _ in range(n_gts)]
        gts.append([Instance(b, "txt", ignore=k < 2) for k, b in enumerate(boxes)])
        n_hit = min(n_gts, int(0.8 * n_preds))
        p = [b + rng.normal(0, 3, b.shape) for b in boxes[:n_hit]]
        p += [_rect(rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(40, 200),
                    rng.uniform(15, 40), rng.uniform(-0.5, 0.5)) for _ in range(n_preds - n_hit)]
        preds.append(p)
        scored.append([(q, float(rng.uniform())) for q in p])
    return preds, gts, scored


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(images: int = 500, gts: int = 20, preds: int = 20, repeats: int = 3) -> dict:
    """Best-of-`repeats` seconds of hmean_iou and of best_threshold_sweep on the synthetic data set."""
    preds_, gts_, scored = make_dataset(images, gts, preds)
    res = hmean_iou(preds_, gts_)
    t = best_time(lambda: hmean_iou(preds_, gts_), repeats)
    ts = best_time(lambda: best_threshold_sweep(scored, gts_), repeats)
    return {"images": images, "gts": gts, "preds": preds, "repeats": repeats, "hmean_iou_s": t,
            "sweep_s": ts, "precision": res["precision"], "recall": res["recall"], "hmean": res["hmean"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--gts", type=int, default=20)
    ap.add_argument("--preds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    r = run(args.images, args.gts, args.preds, args.repeats)
    if args.json:
        print(json.dumps(r))
        return
    t, ts = r["hmean_iou_s"], r["sweep_s"]
    print(f"hmean_iou: {args.images} images x {args.gts} gts x {args.preds} preds: {t:.3f} s "
          f"({args.images / t:.0f} images/s, best of {args.repeats}); "
          f"P={r['precision']:.3f} R={r['recall']:.3f} H={r['hmean']:.3f}")
    print(f"best_threshold_sweep (13 thresholds): {ts:.3f} s ({args.images / ts:.0f} images/s)")


if __name__ == "__main__":
    main()
