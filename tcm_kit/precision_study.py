"""What training precision does to the results: the claims' runs of one Plan trained in fp32 and in bf16.

Both precisions' runs sit side by side in the run cache (the precision is part of a run's key), so each is
trained once; a run already finished in a precision is read back. Two tables go to reports/:
  - precision_claims: each claim's paired difference in each precision, the change bf16 − fp32, and the
    seed-to-seed standard deviation of that comparison's per-seed differences (in fp32), to set it against;
  - precision_runs: each run's test hmean in each precision, paired by config and seed, with the seed-to-seed
    standard deviation of the same config's hmean (in fp32).
The stamp's note gives each precision's total training time (the sum of the runs' own training seconds).

    python -m tcm_kit.precision_study --profile cpu        # on the machine whose precisions are compared

On a CPU without native bf16 the bf16 runs are emulated: the same arithmetic, many times slower.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings

import numpy as np
import pandas as pd

from . import claims as C
from . import train as T
from .experiments import Plan, as_plan, claim_specs
from .precision import ENV, PRECISIONS

__all__ = ["precision_tables", "main"]


@contextlib.contextmanager
def _precision(p: str):
    """TCM_KIT_PRECISION=p inside the block (pool workers inherit it), the old value after."""
    old = os.environ.get(ENV)
    os.environ[ENV] = p
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


def _key(cfg) -> str:
    """A run's identity whatever its precision: its fp32 key."""
    return T.run_hash(cfg, precision="fp32")


