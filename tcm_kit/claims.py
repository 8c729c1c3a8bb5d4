"""The paper's claims as paired comparisons: TCM − baseline per seed, intervals, p-values corrected for the number of
comparisons in a table, verdicts, and the smallest effect each comparison could have detected.

A comparison pairs runs of two detectors (or two TCM variants) trained with the same seed on the same data and
tested on the same images. Runs of one comparison must share their precision (a result's "amp": bf16 or fp32,
fp32 where unrecorded). Two kinds of noise are measured:
  - over seeds: the mean of the per-seed differences, Student's t (training noise; the test set held fixed);
  - a hierarchical bootstrap over seeds and test images together: each replicate resamples the seeds (with
    replacement) and, independently, one set of test images (with replacement) shared by every run of the
    comparison, recomputes every run's dataset hmean from its per-image counts, and averages the resampled
    seeds' differences (training and test-sampling noise at once).
Each gives a 95 % interval and a two-sided p-value against "no difference". A comparison's p is the larger of
the two (it is decided only when both tests reject: an intersection-union test, valid at the same level). Over a
table's comparisons the p-values are Holm–Bonferroni adjusted (family-wise error 5 %): the verdict is
"supported" or "contradicted" (by the difference's sign) only where the adjusted p is below 0.05, else
"inconclusive"; with fewer than MIN_SEEDS seeds it is "inconclusive (n seeds)" and takes no part in the family.
`detectable` is the smallest true difference the comparison would declare with 80 % power at the strictest Holm
step (0.05 / m): the larger of the two tests' (quantile(1 − 0.05/2m) + quantile(0.8)) · standard error. An
inconclusive comparison therefore makes an effect that large unlikely, and says nothing of smaller ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_SEEDS = 3
LEVEL = 0.95


class ClaimError(ValueError):
    """Runs that cannot be paired (different seeds or test images) or lack per-image counts."""


@dataclass(frozen=True)
class Comparison:
    """One paired comparison, method − baseline, each group one item per seed in the same seed order: the runs'
    result dicts (or, while it is planned, their TrainConfigs: tcm_kit.experiments.claim_specs). A difference of
    differences (claim ii) also gives method2 / baseline2: (m − b) − (m2 − b2). test_on: the config of a
    domain the runs are cross-evaluated on (claim iii), else None."""
    claim: str
    label: str
    method: tuple
    baseline: tuple
    method2: tuple = ()
    baseline2: tuple = ()
    test_on: object = None

    def groups(self) -> tuple:
        return (self.method, self.baseline) + ((self.method2, self.baseline2) if self.method2 else ())


def dataset_hmean(counts: np.ndarray) -> np.ndarray:
    """counts (..., N, 3) of [tp, n_pred, n_gt] per image -> the dataset hmean (...,) (counts summed first, as
    tcm_kit.metrics.aggregate)."""
    tp, n_pred, n_gt = (counts[..., k].sum(-1).astype(float) for k in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n_pred > 0, tp / n_pred, 0.0)
        r = np.where(n_gt > 0, tp / n_gt, 0.0)
        return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


def seed_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi) of per-seed differences: Student's t interval; lo = hi = nan with one seed."""
    from scipy.stats import t

    d = np.asarray(diffs, float)
    m = float(d.mean())
    if len(d) < 2:
        return m, math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return m, m - half, m + half


def _counts(results: Sequence[dict], what: str) -> np.ndarray:
    try:
        arrays = [np.asarray(r["per_image"], np.int64) for r in results]
    except (KeyError, TypeError):
        raise ClaimError(f"{what}: a result has no per-image counts (trained by an older tcm-kit?)") from None
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2 or arrays[0].shape[1] != 3:
        raise ClaimError(f"{what}: per-image counts of different test sets {[a.shape for a in arrays]}")
    return np.stack(arrays)  # (S, N, 3)


def _seeds(results: Sequence[dict]) -> tuple:
    return tuple(r.get("seed") for r in results)


def _groups(c: Comparison) -> list[tuple]:
    groups = list(c.groups())
    seeds = {_seeds(g) for g in groups}
    if len(seeds) != 1 or not groups[0]:
        raise ClaimError(f"{c.label}: runs are not paired by seed: {[_seeds(g) for g in groups]}")
    precisions = sorted({str(r.get("amp", "fp32")) for g in groups for r in g})
    if len(precisions) > 1:  # bf16 and fp32 round differently: their difference is not the methods'
        raise ClaimError(f"{c.label}: runs trained in different precisions ({', '.join(precisions)}) cannot be "
                         f"paired; train them all in one (TCM_KIT_PRECISION=fp32 or bf16)")
    return groups


def per_seed_differences(c: Comparison) -> np.ndarray:
    """The comparison's difference for each seed, from the runs' own hmeans (S,)."""
    h = [np.array([float(r["hmean"]) for r in g]) for g in _groups(c)]
    d = h[0] - h[1]
    return d - (h[2] - h[3]) if len(h) == 4 else d


def bootstrap_interval(c: Comparison, n_boot: int = 2000, seed: int = 0,
                       level: float = LEVEL) -> tuple[float, float]:
    """(lo, hi): the hierarchical bootstrap's percentile interval (module doc)."""
    d = hierarchical_bootstrap(c, n_boot, seed)
    return float(np.quantile(d, 0.5 - level / 2)), float(np.quantile(d, 0.5 + level / 2))


