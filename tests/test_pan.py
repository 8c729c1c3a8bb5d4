"""PAN plug-in: FPEM/FFM neck, head, targets, loss, pixel aggregation, Detector with Backbone / TCM (tiny, seconds)."""
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
from tcm_kit.heads.db import DBConfig
from tcm_kit.heads.pan import (FPEM, PAN, PAN_HEADS, PANConfig, PANHead, PANLoss, PANNeck, PANPostprocess,
                               PANTargets, _ohem_mask, pan_postprocess, pan_targets, pixel_aggregation)
from tcm_kit.tcm import TCM, Backbone, TCMConfig

from tiny import images, tiny_clip  # noqa: E402

torch.set_num_threads(1)


def iou(a, b):
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def perfect_maps(t, spacing=5.0):
    """Ideal outputs from targets: text/kernel = the target maps, one distinct constant vector per instance."""
    ids = t["pan_text_ids"].astype(int)
    vecs = np.zeros((ids.max() + 1, 4), np.float32)
    vecs[1:, 0] = spacing * np.arange(1, ids.max() + 1)  # instances `spacing` apart, background at 0
    return {"text": t["pan_text"], "kernel": t["pan_kernel"], "embedding": np.moveaxis(vecs[ids], -1, 0)}


def batch_of(*polys_per_image, size=64, fn=pan_targets):
    """The (B,H,W) training maps of `fn` (a target function, default PAN's) for care rectangles."""
    maps = [fn([Instance(p) for p in polys], size, size) for polys in polys_per_image]
    return {k: torch.from_numpy(np.stack([m[k] for m in maps])) for k in maps[0]}


# ------------------------------------------------------------------------------------------------ neck + head

