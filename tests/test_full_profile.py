"""The `full` profile against the official IC15 config (github wenwenyu/TCM, configs/textdet/dbnet/
clip_db_r50_fpnc_prompt_gen_vis_1200e_ft_gen_ic15_adam_taiji.py and its bases): optimiser groups, schedule,
per-GPU batch under DDP, augmentation, normalisation, test scale, DB decoding, the authors' evaluation protocol."""
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tcm_kit import train as T
from tcm_kit.data import transforms as A
from tcm_kit.data.formats import Instance
from tcm_kit.heads.db import DBPostprocess
from tcm_kit.prompts import DecoderLayer
from tcm_kit.train import TrainConfig

from tiny import tiny_clip  # noqa: E402

torch.set_num_threads(1)


def full(**kw):
    return TrainConfig.for_profile("full", **kw)


def test_full_profile_holds_the_official_ic15_settings():
    c = full()
    o = c.optim
    assert (o.optimizer, o.lr, o.weight_decay, o.no_decay, o.backbone_lr_mult) == ("adam", 1e-4, 1e-4, "official", 0.1)
    assert (o.lr_schedule, o.poly_power, o.min_lr, o.warmup_steps) == ("poly-epoch", 0.9, 1e-7, 0)
    assert (o.batch_size, c.aug.train_size) == (16, 640)
    assert (c.aug.pipeline, c.aug.flip_p, c.aug.max_angle, tuple(c.aug.scale_range)) == \
        ("official", 0.5, 10.0, (0.5, 3.0))
    assert c.aug.color_jitter == pytest.approx((32 / 255, 0.0, 0.5, 0.0))
    assert (c.pixel_norm, c.evaluation.test_size) == ("dbnet", (4068, 1024))
    assert c.tcm.prompt == "the pixels of many arbitrary-shape text instances." and c.tcm.n_ctx == 4
    assert c.tcm.context_decoder
    assert c.head.postprocess == DBPostprocess(thresh=0.28, box_thresh=0.2, unclip_ratio=1.6, min_size=2,
                                               max_candidates=3000, polygon=False, contour_approx=0.001)
    assert c.evaluation.box_thresholds == pytest.approx((0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
    assert (c.head.width, full(detector="tcm-pan").head.width, full(detector="pan", head=dict(width=64)).head.width) \
        == (256, 128, 64)
    assert type(full(detector="tcm-pan").head).__name__ == "PANConfig"  # the official DB decoding is DBNet's only
    for kit in (TrainConfig.for_profile("cpu"), TrainConfig.for_profile("smoke")):  # the kit's own choices stay
        assert (kit.optim.optimizer, kit.optim.no_decay, kit.optim.lr_schedule, kit.aug.pipeline, kit.pixel_norm) == \
            ("adamw", "none", "warmup-poly", "kit", "clip")
        assert kit.head.postprocess == DBPostprocess() and kit.evaluation.protocol == "val"
    with pytest.raises(T.TrainConfigError, match="unknown choice"):
        full(optim=dict(optimizer="sgd"))


def test_a_full_config_survives_its_config_json(tmp_path):
    cfg = full(domain="icdar2015", data_root=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(T.dataclasses.asdict(cfg), default=str))
    assert T.run_config(tmp_path) == cfg


# ------------------------------------------------------------------------------------------------ optimiser

def _full_model(**kw):
    cfg = full(tcm=dict(decoder_width=32, prompt="Text"), **kw)  # the tiny CLIP has 16 tokens
    return T.build_model(cfg, clip=tiny_clip()), cfg


def _decay_of(optimizer) -> dict:
    return {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}


def test_full_optimiser_is_adam_with_l2_decay_except_the_decoder_layer_norms():
    """mmcv gives each parameter its longest matching custom key only: 'backbone' (lr x0.1) and 'text_encoder'
    outrank 'norm', and outside them only the decoder layers' norm1-3 hold 'norm' in their names. So those
    LayerNorms get no decay; the backbone's BatchNorms, the neck and head BatchNorms, the other LayerNorms and
    every bias keep weight_decay 1e-4; the frozen text tower is not in the optimiser."""
    model, cfg = _full_model()
    opt = T.build_optimizer(model, cfg)
    assert type(opt) is torch.optim.Adam  # L2 decay in the gradient, not AdamW's decoupled decay
    decay = _decay_of(opt)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(decay) == trainable and sum(len(g["params"]) for g in opt.param_groups) == len(trainable)
    text_tower = {id(p) for n in ("transformer", "token_embedding", "ln_final") for p in
                  getattr(model.backbone.clip, n).parameters()}
    text_tower |= {id(model.backbone.clip.positional_embedding), id(model.backbone.clip.text_projection)}
    assert text_tower and not text_tower & set(decay)
    assert all(not p.requires_grad for p in model.backbone.clip.transformer.parameters())
    layer_norms = {id(p) for layer in model.modules() if isinstance(layer, DecoderLayer)
                   for m in layer.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    assert len(layer_norms) == 2 * 3 * 3 * 2  # 2 decoders x 3 layers x 3 LayerNorms x (weight, bias)
    assert {k for k, v in decay.items() if v == 0.0} == layer_norms
    bn = [p for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias") and p.requires_grad and
              id(p) not in layer_norms]
    assert bn and biases and all(decay[id(p)] == 1e-4 for p in bn + biases)
    encoder = {id(p) for p in model.backbone.image_encoder().parameters()}
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert all(lrs[k] == pytest.approx(1e-5 if k in encoder else 1e-4) for k in lrs)


def test_no_decay_on_every_norm_layer_as_an_option():
    model, cfg = _full_model(optim=dict(no_decay="norms"))
    decay = _decay_of(T.build_optimizer(model, cfg))
    norms = (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm)
    free = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters() if p.requires_grad}
    assert free and {k for k, v in decay.items() if v == 0.0} == free
    assert all(v == 1e-4 for k, v in decay.items() if k not in free)


def test_the_kit_profiles_keep_adamw_with_two_groups():
    cfg = TrainConfig.for_profile("cpu")
    model = T.build_model(cfg, clip=tiny_clip())
    opt = T.build_optimizer(model, cfg)
    assert type(opt) is torch.optim.AdamW and len(opt.param_groups) == 2
    assert all(g["weight_decay"] == cfg.optim.weight_decay for g in opt.param_groups)


# ------------------------------------------------------------------------------------------------ schedule

def test_full_schedule_is_poly_09_per_epoch_to_1e7_without_warm_up():
    cfg = full(optim=dict(steps=50))
    spe, epochs = 10, 5
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.Adam([{"params": [params[0]], "lr": 1e-5}, {"params": [params[1]], "lr": 1e-4}], lr=1e-4)
    sched = T.build_scheduler(opt, cfg, steps_per_epoch=spe)
    seen = []
    for _ in range(cfg.optim.steps):
        seen.append([g["lr"] for g in opt.param_groups])  # the rate step s trains with
        opt.step()
        sched.step()
    for s, lrs in enumerate(seen):
        coeff = (1 - (s // spe) / epochs) ** 0.9  # mmcv PolyLrUpdaterHook, by_epoch=True
        assert lrs == pytest.approx([(b - 1e-7) * coeff + 1e-7 for b in (1e-5, 1e-4)], rel=1e-9)
    assert seen[0] == pytest.approx([1e-5, 1e-4])  # no warm-up: the first step at the base rate
    assert all(seen[s] == seen[s - s % spe] for s in range(cfg.optim.steps))  # constant within an epoch
    assert seen[-1][1] == pytest.approx((1e-4 - 1e-7) * 0.2 ** 0.9 + 1e-7)
    assert T.epoch_poly_lr(10 ** 6, 1e-4, cfg, spe) == pytest.approx(1e-7)  # the floor
    kit = TrainConfig.for_profile("cpu")  # the kit's warm-up + per-step poly is unchanged
    assert T.lr_factor(0, kit) == pytest.approx(1 / kit.optim.warmup_steps)


# ------------------------------------------------------------------------------------------------ DDP

DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch.distributed as dist
    import tcm_kit.train as T

    def main():
        seen, real = [], T.train_step

        def spy(model, forward, optimizer, batch, device, amp):
            seen.append(list(batch["path"]))
            return real(model, forward, optimizer, batch, device, amp)

        T.train_step = spy
        cfg = T.TrainConfig.for_profile("smoke", optim=dict(steps=2, batch_size=3))
        T.fit(cfg, sys.argv[1], progress=False)
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, seen)
        if dist.get_rank() == 0:
            print("SEEN " + json.dumps(everyone))
        T.exit_process(0)

    if __name__ == "__main__":  # the synthetic-data writer's worker processes re-import this file (spawn)
        main()
""")


def test_batch_size_is_per_process_under_two_rank_ddp(tmp_path):
    """batch_size 3 on 2 gloo ranks: each rank trains on 3 images per step, the two ranks on different images
    (a global batch of 6); the kit used to split batch_size across the ranks (and refuse 3 on 2)."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("SEEN "))[5:])
    assert len(seen) == 2 and all(len(rank) == 2 for rank in seen)  # 2 ranks x 2 steps
    assert all(len(batch) == 3 for rank in seen for batch in rank)
    for step in range(2):
        assert not set(seen[0][step]) & set(seen[1][step])  # each rank its own part of the global batch


# ------------------------------------------------------------------------------------------------ data

def _scene(h=200, w=300):
    img = np.full((h, w, 3), 40, np.uint8)
    img[60:100, 50:170] = 230  # one bright word
    poly = np.array([[50, 60], [169, 60], [169, 99], [50, 99]], np.float32)
    return img, [Instance(poly, "word", False)]


def test_official_augmentation_order_and_settings():
    t = A.train_transforms(640, (0.5, 3.0), 10.0, 0.5, pipeline="official", color_jitter=(32 / 255, 0, 0.5, 0))
    kinds = [type(x).__name__ for x in t.transforms]
    assert kinds == ["ColorJitter", "RandomFlip", "RandomRotate", "RandomScale", "RegionCrop"]
    jitter, flip, rotate, scale, crop = t.transforms
    assert jitter.mode == "torchvision" and (jitter.brightness, jitter.saturation) == (32 / 255, 0.5)
    assert flip.p == 0.5 and rotate.max_angle == 10.0 and not rotate.expand
    assert scale.scale_range == (0.5, 3.0) and scale.long_side is None  # relative to the image itself
    assert crop.size == 640 and crop.fill == A.MEAN_FILL
    kit = A.train_transforms(640)
    assert [type(x).__name__ for x in kit.transforms] == ["RandomScale", "RandomRotate", "RandomCrop", "ColorJitter"]


def test_region_crop_keeps_polygons_in_step_and_fits_the_region():
    img, inst = _scene()
    crop = A.RegionCrop(160)
    for seed in range(8):
        out, kept = crop(img, inst, np.random.default_rng(seed))
        assert out.shape == (160, 160, 3) and len(kept) == 1
        p = kept[0].polygon
        inside = out[int(p[:, 1].min()) + 2:int(p[:, 1].max()) - 1, int(p[:, 0].min()) + 2:int(p[:, 0].max()) - 1]
        assert inside.size and inside.min() > 200  # the word's pixels moved with its polygon
        filled = (out == A.MEAN_FILL).all(-1)
        assert filled[-1].all() or filled[:, -1].all()  # resized to fit one side, padded on the other
    x0, y0, cw, ch = crop._region(img, inst, np.random.default_rng(0))
    cols = range(x0, x0 + cw + 1)
    assert 50 not in (x0, x0 + cw) and (x0 + cw <= 50 or x0 >= 169 or (x0 < 50 and x0 + cw > 169))  # no cut
    assert min(cols) <= 50 and max(cols) >= 169


def _torchvision_pil(img, fn, factor):
    from PIL import Image
    import torchvision.transforms.functional as F

    return np.asarray(getattr(F, fn)(Image.fromarray(img), factor))


@pytest.mark.parametrize("which", ["brightness", "saturation"])
def test_torchvision_jitter_matches_torchvision(which):
    """One change on at a time, so the factor can be replayed from the same rng; within 1 grey level of
    torchvision's own PIL implementation (rounding)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    x = 32 / 255 if which == "brightness" else 0.5
    jitter = A.ColorJitter(**{k: (x if k == which else 0.0) for k in ("brightness", "contrast", "saturation", "hue")},
                           mode="torchvision")
    out, _ = jitter(img, [], np.random.default_rng(3))
    replay = np.random.default_rng(3)
    replay.random(), replay.permutation(1)
    f = replay.uniform(1 - x, 1 + x)
    want = _torchvision_pil(img, f"adjust_{which}", f)
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1


def test_dbnet_normalisation_is_the_official_pipelines_and_reaches_the_model():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = A.to_tensor(img)
    want = (torch.from_numpy(img).permute(2, 0, 1).float() - torch.tensor([122.67891434, 116.66876762,
                                                                             104.00698793]).view(3, 1, 1)) / \
        torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    torch.testing.assert_close(A.renormalize(x, "dbnet"), want, atol=1e-4, rtol=1e-4)
    assert A.renormalize(x, "clip") is x
    for norm in ("dbnet", "clip"):
        model = T.build_model(TrainConfig.for_profile("smoke", detector="dbnet", pixel_norm=norm), clip=tiny_clip())
        got = []
        model.backbone.register_forward_pre_hook(lambda m, a: got.append(a[0].detach().clone()))
        model.eval()(x[None])
        torch.testing.assert_close(got[0], A.renormalize(x[None], norm).contiguous(memory_format=torch.channels_last))


def test_test_scale_is_mmcvs_keep_ratio_rescale():
    img = np.zeros((720, 1280, 3), np.uint8)
    out, _, s = A.resize_to_scale(img, [], (4068, 1024))  # the official IC15 test scale
    assert out.shape[:2] == (1024, 1820) and s == pytest.approx(1024 / 720)
    assert A.resize_to_scale(img, [], 640)[0].shape[:2] == (360, 640)  # an int is the long side, as before
    tall = np.zeros((1600, 400, 3), np.uint8)
    assert A.resize_to_scale(tall, [], (1000, 800))[0].shape[:2] == (1000, 250)  # the long side binds


def test_official_db_decoding():
    """mask_thr 0.28, approxPolyDP(0.001 x perimeter) candidates unclipped by 1.6, quads out."""
    prob = np.zeros((64, 96), np.float32)
    prob[20:36, 10:70] = 0.9
    prob[5:12, 80:90] = 0.27  # below mask_thr 0.28: not text
    dets = full().head.postprocess(prob)
    assert len(dets) == 1 and dets[0][0].shape == (4, 2) and dets[0][1] == pytest.approx(0.9, abs=1e-6)
    word = dets[0][0]
    w, h = word[:, 0].max() - word[:, 0].min(), word[:, 1].max() - word[:, 1].min()
    d = (59 * 15) * 1.6 / (2 * (59 + 15))  # unclip distance of the contour through the pixel centres
    assert w == pytest.approx(59 + 2 * d, abs=1.0) and h == pytest.approx(15 + 2 * d, abs=1.0)
    kit = DBPostprocess(thresh=0.25, box_thresh=0.2)(prob)  # the kit's decoding finds the 0.27 region
    assert len(kit) == 2


# ------------------------------------------------------------------------------------------------ protocol

def test_authors_protocol_is_reported_beside_the_kits_and_trains_the_same(tmp_path):
    kit = TrainConfig.for_profile("smoke", optim=dict(batch_size=4, steps=4))
    authors = kit.updated(evaluation=dict(protocol="authors", every_epochs=1))
    res_kit = T.train(kit, tmp_path / "kit", progress=False)
    res = T.train(authors, tmp_path / "authors", progress=False)
    a = torch.load(tmp_path / "kit" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "authors" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the test-set evaluations changed nothing in the training
    assert "authors_protocol" not in res_kit
    ap = res["authors_protocol"]
    assert "test split" in ap["protocol"] and ap["every_steps"] == 2  # 8 images / 4 per step = 2 steps per epoch
    assert [e["step"] for e in ap["evaluations"]] == [2, 4]
    assert ap["best"]["hmean"] == max(e["hmean"] for e in ap["evaluations"])
    assert all(e["box_thresh"] in authors.evaluation.box_thresholds for e in ap["evaluations"])
    assert (tmp_path / "authors" / "best_test.pt").exists()
    assert {k: res[k] for k in ("precision", "recall", "hmean", "box_thresh")} == \
        {k: res_kit[k] for k in ("precision", "recall", "hmean", "box_thresh")}  # the kit's figure unchanged
    assert math.isfinite(ap["best"]["epoch"])
