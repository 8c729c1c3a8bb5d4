"""TCM's prompt side and backbone on a tiny open_clip CLIP (seconds on CPU)."""
import copy

import open_clip
import pytest
import torch

import tcm_kit.prompts as prompts_mod
from tcm_kit.detector import Detector, build_detector
from tcm_kit.prompts import (ContextDecoder, LanguagePromptGenerator, PromptError, PromptLearner,
                             VisualPromptGenerator)
from tcm_kit.tcm import TCM, TEXT_TOWER, Backbone, TCMConfig, TCMConfigError

from tiny import C, D, L, images, targets, tiny_clip  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def clip():
    return tiny_clip().eval()


# ------------------------------------------------------------------------------------------------ prompts

def test_fixed_prompt_equals_clip_encode_text(clip):
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=L)
    pl = PromptLearner(clip, "Text", learnable=False)
    assert pl.ctx is None and pl.eot_idx.tolist() == [2]
    with torch.no_grad():
        ours = pl(clip)  # (1,1,C)
        ref = clip.encode_text(tok(["Text"]))  # (1,C)
    assert ours.shape == (1, 1, C)
    torch.testing.assert_close(ours[0], ref, rtol=1e-5, atol=1e-5)


def test_learnable_prompt_layout_and_shapes(clip):
    pl = PromptLearner(clip, "many arbitrary-shape text instances.", n_ctx=4)
    assert pl.ctx.shape == (4, D) and 0.6 < pl.ctx.std().item() < 1.2  # official: trunc_normal std 1
    assert 0.005 < PromptLearner(clip, "Text", init="prior").ctx.std().item() < 0.05
    with pytest.raises(PromptError, match="init"):
        PromptLearner(clip, "Text", init="zeros")
    x = pl.token_embeddings(clip)  # (1,K,L,D)
    assert x.shape == (1, 1, L, D)
    n_words = int(pl.eot_idx[0]) - 1 - 4
    torch.testing.assert_close(x[0, 0, 1:5], pl.ctx.detach())  # context right after SOT
    sot_eot = clip.token_embedding.weight[[49406, 49407]]
    torch.testing.assert_close(x[0, 0, 0], sot_eot[0])
    torch.testing.assert_close(x[0, 0, 5 + n_words], sot_eot[1])  # EOT after the words
    cue = torch.randn(3, D)
    xc = pl.token_embeddings(clip, cue)  # (3,1,L,D)
    # cc reaches every token, SOT and EOT included (official: ocrclip/ocrclip/models.py:1030-1036)
    torch.testing.assert_close(xc - x, cue[:, None, None, :].expand_as(xc))
    assert pl(clip, cue).shape == (3, 1, C)


def test_prompt_cut_after_eot_equals_full_context(clip):
    # the forward runs only the tokens up to the last EOT; the causal text encoder gives the same embedding
    pl = PromptLearner(clip, ["Text", "a photo of text"], n_ctx=4)
    cue = torch.randn(2, D)
    with torch.no_grad():
        x = pl.token_embeddings(clip, cue)  # (2,K,L,D), the whole context
        full = prompts_mod.encode_text_from_embeddings(clip, x.reshape(4, L, D), pl.eot_idx.repeat(2))
        ours = pl(clip, cue)  # (2,K,C)
    assert int(pl.eot_idx.max()) + 1 < L
    torch.testing.assert_close(ours.reshape(4, C), full, rtol=1e-5, atol=1e-5)


def test_several_prompts_and_bad_prompts(clip):
    pl = PromptLearner(clip, ["Text", "a photo of text"], n_ctx=2)
    assert pl(clip).shape == (1, 2, C) and pl.eot_idx.tolist() == [4, 7]
    with pytest.raises(PromptError):
        PromptLearner(clip, "word " * 12, n_ctx=4)  # does not fit 16 tokens
    with pytest.raises(PromptError):
        PromptLearner(clip, "  ")


def test_generators_shapes_and_gamma_init():
    torch.manual_seed(0)
    assert LanguagePromptGenerator(C, D)(torch.randn(2, C)).shape == (2, D)
    vpg = VisualPromptGenerator(C).eval()
    vis, text = torch.randn(2, C, 3, 4), torch.randn(2, 1, C)
    out = vpg(vis, text)
    assert out.shape == vis.shape and vpg.gamma.shape == () and vpg.gamma.item() == pytest.approx(1e-3)
    assert 0 < (out - vis).abs().max() < 0.1  # a small residual at init
    assert len(vpg.decoder.layers) == 3 and vpg.decoder.layers[0].self_attn.heads == 4
    assert vpg.decoder.layers[0].mlp[0].out_features == 1024
    cd = ContextDecoder(C).eval()
    t = cd(text, torch.randn(2, C), vis)
    assert t.shape == (2, 1, C) and cd.gamma.shape == (C,)
    torch.testing.assert_close(cd.gamma.detach(), torch.full((C,), 1e-3))


