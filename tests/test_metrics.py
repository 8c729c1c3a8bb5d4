"""Tests of tcm_kit.metrics: the ICDAR 2015 hmean-IoU rules, case by case, numbers worked by hand."""

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from tcm_kit.data.formats import Instance
from tcm_kit.metrics import (
    DEFAULT_THRESHOLDS,
    InvalidPolygonError,
    aggregate,
    best_threshold_sweep,
    hmean_iou,
    hmean_iou_per_image,
)


def box(x0, y0, x1, y1):
    """(4, 2) axis-aligned rectangle."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def gt(poly, ignore=False):
    return Instance(poly, "###" if ignore else "text", ignore)


def one(preds, gts, **kw):
    """Per-image record of a single-image dataset."""
    return hmean_iou_per_image([preds], [gts], **kw)[0]


# ---------------------------------------------------------------- matching


def test_perfect_match():
    r = hmean_iou([[box(0, 0, 10, 5)]], [[gt(box(0, 0, 10, 5))]])
    assert r == dict(precision=1.0, recall=1.0, hmean=1.0, tp=1, n_pred=1, n_gt=1)
    assert one([box(0, 0, 10, 5)], [gt(box(0, 0, 10, 5))])["matches"] == [(0, 0, 1.0)]


def test_iou_exactly_half_does_not_match():
    # pred is the left half of the gt: intersection 2, union 4 -> IoU 0.5 exactly, and the rule is strict >
    r = one([box(0, 0, 1, 2)], [gt(box(0, 0, 2, 2))])
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (0, 1, 1)
    assert (r["precision"], r["recall"], r["hmean"]) == (0.0, 0.0, 0.0)


def test_iou_just_above_half_matches():
    r = one([box(0, 0, 1.01, 2)], [gt(box(0, 0, 2, 2))])  # 2.02 / 4 = 0.505
    assert r["tp"] == 1
    assert r["matches"][0][2] == pytest.approx(0.505)


def test_iou_threshold_argument():
    assert one([box(0, 0, 1, 2)], [gt(box(0, 0, 2, 2))], iou_thr=0.4)["tp"] == 1
    assert one([box(0, 0, 1.5, 2)], [gt(box(0, 0, 2, 2))], iou_thr=0.75)["tp"] == 0  # IoU 0.75, strict


def test_one_pred_over_two_gts_matches_only_the_first_gt():
    # IoU with each gt = 9.5 / 10.5
    r = one([box(0.5, 0, 10.5, 10)], [gt(box(0, 0, 10, 10)), gt(box(1, 0, 11, 10))])
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (1, 1, 2)
    assert r["matches"][0][:2] == (0, 0)
    assert r["matches"][0][2] == pytest.approx(9.5 / 10.5)
    assert (r["precision"], r["recall"]) == (1.0, 0.5)


def test_two_preds_on_one_gt_give_one_tp():
    r = one([box(0, 0, 10, 10), box(0.5, 0, 10, 10)], [gt(box(0, 0, 10, 10))])
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (1, 2, 1)
    assert r["matches"] == [(0, 0, 1.0)]  # the first prediction, in index order
    assert r["precision"] == 0.5 and r["recall"] == 1.0


def test_greedy_official_order_is_not_a_maximum_matching():
    # gt0 x pred0: IoU 8/12; gt0 x pred1: IoU 1; gt1 x pred0: IoU 8/12; gt1 x pred1: IoU 6/14 < 0.5.
    # Official loop: gt0 takes the first free pred above threshold (pred0), gt1 is then left unmatched,
    # although the matching {gt0-pred1, gt1-pred0} would give 2.
    preds = [box(2, 0, 12, 10), box(0, 0, 10, 10)]
    gts = [gt(box(0, 0, 10, 10)), gt(box(4, 0, 14, 10))]
    r = one(preds, gts)
    assert r["tp"] == 1
    assert r["matches"][0][:2] == (0, 0)
    assert r["matches"][0][2] == pytest.approx(8 / 12)


# ---------------------------------------------------------------- don't care


def test_pred_mostly_inside_dont_care_is_dropped():
    r = one([box(4, 0, 14, 10)], [gt(box(0, 0, 10, 10), ignore=True)])  # 60% of the pred inside
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (0, 0, 0)
    assert r["ignored_preds"] == [0]
    assert (r["precision"], r["recall"], r["hmean"]) == (1.0, 1.0, 1.0)  # nothing to find, nothing wrong


def test_pred_exactly_half_inside_dont_care_is_kept():
    r = one([box(5, 0, 15, 10)], [gt(box(0, 0, 10, 10), ignore=True)])  # exactly 50%: strict > keeps it
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (0, 1, 0)
    assert r["ignored_preds"] == []
    assert (r["precision"], r["recall"], r["hmean"]) == (0.0, 1.0, 0.0)


def test_dont_care_gts_are_checked_one_at_a_time():
    # 40% of the pred on each of two don't-care gts (80% in total): no single one covers > 50% -> kept
    gts = [gt(box(0, 0, 4, 10), ignore=True), gt(box(6, 0, 10, 10), ignore=True)]
    r = one([box(0, 0, 10, 10)], gts)
    assert r["n_pred"] == 1 and r["ignored_preds"] == []


def test_ignore_threshold_argument():
    preds, gts = [box(4, 0, 14, 10)], [gt(box(0, 0, 10, 10), ignore=True)]  # 60% covered
    assert one(preds, gts, ignore_thr=0.7)["n_pred"] == 1
    assert one(preds, gts, ignore_thr=0.5)["n_pred"] == 0


def test_dont_care_gt_not_counted_in_recall_and_indices_stay_original():
    gts = [gt(box(100, 100, 120, 110), ignore=True), gt(box(0, 0, 10, 10))]
    r = one([box(0, 0, 10, 10)], gts)
    assert (r["tp"], r["n_pred"], r["n_gt"], r["recall"]) == (1, 1, 1, 1.0)
    assert r["matches"] == [(1, 0, 1.0)]  # gt index 1 in the caller's list


def test_pred_on_dont_care_is_neither_tp_nor_fp():
    gts = [gt(box(0, 0, 10, 10), ignore=True), gt(box(20, 0, 30, 10))]
    r = one([box(0, 0, 10, 10), box(20, 0, 30, 10)], gts)
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (1, 1, 1)
    assert r["matches"] == [(1, 1, 1.0)] and r["ignored_preds"] == [0]


def test_degenerate_dont_care_gt_is_skipped():
    gts = [gt(np.array([[0, 0], [5, 5], [10, 10]]), ignore=True), gt(box(0, 0, 10, 10))]
    r = one([box(0, 0, 10, 10)], gts)
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (1, 1, 1)


# ---------------------------------------------------------------- empty cases (official script conventions)


def test_empty_image_conventions():
    recs = hmean_iou_per_image([[], [box(0, 0, 1, 1)], []], [[], [], [gt(box(0, 0, 1, 1))]])
    no_gt_no_pred, only_preds, only_gts = recs
    assert (no_gt_no_pred["precision"], no_gt_no_pred["recall"], no_gt_no_pred["hmean"]) == (1.0, 1.0, 1.0)
    assert (only_preds["precision"], only_preds["recall"], only_preds["hmean"]) == (0.0, 1.0, 0.0)
    assert (only_gts["precision"], only_gts["recall"], only_gts["hmean"]) == (0.0, 0.0, 0.0)


def test_image_with_only_dont_care_and_no_pred_counts_as_perfect():
    r = one([], [gt(box(0, 0, 10, 10), ignore=True)])
    assert (r["precision"], r["recall"], r["hmean"], r["n_gt"]) == (1.0, 1.0, 1.0, 0)


def test_dataset_empty_conventions():
    zeros = dict(precision=0.0, recall=0.0, hmean=0.0, tp=0, n_pred=0, n_gt=0)
    assert hmean_iou([], []) == zeros
    assert hmean_iou([[], []], [[], []]) == zeros  # dataset level: 0 when a denominator is 0
    only_preds = hmean_iou([[box(0, 0, 1, 1)], []], [[], []])
    assert only_preds == dict(zeros, n_pred=1)
    only_gts = hmean_iou([[], []], [[gt(box(0, 0, 1, 1))], []])
    assert only_gts == dict(zeros, n_gt=1)


# ---------------------------------------------------------------- dataset level


def test_dataset_counts_are_summed_not_averaged():
    # image A: 2 gts, 1 pred matching gt0 -> tp 1, n_pred 1, n_gt 2 (P 1, R 1/2, H 2/3)
    # image B: 1 gt, 3 preds, one matching -> tp 1, n_pred 3, n_gt 1 (P 1/3, R 1, H 1/2)
    # dataset: tp 2, n_pred 4, n_gt 3 -> P 1/2, R 2/3, H = 2 * (1/2) * (2/3) / (7/6) = 4/7
    # (the mean of per-image hmeans would be 7/12)
    preds = [[box(0, 0, 10, 10)], [box(50, 50, 60, 60), box(0, 0, 5, 5), box(80, 0, 90, 5)]]
    gts = [[gt(box(0, 0, 10, 10)), gt(box(20, 0, 30, 10))], [gt(box(50, 50, 60, 60))]]
    recs = hmean_iou_per_image(preds, gts)
    assert [r["hmean"] for r in recs] == [pytest.approx(2 / 3), pytest.approx(1 / 2)]
    r = hmean_iou(preds, gts)
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (2, 4, 3)
    assert r["precision"] == pytest.approx(1 / 2)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["hmean"] == pytest.approx(4 / 7)
    assert aggregate(recs) == r


def test_matches_use_per_image_indices():
    preds = [[box(0, 0, 1, 1)], [box(9, 9, 10, 10), box(0, 0, 2, 2)]]
    gts = [[gt(box(5, 5, 6, 6))], [gt(box(7, 7, 8, 8)), gt(box(0, 0, 2, 2))]]
    recs = hmean_iou_per_image(preds, gts)
    assert recs[0]["matches"] == [] and recs[1]["matches"] == [(1, 1, 1.0)]


# ---------------------------------------------------------------- polygons


def test_self_intersecting_prediction_is_repaired():
    # rectangle whose last vertex overshoots below the bottom edge: a small loop, invalid for GEOS
    loop = np.array([[0, 0], [10, 0], [10, 2], [0, 2], [0.5, -0.2]])
    assert not Polygon(loop).is_valid
    r = one([loop], [gt(box(0, 0, 10, 2))])
    assert r["tp"] == 1 and r["invalid_preds"] == []
    assert r["matches"][0][2] > 0.9


def test_bow_tie_keeps_both_lobes():
    # bow-tie (0,0),(2,2),(2,0),(0,2): two triangles of area 1 crossing at (1,1); both kept by make_valid
    bow = np.array([[0, 0], [2, 2], [2, 0], [0, 2]], dtype=float)
    assert one([bow], [gt(bow)])["matches"] == [(0, 0, 1.0)]  # invalid gt repaired too
    left = np.array([[0, 0], [1, 1], [0, 2]], dtype=float)
    r = one([bow], [gt(left)], iou_thr=0.4)  # intersection 1, union 2 (a single-lobe repair would give 1 or 0)
    assert r["matches"][0][2] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [
    np.array([[0, 0], [10, 10]]),  # 2 points
    np.array([[0, 0], [5, 5], [10, 10], [2, 2]]),  # collinear: zero area
    np.array([[0, 0], [10, 0], [10, np.nan], [0, 10]]),  # not finite
    np.array([[0, 0], [0, 0], [0, 0]]),  # repeated point
    np.zeros((0, 2)),  # empty
])
def test_degenerate_prediction_is_dropped(bad):
    r = one([bad, box(0, 0, 10, 10)], [gt(box(0, 0, 10, 10))])
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (1, 1, 1)
    assert r["invalid_preds"] == [0]
    assert r["matches"] == [(0, 1, 1.0)]


@pytest.mark.parametrize("bad, why", [
    (np.array([[0, 0], [10, 10]]), "fewer than 3 points"),
    (np.array([[0, 0], [5, 5], [10, 10]]), "zero area"),
    (np.array([[0, 0], [10, 0], [np.inf, 5]]), "non-finite"),
])
def test_degenerate_gt_raises_with_image_and_instance(bad, why):
    gts = [[gt(box(0, 0, 1, 1))], [gt(box(0, 0, 1, 1)), gt(box(2, 2, 3, 3)), gt(bad)]]
    with pytest.raises(InvalidPolygonError) as e:
        hmean_iou([[], []], gts)
    assert isinstance(e.value, ValueError)
    assert (e.value.image, e.value.index) == (1, 2)
    assert "image 1" in str(e.value) and "instance 2" in str(e.value) and why in str(e.value)


def test_malformed_prediction_raises():
    with pytest.raises(InvalidPolygonError, match="prediction polygon: image 0, instance 1"):
        hmean_iou([[box(0, 0, 1, 1), np.arange(7.0)]], [[]])


def test_mismatched_image_counts_raise():
    with pytest.raises(ValueError, match="2 images"):
        hmean_iou([[], []], [[]])


def test_closed_and_flat_polygons_are_accepted():
    closed = np.vstack([box(0, 0, 10, 10), [[0, 0]]])  # first point repeated at the end
    flat = box(0, 0, 10, 10).ravel()  # (8,) x0 y0 x1 y1 ...
    r = one([closed, flat], [gt(box(0, 0, 10, 10)), gt(box(0, 0, 10, 10))])
    assert r["tp"] == 2 and r["matches"] == [(0, 0, 1.0), (1, 1, 1.0)]
    tri_closed = np.array([[0, 0], [10, 0], [0, 10], [0, 0]])
    assert one([tri_closed], [gt(tri_closed[:3])])["matches"] == [(0, 0, 1.0)]


def arc_band(n, r0=50.0, r1=60.0):
    """Curved text band (half annulus) with n points per side: (2n, 2)."""
    t = np.linspace(0, np.pi, n)
    outer = np.stack([100 + r1 * np.cos(t), 100 - r1 * np.sin(t)], 1)
    inner = np.stack([100 + r0 * np.cos(t), 100 - r0 * np.sin(t)], 1)[::-1]
    return np.vstack([outer, inner])


def test_curved_polygons_with_many_points():
    g, p = gt(arc_band(50)), arc_band(7)  # 100-point gt, 14-point prediction (CTW1500-like)
    r = one([p], [g])
    a, b = Polygon(g.polygon), Polygon(p)  # Instance stores float32 coordinates
    expected = a.intersection(b).area / a.union(b).area
    assert r["tp"] == 1
    assert r["matches"][0][2] == pytest.approx(expected, rel=1e-9)
    # same band rotated by 20 degrees along the arc: IoU = 160/200 = 0.8 (up to the polygonal approximation)
    t = np.linspace(np.pi / 9, np.pi + np.pi / 9, 200)
    rot = np.vstack([np.stack([100 + 60 * np.cos(t), 100 - 60 * np.sin(t)], 1),
                     np.stack([100 + 50 * np.cos(t), 100 - 50 * np.sin(t)], 1)[::-1]])
    r = one([rot], [gt(arc_band(200))])
    assert r["matches"][0][2] == pytest.approx(0.8, abs=2e-3)


# ---------------------------------------------------------------- cross-check against a literal reference


def reference(preds, gts, iou_thr=0.5, ignore_thr=0.5):
    """The official script's loops written out pairwise (slow, tests only). Returns per-image (tp, n_pred, n_gt)."""
    out = []
    for ps, gs in zip(preds, gts):
        G = [shapely.make_valid(Polygon(g.polygon)) for g in gs]
        P = [shapely.make_valid(Polygon(p)) for p in ps]
        dc = [k for k, g in enumerate(gs) if g.ignore]
        dropped = set()
        for j, p in enumerate(P):
            for k in dc:
                if p.area > 0 and G[k].intersection(p).area / p.area > ignore_thr:
                    dropped.add(j)
                    break
        used_g, used_p, tp = set(), set(), 0
        for i, g in enumerate(G):
            for j, p in enumerate(P):
                if i in used_g or j in used_p or i in dc or j in dropped:
                    continue
                inter = g.intersection(p).area
                if inter / (g.area + p.area - inter) > iou_thr:
                    used_g.add(i)
                    used_p.add(j)
                    tp += 1
        out.append((tp, len(P) - len(dropped), len(G) - len(dc)))
    return out


