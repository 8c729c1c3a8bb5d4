"""TCM's prompt side: learnable context (CoOp), the language and visual prompt generators, the context decoder.

Symbols: B batch, K prompts (classes; 1 = "text"), L context length, D token width, C joint embedding width,
h×w the stride-32 grid. The CLIP text encoder itself stays frozen; only the modules here learn.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from tcm_kit.clip import encode_text_from_embeddings

PROMPT_INITS = ("official", "prior")


class PromptError(ValueError):
    """A prompt that cannot be built (empty, or too long for the text encoder's context)."""


def _default_tokenizer(clip: nn.Module, context_length: int) -> Callable:
    """The tokenizer load_clip would give (by the model's registered name), else CLIP's BPE tokenizer."""
    import open_clip

    name = getattr(clip, "tcm_model_name", None)
    if name is not None:
        return open_clip.get_tokenizer(name, context_length=context_length)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


class PromptLearner(nn.Module):
    """Text embeddings of K class prompts, with n_ctx learnable context vectors in front of the class words.

    Token sequence fed to the frozen text encoder (learnable=True):  [SOT, c_1..c_n, w_1..w_m, EOT, pad...]
    learnable=False gives the fixed prompt:                           [SOT, w_1..w_m, EOT, pad...]
    An optional cue (B,D) is added to every token, SOT and EOT included, before the positional embedding
    (official: ocrclip/ocrclip/models.py:1030-1036), which makes the text embedding image-conditioned.
    init: "official" draws the contexts trunc_normal with std 1 (official: ocrclip/ocrclip/ocrclip.py:152-153);
    "prior" with std 0.02 (CoOp's scale), so that at step 0 the prompt is close to the bare class words.

    forward(clip, cue=None) -> (1,K,C) without a cue, (B,K,C) with one. The clip is passed in (not stored) so that
    its frozen text tower is owned by one module only (TCM).
    """

    def __init__(self, clip: nn.Module, prompt: str | Sequence[str] = "Text", n_ctx: int = 4,
                 learnable: bool = True, tokenizer: Callable | None = None, init: str = "official"):
        super().__init__()
        if init not in PROMPT_INITS:
            raise PromptError(f"init must be one of {PROMPT_INITS}, got {init!r}")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or any(not p.strip() for p in prompts):
            raise PromptError(f"prompt must be a non-empty string (or strings), got {prompt!r}")
        if learnable and n_ctx < 1:
            raise PromptError(f"a learnable prompt needs n_ctx >= 1, got {n_ctx}")
        self.prompts = prompts
        self.learnable = learnable
        self.n_ctx = n_ctx if learnable else 0
        L = int(clip.positional_embedding.shape[0])
        D = int(clip.token_embedding.weight.shape[1])
        tokenizer = tokenizer or _default_tokenizer(clip, L)
        ids = tokenizer(prompts).long()  # (K,L): SOT, words, EOT, zeros
        if ids.shape[1] != L:
            raise PromptError(f"tokenizer context length {ids.shape[1]} != text encoder context length {L}")
        eot_id = int(ids[0].max())  # EOT has the largest id in the CLIP vocabulary
        n_words = (ids == eot_id).int().argmax(dim=1) - 1  # (K,) tokens between SOT and EOT
        if int(n_words.min()) < 1 or bool(((ids == eot_id).sum(1) == 0).any()):
            raise PromptError(f"prompt {prompts!r} tokenizes to no words, or was truncated by the context length")
        if int(n_words.max()) + 2 + self.n_ctx > L:
            raise PromptError(f"prompt {prompts!r} with {self.n_ctx} context vectors does not fit the text "
                              f"encoder's context length {L}")
        # ids after SOT, shortened so that SOT + n_ctx + the rest is exactly L tokens
        self.register_buffer("prefix_ids", ids[:, :1].clone(), persistent=False)  # (K,1)
        self.register_buffer("suffix_ids", ids[:, 1:L - self.n_ctx].clone(), persistent=False)  # (K,L-1-n)
        self.register_buffer("eot_idx", n_words + 1 + self.n_ctx, persistent=False)  # (K,)
        self.ctx = nn.Parameter(torch.empty(self.n_ctx, D)) if learnable else None  # (n,D)
        if self.ctx is not None:
            nn.init.trunc_normal_(self.ctx, std=1.0 if init == "official" else 0.02)

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    def token_embeddings(self, clip: nn.Module, cue: torch.Tensor | None = None) -> torch.Tensor:
        """(1 or B, K, L, D) input embeddings of the prompts (no positional embedding yet)."""
        with torch.no_grad():  # the token table is frozen
            prefix = clip.token_embedding(self.prefix_ids)  # (K,1,D)
            suffix = clip.token_embedding(self.suffix_ids)  # (K,L-1-n,D)
        K = prefix.shape[0]
        parts_mid = []
        if self.ctx is not None:
            parts_mid.append(self.ctx[None, None].expand(1, K, -1, -1))  # (1,K,n,D)
        parts_mid.append(suffix[None])  # (1,K,L-1-n,D)
        mid = torch.cat(parts_mid, dim=2)  # (1,K,L-1,D)
        x = torch.cat([prefix[None], mid], dim=2)  # (1,K,L,D)
        if cue is not None:
            x = x + cue[:, None, None, :]  # (B,K,L,D): every token, SOT and EOT included
        return x

    def forward(self, clip: nn.Module, cue: torch.Tensor | None = None) -> torch.Tensor:
        # The text encoder is causal: the EOT token's output depends only on the tokens up to it, so the padding
        # after the last EOT is cut off (same result; the embedded CLIP runs 7 of 32 tokens, RN50 7 of 77).
        x = self.token_embeddings(clip, cue)[:, :, :int(self.eot_idx.max()) + 1]  # (B',K,L',D)
        Bp, K, L, D = x.shape
        eot = self.eot_idx[None].expand(Bp, K).reshape(-1)  # (B'K,)
        t = encode_text_from_embeddings(clip, x.reshape(Bp * K, L, D), eot)  # (B'K,C)
        return t.reshape(Bp, K, -1)  # (B',K,C)


class LanguagePromptGenerator(nn.Module):
    """cc = LN(ReLU(LN(q) W1 + b1)) W2 + b2: a query (B,C) -> a cue (B,D) for the prompt.

    The query is the image's global feature (TCM) or a learned vector (FastTCM). Linear weights trunc_normal
    std 0.02, biases 0 (official: ocrclip/ocrclip/models.py:1102-1136); zero_last=True zero-initialises the last
    Linear, so that cc = 0 at step 0 (the kit's "prior" init)."""

    def __init__(self, c: int, d: int, zero_last: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, c), nn.ReLU(inplace=True), nn.LayerNorm(c),
                                 nn.Linear(c, d))
        self.apply(_init_official)
        if zero_last:
            nn.init.zeros_(self.net[-1].weight)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.net(query)  # (B,C) -> (B,D)


