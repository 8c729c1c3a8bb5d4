"""The runs behind notebooks 02-05, as functions returning pandas tables; every run cached on disk by config hash.

A run is one `TrainConfig`, trained by `tcm_kit.train.train` into data_dir()/runs/<run_hash>/. A finished run
is read back, an unfinished one resumes, so re-running a notebook (or another notebook asking for the same
config: the full-data TCM run is shared by 02-05) costs nothing for runs already done.

How many runs, how long each: a frozen `Plan` per profile (`Plan.for_profile("smoke" | "cpu" | "full")`)
holds the run budget (steps, sizes, data) and each notebook's grid; `plan_summary(plan)` counts the runs each
notebook adds. `python -m tcm_kit.experiments [--profile cpu]` prints it.

    plan = Plan.for_profile("cpu")
    ablation_table(plan)                       # 02: TCM's components on one by one
    tau_lambda_table(plan)                     # 02: τ x λ grid
    few_shot_table(plan)                       # 03: hmean vs shot, mean ± std over seeds
    transfer_matrix(transfer_table(plan))      # 04: train on a domain, test on every domain
    detector_table(plan, detectors=[...])      # 05: each detector with and without TCM, each domain
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import train as T
from .train import TrainConfig
from .utils import config_hash, data_dir

SYNTH_DOMAINS = ("synth-ic15", "synth-td500", "synth-total", "synth-doc")
REAL_DOMAINS = ("icdar2015", "td500", "totaltext", "ctw1500")
AUTHORS_PROMPT = "the pixels of many arbitrary-shape text instances."
METRICS = ("precision", "recall", "hmean")


class ExperimentError(ValueError):
    """A plan, a grid or a table request that cannot be run (unknown detector, missing data, bad shape)."""


# ---------------------------------------------------------------------------------------------------- plans

# every head with and without TCM, plus DBNet from scratch (the main table of the cpu/full profiles)
ALL_DETECTORS = ("dbnet", "tcm-dbnet", "dbnet-scratch", "pan", "tcm-pan", "fcenet", "tcm-fcenet")


@dataclass(frozen=True)
class Plan:
    """The runs of notebooks 02-05 for one profile. Budget fields left None keep `TrainConfig`'s profile value.

    All notebooks share one training budget, so a config that appears in two notebooks (e.g. TCM-DBNet on
    synth-ic15 with all data, seed 0) is trained once.
    """
    profile: str
    # budget of every run (None: TrainConfig.for_profile(profile) default)
    steps: int | None = None
    batch_size: int | None = None
    image_size: int | None = None  # synthetic images; also the test long side (and the crop unless train_size)
    train_size: int | None = None  # training crop (None: image_size)
    scale_range: tuple | None = None  # rescale before the crop, relative to train_size (see TrainConfig)
    min_text_px: float | None = None  # synthetic text size floor (see TrainConfig.min_text_px)
    num_train: int | None = None
    num_val: int | None = None
    num_test: int | None = None
    num_workers: int | None = None
    threads: int | None = None  # torch threads while running (None: torch's default, all cores)
    # runs trained side by side, each in its own process with `threads` torch threads (1: in this process); on
    # 2 cores two 1-thread runs train more images per second than one 2-thread run (small convolutions)
    workers: int = 1
    # 02: ablations
    ablation_domain: str = "synth-ic15"
    ablation_extras: bool = True  # the row beyond the paper's table (the authors' prompt sentence)
    score_auc_images: int = 50  # test images for the score map's text-cell AUC (step 0 and trained; 0: none)
    taus: tuple = (0.07,)
    aux_weights: tuple = (1.0,)
    # 03: few-shot curves
    few_shot_domain: str = "synth-ic15"
    shots: tuple = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
    seeds: tuple = (0, 1, 2)  # on the small shots (<= small_shot_max)
    large_shot_seeds: int = 1  # the first k of `seeds` on the larger shots
    small_shot_max: float = 0.1
    # 04 / 05
    domains: tuple = SYNTH_DOMAINS
    detectors: tuple = ("dbnet", "tcm-dbnet")  # few-shot and transfer
    main_detectors: tuple = ("dbnet", "tcm-dbnet", "dbnet-scratch")  # the main table (05)
    main_domains: tuple | None = None  # the main table's domains (None: all of `domains`)
    # the main table trains on whole images instead of train_size crops, at the same pixels per step (batch scaled
    # by (train_size / image_size)^2) and the same text scale: FCENet regresses each word's whole contour, and a
    # crop half the image's side never shows the long curved lines of synth-total whole (see main_config)
    main_whole_images: bool = False

    @classmethod
    def for_profile(cls, profile: str = "cpu", **overrides) -> "Plan":
        """smoke: a few runs of seconds each (CI); cpu: 02-05 in about 38 min on 2 cores; full: the paper's
        setting on real data (give data_roots)."""
        base = {
            # TrainConfig smoke: 8 train / 4 val / 4 test images of 128 px, 4 steps: ~5 s a run
            "smoke": dict(threads=1, taus=(0.07, 0.2), aux_weights=(1.0,), shots=(0.25, 1.0), seeds=(0, 1),
                          small_shot_max=0.25, score_auc_images=4, domains=("synth-ic15", "synth-total"), main_detectors=ALL_DETECTORS),
            # 42 distinct runs for 02-05 together (see plan_summary), 400 steps of batch 4 each (1.5-2 min a
            # run, two side by side), the rest of the budget as TrainConfig's cpu profile: the six shots with
            # 3 seeds up to 0.1, transfer across the four synthetic domains, the main table on synth-total (the
            # curved domain, where FCENet's polygons meet DBNet's quads), no extra ablation rows. Batch 4 for 400
            # steps learns about as much as batch 8 (dbnet, synth-ic15: hmean 0.23 vs 0.25) at half the time.
            # The main table on whole images (batch 1): synth-total, seeds 0/1/2, fcenet 0.159/0.141/0.089 on
            # 160 px crops, 0.206/0.251/0.194 on whole images (with fce_head_norm); dbnet 0.158/0.160/0.155 ->
            # 0.185/0.197/0.167. Not for all tables: dbnet on synth-ic15 (small words) 0.216 -> 0.180
            "cpu": dict(steps=400, batch_size=4, num_workers=0, threads=1, workers=2, taus=(0.07, 0.2),
                        aux_weights=(1.0,), small_shot_max=0.1, ablation_extras=False,
                        main_detectors=ALL_DETECTORS, main_domains=("synth-total",), main_whole_images=True),
            "full": dict(ablation_domain="icdar2015", few_shot_domain="icdar2015", domains=REAL_DOMAINS,
                         main_detectors=ALL_DETECTORS),
        }
        if profile not in base:
            raise ExperimentError(f"profile must be smoke, cpu or full, got {profile!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - fields
        if unknown:
            raise ExperimentError(f"unknown Plan fields {sorted(unknown)}; known: {sorted(fields)}")
        return cls(profile=profile, **{**base[profile], **overrides})

    def budget(self) -> dict:
        """The TrainConfig overrides shared by every run of this plan."""
        b = {"steps": self.steps, "batch_size": self.batch_size, "num_train": self.num_train,
             "num_val": self.num_val, "num_test": self.num_test, "num_workers": self.num_workers}
        if self.image_size is not None:
            b.update(image_size=self.image_size, train_size=self.train_size or self.image_size,
                     test_size=self.image_size)
        if self.scale_range is not None:
            b.update(scale_range=tuple(self.scale_range))
        if self.min_text_px is not None:
            b.update(min_text_px=self.min_text_px)
        if self.steps is not None:  # keep warm-up and checkpoints in proportion to a short budget
            base = TrainConfig.for_profile(self.profile)
            b.update(warmup_steps=min(base.warmup_steps, max(1, self.steps // 10)),
                     ckpt_every=min(base.ckpt_every, max(1, self.steps // 4)))
        return {k: v for k, v in b.items() if v is not None}

    def config(self, detector: str = "tcm-dbnet", domain: str = "synth-ic15", seed: int = 0, shot: float = 1.0,
               data_roots: Mapping[str, str] | None = None, **tcm) -> TrainConfig:
        """The TrainConfig of one run; TCM options only for tcm-* detectors (so baselines share one hash)."""
        if tcm and not detector.startswith("tcm-"):
            raise ExperimentError(f"{detector!r} takes no TCM options, got {sorted(tcm)}")
        root = (data_roots or {}).get(domain)
        if not domain.startswith("synth-") and root is None:
            raise ExperimentError(f"domain {domain!r} is a real dataset: give its folder in data_roots "
                                  f"(a mapping domain -> folder with train/ [val/] test/)")
        return TrainConfig.for_profile(self.profile, **self.budget(), detector=detector, domain=domain,
                                       data_root=None if root is None else str(root), seed=seed, shot=shot, **tcm)

    def main_config(self, detector: str, domain: str, seed: int = 0,
                    data_roots: Mapping[str, str] | None = None) -> TrainConfig:
        """The main table's (05) TrainConfig: `config`, on whole images when main_whole_images is set.

        Whole images: train_size = image_size, batch_size x (train_size / image_size)^2 (at least 1), scale_range
        x train_size / image_size (RandomScale is relative to the crop, so the text keeps its size)."""
        c = self.config(detector, domain, seed, data_roots=data_roots)
        if not self.main_whole_images or c.train_size >= c.image_size:
            return c
        f = c.train_size / c.image_size
        return dataclasses.replace(c, train_size=c.image_size, batch_size=max(1, round(c.batch_size * f * f)),
                                   scale_range=tuple(float(s * f) for s in c.scale_range))

    def seeds_for(self, shot: float, seeds: Sequence[int] | None = None) -> tuple:
        seeds = tuple(self.seeds if seeds is None else seeds)
        return seeds if shot <= self.small_shot_max + 1e-9 else seeds[:max(1, self.large_shot_seeds)]

    def describe(self) -> str:
        c = self.config(domain="synth-ic15")
        m = self.main_config("dbnet", "synth-ic15")
        main = (f"; the main table (05) on whole {m.image_size} px images, batch {m.batch_size}"
                if (m.train_size, m.batch_size) != (c.train_size, c.batch_size) else "")
        return (f"{c.steps} steps x batch {c.batch_size}, {c.train_size} px crops of {c.image_size} px images, "
                f"tested at {c.test_size} px, synthetic splits {c.num_train}/{c.num_val}/{c.num_test} "
                f"(train/val/test)" + (f", smallest synthetic font {c.min_text_px:g} px" if c.min_text_px else "")
                + main)


def as_plan(plan: Plan | str) -> Plan:
    return Plan.for_profile(plan) if isinstance(plan, str) else plan


def main_domains(plan: Plan | str, data_roots: Mapping[str, str] | None = None) -> tuple:
    """The main table's (05) domains: resolve_domains, kept to plan.main_domains when the plan names some."""
    plan = as_plan(plan)
    out = resolve_domains(plan, data_roots)
    return _main_of(plan, out)


