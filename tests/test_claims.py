"""tcm_kit.claims: paired differences, intervals over seeds and over test images, verdicts."""
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
    assert up["verdict"] == "supported" and up["difference"] > 0.2 and up["seed_ci_lo"] > 0 and up["boot_ci_lo"] > 0
    down = C.claim_row(comparison(0.4, 0.8), n_boot=500)
    assert down["verdict"] == "contradicted" and down["seed_ci_hi"] < 0 and down["boot_ci_hi"] < 0


def test_no_difference_is_inconclusive_and_few_seeds_never_decide():
    same = C.claim_row(comparison(0.6, 0.6), n_boot=500)
    assert same["verdict"] == "inconclusive" and same["seed_ci_lo"] < 0 < same["boot_ci_hi"]
    two = C.claim_row(comparison(0.9, 0.2, seeds=(0, 1)), n_boot=200)
    assert two["verdict"] == "inconclusive (2 seeds)" and two["difference"] > 0.5


def test_bootstrap_interval_covers_the_observed_difference_and_narrows_with_more_images():
    c = comparison(0.7, 0.5)
    lo, hi = C.bootstrap_interval(c, n_boot=1000)
    assert lo < C.per_seed_differences(c).mean() < hi
    big = C.Comparison("i", "x", tuple(result(s, 0.7, n_img=400) for s in range(3)),
                       tuple(result(s, 0.5, n_img=400, rng=np.random.default_rng([s, 9])) for s in range(3)))
    blo, bhi = C.bootstrap_interval(big, n_boot=1000)
    assert bhi - blo < hi - lo


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
    assert {"claim", "comparison", "n_seeds", "difference", "seed_ci_lo", "boot_ci_hi", "verdict"} <= set(df)


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
