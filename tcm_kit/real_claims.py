"""The paper's claims on real photos: runs on the kit's synthetic scenes and on MSRA-TD500, tested on ICDAR2015 and
TD500, paired by seed, in one claims table (tcm_kit.claims: Holm over the table, hierarchical bootstrap).

    plan = RealPlan.for_profile("real")
    table, runs = real_claims(plan, "../shared/datasets")     # trains what is missing (resumable), then tests

The runs (each a TrainConfig, trained once into tcm_kit.runs.runs_dir()/<run hash>/, resumed after a kill):
  - synthetic: DBNet and TCM-DBNet on synth-ic15 alone (SynthText's role in the paper), one per seed;
  - td500 at each shot: the synthetic run of the same detector and seed fine-tuned on td500/train (the paper's
    pipeline: synthetic pre-training, then real data). Every shot trains the same number of steps, so a shot
    differs from another in the photos it sees, not in compute; 10 % of the photos are then seen ten times as
    often. Validation photos are carved from td500/train (tcm_kit.train.carve_validation) and never trained on.
Nothing is chosen on a test set. A synthetic run's long side and box threshold for photos are chosen on all of
td500/train (tcm_kit.calibrate.calibrate_photos); a td500 run's on its validation photos. ICDAR2015 photos are
always run at their own 1280 px; TD500 test at the chosen long side.

The comparisons (TCM-DBNet − DBNet, paired by seed): (iii) synthetic → icdar2015/test and → td500/test; (ii) at
each shot, and the gain at the smallest shot minus the gain at 1.0; real → real: td500 (all photos) →
icdar2015/test. `python -m tcm_kit.real_claims --data FOLDER [--profile real]` runs it from the command line.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .claims import Comparison, claims_table
from .utils import atomic_write_text, cached_json

__all__ = ["RealPlan", "RealClaimsError", "PartLog", "plan_key", "synth_config", "td500_config", "real_claims",
           "run_table", "save", "stamp_for", "save_few_shot_real", "save_transfer_real", "learning_curves",
           "few_shot_real", "transfer_real", "trained_on", "notebook_runs", "peer_runs", "paper_figures", "PEERS",
           "left_out", "BUDGET_HOURS"]

IC15, TD_TRAIN, TD_TEST = "icdar2015/test", "td500/train", "td500/test"
IC15_SIZE = 1280  # ICDAR2015's photos at their own 1280 x 720


class RealClaimsError(FileNotFoundError):
    """The data folder lacks a split the real-data claims need (the message names it)."""


@dataclass(frozen=True)
class RealPlan:
    """The budget of the real-data claims (RealPlan.for_profile: "smoke" for tests, "real" for the reproduction)."""
    profile: str = "real"
    seeds: tuple = (0, 1, 2)
    detectors: tuple = ("dbnet", "tcm-dbnet")  # (baseline, method)
    # synthetic runs: TrainConfig profile `synth_profile` with these many training images and steps
    synth_profile: str = "cpu"
    synth_train: int = 1000
    synth_steps: int = 3000
    # td500 runs: crops of photos resized to a long side of real_scale x real_train_size, fine-tuned from the
    # synthetic run; real_unclip is DBNet's unclip ratio when it decodes them (reports/NOTES.md: chosen on validation)
    shots: tuple = (0.1, 1.0)
    real_train_size: int = 320
    real_scale: tuple = (1.0, 2.0)
    real_steps: int = 600
    real_lr: float = 1e-3
    real_unclip: float = 0.8
    real_num_val: int = 30  # validation photos carved from td500/train
    photo_sizes: tuple = (640, 960)  # long sides tried on td500/train for a synthetic run (1280 was the worst)
    real_photo_sizes: tuple = (640, 480, 800)  # tried on a td500 run's validation photos; its curve uses the first
    workers: int = 2  # runs trained (and tested) side by side, one thread each (tcm_kit.runs.run_many)
    threads: int = 1

    @classmethod
    def for_profile(cls, profile: str) -> "RealPlan":
        if profile == "smoke":
            return cls(profile="smoke", seeds=(0,), synth_profile="smoke", synth_train=8, synth_steps=2,
                       shots=(0.5, 1.0), real_train_size=64, real_scale=(1.0, 1.5), real_steps=2, real_num_val=2,
                       photo_sizes=(128,), real_photo_sizes=(96, 128), workers=1)
        if profile == "real":
            return cls()
        raise ValueError(f"RealPlan profile is 'smoke' or 'real', got {profile!r}")


def _splits(data) -> dict[str, Path]:
    root = Path(data).expanduser()
    out = {s: root / s for s in (IC15, TD_TRAIN, TD_TEST)}
    missing = [s for s, p in out.items() if not p.is_dir()]
    if missing:
        raise RealClaimsError(f"{root}: {', '.join(missing)} not found; the real-data claims need "
                              f"{', '.join(out)} (the README says where to get them)")
    return out


def synth_config(plan: RealPlan, detector: str, seed: int):
    from .config import TrainConfig

    return TrainConfig.for_profile(plan.synth_profile, detector=detector, domain="synth-ic15", seed=seed,
                                   data=dict(num_train=plan.synth_train), optim=dict(steps=plan.synth_steps),
                                   evaluation=dict(val_every=max(1, plan.synth_steps // 6)), num_workers=0)


def td500_config(plan: RealPlan, detector: str, seed: int, shot: float, data):
    """The td500 run of `detector`, fine-tuned from its finished synthetic run of the same seed."""
    from .calibrate import PHOTO_BOX_THRESHOLDS
    from .config import TrainConfig
    from .runs import run_dir

    start = run_dir(synth_config(plan, detector, seed))
    cfg = TrainConfig.for_profile(
        plan.synth_profile, detector=detector, domain="td500", data_root=str(Path(data).expanduser() / "td500"),
        seed=seed, shot=float(shot), init_from=str(start),
        data=dict(num_val=plan.real_num_val), aug=dict(train_size=plan.real_train_size, scale_range=plan.real_scale),
        optim=dict(steps=plan.real_steps, lr=plan.real_lr),
        evaluation=dict(test_size=plan.real_photo_sizes[0], val_every=max(1, plan.real_steps // 4),
                        box_thresholds=PHOTO_BOX_THRESHOLDS), num_workers=0)
    post = cfg.head.postprocess
    if hasattr(post, "unclip_ratio"):  # DBNet's decoding
        cfg = cfg.updated(head=dataclasses.replace(cfg.head, postprocess=dataclasses.replace(
            post, unclip_ratio=plan.real_unclip)))
    return cfg


# ---------------------------------------------------------------------------------------------------- evaluation

def _choose_on_val(model, cfg, sizes) -> dict:
    """(long side, box threshold) best on a td500 run's validation photos -> {"long_side", "box_thresh", "hmean"}."""
    from .calibrate import PHOTO_BOX_THRESHOLDS
    from .metrics import best_threshold_sweep
    from .train import predict_dataset, split_dataset

    best = None
    for size in sizes:
        val = split_dataset(cfg, "val", False, size=int(size), train=False)
        preds, gts = predict_dataset(model, val, batch_size=1, progress=False, box_thresh=min(PHOTO_BOX_THRESHOLDS))
        b = best_threshold_sweep(preds, gts, thresholds=PHOTO_BOX_THRESHOLDS)["best"]
        if best is None or b["hmean"] > best["hmean"]:
            best = {"long_side": int(size), "box_thresh": b["threshold"], "hmean": b["hmean"]}
    return best


