"""The pandas tables of notebooks 01-05: each runs its plan's configs (`tcm_kit.runs`, cached by config hash) and
puts their numbers in one DataFrame.

    plan = Plan.for_profile("cpu")
    ablation_table(plan)                       # 02: TCM's components on one by one
    tau_lambda_table(plan)                     # 02: τ x λ grid
    few_shot_table(plan)                       # 03: hmean vs shot, mean ± std over seeds
    transfer_matrix(transfer_table(plan))      # 04: train on a domain, test on every domain
    detector_table(plan, detectors=[...])      # 05: each detector with and without TCM, each domain
    step0_score_table("cpu")                   # 01: TCM's score map P before any training
    claims_table(plan)                         # 06: the paper's claims, paired over seeds, with intervals
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import train as T
from .experiments import (METRICS, STEP0_VARIANTS, ExperimentError, Plan, ablation_configs, as_plan, claim_specs,
                          detector_configs, few_shot_configs, tau_lambda_configs, transfer_configs)
from .runs import torch_threads, cross_evaluate, result_metrics, run_dir, run_many
from .train import TrainConfig
from .utils import atomic_write_text


# ---------------------------------------------------------------------------------------------------- 01 / 02 P's AUC

def _score_map_auc(cfg: TrainConfig, n_images: int, trained: bool) -> dict:
    """score_map_auc of the run's model on n_images of its test split: the model `fit` starts from (same seed,
    same CLIP) or, trained=True, the run's checkpoint; at the test size's short side for a (long, short) pair."""
    from .inspection import score_map_auc
    from .utils import seed_everything

    root = T.split_dir(cfg, "test", progress=False)
    test_size = cfg.evaluation.test_size
    size = test_size if isinstance(test_size, int) else min(test_size)
    if trained:
        model = T.load_run(run_dir(cfg))[0]
    else:
        seed_everything(cfg.seed)  # as fit() does before build_model: the same initial weights
        model = T.build_model(cfg, progress=False)
    return {**score_map_auc(model, root, size, max_images=n_images), "test_size": size}


def score_auc(cfg: TrainConfig, n_images: int = 50) -> dict:
    """Text-cell AUC of a tcm-* run's score map P on n_images of its test split, at step 0 (the model `fit`
    starts from: same seed, same CLIP) and after training (the run's checkpoint) -> dict(step0, trained).

    Cached beside the run (run_dir/score_auc.json, keyed by run hash and n_images); {} for other detectors."""
    if not cfg.detector.startswith("tcm-") or n_images < 1:
        return {}
    d = run_dir(cfg)
    cache, h = d / "score_auc.json", T.run_hash(cfg)
    if cache.exists():
        c = json.loads(cache.read_text())
        if T.is_run_of(cfg, c.get("config_hash")) and c.get("n_images") == n_images:
            return {"step0": c["step0"], "trained": c["trained"]}
    step0 = _score_map_auc(cfg, n_images, trained=False)["auc"]
    trained = _score_map_auc(cfg, n_images, trained=True)["auc"]
    atomic_write_text(cache, json.dumps({"config_hash": h, "n_images": n_images, "step0": step0,
                                         "trained": trained}))
    return {"step0": step0, "trained": trained}


def step0_score_table(profile: str = "cpu", domain: str = "synth-ic15", n_images: int = 60, seed: int = 0,
                      progress: bool = True) -> pd.DataFrame:
    """Text-cell AUC of TCM's score map P before any detector training (tcm-dbnet of the profile, seed `seed`),
    on n_images of the domain's test split at the profile's test size: one row per STEP0_VARIANTS entry."""
    rows = []
    for label, flags in tqdm(STEP0_VARIANTS.items(), desc="score map at step 0", disable=not progress):
        cfg = TrainConfig.for_profile(profile, detector="tcm-dbnet", domain=domain, seed=seed, tcm=flags)
        r = _score_map_auc(cfg, n_images, trained=False)
        rows.append({"variant": label, "prompt_init": cfg.tcm.prompt_init, "dense_attention": cfg.tcm.dense_attention,
                     "P_auc_step0": r["auc"], "n_images": r["n_images"], "n_pos_cells": r["n_pos_cells"],
                     "n_neg_cells": r["n_neg_cells"], "test_size": r["test_size"], "clip_weights": cfg.clip_weights})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- 02 ablations

def _tcm_columns(cfg: TrainConfig) -> dict:
    if not cfg.detector.startswith("tcm-"):
        return {"score_map": False, "learnable_prompt": False, "language_prompt": False, "visual_prompt": False,
                "aux_weight": 0.0, "context_decoder": False, "prompt": "-"}
    t = cfg.tcm
    return {"score_map": t.score_map, "learnable_prompt": t.learnable_prompt, "language_prompt": t.language_prompt,
            "visual_prompt": t.visual_prompt, "aux_weight": float(t.aux_weight), "context_decoder": t.context_decoder,
            "prompt": t.prompt}


def ablation_table(plan: Plan | str, seed: int = 0, domain: str | None = None,
                   data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per variant: its switches, P/R/hmean on the same test split, Δhmean vs the DBNet baseline."""
    plan = as_plan(plan)
    configs = ablation_configs(plan, seed, domain, data_roots)
    results = run_many(plan, list(configs.values()), "ablations", progress)
    rows = []
    for (label, cfg), r in zip(configs.items(), results):
        auc = score_auc(cfg, plan.score_auc_images) if cfg.tcm is not None and cfg.tcm.score_map else {}
        rows.append({"variant": label, **_tcm_columns(cfg), **result_metrics(r),
                     "P_auc_step0": auc.get("step0", np.nan), "P_auc": auc.get("trained", np.nan),
                     "config": T.run_hash(cfg)})
    df = pd.DataFrame(rows)
    df.insert(df.columns.get_loc("hmean") + 1, "delta_hmean", df["hmean"] - df["hmean"].iloc[0])
    return df


def tau_lambda_table(plan: Plan | str, seed: int = 0, domain: str | None = None,
                     taus: Sequence[float] | None = None, aux_weights: Sequence[float] | None = None,
                     data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per (τ, λ) of the grid: P/R/hmean of TCM-DBNet."""
    plan = as_plan(plan)
    configs = tau_lambda_configs(plan, seed, domain, taus, aux_weights, data_roots)
    results = run_many(plan, list(configs.values()), "tau x lambda", progress)
    return pd.DataFrame([{"tau": t, "lambda": lam, **result_metrics(r), "config": T.run_hash(c)}
                         for ((t, lam), c), r in zip(configs.items(), results)])


# ---------------------------------------------------------------------------------------------------- 03 few-shot

def few_shot_runs(plan: Plan | str, shots: Sequence[float] | None = None, seeds: Sequence[int] | None = None,
                  detectors: Sequence[str] | None = None, domain: str | None = None,
                  data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per run: detector, shot, seed, train_images, P/R/hmean."""
    plan = as_plan(plan)
    configs = few_shot_configs(plan, shots, seeds, detectors, domain, data_roots)
    results = run_many(plan, configs, "few-shot", progress)
    return pd.DataFrame([{"detector": c.detector, "shot": c.shot, "seed": c.seed,
                          "train_images": int(r.get("train_images", -1)), **result_metrics(r), "config": T.run_hash(c)}
                         for c, r in zip(configs, results)])


def aggregate_few_shot(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN with one seed) of each metric over seeds, per (detector, shot)."""
    g = runs.groupby(["detector", "shot"], sort=False)
    out = g.agg(n_seeds=("seed", "nunique"), train_images=("train_images", "first"))
    for m in METRICS:
        out[f"{m}_mean"] = g[m].mean()
        out[f"{m}_std"] = g[m].std(ddof=1)
    return out.reset_index().sort_values(["detector", "shot"], kind="stable").reset_index(drop=True)


def few_shot_table(plan: Plan | str, shots: Sequence[float] | None = None, seeds: Sequence[int] | None = None,
                   detectors: Sequence[str] | None = None, domain: str | None = None,
                   data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """hmean (and P, R) vs shot per detector, mean ± std over seeds (3+ seeds on the small shots in `cpu`)."""
    return aggregate_few_shot(few_shot_runs(plan, shots, seeds, detectors, domain, data_roots, progress))


def few_shot_gain(table: pd.DataFrame, baseline: str = "dbnet", method: str = "tcm-dbnet") -> pd.DataFrame:
    """Per shot: the two mean hmeans and their difference (method - baseline)."""
    p = table.pivot(index="shot", columns="detector", values="hmean_mean")
    if baseline not in p or method not in p:
        raise ExperimentError(f"few-shot table lacks {baseline!r} or {method!r}: has {list(p.columns)}")
    return pd.DataFrame({"shot": p.index, baseline: p[baseline].values, method: p[method].values,
                         "gain": (p[method] - p[baseline]).values})


# ---------------------------------------------------------------------------------------------------- 04 transfer

def transfer_table(plan: Plan | str, domains: Sequence[str] | None = None,
                   detectors: Sequence[str] | None = None, seed: int = 0,
                   data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """Long table: one row per (detector, train_domain, test_domain) with P/R/hmean; in_domain marks the
    diagonal. Each detector is trained once per training domain (plan.transfer_sources, default all) and tested
    on every domain's test split."""
    plan = as_plan(plan)
    configs = transfer_configs(plan, domains, detectors, seed, data_roots)
    tests = transfer_configs(plan, domains, detectors, seed, data_roots, trained=False)
    results = run_many(plan, configs, "transfer: train", progress)
    rows = []
    # the cross-domain tests run alone, after training: they get the threads of all workers
    with torch_threads(None if plan.threads is None else plan.threads * max(1, plan.workers)):
        for cfg, r in tqdm(list(zip(configs, results)), desc=f"transfer: test [{plan.profile}]", unit="run",
                           disable=not progress):
            targets = [c for c in tests if c.detector == cfg.detector]
            for t, m in zip(targets, cross_evaluate(r, cfg, targets)):
                rows.append({"detector": cfg.detector, "train_domain": cfg.domain, "test_domain": t.domain,
                             "in_domain": t.domain == cfg.domain, **result_metrics(m)})
    return pd.DataFrame(rows)


def transfer_matrix(long: pd.DataFrame, metric: str = "hmean") -> pd.DataFrame:
    """Wide: rows (detector, train_domain), one column per test domain, plus the mean over the other domains."""
    test_domains = list(dict.fromkeys(long["test_domain"]))
    wide = long.pivot_table(index=["detector", "train_domain"], columns="test_domain", values=metric,
                            sort=False)[test_domains]
    off = long[~long["in_domain"]].groupby(["detector", "train_domain"], sort=False)[metric].mean()
    wide["mean on other domains"] = off.reindex(wide.index).values
    wide = wide.reset_index()
    wide.columns.name = None
    return wide


# ---------------------------------------------------------------------------------------------------- 05 main table

def detector_table(plan: Plan | str, detectors: Sequence[str] | None = None, domains: Sequence[str] | None = None,
                   seed: int = 0, data_roots: Mapping[str, str] | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """The main table: one row per (domain, detector), P/R/hmean, and for tcm-X the hmean gain over X."""
    plan = as_plan(plan)
    configs = detector_configs(plan, detectors, domains, seed, data_roots)
    results = run_many(plan, configs, "detectors", progress)
    df = pd.DataFrame([{"domain": c.domain, "detector": c.detector, **result_metrics(r), "config": T.run_hash(c)}
                       for c, r in zip(configs, results)])
    plain = df.set_index(["domain", "detector"])["hmean"]  # tcm-X is compared with X on the same domain
    gain = [h - plain.get((d, det[4:]), np.nan) if det.startswith("tcm-") else np.nan
            for d, det, h in zip(df["domain"], df["detector"], df["hmean"])]
    df.insert(df.columns.get_loc("hmean") + 1, "tcm_gain", gain)
    return df


def paper_main_table() -> pd.DataFrame:
    """The paper's reported F-measures (authors' README / CVPR 2023 paper), in %: for side-by-side display only."""
    f, gain = "F-measure (%)", "TCM gain (F points)"
    rows = [("TCM-DBNet (CLIP RN50)", "MSRA-TD500", f, 88.8), ("TCM-DBNet (CLIP RN50)", "ICDAR2015", f, 88.8),
            ("TCM-DBNet (CLIP RN50)", "CTW1500", f, 85.1), ("TCM-DBNet (CLIP RN50)", "Total-Text", f, 85.9),
            ("TCM-DBNet vs DBNet", "ICDAR2015", gain, 1.9), ("TCM-PAN vs PAN", "ICDAR2015", gain, 1.7),
            ("TCM-FCENet vs FCENet", "ICDAR2015", gain, 0.9)]
    rows = [(m, d, k, f"{v:+.1f}" if k == gain else f"{v:.1f}") for m, d, k, v in rows]  # as printed in the paper
    return pd.DataFrame(rows, columns=["method (paper)", "dataset", "metric", "value (paper)"])


# ---------------------------------------------------------------------------------------------------- 06 claims

def compare_runs(plan: Plan | str, comparisons: Sequence, desc: str, progress: bool = True,
                 n_boot: int = 2000) -> pd.DataFrame:
    """Train (or read back) the runs of planned claims.Comparisons of configs, cross-evaluate those with a test_on
    domain, and return their rows with intervals and verdicts (tcm_kit.claims.claims_table)."""
    from .claims import claims_table as rows

    return rows(resolve_comparisons(plan, comparisons, desc, progress), n_boot)


def resolve_comparisons(plan: Plan | str, comparisons: Sequence, desc: str, progress: bool = True) -> list:
    """Planned claims.Comparisons of configs -> the same Comparisons of the runs' result dicts (trained or read
    back, cross-evaluated on test_on where given), each with its seed and training precision."""
    import dataclasses

    plan = as_plan(plan)
    configs = list({T.run_hash(c): c for sp in comparisons for g in sp.groups() for c in g}.values())
    by_hash = {T.run_hash(c): r for c, r in zip(configs, run_many(plan, configs, desc, progress))}

    def results(group, test_on):
        trained = [by_hash[T.run_hash(c)] for c in group]
        out = trained if test_on is None else [cross_evaluate(r, c, [test_on])[0] for r, c in zip(trained, group)]
        return tuple({**r, "seed": c.seed, "amp": t.get("amp")} for r, t, c in zip(out, trained, group))

    return [dataclasses.replace(sp, **{k: results(getattr(sp, k), sp.test_on) for k in
                                       ("method", "baseline", "method2", "baseline2")}) for sp in comparisons]


def claims_table(plan: Plan | str, data_roots: Mapping[str, str] | None = None, progress: bool = True,
                 n_boot: int = 2000, real_targets: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per comparison of experiments.claim_specs (real_targets: real domains the transfer claim is also
    tested on): the paired difference, its intervals, corrected p and verdict (tcm_kit.claims). Runs shared with
    notebooks 02-05 are not retrained."""
    return compare_runs(plan, claim_specs(as_plan(plan), data_roots, real_targets), "claims", progress, n_boot)


def tcm_setting_table(plan: Plan | str, settings: Mapping[str, dict], baseline: str, seeds: Sequence[int] = (0, 1, 2),
                      domain: str = "synth-ic15", progress: bool = True, n_boot: int = 2000) -> pd.DataFrame:
    """tcm-dbnet under each TCM setting (label -> TCMConfig fields) against the `baseline` setting, paired by seed,
    with the claims' intervals and verdicts (tcm_kit.claims): e.g. the kit's prior init against the authors'."""
    from .claims import Comparison

    plan = as_plan(plan)
    runs = {label: tuple(plan.config("tcm-dbnet", domain, s, **tcm) for s in seeds) for label, tcm in settings.items()}
    comparisons = [Comparison("setting", f"{label} − {baseline}", runs[label], runs[baseline])
                   for label in settings if label != baseline]
    return compare_runs(plan, comparisons, "settings", progress, n_boot)


def learning_curves(plan: Plan | str, data_roots: Mapping[str, str] | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """The validation learning curves (val_curve.csv, TrainConfig evaluation.val_every) of the claims' (i) runs:
    each tcm-<head> and <head> on plan.claim_domain, every claim seed. Columns detector, seed, step, hmean (on the
    validation split at its best box threshold). Empty when the plan's runs record no curve."""
    plan = as_plan(plan)
    configs = [c for sp in claim_specs(plan, data_roots) if sp.claim == "i" for g in sp.groups() for c in g]
    rows = []
    for cfg, r in zip(configs, run_many(plan, configs, "learning curves", progress)):
        for point in T.read_val_curve(r.get("run_dir", run_dir(cfg))):
            rows.append({"detector": cfg.detector, "seed": cfg.seed, "step": point["step"], "hmean": point["hmean"]})
    return pd.DataFrame(rows, columns=["detector", "seed", "step", "hmean"])


PLATEAU_TOLERANCE = 0.02  # a rise of less than this over the last quarter of training counts as none


def plateau_table(curves: pd.DataFrame, tail: float = 0.25, tolerance: float = PLATEAU_TOLERANCE) -> pd.DataFrame:
    """Per detector, whether its validation curve has stopped rising: the gain over the last `tail` of training
    (hmean at the last step − at the last point at or before (1 − tail) of the steps), per seed, with a 95 %
    t-interval over seeds (tcm_kit.claims.seed_interval). "still rising" when the interval lies above 0,
    "plateau" when it lies below `tolerance` (a fall included), "undecided" when it spans both; fewer than
    claims.MIN_SEEDS seeds: "undecided (n seeds)"."""
    from .claims import MIN_SEEDS, seed_interval

    rows = []
    for det, g in curves.groupby("detector", sort=False):
        last = int(g["step"].max())
        start = int(g.loc[g["step"] <= (1 - tail) * last, "step"].max())
        gains = []
        for _, s in g.groupby("seed"):
            h = s.set_index("step")["hmean"]
            if last in h.index and start in h.index:
                gains.append(float(h[last] - h[start]))
        mean, lo, hi = seed_interval(gains)
        state = (f"undecided ({len(gains)} seeds)" if len(gains) < MIN_SEEDS or np.isnan(lo)
                 else "still rising" if lo > 0 else "plateau" if hi < tolerance else "undecided")
        rows.append({"detector": det, "n_seeds": len(gains), "from_step": start, "to_step": last,
                     "val_hmean_end": float(g.loc[g["step"] == last, "hmean"].mean()), "gain": mean,
                     "gain_ci_lo": lo, "gain_ci_hi": hi, "state": state})
    return pd.DataFrame(rows)