# ------------------------------------------------------------------------------------------------ TCM

def test_tcm_forward_shapes(clip):
    tcm = TCM(copy.deepcopy(clip), TCMConfig(context_decoder=True)).train()
    out = tcm(images())
    assert [tuple(f.shape) for f in out.features] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4),
                                                      (2, 513, 2, 2)]
    assert tcm.out_channels == [64, 128, 256, 513] == [f.shape[1] for f in out.features]
    assert out.score_logits.shape == out.score_map.shape == (2, 1, 2, 2)
    cos = out.features[3][:, -1:]  # the raw cosine map concatenated to C5
    assert cos.abs().max() <= 1 + 1e-5
    torch.testing.assert_close(out.score_logits, cos / 0.07)
    torch.testing.assert_close(out.score_map, torch.sigmoid(out.score_logits))


def test_text_encoder_frozen_image_encoder_trained(clip):
    det = build_detector("tcm-dbnet", clip, tcm=TCMConfig(context_decoder=True))
    tcm = det.backbone
    text_params = [p for n in TEXT_TOWER for p in
                   (getattr(tcm.clip, n).parameters() if isinstance(getattr(tcm.clip, n), torch.nn.Module)
                    else [getattr(tcm.clip, n)])]
    assert text_params and not any(p.requires_grad for p in text_params)
    det.train()
    assert not tcm.clip.transformer.training and tcm.clip.visual.training
    text_before = [p.detach().clone() for p in text_params]
    vis_before = [p.detach().clone() for p in tcm.clip.visual.parameters()]
    opt = torch.optim.Adam([p for p in det.parameters() if p.requires_grad], lr=1e-3)
    loss = det.loss(det(images()), targets())["loss"]
    loss.backward()
    assert all(p.grad is None for p in text_params)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(text_before, text_params))
    changed = [not torch.equal(a, b) for a, b in zip(vis_before, tcm.clip.visual.parameters())]
    assert sum(changed) >= 0.9 * len(changed)


