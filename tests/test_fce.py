"""FCENet plug-in: Fourier embedding, targets, neck/head, loss, decoding, Detector with Backbone and TCM (seconds)."""
import pickle

import cv2
import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from tcm_kit.data.formats import Instance
from tcm_kit.data.targets import shrink_targets
from tcm_kit.detector import Detector, build_detector
from tcm_kit.heads.base import DetectorError
from tcm_kit.heads.fce import (STRIDES, FCEConfig, FCEHead, FCELoss, FCENeck, FCENet, FCEPostprocess, FCETargets,
                               assign_levels, fce_postprocess, fourier_coefficients, fourier_to_polygon,
                               polygon_nms, resample_contour)
from tcm_kit.tcm import TCM, Backbone, TCMConfig

from tiny import tiny_clip  # noqa: E402

torch.set_num_threads(1)


def iou(a, b):
    pa, pb = Polygon(a).buffer(0), Polygon(b).buffer(0)
    return pa.intersection(pb).area / pa.union(pb).area


def arc(cx, cy, r_in, r_out, a0=0.85 * np.pi, a1=0.15 * np.pi, n=7):
    """A curved word: 7 points on an outer arc, 7 back on an inner arc (CTW1500-style 14 points)."""
    t = np.linspace(a0, a1, n)
    top = np.stack([cx + r_out * np.cos(t), cy - r_out * np.sin(t)], 1)
    bot = np.stack([cx + r_in * np.cos(t[::-1]), cy - r_in * np.sin(t[::-1])], 1)
    return np.vstack([top, bot]).astype(np.float32)


QUAD = np.array([[20, 30], [100, 30], [100, 60], [20, 60]], np.float32)
CURVE = arc(64, 100, 40, 60)


@pytest.fixture(scope="module")
def tcm_targets():
    """The target function of a (tiny) tcm-fcenet detector: FCENet's maps + TCM's shrink map."""
    det = build_detector("tcm-fcenet", tiny_clip(), head=FCEConfig(width=8), tcm=TCMConfig(decoder_width=16))
    return det.target_fn()


def perfect_maps(t):
    """Decoder inputs equal to the targets: TR / TCL probabilities 0/1 and the target coefficients."""
    return {k: t[k] for k in t if k.split("_")[0] in ("tr", "tcl", "reg")}


# ------------------------------------------------------------------------------------------------ Fourier

def test_fourier_round_trip_of_a_curved_polygon():
    c = fourier_coefficients(CURVE, k=5)
    assert c.shape == (11,) and np.iscomplexobj(c)
    np.testing.assert_allclose([c[5].real, c[5].imag], resample_contour(CURVE).mean(0), atol=1e-9)  # c_0: centre
    back = fourier_to_polygon(c, 50)
    assert back.shape == (50, 2) and iou(back, CURVE) > 0.9
    assert iou(fourier_to_polygon(fourier_coefficients(CURVE, k=2), 50), CURVE) < iou(back, CURVE)  # k matters


def test_contour_is_canonical():
    pts = resample_contour(CURVE, 400)
    x, y = pts[:, 0], pts[:, 1]
    assert 0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) > 0  # clockwise, image coordinates
    assert pts[0, 0] > CURVE[:, 0].mean() and abs(pts[0, 1] - pts[1:, 1].mean()) < 20  # right end, mid-height
    step = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1)
    ring = CURVE.astype(np.float64)
    per = np.linalg.norm(ring - np.roll(ring, -1, axis=0), axis=1).sum() / 400  # arc length per step
    assert step.max() < per + 1e-9 and np.mean(np.isclose(step, per, rtol=1e-6)) > 0.9  # chords shorter at corners
    ref = fourier_coefficients(CURVE)
    # the same contour given in the other orientation, or from another vertex, embeds to the same coefficients
    np.testing.assert_allclose(fourier_coefficients(CURVE[::-1]), ref, atol=1e-6)
    np.testing.assert_allclose(fourier_coefficients(np.roll(CURVE, 5, axis=0)), ref, atol=1e-6)
    with pytest.raises(DetectorError):
        resample_contour(np.array([[0, 0], [5, 5], [10, 10]], np.float32))  # zero area


# ------------------------------------------------------------------------------------------------ targets

