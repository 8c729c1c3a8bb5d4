"""DBNet plug-in: neck, head, losses, post-processing, Detector and build_detector (tiny model, seconds)."""
import cv2
import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from tcm_kit.data.targets import fill_polygons, shrink_polygon
from tcm_kit.data.formats import Instance
from tcm_kit.data.targets import db_targets, shrink_targets
from tcm_kit.detector import DETECTORS, HEADS, build_detector, head_family
from tcm_kit.heads.db import (DBConfig, DBHead, DBLoss, DBNeck, DBPostprocess, DBTargets, DetectorError,
                              db_postprocess)
from tcm_kit.heads.fce import FCELoss
from tcm_kit.heads.pan import PANConfig, PANLoss
from tcm_kit.losses import LossInputError, balanced_bce_ohem, dice_loss, masked_l1
from tcm_kit.tcm import TCMConfig

from tiny import images, targets, tiny_clip  # noqa: E402

torch.set_num_threads(1)


def iou(a, b):
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


# ------------------------------------------------------------------------------------------------ neck + head

def test_neck_and_head_shapes():
    torch.manual_seed(0)
    feats = [torch.randn(2, c, 32 // s, 32 // s) for c, s in zip((8, 16, 32, 65), (1, 2, 4, 8))]  # strides 4..32
    neck = DBNeck([8, 16, 32, 65])
    fused = neck(feats)
    assert fused.shape == (2, 256, 32, 32) and neck.laterals[0].out_channels == 256
    assert [c.out_channels for c in neck.smooth] == [64] * 4
    head = DBHead(256).train()
    out = head(fused)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, 128, 128) for k in
                                                          ("prob_logits", "prob", "thresh", "binary")}
    torch.testing.assert_close(out["binary"], torch.sigmoid(50 * (out["prob"] - out["thresh"])))
    torch.testing.assert_close(out["prob"], torch.sigmoid(out["prob_logits"]))
    assert set(head.eval()(fused)) == {"prob_logits", "prob"}  # inference needs P only
    with pytest.raises(DetectorError):
        DBNeck([8, 16, 32])


# ------------------------------------------------------------------------------------------------ losses

def test_balanced_bce_ohem_keeps_hardest_negatives():
    target = torch.zeros(1, 1, 10)
    target[..., 0] = 1.0
    logits = torch.full((1, 1, 10), -10.0)  # easy negatives
    logits[..., 0] = 0.0  # positive: loss log 2
    logits[..., 1:4] = torch.tensor([3.0, 2.0, 1.0])  # the 3 hardest negatives
    mask = torch.ones_like(target)
    sp = torch.nn.functional.softplus
    expected = (sp(torch.tensor(0.0)) + sp(torch.tensor([3.0, 2.0, 1.0])).sum()) / 4
    torch.testing.assert_close(balanced_bce_ohem(logits, target, mask), expected, rtol=1e-5, atol=1e-5)
    mask[..., 1] = 0.0  # a don't-care pixel is never mined
    expected = (sp(torch.tensor(0.0)) + sp(torch.tensor([2.0, 1.0, -10.0])).sum()) / 4
    torch.testing.assert_close(balanced_bce_ohem(logits, target, mask), expected, rtol=1e-5, atol=1e-5)
    assert balanced_bce_ohem(logits, torch.zeros_like(target), torch.ones_like(target)) > 0  # no text still learns
    with pytest.raises(LossInputError):
        balanced_bce_ohem(logits, target[..., :5], mask)


def test_class_balanced_bce_without_mining_weighs_every_negative():
    target = torch.zeros(1, 1, 10)
    target[..., :2] = 1.0
    logits = torch.linspace(-2.0, 2.0, 10).view(1, 1, 10)
    mask = torch.ones_like(target)
    mask[..., 9] = 0.0  # don't care
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")[0, 0]
    expected = per[:2].mean() + per[2:9].mean()
    torch.testing.assert_close(balanced_bce_ohem(logits, target, mask, neg_ratio=None), expected)
    # every negative gets a gradient, unlike 3:1 mining with 2 positives (6 of the 7 negatives)
    x = logits.clone().requires_grad_(True)
    balanced_bce_ohem(x, target, mask, neg_ratio=None).backward()
    assert (x.grad[0, 0, 2:9] != 0).all() and x.grad[0, 0, 9] == 0
    x.grad = None
    balanced_bce_ohem(x, target, mask).backward()
    assert (x.grad[0, 0, 2:9] == 0).sum() == 1