def precision_tables(plan: Plan | str, precisions=("fp32", "bf16"), progress: bool = True,
                     n_boot: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """-> (claims table, runs table, {precision: training seconds summed over the runs}); see the module doc."""
    from .runs import run_many
    from .tables import resolve_comparisons

    plan = as_plan(plan)
    if len(precisions) != 2 or precisions[0] == precisions[1] or not set(precisions) <= set(PRECISIONS) - {"auto"}:
        raise ValueError(f"precisions: two different of fp32, bf16, got {precisions}")
    specs = claim_specs(plan)
    configs = list({_key(c): c for sp in specs for g in sp.groups() for c in g}.values())
    resolved, by_run, seconds = {}, {}, {}
    for p in precisions:
        with _precision(p), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the emulated-bf16 warning: said once by the caller's first run
            results = run_many(plan, configs, f"claims runs in {p}", progress)
            resolved[p] = resolve_comparisons(plan, specs, f"claims in {p}", progress=False)
        if {r.get("amp") for r in results} != {p}:
            raise RuntimeError(f"runs asked in {p} recorded {sorted({str(r.get('amp')) for r in results})}")
        by_run[p] = {_key(c): r for c, r in zip(configs, results)}
        seconds[p] = float(sum(r.get("train_seconds", 0.0) for r in results))
    a, b = precisions

    tables = {p: C.claims_table(resolved[p], n_boot) for p in precisions}  # each precision's own family
    rows = []
    for k, (sa, sb) in enumerate(zip(resolved[a], resolved[b])):
        da, db = C.per_seed_differences(sa), C.per_seed_differences(sb)
        ra, rb = tables[a].iloc[k], tables[b].iloc[k]
        sd = float(np.std(da, ddof=1)) if len(da) > 1 else float("nan")
        change = float(db.mean() - da.mean())
        rows.append({"claim": sa.claim, "comparison": sa.label, "n_seeds": len(da),
                     f"difference_{a}": float(da.mean()), f"difference_{b}": float(db.mean()),
                     f"{b}_minus_{a}": change, f"seed_sd_{a}": sd,
                     "change_in_seed_sds": abs(change) / sd if sd > 0 else float("nan"),
                     f"verdict_{a}": ra["verdict"], f"verdict_{b}": rb["verdict"]})
    claims_df = pd.DataFrame(rows)

    groups: dict[tuple, list] = {}
    for c in configs:
        fields = T.run_fields(c)
        fields.pop("seed")
        groups.setdefault(T.config_hash(fields), []).append(c)
    run_rows = []
    for cfgs in groups.values():
        ha = np.array([float(by_run[a][_key(c)]["hmean"]) for c in cfgs])
        hb = np.array([float(by_run[b][_key(c)]["hmean"]) for c in cfgs])
        c0 = cfgs[0]
        run_rows.append({"detector": c0.detector, "domain": c0.domain, "shot": c0.shot,
                         "variant": _variant(c0, plan), "seeds": " ".join(str(c.seed) for c in cfgs),
                         f"hmean_{a}": float(ha.mean()), f"hmean_{b}": float(hb.mean()),
                         f"{b}_minus_{a}": float((hb - ha).mean()),
                         f"max_abs_{b}_minus_{a}": float(np.abs(hb - ha).max()),
                         f"seed_sd_{a}": float(np.std(ha, ddof=1)) if len(ha) > 1 else float("nan"),
                         "config": _key(c0)})
    return claims_df, pd.DataFrame(run_rows), seconds


def _variant(cfg, plan: Plan) -> str:
    """The TCM settings that differ from the Plan's own TCM-DBNet (the ablation ladder's rungs), "-" for none."""
    import dataclasses

    if cfg.tcm is None:
        return "-"
    base = dataclasses.asdict(plan.config("tcm-dbnet", cfg.domain).tcm)
    mine = dataclasses.asdict(cfg.tcm)
    diff = [f"{k}={v}" for k, v in mine.items() if base.get(k) != v]
    return ", ".join(diff) or "-"


def summary(claims_df: pd.DataFrame, runs_df: pd.DataFrame, precisions=("fp32", "bf16")) -> str:
    """A sentence from the numbers: how the change of precision compares with the seed-to-seed spread."""
    a, b = precisions
    change = claims_df[f"{b}_minus_{a}"].abs()
    ratio = claims_df["change_in_seed_sds"]
    flips = int((claims_df[f"verdict_{a}"] != claims_df[f"verdict_{b}"]).sum())
    run_change = (runs_df[f"hmean_{b}"] - runs_df[f"hmean_{a}"]).abs()
    return (f"Over {len(claims_df)} comparisons, switching {a} -> {b} moves a comparison's difference by "
            f"{change.median():.3f} (median; max {change.max():.3f}), i.e. {ratio.median():.2f} (median; max "
            f"{ratio.max():.2f}) seed-to-seed standard deviations of that comparison; {flips} verdict(s) change. "
            f"Per run config (mean over seeds), hmean moves by {run_change.median():.3f} (median; max "
            f"{run_change.max():.3f}), against a median seed-to-seed sd of {runs_df[f'seed_sd_{a}'].median():.3f}.")


def main(argv=None) -> int:
    from .report import Stamp, save_table

    ap = argparse.ArgumentParser(prog="python -m tcm_kit.precision_study", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", help="the Plan whose claims' runs are compared (default cpu)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    plan = Plan.for_profile(args.profile)
    t0 = time.time()
    claims_df, runs_df, seconds = precision_tables(plan, progress=not args.quiet)
    note = (f"Plan: {plan.describe()}. The claims' runs trained once in fp32 and once in bf16 on one machine "
            f"({_cpu_name()}); training time summed over the runs: "
            + ", ".join(f"{p} {s / 60:.1f} min" for p, s in seconds.items())
            + f". {summary(claims_df, runs_df)}")
    stamp = dict(profile=plan.profile, seeds=tuple(plan.claim_seeds), wall_seconds=time.time() - t0,
                 note=note, precision="fp32 and bf16")
    save_table(claims_df, "precision_claims", f"Precision: the claims in fp32 and bf16 ({plan.profile})",
               Stamp(**stamp))
    path = save_table(runs_df, "precision_runs", f"Precision: each run's hmean in fp32 and bf16 ({plan.profile})",
                      Stamp(**stamp))
    print(note)
    print(path)
    return 0


def _cpu_name() -> str:
    """The CPU's model name and whether bf16 is native on it, for the report."""
    from .precision import native_bf16
    from .utils import cpu_name

    return f"{cpu_name()}, {'native' if native_bf16('cpu') else 'emulated'} bf16"


if __name__ == "__main__":
    raise SystemExit(main())
