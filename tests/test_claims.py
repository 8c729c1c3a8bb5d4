"""tcm_kit.claims: paired differences, intervals over seeds and a hierarchical bootstrap, Holm-corrected verdicts,
detectable effects."""
import math

import numpy as np
import pytest

from tcm_kit import claims as C
from tcm_kit.metrics import aggregate


def result(seed, found, n_img=40, rng=None, n_gt=5, false=1):
    """A fake result: each image has n_gt words, `found` of them detected (per image, a fraction or an array),
    and `false` false positives."""
    rng = rng or np.random.default_rng(seed)
    tp = rng.binomial(n_gt, found, size=n_img)
    counts = np.stack([tp, tp + false, np.full(n_img, n_gt)], 1)
    h = float(C.dataset_hmean(counts))
    return {"seed": seed, "hmean": h, "per_image": counts.tolist()}


def comparison(m_found, b_found, seeds=(0, 1, 2), **kw):
    m = tuple(result(s, m_found, rng=np.random.default_rng([s, 1])) for s in seeds)
    b = tuple(result(s, b_found, rng=np.random.default_rng([s, 2])) for s in seeds)
    return C.Comparison("i", "tcm-dbnet vs dbnet", m, b, **kw)


def test_dataset_hmean_is_the_metric_modules():
    counts = np.array([[3, 4, 5], [0, 2, 1], [2, 2, 2]])
    want = aggregate([{"tp": a, "n_pred": b, "n_gt": c} for a, b, c in counts])["hmean"]
    assert float(C.dataset_hmean(counts)) == pytest.approx(want)
    assert float(C.dataset_hmean(np.zeros((2, 3), int))) == 0.0


def test_seed_interval_is_students_t():
    m, lo, hi = C.seed_interval([0.1, 0.2, 0.3])
    assert m == pytest.approx(0.2) and hi - m == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert math.isnan(C.seed_interval([0.1])[1])


def test_a_clear_gain_is_supported_and_a_clear_loss_contradicted():
    up = C.claim_row(comparison(0.8, 0.4), n_boot=500)
    assert up["verdict"] == "supported" and up["difference"] > 0.2 and up["seed_ci_lo"] > 0 and up["hboot_ci_lo"] > 0
    assert up["p_holm"] == max(up["p_seed"], up["p_hboot"]) < 0.05 and up["family"] == 1
    down = C.claim_row(comparison(0.4, 0.8), n_boot=500)
    assert down["verdict"] == "contradicted" and down["seed_ci_hi"] < 0 and down["hboot_ci_hi"] < 0


def test_no_difference_is_inconclusive_and_few_seeds_never_decide():
    same = C.claim_row(comparison(0.6, 0.6), n_boot=500)
    assert same["verdict"] == "inconclusive" and same["seed_ci_lo"] < 0 < same["hboot_ci_hi"]
    assert same["detectable"] > abs(same["difference"])
    two = C.claim_row(comparison(0.9, 0.2, seeds=(0, 1)), n_boot=200)
    assert two["verdict"] == "inconclusive (2 seeds)" and two["difference"] > 0.5


def test_bootstrap_interval_covers_the_observed_difference_and_narrows_with_more_images():
    def alike(n_img):  # every seed's runs drawn alike: no seed noise, only test-image noise
        return C.Comparison("i", "x", tuple(result(s, 0.7, n_img=n_img, rng=np.random.default_rng(1)) for s in range(3)),
                            tuple(result(s, 0.5, n_img=n_img, rng=np.random.default_rng(2)) for s in range(3)))
    c = alike(40)
    assert np.ptp(C.per_seed_differences(c)) == 0
    lo, hi = C.bootstrap_interval(c, n_boot=1000)
    assert lo < C.per_seed_differences(c).mean() < hi
    blo, bhi = C.bootstrap_interval(alike(400), n_boot=1000)
    assert bhi - blo < hi - lo


def test_the_hierarchical_bootstrap_resamples_seeds_too():
    """One lucky seed: seeds 1 and 2 of the method are the baseline's own runs. Resampling test images alone would
    call the +0.2 of seed 0 a clear gain; resampling seeds as well finds replicates of no gain at all."""
    base = tuple(result(s, 0.5, n_img=200, rng=np.random.default_rng([s, 2])) for s in range(3))
    lucky = (result(0, 0.9, n_img=200, rng=np.random.default_rng(7)),) + base[1:]
    row = C.claim_row(C.Comparison("i", "x", lucky, base), n_boot=2000)
    assert row["per_seed"].split()[1:] == ["+0.000", "+0.000"] and row["difference"] > 0.05
    assert row["hboot_ci_lo"] <= 0 < row["hboot_ci_hi"] and row["p_hboot"] > (2 / 3) ** 3
    assert row["verdict"] == "inconclusive"


