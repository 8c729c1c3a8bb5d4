"""Detectors on real photos: the released detectors (tcm_kit.zoo), runs of one's own and the peers, scored on the
same benchmark photos with the same metric.

    python -m benchmarks.real_photos --data ../shared/datasets [--detectors NAME ...] [--runs DIR ...]
        [--peers rapidocr craft] [--splits icdar2015/test td500/test] [--sizes PX ...] [--long-side SPLIT=PX]
        [--only NAME ... | --report] [--n N] [--name real_photos]

Each (detector, split, long side) pass writes its detections photo by photo to data/eval/real_photos/ (one JSON
line per photo, with its seconds), so an interrupted pass resumes where it stopped and a slow peer can run in
parts, or in a second process beside the first (`--only craft`); `--report` writes the report from what is
there. The report (reports/<name>.md, .csv) is made from the passes that are complete; an incomplete one is
listed with its count. Nothing is tuned on test photos: a released detector uses the box threshold and long
side chosen on td500/train (`tcm-kit calibrate NAME --data FOLDER`, tcm_kit.calibrate) where its record has them,
else the box threshold its run picked on its synthetic validation split; ICDAR2015 photos keep their own long side
1280, the other splits take the default release's calibrated long side (else 1280) unless --long-side or --sizes
name another. A run of one's own keeps the box threshold its run picked. The peers use their own settings.

hmean: tcm_kit.metrics (IoU > 0.5; ICDAR2015's `###` and TD500's difficult lines are don't care), with a 95 %
interval from resampling the photos (2,000 draws). Where a split has one long side, the differences of the
default release (tcm_kit.zoo.DEFAULT_DETECTOR) against each other detector are paired by photo, with a bootstrap
p-value, Holm-corrected over the table's differences.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_SPLITS = ("icdar2015/test", "td500/test")
N_BOOT = 2000
LEVEL = 0.95

# figures reported by others, for context (not produced by this kit): F-measure (%) on ICDAR2015 test
FIELD = [
    ("EAST trained on SynthText alone, 10 k images", "SynthText3D (Liao et al., AAAI 2020), quoted in issue 34", 46.3),
    ("EAST trained on SynthText alone, all 800 k images", "quoted in issue 34", 57.9),
    ("EAST trained on SynthText3D, 10 k images", "SynthText3D (Liao et al., AAAI 2020), quoted in issue 34", 66.3),
    ("EAST trained on VISD, 10 k images", "VISD (Zhan et al., ECCV 2018), quoted in issue 34", 65.7),
    ("DBNet R18 trained on ICDAR2015 train", "MMOCR model zoo, quoted in issue 33", 81.7),
    ("TCM-DBNet (R50) trained on real data", "Yu et al., CVPR 2023", 88.8),
]


FIELD_HEADING = "## Figures reported by others on ICDAR2015 test (not produced by this kit)"


class RealPhotosError(RuntimeError):
    """A pass that cannot run (no data, unknown detector); the message says what to give instead."""


def cache_dir() -> Path:
    from tcm_kit.utils import data_dir

    return data_dir() / "eval" / "real_photos"


def pass_path(detector: str, weights: str, split: str, size, data_fp: str) -> Path:
    """data/eval/real_photos/<split>/<detector>-<key>.jsonl, the key hashing what makes the detections."""
    key = hashlib.sha256(json.dumps([detector, weights, str(size), data_fp]).encode()).hexdigest()[:12]
    return cache_dir() / split.replace("/", "-") / f"{detector}-{key}.jsonl"


def read_pass(path: Path) -> dict[str, dict]:
    """{photo name: {"dets": [[flat polygon, score], ...], "seconds": s}} of the lines written so far; a last
    line cut short by a kill is skipped (its photo is detected again)."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[row["image"]] = row
    return out