@pytest.mark.parametrize("poly", [QUAD, CURVE], ids=["quad", "curve"])
def test_targets_decode_back_to_the_polygon(poly, tcm_targets):
    t = FCETargets()([Instance(poly, "w", False)], 128, 128)
    for s in STRIDES:
        assert t[f"tr_{s}"].shape == (128 // s, 128 // s) and t[f"reg_{s}"].shape == (22, 128 // s, 128 // s)
        assert np.all(t[f"tcl_{s}"] <= t[f"tr_{s}"])  # centre region inside the text region
    assert sum(t[f"tcl_{s}"].sum() for s in STRIDES) > 0
    assert not {"prob", "prob_mask"} & set(t)  # TCM's shrink map is not the head's: a tcm-fcenet adds it
    d = tcm_targets([Instance(poly, "w", False)], 128, 128)
    assert set(d) == set(t) | {"prob", "prob_mask"} and all(np.array_equal(d[k], t[k]) for k in t)
    assert d["prob"].shape == d["prob_mask"].shape == (128, 128) and d["prob"].sum() > 0
    dets = fce_postprocess(perfect_maps(t))
    assert len(dets) == 1
    pred, score = dets[0]
    assert pred.shape == (50, 2) and pred.dtype == np.float32 and score == pytest.approx(1.0)
    assert iou(pred, poly) > 0.9


def test_regression_targets_are_relative_to_the_pixel():
    t = FCETargets()([Instance(QUAD, "w", False)], 128, 128)
    s = 16
    ys, xs = np.nonzero(t[f"tr_{s}"])
    c0 = t[f"reg_{s}"][5, ys, xs] + xs, t[f"reg_{s}"][16, ys, xs] + ys  # c_0 + pixel, level units
    centre = (QUAD.mean(0) - (s - 1) / 2) / s
    np.testing.assert_allclose(c0[0], centre[0], atol=1e-3)
    np.testing.assert_allclose(c0[1], centre[1], atol=1e-3)
    assert np.ptp(t[f"reg_{s}"][5, ys, xs]) > 1  # differs from pixel to pixel
    assert np.all(t[f"reg_{s}"][:, t[f"tr_{s}"] == 0] == 0)


def test_level_assignment_by_relative_size():
    small = Instance(cv2.boxPoints(((100, 100), (60, 20), 0)), "a", False)  # 60/640 ~ 0.09: stride 8
    big = Instance(cv2.boxPoints(((320, 400), (560, 160), 0)), "b", False)  # 560/640 ~ 0.88: stride 32
    assert assign_levels(small.polygon, 640, 640) == [0] and assign_levels(big.polygon, 640, 640) == [2]
    assert assign_levels(cv2.boxPoints(((0, 0), (141, 20), 0)), 640, 640) == [0, 1]  # 0.22: overlap of 8 and 16
    t = FCETargets()([small, big], 640, 640)
    tr8, tr16, tr32 = t["tr_8"], t["tr_16"], t["tr_32"]
    assert tr8[10:16, 4:21].sum() > 0 and tr8[30:, :].sum() == 0  # the small word only
    assert tr16.sum() == 0
    assert tr32[10:15, 1:19].sum() > 0 and tr32[:5, :8].sum() == 0  # the big word only


def test_dont_care_and_tiny_instances_are_masked(tcm_targets):
    care = Instance(QUAD, "w", False)
    dont = Instance(np.array([[20, 80], [100, 80], [100, 110], [20, 110]], np.float32), "###", True)
    tiny = Instance(np.array([[110, 5], [125, 5], [125, 9], [110, 9]], np.float32), "i", False)  # 4 px tall
    t = FCETargets()([care, dont, tiny], 128, 128)
    for s in STRIDES:
        m, tr = t[f"mask_{s}"], t[f"tr_{s}"]
        r, c = round((95 - (s - 1) / 2) / s), round((60 - (s - 1) / 2) / s)  # the cell at the centre of `dont`
        assert (m[r, c] == 0 and tr[r, c] == 0) if s < 32 else m.min() == 0
        assert m[0].max() == 1  # above `dont` nothing is masked (except the tiny word)
    assert t["mask_8"][:2, 13:16].min() == 0  # the tiny word
    d = tcm_targets([care, dont, tiny], 128, 128)  # with TCM's shrink map (the aux loss's target)
    assert d["prob_mask"][90, 50] == 0 and d["prob_mask"][7, 117] == 0 and d["prob"][90, 50] == 0
    want = shrink_targets([care, dont, tiny], 128, 128)
    assert all(np.array_equal(d[k], want[k]) for k in ("prob", "prob_mask"))
    assert t["tr_16"].sum() > 0  # the care word is still a positive
    # the ignored word never reaches the decoder
    dets = fce_postprocess(perfect_maps(FCETargets()([dont], 128, 128)), box_thresh=0.0)
    assert dets == []


# ------------------------------------------------------------------------------------------------ model + loss

def test_neck_and_head_shapes():
    torch.manual_seed(0)
    feats = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip((8, 16, 32, 65), (4, 8, 16, 32))]
    p = FCENeck([8, 16, 32, 65], width=24)(feats)
    assert [tuple(x.shape) for x in p] == [(2, 24, 8, 8), (2, 24, 4, 4), (2, 24, 2, 2)]
    cls, reg = FCEHead(24, fourier_degree=5, num_convs=2)(p[0])
    assert cls.shape == (2, 4, 8, 8) and reg.shape == (2, 22, 8, 8)
    head = FCENet([8, 16, 32, 65], width=24, num_convs=1).eval()
    out = head(feats)
    for s, n in zip(STRIDES, (8, 4, 2)):
        assert out[f"tr_logits_{s}"].shape == out[f"tcl_logits_{s}"].shape == (2, 2, n, n)
        assert out[f"tr_{s}"].shape == out[f"tcl_{s}"].shape == (2, n, n) and out[f"reg_{s}"].shape == (2, 22, n, n)
        torch.testing.assert_close(out[f"tr_{s}"], torch.softmax(out[f"tr_logits_{s}"], 1)[:, 1])
    assert set(head.decode_keys) <= set(out)
    with pytest.raises(DetectorError):
        FCENeck([8, 16, 32])
    with pytest.raises(DetectorError):
        FCENet([8, 16, 32, 65], width=24, fourier_degree=3, targets=FCETargets(fourier_degree=5))