def _test(model, cfg, root: Path, size: int, box: float) -> dict:
    from .train import evaluate_run

    m = evaluate_run(model, cfg, progress=False, test_root=root, box_thresh=box, size=size)
    return {k: m[k] for k in ("precision", "recall", "hmean", "per_image")} | {"long_side": size, "box_thresh": box}


def evaluate_photos(result: dict, cfg, splits: dict, fps: dict, plan: RealPlan, chosen_on: str,
                    targets: tuple = (IC15, TD_TEST)) -> dict:
    """A finished run on the `targets` test splits -> {"choice": ..., split: metrics with per_image}, cached in its
    run folder (real_photos/, keyed by the splits' content fingerprints `fps`). chosen_on "td500/train": long side
    and box threshold chosen on all of td500/train (a synthetic run); "val": on the run's validation photos (a td500
    run)."""
    from .train import load_run

    run = Path(result["run_dir"])
    model = None

    def loaded():
        nonlocal model
        if model is None:
            model = load_run(run)[0]
        return model

    sizes = plan.real_photo_sizes if chosen_on == "val" else plan.photo_sizes

    def choose():
        if chosen_on == "val":
            return _choose_on_val(loaded(), cfg, sizes)
        from .calibrate import calibrate_photos

        c = calibrate_photos(loaded(), splits[TD_TRAIN], sizes=sizes, progress=False)
        return {k: c[k] for k in ("long_side", "box_thresh", "hmean")}

    pick = cached_json(run / "real_photos" / f"choice-{chosen_on.replace('/', '_')}-{fps[TD_TRAIN]}-"
                                             f"{'-'.join(str(z) for z in sizes)}.json", choose)
    out = {"choice": pick}
    for split in targets:
        size = IC15_SIZE if split == IC15 else pick["long_side"]
        name = f"{split.replace('/', '_')}-{fps[split]}-{size}-{pick['box_thresh']:g}.json"
        path = run / "real_photos" / name
        out[split] = cached_json(path, lambda s=split, z=size: _test(loaded(), cfg, splits[s], z, pick["box_thresh"]))
    return out