def run_pass(contender, items, path: Path, progress: bool = True) -> dict[str, dict]:
    """Detect every (name, image loader, instances) of `items` not yet in `path`, appending one line a photo."""
    from tqdm.auto import tqdm

    done = read_pass(path)
    todo = [it for it in items if it[0] not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    if todo and path.exists() and not path.read_text().endswith("\n"):
        with open(path, "a") as f:  # end a line cut short by a kill, so the next one starts on its own
            f.write("\n")
    with open(path, "a") as f:
        for name, load, _ in tqdm(todo, desc=f"{contender.name} {path.parent.name}", disable=not progress):
            image = load()
            t0 = time.perf_counter()
            dets = contender.detect(image)
            seconds = time.perf_counter() - t0
            row = {"image": name, "seconds": seconds,
                   "dets": [[np.asarray(p, float).reshape(-1).round(1).tolist(), float(s)] for p, s in dets]}
            f.write(json.dumps(row) + "\n")
            f.flush()
            done[name] = row
    return done


def split_items(folder: Path, n: int | None):
    """[(photo name, loader of its RGB image, instances)] of a benchmark split (first n, None: all)."""
    from tcm_kit.data.formats import read_folder
    from tcm_kit.data.transforms import read_image

    items = []
    for path, instances in read_folder(folder):
        if n is not None and len(items) == n:
            break
        items.append((Path(path).name, lambda p=path: read_image(p), list(instances)))
    return items


def released_contender(name: str, size: int):
    """A released detector (sha256 checked) at long side `size`, with its box threshold for photos
    (tcm_kit.zoo.photo_box_thresh)."""
    from benchmarks.peers import ours_contender
    from tcm_kit.train import load_detector
    from tcm_kit.zoo import photo_box_thresh

    model, cfg, record = load_detector(name)
    box, where = photo_box_thresh(record)
    weights = f"released {name} (sha256 {record['sha256'][:12]}; box_thresh {box:g} {where})"
    return ours_contender(model, name, weights, size, box, trained=True), record


def run_contender_at(run_dir, size: int):
    """benchmarks.peers.run_contender at long side `size`, named after its folder too, and keyed by its full path
    (two runs may share a folder name)."""
    from benchmarks.peers import run_contender

    c = run_contender(run_dir, size)
    c.name = f"{c.name} ({Path(run_dir).name})"
    c.weights = f"{c.weights} at {Path(run_dir).resolve()}"
    return c


def scores(done: dict, items) -> dict:
    """P/R/hmean, the 95 % photo-bootstrap interval of the hmean, median seconds a photo, and per-photo counts."""
    from tcm_kit.claims import dataset_hmean
    from tcm_kit.metrics import aggregate, hmean_iou_per_image

    preds = [[np.asarray(p, np.float32).reshape(-1, 2) for p, _ in done[name]["dets"]] for name, _, _ in items]
    per_image = hmean_iou_per_image(preds, [inst for _, _, inst in items])
    m = aggregate(per_image)
    counts = np.array([[r["tp"], r["n_pred"], r["n_gt"]] for r in per_image])
    idx = np.random.default_rng(0).integers(0, len(counts), (N_BOOT, len(counts)))
    boot = dataset_hmean(counts[idx])
    lo, hi = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    secs = [done[name]["seconds"] for name, _, _ in items]
    return {"precision": m["precision"], "recall": m["recall"], "hmean": m["hmean"], "hmean_lo": float(lo),
            "hmean_hi": float(hi), "median_s": float(np.median(secs)), "counts": counts}


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """hmean(a) - hmean(b) over the same photos: (difference, 95 % interval lo, hi, two-sided bootstrap p)."""
    from tcm_kit.claims import dataset_hmean

    idx = np.random.default_rng(1).integers(0, len(a), (N_BOOT, len(a)))
    d = dataset_hmean(a[idx]) - dataset_hmean(b[idx])
    diff = float(dataset_hmean(a) - dataset_hmean(b))
    lo, hi = np.quantile(d, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()) + 1 / N_BOOT))
    return diff, float(lo), float(hi), p