@pytest.mark.parametrize("family", ["dbnet", "pan", "fcenet"])
def test_ohem_ratio_reaches_the_head_loss_and_the_aux_loss(family):
    clip = tiny_clip()
    for ratio in (3.0, None):
        det = build_detector(f"tcm-{family}", clip, head=HEADS[family].Config(width=16, ohem_ratio=ratio),
                             tcm=TCMConfig(decoder_width=16, ohem_ratio=ratio))
        assert det.head.criterion.ohem_ratio == ratio and det.backbone.cfg.ohem_ratio == ratio
        assert isinstance(det.head.criterion, {"dbnet": DBLoss, "pan": PANLoss, "fcenet": FCELoss}[family])


def test_dice_and_masked_l1():
    g = (torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    m = torch.ones_like(g)
    assert dice_loss(g, g, m).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(1 - g, g, m).item() == pytest.approx(1.0, abs=1e-6)
    pred, tgt = torch.zeros(1, 2, 2), torch.tensor([[[1.0, 3.0], [5.0, 7.0]]])
    assert masked_l1(pred, tgt, torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])).item() == pytest.approx(2.0, rel=1e-5)


def test_db_loss_weights_and_parts():
    torch.manual_seed(0)
    t = targets()
    maps = DBHead(16).train()(torch.randn(2, 16, 16, 16))
    parts = DBLoss()(maps, t)
    assert set(parts) == {"loss", "loss_prob", "loss_thresh", "loss_binary"}
    torch.testing.assert_close(parts["loss"], 5 * parts["loss_prob"] + 10 * parts["loss_thresh"] +
                               parts["loss_binary"])
    with pytest.raises(DetectorError):
        DBLoss()(maps, {"prob": t["prob"]})


def test_db_prob_loss_dice_option():
    torch.manual_seed(0)
    t = targets()
    maps = DBHead(16).train()(torch.randn(2, 16, 16, 16))
    parts = DBLoss(prob_loss="dice")(maps, t)
    want = dice_loss(torch.sigmoid(maps["prob_logits"]), t["prob"], t["prob_mask"])
    torch.testing.assert_close(parts["loss_prob"], want)
    assert not torch.allclose(parts["loss_prob"], DBLoss()(maps, t)["loss_prob"])
    with pytest.raises(DetectorError, match="prob_loss"):
        DBLoss(prob_loss="focal")


def test_train_config_picks_the_db_prob_loss():
    from tcm_kit.config import TrainConfig
    from tcm_kit.train import build_model
    for det in ("dbnet", "tcm-dbnet"):
        for choice in ("bce", "dice"):
            cfg = TrainConfig.for_profile("smoke", detector=det, head=dict(prob_loss=choice))
            assert build_model(cfg, progress=False).head.criterion.prob_loss == choice
    assert TrainConfig.for_profile("cpu").head.prob_loss == "dice"
    assert TrainConfig.for_profile("full").head.prob_loss == "bce"  # the TCM authors' setting


# ------------------------------------------------------------------------------------------------ post-processing

@pytest.mark.parametrize("poly", [
    np.array([[20, 30], [80, 30], [80, 70], [20, 70]], np.float32),  # axis-aligned rectangle
    cv2.boxPoints(((64, 64), (80, 30), 15)).astype(np.float32),  # rotated quad
])
def test_postprocess_recovers_shrunk_region(poly):
    prob = fill_polygons(np.zeros((128, 128), np.float32), [shrink_polygon(poly, 0.4)], 1.0)  # a perfect P
    quads = db_postprocess(prob)
    assert len(quads) == 1
    quad, score = quads[0]
    assert quad.shape == (4, 2) and quad.dtype == np.float32 and score == pytest.approx(1.0)
    assert iou(quad, poly) > 0.9
    assert quad[0].sum() == quad.sum(1).min()  # starts top-left
    polys = db_postprocess(prob, polygon=True)
    assert len(polys) == 1 and len(polys[0][0]) >= 4 and iou(polys[0][0], poly) > 0.9
    scaled = db_postprocess(prob, scale=(2.0, 0.5))[0][0]
    np.testing.assert_allclose(scaled, quad * [2.0, 0.5], rtol=1e-5)


def test_postprocess_thresholds_and_min_size():
    prob = np.zeros((64, 64), np.float32)
    prob[10:30, 10:40] = 0.5  # above thresh 0.3, below box_thresh 0.6
    prob[45:47, 10:40] = 0.9  # 2 px tall: below min_size 3
    assert db_postprocess(prob) == []
    assert len(db_postprocess(prob, box_thresh=0.4)) == 1
    assert len(db_postprocess(prob, box_thresh=0.4, min_size=0)) == 2
    assert len(DBPostprocess(box_thresh=0.4, max_candidates=1)(prob)) <= 1
    with pytest.raises(DetectorError):
        db_postprocess(np.zeros((1, 8, 8)))