def _evaluate_job(job) -> dict:
    import torch

    torch.set_num_threads(job[-1])
    return evaluate_photos(*job[:-1])


def _map(workers: int, fn, jobs: list) -> list:
    """fn over jobs, in `workers` spawned processes when there are several."""
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            return pool.map(fn, jobs, chunksize=1)
    return [fn(j) for j in jobs]


# ---------------------------------------------------------------------------------------------------- the plan

def trained_on(shot) -> str:
    """The runs' "trained on" label: "synth-ic15" for a synthetic run (shot None), "td500 x<shot>" for a td500 run."""
    return "synth-ic15" if shot is None else f"td500 x{shot:g}"


def _result(metrics: dict, seed: int, amp: str) -> dict:
    return {"hmean": metrics["hmean"], "per_image": metrics["per_image"], "seed": seed, "amp": amp}


def plan_key(plan: RealPlan) -> str:
    """What identifies a plan's results: the hash of its fields but `workers` and `threads` (how it runs, not what)."""
    from .utils import config_hash

    fields = dataclasses.asdict(plan)
    for how in ("workers", "threads"):
        fields.pop(how)
    return config_hash(fields)[:8]


class PartLog:
    """The parts of a plan that runs in several sittings: each call of real_claims is a part, recorded in
    runs_dir()/real_claims-<profile>-<plan_key>-parts.json as {start, last, cpu, precision, workers}, refreshed
    every `every` seconds from a daemon thread, so a part killed without warning still counts up to its last
    heartbeat. `total()` is the sum of the parts' (last - start): the plan's wall time over all its sittings. A
    changed plan starts a log of its own (runs it shares with an earlier plan are read back, their time is not
    counted again)."""

    def __init__(self, plan: RealPlan, every: float = 30.0):
        from .runs import runs_dir

        self.path = runs_dir() / f"real_claims-{plan.profile}-{plan_key(plan)}-parts.json"
        self.every = every
        self.workers = plan.workers
        self.key = None

    def parts(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def total(self) -> float:
        return float(sum(p["last"] - p["start"] for p in self.parts().values()))

    def _beat(self) -> None:
        parts = self.parts()
        parts[self.key]["last"] = time.time()
        atomic_write_text(self.path, json.dumps(parts, indent=1))

    def __enter__(self):
        import threading

        from .precision import precision_for
        from .utils import cpu_name

        parts = self.parts()
        now = time.time()
        self.key = str(len(parts))
        parts[self.key] = {"start": now, "last": now, "cpu": cpu_name(), "precision": precision_for(),
                          "workers": self.workers}
        atomic_write_text(self.path, json.dumps(parts, indent=1))
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.every):
                self._beat()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._beat()
        return False


def real_claims(plan: RealPlan, data, progress: bool = True):
    """Train what is missing, test every run -> (claims table, runs table). Resumable: runs and evaluations are
    cached (tcm_kit.runs.runs_dir()), so a second call after a kill goes on where the first stopped."""
    _splits(data)  # a missing split is an error before any part is logged
    with PartLog(plan):
        return _real_claims(plan, data, progress)