def _words(i):
    """Image i's words: a small one (stride 8) and a big quad or curve (stride 32)."""
    small = cv2.boxPoints(((30 + 8 * i, 24), (22, 10), 0))
    big = arc(64, 120, 28 + 4 * i, 52 + 4 * i) if i else cv2.boxPoints(((64, 84), (80, 30), 8))
    return [Instance(small, "a", False), Instance(big, "b", False)]


def _batch(size=128, fn=FCETargets()):
    """Two 128x128 images with two words each, the maps of `fn` (default FCENet's targets) stacked (B, ...)."""
    maps = [fn(_words(i), size, size) for i in range(2)]
    return {k: torch.from_numpy(np.stack([m[k] for m in maps])) for k in maps[0]}


def test_loss_parts_weights_and_perfect_regression():
    torch.manual_seed(0)
    b = _batch()
    head = FCENet([8, 16, 32, 65], width=16, num_convs=0, loss=FCELoss(tr_weight=2.0, reg_weight=0.5)).train()
    feats = [torch.randn(2, c, 128 // s, 128 // s) for c, s in zip((8, 16, 32, 65), (4, 8, 16, 32))]
    out = head(feats)
    parts = head.loss(out, b)
    assert set(parts) == {"loss", "loss_tr", "loss_tcl", "loss_reg"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in parts.values()) and parts["loss_reg"] > 0
    torch.testing.assert_close(parts["loss"], 2 * parts["loss_tr"] + parts["loss_tcl"] + 0.5 * parts["loss_reg"])
    exact = dict(out, **{f"reg_{s}": b[f"reg_{s}"] for s in STRIDES})
    assert head.loss(exact, b)["loss_reg"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DetectorError, match="missing"):
        head.loss(out, {"mask_8": b["mask_8"]})
    with pytest.raises(DetectorError, match="do not match"):
        head.loss(out, dict(b, tr_8=b["tr_8"][:, :-1]))


def test_balanced_classification_option_and_train_config():
    from tcm_kit.config import TrainConfig
    from tcm_kit.losses import balanced_bce_ohem
    from tcm_kit.train import build_model
    torch.manual_seed(0)
    b = _batch()
    feats = [torch.randn(2, c, 128 // s, 128 // s) for c, s in zip((8, 16, 32, 65), (4, 8, 16, 32))]
    head = FCENet([8, 16, 32, 65], width=16, num_convs=0, loss=FCELoss(cls_loss="balanced")).train()
    out = head(feats)
    parts = head.loss(out, b)

    def diff(s, name):  # 2-way softmax == sigmoid of the logit difference
        return out[f"{name}_logits_{s}"][:, 1] - out[f"{name}_logits_{s}"][:, 0]

    # TR: mean over text + mean over background in the mask; TCL: the same split of the TR pixels
    want_tr = sum(balanced_bce_ohem(diff(s, "tr"), b[f"tr_{s}"], b[f"mask_{s}"], neg_ratio=None) for s in STRIDES)
    in_tr = {s: (b[f"tr_{s}"] * b[f"mask_{s}"] > 0.5).float() for s in STRIDES}
    want_tcl = sum(balanced_bce_ohem(diff(s, "tcl"), b[f"tcl_{s}"], in_tr[s], neg_ratio=None)
                   for s in STRIDES if in_tr[s].any())
    torch.testing.assert_close(parts["loss_tr"], want_tr)
    torch.testing.assert_close(parts["loss_tcl"], want_tcl)
    ce = FCELoss()(out, b)
    assert not torch.allclose(ce["loss_tr"], want_tr) and not torch.allclose(ce["loss_tcl"], want_tcl)
    torch.testing.assert_close(ce["loss_reg"], parts["loss_reg"])  # regression does not depend on the option
    with pytest.raises(DetectorError, match="cls_loss"):
        FCELoss(cls_loss="dice")
    for det in ("fcenet", "tcm-fcenet"):
        for choice in ("ce", "balanced"):
            cfg = TrainConfig.for_profile("smoke", detector=det, head=dict(cls_loss=choice))
            assert build_model(cfg, progress=False).head.criterion.cls_loss == choice
    cfg = TrainConfig.for_profile("smoke", detector="fcenet", head=dict(tr_reg_weight=0.25))
    assert build_model(cfg, progress=False).head.criterion.tr_reg_weight == 0.25
    for det in ("fcenet", "tcm-fcenet"):
        full, cpu = (TrainConfig.for_profile(p, detector=det).head for p in ("full", "cpu"))
        assert (full.cls_loss, full.tr_reg_weight) == ("ce", 0.0)  # the FCENet paper's setting
        assert (cpu.cls_loss, cpu.tr_reg_weight) == ("balanced", 0.5)


def test_head_groupnorm_option_and_train_config():
    from tcm_kit.config import TrainConfig
    from tcm_kit.train import build_model
    head = FCEHead(width=16, fourier_degree=5, num_convs=2, norm=True)
    for branch in (head.cls, head.reg):
        kinds = [type(m).__name__ for m in branch]
        assert kinds == ["Conv2d", "GroupNorm", "ReLU", "Conv2d", "GroupNorm", "ReLU", "Conv2d"], kinds
        assert branch[0].bias is None and branch[1].num_groups == 16  # gcd(32, width)
    plain = FCEHead(width=16, num_convs=2)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in plain.modules())
    x = torch.randn(2, 16, 8, 8) * 8.0  # a large-scale neck output: normalised hidden layers stay alive
    with torch.no_grad():
        hidden = head.cls[:3](x)
    assert 0.2 < (hidden > 0).float().mean() < 0.8
    for norm in (False, True):
        cfg = TrainConfig.for_profile("smoke", detector="tcm-fcenet", head=dict(norm=norm))
        model = build_model(cfg, progress=False)
        assert any(isinstance(m, torch.nn.GroupNorm) for m in model.head.maps.modules()) == norm
    assert TrainConfig.for_profile("full", detector="fcenet").head.norm is False  # the FCENet paper's head


def test_fcenet_loss_falls_on_a_tiny_batch():
    b = _batch()
    prob = _batch(fn=shrink_targets)["prob"]  # the words' shrunk regions are drawn brighter
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 128, 128, generator=g) * 0.3 + 1.5 * (prob > 0)[:, None].float()
    clip = tiny_clip()
    torch.manual_seed(0)
    backbone = Backbone(clip)
    det = Detector(backbone, FCENet(backbone.out_channels, width=32, num_convs=1)).train()
    opt = torch.optim.Adam([p for p in det.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(60):
        parts = det.loss(det(x), b)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append({k: v.item() for k, v in parts.items()})
    for k in ("loss", "loss_tr", "loss_tcl", "loss_reg"):  # every part halves within 30 steps
        assert min(p[k] for p in losses[25:30]) < 0.5 * losses[0][k], k
    # after 60 steps (eval-mode BN statistics have caught up) the model finds its training words, curve included
    preds = det.predict(x, box_thresh=0.3)
    for i, dets in enumerate(preds):
        best = [max((iou(p, w.polygon) for p, _ in dets), default=0.0) for w in _words(i)]
        assert min(best) > 0.5, best  # the evaluation protocol's match criterion


def test_tcm_variant_has_score_maps_aux_loss_and_gradients():
    tcm = TCM(tiny_clip())
    det = Detector(tcm, FCENet(tcm.out_channels, width=16, num_convs=1)).train()
    out = det(torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1)))
    assert out["score_logits"].shape == out["score_map"].shape == (2, 1, 4, 4)
    parts = det.loss(out, _batch(fn=det.target_fn()))  # FCENet's maps + TCM's shrink map
    assert {"loss", "loss_tr", "loss_tcl", "loss_reg", "loss_aux"} <= set(parts)
    torch.testing.assert_close(parts["loss"], parts["loss_tr"] + parts["loss_tcl"] + parts["loss_reg"] +
                               parts["loss_aux"])
    parts["loss"].backward()
    head_params = list(det.head.named_parameters())
    assert head_params and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in head_params)
    preds = det.predict(torch.zeros(1, 3, 128, 128), scale=2.0, box_thresh=0.0, score_thresh=0.0,
                        max_candidates=5)
    assert det.training and len(preds) == 1 and len(preds[0]) <= 5
    assert all(p.shape == (50, 2) and isinstance(s, float) for p, s in preds[0])


# ------------------------------------------------------------------------------------------------ decoding

def test_decode_honours_box_thresh_scale_and_settings():
    head = FCENet([8, 16, 32, 65], width=8, num_convs=0)
    maps = perfect_maps(head.target_fn()([Instance(CURVE, "w", False)], 128, 128))
    maps = dict(maps, tr_32=maps["tr_32"] * 0.6)  # score = 0.6 · 1²
    (poly, score), = head.decode(maps)
    assert score == pytest.approx(0.6)
    assert head.decode(maps, box_thresh=0.7) == []
    assert len(head.decode(maps, box_thresh=0.55)) == 1
    (scaled, _), = head.decode(maps, scale=(2.0, 0.5))
    np.testing.assert_allclose(scaled, poly * [2.0, 0.5], rtol=1e-5)
    (more, _), = head.decode(maps, num_points=80)
    assert more.shape == (80, 2)
    maps_beta = dict(maps, tcl_32=maps["tcl_32"] * 0.9)
    assert head.decode(maps_beta, beta=1.0)[0][1] == pytest.approx(0.54)
    assert head.decode(maps_beta, box_thresh=0.3)[0][1] == pytest.approx(0.6 * 0.81)
    with pytest.raises(DetectorError, match="unknown"):
        head.decode(maps, thresh=0.3)
    with pytest.raises(DetectorError):
        head.decode({k: v for k, v in maps.items() if k != "reg_16"})
    with pytest.raises(DetectorError):
        head.decode(dict(maps, reg_8=maps["reg_8"][:20]))
    with pytest.raises(DetectorError):
        head.decode(dict(maps, tr_8=maps["tr_8"][None]))


def test_nms_and_two_words():
    a = cv2.boxPoints(((50, 50), (60, 20), 0))
    b = a + [3, 1]  # heavy overlap with a
    c = a + [0, 60]  # disjoint
    polys = np.stack([a, b, c]).astype(np.float64)
    assert list(polygon_nms(polys, np.array([0.5, 0.9, 0.7]), 0.1)) == [1, 2]
    bow = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float64)  # self-intersecting: repaired, no error
    assert len(polygon_nms(np.stack([bow, bow + 50]), np.array([0.9, 0.8]))) == 2
    words = [Instance(QUAD, "a", False), Instance(QUAD + [0, 50], "b", False)]
    dets = fce_postprocess(perfect_maps(FCETargets()(words, 128, 128)))
    assert len(dets) == 2 and sorted(round(iou(p, w.polygon), 1) > 0.9 for p, _ in dets for w in words) \
        == [False, False, True, True]


def test_settings_are_plain_picklable_values():
    fn = FCENet([8, 16, 32, 65], width=8).target_fn()
    assert fn == FCETargets() and pickle.loads(pickle.dumps(fn)) == fn
    assert FCEPostprocess().box_thresh == 0.5 and FCEPostprocess().nms_thresh == 0.1
    with pytest.raises(DetectorError):
        FCETargets(strides=(8, 16))