def test_gradient_reaches_every_trainable_part(clip):
    torch.manual_seed(0)
    det = build_detector("tcm-dbnet", clip, tcm=TCMConfig(context_decoder=True)).train()
    det.loss(det(images()), targets())["loss"].backward()
    no_grad = [n for n, p in det.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    # with K = 1 prompt, cross-attention over a single text token has constant weights, so the norm that only
    # feeds the VPG's cross-attention queries gets no gradient (true of TCM's design, not a wiring bug)
    assert [n for n in no_grad if ".ln_2." not in n] == []
    assert all(n.startswith("backbone.vpg.") for n in no_grad)
    named = dict(det.named_parameters())
    for key in ("backbone.prompt_learner.ctx", "backbone.vpg.gamma", "backbone.context_decoder.gamma",
                "backbone.lpg.net.1.weight", "backbone.clip.visual.conv1.weight", "head.neck.laterals.3.weight",
                "head.maps.prob.0.weight", "head.maps.thresh.0.weight"):
        assert named[key].grad is not None and named[key].grad.abs().sum() > 0, key


@pytest.mark.parametrize("flags", [dict(language_prompt=False), dict(visual_prompt=False, learnable_prompt=False),
                                   dict(language_prompt=False, context_decoder=False, dense_attention="value"),
                                   dict(prompt_query="learned"), dict(prompt_init="prior")])
def test_no_unused_trainable_parameters(clip, flags):
    det = build_detector("tcm-dbnet", clip, tcm=TCMConfig(**flags)).train()
    det.loss(det(images()), targets())["loss"].backward()
    assert [n for n, p in det.named_parameters() if p.requires_grad and p.grad is None] == []


def test_flags_remove_modules_and_all_off_matches_baseline(clip):
    def names(m):
        return {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}

    full = TCM(copy.deepcopy(clip), TCMConfig(context_decoder=True))
    assert {"prompt_learner", "lpg", "vpg", "context_decoder"} <= names(full)
    assert TCM(copy.deepcopy(clip), TCMConfig(learnable_prompt=False)).prompt_learner.ctx is None
    assert "lpg" not in names(TCM(copy.deepcopy(clip), TCMConfig(language_prompt=False)))
    assert "vpg" not in names(TCM(copy.deepcopy(clip), TCMConfig(visual_prompt=False)))
    assert "context_decoder" in names(TCM(copy.deepcopy(clip)))  # on by default, as in every official config
    assert "context_decoder" not in names(TCM(copy.deepcopy(clip), TCMConfig(context_decoder=False)))
    off = TCM(copy.deepcopy(clip), TCMConfig(learnable_prompt=False, language_prompt=False, visual_prompt=False,
                                             context_decoder=False, score_map=False, dense_attention="value"))
    assert names(off) == {"clip"}  # only the image encoder trains
    base = Backbone(copy.deepcopy(clip))
    assert off.out_channels == base.out_channels
    x = images()
    assert [f.shape for f in off(x).features] == [f.shape for f in base(x).features]
    with pytest.raises(TCMConfigError):
        TCMConfig(aux_loss="focal")


def test_text_cache_when_prompt_is_image_independent(clip, monkeypatch):
    calls = []
    real = prompts_mod.encode_text_from_embeddings

    def counting(*a, **k):
        calls.append(a[1].shape[0])
        return real(*a, **k)

    monkeypatch.setattr(prompts_mod, "encode_text_from_embeddings", counting)
    tcm = TCM(copy.deepcopy(clip), TCMConfig(language_prompt=False)).eval()
    with torch.no_grad():
        a, b = tcm(images(seed=1)), tcm(images(seed=2))  # the context decoder runs per image on the cached prompt
    assert calls == [1]  # once, for one prompt, across two forwards of 2 images
    tcm.train()
    tcm(images())
    assert calls == [1, 1]  # cache dropped on train(); computed once per batch, not per image
    tcm.eval()
    with torch.no_grad():
        tcm(images())
        torch.testing.assert_close(tcm._text_cache, tcm.prompt_learner(tcm.clip))  # the cache holds the prompt
    calls.clear()
    tcm_lpg = TCM(copy.deepcopy(clip)).eval()
    with torch.no_grad():
        tcm_lpg(images()), tcm_lpg(images())
    assert calls == [2, 2]  # image-conditioned prompt: per image, every forward


def test_aux_loss_modes(clip):
    t = targets()
    tcm = TCM(copy.deepcopy(clip))
    out = tcm(images())
    ohem = tcm.aux_loss(out, t["prob"], t["prob_mask"])
    assert ohem.ndim == 0 and torch.isfinite(ohem) and ohem > 0
    bce = TCM(copy.deepcopy(clip), TCMConfig(aux_loss="bce", aux_weight=2.0))
    o2 = bce(images())
    soft = bce.aux_loss(o2, t["prob"], t["prob_mask"])
    assert torch.isfinite(soft) and soft > 0
    # the paper's form: λ · plain BCE at stride 32 against the fraction of shrunk-text pixels per cell, over the
    # cells without a don't-care pixel (computed here by hand on the 2x2 grid of the 64 px images)
    B, H, W = t["prob"].shape
    frac = t["prob"].reshape(B, H // 32, 32, W // 32, 32).mean((2, 4))  # (B,2,2)
    cells = t["prob_mask"].reshape(B, H // 32, 32, W // 32, 32).amin((2, 4))
    assert 0 < frac.max() < 1 and cells.sum() > 0  # soft targets on counted cells
    per_cell = torch.nn.functional.binary_cross_entropy_with_logits(o2.score_logits[:, 0].detach(), frac,
                                                                    reduction="none")
    torch.testing.assert_close(soft.detach(), 2.0 * (per_cell * cells).sum() / cells.sum(), rtol=1e-4, atol=1e-5)
    none = TCM(copy.deepcopy(clip), TCMConfig(aux_weight=0.0))
    assert none.aux_loss(none(images()), t["prob"], t["prob_mask"]).item() == 0.0


def test_backbone_baselines(clip):
    b = Backbone(copy.deepcopy(clip))
    torch.testing.assert_close(b.stem[0].weight, clip.visual.conv1.weight)
    s = Backbone(clip, scratch=True)
    assert not torch.equal(s.stem[0].weight, clip.visual.conv1.weight)
    assert s.stem[0].weight is not clip.visual.conv1.weight  # the given CLIP is left alone
    assert s.out_channels == [64, 128, 256, 512]
    assert not any("attnpool" in n for n, _ in s.named_parameters())


def test_build_detector_copies_clip(clip):
    det = build_detector("dbnet", clip)
    assert isinstance(det, Detector)
    before = clip.visual.conv1.weight.detach().clone()
    with torch.no_grad():
        det.backbone.stem[0].weight.add_(1.0)
    assert torch.equal(clip.visual.conv1.weight, before)
    tcm_det = build_detector("tcm-dbnet", clip, tcm=TCMConfig(visual_prompt=False, prompt="text"))
    assert tcm_det.backbone.vpg is None and tcm_det.backbone.clip is not clip


def test_learned_query_prompt_is_computed_once_at_inference(clip, monkeypatch):
    """FastTCM's option: a learned query feeds the LPG, so the prompt encoder runs once, then is cached."""
    calls = []
    real = prompts_mod.encode_text_from_embeddings
    monkeypatch.setattr(prompts_mod, "encode_text_from_embeddings",
                        lambda *a, **k: calls.append(a[1].shape[0]) or real(*a, **k))
    tcm = TCM(copy.deepcopy(clip), TCMConfig(prompt_query="learned")).eval()
    assert tcm.image_independent_prompt and tcm.query.shape == (C,)
    with torch.no_grad():
        tcm(images(seed=1)), tcm(images(seed=2))
    assert calls == [1]
    with pytest.raises(TCMConfigError, match="prompt_query"):
        TCMConfig(prompt_query="global")


def test_prior_init_keeps_the_bare_prompt_at_step_zero(clip):
    """prompt_init="prior": cc = 0 at step 0 and the contexts are small, so t is close to encode_text("Text")."""
    tcm = TCM(copy.deepcopy(clip), TCMConfig(prompt_init="prior")).eval()
    off = TCM(copy.deepcopy(clip)).eval()  # official init
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=L)
    with torch.no_grad():
        bare = torch.nn.functional.normalize(clip.encode_text(tok(["Text"])), dim=-1)[0]
        g = torch.randn(3, C)
        assert torch.count_nonzero(tcm.lpg(g)) == 0
        near = torch.nn.functional.normalize(tcm.text_embeddings(g), dim=-1)[:, 0] @ bare
        far = torch.nn.functional.normalize(off.text_embeddings(g), dim=-1)[:, 0] @ bare
    assert near.min() > far.max() + 0.2, (near, far)


def test_decoder_order_follows_the_authors(clip, monkeypatch):
    """The visual prompt sees the text before the context decoder; the decoder sees the pixels before the visual
    prompt; the score map matches the refined text with the prompted pixels (ocrclip.py:256-325)."""
    tcm = TCM(copy.deepcopy(clip)).eval()
    seen = {}
    vpg_fwd, dec_fwd, match = tcm.vpg.forward, tcm.context_decoder.forward, TCM.match

    def vpg(visual, text):
        seen["vpg_text"], seen["vpg_visual"] = text, visual
        seen["prompted"] = vpg_fwd(visual, text)
        return seen["prompted"]

    def dec(text, global_feat, visual):
        seen["dec_text_in"], seen["dec_visual"] = text, visual
        seen["refined"] = dec_fwd(text, global_feat, visual)
        return seen["refined"]

    def matched(visual, text):
        seen["match"] = (visual, text)
        return match(visual, text)

    monkeypatch.setattr(tcm.vpg, "forward", vpg)
    monkeypatch.setattr(tcm.context_decoder, "forward", dec)
    monkeypatch.setattr(TCM, "match", staticmethod(matched))
    with torch.no_grad():
        tcm(images())
    assert seen["vpg_text"] is seen["dec_text_in"]  # both from the prompt encoder's output
    assert seen["dec_visual"] is seen["vpg_visual"]  # I, not Î
    assert seen["match"][0] is seen["prompted"] and seen["match"][1] is seen["refined"]


def test_decoder_layers_as_the_authors():
    """No qkv bias, no dropout on attention weights, memory LN -> Linear -> LN once, trunc_normal 0.02 init."""
    dec = prompts_mod.CrossDecoder(64, width=32, layers=2, heads=4)
    layer = dec.layers[0]
    for attn in (layer.self_attn, layer.cross_attn):
        assert attn.q_proj.bias is None and attn.k_proj.bias is None and attn.v_proj.bias is None
        assert attn.proj.bias is not None
    assert [type(m).__name__ for m in dec.mem_proj] == ["LayerNorm", "Linear", "LayerNorm"]
    assert not any(isinstance(m, torch.nn.LayerNorm) for n, m in layer.named_modules() if "mem" in n)
    assert abs(dec.mem_proj[1].weight.std().item() - 0.02) < 0.004 and dec.mem_proj[1].bias.abs().sum() == 0
    # with one key per query, every attention weight is 1: in train mode the message is never dropped whole
    torch.manual_seed(0)
    attn = prompts_mod.Attention(32, 4, dropout=0.0).train()
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 1, 32)
    torch.testing.assert_close(attn(q, kv), attn.proj(attn.v_proj(kv)).expand(2, 5, 32))


def test_matching_runs_in_fp32_under_autocast():
    torch.manual_seed(0)
    visual, text = torch.randn(1, 16, 2, 3), torch.randn(1, 1, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cos = TCM.match(visual.bfloat16(), text.bfloat16())
    assert cos.dtype == torch.float32
    ref = torch.einsum("bchw,bkc->bkhw", torch.nn.functional.normalize(visual.bfloat16().float(), dim=1),
                       torch.nn.functional.normalize(text.bfloat16().float(), dim=2))
    torch.testing.assert_close(cos, ref)
