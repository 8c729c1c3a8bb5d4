"""tcm_kit.clip: model registry, checkpoint loading (RN50 layouts, strictness, errors), dense features, text path."""
import warnings

import open_clip
import pytest
import torch
from PIL import Image

from tcm_kit import clip
from tcm_kit.clip import ClipInputError, ClipWeightsError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return clip.create_clip(clip.EMBEDDED_MODEL_NAME, seed=0).eval()


@pytest.fixture(scope="module")
def rn50_sd():
    """RN50's exact keys and shapes with random values that a fresh init would not give (BN stats included)."""
    model = clip.create_clip("RN50-quickgelu", seed=1)
    g = torch.Generator().manual_seed(2)
    sd = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            v = v + 0.01 * torch.randn(v.shape, generator=g) + (1.0 if k.endswith("running_var") else 0.0)
        else:
            v = v + 3  # num_batches_tracked
        sd[k] = v
    return sd


def _assert_same(model, sd):
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k


def test_embedded_config_is_registered_with_open_clip():
    assert clip.EMBEDDED_MODEL_NAME in open_clip.list_models()
    m = open_clip.create_model(clip.EMBEDDED_MODEL_NAME)  # the same code path as create_model("RN50")
    assert type(m).__name__ == "CLIP" and type(m.visual).__name__ == "ModifiedResNet"
    assert m.visual.attnpool.positional_embedding.shape == (7 * 7 + 1, 1024)
    assert sum(p.numel() for p in m.parameters()) < 20e6


def test_preprocess_uses_openai_clip_normalisation():
    pre = clip.build_preprocess(224)
    x = pre(Image.new("RGB", (300, 260), (255, 0, 128)))
    assert x.shape == (3, 224, 224)
    want = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(clip.CLIP_MEAN)) / torch.tensor(clip.CLIP_STD)
    assert torch.allclose(x[:, 100, 100], want, atol=1e-2)


def test_global_feat_equals_encode_image_at_native_size(tiny):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        f = clip.dense_features(tiny, x)
        ref = tiny.encode_image(x)
    assert torch.allclose(f.global_feat, ref, atol=1e-5)  # only the mean token's query: same values, other op order
    assert [s.shape[1:] for s in f.stages] == [(128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)]
    assert f.visual_embeddings.shape == (2, 128, 7, 7)