def _real_claims(plan: RealPlan, data, progress: bool):
    from .runs import run_many

    from .data.benchmarks import fingerprint

    splits = _splits(data)
    fps = {s: fingerprint(p) for s, p in splits.items()}  # once: each hashes every photo of its split
    base, method = plan.detectors
    top = max(plan.shots)
    keys = [("synthetic", d, s, None) for s in plan.seeds for d in plan.detectors]
    cfgs = {k: synth_config(plan, k[1], k[2]) for k in keys}
    results = dict(zip(keys, run_many(plan, list(cfgs.values()), "synthetic runs", progress)))
    td_keys = [("td500", d, s, shot) for shot in plan.shots for s in plan.seeds for d in plan.detectors]
    td_cfgs = {k: td500_config(plan, k[1], k[2], k[3], data) for k in td_keys}  # after their synthetic runs
    results.update(zip(td_keys, run_many(plan, list(td_cfgs.values()), "td500 runs", progress)))
    cfgs.update(td_cfgs)
    # ICDAR2015 for the synthetic runs and the td500 runs on all photos (real -> real); TD500 test for every run
    targets = {k: (IC15, TD_TEST) if k[0] == "synthetic" or k[3] == top else (TD_TEST,) for k in results}
    jobs = [(results[k], cfgs[k], splits, fps, plan, "td500/train" if k[0] == "synthetic" else "val", targets[k],
             plan.threads) for k in results]
    evals = dict(zip(results, _map(plan.workers, _evaluate_job, jobs)))
    rows, res = [], {}
    for k, ev in evals.items():
        kind, det, seed, shot = k
        result = results[k]
        amp = str(result.get("amp", "fp32"))
        res[k] = {s: _result(ev[s], seed, amp) for s in targets[k]}
        for split in targets[k]:
            rows.append({"trained on": trained_on(shot), "shot": shot, "detector": det, "seed": seed,
                         "tested on": split, "long side": ev[split]["long_side"], "box_thresh": ev[split]["box_thresh"],
                         **{m: ev[split][m] for m in ("precision", "recall", "hmean")},
                         "train_seconds": result.get("train_seconds"), "run": Path(result["run_dir"]).name})

    def group(kind, det, shot, split):
        return tuple(res[(kind, det, s, shot)][split] for s in plan.seeds)

    comps = [Comparison("iii", f"{method} − {base}, synth-ic15 → {split}", group("synthetic", method, None, split),
                        group("synthetic", base, None, split)) for split in (IC15, TD_TEST)]
    comps += [Comparison("ii", f"{method} − {base}, td500 at shot {shot:g}", group("td500", method, shot, TD_TEST),
                         group("td500", base, shot, TD_TEST)) for shot in plan.shots]
    lo, hi = min(plan.shots), max(plan.shots)
    comps.append(Comparison("ii", f"gain at shot {lo:g} − gain at shot {hi:g} (td500)",
                            group("td500", method, lo, TD_TEST), group("td500", base, lo, TD_TEST),
                            group("td500", method, hi, TD_TEST), group("td500", base, hi, TD_TEST)))
    comps.append(Comparison("real → real", f"{method} − {base}, td500 x{hi:g} → {IC15}",
                            group("td500", method, hi, IC15), group("td500", base, hi, IC15)))
    import pandas as pd

    return claims_table(comps), pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- peers

PEERS = ("rapidocr", "craft")
# peers detected now when their pass is missing; CRAFT is only read back from benchmarks.real_photos' passes
# (`make real-photos DATA=`), since its two splits took 8,706 s on one thread of an AMD EPYC, over half of the
# real-data reproduction's budget (rapidocr: 474 s)
PEERS_RUN_NOW = ("rapidocr",)


def _benchmarks():
    """benchmarks.real_photos and benchmarks.peers: they live in the repository beside tcm_kit, not in the
    installed package, so the repository root joins sys.path when a notebook runs from notebooks/."""
    import sys

    from .utils import REPO_ROOT

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import peers, real_photos

    return peers, real_photos


