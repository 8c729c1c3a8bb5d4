"""The sentences under the tables of notebooks 01-05, each derived from the numbers in its table (`tcm_kit.tables`).

A difference between two rows is stated with what the table says about its noise: with one seed a row it is "one
seed: not an effect"; with several seeds (a `seed` column with repeated rows, or `<metric>_mean` / `<metric>_std` /
`n_seeds` columns) it is "within noise" when smaller than the larger of the two rows' seed standard deviations.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .experiments import ABLATION_EXTRAS, ABLATION_LADDER, ExperimentError
from .tables import few_shot_gain, paper_main_table

TIE = 1e-9  # differences smaller than this are no difference


def _f(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _signed(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3f}"


# ---------------------------------------------------------------------------------------------------- noise

def _spread(df: pd.DataFrame, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """Per distinct `keys`: mean, std (sample, over seeds; NaN with one) and n (seeds) of `metric`, from
    <metric>_mean / <metric>_std / n_seeds columns when the table has them (an aggregated table), else from the
    rows (several rows per key need a `seed` column). Indexed by keys, in the table's order."""
    keys = list(keys)
    if f"{metric}_mean" in df:
        std = df[f"{metric}_std"] if f"{metric}_std" in df else pd.Series(np.nan, index=df.index)
        n = df["n_seeds"] if "n_seeds" in df else np.where(std.notna(), 2, 1)
        out = pd.DataFrame({"mean": df[f"{metric}_mean"].to_numpy(float), "std": std.to_numpy(float),
                            "n": np.asarray(n, dtype=int)}, index=pd.MultiIndex.from_frame(df[keys]))
    else:
        dup = df.duplicated(keys, keep=False)
        if dup.any() and "seed" not in df:
            raise ExperimentError(f"several rows share {keys} {df.loc[dup, keys].iloc[0].tolist()} and the table "
                                  f"has no seed column to tell them apart")
        g = df.groupby(keys, sort=False)
        out = pd.DataFrame({"mean": g[metric].mean(), "std": g[metric].std(ddof=1),
                            "n": g["seed"].nunique() if "seed" in df else g[metric].size()})
        if f"{metric}_std" in df:  # one row per key with its own spread
            out["std"] = g[f"{metric}_std"].first()
    if len(keys) == 1:
        out.index = out.index.get_level_values(0)
    return out


def _verdict(diff: float, a: pd.Series, b: pd.Series) -> str:
    """What a difference between rows a and b (each with mean, std, n) may be called."""
    if not np.isfinite(diff):
        return "n/a"
    if abs(diff) < TIE:
        return "no difference"
    n = int(min(a["n"], b["n"]))
    if n < 2:
        return "one seed: not an effect"
    noise = np.nanmax([a["std"], b["std"]])
    if not np.isfinite(noise):
        return f"{n} seeds but no spread given: not an effect"
    if abs(diff) <= noise:
        return f"within noise (seed std up to {noise:.3f}, {n} seeds)"
    return f"larger than the seed spread (std up to {noise:.3f}, {n} seeds)"


def _seeds(s: pd.DataFrame) -> str:
    lo, hi = int(s["n"].min()), int(s["n"].max())
    return "one seed" if hi < 2 else (f"{lo} seeds" if lo == hi else f"{lo}-{hi} seeds")


# ---------------------------------------------------------------------------------------------------- 02

def describe_ablation(df: pd.DataFrame, metric: str = "hmean", ladder: Sequence[str] = ABLATION_LADDER,
                      extras: Mapping[str, str] = ABLATION_EXTRAS) -> str:
    """Sentences from the ablation table's numbers: each rung of `ladder` (bottom to top, the order of the
    comparisons whatever the table's row order) against the rung below it that the table has, each extra row
    against its reference rung, the top rung against the bottom one; in `metric` and, where the table has it,
    the trained score map's text-cell AUC (P_auc). Each difference says what its noise allows it to be called."""
    s = _spread(df, ["variant"], metric)
    if s["mean"].max() - s["mean"].min() < TIE:
        return (f"All {len(s)} variants reach the same test {metric} ({_f(s['mean'].iloc[0])}): at this budget the "
                f"ablation does not separate TCM's components.")
    unknown = [v for v in s.index if v not in ladder and v not in extras]
    if unknown:
        raise ExperimentError(f"variants {unknown} are neither on the ladder {list(ladder)} nor extra rows "
                              f"{list(extras)}: pass ladder= / extras= for this table")
    cols = {metric: s}
    if "P_auc" in df and df["P_auc"].notna().any():
        cols["P AUC"] = _spread(df, ["variant"], "P_auc")

    def step(v: str, ref: str) -> str:
        parts, verdicts = [], []
        for name, t in cols.items():
            d = t.at[v, "mean"] - t.at[ref, "mean"]
            if np.isfinite(d):
                parts.append(f"{name} {_f(t.at[ref, 'mean'])} -> {_f(t.at[v, 'mean'])} ({_signed(d)})")
                verdicts.append(_verdict(d, t.loc[v], t.loc[ref]))
        if len(set(verdicts)) == 1:
            return f"'{v}' vs '{ref}': " + ", ".join(parts) + f" [{verdicts[0]}]"
        return f"'{v}' vs '{ref}': " + ", ".join(f"{p} [{w}]" for p, w in zip(parts, verdicts))

    rungs = [v for v in ladder if v in s.index]
    lines = [step(v, below) for below, v in zip(rungs, rungs[1:])]
    extra = [step(v, ref) for v, ref in extras.items() if v in s.index and ref in s.index]
    out = (f"Each rung vs the rung below it ({_seeds(s)} per variant; test {metric}"
           + (", and the trained score map's text-cell AUC where both rows have one" if len(cols) > 1 else "")
           + "): " + "; ".join(lines) + ".")
    if extra:
        out += " Extra rows: " + "; ".join(extra) + "."
    if len(rungs) > 2:
        out += f" Top of the ladder vs its bottom: {step(rungs[-1], rungs[0])}."
    top = s.index[s["mean"] >= s["mean"].max() - TIE]
    out += (f" Highest {metric}: " + ", ".join(f"**{v}**" for v in top) + f" ({_f(s['mean'].max())}, "
            f"{_seeds(s.loc[top])})" + ("" if s.loc[top, "n"].min() >= 2 else ": one seed, not a finding") + ".")
    return out