def hierarchical_bootstrap(c: Comparison, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(R,) replicates of the seed-averaged difference, seeds and test images resampled together (module doc)."""
    counts = [_counts(g, c.label).astype(float) for g in _groups(c)]  # each (S, N, 3)
    if any(x.shape != counts[0].shape for x in counts):
        raise ClaimError(f"{c.label}: the runs were not tested on the same images")
    n_seeds, n = counts[0].shape[:2]
    rng = np.random.default_rng(seed)
    images = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)  # (R, N): how often each is drawn
    seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)  # (R, S)
    h = []
    for x in counts:
        tot = np.einsum("rn,snk->rsk", images, x)  # (R, S, 3): each run's summed counts on the drawn images
        h.append(dataset_hmean(tot[:, :, None, :]))  # (R, S)
    d = h[0] - h[1]
    if len(h) == 4:
        d = d - (h[2] - h[3])
    return (seeds * d).sum(axis=1) / n_seeds  # (R,)


def _bootstrap_p(d: np.ndarray) -> float:
    """Two-sided p of "no difference" from bootstrap replicates: twice the smaller tail at 0, +1 smoothed."""
    r = len(d)
    tail = min(np.sum(d <= 0), np.sum(d >= 0))
    return float(min(1.0, 2 * (tail + 1) / (r + 1)))


def _t_p(diffs: np.ndarray) -> float:
    """Two-sided one-sample t-test p of per-seed differences against 0 (nan with one seed)."""
    from scipy.stats import t

    n = len(diffs)
    if n < 2:
        return math.nan
    sd = float(np.std(diffs, ddof=1))
    m = float(np.mean(diffs))
    if sd == 0:
        return 1.0 if m == 0 else 0.0
    return float(2 * t.sf(abs(m) / (sd / math.sqrt(n)), n - 1))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (nan entries stay nan and do not count in the family)."""
    p = np.asarray(p, float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def detectable_effect(seed_sd: float, n_seeds: int, boot_sd: float, family: int, power: float = 0.8,
                      alpha: float = 1 - LEVEL) -> float:
    """The smallest true difference detected with `power` by both tests at the level alpha / family, two-sided."""
    from scipy.stats import norm, t

    if n_seeds < 2 or family < 1:
        return math.nan
    a = alpha / family
    seed_mde = (t.ppf(1 - a / 2, n_seeds - 1) + t.ppf(power, n_seeds - 1)) * seed_sd / math.sqrt(n_seeds)
    boot_mde = (norm.ppf(1 - a / 2) + norm.ppf(power)) * boot_sd
    return float(max(seed_mde, boot_mde))


def verdict(p_adjusted: float, difference: float, n_seeds: int) -> str:
    """supported / contradicted / inconclusive, from the Holm-adjusted p (module doc)."""
    if n_seeds < MIN_SEEDS or math.isnan(p_adjusted):
        return f"inconclusive ({n_seeds} seed{'s' if n_seeds != 1 else ''})"
    if p_adjusted < 1 - LEVEL:
        return "supported" if difference > 0 else "contradicted"
    return "inconclusive"


def _row(c: Comparison, n_boot: int) -> tuple[dict, float, float]:
    """A row without the family's correction -> (row, seed sd, bootstrap sd)."""
    diffs = per_seed_differences(c)
    mean, lo, hi = seed_interval(diffs)
    reps = hierarchical_bootstrap(c, n_boot)
    p_seed, p_boot = _t_p(diffs), _bootstrap_p(reps)
    row = {"claim": c.claim, "comparison": c.label, "n_seeds": len(diffs), "difference": mean,
           "seed_ci_lo": lo, "seed_ci_hi": hi,
           "hboot_ci_lo": float(np.quantile(reps, (1 - LEVEL) / 2)),
           "hboot_ci_hi": float(np.quantile(reps, (1 + LEVEL) / 2)),
           "p_seed": p_seed, "p_hboot": p_boot,
           "p": max(p_seed, p_boot) if len(diffs) >= MIN_SEEDS else math.nan,
           "per_seed": " ".join(f"{d:+.3f}" for d in diffs)}
    sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
    return row, sd, float(np.std(reps, ddof=1))


def claim_row(c: Comparison, n_boot: int = 2000) -> dict:
    """One comparison's row, as the only comparison of its family (a table: claims_table)."""
    return claims_table([c], n_boot).iloc[0].to_dict()


def claims_table(comparisons: Sequence[Comparison], n_boot: int = 2000):
    """The comparisons' rows as a DataFrame, in the given order, one family: p_holm is each p adjusted over all of
    them, and the verdict and `detectable` take the family's size m into account (module doc)."""
    import pandas as pd

    parts = [_row(c, n_boot) for c in comparisons]
    rows = [r for r, _, _ in parts]
    adjusted = holm([r["p"] for r in rows])
    m = int(np.sum(~np.isnan(adjusted)))
    for r, (_, seed_sd, boot_sd), pa in zip(rows, parts, adjusted):
        r["p_holm"] = float(pa)
        r["verdict"] = verdict(pa, r["difference"], r["n_seeds"])
        r["detectable"] = detectable_effect(seed_sd, r["n_seeds"], boot_sd, max(m, 1))
        r["family"] = m
    order = ["claim", "comparison", "n_seeds", "difference", "seed_ci_lo", "seed_ci_hi", "hboot_ci_lo",
             "hboot_ci_hi", "p_seed", "p_hboot", "p_holm", "verdict", "detectable", "family", "per_seed"]
    return pd.DataFrame(rows, columns=order)