def peer_runs(data, peers=PEERS, run_now=PEERS_RUN_NOW, progress: bool = True):
    """The peers (rapidocr, CRAFT; the `bench` extra) on icdar2015/test and td500/test, on the same photos and with
    the same metric as the runs -> (rows like real_claims' runs table, one-line notes on what is left out). A
    peer's detections are benchmarks.real_photos' passes (data/eval/real_photos/, keyed by the peer's weights and
    the split's fingerprint): read back when complete, else made now for the peers in `run_now`."""
    notes, rows = [], []
    try:
        bench_peers, rp = _benchmarks()
        from benchmarks.peer_models import PeerUnavailableError
    except ImportError as e:
        return [], [f"peers left out: {e.name or e} is not installed (`pip install -e '.[bench]'` brings them)"]
    contenders = []
    for name in peers:  # one at a time: a peer whose package or weights are missing is a note, the others still run
        try:
            contenders += bench_peers.peer_contenders([name], threads=1)
        except (ImportError, PeerUnavailableError) as e:
            notes.append(f"{name} left out: {e}")
    from .data.benchmarks import fingerprint

    splits = _splits(data)
    for split in (IC15, TD_TEST):
        items = rp.split_items(splits[split], None)
        fp = fingerprint(splits[split])
        for c in contenders:
            path = rp.pass_path(c.name, c.weights, split, "own", fp)
            done = rp.read_pass(path)
            if len(done) < len(items) and c.name in run_now:
                done = rp.run_pass(c, items, path, progress)
            if not all(name in done for name, _, _ in items):
                notes.append(f"{c.name} on {split}: {len(done)}/{len(items)} photos detected, left out "
                             f"(`make real-photos DATA=` detects the rest and resumes where it stops)")
                continue
            m = rp.scores(done, items)
            rows.append({"trained on": "(the peer's own data)", "detector": c.name, "seed": None, "tested on": split,
                         "long side": "own", "box_thresh": None, "precision": m["precision"],
                         "recall": m["recall"], "hmean": m["hmean"], "train_seconds": None,
                         "run": f"{c.weights}; detections {path.relative_to(rp.cache_dir())}"})
    return rows, notes


def paper_figures():
    """The paper's and the field's figures beside ours (F-measure %, for display only; not made by this kit)."""
    import pandas as pd

    rows = [("TCM-DBNet (CLIP RN50), real training data", "ICDAR2015", "F (%)", "88.8", "Yu et al., CVPR 2023"),
            ("TCM-DBNet (CLIP RN50), real training data", "MSRA-TD500", "F (%)", "88.8", "Yu et al., CVPR 2023"),
            ("TCM − baseline at 10 % of the training data, on average", "four benchmarks", "F points", "+22",
             "Yu et al., CVPR 2023"),
            ("EAST trained on SynthText alone (800 k images)", "ICDAR2015", "F (%)", "57.9", "quoted in issue 33"),
            ("DBNet R18 trained on ICDAR2015 train", "ICDAR2015", "F (%)", "81.7", "MMOCR model zoo")]
    return pd.DataFrame(rows, columns=["method", "dataset", "metric", "value", "source"])


# the real-data reproduction's time budget on a 2-core machine of this kind, in hours, by training precision
# (issue 33; the README's real-data section)
BUDGET_HOURS = {"bf16": 4.0, "fp32": 8.0}
LEFT_OUT_HEADING = "## Cells left out, and why"


def left_out(plan: RealPlan, runs, wall_seconds: float, precision: str):
    """The cells of the paper's claims that this Plan does not run -> DataFrame: claim, cell, the runs it would add
    and their training time, estimated from this Plan's own runs (mean train_seconds of its synthetic and td500 runs
    of each detector at the top shot, `plan.workers` side by side; evaluation not counted), beside the Plan's own
    wall time and the budget."""
    import pandas as pd

    from .experiments import ABLATION_LADDER

    base, method = plan.detectors
    top = trained_on(max(plan.shots))
    per_run = runs.drop_duplicates("run").groupby(["trained on", "detector"])["train_seconds"].mean()

    def pair(det):  # seconds of one seed's synthetic run and its td500 fine-tuning
        return float(per_run[(trained_on(None), det)] + per_run[(top, det)])

    n = len(plan.seeds)
    middle = len(ABLATION_LADDER) - 2  # the ladder's rungs between DBNet and TCM-DBNet, both of which the Plan runs
    # (i): 2 heads x 2 forms (with and without TCM) x 2 stages (synthetic, td500) x n seeds; (iv): rungs x 2 x n
    cells = [("i", f"PAN and FCENet, each with and without TCM, synthetic then {top}", 2 * 2 * 2 * n,
              2 * n * (pair(base) + pair(method)), f"at {base}'s and {method}'s time a run; PAN's and FCENet's differ"),
             ("iv", f"the ablation ladder's {middle} middle rungs, synthetic then {top}", 2 * middle * n,
              middle * n * pair(method), f"at {method}'s time a run")]
    budget = BUDGET_HOURS.get(precision, BUDGET_HOURS["fp32"])
    rows = []
    for claim, cell, n_runs, seconds, basis in cells:
        hours = seconds / plan.workers / 3600
        why = (f"{hours:.1f} h of training ({basis}) on top of the Plan's own {wall_seconds / 3600:.1f} h, against a "
               f"budget of {budget:g} h in {precision}")
        rows.append({"claim": claim, "cell": cell, "runs": n_runs, "training (h)": hours, "why": why})
    return pd.DataFrame(rows)


