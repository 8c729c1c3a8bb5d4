"""tcm_kit.pretrain + tcm_kit.probe: configs, the contrastive loss, determinism, resume, checkpoints by path, the prior."""
import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from tcm_kit import clip, pretrain, probe
from tcm_kit.clip import ClipWeightsError
from tcm_kit.pretrain import PretrainConfig, PretrainError
from tcm_kit.utils import config_hash

TINY = dict(steps=4, batch_size=8, sizes=(64,), warmup_steps=1)  # seconds: for determinism and resume


def _weights(path):
    sd, kit = clip.load_state_dict_file(path)
    return sd, kit


def test_profiles_and_config_validation():
    cfgs = {p: PretrainConfig.for_profile(p) for p in ("smoke", "cpu", "full")}
    assert len({config_hash(c) for c in cfgs.values()}) == 3
    assert cfgs["smoke"].steps < cfgs["cpu"].steps < cfgs["full"].steps
    assert PretrainConfig.for_profile("smoke", seed=3).seed == 3
    with pytest.raises(PretrainError, match="profile"):
        PretrainConfig.for_profile("gpu")
    with pytest.raises(PretrainError, match="multiples of 32"):
        PretrainConfig(sizes=(100,))


def test_generic_text_captions_are_one_class_in_the_loss():
    caps = ["text", "printed text", "a photo of a cat", 'text "OPEN"', "words"]
    keys = pretrain.positive_keys(PretrainConfig(profile="smoke"), caps)
    assert keys[0] == keys[1] == keys[4] and len(set(keys)) == 3  # the generic ones share one key
    assert keys[2:4] == caps[2:4]  # the rest keep their own caption
    assert pretrain.positive_keys(PretrainConfig(profile="smoke", generic_positives=False), caps) == caps
    # the loss sees the three generic captions as positives of each other's images
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    img = torch.stack([e0, e0, e1])
    txt = torch.stack([e0 + 0.3 * e1, e0, e1])  # image 0 ("text") is nearest to caption 1 ("words")
    scale = torch.tensor(math.log(50.0))
    caps = ["text", "words", "a cat"]
    _, acc = pretrain.clip_loss(img, txt, scale, pretrain.positive_keys(PretrainConfig(), caps))
    _, acc_split = pretrain.clip_loss(img, txt, scale, caps)
    assert acc.item() == 1.0 and acc_split.item() == pytest.approx(2 / 3)


