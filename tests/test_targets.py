"""DBNet targets, polygon offsetting and the stride-32 text masks."""
import numpy as np
import pytest

from tcm_kit.data.formats import Instance
from tcm_kit.data.targets import (db_targets, distance_to_border, expand_polygon, polygon_area,
                                  shrink_distance, shrink_polygon)


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_shrink_rectangle_matches_dbnet_offset():
    poly = rect(50, 50, 250, 90)  # 200 x 40
    d = shrink_distance(poly, 0.4)
    assert d == pytest.approx(200 * 40 * (1 - 0.4 ** 2) / 480)  # A (1 - r^2) / L = 14
    s = shrink_polygon(poly, 0.4)
    assert s.dtype == np.float32 and s.shape[1] == 2
    assert polygon_area(s) == pytest.approx((200 - 2 * d) * (40 - 2 * d), rel=0.01)
    assert s[:, 0].min() == pytest.approx(50 + d, abs=0.05) and s[:, 1].max() == pytest.approx(90 - d, abs=0.05)


def test_shrink_keeps_subpixel_shapes_and_handles_degenerate():
    small = shrink_polygon(rect(0, 0, 3, 3), 0.4)  # D = 0.63 px: survives thanks to the clipper scaling
    assert polygon_area(small) == pytest.approx((3 - 2 * 0.63) ** 2, rel=0.05)
    assert shrink_polygon(np.array([[0, 0], [10, 0], [20, 0]], np.float32)).shape == (0, 2)  # zero area


def test_expand_roughly_inverts_shrink_on_a_square():
    sq = rect(0, 0, 100, 100)
    back = expand_polygon(shrink_polygon(sq, 0.4), 1.5)  # D' = A' * 1.5 / L'
    lo, hi = back.min(0), back.max(0)
    np.testing.assert_allclose(lo, [0, 0], atol=2.0)
    np.testing.assert_allclose(hi, [100, 100], atol=2.0)
    assert polygon_area(back) == pytest.approx(100 * 100, rel=0.05)
    big = expand_polygon(sq, 1.5)  # grows by 150 * 100^2 / 400 ... = 37.5 px on each side
    assert big[:, 0].min() == pytest.approx(-37.5, abs=0.1)


def test_distance_to_border_vectorised():
    d = distance_to_border(rect(0, 0, 10, 10), np.arange(0, 21, 5), np.array([5.0]))  # (1, 5)
    np.testing.assert_allclose(d[0], [0, 5, 0, 5, 10], atol=1e-5)


def test_db_targets_shapes_and_prob():
    h, w = 120, 200
    t = db_targets([Instance(rect(40, 30, 160, 70), "hello")], h, w)
    assert set(t) == {"prob", "prob_mask", "thresh", "thresh_mask"}
    for v in t.values():
        assert v.dtype == np.float32 and v.shape == (h, w)
    d = shrink_distance(rect(40, 30, 160, 70))
    assert t["prob"][50, 100] == 1 and t["prob"][31, 100] == 0 and t["prob"][50, 41] == 0
    assert t["prob"].sum() == pytest.approx((120 - 2 * d) * (40 - 2 * d), rel=0.1)
    assert t["prob_mask"].min() == 1  # nothing ignored


def test_threshold_map_range_and_peak_on_border():
    h, w = 160, 200
    poly = rect(40, 40, 160, 120)  # 120 x 80
    d = shrink_distance(poly)  # 20.16 px
    t = db_targets([Instance(poly, "x")], h, w)
    th, m = t["thresh"], t["thresh_mask"]
    assert th.min() >= 0.3 - 1e-6 and th.max() <= 0.7 + 1e-6
    inside = th[m > 0]
    assert inside.min() >= 0.3 - 1e-6 and inside.max() == pytest.approx(0.7, abs=1e-5)
    assert th[40, 100] == pytest.approx(0.7, abs=1e-5)  # on the top edge
    assert th[80, 100] == pytest.approx(0.3)  # deep inside: farther than D from the border
    assert th[40 - 10, 100] == pytest.approx(0.7 - 0.4 * 10 / d, abs=1e-4)  # 10 px outside
    profile = th[40 - 15:41, 100]  # rising towards the border
    assert np.all(np.diff(profile) > 0)
    # mask = polygon dilated by D
    assert m[40 - int(d) + 1, 100] == 1 and m[40 - int(d) - 2, 100] == 0 and m[80, 100] == 1
    assert th[m == 0].max() == pytest.approx(0.3)


def test_dont_care_tiny_and_degenerate_instances_are_masked():
    h, w = 100, 200
    insts = [Instance(rect(10, 10, 90, 50), "ok"),
             Instance(rect(110, 10, 190, 50), "###", ignore=True),
             Instance(rect(20, 70, 60, 75), "thin"),  # 5 px short side < min_size 8
             Instance(np.array([[100, 80], [150, 80], [190, 80]], np.float32), "line")]  # zero area
    t = db_targets(insts, h, w, min_size=8)
    pm, prob = t["prob_mask"], t["prob"]
    assert pm[30, 150] == 0 and prob[30, 150] == 0  # don't care
    assert pm[72, 40] == 0 and prob[72, 40] == 0  # too small
    assert pm[80, 150] == 0  # degenerate: its (line) footprint is masked
    assert pm[30, 50] == 1 and prob[30, 50] == 1  # the care instance is kept
    assert t["thresh_mask"][30, 150] == 0 and t["thresh_mask"][30, 50] == 1  # no threshold target for don't care
    t2 = db_targets(insts[2:3], h, w, min_size=4)  # a lower min_size keeps the thin one
    assert t2["prob_mask"].min() == 1 and t2["prob"].sum() > 0


def test_polygon_partly_outside_the_image():
    t = db_targets([Instance(rect(-30, 10, 50, 40), "edge")], 64, 64)
    assert t["prob"][25, 0] == 1 and np.isfinite(t["thresh"]).all()


def test_threshold_map_matches_brute_force_on_irregular_polygon():
    poly = np.array([[30, 40], [150, 20], [170, 90], [90, 130], [20, 100]], np.float32)
    t = db_targets([Instance(poly, "p")], 160, 200)
    d = shrink_distance(poly)
    dist = distance_to_border(poly, np.arange(200), np.arange(160))  # every pixel, no band shortcut
    ref = 0.3 + 0.4 * (1 - np.clip(dist / d, 0, 1)) * t["thresh_mask"]
    np.testing.assert_allclose(t["thresh"], ref, atol=1e-5)


def test_shrink_targets_equal_db_targets_prob_maps():
    from tcm_kit.data.targets import shrink_targets

    insts = [Instance(np.array([[10, 10], [90, 12], [88, 40], [12, 38]], np.float32), "word", False),
             Instance(np.array([[5, 60], [40, 60], [40, 90], [5, 90]], np.float32), "###", True),
             Instance(np.array([[60, 70], [64, 70], [64, 73], [60, 73]], np.float32), "tiny", False)]
    got, want = shrink_targets(insts, 100, 120), db_targets(insts, 100, 120)
    assert set(got) == {"prob", "prob_mask"}
    assert got["prob"].sum() > 0 and (got["prob_mask"] == 0).any()
    for k in got:
        np.testing.assert_array_equal(got[k], want[k])