def resolve_domains(plan: Plan | str, data_roots: Mapping[str, str] | None = None,
                    domains: Sequence[str] | None = None) -> tuple:
    """The domains to use: explicit `domains`, else those given real folders in data_roots, else the plan's."""
    plan = as_plan(plan)
    if domains is not None:
        out = tuple(domains)
    elif data_roots:
        out = tuple(d for d, root in data_roots.items() if root)
    else:
        out = plan.domains
    missing = [d for d in out if not d.startswith("synth-") and not (data_roots or {}).get(d)]
    if missing:
        raise ExperimentError(f"real domains {missing} need a folder each: pass data_roots={{domain: path}} "
                              f"(profile {plan.profile!r})")
    if not out:
        raise ExperimentError("no domains to run")
    return out


def _check_detectors(detectors: Iterable[str]) -> tuple:
    from .detector import DETECTORS

    known = set(DETECTORS)
    detectors = tuple(detectors)
    unknown = [d for d in detectors if d not in known]
    if unknown:
        raise ExperimentError(f"unknown detectors {unknown}; available: {sorted(known)}")
    if not detectors:
        raise ExperimentError("no detectors given")
    return detectors


# ---------------------------------------------------------------------------------------------------- runs

def runs_dir() -> Path:
    """Where finished and unfinished runs live: $TCM_KIT_RUNS, else data_dir()/runs."""
    return Path(os.environ["TCM_KIT_RUNS"]) if os.environ.get("TCM_KIT_RUNS") else data_dir() / "runs"