@pytest.mark.parametrize("hw", [(64, 64), (96, 96), (256, 256), (64, 160)])
def test_dense_feature_shapes_at_any_multiple_of_32(tiny, hw):
    h, w = hw
    with torch.no_grad():
        f = clip.dense_features(tiny, torch.randn(1, 3, h, w))
    assert [tuple(s.shape[-2:]) for s in f.stages] == [(h // s, w // s) for s in (4, 8, 16, 32)]
    assert f.visual_embeddings.shape == (1, 128, h // 32, w // 32)
    assert f.global_feat.shape == (1, 128) and torch.isfinite(f.global_feat).all()


def test_dense_features_rejects_bad_input(tiny):
    with pytest.raises(ClipInputError, match="divisible by 32"):
        clip.dense_features(tiny, torch.randn(1, 3, 100, 96))
    with pytest.raises(ClipInputError):
        clip.dense_features(tiny, torch.randn(3, 64, 64))


def test_dense_cells_are_value_then_output_projection(tiny):
    """With identical tokens the attention is uniform, so the pooled output equals every dense cell."""
    pool = tiny.visual.attnpool
    x = torch.randn(1, 1024, 1, 1).expand(2, 1024, 3, 5).contiguous()
    saved = pool.positional_embedding.data.clone()
    try:
        pool.positional_embedding.data.zero_()
        with torch.no_grad():
            dense, glob = clip.attnpool_dense(pool, x)
            direct = pool.c_proj(pool.v_proj(x[:, :, 0, 0]))  # (B, D)
    finally:
        pool.positional_embedding.data.copy_(saved)
    assert dense.shape == (2, 128, 3, 5)
    assert torch.allclose(dense, glob[:, :, None, None].expand_as(dense), atol=1e-5)
    assert torch.allclose(glob, direct, atol=1e-5)


def test_pos_embed_interpolation():
    pos = torch.randn(1 + 7 * 7, 16)
    assert clip.interpolate_pos_embed(pos, 7, 7) is pos
    out = clip.interpolate_pos_embed(pos, 3, 10)
    assert out.shape == (1 + 30, 16) and torch.equal(out[0], pos[0])
    const = torch.ones(1 + 49, 4)  # a constant grid stays constant under bicubic resizing
    assert torch.allclose(clip.interpolate_pos_embed(const, 12, 12), torch.ones(1 + 144, 4), atol=1e-5)


def test_encode_text_from_embeddings_equals_encode_text(tiny):
    tok = open_clip.get_tokenizer(clip.EMBEDDED_MODEL_NAME)(["a photo of text", "text", "a sign that says OPEN"])
    with torch.no_grad():
        ref = tiny.encode_text(tok)
        emb = tiny.token_embedding(tok)  # (B, L, D)
        out = clip.encode_text_from_embeddings(tiny, emb, clip.eot_index(tok))
        # causal: tokens after the end-of-text do not matter, so a shorter sequence gives the same output
        short = clip.encode_text_from_embeddings(tiny, emb[:, :12], clip.eot_index(tok))
    assert out.shape == (3, 128)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(short, ref, atol=1e-5)
    with pytest.raises(ClipInputError):
        clip.encode_text_from_embeddings(tiny, torch.zeros(1, 40, 128), torch.zeros(1, dtype=torch.long))


def test_load_rn50_plain_state_dict_open_clip_layout(tmp_path, rn50_sd):
    path = tmp_path / "rn50.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in rn50_sd.items()}}, path)
    model, preprocess, tokenizer = clip.load_clip(path)
    assert model.tcm_model_name == "RN50-quickgelu" and not model.training
    _assert_same(model, rn50_sd)
    assert preprocess(Image.new("RGB", (64, 64))).shape == (3, 224, 224)
    assert tokenizer(["text"]).shape == (1, 77)


def test_load_rn50_openai_torchscript_archive(tmp_path, rn50_sd):
    """An archive laid out like OpenAI's RN50.pt: TorchScript, fp16 weights, metadata buffers."""
    src = clip.create_clip("RN50-quickgelu")
    src.load_state_dict(rn50_sd)
    src = src.half()

    class Archive(torch.nn.Module):
        def forward(self, ids):
            return self.token_embedding(ids)

    arch = Archive()
    for name, mod in src.named_children():
        setattr(arch, name, mod)
    for name, p in src.named_parameters(recurse=False):
        arch.register_parameter(name, p)
    for k, v in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        arch.register_buffer(k, torch.tensor(v))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(arch, torch.zeros(1, 3, dtype=torch.long), check_trace=False)
        path = tmp_path / "RN50.pt"
        torch.jit.save(traced, path)
    model, _, _ = clip.load_clip(path)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in rn50_sd.items()}
    got = model.state_dict()
    assert set(got) == set(half)
    for k, v in half.items():
        assert torch.equal(got[k].to(v.dtype), v), k


def test_strict_loading_lists_missing_unexpected_and_mismatched_keys(tmp_path, tiny):
    sd = dict(tiny.state_dict())
    sd.pop("visual.layer2.0.conv1.weight")
    sd["visual.extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(ClipWeightsError) as e:
        clip.load_clip(path)
    msg = str(e.value)
    assert "visual.layer2.0.conv1.weight" in msg and "visual.extra.weight" in msg and str(path) in msg

    sd = dict(tiny.state_dict())
    sd["visual.attnpool.v_proj.bias"] = torch.zeros(7)
    torch.save(sd, path)
    with pytest.raises(ClipWeightsError, match="visual.attnpool.v_proj.bias"):
        clip.load_clip(path)


def test_tiny_state_dict_round_trips_by_architecture(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.state_dict(), path)
    model, _, tok = clip.load_clip(path)
    assert model.tcm_model_name == clip.EMBEDDED_MODEL_NAME
    _assert_same(model, tiny.state_dict())
    assert tok(["x"]).shape == (1, 32)


def test_missing_and_corrupt_checkpoints_give_one_clear_error(tmp_path):
    missing = tmp_path / "nope" / "RN50.pt"
    with pytest.raises(ClipWeightsError, match="not found") as e:
        clip.load_clip(missing)
    assert str(missing) in str(e.value) and "TorchScript" in str(e.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ClipWeightsError, match="cannot read") as e:
        clip.load_clip(corrupt)
    assert str(corrupt) in str(e.value)
    not_clip = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, not_clip)
    with pytest.raises(ClipWeightsError, match="ModifiedResNet"):
        clip.load_clip(not_clip)
    with pytest.raises(ClipWeightsError):
        clip.load_clip(3)


def test_openai_without_internet_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setattr(clip, "_reachable", lambda hosts, timeout: False)
    monkeypatch.setattr(clip, "_cached_openai_rn50", lambda: None)
    with pytest.raises(ClipWeightsError, match=r"clip_weights='/path/to/RN50.pt'"):
        clip.load_clip("openai")


def _rn50_shaped_pool():
    """An attention pool with RN50's shapes (2048 channels, 32 heads, 1024 out, 7x7 grid), random weights."""
    import open_clip.modified_resnet as mr

    torch.manual_seed(0)
    return mr.AttentionPool2d(7, 2048, 32, 1024).eval()


@pytest.mark.parametrize("hw", [(7, 7), (4, 6)])
def test_full_dense_attention_equals_multi_head_attention_over_all_tokens(hw):
    """The authors' AttentionPool2d.forward (ocrclip/ocrclip/models.py:81-115): all tokens attend to all."""
    import torch.nn.functional as F

    pool = _rn50_shaped_pool()
    h, w = hw
    x = torch.randn(2, 2048, h, w)
    with torch.no_grad():
        dense, glob = clip.attnpool_full(pool, x, pos_mode="bilinear")
        t = x.flatten(2).permute(2, 0, 1)  # (hw, B, C)
        t = torch.cat([t.mean(0, keepdim=True), t])  # (1+hw, B, C)
        pos = pool.positional_embedding
        grid = F.interpolate(pos[1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2), size=(h, w), mode="bilinear")
        t = t + torch.cat([pos[:1], grid.reshape(2048, h * w).T])[:, None]
        ref, _ = F.multi_head_attention_forward(
            t, t, t, 2048, 32, None, torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None,
            False, 0.0, pool.c_proj.weight, pool.c_proj.bias, use_separate_proj_weight=True,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
            need_weights=False)  # (1+hw, B, 1024)
    assert dense.shape == (2, 1024, h, w)
    assert torch.allclose(glob, ref[0], atol=1e-4)
    assert torch.allclose(dense, ref[1:].permute(1, 2, 0).reshape(2, 1024, h, w), atol=1e-4)
    # the pixels' outputs mix: they differ from the value path's per-pixel projection
    value, _ = clip.attnpool_dense(pool, x, pos_mode="bilinear")
    assert not torch.allclose(dense, value, atol=1e-3)


def test_full_attention_global_feature_equals_open_clip_encode_image(tiny):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        f = clip.dense_features(tiny, x, attention="full")
        ref = tiny.encode_image(x)
    assert torch.allclose(f.global_feat, ref, atol=1e-5)
    assert f.visual_embeddings.shape == (2, 128, 7, 7)
    with pytest.raises(ClipInputError, match="attention"):
        clip.dense_features(tiny, x, attention="mask")


def test_value_path_at_inference_folds_its_projections_and_follows_weight_updates(tiny):
    pool = tiny.visual.attnpool
    x = torch.randn(2, 1024, 3, 4)
    train_dense, train_glob = clip.attnpool_dense(pool, x)  # grad enabled: v_proj then c_proj
    with torch.no_grad():
        dense, glob = clip.attnpool_dense(pool, x)  # folded into one projection
        assert torch.allclose(dense, train_dense, atol=1e-4) and torch.equal(glob, train_glob)
        w, _ = clip.folded_value_projection(pool)
        assert w.shape == (128, 1024) and clip.folded_value_projection(pool)[0] is w  # cached
        saved = pool.c_proj.weight.clone()
        try:
            pool.c_proj.weight.mul_(2.0)  # an in-place update (as an optimiser step) refreshes the fold
            assert clip.folded_value_projection(pool)[0] is not w
            moved, _ = clip.attnpool_dense(pool, x)
            with torch.enable_grad():
                ref, _ = clip.attnpool_dense(pool, x)
            assert torch.allclose(moved, ref, atol=1e-4) and not torch.allclose(moved, dense, atol=1e-3)
        finally:
            pool.c_proj.weight.copy_(saved)
    assert "_folded_value_projection" not in dict(tiny.state_dict())
