"""The plans behind notebooks 02-05: which runs each notebook trains, as `TrainConfig`s, and how many.

A run is one `TrainConfig`. How many runs, how long each: a frozen `Plan` per profile
(`Plan.for_profile("smoke" | "cpu" | "full")`) holds the run budget (steps, sizes, data) and each notebook's grid;
the `*_configs` functions below turn a plan into the configs of one notebook's grid, and `plan_summary(plan)`
counts the runs each notebook adds. `python -m tcm_kit.experiments [--profile cpu]` prints it.

Running them and reading them back is `tcm_kit.runs` (every run cached on disk by config hash); the pandas tables
of notebooks 01-05 are `tcm_kit.tables`, their figures `tcm_kit.plots`, their sentences `tcm_kit.describe`:

    plan = Plan.for_profile("cpu")
    tables.ablation_table(plan)                           # 02: TCM's components on one by one
    tables.tau_lambda_table(plan)                         # 02: τ x λ grid
    tables.few_shot_table(plan)                           # 03: hmean vs shot, mean ± std over seeds
    tables.transfer_matrix(tables.transfer_table(plan))   # 04: train on a domain, test on every domain
    tables.detector_table(plan, detectors=[...])          # 05: each detector with and without TCM, each domain
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import pandas as pd

from . import train as T
from .claims import Comparison
from .train import TrainConfig

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
    """The runs of notebooks 02-05 for one profile: TrainConfig.for_profile(train_profile) (None: the Plan's own
    profile name), with the budget fields that are not None in place of the profile's values.

    All notebooks share one training budget, so a config that appears in two notebooks (e.g. TCM-DBNet on
    synth-ic15 with all data, seed 0) is trained once.
    """
    profile: str
    train_profile: str | None = None  # the runs' TrainConfig profile (None: `profile`)
    # budget of every run (None: the train profile's value)
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
    # 04's training domains (None: every domain, the full matrix); each is tested on every domain
    transfer_sources: tuple | None = None
    main_detectors: tuple = ("dbnet", "tcm-dbnet", "dbnet-scratch")  # the main table (05)
    main_domains: tuple | None = None  # the main table's domains (None: all of `domains`)
    # the main table trains on whole images instead of train_size crops, at the same pixels per step (batch scaled
    # by (train_size / image_size)^2) and the same text scale: FCENet regresses each word's whole contour, and a
    # crop half the image's side never shows the long curved lines of synth-total whole (see main_config)
    main_whole_images: bool = False
    # the claims (reports/claims.md, tcm_kit.claims): paired runs on claim_domain, every one with claim_seeds
    claim_domain: str = "synth-ic15"
    claim_seeds: tuple = (0, 1, 2)
    claim_heads: tuple = ("dbnet", "pan", "fcenet")  # (i): tcm-<head> against <head>
    claim_shot: float = 0.1  # (ii): the gain at this shot against the gain with all data
    claim_transfer_domains: tuple | None = None  # (iii): test domains (None: the plan's others)
    # the long side real domains' images are tested at (None: the profile's test_size): their words shrink to a
    # few pixels at a synthetic image's 320 px (an ICDAR2015 photo is 1280 x 720)
    real_test_size: int | None = None

    @classmethod
    def for_profile(cls, profile: str = "cpu", **overrides) -> "Plan":
        """smoke: a few runs of seconds each (CI); cpu: the 41 runs of 02-06 (their time on 2 cores is in
        reports/NOTES.md); full: the paper's setting on real data (give data_roots)."""
        base = {
            # TrainConfig smoke: 8 train / 4 val / 4 test images of 128 px, 4 steps: ~5 s a run
            "smoke": dict(threads=1, taus=(0.07, 0.2), aux_weights=(1.0,), shots=(0.25, 1.0), seeds=(0, 1),
                          claim_seeds=(0, 1), claim_shot=0.25, claim_heads=("dbnet",),
                          small_shot_max=0.25, score_auc_images=4, domains=("synth-ic15", "synth-total"), main_detectors=ALL_DETECTORS),
            # 41 distinct runs for 02-06 together (see plan_summary) of TrainConfig's cpu-plan profile (1.5-2 min
            # a run, two side by side), nearly all of them the claims' cells on synth-ic15 with 3 seeds each (06):
            # the few-shot curve at the two shots the claim compares, transfer from synth-ic15 to the other
            # synthetic domains, the main table on synth-ic15 (seed 0 of the claims' runs, plus the -scratch
            # detectors)
            "cpu": dict(train_profile="cpu-plan", threads=1, workers=2, taus=(0.07, 0.2), shots=(0.1, 1.0),
                        transfer_sources=("synth-ic15",), real_test_size=1280,
                        large_shot_seeds=3,
                        aux_weights=(1.0,), small_shot_max=0.1, ablation_extras=False,
                        main_detectors=ALL_DETECTORS, main_domains=("synth-ic15",)),
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

    @property
    def run_profile(self) -> str:
        return self.train_profile or self.profile

    def budget(self) -> dict:
        """The TrainConfig overrides shared by every run of this plan (TrainConfig.updated arguments)."""
        def given(**kw):
            return {k: v for k, v in kw.items() if v is not None}

        optim = given(steps=self.steps, batch_size=self.batch_size)
        data = given(num_train=self.num_train, num_val=self.num_val, num_test=self.num_test,
                     image_size=self.image_size, min_text_px=self.min_text_px)
        aug = given(scale_range=None if self.scale_range is None else tuple(self.scale_range))
        evaluation = {}
        if self.image_size is not None:
            aug["train_size"] = self.train_size or self.image_size
            evaluation["test_size"] = self.image_size
        b = given(num_workers=self.num_workers)
        if self.steps is not None:  # keep warm-up and checkpoints in proportion to a short budget
            base = TrainConfig.for_profile(self.run_profile)
            optim["warmup_steps"] = min(base.optim.warmup_steps, max(1, self.steps // 10))
            b["ckpt_every"] = min(base.ckpt_every, max(1, self.steps // 4))
            if base.evaluation.val_every:  # about 8 points on the validation curve
                evaluation["val_every"] = max(1, self.steps // 8)
        b.update({k: v for k, v in dict(optim=optim, data=data, aug=aug, evaluation=evaluation).items() if v})
        return b

    def config(self, detector: str = "tcm-dbnet", domain: str = "synth-ic15", seed: int = 0, shot: float = 1.0,
               data_roots: Mapping[str, str] | None = None, **tcm) -> TrainConfig:
        """The TrainConfig of one run; TCM options only for tcm-* detectors (so baselines share one hash)."""
        if tcm and not detector.startswith("tcm-"):
            raise ExperimentError(f"{detector!r} takes no TCM options, got {sorted(tcm)}")
        root = (data_roots or {}).get(domain)
        if not domain.startswith("synth-") and root is None:
            raise ExperimentError(f"domain {domain!r} is a real dataset: give its folder in data_roots "
                                  f"(a mapping domain -> folder with train/ [val/] test/)")
        budget = self.budget()
        if root is not None and self.real_test_size:
            budget["evaluation"] = {**budget.get("evaluation", {}), "test_size": self.real_test_size}
        return TrainConfig.for_profile(self.run_profile, **budget, detector=detector, domain=domain,
                                       data_root=None if root is None else str(root), seed=seed, shot=shot,
                                       **({"tcm": tcm} if tcm else {}))

    def main_config(self, detector: str, domain: str, seed: int = 0,
                    data_roots: Mapping[str, str] | None = None) -> TrainConfig:
        """The main table's (05) TrainConfig: `config`, on whole images when main_whole_images is set.

        Whole images: train_size = image_size, batch_size x (train_size / image_size)^2 (at least 1), scale_range
        x train_size / image_size (RandomScale is relative to the crop, so the text keeps its size)."""
        c = self.config(detector, domain, seed, data_roots=data_roots)
        if not self.main_whole_images or c.aug.train_size >= c.data.image_size:
            return c
        f = c.aug.train_size / c.data.image_size
        scale = tuple(float(s * f) for s in c.aug.scale_range)
        return c.updated(aug=dict(train_size=c.data.image_size, scale_range=scale),
                         optim=dict(batch_size=max(1, round(c.optim.batch_size * f * f))))

    def seeds_for(self, shot: float, seeds: Sequence[int] | None = None) -> tuple:
        seeds = tuple(self.seeds if seeds is None else seeds)
        return seeds if shot <= self.small_shot_max + 1e-9 else seeds[:max(1, self.large_shot_seeds)]

    def describe(self) -> str:
        c = self.config(domain="synth-ic15")
        m = self.main_config("dbnet", "synth-ic15")
        main = (f"; the main table (05) on whole {m.data.image_size} px images, batch {m.optim.batch_size}"
                if (m.aug.train_size, m.optim.batch_size) != (c.aug.train_size, c.optim.batch_size) else "")
        d = c.data
        return (f"TrainConfig profile {self.run_profile}: {c.optim.steps} steps x batch {c.optim.batch_size}, "
                f"{c.aug.train_size} px crops of {d.image_size} px images, tested at {c.evaluation.test_size} px, "
                f"synthetic splits {d.num_train}/{d.num_val}/{d.num_test} (train/val/test)"
                + (f", smallest synthetic font {d.min_text_px:g} px" if d.min_text_px else "") + main)


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


# ---------------------------------------------------------------------------------------------------- 02 ablations

# the paper's ablation ladder, bottom to top: each rung switches one more of TCM's components on (ablation_configs);
# describe.describe_ablation compares each rung with the one below it in this order, whatever the table's row order
ABLATION_LADDER = ("DBNet (no TCM)", "+ score map, fixed prompt", "+ learnable prompt", "+ language prompt generator",
                   "+ visual prompt generator", "+ auxiliary loss", "+ context decoder (= TCM)")
# rows beyond the paper's table (plan.ablation_extras) -> the rung each is compared with
ABLATION_EXTRAS = {"TCM, authors' prompt sentence": ABLATION_LADDER[-1]}


def ablation_configs(plan: Plan | str, seed: int = 0, domain: str | None = None,
                     data_roots: Mapping[str, str] | None = None) -> dict[str, TrainConfig]:
    """variant label -> config: the paper's components switched on one by one, then the extra row (when
    plan.ablation_extras); the labels are ABLATION_LADDER and ABLATION_EXTRAS."""
    plan = as_plan(plan)
    domain = domain or plan.ablation_domain
    tcm = lambda **kw: plan.config("tcm-dbnet", domain, seed, data_roots=data_roots, **kw)  # noqa: E731
    off = dict(learnable_prompt=False, language_prompt=False, visual_prompt=False, context_decoder=False,
               aux_weight=0.0)
    base, score, learnable, language, visual, aux, full = ABLATION_LADDER
    [authors] = ABLATION_EXTRAS
    return {
        base: plan.config("dbnet", domain, seed, data_roots=data_roots),
        score: tcm(**off),
        learnable: tcm(**{**off, "learnable_prompt": True}),
        language: tcm(**{**off, "learnable_prompt": True, "language_prompt": True}),
        visual: tcm(**{**off, "learnable_prompt": True, "language_prompt": True, "visual_prompt": True}),
        aux: tcm(context_decoder=False),
        full: tcm(),
        **({authors: tcm(prompt=AUTHORS_PROMPT)} if plan.ablation_extras else {}),
    }


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


STEP0_VARIANTS = {  # label -> TCM options: the bare prompt, then TCM under both inits and both dense paths
    "fixed prompt 'Text' (no TCM modules)": dict(learnable_prompt=False, language_prompt=False, visual_prompt=False,
                                                 context_decoder=False, dense_attention="value"),
    "TCM, authors' init, full attention (authors)": dict(prompt_init="official", dense_attention="full"),
    "TCM, authors' init, value path": dict(prompt_init="official", dense_attention="value"),
    "TCM, prior init, full attention": dict(prompt_init="prior", dense_attention="full"),
    "TCM, prior init, value path": dict(prompt_init="prior", dense_attention="value"),
}


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


# ---------------------------------------------------------------------------------------------------- 04 transfer

def transfer_sources(plan: Plan | str, domains: Sequence[str]) -> tuple:
    """04's training domains among `domains`: plan.transfer_sources where given (those present), else all."""
    plan = as_plan(plan)
    if plan.transfer_sources is None:
        return tuple(domains)
    return tuple(d for d in domains if d in plan.transfer_sources) or tuple(domains)


def transfer_configs(plan: Plan | str, domains: Sequence[str] | None = None,
                     detectors: Sequence[str] | None = None, seed: int = 0,
                     data_roots: Mapping[str, str] | None = None, trained: bool = True) -> list[TrainConfig]:
    """The configs 04 trains (trained=True: on transfer_sources) or tests on (trained=False: every domain)."""
    plan = as_plan(plan)
    domains = resolve_domains(plan, data_roots, domains)
    detectors = _check_detectors(plan.detectors if detectors is None else detectors)
    doms = transfer_sources(plan, domains) if trained else domains
    return [plan.config(det, dom, seed, data_roots=data_roots) for det in detectors for dom in doms]


# ---------------------------------------------------------------------------------------------------- 05 main table

def detector_configs(plan: Plan | str, detectors: Sequence[str] | None = None,
                     domains: Sequence[str] | None = None, seed: int = 0,
                     data_roots: Mapping[str, str] | None = None) -> list[TrainConfig]:
    plan = as_plan(plan)
    detectors = _check_detectors(plan.main_detectors if detectors is None else detectors)
    domains = main_domains(plan, data_roots) if domains is None else resolve_domains(plan, data_roots, domains)
    return [plan.main_config(det, dom, seed, data_roots=data_roots) for dom in domains for det in detectors]


# ---------------------------------------------------------------------------------------------------- claims

def claim_specs(plan: Plan | str, data_roots: Mapping[str, str] | None = None,
                real_targets: Mapping[str, str] | None = None) -> list[Comparison]:
    """The paper's claims (i)-(iv) as paired comparisons on plan.claim_domain with plan.claim_seeds:
    (i) tcm-<head> − <head> for each of claim_heads; (ii) the gain of tcm-dbnet over dbnet at claim_shot minus
    the gain with all data (and the gain at claim_shot alone); (iii) tcm-dbnet − dbnet trained on claim_domain,
    tested on each other domain, then on each real domain of real_targets ({domain: folder with test/}, tested
    only, at plan.real_test_size: the paper's synthetic-to-real setting, with the Plan's own short runs; the
    reproduction answers it with runs trained for real photos, tcm_kit.real_claims); (iv) each rung of
    ABLATION_LADDER − the rung below it."""
    plan = as_plan(plan)
    dom, seeds = plan.claim_domain, tuple(plan.claim_seeds)

    def runs(det, shot=1.0, **tcm):
        return tuple(plan.config(det, dom, s, shot=shot, data_roots=data_roots, **tcm) for s in seeds)

    specs = [Comparison("i", f"tcm-{h} − {h}", runs(f"tcm-{h}"), runs(h)) for h in plan.claim_heads]
    shot = float(plan.claim_shot)
    specs.append(Comparison("ii", f"tcm-dbnet − dbnet at shot {shot:g}", runs("tcm-dbnet", shot), runs("dbnet", shot)))
    specs.append(Comparison("ii", f"gain at shot {shot:g} − gain with all data", runs("tcm-dbnet", shot),
                           runs("dbnet", shot), runs("tcm-dbnet"), runs("dbnet")))
    targets = plan.claim_transfer_domains
    targets = tuple(d for d in resolve_domains(plan, data_roots) if d != dom) if targets is None else targets
    tests = [plan.config("dbnet", t, seeds[0], data_roots=data_roots) for t in targets]
    tests += [plan.config("dbnet", t, seeds[0], data_roots=real_targets) for t in (real_targets or {})
              if t not in targets]
    for test in tests:
        specs.append(Comparison("iii", f"tcm-dbnet − dbnet, {dom} → {test.domain}", runs("tcm-dbnet"), runs("dbnet"),
                               test_on=test))
    ladders = [ablation_configs(plan, s, dom, data_roots) for s in seeds]
    for lower, upper in zip(ABLATION_LADDER, ABLATION_LADDER[1:]):
        specs.append(Comparison("iv", f"{upper} − {lower}", tuple(lad[upper] for lad in ladders),
                               tuple(lad[lower] for lad in ladders)))
    return specs


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
        "06_claims": lambda: [c for sp in claim_specs(plan, data_roots) for g in sp.groups() for c in g],
    }


def notebook_configs(plan: Plan | str, seed: int = 0, data_roots: Mapping[str, str] | None = None,
                     domains: Sequence[str] | None = None, available_only: bool = False) -> dict:
    """notebook -> the configs it trains (the full-data seed-`seed` runs are shared between notebooks).
    available_only: leave out the notebooks whose runs need data that is not given, instead of raising."""
    out = {}
    for nb, make in _notebook_plans(as_plan(plan), seed, data_roots, domains).items():
        try:
            out[nb] = make()
        except ExperimentError:
            if not available_only:
                raise
    return out


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
        evals = len(plan.detectors) * len(transfer_sources(plan, domains)) * (n - 1) if nb.startswith("04") else 0
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