def run_dir(cfg: TrainConfig) -> Path:
    return runs_dir() / T.run_hash(cfg)


def run_one(cfg: TrainConfig, progress: bool = False) -> dict:
    """Train (or resume, or read back) one run in data_dir()/runs/<run_hash>/ -> its result dict + run_dir."""
    out = run_dir(cfg)
    done = out / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        if result.get("config_hash") == T.run_hash(cfg):
            return {**result, "run_dir": str(out)}
    result = T.train(cfg, out, progress=progress)
    return {**result, "run_dir": str(out)}


@contextlib.contextmanager
def _torch_threads(n: int | None):
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _prepare_shared(configs: Sequence[TrainConfig]) -> None:
    """Make what runs share before they start side by side: the synthetic splits and the embedded CLIP."""
    from .clip import load_clip

    for cfg in {(c.domain, c.num_train, c.num_val, c.num_test, c.image_size, c.min_text_px, c.data_root): c
                for c in configs}.values():
        for split in ("train", "val", "test"):
            T.split_dir(cfg, split, progress=False)
    for weights in {c.clip_weights for c in configs}:
        load_clip(weights)


def _run_in_worker(job) -> dict:
    cfg, threads = job
    import torch

    torch.set_num_threads(threads or 1)
    return run_one(cfg)


def run_many(plan: Plan, configs: Sequence[TrainConfig], desc: str, progress: bool = True) -> list[dict]:
    """run_one over configs with one tqdm bar; a config repeated in the list is run once. With plan.workers > 1
    the runs not yet finished train in that many spawned processes (results are identical: each run is
    deterministic by its config whatever process trains it)."""
    unique = list({T.run_hash(c): c for c in configs}.items())
    results: dict[str, dict] = {}
    todo = []
    for h, cfg in unique:
        done = run_dir(cfg) / "result.json"
        if done.exists() and json.loads(done.read_text()).get("config_hash") == h:
            results[h] = run_one(cfg)  # read back
        else:
            todo.append((h, cfg))
    bar = tqdm(total=len(unique), initial=len(results), desc=f"{desc} [{plan.profile}]", unit="run",
               disable=not progress)
    if plan.workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        _prepare_shared([c for _, c in todo])
        with mp.get_context("spawn").Pool(min(plan.workers, len(todo))) as pool:
            jobs = pool.imap(_run_in_worker, [(cfg, plan.threads) for _, cfg in todo])
            for (h, cfg), r in zip(todo, jobs):
                results[h] = r
                bar.set_postfix_str(f"{cfg.detector} {cfg.domain} shot={cfg.shot} seed={cfg.seed}")
                bar.update(1)
    else:
        with _torch_threads(plan.threads):
            for h, cfg in todo:
                bar.set_postfix_str(f"{cfg.detector} {cfg.domain} shot={cfg.shot} seed={cfg.seed}")
                results[h] = run_one(cfg)
                bar.update(1)
    bar.close()
    return [results[T.run_hash(c)] for c in configs]