def sizes_for(split: str, args) -> list:
    """The long sides ours are run at on `split`: its --long-side, else --sizes, else 1280 (PHOTO_SIZE) on
    ICDAR2015 (its photos' own) and on another split the long side the default release was calibrated at on
    td500/train (1280 when it has no calibration)."""
    from tcm_kit.zoo import DEFAULT_DETECTOR, PHOTO_SIZE, ZooError, detector_record

    for spec in args.long_side:
        name, _, px = spec.partition("=")
        if name == split:
            return [int(px)]
    if args.sizes:
        return list(args.sizes)
    if split.startswith("icdar2015/"):
        return [PHOTO_SIZE]
    try:
        cal = detector_record(DEFAULT_DETECTOR).get("photo_calibration")
    except ZooError:
        cal = None
    return [int(cal["long_side"]) if cal else PHOTO_SIZE]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.real_photos", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder laid out like ../shared/datasets (README)")
    ap.add_argument("--detectors", nargs="*", default=None, help="released detectors (default: all in the zoo)")
    ap.add_argument("--runs", nargs="*", default=[], help="run folders of one's own")
    ap.add_argument("--peers", nargs="*", default=["rapidocr", "craft"])
    ap.add_argument("--splits", nargs="*", default=list(DEFAULT_SPLITS))
    ap.add_argument("--only", nargs="*", default=None, help="run these detectors' passes only, write no report")
    ap.add_argument("--report", action="store_true",
                    help="detect nothing: write the report from the passes made so far (an incomplete one is "
                         "listed with its count of photos)")
    ap.add_argument("--n", type=int, default=None, help="first n photos of each split (default: all)")
    ap.add_argument("--sizes", nargs="*", type=int, default=None,
                    help="long sides ours are run at, one row each (default: 1280, ICDAR2015's own)")
    ap.add_argument("--long-side", dest="long_side", action="append", default=[], metavar="SPLIT=PX",
                    help="one split's long side for ours, e.g. td500/test=960 (chosen on td500/train)")
    ap.add_argument("--name", default="real_photos", help="report name in reports/ (default real_photos)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    bad = [s for s in args.long_side if not re.fullmatch(r"[\w./-]+=\d+", s)]
    if bad:
        ap.error(f"--long-side takes SPLIT=PX, e.g. td500/test=960; got {bad}")
    from tcm_kit.data.benchmarks import BenchmarkError
    from tcm_kit.data.formats import AnnotationError
    from tcm_kit.data.transforms import CorruptImageError

    try:
        run(args)
    except (RealPhotosError, BenchmarkError, AnnotationError, CorruptImageError) as e:
        print(f"real_photos: {e}", file=sys.stderr)
        return 1
    return 0


def run(args) -> None:
    import pandas as pd
    import torch

    from benchmarks.peers import peer_contenders
    from tcm_kit.claims import holm
    from tcm_kit.data.benchmarks import find_benchmarks, fingerprint
    from tcm_kit.report import Stamp, save_table
    from tcm_kit.utils import cpu_name
    from tcm_kit.zoo import DEFAULT_DETECTOR, photo_box_thresh, record_evaluation, released_detectors

    torch.set_num_threads(1)
    t0 = time.time()
    found, notes = find_benchmarks(args.data)
    splits = [s for s in args.splits if s in found]
    for s in args.splits:
        if s not in found:
            print(f"{s}: not found in {args.data}, left out", file=sys.stderr)
    if not splits:
        raise RealPhotosError(f"none of {args.splits} in {args.data}")
    names = released_detectors() if args.detectors is None else args.detectors
    names = sorted(names, key=lambda n: n != DEFAULT_DETECTOR)  # the default release first: the reference
    wanted = lambda name: args.only is None or name in args.only  # noqa: E731
    fps = {s: fingerprint(found[s]) for s in splits}
    rows, counts, records = [], {}, {}
    for split in splits:
        items = split_items(found[split], args.n)
        # (contender, long side: ours at each size of the split, the peers at their own, its release record: None
        # for a run folder or a peer)
        contenders = []
        for size in sizes_for(split, args):
            for name in names:
                c, records[name] = released_contender(name, size)
                if wanted(name):
                    contenders.append((c, size, records[name]))
            contenders += [(c, size, None) for c in (run_contender_at(r, size) for r in args.runs) if wanted(c.name)]
        contenders += [(c, "own", None) for c in peer_contenders([p for p in args.peers if wanted(p)], threads=1)]
        for c, size, rec in contenders:
            path = pass_path(c.name, c.weights, split, size, fps[split])
            done = read_pass(path) if args.report else run_pass(c, items, path, not args.quiet)
            row = {"split": split, "detector": c.name, "weights": c.weights, "long side": size,
                   "photos": f"{len(done)}/{len(items)}",  # a release's training steps: budgets may differ
                   "train steps": str(rec["config"]["optim"]["steps"]) if rec else ""}
            if all(name in done for name, _, _ in items):
                s = scores(done, items)
                counts[(split, c.name, size)] = s.pop("counts")
                row.update(s)
            rows.append(row)
    if args.only is not None:
        return
    table = pd.DataFrame(rows)
    diffs = []
    for split in splits:
        if not names or len(sizes_for(split, args)) > 1:  # a comparison of sizes, not of detectors
            continue
        (size,) = sizes_for(split, args)
        ref = counts.get((split, names[0], size))
        for (sp, other, other_size), cnt in counts.items():
            if sp == split and other != names[0] and ref is not None:
                d, lo, hi, p = paired_difference(ref, cnt)
                diffs.append({"split": split, "comparison": f"{names[0]} - {other}", "difference": d,
                              "ci_lo": lo, "ci_hi": hi, "p_boot": p})
    if diffs:
        adj = holm([d["p_boot"] for d in diffs])
        for d, p in zip(diffs, adj):
            d["p_holm"] = float(p)
            d["verdict"] = (f"{'ahead' if d['difference'] > 0 else 'behind'} on these photos" if p < 0.05
                            else "inside the photo noise")
    field = pd.DataFrame([{"detector": n, "source": s, "ICDAR2015 F (%)": f} for n, s, f in FIELD])
    amps = sorted({str(r["result"].get("amp")) for r in records.values()}) or ["fp32"]
    stamp = Stamp(profile="release", seeds=tuple(sorted({r["config"]["seed"] for r in records.values()})) or (0,),
                  wall_seconds=time.time() - t0, precision="+".join(amps),
                  data=", ".join(f"{s} {fps[s]}" for s in splits),
                  note=(f"Photos: all of each split (or the first --n). Ours resize each photo's long side to the "
                        f"`long side` column; a released detector's box threshold and its long side off ICDAR2015 "
                        f"were chosen on td500/train (tcm_kit.calibrate), a run's on its validation split; the peers "
                        f"use their own input sizes. hmean_lo/hi: {LEVEL:.0%} interval over photos ({N_BOOT} "
                        f"draws); median_s: seconds a photo, detection only, one thread, on {cpu_name()}. "
                        f"Nothing here was tuned on these test photos."))
    show = table.drop(columns=[c for c in ("weights",) if c in table]).fillna("")  # blank: pass incomplete
    save_table(show, args.name, "Released detectors and peers on real benchmark photos", stamp, paper=field,
               paper_heading=FIELD_HEADING)
    if diffs:
        note = (f"Each detector is one trained model: the {LEVEL:.0%} interval and the bootstrap p resample the "
                f"photos only ({N_BOOT} draws), not training seeds, so a verdict here says how the released models "
                f"compare on these photos, not whether a method beats another (the releases' training steps are in "
                f"{args.name}.md); seeded comparisons are the claims tables' (tcm_kit.claims). p_holm: Holm over "
                f"the {len(diffs)} differences below.")
        save_table(pd.DataFrame(diffs), f"{args.name}_paired",
                   f"{names[0]} against each detector, paired by photo (Holm over {len(diffs)} differences)",
                   dataclasses.replace(stamp, note=note))
    for row in rows:  # after the tables, so that their stamp names the commit before this writes the records
        # the released detectors' figures go into their records (evaluations)
        if row["detector"] in records and "hmean" in row:
            record_evaluation(row["detector"], {
                "split": row["split"], "data": fps[row["split"]], "long_side": row["long side"],
                **{k: round(float(row[k]), 4) for k in ("precision", "recall", "hmean", "hmean_lo", "hmean_hi")},
                "photos": row["photos"], "box_thresh": photo_box_thresh(records[row["detector"]])[0],
                "commit": stamp.commit, "by": "benchmarks.real_photos"})
    (cache_dir() / "last_table.json").write_text(table.to_json(orient="records", indent=1))
    print(show.to_string(index=False))


if __name__ == "__main__":
    sys.exit(main())