def describe_tau_lambda(df: pd.DataFrame) -> str:
    if len(df) == 0:
        return "The τ x λ grid is empty."
    best = df.loc[df["hmean"].idxmax()]
    spread = df["hmean"].max() - df["hmean"].min()
    if spread < 1e-9:
        return f"All {len(df)} (τ, λ) settings give the same hmean ({_f(best['hmean'])})."
    n = int(df["seed"].nunique()) if "seed" in df else 1
    caveat = ("one seed per setting: no setting is shown to be better" if n < 2 else
              f"{n} seeds; differences this size need the seed spread to be called effects")
    return (f"Highest hmean at τ = {best['tau']:g}, λ = {best['lambda']:g} ({_f(best['hmean'])}); the "
            f"{len(df)} settings span {_f(spread)} ({caveat}).")


# ---------------------------------------------------------------------------------------------------- 03 / 04

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
              f"{_signed(large.mean())}. Whether the gain grows as data shrinks is claim (ii) of "
              f"reports/claims.md, decided there from paired seeds and intervals, not from these means")
    return s + "."


def describe_transfer(long: pd.DataFrame, claims: str = "reports/claims.md") -> str:
    """One sentence on the transfer matrix's off-domain means; `claims` names the table that tests them."""
    off = long[~long["in_domain"]].groupby("detector", sort=False)["hmean"].mean()
    on = long[long["in_domain"]].groupby("detector", sort=False)["hmean"].mean()
    if off.empty:
        return "Only one domain: no transfer to measure."
    parts = "; ".join(f"{d}: {_f(off[d])} on other domains vs {_f(on[d])} in-domain" for d in off.index)
    best = off.idxmax()
    tie = (off.max() - off.min()) < 1e-9
    return (f"Mean test hmean — {parts}. "
            + ("The detectors transfer equally well here." if tie else
               f"{best} has the highest mean off its training domain (+{off.max() - off.drop(best).max():.3f} "
               f"over the next); whether that is an effect is claim (iii) of {claims} (paired seeds, "
               f"intervals)."))


# ---------------------------------------------------------------------------------------------------- 05

def _paper_gains(paper: pd.DataFrame) -> dict:
    """baseline head (lower case, e.g. 'dbnet') -> (TCM gain in F points, dataset) from paper_main_table()."""
    rows = paper[paper["metric"].str.startswith("TCM gain")]
    return {m.split(" vs ")[1].strip().lower(): (float(v), d)
            for m, d, v in zip(rows["method (paper)"], rows["dataset"], rows["value (paper)"])}


def describe_main(df: pd.DataFrame, metric: str = "hmean", paper: pd.DataFrame | None = None) -> str:
    """Per head X with both X and tcm-X in the main table: tcm-X minus X in `metric` on each domain (from the
    table's rows, seeds averaged when it has a seed column), counted higher / lower / equal, their mean in F
    points, what the seeds allow it to be called; beside it the paper's gain for that head (paper_main_table())."""
    s = _spread(df, ["domain", "detector"], metric)
    dets = list(dict.fromkeys(df["detector"]))
    pairs = [(d, d[4:]) for d in dets if d.startswith("tcm-") and d[4:] in dets]
    paper_gain = _paper_gains(paper_main_table() if paper is None else paper)
    parts = []
    for tcm, base in pairs:
        doms = [d for d in dict.fromkeys(df["domain"]) if (d, tcm) in s.index and (d, base) in s.index]
        if not doms:
            continue
        diffs = {d: s.at[(d, tcm), "mean"] - s.at[(d, base), "mean"] for d in doms}
        verdicts = {d: _verdict(v, s.loc[(d, tcm)], s.loc[(d, base)]) for d, v in diffs.items()}
        higher = sum(v > TIE for v in diffs.values())
        lower = sum(v < -TIE for v in diffs.values())
        mean = float(np.mean(list(diffs.values())))
        n = int(min(s.loc[[(d, x) for d in doms for x in (tcm, base)], "n"]))
        if n < 2:
            called = "one seed: not an effect"
        else:
            beyond = sum(v.startswith("larger") for v in verdicts.values())
            called = f"{n}+ seeds: larger than the seed spread on {beyond} of {len(doms)} domains"
        each = ", ".join(f"{_signed(diffs[d])} on {d}" + (f" ({verdicts[d]})" if n >= 2 else "") for d in doms)
        p = paper_gain.get(base)
        ref = (f"the paper reports {p[0]:+.1f} F points for {tcm} over {base} on {p[1]}" if p else
               f"the paper reports no {tcm} gain")
        parts.append(f"{tcm} minus {base} (test {metric}): {each}; higher than {base} on {higher} of {len(doms)} "
                     f"domains, lower on {lower}, equal on {len(doms) - higher - lower}; mean {_signed(mean)} "
                     f"({100 * mean:+.1f} F points; {called}) — {ref}")
    if not parts:
        return "No detector appears both with and without TCM: no gain to report."
    return "; ".join(parts) + "."