def _init_official(m: nn.Module) -> None:
    """The authors' init of the prompt modules: Linear trunc_normal std 0.02 and bias 0, LayerNorm 1 and 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v projections, no dropout on the attention weights, and dropout on
    the output projection (official: ocrclip/ocrclip/models.py:619-651)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.proj = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        # q (B,N,W), kv (B,M,W) -> (B,N,W)
        B, N, W = q.shape

        def split(z):  # (B,n,W) -> (B,heads,n,W/heads)
            return z.reshape(B, z.shape[1], self.heads, W // self.heads).transpose(1, 2)

        o = F.scaled_dot_product_attention(split(self.q_proj(q)), split(self.k_proj(kv)), split(self.v_proj(kv)))
        return self.drop(self.proj(o.transpose(1, 2).reshape(B, N, W)))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention, cross-attention to a memory (normalised once, in CrossDecoder),
    MLP (GELU) (official: ocrclip/ocrclip/models.py:654-683)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.self_attn = Attention(width, heads, dropout)
        self.ln_2 = nn.LayerNorm(width)
        self.cross_attn = Attention(width, heads, dropout)
        self.ln_3 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        # x (B,N,W) queries, mem (B,M,W) keys/values
        q = self.ln_1(x)
        x = x + self.self_attn(q, q)
        x = x + self.cross_attn(self.ln_2(x), mem)
        return x + self.drop(self.mlp(self.ln_3(x)))


class CrossDecoder(nn.Module):
    """Queries LN -> Linear and memory LN -> Linear -> LN from C to `width`, `layers` decoder layers, LN -> Linear
    back to C (official ContextDecoder: ocrclip/ocrclip/models.py:1049-1099, also the visual prompt generator)."""

    def __init__(self, c: int, width: int = 256, layers: int = 3, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.q_proj = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, width))
        self.mem_proj = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, width), nn.LayerNorm(width))
        self.layers = nn.ModuleList([DecoderLayer(width, heads, dropout=dropout) for _ in range(layers)])
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, c))
        self.apply(_init_official)

    def forward(self, q: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        x, m = self.q_proj(q), self.mem_proj(mem)  # (B,N,W), (B,M,W)
        for layer in self.layers:
            x = layer(x, m)
        return self.out_proj(x)  # (B,N,C)


class VisualPromptGenerator(nn.Module):
    """Î = I + γ_v·Ĩ, Ĩ = decoder(queries = pixel embeddings I, keys/values = text embeddings); γ_v a scalar."""

    def __init__(self, c: int, width: int = 256, layers: int = 3, heads: int = 4, dropout: float = 0.1,
                 gamma_init: float = 1e-3):
        super().__init__()
        self.decoder = CrossDecoder(c, width, layers, heads, dropout)
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))  # γ_v

    def forward(self, visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        # visual (B,C,h,w), text (B,K,C) -> (B,C,h,w)
        B, C, h, w = visual.shape
        pix = visual.flatten(2).transpose(1, 2)  # (B,hw,C)
        prompt = self.decoder(pix, text)  # (B,hw,C)
        return visual + self.gamma * prompt.transpose(1, 2).reshape(B, C, h, w)


class ContextDecoder(nn.Module):
    """Text-side refinement (DenseCLIP's, on in every official config): t = t + γ ⊙ decoder(t, [Ī; I]); γ a
    C-vector."""

    def __init__(self, c: int, width: int = 256, layers: int = 3, heads: int = 4, dropout: float = 0.1,
                 gamma_init: float = 1e-3):
        super().__init__()
        self.decoder = CrossDecoder(c, width, layers, heads, dropout)
        self.gamma = nn.Parameter(torch.full((c,), float(gamma_init)))  # γ (C,)

    def forward(self, text: torch.Tensor, global_feat: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        # text (B,K,C), global_feat (B,C), visual (B,C,h,w) -> (B,K,C)
        context = torch.cat([global_feat[:, None], visual.flatten(2).transpose(1, 2)], dim=1)  # (B,1+hw,C)
        return text + self.gamma * self.decoder(text, context)