def notebook_runs(profile: str, data):
    """The real-data Plan for a notebook's profile ("smoke" -> RealPlan "smoke", else "real") -> (plan, claims
    table, runs table), trained where missing (cached). (plan, None, None) when data is None, or, with the one-line
    reason printed, when a split is missing, so the notebook's other cells go on."""
    plan = RealPlan.for_profile("smoke" if profile == "smoke" else "real")
    if data is None:
        return plan, None, None
    try:
        return (plan, *real_claims(plan, data))
    except RealClaimsError as e:
        print(e)
        return plan, None, None


def run_table(runs):
    """Mean, sd and count of each (trained on, detector, tested on) over seeds, from real_claims' runs table."""
    g = runs.groupby(["trained on", "detector", "tested on"], sort=False)["hmean"]
    return g.agg(["mean", "std", "count"]).reset_index().rename(columns={"mean": "hmean", "std": "sd",
                                                                         "count": "seeds"})


def learning_curves(plan: RealPlan, data):
    """The validation curves of the plan's runs (val_curve.csv; the synthetic runs on their synthetic validation
    split, the td500 runs on the photos carved from td500/train): columns detector ("<detector> · <trained on>",
    so tables.plateau_table and plots.plot_learning_curves take one line per kind of run), seed, step, hmean.
    Reads what is on disk; a run not trained yet has no rows."""
    import pandas as pd

    from .runs import run_dir
    from .train import read_val_curve

    rows = []
    for shot in (None, *plan.shots):
        for det in plan.detectors:
            for seed in plan.seeds:
                cfg = synth_config(plan, det, seed) if shot is None else td500_config(plan, det, seed, shot, data)
                label = f"{det} · {trained_on(shot)}"
                rows += [{"detector": label, "seed": seed, "step": p["step"], "hmean": p["hmean"]}
                         for p in read_val_curve(run_dir(cfg))]
    return pd.DataFrame(rows, columns=["detector", "seed", "step", "hmean"])


def few_shot_real(runs):
    """The few-shot curve on TD500 from real_claims' runs table: TD500 test hmean of each (detector, shot), mean and
    sd over seeds -> rows like tables.aggregate_few_shot (plots.plot_few_shot draws it). Shot 0 is the synthetic run
    itself, before any TD500 photo: the start of every fine-tuning."""
    td = runs[runs["tested on"] == TD_TEST].assign(shot=lambda d: d["shot"].fillna(0.0))
    g = td.groupby(["detector", "shot"], sort=True)["hmean"]
    out = g.agg(hmean_mean="mean", hmean_std="std", n_seeds="count").reset_index()
    return out[["shot", "detector", "hmean_mean", "hmean_std", "n_seeds"]]


def transfer_real(runs):
    """The transfer matrix on real photos from real_claims' runs table, in tables.transfer_table's long form
    (train_domain, test_domain, detector, hmean: mean over seeds; plots.plot_transfer_heatmap draws it): the runs
    tested on both benchmarks (synthetic, and td500 on all its photos) against icdar2015/test and td500/test."""
    both = runs.groupby("trained on")["tested on"].transform("nunique") == 2
    g = runs[both].groupby(["trained on", "detector", "tested on"], sort=False)["hmean"]
    out = g.agg(hmean="mean", hmean_sd="std", n_seeds="count").reset_index()
    out = out.rename(columns={"trained on": "train_domain", "tested on": "test_domain"})
    out.insert(2, "in_domain", out["train_domain"].str.startswith("td500") & (out["test_domain"] == TD_TEST))
    return out


def save_few_shot_real(plan: RealPlan, data, runs):
    """reports/few_shot_real.md and few_shot_real_curve.png from real_claims' runs table -> (table, figure)."""
    from .plots import plot_few_shot
    from .report import save_figure, save_table

    table = few_shot_real(runs)
    stamp = stamp_for(plan, data, PartLog(plan).total())
    save_table(table, "few_shot_real", "Few-shot on MSRA-TD500 test: hmean vs shot, DBNet vs TCM-DBNet", stamp)
    fig = plot_few_shot(table[table["shot"] > 0], title="Few-shot on MSRA-TD500 (after synthetic pre-training)")
    save_figure(fig, "few_shot_real_curve", "Few-shot curve on MSRA-TD500", stamp)
    return table, fig