def test_clip_loss_counts_identical_captions_as_positives():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    img = torch.stack([e0, e0, e1])  # images 0 and 1 look the same ...
    txt = torch.stack([e0, e0 + 0.3 * e1, e1])  # ... and image 1 is closer to caption 0 than to its own
    scale = torch.tensor(math.log(50.0))
    same = ["a cat", "a cat", 'text "OPEN"']
    loss, acc = pretrain.clip_loss(img, txt, scale, same)
    assert acc.item() == 1.0  # retrieving the other "a cat" caption is right
    _, acc_distinct = pretrain.clip_loss(img, txt, scale, ["a cat", "a dog", 'text "OPEN"'])
    assert acc_distinct.item() == pytest.approx(2 / 3)
    # soft targets: each row spreads its target evenly over the captions equal to its own
    logits = 50.0 * torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    target = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    want = (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_scene_batches_are_deterministic_and_one_size_each():
    cfg = PretrainConfig.for_profile("smoke", batch_size=4, sizes=(64, 96))
    a, caps_a = pretrain.scene_batch(cfg, 5)
    b, caps_b = pretrain.scene_batch(cfg, 5)
    assert torch.equal(a, b) and caps_a == caps_b
    assert a.shape[0] == 4 and a.shape[-1] == a.shape[-2] and a.shape[-1] in (64, 96)
    assert {pretrain.batch_image_size(cfg, s) for s in range(40)} == {64, 96}
    assert -3 < a.min() < a.max() < 3  # normalised with CLIP mean/std


def test_generic_captions_replace_only_text_scene_captions():
    cfg = PretrainConfig.for_profile("smoke", batch_size=12, sizes=(64,), generic_caption_p=1.0,
                                     scene_scale=(1.0, 1.0))  # whole scenes: the same draws as scene_source
    _, captions = pretrain.scene_batch(cfg, 0)
    for j, caption in enumerate(captions):
        _, original, instances = pretrain.scene_source(cfg.seed, j, 64)
        assert caption == (caption if instances else original)
        assert (caption in pretrain.GENERIC_TEXT_CAPTIONS) == bool(instances)
    _, plain = pretrain.scene_batch(dataclasses.replace(cfg, generic_caption_p=0.0), 0)
    assert plain == [pretrain.scene_source(cfg.seed, j, 64)[1] for j in range(12)]


def test_pretrain_is_deterministic_resumable_and_returns_when_finished(tmp_path, monkeypatch):
    cfg = PretrainConfig.for_profile("smoke", **TINY)
    a = pretrain.pretrain(cfg, tmp_path / "a.pt", progress=False, workers=2)
    # the same run split in two parts (stopped after 2 steps, then resumed), data made in-process
    b = tmp_path / "b.pt"
    pretrain.pretrain(cfg, b, progress=False, workers=0, stop_after=2)
    assert not b.exists() and (tmp_path / "b" / "state.pt").exists()
    pretrain.pretrain(cfg, b, progress=False, workers=0)
    sd_a, kit_a = _weights(a)
    sd_b, kit_b = _weights(b)
    assert kit_a["config_hash"] == config_hash(cfg) == kit_b["config_hash"]
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not (tmp_path / "b" / "state.pt").exists()  # the resume state is dropped once finished
    log = pretrain.read_log(b)
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    assert all(np.isfinite(r["loss"]) and 0 <= r["acc"] <= 1 for r in log)
    assert kit_b["log"] == log

    def boom(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(pretrain, "_run", boom)
    assert pretrain.pretrain(cfg, a, progress=False) == a
    monkeypatch.undo()

    other = pretrain.pretrain(PretrainConfig.for_profile("smoke", **{**TINY, "steps": 2, "seed": 1}),
                              tmp_path / "c.pt", progress=False, workers=0)
    sd_c, _ = _weights(other)
    assert not all(torch.equal(sd_a[k], sd_c[k]) for k in sd_a)


def test_bf16_pretraining_is_deterministic_and_keeps_fp32_weights(tmp_path, monkeypatch):
    from tcm_kit import precision

    cfg = PretrainConfig.for_profile("smoke", **TINY)
    monkeypatch.setenv("TCM_KIT_PRECISION", "fp32")  # whatever the host has
    f = pretrain.pretrain(cfg, tmp_path / "f.pt", progress=False, workers=0)
    monkeypatch.setenv("TCM_KIT_PRECISION", "auto")
    monkeypatch.setattr(precision, "_native_cpu_bf16", lambda: True)  # a CPU with native bf16 decides bf16
    a = pretrain.pretrain(cfg, tmp_path / "a.pt", progress=False, workers=0)
    b = pretrain.pretrain(cfg, tmp_path / "b.pt", progress=False, workers=0)
    (sd_a, kit_a), (sd_b, _), (sd_f, kit_f) = _weights(a), _weights(b), _weights(f)
    assert (kit_a["amp"], kit_f["amp"]) == ("bf16", "fp32")  # the record says which ran
    assert kit_a["config_hash"] == kit_f["config_hash"]  # precision is not part of the config
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert {v.dtype for v in sd_a.values() if v.is_floating_point()} == {torch.float32}
    moved = [k for k in sd_a if sd_a[k].is_floating_point() and not torch.equal(sd_a[k], sd_f[k])]
    assert moved  # the autocast really changed the arithmetic
    assert all(np.isfinite(r["loss"]) for r in kit_a["log"])


def test_a_work_dir_of_another_run_is_refused(tmp_path):
    cfg = PretrainConfig.for_profile("smoke", **TINY)
    (tmp_path / "x").mkdir()
    torch.save({"config_hash": "0123456789ab"}, tmp_path / "x" / "state.pt")
    with pytest.raises(PretrainError, match="another pre-training run"):
        pretrain.pretrain(cfg, tmp_path / "x.pt", progress=False, workers=0)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcm_data")
    old = os.environ.get("TCM_KIT_DATA")
    os.environ["TCM_KIT_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("TCM_KIT_DATA")
    else:
        os.environ["TCM_KIT_DATA"] = old


@pytest.fixture(scope="module")
def smoke_checkpoint(data_root):
    return pretrain.pretrain(PretrainConfig.for_profile("smoke"), pretrain.checkpoint_path("smoke"), progress=False)


def test_a_pretraining_checkpoint_loads_by_path_and_is_reused(data_root, smoke_checkpoint, monkeypatch):
    path = pretrain.checkpoint_path("smoke")
    assert path == smoke_checkpoint == data_root / "clip" / f"{config_hash(PretrainConfig.for_profile('smoke'))}.pt"
    assert (path.parent / path.stem / "log.csv").exists()
    model, _, tok = clip.load_clip(path)
    monkeypatch.setattr(pretrain, "_run", lambda *a, **k: pytest.fail("a finished run must be reused"))
    assert pretrain.pretrain(PretrainConfig.for_profile("smoke"), path, progress=False) == path
    again, _, _ = clip.load_clip(path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    assert tok(["text"]).shape == (1, again.context_length)


def test_a_truncated_checkpoint_is_refused_by_name(tmp_path, smoke_checkpoint):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(smoke_checkpoint.read_bytes()[:1000])
    with pytest.raises(ClipWeightsError, match="cannot read") as e:
        clip.load_clip(bad)
    assert str(bad) in str(e.value)


def test_probe_scenes_are_deterministic_and_annotated():
    a = probe.draw_probe_scene(7, 3, 128, with_text=True)
    b = probe.draw_probe_scene(7, 3, 128, with_text=True)
    assert np.array_equal(a.image, b.image) and a.caption == b.caption
    assert a.image.shape == (128, 128, 3) and a.image.dtype == np.uint8
    assert a.has_text and len(a.boxes) == len(a.words) >= 1 and "text" in a.caption
    cover = probe.cell_coverage(a.boxes, 128)
    assert cover.shape == (4, 4) and cover.max() > 0
    free = probe.draw_probe_scene(7, 4, 128, with_text=False)
    assert not free.has_text and free.boxes == [] and probe.cell_coverage(free.boxes, 128).max() == 0


def test_roc_auc():
    assert probe.roc_auc([2, 3], [0, 1]) == 1.0
    assert probe.roc_auc([0, 1], [2, 3]) == 0.0
    assert probe.roc_auc([1, 1], [1, 1]) == 0.5
    assert math.isnan(probe.roc_auc([], [1]))


def test_smoke_prior_beats_random_init(smoke_checkpoint):
    """On held-out captioned scenes (another seed) the smoke model matches images to captions far above a random
    network. (80 steps are too few to carry to the independent probe scenes: evaluate_prior is only run here;
    its cpu-profile figures are the proof of the prior, reported by notebook 00.)"""
    cfg = PretrainConfig.for_profile("smoke")
    smoke_model = clip.load_clip(smoke_checkpoint)[0]
    random_model = clip.create_clip(clip.EMBEDDED_MODEL_NAME, seed=0)
    got = pretrain.evaluate_contrastive(smoke_model, cfg, batches=8)
    base = pretrain.evaluate_contrastive(random_model, cfg, batches=8)
    assert got["loss"] < base["loss"] - 0.3 and got["loss"] < got["chance_loss"]
    # chance counts the generic text captions as one class (generic_positives), so it is high (about 0.11)
    assert got["acc"] > base["acc"] + 0.05 and got["acc"] > 1.5 * got["chance_acc"]

    prior = pretrain.evaluate_prior(smoke_model, n=16, size=96, seed=11)
    assert set(prior) >= {"image_auc", "dense_auc", "retrieval_top1", "chance"}
    assert all(0 <= prior[k] <= 1 for k in ("image_auc", "dense_auc", "retrieval_top1", "chance"))
    assert prior["n_pos_cells"] > 0 and prior["n_neg_cells"] > 0


def test_caption_crop_keeps_the_quoted_words_whole():
    from tcm_kit.data.formats import Instance

    sale = np.array([[150, 40], [210, 40], [210, 60], [150, 60]], np.float32)
    words = [Instance(sale, "SALE", False),
             Instance(np.array([[10, 200], [60, 200], [60, 220], [10, 220]], np.float32), "OPEN", False)]
    sides = set()
    for seed in range(30):
        x, y, side = pretrain.caption_crop_box(256, 256, 'text "SALE" on a sign', words, 64,
                                               np.random.default_rng(seed))
        assert 64 <= side <= 256 and 0 <= x <= 256 - side and 0 <= y <= 256 - side
        assert x <= 150 and 210 <= x + side and y <= 40 and 60 <= y + side, (seed, x, y, side)  # SALE inside
        sides.add(side)
    assert len(sides) > 5  # scale varies
    image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    crop = pretrain.caption_crop(image, "a photo of a wall", [], 64, np.random.default_rng(0))
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    with pytest.raises(pretrain.PretrainError, match="scene_scale"):
        PretrainConfig(scene_scale=(0.5, 2.0))


def test_a_second_stage_starts_from_its_init_and_keeps_both_stages_record(tmp_path, monkeypatch):
    monkeypatch.setenv("TCM_KIT_DATA", str(tmp_path / "data"))
    stage1 = PretrainConfig.for_profile("smoke", **TINY)
    stage2 = PretrainConfig.for_profile("smoke", **{**TINY, "steps": 2, "seed": 1}, init=stage1)
    assert config_hash(stage2) != config_hash(dataclasses.replace(stage2, init=None))
    out = pretrain.pretrain(stage2, tmp_path / "s2.pt", progress=False, workers=0)
    base = pretrain.checkpoint_path(stage1)
    assert base.exists()  # stage 1 was trained first, where its own profile would write it
    sd1, kit1 = _weights(base)
    sd2, kit2 = _weights(out)
    assert kit2["steps"] == kit1["steps"] + 2 and kit2["wall_time_s"] > kit1["wall_time_s"]
    assert [r["step"] for r in kit2["log"]] == list(range(kit1["steps"] + 2))
    assert kit2["log"][:kit1["steps"]] == kit1["log"]
    assert kit2["git_commit"] == kit1["git_commit"]  # one commit ran both stages
    # stage 2 trained on from stage 1's weights: the same from stage 1 loaded by hand, not from a fresh init
    torch.manual_seed(stage2.seed)
    scratch = pretrain.pretrain(dataclasses.replace(stage2, init=None), tmp_path / "scratch.pt", progress=False,
                                workers=0)
    sd_s, _ = _weights(scratch)
    assert not all(torch.equal(sd2[k], sd_s[k]) for k in sd2)
    with pytest.raises(PretrainError, match="init"):
        PretrainConfig.for_profile("smoke", init="release-base")


def test_the_release_recipe_is_three_stages_from_release_base_with_growing_inputs():
    rel = PretrainConfig.for_profile("release")
    stage2 = rel.init
    assert stage2.init == PretrainConfig.for_profile("release-base")
    assert max(rel.sizes) > max(stage2.sizes) > max(stage2.init.sizes)
    assert stage2.scene_scale[1] > stage2.init.scene_scale[1]
    assert len({rel.seed, stage2.seed, stage2.init.seed}) == 3  # each stage sees other scenes
    assert config_hash(rel) == clip.released_clip_info()["config_hash"]  # the recipe of the shipped weights