def _metrics(result: dict) -> dict:
    return {k: float(result[k]) for k in METRICS}


# ---------------------------------------------------------------------------------------------------- 02 ablations

def ablation_configs(plan: Plan | str, seed: int = 0, domain: str | None = None,
                     data_roots: Mapping[str, str] | None = None) -> dict[str, TrainConfig]:
    """variant label -> config: the paper's components switched on one by one, then two extra rows (when
    plan.ablation_extras)."""
    plan = as_plan(plan)
    domain = domain or plan.ablation_domain
    tcm = lambda **kw: plan.config("tcm-dbnet", domain, seed, data_roots=data_roots, **kw)  # noqa: E731
    off = dict(learnable_prompt=False, language_prompt=False, visual_prompt=False, context_decoder=False,
               aux_weight=0.0)
    return {
        "DBNet (no TCM)": plan.config("dbnet", domain, seed, data_roots=data_roots),
        "+ score map, fixed prompt": tcm(**off),
        "+ learnable prompt": tcm(**{**off, "learnable_prompt": True}),
        "+ language prompt generator": tcm(**{**off, "learnable_prompt": True, "language_prompt": True}),
        "+ visual prompt generator": tcm(**{**off, "learnable_prompt": True, "language_prompt": True,
                                            "visual_prompt": True}),
        "+ auxiliary loss": tcm(context_decoder=False),
        "+ context decoder (= TCM)": tcm(),
        **({"TCM, authors' prompt sentence": tcm(prompt=AUTHORS_PROMPT)} if plan.ablation_extras else {}),
    }


def _tcm_columns(cfg: TrainConfig) -> dict:
    if not cfg.detector.startswith("tcm-"):
        return {"score_map": False, "learnable_prompt": False, "language_prompt": False, "visual_prompt": False,
                "aux_weight": 0.0, "context_decoder": False, "prompt": "-"}
    return {"score_map": cfg.score_map, "learnable_prompt": cfg.learnable_prompt,
            "language_prompt": cfg.language_prompt, "visual_prompt": cfg.visual_prompt,
            "aux_weight": float(cfg.aux_weight), "context_decoder": cfg.context_decoder, "prompt": cfg.prompt}


def _score_map_auc(cfg: TrainConfig, n_images: int, trained: bool) -> dict:
    """score_map_auc of the run's model on n_images of its test split: the model `fit` starts from (same seed,
    same CLIP) or, trained=True, the run's checkpoint; at the test size's short side for a (long, short) pair."""
    from .inspect import score_map_auc
    from .utils import seed_everything

    root = T.split_dir(cfg, "test", progress=False)
    size = cfg.test_size if isinstance(cfg.test_size, int) else min(cfg.test_size)
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
        if c.get("config_hash") == h and c.get("n_images") == n_images:
            return {"step0": c["step0"], "trained": c["trained"]}
    step0 = _score_map_auc(cfg, n_images, trained=False)["auc"]
    trained = _score_map_auc(cfg, n_images, trained=True)["auc"]
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.write_text(json.dumps({"config_hash": h, "n_images": n_images, "step0": step0, "trained": trained}))
    os.replace(tmp, cache)
    return {"step0": step0, "trained": trained}


STEP0_VARIANTS = {  # label -> TCM options: the bare prompt, then TCM under both inits and both dense paths
    "fixed prompt 'Text' (no TCM modules)": dict(learnable_prompt=False, language_prompt=False, visual_prompt=False,
                                                 context_decoder=False, dense_attention="value"),
    "TCM, authors' init, full attention (authors)": dict(prompt_init="official", dense_attention="full"),
    "TCM, authors' init, value path": dict(prompt_init="official", dense_attention="value"),
    "TCM, prior init, full attention": dict(prompt_init="prior", dense_attention="full"),
    "TCM, prior init, value path": dict(prompt_init="prior", dense_attention="value"),
}