# ------------------------------------------------------------------------------------------------ detector

def test_detector_outputs_and_predict():
    clip = tiny_clip()
    det = build_detector("tcm-dbnet", clip).train()
    out = det(images())
    assert out["prob"].shape == out["thresh"].shape == out["binary"].shape == (2, 64, 64)
    assert out["score_logits"].shape == out["score_map"].shape == (2, 1, 2, 2)
    parts = det.loss(out, targets())
    assert {"loss", "loss_prob", "loss_thresh", "loss_binary", "loss_aux"} <= set(parts)
    torch.testing.assert_close(parts["loss"], 5 * parts["loss_prob"] + 10 * parts["loss_thresh"] +
                               parts["loss_binary"] + parts["loss_aux"])
    preds = det.predict(images(), scale=[1.0, (2.0, 2.0)], box_thresh=0.0, thresh=0.0, min_size=0)
    assert det.training and len(preds) == 2  # predict restores the mode
    assert all(isinstance(p, np.ndarray) and p.shape[1] == 2 and isinstance(s, float) for r in preds for p, s in r)
    base = build_detector("dbnet", clip).eval()
    out = base(images())
    assert set(out) == {"prob_logits", "prob"}
    with pytest.raises(DetectorError):
        base(images(size=48))
    with pytest.raises(DetectorError):
        build_detector("yolo", clip)
    with pytest.raises(DetectorError):
        build_detector("dbnet", clip, tcm=TCMConfig(visual_prompt=False))  # no TCM options without TCM
    with pytest.raises(DetectorError):
        build_detector("tcm-dbnet", clip, head=PANConfig())  # another family's head options


def test_tcm_dbnet_loss_falls_on_a_tiny_batch():
    clip = tiny_clip()
    t = targets()  # 2 images 64x64, one rectangle each
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=g) * 0.3 + 1.5 * (t["prob"] > 0)[:, None].float()
    torch.manual_seed(0)
    det = build_detector("tcm-dbnet", clip).train()
    opt = torch.optim.Adam([p for p in det.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(25):
        parts = det.loss(det(x), t)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["loss"].item())
    assert min(losses[-5:]) < 0.5 * losses[0]


def test_detector_names_and_targets():
    assert {"dbnet", "tcm-dbnet", "dbnet-scratch"} <= set(DETECTORS)
    assert head_family("tcm-dbnet") == ("dbnet", True, False)
    assert head_family("dbnet-scratch") == ("dbnet", False, True)
    with pytest.raises(DetectorError, match="unknown detector"):
        head_family("tcm-dbnet-scratch")
    det = build_detector("dbnet", tiny_clip())
    fn = det.target_fn()
    assert fn == DBTargets()  # a plain, picklable value (DataLoader workers)
    inst = [Instance(np.array([[4, 4], [40, 4], [40, 20], [4, 20]], np.float32), "x", False)]
    got, want = fn(inst, 32, 48), db_targets(inst, 32, 48)
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


def test_tcm_dbnet_targets_share_the_shrink_map_of_the_aux_loss():
    """tcm-dbnet: TCM's auxiliary loss reads DBNet's "prob"/"prob_mask", which must be exactly TCM's own shrink
    map (tcm_kit.data.targets.shrink_targets), and no second copy of it is added."""
    det = build_detector("tcm-dbnet", tiny_clip(), head=DBConfig(width=16), tcm=TCMConfig(decoder_width=16))
    fn = det.target_fn()
    inst = [Instance(np.array([[4, 4], [60, 8], [58, 30], [6, 26]], np.float32), "x", False),
            Instance(cv2.boxPoints(((64, 44), (40, 14), 20)).astype(np.float32), "y", False),
            Instance(np.array([[70, 4], [90, 4], [90, 20], [70, 20]], np.float32), "###", True),  # don't care
            Instance(np.array([[10, 50], [30, 50], [30, 54], [10, 54]], np.float32), "z", False)]  # < min_size
    h, w = 64, 96
    got, ref = fn(inst, h, w), shrink_targets(inst, h, w)
    assert set(got) == set(db_targets(inst, h, w))  # DBNet's maps, nothing added on top
    assert got["prob"].sum() > 0 and (got["prob_mask"] == 0).any()  # a non-trivial map and mask
    for k in ("prob", "prob_mask"):
        assert got[k].dtype == ref[k].dtype == np.float32 and got[k].shape == (h, w)
        np.testing.assert_array_equal(got[k], ref[k])
        np.testing.assert_array_equal(got[k], det.backbone.target_fn()(inst, h, w)[k])
