"""TCM: CLIP image encoder -> prompts -> instance-language matching score map -> multi-scale features for a head.

Also `Backbone`, the baseline without the language side (CLIP image stages only, or random init for
dbnet-scratch). Both return an object with `.features` (4 maps, strides 4, 8, 16, 32) and have `out_channels`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from tcm_kit.clip import DENSE_ATTENTION, dense_features
from tcm_kit.data.targets import shrink_targets
from tcm_kit.losses import ilm_aux_loss
from tcm_kit.prompts import (PROMPT_INITS, ContextDecoder, LanguagePromptGenerator, PromptLearner,
                             VisualPromptGenerator)

PROMPT_QUERIES = ("image", "learned")
AUX_LOSSES = ("ohem", "bce")

TEXT_TOWER = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection")


class TCMConfigError(ValueError):
    """Inconsistent TCM / backbone options."""


@dataclass(frozen=True)
class TCMConfig:
    """TCM's options (one frozen value: a run's hash covers it whole)."""
    learnable_prompt: bool = True  # CoOp's learnable contexts (False: the bare prompt)
    language_prompt: bool = True  # the language prompt generator's cue cc
    visual_prompt: bool = True  # the visual prompt generator
    context_decoder: bool = True  # the text-side decoder of every official config
    score_map: bool = True  # the cosine map concatenated to the stride-32 features
    prompt: str | tuple = "Text"  # the class prompt(s): one score-map channel each
    n_ctx: int = 4  # learnable context vectors
    tau: float = 0.07  # temperature of the score map P = sigmoid(cos / tau)
    aux_weight: float = 1.0  # λ of L = L_det + λ·L_aux
    aux_loss: str = "ohem"  # "ohem" (the authors' code) | "bce" (the paper's form; see losses.ilm_aux_loss)
    ohem_ratio: float | None = 3.0  # hard negatives per positive in the "ohem" aux loss; None: class-balanced
    decoder_width: int = 256  # visual prompt generator / context decoder width (authors: 256)
    decoder_layers: int = 3
    decoder_heads: int = 4
    decoder_dropout: float = 0.1
    dense_attention: str = "full"  # the attention pool's pixel embeddings: "full" (authors) | "value" (MaskCLIP)
    prompt_init: str = "official"  # "official" (contexts std 1) | "prior" (std 0.02, zero last LPG layer)
    prompt_query: str = "image"  # the LPG's input: "image" (Ī, TCM) | "learned" (FastTCM, prompt cached)

    def __post_init__(self):
        if isinstance(self.prompt, list):
            object.__setattr__(self, "prompt", tuple(self.prompt))
        for name, choices in (("dense_attention", DENSE_ATTENTION), ("prompt_init", PROMPT_INITS),
                              ("prompt_query", PROMPT_QUERIES), ("aux_loss", AUX_LOSSES)):
            if getattr(self, name) not in choices:
                raise TCMConfigError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not self.tau > 0 or self.n_ctx < 0 or self.decoder_width < 1:
            raise TCMConfigError(f"need tau > 0, n_ctx >= 0, decoder_width >= 1; got {self.tau}, {self.n_ctx}, "
                                 f"{self.decoder_width}")


@dataclass
class TCMOutput:
    features: list[torch.Tensor]  # 4 maps (B,C_i,H/s,W/s), s = 4, 8, 16, 32; the last has +K channels if score_map
    score_logits: torch.Tensor | None = None  # (B,K,h,w) cosine/τ
    score_map: torch.Tensor | None = None  # (B,K,h,w) P = sigmoid(score_logits)


@dataclass
class BackboneOutput:
    features: list[torch.Tensor]  # 4 maps, strides 4, 8, 16, 32


def _stage_widths(visual: nn.Module) -> list[int]:
    """Output channels of the ModifiedResNet's 4 stages (the last conv of each stage's last block)."""
    return [layer[-1].conv3.out_channels for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4)]


class Backbone(nn.Module):
    """The CLIP image encoder's 4 stages only (no attention pooling, no language side): the `dbnet` baseline.

    scratch=True re-initialises all weights (Kaiming convs, unit BN) for `dbnet-scratch`; the given CLIP is not
    touched in that case (its visual tower is copied first). Otherwise the modules are shared with `clip`
    (pass a copy, as `build_detector` does, if the CLIP is used elsewhere).
    """

    def __init__(self, clip: nn.Module, scratch: bool = False):
        super().__init__()
        v = copy.deepcopy(clip.visual) if scratch else clip.visual
        if not all(hasattr(v, n) for n in ("layer1", "layer2", "layer3", "layer4", "conv1")):
            raise TCMConfigError("Backbone needs a CLIP with a ModifiedResNet visual tower")
        self.stem = nn.Sequential(v.conv1, v.bn1, v.act1, v.conv2, v.bn2, v.act2, v.conv3, v.bn3, v.act3, v.avgpool)
        self.layers = nn.ModuleList([v.layer1, v.layer2, v.layer3, v.layer4])
        self._out_channels = _stage_widths(v)
        self.scratch = scratch
        if scratch:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()

    @property
    def out_channels(self) -> list[int]:
        return list(self._out_channels)

    def image_encoder(self) -> nn.Module:
        """The CLIP image-encoder modules (the optimiser gives them their own learning rate)."""
        return nn.ModuleList([self.stem, self.layers])

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        x = self.stem(images)  # (B,w,H/4,W/4)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return BackboneOutput(feats)


class TCM(nn.Module):
    """Turning a CLIP model into a scene text detector's backbone (Yu et al., CVPR 2023).

    forward(images (B,3,H,W)) -> TCMOutput, in the order of the authors' `instance_class_matching`
    (ocrclip/ocrclip/ocrclip.py:256-325):
      1. CLIP image encoder, attention pool applied densely (dense_attention="full": all tokens attend to all, as
         the authors; "value": MaskCLIP's value path): stages (strides 4..32), pixel embeddings I (B,C,h,w),
         global feature Ī (B,C).
      2. text embeddings t (B,K,C): prompt [SOT, c_1..c_n, "Text", EOT] through the frozen text encoder, with the
         language prompt generator's cue cc added to every token (language_prompt=True); cc comes from Ī
         (prompt_query="image") or from a learned vector (prompt_query="learned", FastTCM: t is then the same
         for every image and cached at inference).
      3. visual prompt generator (visual_prompt=True): Î = I + γ_v·dec(I, t), from t before step 4.
      4. context decoder (context_decoder=True, text side): t' = t + γ ⊙ dec(t, [Ī; I]), from I before step 3.
      5. cos = <Î/|Î|, t'/|t'|> (B,K,h,w); logits = cos/τ; P = sigmoid(logits).
      6. features = stages, with the raw cosine map concatenated to the stride-32 map when score_map=True
         (as the authors' code: no τ, no sigmoid).
    prompt_init: "official" (contexts std 1, every Linear trunc_normal 0.02) or "prior" (contexts std 0.02 and a
    zero last layer of the language prompt generator: at step 0 the prompt is close to the bare "Text").
    aux_loss(out, prob, prob_mask) is λ·L_aux (see tcm_kit.losses.ilm_aux_loss; "ohem" = the code, "bce" = paper;
    ohem_ratio=None: the "ohem" mode without mining, class-balanced).

    The text tower (transformer, token_embedding, positional_embedding, ln_final, text_projection) is frozen and
    always kept in eval mode; the image encoder (incl. its attention pool) trains, except the attention pool's
    query/key projections on the value path when nothing uses the global feature (no LPG fed Ī, no context
    decoder).
    Every trainable parameter gets a gradient from forward + aux_loss (safe for DDP without unused-parameter
    search), as long as the score map or the aux loss is used.
    When the prompt does not depend on the image (no language prompt generator, or a learned query) the prompt
    encoder's output is computed once per batch (1,K,C) and broadcast; in eval mode it is also cached across
    forwards (the context decoder, when on, still refines it per image).
    The cache is dropped on train()/eval(), load_state_dict() and device/dtype moves.
    """

    def __init__(self, clip: nn.Module, cfg: TCMConfig = TCMConfig(), tokenizer: Callable | None = None):
        super().__init__()
        if not hasattr(clip, "visual") or not hasattr(clip.visual, "attnpool"):
            raise TCMConfigError("TCM needs an open_clip CLIP with a ModifiedResNet visual tower (attention pool)")
        self.clip = clip
        self.cfg = cfg

        proj = clip.text_projection
        C = int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])  # joint embedding width
        D = int(clip.token_embedding.weight.shape[1])  # token width
        self.embed_dim = C
        self._freeze_text_tower()
        self.prompt_learner = PromptLearner(clip, cfg.prompt, n_ctx=cfg.n_ctx, learnable=cfg.learnable_prompt,
                                            tokenizer=tokenizer, init=cfg.prompt_init)
        dec = dict(width=cfg.decoder_width, layers=cfg.decoder_layers, heads=cfg.decoder_heads,
                   dropout=cfg.decoder_dropout)
        self.lpg = LanguagePromptGenerator(C, D, zero_last=cfg.prompt_init == "prior") if cfg.language_prompt else None
        # FastTCM's query in place of Ī (official: meta_query, ocrclip/ocrclip/ocrclip.py:183-185, 268-269)
        self.query = nn.Parameter(torch.randn(C)) if cfg.language_prompt and cfg.prompt_query == "learned" else None
        self.context_decoder = ContextDecoder(C, **dec) if cfg.context_decoder else None
        self.vpg = VisualPromptGenerator(C, **dec) if cfg.visual_prompt else None
        if cfg.dense_attention == "value" and self.image_independent_prompt and self.context_decoder is None:
            # the global feature feeds only the LPG (from Ī) and the context decoder; without them the value path's
            # query/key projections get no gradient: frozen (DDP needs no unused trainable parameters)
            clip.visual.attnpool.q_proj.requires_grad_(False)
            clip.visual.attnpool.k_proj.requires_grad_(False)
        self._stage_channels = _stage_widths(clip.visual)
        self._text_cache: torch.Tensor | None = None

    # --- frozen text tower -------------------------------------------------------------------------------
    def _text_modules(self) -> list[nn.Module]:
        return [getattr(self.clip, n) for n in TEXT_TOWER if isinstance(getattr(self.clip, n, None), nn.Module)]

    def _freeze_text_tower(self) -> None:
        for n in TEXT_TOWER:
            obj = getattr(self.clip, n, None)
            if isinstance(obj, nn.Module):
                obj.requires_grad_(False)
            elif isinstance(obj, nn.Parameter):
                obj.requires_grad_(False)
        for n in ("logit_scale", "logit_bias"):  # unused by TCM: frozen so DDP sees no unused trainable params
            p = getattr(self.clip, n, None)
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "TCM":
        super().train(mode)
        for m in self._text_modules():
            m.eval()
        self._text_cache = None
        return self

    def _apply(self, fn, *args, **kwargs):
        self._text_cache = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._text_cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    # --- interface ---------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.prompt_learner.num_prompts

    @property
    def image_independent_prompt(self) -> bool:
        """True when the prompt encoder's input is the same for every image (no LPG, or a learned query)."""
        return self.lpg is None or self.query is not None

    @property
    def out_channels(self) -> list[int]:
        ch = list(self._stage_channels)
        if self.cfg.score_map:
            ch[3] += self.num_classes
        return ch

    def image_encoder(self) -> nn.Module:
        """The CLIP image encoder (fine-tuned; the optimiser gives it its own learning rate)."""
        return self.clip.visual

    def text_embeddings(self, global_feat: torch.Tensor | None = None) -> torch.Tensor:
        """The prompt encoder's output: (B,K,C) with the LPG fed Ī, else (1,K,C) (cached in eval mode)."""
        if not self.image_independent_prompt:
            return self.prompt_learner(self.clip, self.lpg(global_feat))  # (B,K,C)
        if not self.training and self._text_cache is not None:
            return self._text_cache
        cue = None if self.lpg is None else self.lpg(self.query[None])  # (1,D)
        text = self.prompt_learner(self.clip, cue)  # (1,K,C)
        if not self.training:
            self._text_cache = text.detach()
        return text

    def forward(self, images: torch.Tensor) -> TCMOutput:
        dense = dense_features(self.clip, images, attention=self.cfg.dense_attention)
        visual, global_feat = dense.visual_embeddings, dense.global_feat  # (B,C,h,w), (B,C)
        B = visual.shape[0]
        text = self.text_embeddings(global_feat)  # (B or 1,K,C)
        text = text.expand(B, -1, -1) if text.shape[0] != B else text  # (B,K,C)
        prompted = self.vpg(visual, text) if self.vpg is not None else visual  # Î, from t before the decoder
        if self.context_decoder is not None:
            text = self.context_decoder(text, global_feat, visual)  # t', from I before the visual prompt
        cos = self.match(prompted, text)  # (B,K,h,w)
        feats = list(dense.stages)
        if self.cfg.score_map:
            feats[3] = torch.cat([feats[3], cos.to(feats[3].dtype)], dim=1)  # C5 + K channels
        logits = cos / self.cfg.tau
        return TCMOutput(features=feats, score_logits=logits, score_map=torch.sigmoid(logits))

    @staticmethod
    def match(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Instance-language matching: visual (B,C,h,w), text (B,K,C) -> cosine map (B,K,h,w), in fp32 under any
        autocast (as the authors' fp32 training)."""
        with torch.autocast(visual.device.type, enabled=False):
            return torch.einsum("bchw,bkc->bkhw", F.normalize(visual.float(), dim=1), F.normalize(text.float(), dim=2))

    def aux_loss(self, out: TCMOutput | dict, prob: torch.Tensor, prob_mask: torch.Tensor) -> torch.Tensor:
        """λ·L_aux: the score logits against the DB shrink map prob, prob_mask (B,H,W) (see losses.ilm_aux_loss).

        `out` is this module's TCMOutput or a dict holding "score_logits" (a Detector's output)."""
        logits = out["score_logits"] if isinstance(out, dict) else out.score_logits  # (B,K,h,w)
        if self.cfg.aux_weight == 0:
            return logits.sum() * 0.0
        return self.cfg.aux_weight * ilm_aux_loss(logits, prob, prob_mask, mode=self.cfg.aux_loss,
                                                  neg_ratio=self.cfg.ohem_ratio)

    @staticmethod
    def target_fn() -> "TCMTargets":
        """(instances, h, w) -> the maps aux_loss reads (picklable, for DataLoader workers)."""
        return TCMTargets()


@dataclass(frozen=True)
class TCMTargets:
    """(instances, h, w) -> "prob", "prob_mask" (h, w) float32: the DB shrink map of TCM's auxiliary loss
    (tcm_kit.data.targets.shrink_targets; official: the gt_shrink of DBNet's targets)."""
    shrink_ratio: float = 0.4
    min_size: float = 8

    def __call__(self, instances, h: int, w: int) -> dict:
        return shrink_targets(instances, h, w, self.shrink_ratio, self.min_size)