# ---------------------------------------------------------------------------------------------------- 01

def describe_step0(df: pd.DataFrame) -> str:
    """One sentence from the step-0 table's numbers."""
    from .experiments import STEP0_VARIANTS

    a = df.set_index("variant")["P_auc_step0"]
    best = a.idxmax()
    bare = next(k for k in STEP0_VARIANTS if "no TCM modules" in k)
    authors = next(k for k in STEP0_VARIANTS if k.endswith("(authors)"))
    others = "; ".join(f"{name} {a[k]:.3f}" for name, k in (("the authors' setting", authors),
                                                            ("the bare prompt", bare)) if k in a.index)
    return (f"Before any training, P separates text cells best with **{best}** (AUC {a.max():.3f}); {others} "
            f"({int(df['n_images'].iloc[0])} test images; one model per setting: an AUC, not an effect).")


CLAIM_NAMES = {"i": "TCM lifts the plugged detector", "ii": "the gain grows as labelled data shrinks",
               "iii": "TCM transfers better across domains", "iv": "each component adds"}


def describe_claims(df: pd.DataFrame) -> str:
    """One line per claim of tables.claims_table, from its rows' verdicts (tcm_kit.claims): how many comparisons
    the corrected tests support, contradict or leave open, with each comparison's difference and seed interval,
    and for an inconclusive one the smallest effect it could have detected."""
    lines = []
    for claim, rows in df.groupby("claim", sort=False):
        counts = rows["verdict"].str.split(" ").str[0].value_counts()
        tally = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("supported", "contradicted", "inconclusive"))
        parts = []
        for _, r in rows.iterrows():
            ci = ("" if math.isnan(r["seed_ci_lo"]) else f" [{_signed(r['seed_ci_lo'])}, {_signed(r['seed_ci_hi'])}]")
            rules_out = ("" if r["verdict"] != "inconclusive" or math.isnan(r["detectable"])
                         else f", an effect of ±{r['detectable']:.3f} or more would have shown")
            parts.append(f"{r['comparison']} {_signed(r['difference'])}{ci} ({r['verdict']}{rules_out})")
        lines.append(f"- Claim ({claim}), {CLAIM_NAMES.get(claim, claim)}: {tally} over "
                     f"{int(rows['n_seeds'].min())}-{int(rows['n_seeds'].max())} seeds. " + "; ".join(parts) + ".")
    if len(df) and "family" in df:
        lines.append(f"\nVerdicts after Holm–Bonferroni over the table's {int(df['family'].max())} comparisons "
                     f"(family-wise error 5 %); the detectable effect is at 80 % power.")
    return "\n".join(lines)


def describe_plateau(df: pd.DataFrame) -> str:
    """One line per detector of tables.plateau_table: its validation hmean at the end and whether the curve was
    still rising over the last part of training (the interval over seeds of that gain)."""
    if df.empty:
        return "No run of this plan recorded a validation curve (evaluation.val_every = 0)."
    lines = []
    for _, r in df.iterrows():
        ci = "" if math.isnan(r["gain_ci_lo"]) else f" [{_signed(r['gain_ci_lo'])}, {_signed(r['gain_ci_hi'])}]"
        lines.append(f"- {r['detector']}: validation hmean {r['val_hmean_end']:.3f} at step {int(r['to_step'])}; "
                     f"from step {int(r['from_step'])} it moved {_signed(r['gain'])}{ci} over "
                     f"{int(r['n_seeds'])} seeds: {r['state']}.")
    rising = df["state"] == "still rising"
    if rising.any():
        lines.append(f"- {int(rising.sum())} of {len(df)} detectors were still learning when training stopped: "
                     "their hmeans, and the differences between them, are those of a budget, not of a plateau.")
    open_ = df["state"].str.startswith("undecided")
    if open_.any():
        lines.append(f"- For {int(open_.sum())} of {len(df)} detectors the seeds cannot tell a plateau from a "
                     "rise: a longer run is needed before their hmeans are read as converged.")
    return "\n".join(lines)