def save_transfer_real(plan: RealPlan, data, runs):
    """reports/transfer_real.md and transfer_real_heatmap.png from real_claims' runs table -> (long table, matrix,
    figure)."""
    from .plots import plot_transfer_heatmap
    from .report import save_figure, save_table

    long = transfer_real(runs)
    stamp = stamp_for(plan, data, PartLog(plan).total())
    matrix = long.pivot_table(index=["train_domain", "detector"], columns="test_domain", values="hmean",
                              sort=False).reset_index()
    save_table(matrix, "transfer_real", "Transfer on real photos: test hmean (mean over seeds)", stamp)
    fig = plot_transfer_heatmap(long, title="Transfer on real photos, test hmean")
    save_figure(fig, "transfer_real_heatmap", "Transfer heat-map on real photos", stamp)
    return long, matrix, fig


def stamp_for(plan: RealPlan, data, wall_seconds: float):
    """The Stamp of the real-data claims' tables and figures: the plan, its seeds and the data's fingerprints."""
    from .data.benchmarks import fingerprint
    from .report import Stamp

    fps = ", ".join(f"{s} {fingerprint(Path(data).expanduser() / s)}" for s in (IC15, TD_TRAIN, TD_TEST))
    note = (f"RealPlan {plan.profile}: {dataclasses.asdict(plan)}. Paired by seed; verdicts from p_holm "
            f"(tcm_kit.claims: the larger of the seed t-test's and the hierarchical bootstrap's p, Holm over the "
            f"table). Long sides and box thresholds chosen on td500/train (synthetic runs) or the runs' validation "
            f"photos carved from it (td500 runs), never on a test set. Both benchmarks are scored with the ICDAR 2015 "
            f"rule (tcm_kit.metrics: polygon IoU > 0.5, one-to-one, `###` and TD500's difficult lines don't care), "
            f"as MMOCR's HmeanIOUMetric and the authors' code score TD500, not with TD500's own rule (rotated "
            f"rectangles, angle within pi/8, overlap of the de-rotated boxes > 0.5): ours are polygons with no "
            f"angle, and one rule keeps the two test sets comparable.")
    return Stamp(profile=plan.profile, seeds=plan.seeds, wall_seconds=wall_seconds, data=fps, note=note)


def save(plan: RealPlan, data, table, runs, wall_seconds: float, peers=None) -> None:
    """Write reports/claims_real.md (with the paper's figures beside it) and claims_real_runs.md (each run's mean
    over seeds, then the peers' rows from peer_runs when given), stamped with the data."""
    import pandas as pd

    from .report import save_table

    stamp = stamp_for(plan, data, wall_seconds)
    save_table(table, "claims_real", "The paper's claims on real photos: paired differences and verdicts", stamp,
               paper=paper_figures(), paper_heading="## The paper's and the field's figures (not made by this kit)",
               sections=[(LEFT_OUT_HEADING, left_out(plan, runs, wall_seconds, stamp.precision))])
    means = run_table(runs)
    if peers:
        cols = ["trained on", "detector", "tested on", "hmean"]
        means = pd.concat([means, pd.DataFrame(peers)[cols].assign(sd=float("nan"), seeds=1)], ignore_index=True)
    save_table(means, "claims_real_runs", "Real-data runs and the peers on the same photos: hmean over seeds", stamp)


def main(argv=None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m tcm_kit.real_claims", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder laid out like ../shared/datasets")
    ap.add_argument("--profile", choices=["smoke", "real"], default="real")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    plan = RealPlan.for_profile(args.profile)
    try:
        table, runs = real_claims(plan, args.data, progress=not args.quiet)
    except RealClaimsError as e:
        print(f"real_claims: {e}", file=sys.stderr)
        return 1
    with PartLog(plan):  # a part of its own: the peers' time counts in the plan's wall time
        peers, notes = peer_runs(args.data, progress=not args.quiet)
    for line in notes:
        print(line, file=sys.stderr)
    save(plan, args.data, table, runs, PartLog(plan).total(), peers)
    print(table[["claim", "comparison", "n_seeds", "difference", "p_holm", "verdict", "detectable"]].to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
