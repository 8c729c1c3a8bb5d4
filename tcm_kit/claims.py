"""The paper's claims as paired comparisons: TCM − baseline per seed, 95 % intervals, verdicts from the intervals.

A comparison pairs runs of two detectors (or two TCM variants) trained with the same seed on the same data and
tested on the same images. Two intervals are computed:
  - over seeds: the mean of the per-seed differences ± t_{0.975, n-1} · sd / sqrt(n) (training noise);
  - a paired bootstrap over test images: each replicate draws one set of test images (with replacement) for all
    runs of the comparison, recomputes every run's dataset hmean from its per-image counts, and averages the
    per-seed differences (test-sampling noise); the 2.5 and 97.5 percentiles.
Runs of one comparison must share their precision (a result's "amp": bf16 or fp32, fp32 where unrecorded).
The verdict is "supported" when both intervals lie above 0, "contradicted" when both lie below, else
"inconclusive"; with fewer than MIN_SEEDS seeds it is "inconclusive (n seeds)" whatever the intervals say.
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
    """(lo, hi): paired bootstrap over test images of the seed-averaged difference (module doc)."""
    counts = [_counts(g, c.label) for g in _groups(c)]  # each (S, N, 3)
    n = counts[0].shape[1]
    if any(x.shape != counts[0].shape for x in counts):
        raise ClaimError(f"{c.label}: the runs were not tested on the same images")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (R, N): one draw for every run
    h = [dataset_hmean(x[:, idx].transpose(1, 0, 2, 3)) for x in counts]  # each (R, S)
    d = h[0] - h[1]
    if len(h) == 4:
        d = d - (h[2] - h[3])
    d = d.mean(axis=1)  # (R,)
    return float(np.quantile(d, 0.5 - level / 2)), float(np.quantile(d, 0.5 + level / 2))


def verdict(seed_lo: float, seed_hi: float, boot_lo: float, boot_hi: float, n_seeds: int) -> str:
    """supported / contradicted / inconclusive, from both intervals (module doc)."""
    if n_seeds < MIN_SEEDS or math.isnan(seed_lo):
        return f"inconclusive ({n_seeds} seed{'s' if n_seeds != 1 else ''})"
    if seed_lo > 0 and boot_lo > 0:
        return "supported"
    if seed_hi < 0 and boot_hi < 0:
        return "contradicted"
    return "inconclusive"


def claim_row(c: Comparison, n_boot: int = 2000) -> dict:
    """One row of reports/claims.md for a comparison."""
    diffs = per_seed_differences(c)
    mean, lo, hi = seed_interval(diffs)
    blo, bhi = bootstrap_interval(c, n_boot)
    return {"claim": c.claim, "comparison": c.label, "n_seeds": len(diffs), "difference": mean,
            "seed_ci_lo": lo, "seed_ci_hi": hi, "boot_ci_lo": blo, "boot_ci_hi": bhi,
            "verdict": verdict(lo, hi, blo, bhi, len(diffs)),
            "per_seed": " ".join(f"{d:+.3f}" for d in diffs)}


def claims_table(comparisons: Sequence[Comparison], n_boot: int = 2000):
    """The claims' rows as a DataFrame (one per comparison, in the given order)."""
    import pandas as pd

    return pd.DataFrame([claim_row(c, n_boot) for c in comparisons])