def random_set(n_images, seed):
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(n_images):
        boxes = [box(x, y, x + rng.uniform(5, 30), y + rng.uniform(3, 10)) for x, y in rng.uniform(0, 60, (8, 2))]
        gts.append([gt(b, ignore=rng.uniform() < 0.2) for b in boxes])
        preds.append([b + rng.normal(0, 2, b.shape) for b in boxes[:6]] + [box(*rng.uniform(0, 40, 2), 60, 60)])
    return preds, gts


def test_matches_literal_reference_on_random_scenes():
    preds, gts = random_set(25, seed=0)
    recs = hmean_iou_per_image(preds, gts)
    assert [(r["tp"], r["n_pred"], r["n_gt"]) for r in recs] == reference(preds, gts)
    assert sum(r["tp"] for r in recs) > 0 and any(r["ignored_preds"] for r in recs)  # the cases were exercised


# ---------------------------------------------------------------- threshold sweep


def test_threshold_sweep_by_hand():
    # one gt; a TP scored 0.95, FPs scored 0.6 and 0.4
    scored = [[(box(0, 0, 10, 10), 0.95), (box(50, 0, 60, 10), 0.6), (box(80, 0, 90, 10), 0.4)]]
    gts = [[gt(box(0, 0, 10, 10))]]
    out = best_threshold_sweep(scored, gts, thresholds=[0.3, 0.5, 0.7, 0.8, 0.99])
    hm = [r["hmean"] for r in out["results"]]
    assert hm == [pytest.approx(0.5), pytest.approx(2 / 3), 1.0, 1.0, 0.0]  # n_pred 3, 2, 1, 1, 0
    assert [r["n_pred"] for r in out["results"]] == [3, 2, 1, 1, 0]
    assert out["best"]["threshold"] == 0.7  # lowest threshold among ties
    assert out["best"]["hmean"] == 1.0


def test_threshold_sweep_keeps_scores_equal_to_threshold():
    scored = [[(box(0, 0, 10, 10), 0.5)]]
    out = best_threshold_sweep(scored, [[gt(box(0, 0, 10, 10))]], thresholds=[0.5])
    assert out["results"][0]["tp"] == 1


def test_threshold_sweep_default_thresholds_and_consistency():
    assert len(DEFAULT_THRESHOLDS) == 13
    preds, gts = random_set(10, seed=1)
    rng = np.random.default_rng(2)
    scored = [[(p, float(rng.uniform())) for p in im] for im in preds]
    out = best_threshold_sweep(scored, gts)
    assert [r["threshold"] for r in out["results"]] == [round(0.3 + 0.05 * k, 2) for k in range(13)]
    for r in out["results"]:
        kept = [[p for p, s in im if s >= r["threshold"]] for im in scored]
        assert {k: v for k, v in r.items() if k != "threshold"} == hmean_iou(kept, gts)
    assert out["best"]["hmean"] == max(r["hmean"] for r in out["results"])