def test_holm_adjusts_over_the_family_and_skips_undecidable_rows():
    assert np.allclose(C.holm([0.01, 0.04, 0.03, float("nan")])[:3], [0.03, 0.06, 0.06])
    assert np.isnan(C.holm([0.01, float("nan")])[1]) and C.holm([0.01, float("nan")])[0] == 0.01
    assert C.holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_a_verdict_holds_only_after_the_correction_for_the_table():
    def moderate(seed_base):  # a real but modest gain: p about 0.01 on its own
        return C.Comparison("i", "moderate",
                            tuple(result(s, 0.68, n_img=400, rng=np.random.default_rng([s, seed_base])) for s in range(3)),
                            tuple(result(s, 0.6, n_img=400, rng=np.random.default_rng([s, seed_base + 1]))
                                  for s in range(3)))
    alone = C.claims_table([moderate(1)], n_boot=2000).iloc[0]
    assert alone["verdict"] == "supported" and 0.05 / 14 < max(alone["p_seed"], alone["p_hboot"]) < 0.05
    nulls = [C.Comparison("i", f"null {k}", *(tuple(result(s, 0.6, n_img=400, rng=np.random.default_rng([s, k, g]))
                                                   for s in range(3)) for g in (0, 1))) for k in range(13)]
    table = C.claims_table([moderate(1)] + nulls, n_boot=2000)
    first = table.iloc[0]
    assert first["family"] == 14 and first["p_holm"] > alone["p_holm"] and first["verdict"] == "inconclusive"
    assert first["detectable"] > alone["detectable"]  # a larger family needs a larger effect
    assert (table["verdict"] == "inconclusive").all()


def test_detectable_effect_is_the_larger_tests_power_bound():
    from scipy.stats import norm, t

    m, n = 14, 3
    want_seed = (t.ppf(1 - 0.05 / (2 * m), n - 1) + t.ppf(0.8, n - 1)) * 0.02 / np.sqrt(n)
    assert C.detectable_effect(0.02, n, 1e-6, m) == pytest.approx(want_seed)
    assert C.detectable_effect(1e-6, n, 0.01, m) == pytest.approx((norm.ppf(1 - 0.05 / (2 * m)) + norm.ppf(0.8)) * 0.01)
    assert C.detectable_effect(0.02, n, 0.0, 1) < C.detectable_effect(0.02, n, 0.0, m)
    assert np.isnan(C.detectable_effect(0.02, 1, 0.01, m))


def test_difference_of_differences_for_the_few_shot_claim():
    small = comparison(0.8, 0.3)  # big gain with little data
    full = comparison(0.8, 0.7)  # small gain with all data
    c = C.Comparison("ii", "gain at 10% - gain at 100%", small.method, small.baseline, full.method, full.baseline)
    d = C.per_seed_differences(c)
    assert np.allclose(d, C.per_seed_differences(small) - C.per_seed_differences(full))
    assert C.claim_row(c, n_boot=500)["verdict"] == "supported"


def test_unpaired_or_countless_runs_are_refused():
    c = comparison(0.7, 0.5)
    with pytest.raises(C.ClaimError, match="paired by seed"):
        C.per_seed_differences(C.Comparison("i", "x", c.method, c.baseline[::-1]))
    bare = tuple({k: v for k, v in r.items() if k != "per_image"} for r in c.baseline)
    with pytest.raises(C.ClaimError, match="per-image counts"):
        C.bootstrap_interval(C.Comparison("i", "x", c.method, bare))
    short = tuple({**r, "per_image": r["per_image"][:10]} for r in c.baseline)
    with pytest.raises(C.ClaimError, match="same images"):
        C.bootstrap_interval(C.Comparison("i", "x", c.method, short))


def test_claims_table_has_one_row_per_comparison():
    df = C.claims_table([comparison(0.8, 0.4), comparison(0.5, 0.5)], n_boot=200)
    assert list(df["verdict"][:1]) == ["supported"] and len(df) == 2
    assert {"claim", "comparison", "n_seeds", "difference", "seed_ci_lo", "hboot_ci_hi", "p_holm", "verdict",
            "detectable", "family"} <= set(df)


def curves(rise_per_step, seeds=(0, 1, 2), steps=(100, 200, 300, 400), detector="dbnet", noise=0.01):
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame([{"detector": detector, "seed": s, "step": t,
                          "hmean": 0.2 + rise_per_step * t + noise * rng.standard_normal()}
                         for s in seeds for t in steps])


def test_plateau_table_tells_a_rising_curve_from_a_flat_one():
    import pandas as pd

    from tcm_kit.describe import describe_plateau
    from tcm_kit.tables import plateau_table

    df = plateau_table(pd.concat([curves(1e-3, detector="rising"), curves(0.0, detector="flat"),
                                  curves(0.0, detector="noisy", noise=0.1)]))
    row = df.set_index("detector")
    assert row.loc["rising", "state"] == "still rising" and row.loc["flat", "state"] == "plateau"
    assert row.loc["noisy", "state"] == "undecided"  # an interval spanning 0 and the tolerance decides nothing
    assert (row["from_step"] == 300).all() and (row["to_step"] == 400).all()  # the last quarter of 400 steps
    assert row.loc["rising", "gain"] == pytest.approx(0.1, abs=0.05)
    text = describe_plateau(df)
    assert "rising: validation hmean" in text and "1 of 3 detectors were still learning" in text
    assert "For 1 of 3 detectors the seeds cannot tell a plateau from a rise" in text
    assert plateau_table(curves(1e-3, seeds=(0, 1)))["state"].iloc[0] == "undecided (2 seeds)"