def test_neck_and_head_shapes():
    torch.manual_seed(0)
    feats = [torch.randn(2, c, 32 // s, 32 // s) for c, s in zip((8, 16, 32, 65), (1, 2, 4, 8))]  # strides 4..32
    neck = PANNeck([8, 16, 32, 65], width=16)
    reduced = [conv(f) for conv, f in zip(neck.reduce, feats)]
    assert [tuple(f.shape) for f in FPEM(16)(reduced)] == [tuple(f.shape) for f in reduced]  # FPEM keeps shapes
    assert neck.fpems[0].down[0][0].stride == (2, 2) and neck.fpems[0].down[0][0].groups == 16  # stride-2 dw
    fused = neck(feats)
    assert fused.shape == (2, 64, 32, 32) and neck.out_channels == 64 and len(neck.fpems) == 2
    out = PANHead(64, hidden=16)(fused)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "text_logits": (2, 128, 128), "kernel_logits": (2, 128, 128), "embedding": (2, 4, 128, 128),
        "text": (2, 128, 128), "kernel": (2, 128, 128)}
    torch.testing.assert_close(out["text"], torch.sigmoid(out["text_logits"]))
    torch.testing.assert_close(out["kernel"], torch.sigmoid(out["kernel_logits"]))
    assert PAN([8, 16, 32, 65]).neck.reduce[0][0].out_channels == 128  # paper width by default
    with pytest.raises(DetectorError, match="4 input widths"):
        PANNeck([8, 16, 32])
    with pytest.raises(DetectorError, match="4 feature maps"):
        neck(feats[:3])


def test_mmocr_head_is_one_conv1x1_applied_per_level_as_on_the_concatenation():
    """The default head is MMOCR 0.x's PANHead (TCM's PAN): one conv1x1 from the FFM's 4 x width channels to 6.
    Applied per level and summed after upsampling it gives what the conv1x1 of the upsampled concatenation gives."""
    torch.manual_seed(0)
    feats = [torch.randn(2, c, 32 // s, 32 // s) for c, s in zip((8, 16, 32, 65), (1, 2, 4, 8))]
    pan = PAN([8, 16, 32, 65], width=16).eval()
    conv = pan.maps.conv
    assert PAN_HEADS == ("mmocr", "pan_pp") and pan.maps.hidden is None
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1) and (conv.in_channels, conv.out_channels) \
        == (64, 6) and conv.bias is not None
    assert sum(p.numel() for p in pan.maps.parameters()) == 64 * 6 + 6  # nothing but the conv1x1
    with torch.no_grad():
        torch.nn.init.normal_(conv.bias)
        per_level = pan.maps(pan.neck.levels(feats))
        concat = pan.maps(pan.neck(feats))  # the FFM's (B, 64, 32, 32) concatenation
        whole = pan(feats)
    for k in concat:
        torch.testing.assert_close(per_level[k], concat[k], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(whole[k], concat[k], atol=1e-5, rtol=1e-4)
    with pytest.raises(DetectorError, match="per-level input"):
        PANHead(64, hidden=16)(pan.neck.levels(feats))


def test_pan_pp_head_is_the_conv3x3_head_at_the_neck_width():
    pan = PAN([8, 16, 32, 65], width=16, head="pan_pp")
    first, bn, _, last = pan.maps.conv
    assert (first.kernel_size, first.in_channels, first.out_channels) == ((3, 3), 64, 16) and bn.num_features == 16
    assert (last.kernel_size, last.in_channels, last.out_channels) == ((1, 1), 16, 6)
    feats = [torch.randn(1, c, 32 // s, 32 // s) for c, s in zip((8, 16, 32, 65), (1, 2, 4, 8))]
    assert pan.eval()(feats)["embedding"].shape == (1, 4, 128, 128)
    with pytest.raises(DetectorError, match="PAN head must be one of"):
        PAN([8, 16, 32, 65], head="psenet")


def _gmac(model, x):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as count:
        model(x)
    return count.get_total_flops() / 2e9


def test_pan_costs_less_than_dbnet_on_the_same_backbone():
    """PAN was designed to be faster than DBNet. On the embedded CLIP's layout (random weights), each head at its
    paper width (DBNet 256, PAN 128), PAN's forward is at most 0.6x DBNet's multiply-adds (about 0.5x), and at
    most DBNet's at DBNet's width; the pan_pp head's conv3x3 on the stride-4 map makes it 4.5x at width 256 (the
    kit's PAN before: 4.9x DBNet's latency at 640 px)."""
    from tcm_kit.clip import create_clip
    from tcm_kit.detector import HEADS, build_detector

    clip = create_clip("TCM-RN-tiny", seed=0)
    x = torch.randn(1, 3, 128, 128)
    db = _gmac(build_detector("dbnet", clip, head=DBConfig(width=HEADS["dbnet"].paper_width)).eval(), x)
    pan = _gmac(build_detector("pan", clip, head=PANConfig(width=HEADS["pan"].paper_width)).eval(), x)
    pan_256 = _gmac(build_detector("pan", clip, head=PANConfig(width=256)).eval(), x)
    pan_pp_256 = _gmac(build_detector("pan", clip, head=PANConfig(width=256, head="pan_pp")).eval(), x)
    assert HEADS["pan"].paper_width == 128 and HEADS["dbnet"].paper_width == 256
    assert pan <= 0.6 * db and pan_256 <= db
    assert pan_pp_256 > 4 * db


# ------------------------------------------------------------------------------------------------ targets

def test_targets_regions_kernels_ids_and_masks():
    word = rect(8, 8, 56, 28)
    dont_care = rect(8, 40, 40, 56)
    tiny = rect(48, 44, 60, 48)  # 4 px tall: below min_size 8
    inst = [Instance(word), Instance(dont_care, "###", True), Instance(tiny)]
    t = PANTargets()(inst, 64, 64)
    assert set(t) == {"pan_text", "pan_kernel", "pan_mask", "pan_text_ids", "pan_kernel_ids"}  # PAN's own only
    assert all(v.dtype == np.float32 and v.shape == (64, 64) for v in t.values())
    assert t["pan_text"][8:29, 8:57].all() and t["pan_text"].sum() == 21 * 49  # the full polygon
    k = t["pan_kernel"] > 0
    assert k.any() and (t["pan_text"][k] == 1).all() and k.sum() < 0.5 * t["pan_text"].sum()
    # kernel = polygon shrunk with r = 0.5: area about r^2 of the text for a wide word (offset D = A(1-r^2)/L)
    d = 48 * 20 * 0.75 / (2 * (48 + 20))
    assert k.sum() == pytest.approx((48 - 2 * d + 1) * (20 - 2 * d + 1), rel=0.1)
    assert set(np.unique(t["pan_text_ids"])) == {0.0, 1.0} and (t["pan_kernel_ids"][k] == 1).all()
    for poly in (dont_care, tiny):  # masked, never positive
        x0, y0 = poly.min(0).astype(int)
        x1, y1 = poly.max(0).astype(int)
        assert (t["pan_mask"][y0:y1 + 1, x0:x1 + 1] == 0).all()
        assert (t["pan_text"][y0:y1 + 1, x0:x1 + 1] == 0).all()
        assert (t["pan_text_ids"][y0:y1 + 1, x0:x1 + 1] == 0).all()
    assert t["pan_mask"].sum() == 64 * 64 - 17 * 33 - 5 * 13
    fn = PAN([8, 16, 32, 64], width=8).target_fn()
    assert pickle.loads(pickle.dumps(fn)) == fn == PANTargets()
    # TCM's auxiliary target: added by a Detector with a TCM backbone, not by the head (nor without TCM)
    clip = tiny_clip()
    assert build_detector("pan", clip, head=PANConfig(width=8)).target_fn() == PANTargets()
    det = build_detector("tcm-pan", clip, head=PANConfig(width=8), tcm=TCMConfig(decoder_width=16))
    tcm_fn = pickle.loads(pickle.dumps(det.target_fn()))  # picklable for DataLoader workers
    got = tcm_fn(inst, 64, 64)
    assert set(got) == set(t) | {"prob", "prob_mask"}
    assert all(np.array_equal(got[key], t[key]) for key in t)  # PAN's maps unchanged
    want = shrink_targets(inst, 64, 64)
    assert want["prob"].sum() > 0 and (want["prob_mask"] == 0).any()
    assert all(got[key].dtype == np.float32 and np.array_equal(got[key], want[key]) for key in ("prob", "prob_mask"))


def test_overlapping_instances_keep_consistent_ids():
    t = pan_targets([Instance(rect(4, 4, 40, 24)), Instance(rect(20, 10, 60, 30))], 64, 64)
    ids, kids = t["pan_text_ids"], t["pan_kernel_ids"]
    assert set(np.unique(ids)) == {0.0, 1.0, 2.0} and set(np.unique(kids)) == {0.0, 1.0, 2.0}
    assert ids[20, 30] == 2.0  # the later instance wins where they overlap
    assert ((kids > 0) <= (ids > 0)).all()


# ------------------------------------------------------------------------------------------------ post-processing

@pytest.mark.parametrize("poly", [
    rect(20, 30, 100, 60),  # axis-aligned word
    cv2.boxPoints(((64, 64), (90, 30), 20)).astype(np.float32),  # rotated word
])
def test_perfect_maps_decode_back_to_the_polygon(poly):
    t = pan_targets([Instance(poly)], 128, 128)
    maps = perfect_maps(t)
    dets = pan_postprocess(**maps)
    assert len(dets) == 1
    quad, score = dets[0]
    assert quad.shape == (4, 2) and quad.dtype == np.float32 and score == pytest.approx(1.0)
    assert iou(quad, poly) > 0.9
    assert quad[0].sum() == quad.sum(1).min()  # clockwise from top-left
    polys = pan_postprocess(**maps, polygon=True)
    assert len(polys) == 1 and len(polys[0][0]) >= 4 and iou(polys[0][0], poly) > 0.9


def test_curved_text_decodes_as_a_polygon():
    a = np.linspace(np.pi * 1.1, np.pi * 1.9, 12)
    outer = np.stack([64 + 50 * np.cos(a), 90 + 50 * np.sin(a)], 1)
    inner = np.stack([64 + 30 * np.cos(a[::-1]), 90 + 30 * np.sin(a[::-1])], 1)
    arc = np.concatenate([outer, inner]).astype(np.float32)  # a 20 px thick arc
    maps = perfect_maps(pan_targets([Instance(arc)], 128, 128))
    (poly, score), = pan_postprocess(**maps, polygon=True)
    assert iou(poly, arc) > 0.9 and score == pytest.approx(1.0)
    (quad, _), = pan_postprocess(**maps)
    assert iou(quad, arc) < 0.8  # a quad cannot follow the curve: the polygon mode is what helps here


def test_touching_words_are_separated_by_their_kernels():
    words = [rect(10, 20, 60, 44), rect(61, 20, 116, 44)]  # text regions share an edge: one text component
    t = pan_targets([Instance(w) for w in words], 64, 128)
    assert cv2.connectedComponents((t["pan_text"] > 0).astype(np.uint8), connectivity=4)[0] == 2  # 1 + bg
    maps = perfect_maps(t)
    for emb in (maps["embedding"], np.zeros_like(maps["embedding"])):  # separated even without the vectors
        dets = pan_postprocess(maps["text"], maps["kernel"], emb)
        assert len(dets) == 2
        got = sorted(dets, key=lambda d: d[0][:, 0].min())
        assert all(iou(d[0], w) > 0.9 for d, w in zip(got, words))


def test_distance_threshold_stops_growth_into_another_instance():
    words = [rect(10, 20, 60, 44), rect(61, 20, 116, 44)]
    maps = perfect_maps(pan_targets([Instance(w) for w in words], 64, 128), spacing=5.0)
    kernel = maps["kernel"].copy()
    kernel[:, 61:] = 0  # the second word's kernel is missed
    strict = pan_postprocess(maps["text"], kernel, maps["embedding"], distance_threshold=1.0)
    assert len(strict) == 1 and iou(strict[0][0], words[0]) > 0.9  # its vectors are 5 away: not swallowed
    loose = pan_postprocess(maps["text"], kernel, maps["embedding"], distance_threshold=10.0)
    assert len(loose) == 1 and iou(loose[0][0], rect(10, 20, 116, 44)) > 0.9


def test_pixel_aggregation_grows_within_the_region_only():
    region = np.zeros((5, 9), bool)
    region[1:4, :] = True  # a 3-row band
    region[:, 4] = False  # cut in two
    kl = np.zeros((5, 9), np.int32)
    kl[2, 1], kl[2, 7] = 1, 2
    emb = np.zeros((4, 5, 9), np.float32)
    lab = pixel_aggregation(kl, region, emb, 3.0)
    assert (lab[1:4, :4] == 1).all() and (lab[1:4, 5:] == 2).all()
    assert (lab[~region] == 0).all()
    emb[0, 1:4, 2:4] = 10.0  # far from kernel 1's mean: blocked, and the growth stops there
    lab = pixel_aggregation(kl, region, emb, 3.0)
    assert (lab[1:4, 2:4] == 0).all() and (lab[1:4, :2] == 1).all()


def test_decode_honours_box_thresh_min_area_and_scale():
    text = np.zeros((64, 64), np.float32)
    text[10:30, 8:50] = 0.7  # mean text probability 0.7
    text[40:56, 8:50] = 0.95
    kernel = np.zeros_like(text)
    kernel[15:25, 12:46] = 1.0
    kernel[44:52, 12:46] = 1.0
    emb = np.zeros((4, 64, 64), np.float32)
    head = PAN([8, 16, 32, 64], width=8)
    maps = {"text": text, "kernel": kernel, "embedding": emb}
    lo = head.decode(maps, box_thresh=0.3)
    assert sorted(round(s, 3) for _, s in lo) == [0.7, 0.95]
    assert len(head.decode(maps)) == 2  # default box_thresh 0.6
    assert len(head.decode(maps, box_thresh=0.8)) == 1 and head.decode(maps, box_thresh=0.96) == []
    assert len(head.decode(maps, box_thresh=0.3, min_area=20 * 42 + 1)) == 0
    (q1, _), = head.decode(maps, box_thresh=0.9)
    (q2, _), = head.decode(maps, scale=(2.0, 0.5), box_thresh=0.9)
    (q3, _), = head.decode(maps, scale=3.0, box_thresh=0.9)
    np.testing.assert_allclose(q2, q1 * [2.0, 0.5], rtol=1e-5)
    np.testing.assert_allclose(q3, q1 * 3.0, rtol=1e-5)
    assert head.decode({**maps, "text": np.zeros_like(text)}) == []  # nothing above min_text_confidence
    speck = kernel.copy()
    speck[45, 47] = 1.0  # a 1-pixel spurious kernel inside the second word
    assert len(head.decode({**maps, "kernel": speck})) == 2  # dropped: below min_kernel_area (4 px)
    assert len(head.decode({**maps, "kernel": speck}, min_kernel_area=0)) == 3  # it would split the word


def test_decode_rejects_bad_inputs():
    head = PAN([8, 16, 32, 64], width=8)
    good = {"text": np.zeros((32, 32), np.float32), "kernel": np.zeros((32, 32), np.float32),
            "embedding": np.zeros((4, 32, 32), np.float32)}
    with pytest.raises(DetectorError, match="missing"):
        head.decode({"text": good["text"]})
    with pytest.raises(DetectorError, match="kernel"):
        head.decode({**good, "kernel": np.zeros((16, 32), np.float32)})
    with pytest.raises(DetectorError, match="embedding"):
        head.decode({**good, "embedding": np.zeros((32, 32), np.float32)})
    with pytest.raises(DetectorError, match="unknown PAN decoding setting"):
        head.decode(good, thresh=0.3)
    with pytest.raises(DetectorError, match="scale"):
        head.decode(good, scale="big")
    assert head.decode(good, box_thresh=0.3) == [] and PANPostprocess().box_thresh == 0.6


# ------------------------------------------------------------------------------------------------ loss

def test_ohem_keeps_positives_and_the_hardest_negatives():
    gt = torch.zeros(2, 1, 10)
    gt[0, 0, :2] = 1.0  # image 0: 2 positives -> 6 negatives
    score = torch.linspace(0, 0.9, 10).view(1, 1, 10).repeat(2, 1, 1)
    mask = torch.ones_like(gt)
    sel = _ohem_mask(score, gt, mask, 3.0)
    assert sel[0, 0].tolist() == [1, 1, 0, 0, 1, 1, 1, 1, 1, 1]  # the 6 highest-scoring negatives
    assert sel[1].sum() == 10  # no positive: the whole mask
    mask[0, 0, 9] = 0.0
    assert _ohem_mask(score, gt, mask, 3.0)[0, 0].tolist() == [1, 1, 0, 1, 1, 1, 1, 1, 1, 0]


def test_loss_parts_weights_and_ideal_predictions():
    b = batch_of([rect(4, 4, 40, 20), rect(4, 30, 56, 50)], [rect(10, 10, 50, 40)])
    far = perfect_maps({k: v.numpy()[0] for k, v in b.items()}, spacing=5.0)["embedding"]
    emb = torch.from_numpy(np.stack([far, perfect_maps({k: v.numpy()[1] for k, v in b.items()})["embedding"]]))
    big = 20.0
    ideal = {"text_logits": big * (2 * b["pan_text"] - 1), "kernel_logits": big * (2 * b["pan_kernel"] - 1),
             "embedding": emb}
    parts = PANLoss()(ideal, b)
    assert set(parts) == {"loss", "loss_text", "loss_kernel", "loss_agg", "loss_dis"}
    assert all(parts[k].item() < 1e-3 for k in parts)  # vectors 5 apart (> delta_dis 3), pixels on their means
    close = dict(ideal, embedding=emb * 0.2)  # instances only 1 apart: discrimination loss > 0
    parts = PANLoss()(close, b)
    assert parts["loss_dis"].item() == pytest.approx(np.log1p(2.0 ** 2) / 1 / 2, rel=1e-3)  # image 1 has 1 kernel
    assert parts["loss_agg"].item() < 1e-3
    noisy = dict(ideal, embedding=emb + torch.randn_like(emb))  # pixels off their kernel mean: aggregation > 0
    parts = PANLoss()(noisy, b)
    assert parts["loss_agg"].item() > 0.05
    torch.testing.assert_close(parts["loss"], parts["loss_text"] + 0.5 * parts["loss_kernel"] +
                               0.25 * (parts["loss_agg"] + parts["loss_dis"]))
    empty = batch_of([], [])  # text-free images: finite, no embedding terms
    parts = PANLoss()(noisy, empty)
    assert torch.isfinite(parts["loss"]) and parts["loss_agg"].item() == parts["loss_dis"].item() == 0.0


def test_kernel_loss_only_inside_the_predicted_text_region():
    b = batch_of([rect(4, 4, 40, 20)])
    emb = torch.zeros(1, 4, 64, 64)
    wrong_kernel = -20.0 * (2 * b["pan_kernel"] - 1)
    no_text = {"text_logits": torch.full((1, 64, 64), -20.0), "kernel_logits": wrong_kernel, "embedding": emb}
    assert PANLoss()(no_text, b)["loss_kernel"].item() == pytest.approx(1.0)  # empty region: no signal
    text = {**no_text, "text_logits": 20.0 * (2 * b["pan_text"] - 1)}
    assert PANLoss()(text, b)["loss_kernel"].item() > 0.99  # wrong kernel inside the region
    good = {**text, "kernel_logits": -wrong_kernel}
    outside = good["kernel_logits"].clone()
    outside[b["pan_text"] == 0] = 20.0  # kernel fired outside the predicted text region: not counted
    assert PANLoss()({**good, "kernel_logits": outside}, b)["loss_kernel"].item() < 1e-3


def test_dont_care_regions_do_not_count_in_the_loss():
    word, dont_care = rect(4, 4, 40, 20), rect(4, 32, 56, 52)
    maps = pan_targets([Instance(word), Instance(dont_care, "###", True)], 64, 64)
    b = {k: torch.from_numpy(v)[None] for k, v in maps.items()}
    torch.manual_seed(0)
    out = {"text_logits": torch.randn(1, 64, 64), "kernel_logits": torch.randn(1, 64, 64),
           "embedding": torch.randn(1, 4, 64, 64)}
    changed = {k: v.clone() for k, v in out.items()}
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[32:53, 4:57] = True
    changed["text_logits"][0][inside] = 20.0  # confident "text" on the don't-care word
    changed["kernel_logits"][0][inside] = 20.0
    changed["embedding"][0][:, inside] = 50.0
    a, c = PANLoss()(out, b), PANLoss()(changed, b)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_loss_rejects_bad_batches():
    b = batch_of([rect(4, 4, 40, 20)])
    out = {"text_logits": torch.zeros(1, 64, 64), "kernel_logits": torch.zeros(1, 64, 64),
           "embedding": torch.zeros(1, 4, 64, 64)}
    with pytest.raises(DetectorError, match="pan_kernel_ids"):
        PANLoss()(out, {k: v for k, v in b.items() if k != "pan_kernel_ids"})
    with pytest.raises(DetectorError, match="do not match"):
        PANLoss()(out, {k: v[:, :32] for k, v in b.items()})
    with pytest.raises(DetectorError, match="outputs missing"):
        PANLoss()({"text_logits": out["text_logits"]}, b)


# ------------------------------------------------------------------------------------------------ detector

def _word_batch(size=64, fn=pan_targets):
    polys = [[rect(6, 8, 56, 24), rect(6, 36, 44, 54)], [rect(10, 12, 58, 30), rect(12, 40, 50, 56)]]
    return batch_of(*polys, size=size, fn=fn)


def test_backbone_pan_loss_falls_and_gradients_reach_the_head():
    clip = tiny_clip()
    t = _word_batch()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=g) * 0.3 + 1.5 * t["pan_text"][:, None]
    torch.manual_seed(0)
    bb = Backbone(clip)
    det = Detector(bb, PAN(bb.out_channels, width=32)).train()
    parts = det.loss(det(x), t)
    assert "loss_aux" not in parts
    parts["loss"].backward()
    for name, p in det.head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    det.zero_grad()
    opt = torch.optim.Adam(det.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        parts = det.loss(det(x), t)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["loss"].item())
    assert min(losses[-5:]) < 0.5 * losses[0], losses


def test_tcm_pan_outputs_aux_loss_and_predict():
    clip = tiny_clip()
    tcm = TCM(clip, TCMConfig(decoder_width=32))
    det = Detector(tcm, PAN(tcm.out_channels, width=16)).train()
    assert tcm.out_channels[3] == Backbone(clip).out_channels[3] + 1  # score map channel joins C5
    out = det(images())
    assert out["score_logits"].shape == out["score_map"].shape == (2, 1, 2, 2)
    assert out["embedding"].shape == (2, 4, 64, 64)
    parts = det.loss(out, _word_batch(fn=det.target_fn()))  # PAN's maps + TCM's shrink map
    assert {"loss", "loss_text", "loss_kernel", "loss_agg", "loss_dis", "loss_aux"} <= set(parts)
    torch.testing.assert_close(parts["loss"], parts["loss_text"] + 0.5 * parts["loss_kernel"] +
                               0.25 * (parts["loss_agg"] + parts["loss_dis"]) + parts["loss_aux"])
    preds = det.predict(images(), scale=[1.0, (2.0, 2.0)], box_thresh=0.0, min_text_confidence=0.0,
                        min_kernel_confidence=0.0, min_area=0)
    assert det.training and len(preds) == 2  # predict restores the mode
    assert all(len(r) >= 1 for r in preds)  # everything is text at these thresholds
    assert all(p.dtype == np.float32 and p.shape == (4, 2) and isinstance(s, float) for r in preds for p, s in r)
    assert max(p[:, 0].max() for p, _ in preds[1]) > 64  # the second image's coordinates were scaled by 2


def test_profiles_choose_the_pan_head():
    """TCM's PAN head (mmocr) by default and in the full profile; smoke and cpu keep the kit's earlier head."""
    from tcm_kit.clip import create_clip
    from tcm_kit.config import TrainConfig
    from tcm_kit.train import build_model

    clip = create_clip("TCM-RN-tiny", seed=0)
    for profile, head in (("smoke", "pan_pp"), ("cpu", "pan_pp"), ("full", "mmocr")):
        cfg = TrainConfig.for_profile(profile, detector="pan")
        assert cfg.head.head == head
        assert (build_model(cfg, clip=clip).head.maps.hidden is None) == (head == "mmocr")
    assert TrainConfig(detector="pan").head.head == "mmocr" == PANConfig().head
