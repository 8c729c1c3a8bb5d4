"""The fidelity table: each setting of TCM where the authors' code (github wenwenyu/TCM, commit 5ebac37) and the
kit meet, with the official file:line beside the kit's file:line, whether they are the same, and why not.

The kit's lines are found in the source at the time the table is written (each row names a unique piece of the
kit's code), so the table cannot drift from the code: `python -m tcm_kit.fidelity` writes reports/fidelity.md,
and the tests check that every row still finds its code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tcm_kit.utils import REPO_ROOT

OFFICIAL_COMMIT = "5ebac37"
MODELS = "ocrclip/ocrclip/models.py"
OCRCLIP = "ocrclip/ocrclip/ocrclip.py"
IC15_CONFIG = "ocrclip/configs/textdet/dbnet/clip_db_r50_fpnc_prompt_gen_vis_1200e_ft_gen_ic15_adam_taiji.py"
MODEL_CONFIG = "ocrclip/configs/_base_/det_models/clip_dbnet_r50att_prompt_gen_vis_fpnc.py"


class FidelityError(LookupError):
    """A row of the fidelity table whose kit code cannot be found."""


@dataclass(frozen=True)
class Row:
    item: str  # the item (1-5) or "+" for a setting beyond them
    setting: str
    official: str  # path:line(s) in the official repository
    kit_file: str  # path in this repository
    kit_anchor: str  # a string that occurs in kit_file at the line the row means
    status: str  # "same" | "option" (the authors' behaviour is the default, the kit's a named option) | "different"
    why: str = ""


ROWS = (
    Row("1", "dense pixel embeddings: full multi-head self-attention over [mean; pixels]", f"{MODELS}:81-115",
        "tcm_kit/clip.py", "def attnpool_full(", "option",
        "default `dense_attention=\"full\"`; \"value\" (MaskCLIP's value path) is the cpu/smoke profiles' choice, "
        "for its step-0 AUC of the score map with the embedded CLIP (reports/score_map_step0.md) and, with the prior "
        "init, +0.035 hmean [+0.016, +0.053] over the authors' setting in the cpu reproduction (3 seeds, NOTES.md)"),
    Row("1", "positional embedding interpolated bilinearly to the grid", f"{MODELS}:86-89", "tcm_kit/clip.py",
        'emb, glob = attnpool_full(visual.attnpool, s4, pos_mode or "bilinear")', "same",
        "bicubic (open_clip's) only on the value path, which the pre-training and the probe use"),
    Row("1", "global feature = the mean token's output", f"{MODELS}:109-113", "tcm_kit/clip.py",
        "return o[:, 1:].transpose(1, 2).reshape(B, -1, h, w), o[:, 0]", "same"),
    Row("2", "prompt [SOT, contexts, word tokens, EOT]", f"{MODELS}:1019", "tcm_kit/prompts.py",
        'self.register_buffer("suffix_ids"', "same",
        "the kit runs the causal encoder only up to EOT (the same output)"),
    Row("2", "cue cc added to every token, SOT and EOT included, before the positional embedding",
        f"{MODELS}:1034-1038", "tcm_kit/prompts.py", "x = x + cue[:, None, None, :]", "same"),
    Row("2", "contexts trunc_normal std 1", f"{OCRCLIP}:152-153", "tcm_kit/prompts.py",
        'nn.init.trunc_normal_(self.ctx, std=1.0 if init == "official" else 0.02)', "option",
        "`prompt_init=\"prior\"` (std 0.02 and a zero last LPG layer) in the cpu/smoke profiles, on the step-0 AUC "
        "and the cpu reproduction's paired seeds (with the value path; see the dense-embeddings row)"),
    Row("2", "language prompt generator LN-Linear-ReLU-LN-Linear, trunc_normal 0.02, biases 0",
        f"{MODELS}:1102-1136", "tcm_kit/prompts.py", "class LanguagePromptGenerator(", "same"),
    Row("3", "context decoder on (use_context_decoder=True in every config)", f"{OCRCLIP}:57",
        "tcm_kit/tcm.py", "context_decoder: bool = True", "same"),
    Row("3", "visual prompt from the text before the context decoder", f"{OCRCLIP}:293-302", "tcm_kit/tcm.py",
        "prompted = self.vpg(visual, text) if self.vpg is not None else visual", "same"),
    Row("3", "context decoder on [global; pixels] before the visual prompt", f"{OCRCLIP}:262-265, 310-314",
        "tcm_kit/tcm.py", "text = self.context_decoder(text, global_feat, visual)", "same"),
    Row("3", "score map: refined text against prompted pixels, raw cosine concatenated to C5",
        f"{OCRCLIP}:316-320, 374", "tcm_kit/tcm.py", "cos = self.match(prompted, text)", "same"),
    Row("3", "γ (C-vector) and γ_v (scalar) start at 1e-3", f"{OCRCLIP}:162-163", "tcm_kit/prompts.py",
        "self.gamma = nn.Parameter(torch.full((c,), float(gamma_init)))", "same"),
    Row("4", "decoder attention: no qkv bias, no attention dropout, dropout 0.1 on the projection",
        f"{MODELS}:619-651", "tcm_kit/prompts.py", "class Attention(nn.Module):", "same"),
    Row("4", "decoder layer: pre-norm self-attn, cross-attn (memory not re-normalised), GELU MLP",
        f"{MODELS}:654-683", "tcm_kit/prompts.py", "class DecoderLayer(nn.Module):", "same"),
    Row("4", "memory LN -> Linear -> LN once; queries LN -> Linear; out LN -> Linear; trunc_normal 0.02",
        f"{MODELS}:1049-1099", "tcm_kit/prompts.py",
        "self.mem_proj = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, width), nn.LayerNorm(width))", "same"),
    Row("4", "decoders: width 256, 3 layers, 4 heads", f"{MODEL_CONFIG}:37-54", "tcm_kit/tcm.py",
        "decoder_width: int = 256", "option",
        "the cpu profile uses width 64 with the 12 M-parameter embedded CLIP"),
    Row("5", "optimiser: Adam, lr 1e-4, L2 weight decay 1e-4 (the decay added to the gradient)",
        f"{IC15_CONFIG}:62", "tcm_kit/config.py", 'lr=1e-4, optimizer="adam"', "option",
        "full profile; smoke/cpu keep AdamW (decoupled decay)"),
    Row("5", "no decay on the 'norm' key: mmcv gives it to the decoder layers' LayerNorms only (longest key wins)",
        f"{IC15_CONFIG}:65; {MODELS}:665-667", "tcm_kit/train.py", "def no_decay_parameters(", "option",
        "full profile `no_decay=\"official\"`; \"norms\" (every norm layer) is the key's evident intent"),
    Row("5", "image encoder at 0.1x lr", f"{IC15_CONFIG}:63", "tcm_kit/config.py",
        "backbone_lr_mult: float = 0.1", "same"),
    Row("5", "text encoder: lr_mult 0 (kept in the optimiser)", f"{IC15_CONFIG}:64", "tcm_kit/tcm.py",
        "def _freeze_text_tower(", "different",
        "the kit freezes it (requires_grad False); the official poly floor lets its lr reach 1e-7 (negligible)"),
    Row("5", "schedule: poly 0.9 per epoch to 1e-7, no warm-up", f"{IC15_CONFIG}:70", "tcm_kit/train.py",
        "def epoch_poly_lr(", "option", "full profile; smoke/cpu keep a short warm-up then poly per step"),
    Row("5", "batch 16 per GPU (samples_per_gpu)", f"{IC15_CONFIG}:17", "tcm_kit/config.py",
        "batch_size: int = 8  # per process", "same", "the global batch is batch_size x world"),
    Row("5", "augmentation: flip 0.5, rotate +-10, resize 0.5-3.0 of the image, EastRandomCrop 640",
        "ocrclip/configs/_base_/det_pipelines/dbnet_pipeline.py:86-92", "tcm_kit/config.py",
        'pipeline="official", flip_p=0.5, scale_range=(0.5, 3.0)', "option",
        "full profile; smoke/cpu keep the kit's crops of synthetic images"),
    Row("5", "colour jitter: brightness 32/255, saturation 0.5",
        "ocrclip/configs/_base_/det_pipelines/dbnet_pipeline.py:86", "tcm_kit/config.py",
        "color_jitter=(32 / 255, 0.0, 0.5, 0.0)", "option", "full profile"),
    Row("5", "normalisation: DBNet's mean (122.68, 116.67, 104.01), ImageNet's std",
        "ocrclip/configs/_base_/det_pipelines/dbnet_pipeline.py:73-76", "tcm_kit/config.py", 'pixel_norm="dbnet"',
        "option", "full profile; smoke/cpu feed CLIP's own mean/std, which the embedded CLIP was trained with"),
    Row("5", "test scale (4068, 1024), keep ratio", f"{IC15_CONFIG}:12, 28, 32", "tcm_kit/config.py",
        "test_size=(4068, 1024)", "same", "full profile (a 1280 x 720 photo becomes 1820 x 1024)"),
    Row("5", "prompt sentence 'the pixels of many arbitrary-shape text instances.'", f"{MODEL_CONFIG}:8",
        "tcm_kit/config.py", 'prompt="the pixels of many arbitrary-shape text instances."', "option",
        "full profile; the kit's default is the paper's \"Text\""),
    Row("5", "DB post-processing: mask 0.28, min score 0.2, unclip 1.6, quads, 3000 candidates",
        f"{IC15_CONFIG}:45-54", "tcm_kit/config.py", "thresh=0.28, box_thresh=0.2, unclip_ratio=1.6", "option",
        "full profile; the official text_repr_type is 'quad', not polygons"),
    Row("5", "matching einsum in fp32", f"{OCRCLIP}:320", "tcm_kit/tcm.py",
        "with torch.autocast(visual.device.type, enabled=False):", "same"),
    Row("5", "evaluation: checkpoint and score threshold picked on the test set", f"{IC15_CONFIG}:78-80",
        "tcm_kit/config.py", 'protocol: str = "val"', "different",
        "the kit picks the threshold on a validation split and reports test once; `evaluation.protocol=\"authors\"` "
        "adds the authors' figure, labelled"),
    Row("+", "PAN head: one 1x1 conv on the FFM output (MMOCR 0.x PANHead), neck 128",
        "mmocr_src/configs/_base_/det_models/panet_r50_fpem_ffm.py:13-16",
        "tcm_kit/heads/pan.py", 'head: str = "mmocr"', "option",
        "smoke/cpu keep pan_pp's 3x3 head (`PANConfig(head=\"pan_pp\")`) until the new head is measured there"),
    Row("+", "FastTCM: a learned query in place of the global feature (is_v2)", f"{OCRCLIP}:168-170, 271-272",
        "tcm_kit/tcm.py",
        'self.query = nn.Parameter(torch.randn(C)) if cfg.language_prompt and cfg.prompt_query == "learned"',
        "option", "`prompt_query=\"learned\"`; is_v2's extra cosine term with `pix_w` (1024 x 512) is not "
        "implemented: its shapes fit a 512-d text space only"),
    Row("5", "auxiliary loss: balanced BCE with OHEM, 3 negatives per positive (IdentityHead, bbce_loss)",
        f"{MODEL_CONFIG}:68-74", "tcm_kit/config.py", 'aux_loss="bce"', "option",
        "TCMConfig's default and the full profile; smoke/cpu/release take the paper's plain BCE: with OHEM the "
        "embedded CLIP's score map went to a constant, logit(1/4) everywhere (reports/NOTES.md, 2026-12-05)"),
    Row("+", "τ = 0.07 only in the auxiliary loss (logits = cos/τ)", f"{OCRCLIP}:63, 399", "tcm_kit/tcm.py",
        "logits = cos / self.cfg.tau", "same"),
)


def kit_line(row: Row) -> int:
    """The line of row.kit_anchor in row.kit_file (1-based); FidelityError when it is absent."""
    path = REPO_ROOT / row.kit_file
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if row.kit_anchor in line:
            return i
    raise FidelityError(f"{row.kit_file}: the fidelity row {row.setting!r} finds no {row.kit_anchor!r}")


def table_markdown(rows=ROWS) -> str:
    head = (f"# Fidelity: tcm-kit beside the authors' code\n\nOfficial: github `wenwenyu/TCM` at {OFFICIAL_COMMIT}; "
            "kit lines found in the source by `python -m tcm_kit.fidelity` (which writes this file).\n"
            "`option`: the authors' behaviour is the default and the kit's choice a named option.\n\n"
            "| item | setting | official | kit | status | why |\n|---|---|---|---|---|---|\n")
    body = "".join(f"| {r.item} | {r.setting} | `{r.official}` | `{r.kit_file}:{kit_line(r)}` | {r.status} | "
                   f"{r.why} |\n" for r in rows)
    return head + body


def write(path: Path | None = None) -> Path:
    from tcm_kit.report import reports_dir

    path = Path(path) if path else reports_dir() / "fidelity.md"
    path.write_text(table_markdown())
    return path


if __name__ == "__main__":
    print(write())