def step0_score_table(profile: str = "cpu", domain: str = "synth-ic15", n_images: int = 60, seed: int = 0,
                      progress: bool = True) -> pd.DataFrame:
    """Text-cell AUC of TCM's score map P before any detector training (tcm-dbnet of the profile, seed `seed`),
    on n_images of the domain's test split at the profile's test size: one row per STEP0_VARIANTS entry."""
    rows = []
    for label, flags in tqdm(STEP0_VARIANTS.items(), desc="score map at step 0", disable=not progress):
        cfg = TrainConfig.for_profile(profile, detector="tcm-dbnet", domain=domain, seed=seed, **flags)
        r = _score_map_auc(cfg, n_images, trained=False)
        rows.append({"variant": label, "prompt_init": cfg.prompt_init, "dense_attention": cfg.dense_attention,
                     "P_auc_step0": r["auc"], "n_images": r["n_images"], "n_pos_cells": r["n_pos_cells"],
                     "n_neg_cells": r["n_neg_cells"], "test_size": r["test_size"], "clip_weights": cfg.clip_weights})
    return pd.DataFrame(rows)


def describe_step0(df: pd.DataFrame) -> str:
    """One sentence from the step-0 table's numbers."""
    a = df.set_index("variant")["P_auc_step0"]
    best = a.idxmax()
    return (f"Before any training, P separates text cells best with **{best}** (AUC {a.max():.3f}); the authors' "
            f"setting gives {a.iloc[1]:.3f} and the bare prompt {a.iloc[0]:.3f} ({int(df['n_images'].iloc[0])} "
            f"test images).")


def ablation_table(plan: Plan | str, seed: int = 0, domain: str | None = None,
                   data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per variant: its switches, P/R/hmean on the same test split, Δhmean vs the DBNet baseline."""
    plan = as_plan(plan)
    configs = ablation_configs(plan, seed, domain, data_roots)
    results = run_many(plan, list(configs.values()), "ablations", progress)
    rows = []
    for (label, cfg), r in zip(configs.items(), results):
        auc = score_auc(cfg, plan.score_auc_images) if cfg.score_map else {}
        rows.append({"variant": label, **_tcm_columns(cfg), **_metrics(r),
                     "P_auc_step0": auc.get("step0", np.nan), "P_auc": auc.get("trained", np.nan),
                     "config": T.run_hash(cfg)})
    df = pd.DataFrame(rows)
    df.insert(df.columns.get_loc("hmean") + 1, "delta_hmean", df["hmean"] - df["hmean"].iloc[0])
    return df


def tau_lambda_configs(plan: Plan | str, seed: int = 0, domain: str | None = None,
                       taus: Sequence[float] | None = None, aux_weights: Sequence[float] | None = None,
                       data_roots: Mapping[str, str] | None = None) -> dict[tuple, TrainConfig]:
    """(τ, λ) -> full-TCM config (as the ablation's TCM row)."""
    plan = as_plan(plan)
    domain = domain or plan.ablation_domain
    taus = plan.taus if taus is None else tuple(taus)
    lams = plan.aux_weights if aux_weights is None else tuple(aux_weights)
    return {(float(t), float(lam)): plan.config("tcm-dbnet", domain, seed, data_roots=data_roots,
                                                tau=float(t), aux_weight=float(lam))
            for t in taus for lam in lams}


def tau_lambda_table(plan: Plan | str, seed: int = 0, domain: str | None = None,
                     taus: Sequence[float] | None = None, aux_weights: Sequence[float] | None = None,
                     data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per (τ, λ) of the grid: P/R/hmean of TCM-DBNet."""
    plan = as_plan(plan)
    configs = tau_lambda_configs(plan, seed, domain, taus, aux_weights, data_roots)
    results = run_many(plan, list(configs.values()), "tau x lambda", progress)
    return pd.DataFrame([{"tau": t, "lambda": lam, **_metrics(r), "config": T.run_hash(c)}
                         for ((t, lam), c), r in zip(configs.items(), results)])


# ---------------------------------------------------------------------------------------------------- 03 few-shot

def few_shot_configs(plan: Plan | str, shots: Sequence[float] | None = None, seeds: Sequence[int] | None = None,
                     detectors: Sequence[str] | None = None, domain: str | None = None,
                     data_roots: Mapping[str, str] | None = None) -> list[TrainConfig]:
    plan = as_plan(plan)
    shots = plan.shots if shots is None else tuple(shots)
    detectors = _check_detectors(plan.detectors if detectors is None else detectors)
    domain = domain or plan.few_shot_domain
    bad = [s for s in shots if not 0 < s <= 1]
    if bad:
        raise ExperimentError(f"shots must lie in (0, 1], got {bad}")
    return [plan.config(det, domain, seed, shot=float(shot), data_roots=data_roots)
            for det in detectors for shot in shots for seed in plan.seeds_for(shot, seeds)]


def few_shot_runs(plan: Plan | str, shots: Sequence[float] | None = None, seeds: Sequence[int] | None = None,
                  detectors: Sequence[str] | None = None, domain: str | None = None,
                  data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per run: detector, shot, seed, train_images, P/R/hmean."""
    plan = as_plan(plan)
    configs = few_shot_configs(plan, shots, seeds, detectors, domain, data_roots)
    results = run_many(plan, configs, "few-shot", progress)
    return pd.DataFrame([{"detector": c.detector, "shot": c.shot, "seed": c.seed,
                          "train_images": int(r.get("train_images", -1)), **_metrics(r), "config": T.run_hash(c)}
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

def transfer_configs(plan: Plan | str, domains: Sequence[str] | None = None,
                     detectors: Sequence[str] | None = None, seed: int = 0,
                     data_roots: Mapping[str, str] | None = None) -> list[TrainConfig]:
    plan = as_plan(plan)
    domains = resolve_domains(plan, data_roots, domains)
    detectors = _check_detectors(plan.detectors if detectors is None else detectors)
    return [plan.config(det, dom, seed, data_roots=data_roots) for det in detectors for dom in domains]


def _test_key(cfg: TrainConfig) -> str:
    """Identity of a test split (independent of where data_dir() is)."""
    scale = T.text_scale(cfg)
    split = {"domain": cfg.domain, "data_root": cfg.data_root, "num_test": cfg.num_test,
             "image_size": cfg.image_size, **({"text_scale": scale} if scale != 1.0 else {})}
    return f"{cfg.domain}-{config_hash(split)}"


def cross_evaluate(result: dict, cfg: TrainConfig, targets: Sequence[TrainConfig]) -> list[dict]:
    """P/R/hmean of a finished run on each target's test split (threshold from the run's own val split).

    Cached in <run_dir>/transfer/<test key>.json; the model is loaded only when something is missing.
    """
    out_dir = Path(result["run_dir"]) / "transfer"
    metrics, todo = {}, []
    for t in targets:
        if _test_key(t) == _test_key(cfg):
            metrics[_test_key(t)] = _metrics(result)  # its own test split: the run's result
            continue
        path = out_dir / f"{_test_key(t)}.json"
        if path.exists():
            metrics[_test_key(t)] = json.loads(path.read_text())
        else:
            todo.append((t, path))
    if todo:
        model, run_cfg, _ = T.load_run(result["run_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        for t, path in todo:
            m = T.evaluate_run(model, run_cfg, progress=False, test_root=T.split_dir(t, "test", progress=False),
                               box_thresh=result.get("box_thresh"))
            m = {**_metrics(m), "box_thresh": m.get("box_thresh"), "n_test": m.get("n_test")}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(m, indent=1))
            os.replace(tmp, path)
            metrics[_test_key(t)] = m
    return [metrics[_test_key(t)] for t in targets]


def transfer_table(plan: Plan | str, domains: Sequence[str] | None = None,
                   detectors: Sequence[str] | None = None, seed: int = 0,
                   data_roots: Mapping[str, str] | None = None, progress: bool = True) -> pd.DataFrame:
    """Long table: one row per (detector, train_domain, test_domain) with P/R/hmean; in_domain marks the
    diagonal. Each detector is trained once per domain and tested on every domain's test split."""
    plan = as_plan(plan)
    configs = transfer_configs(plan, domains, detectors, seed, data_roots)
    results = run_many(plan, configs, "transfer: train", progress)
    rows = []
    # the cross-domain tests run alone, after training: they get the threads of all workers
    with _torch_threads(None if plan.threads is None else plan.threads * max(1, plan.workers)):
        for cfg, r in tqdm(list(zip(configs, results)), desc=f"transfer: test [{plan.profile}]", unit="run",
                           disable=not progress):
            targets = [c for c in configs if c.detector == cfg.detector]
            for t, m in zip(targets, cross_evaluate(r, cfg, targets)):
                rows.append({"detector": cfg.detector, "train_domain": cfg.domain, "test_domain": t.domain,
                             "in_domain": t.domain == cfg.domain, **_metrics(m)})
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

def detector_configs(plan: Plan | str, detectors: Sequence[str] | None = None,
                     domains: Sequence[str] | None = None, seed: int = 0,
                     data_roots: Mapping[str, str] | None = None) -> list[TrainConfig]:
    plan = as_plan(plan)
    detectors = _check_detectors(plan.main_detectors if detectors is None else detectors)
    domains = main_domains(plan, data_roots) if domains is None else resolve_domains(plan, data_roots, domains)
    return [plan.main_config(det, dom, seed, data_roots=data_roots) for dom in domains for det in detectors]


def detector_table(plan: Plan | str, detectors: Sequence[str] | None = None, domains: Sequence[str] | None = None,
                   seed: int = 0, data_roots: Mapping[str, str] | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """The main table: one row per (domain, detector), P/R/hmean, and for tcm-X the hmean gain over X."""
    plan = as_plan(plan)
    configs = detector_configs(plan, detectors, domains, seed, data_roots)
    results = run_many(plan, configs, "detectors", progress)
    df = pd.DataFrame([{"domain": c.domain, "detector": c.detector, **_metrics(r), "config": T.run_hash(c)}
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


# ---------------------------------------------------------------------------------------------------- figures

def plot_few_shot(table: pd.DataFrame, metric: str = "hmean", title: str | None = None):
    """hmean vs shot (log x), one line per detector, error bars = std over seeds -> matplotlib Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for det, g in table.groupby("detector", sort=False):
        g = g.sort_values("shot")
        ax.errorbar(g["shot"], g[f"{metric}_mean"], yerr=g[f"{metric}_std"].fillna(0.0), marker="o", capsize=3,
                    label=f"{det}")
    ax.set_xscale("log")
    shots = sorted(table["shot"].unique())
    ax.set_xticks(shots, [f"{s:g}" for s in shots])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("shot (fraction of the training split)")
    ax.set_ylabel(f"{metric} (test)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or f"Few-shot: {metric} vs shot (mean ± std over seeds)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # room for report.save_figure's stamp
    return fig


def plot_transfer_heatmap(long: pd.DataFrame, metric: str = "hmean", title: str | None = None):
    """One heat-map per detector (rows: trained on, columns: tested on), plus TCM minus baseline when both
    dbnet and tcm-dbnet are present -> matplotlib Figure."""
    import matplotlib.pyplot as plt

    dets = list(dict.fromkeys(long["detector"]))
    doms = list(dict.fromkeys(long["train_domain"]))
    tests = list(dict.fromkeys(long["test_domain"]))
    mats = {d: long[long["detector"] == d].pivot(index="train_domain", columns="test_domain", values=metric)
            .reindex(index=doms, columns=tests).to_numpy() for d in dets}
    panels = [(d, mats[d], "viridis", (0, 1)) for d in dets]
    pairs = [(d, d[4:]) for d in dets if d.startswith("tcm-") and d[4:] in mats]
    for tcm, base in pairs:
        diff = mats[tcm] - mats[base]
        lim = max(0.05, float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 0.05)
        panels.append((f"{tcm} - {base}", diff, "RdBu", (-lim, lim)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.5, 3.4), squeeze=False)
    for ax, (name, m, cmap, (lo, hi)) in zip(axes[0], panels):
        im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="w" if cmap == "viridis" and m[i, j] < 0.6 else "k")
        ax.set_xticks(range(len(tests)), tests, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(doms)), doms, fontsize=8)
        ax.set_xlabel("tested on")
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    axes[0][0].set_ylabel("trained on")
    fig.suptitle(title or f"Cross-domain transfer: test {metric}")
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # room for report.save_figure's stamp
    return fig


# ---------------------------------------------------------------------------------------------------- words

def _f(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _signed(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3f}"


def describe_ablation(df: pd.DataFrame) -> str:
    """One sentence from the ablation table's numbers."""
    h = df.set_index("variant")["hmean"]
    if h.max() - h.min() < 1e-9:
        return (f"All {len(h)} variants reach the same test hmean ({_f(h.iloc[0])}): at this budget the ablation "
                f"does not separate TCM's components.")
    steps = df["hmean"].diff().iloc[1:7]
    biggest = df["variant"].iloc[int(steps.values.argmax()) + 1]
    tcm = h.get("+ context decoder (= TCM)", np.nan)
    return (f"Best variant: **{h.idxmax()}** (hmean {_f(h.max())}); full TCM vs the DBNet baseline: "
            f"{_signed(tcm - h.iloc[0])}; the largest single step up the ladder is '{biggest}' "
            f"({_signed(steps.max())}).")


def describe_tau_lambda(df: pd.DataFrame) -> str:
    if len(df) == 0:
        return "The τ x λ grid is empty."
    best = df.loc[df["hmean"].idxmax()]
    spread = df["hmean"].max() - df["hmean"].min()
    if spread < 1e-9:
        return f"All {len(df)} (τ, λ) settings give the same hmean ({_f(best['hmean'])})."
    return (f"Best setting: τ = {best['tau']:g}, λ = {best['lambda']:g} (hmean {_f(best['hmean'])}); hmean spreads "
            f"over {_f(spread)} across the {len(df)} settings.")


def describe_few_shot(table: pd.DataFrame, baseline: str = "dbnet", method: str = "tcm-dbnet",
                      small_shot_max: float = 0.1) -> str:
    g = few_shot_gain(table, baseline, method)
    parts = ", ".join(f"{s:g}: {_signed(v)}" for s, v in zip(g["shot"], g["gain"]))
    if (g["gain"].abs() < 1e-9).all():
        return (f"{method} and {baseline} reach the same mean test hmean at every shot ({parts}): no gain "
                f"measured at this budget.")
    small = g[g["shot"] <= small_shot_max + 1e-9]["gain"]
    large = g[g["shot"] > small_shot_max + 1e-9]["gain"]
    top = g.loc[g["gain"].idxmax()]
    s = (f"{method} minus {baseline} (mean test hmean) per shot: {parts}. The gain is largest at shot "
         f"{top['shot']:g} ({_signed(top['gain'])})")
    if len(small) and len(large):
        s += (f"; averaged over shots <= {small_shot_max:g} it is {_signed(small.mean())}, over larger shots "
              f"{_signed(large.mean())}: "
              + ("the gain is larger with less data, as the paper reports" if small.mean() > large.mean()
                 else "the gain is not larger with less data, unlike the paper's report"))
    return s + "."


def describe_transfer(long: pd.DataFrame) -> str:
    off = long[~long["in_domain"]].groupby("detector", sort=False)["hmean"].mean()
    on = long[long["in_domain"]].groupby("detector", sort=False)["hmean"].mean()
    if off.empty:
        return "Only one domain: no transfer to measure."
    parts = "; ".join(f"{d}: {_f(off[d])} on other domains vs {_f(on[d])} in-domain" for d in off.index)
    best = off.idxmax()
    tie = (off.max() - off.min()) < 1e-9
    return (f"Mean test hmean — {parts}. "
            + ("The detectors transfer equally well here." if tie else
               f"**{best}** transfers best (+{off.max() - off.drop(best).max():.3f} over the next)."))


def describe_main(df: pd.DataFrame) -> str:
    gains = df.dropna(subset=["tcm_gain"])
    if gains.empty:
        return "No detector appears both with and without TCM: no gain to report."
    parts = []
    for det, g in gains.groupby("detector", sort=False):
        better, worse = int((g["tcm_gain"] > 1e-9).sum()), int((g["tcm_gain"] < -1e-9).sum())
        parts.append(f"{det} beats {det[4:]} on {better} of {len(g)} domains, loses on {worse}, ties on "
                     f"{len(g) - better - worse} (mean hmean gain {_signed(g['tcm_gain'].mean())})")
    return "; ".join(parts) + " — the paper reports +1.9 F points for TCM-DBNet over DBNet on ICDAR2015."


# ---------------------------------------------------------------------------------------------------- plan sizes

def _main_of(plan: Plan, domains) -> tuple | None:
    """The main table's share of explicit `domains` (None stays None: detector_configs picks main_domains)."""
    if domains is None or not plan.main_domains:
        return domains
    return tuple(d for d in domains if d in plan.main_domains) or tuple(domains)


def _notebook_plans(plan: Plan, seed: int, data_roots, domains) -> dict:
    """notebook -> a function returning the configs it trains."""
    return {
        "02_prompt_generator_ablations": lambda: [*ablation_configs(plan, seed, data_roots=data_roots).values(),
                                                  *tau_lambda_configs(plan, seed, data_roots=data_roots).values()],
        "03_few_shot_curves": lambda: few_shot_configs(plan, seeds=tuple(seed + s for s in plan.seeds),
                                                       data_roots=data_roots),
        "04_cross_dataset_transfer": lambda: transfer_configs(plan, domains, seed=seed, data_roots=data_roots),
        "05_plugged_detectors": lambda: detector_configs(plan, domains=_main_of(plan, domains), seed=seed,
                                                         data_roots=data_roots),
    }


def notebook_configs(plan: Plan | str, seed: int = 0, data_roots: Mapping[str, str] | None = None,
                     domains: Sequence[str] | None = None) -> dict:
    """notebook -> the configs it trains (the full-data seed-`seed` runs are shared between notebooks)."""
    return {nb: make() for nb, make in _notebook_plans(as_plan(plan), seed, data_roots, domains).items()}


def plan_summary(plan: Plan | str, seed: int = 0, data_roots: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per notebook: runs it asks for, distinct ones, the new ones when 02-05 run in order, cross-evaluations.
    On `full` without data_roots, placeholder folders stand in so that the runs can be counted; a notebook
    that cannot run with the given data_roots gets a row with its reason in `note`."""
    plan = as_plan(plan)
    domains = None
    if plan.profile == "full" and not data_roots:
        data_roots = {d: f"<{d}>" for d in (plan.ablation_domain, plan.few_shot_domain, *plan.domains)}
        domains = plan.domains
    domains = resolve_domains(plan, data_roots, domains)
    seen: set[str] = set()
    rows = []
    for nb, make in _notebook_plans(plan, seed, data_roots, domains).items():
        try:
            cfgs = make()
        except ExperimentError as e:
            rows.append({"notebook": nb, "runs": 0, "distinct": 0, "new_in_order": 0, "cross_evals": 0,
                         "note": str(e)})
            continue
        hashes = [T.run_hash(c) for c in cfgs]
        new = set(hashes) - seen
        seen |= new
        n = len(domains)
        evals = len(plan.detectors) * n * (n - 1) if nb.startswith("04") else 0
        rows.append({"notebook": nb, "runs": len(cfgs), "distinct": len(set(hashes)), "new_in_order": len(new),
                     "cross_evals": evals, "note": ""})
    df = pd.DataFrame(rows)
    total = {"notebook": "total", "runs": int(df["runs"].sum()), "distinct": len(seen), "new_in_order": len(seen),
             "cross_evals": int(df["cross_evals"].sum()), "note": ""}
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)


if __name__ == "__main__":  # python -m tcm_kit.experiments --profile cpu
    import argparse

    ap = argparse.ArgumentParser(description="Print the runs notebooks 02-05 need under a profile.")
    ap.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "full"))
    a = ap.parse_args()
    p = Plan.for_profile(a.profile)
    print(f"profile {a.profile}: {p.describe()}")
    print(plan_summary(p).to_string(index=False))
