"""The CLIP layer: build/load an open_clip CLIP with a ModifiedResNet image encoder, and its dense features.

Three sources of weights, one code path (`open_clip.create_model`) and one preprocessing (OpenAI CLIP's
mean/std) for all of them:

- ``"embedded"``: the kit's own small CLIP (``EMBEDDED_MODEL_NAME``, same family as RN50), pre-trained by
  `tcm_kit.pretrain` (its ``release`` recipe) on synthetic captioned scenes and shipped in the package as a
  versioned fp16 artefact, ``tcm_kit/weights/embedded-clip.pt``, checked against the sha256 recorded beside it
  (``embedded-clip.json``). Loading never trains; `tcm-kit pretrain` does, when asked;
- ``"openai"``: open_clip's ``RN50`` with ``pretrained="openai"`` (needs the internet once);
- a path: an OpenAI ``RN50.pt`` TorchScript archive or a plain state dict (open_clip or OpenAI key layout).

Dense features (DenseCLIP-style, as TCM uses them): stages 1-4 of the ResNet for a detector's neck, and the
attention-pooling layer applied at every stride-32 position (its value + output projections, positional embedding
interpolated to the feature grid) giving per-cell embeddings in the joint image-text space.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet

from tcm_kit.data.transforms import CLIP_MEAN, CLIP_STD  # the one home of the normalisation constants
from tcm_kit.utils import file_sha256

__all__ = [
    "EMBEDDED_MODEL_NAME", "DENSE_ATTENTION", "CLIP_MEAN", "CLIP_STD", "ClipWeightsError", "ClipInputError",
    "DenseFeatures", "load_clip", "create_clip", "build_preprocess", "load_state_dict_file", "dense_features",
    "encode_text_from_embeddings", "eot_index", "interpolate_pos_embed",
]

EMBEDDED_MODEL_NAME = "TCM-RN-tiny"  # tcm_kit/model_configs/TCM-RN-tiny.json, registered with open_clip below
MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
CHECKPOINT_KIND = "tcm-kit-clip"  # marks the kit's own checkpoint files (a dict with config + state_dict)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RELEASED_CLIP = WEIGHTS_DIR / "embedded-clip.pt"  # the released embedded CLIP (fp16 kit checkpoint)
RELEASED_CLIP_META = WEIGHTS_DIR / "embedded-clip.json"  # its sha256, PretrainConfig, commit, probe figures
OPENAI_RN50_URL_HOSTS = ("huggingface.co", "openaipublic.azureedge.net")
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")  # metadata buffers in OpenAI archives

if EMBEDDED_MODEL_NAME not in open_clip.list_models():
    open_clip.add_model_config(MODEL_CONFIG_DIR)


class ClipWeightsError(RuntimeError):
    """CLIP weights that cannot be found, read, downloaded or matched to the model."""


class ClipInputError(ValueError):
    """Bad input to the CLIP layer (wrong model family, image size not divisible by 32, bad shapes)."""


class DenseFeatures(NamedTuple):
    stages: list  # 4 tensors (B, C_i, H/s, W/s) at strides s = 4, 8, 16, 32
    visual_embeddings: torch.Tensor  # (B, C, H/32, W/32) in the joint image-text space
    global_feat: torch.Tensor  # (B, C) the attention pool's output (= encode_image at the native size)


# ----------------------------------------------------------------------------------------------------------------
# building models and preprocessing


@contextlib.contextmanager
def _quiet_open_clip():
    """Silence open_clip's 'initialized randomly' warnings (they go through the root logger)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def create_clip(model_name: str = EMBEDDED_MODEL_NAME, seed: int | None = None, device="cpu"):
    """A randomly initialised open_clip model by registered name (RN50, RN50-quickgelu, TCM-RN-tiny, ...)."""
    if seed is not None:
        torch.manual_seed(seed)
    with _quiet_open_clip():
        model = open_clip.create_model(model_name, pretrained=None, device=device)
    model.tcm_model_name = model_name  # remembered for checkpoints and the tokenizer
    if not isinstance(model.visual, ModifiedResNet):
        raise ClipInputError(f"{model_name} has a {type(model.visual).__name__} image encoder; tcm-kit needs a "
                             "ModifiedResNet (RN50 family) for its dense features")
    return model


def build_preprocess(image_size: int = 224) -> Callable:
    """PIL image -> float tensor (3, S, S): resize the short side, centre crop, OpenAI CLIP normalisation."""
    return open_clip.image_transform(image_size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)


def load_clip(clip_weights: str | os.PathLike = "embedded", device="cpu"):
    """-> (model, preprocess, tokenizer): an open_clip ``CLIP`` (ModifiedResNet image encoder) in eval mode, fp32.

    clip_weights: "embedded" (the kit's released tiny CLIP, shipped in the package), "openai" (open_clip RN50
    with OpenAI's weights; needs the internet once) or a path to a checkpoint file (e.g. one written by
    `tcm-kit pretrain`).
    """
    if isinstance(clip_weights, str) and clip_weights == "embedded":
        model = _load_embedded()
    elif isinstance(clip_weights, str) and clip_weights == "openai":
        model = _load_openai_rn50()
    elif isinstance(clip_weights, (str, os.PathLike)):
        model, _ = _load_from_path(Path(clip_weights))
    else:
        raise ClipWeightsError(f"clip_weights must be 'embedded', 'openai' or a path, got {clip_weights!r}")
    model = model.to(device).eval()
    preprocess = build_preprocess(model.visual.image_size)
    tokenizer = open_clip.get_tokenizer(model.tcm_model_name, context_length=model.context_length)
    return model, preprocess, tokenizer


# ----------------------------------------------------------------------------------------------------------------
# "embedded": the released checkpoint shipped in tcm_kit/weights/




def released_clip_info() -> dict:
    """The released embedded CLIP's record (embedded-clip.json): sha256, pretrain_config, git_commit, probe..."""
    try:
        return json.loads(RELEASED_CLIP_META.read_text())
    except FileNotFoundError:
        raise ClipWeightsError(f"{RELEASED_CLIP_META} is missing: this checkout has no released embedded CLIP "
                               "(re-make it with `tcm-kit pretrain --profile release --export`)") from None
    except json.JSONDecodeError as e:
        raise ClipWeightsError(f"{RELEASED_CLIP_META}:{e.lineno}: not valid JSON ({e.msg})") from None


def verify_release(path: Path, record: Path, sha256: str | None, error=None, restore: str = "restore it from git"):
    """Raise `error` (ClipWeightsError) unless the released file `path` exists and has the sha256 that its record
    file `record` gives; `restore` says how to get a good copy."""
    error = error or ClipWeightsError
    if not path.is_file():
        raise error(f"{path} is missing (its record {record.name} is there): {restore}")
    digest = file_sha256(path)
    if digest != sha256:
        raise error(f"{path}: sha256 {digest[:16]}... does not match the recorded {str(sha256)[:16]}... in "
                    f"{record.name}: the file is damaged or was replaced; {restore}")


def _load_embedded():
    info = released_clip_info()
    verify_release(RELEASED_CLIP, RELEASED_CLIP_META, info.get("sha256"),
                   restore="restore it from git or re-make it with `tcm-kit pretrain --profile release --export`")
    model, _ = _load_from_path(RELEASED_CLIP)
    return model.float()


@functools.lru_cache(maxsize=64)
def _path_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def clip_fingerprint(clip_weights) -> str:
    """What identifies the weights a detector run starts from, for its cache key: the released checkpoint's
    sha256 for "embedded", the file's sha256 for a path, the name for "openai" (fixed by open_clip's release)."""
    if isinstance(clip_weights, str) and clip_weights == "embedded":
        return "embedded:" + str(released_clip_info().get("sha256"))
    if isinstance(clip_weights, str) and clip_weights == "openai":
        return "openai:RN50"
    p = Path(clip_weights).expanduser().resolve()
    if not p.is_file():
        raise ClipWeightsError(f"CLIP weights {p} not found")
    st = p.stat()
    return "file:" + _path_fingerprint(str(p), st.st_size, st.st_mtime_ns)


def save_kit_checkpoint(model, path: Path, **extra) -> None:
    """Write the kit's checkpoint format: {"kind", "model_name", "model_cfg", "state_dict", **extra}, atomically."""
    name = getattr(model, "tcm_model_name", None)
    if name is None:
        raise ClipInputError("save_kit_checkpoint needs a model made by tcm_kit.clip (it records the model name)")
    ckpt = {"kind": CHECKPOINT_KIND, "model_name": name, "model_cfg": open_clip.get_model_config(name),
            "state_dict": model.state_dict(), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# "openai": RN50 by name, failing fast without the internet


def _reachable(hosts, timeout: float) -> bool:
    """True when a TCP connection to any of hosts:443 opens within `timeout` seconds (DNS included, in parallel)."""
    ok = threading.Event()

    def probe(host):
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                ok.set()
        except OSError:
            pass

    for h in hosts:
        threading.Thread(target=probe, args=(h,), daemon=True).start()
    return ok.wait(timeout)


def _cached_openai_rn50() -> Path | None:
    """OpenAI RN50 weights already downloaded by open_clip (its URL cache or the Hugging Face cache), if any."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg("RN50-quickgelu", "openai")
    url_file = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
    if url_file.is_file():
        return url_file
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo = cfg["hf_hub"].rstrip("/")
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def _load_openai_rn50(timeout: float = 3.0):
    cached = _cached_openai_rn50()
    if cached is not None:
        return _load_from_path(cached)[0]
    how = ("Download RN50.pt once where the internet is reachable (open_clip.create_model('RN50', "
           "pretrained='openai') caches it, or fetch https://openaipublic.azureedge.net/clip/models/"
           "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt) and pass its path: "
           "load_clip(clip_weights='/path/to/RN50.pt').")
    if os.environ.get("HF_HUB_OFFLINE") or not _reachable(OPENAI_RN50_URL_HOSTS, timeout):
        raise ClipWeightsError(f"clip_weights='openai' needs the internet to download RN50 weights and none of "
                               f"{', '.join(OPENAI_RN50_URL_HOSTS)} is reachable. {how}")
    try:
        with _quiet_open_clip():
            model = open_clip.create_model("RN50-quickgelu", pretrained="openai")
    except Exception as e:  # network or cache failure: one clear error
        raise ClipWeightsError(f"downloading OpenAI RN50 weights failed ({e}). {how}") from e
    model.tcm_model_name = "RN50-quickgelu"
    return model


# ----------------------------------------------------------------------------------------------------------------
# a path: OpenAI TorchScript archive, plain state dict (open_clip / OpenAI layout) or the kit's own checkpoint

_EXPECTED = ("an OpenAI RN50.pt TorchScript archive, a state dict (.pt/.pth/.bin/.safetensors) of an open_clip or "
             "OpenAI CLIP with a ModifiedResNet image encoder, or a tcm-kit CLIP checkpoint")


def load_state_dict_file(path: Path) -> tuple[dict, dict | None]:
    """Read a checkpoint file -> (state_dict with open_clip's CLIP keys, the kit checkpoint dict or None)."""
    path = Path(path)
    if not path.is_file():
        raise ClipWeightsError(f"CLIP checkpoint not found: {path} (expected {_EXPECTED})")
    kit = None
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # torch >= 2.9 flags torch.jit as deprecated; OpenAI ships it
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ClipWeightsError(f"cannot read CLIP checkpoint {path}: {type(e).__name__}: {e} "
                               f"(expected {_EXPECTED})") from e
    if isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND:
        kit = obj
        obj = obj["state_dict"]
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ClipWeightsError(f"{path} holds no state dict of tensors (expected {_EXPECTED})")
    return _to_open_clip_layout(obj), kit


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding code/ and constants.pkl (plain torch.save zips have data.pkl only)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _to_open_clip_layout(sd: dict) -> dict:
    """Strip DataParallel 'module.' prefixes, OpenAI archive metadata, and CustomTextCLIP's 'text.' prefix."""
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if k not in _JIT_EXTRA_KEYS}
    if "text.token_embedding.weight" in sd:  # CustomTextCLIP layout -> CLIP layout
        sd = {(k[len("text."):] if k.startswith("text.") else k): v for k, v in sd.items()}
    return sd


def _infer_arch(sd: dict) -> dict:
    """Architecture numbers readable from a ModifiedResNet CLIP state dict's keys and shapes."""
    try:
        layers = [len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)]
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        return {
            "embed_dim": sd["text_projection"].shape[1],
            "vision_layers": layers,
            "vision_width": sd["visual.layer1.0.conv1.weight"].shape[0],
            "image_size": grid * 32,
            "context_length": sd["positional_embedding"].shape[0],
            "vocab_size": sd["token_embedding.weight"].shape[0],
            "text_width": sd["ln_final.weight"].shape[0],
            "text_layers": len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
        }
    except (KeyError, IndexError, AttributeError) as e:
        raise ClipWeightsError(f"not a CLIP with a ModifiedResNet image encoder: key {e} is missing") from None


def _arch_of_config(cfg: dict) -> dict:
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    return {"embed_dim": cfg["embed_dim"], "vision_layers": list(v["layers"]), "vision_width": v.get("width", 64),
            "image_size": v.get("image_size", 224), "context_length": t.get("context_length", 77),
            "vocab_size": t.get("vocab_size", 49408), "text_width": t.get("width", 512),
            "text_layers": t.get("layers", 12)}


def _match_model_name(arch: dict) -> str:
    """The registered open_clip config matching `arch`: the embedded one, or an RN*-quickgelu (OpenAI weights)."""
    candidates = [EMBEDDED_MODEL_NAME] + [n for n in open_clip.list_models()
                                          if n.startswith("RN") and n.endswith("-quickgelu")]
    for name in candidates:
        cfg = open_clip.get_model_config(name)
        if isinstance(cfg["vision_cfg"].get("layers"), (list, tuple)) and _arch_of_config(cfg) == arch:
            return name
    raise ClipWeightsError(f"no registered open_clip ModifiedResNet config matches this checkpoint's architecture "
                           f"{arch}; known: {candidates}")


def load_into(model, sd: dict, source: str = "state dict") -> None:
    """Strict load: every model key must be in `sd` with its shape and nothing else; else one clear error.

    The only tolerated gap is BatchNorm's ``num_batches_tracked`` counters (not weights; some exports drop them).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    bad_shape = [f"{k}: {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                 if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or bad_shape:
        def show(xs):
            return f"{len(xs)} {xs[:12]}{' ...' if len(xs) > 12 else ''}"

        raise ClipWeightsError(f"{source} does not fit {getattr(model, 'tcm_model_name', 'the model')}: "
                               f"missing keys {show(missing)}; unexpected keys {show(unexpected)}; "
                               f"shape mismatches {show(bad_shape)}")
    full = {k: sd.get(k, expected[k]) for k in expected}
    model.load_state_dict(full, strict=True)  # copies (and casts fp16 OpenAI tensors to the model's fp32)


def _load_from_path(path: Path):
    sd, kit = load_state_dict_file(path)
    name = kit["model_name"] if kit is not None else _match_model_name(_infer_arch(sd))
    if kit is not None and open_clip.get_model_config(name) != kit.get("model_cfg"):
        raise ClipWeightsError(f"{path} was saved for a different '{name}' architecture than the one registered now "
                               f"({kit.get('model_cfg')} vs {open_clip.get_model_config(name)})")
    model = create_clip(name)
    load_into(model, sd, source=str(path))
    return model, kit


# ----------------------------------------------------------------------------------------------------------------
# dense features and the text encoder fed with embeddings


def interpolate_pos_embed(pos: torch.Tensor, h: int, w: int, mode: str = "bicubic") -> torch.Tensor:
    """Attention-pool positional embedding (1 + g*g, C) -> (1 + h*w, C), interpolated on the g x g grid.

    mode: "bicubic" (open_clip's resize of CLIP position embeddings; the kit's probes and pre-training) or
    "bilinear" (the TCM authors' AttentionPool2d.forward)."""
    g = round((pos.shape[0] - 1) ** 0.5)
    if (h, w) == (g, g):
        return pos
    cls, grid = pos[:1], pos[1:]  # (1, C), (g*g, C)
    grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, C, g, g)
    grid = F.interpolate(grid.float(), size=(h, w), mode=mode, align_corners=False).to(pos.dtype)
    return torch.cat([cls, grid.flatten(2)[0].T], dim=0)  # (1 + h*w, C)


def _pool_tokens(pool: AttentionPool2d, x: torch.Tensor, pos_mode: str) -> torch.Tensor:
    """x (B, C, h, w) -> tokens [mean; pixels] + positional embedding (B, 1+hw, C)."""
    B, C, h, w = x.shape
    x = x.reshape(B, C, h * w).transpose(1, 2)  # (B, hw, C)
    x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (B, 1+hw, C)
    return x + interpolate_pos_embed(pool.positional_embedding, h, w, pos_mode).to(x.dtype)


def attnpool_dense(pool: AttentionPool2d, x: torch.Tensor, pos_mode: str = "bicubic"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The value path (MaskCLIP): x (B, C, h, w) -> (visual_embeddings (B, D, h, w), global_feat (B, D)).

    global_feat is AttentionPool2d.forward's output (the mean token, plus the positional embedding interpolated
    to (h, w), attends to all tokens); every spatial token goes through v_proj then c_proj, with no attention.
    Same global values, fewer operations: only the mean token's query is used, and it is folded into the key
    projection (per head, q_h·(W_k,h x + b_k,h) = (W_k,hᵀ q_h)·x + q_h·b_k,h), so no key is projected; the pooled
    value is W_v,h (Σ_j a_hj x_j) + b_v,h (the attention weights sum to 1), so only the spatial tokens go through
    v_proj. Token projections: 1 (h·w tokens) instead of 3 (1 + h·w tokens), no (1+hw)^2 attention.
    """
    B, C, h, w = x.shape
    heads = pool.num_heads
    dh = C // heads
    x = _pool_tokens(pool, x, pos_mode)  # (B, 1+hw, C)
    q = pool.q_proj(x[:, 0]).reshape(B, heads, dh) * dh ** -0.5  # (B, heads, dh), scaled as in attention
    wk = pool.k_proj.weight.reshape(heads, dh, C).to(q.dtype)
    u = torch.einsum("bhd,hdc->bhc", q, wk)  # (B, heads, C): the query folded into the key projection
    # q·b_k is the same for every token (no effect on the softmax); kept so b_k stays in the graph (DDP)
    qb = (q * pool.k_proj.bias.reshape(heads, dh).to(q.dtype)).sum(-1, keepdim=True)  # (B, heads, 1)
    attn = torch.softmax(torch.einsum("bnc,bhc->bhn", x, u.to(x.dtype)).float() + qb.float(), dim=-1)  # (B,heads,1+hw)
    xbar = torch.einsum("bhn,bnc->bhc", attn.to(x.dtype), x)  # (B, heads, C): attention-weighted tokens
    wv = pool.v_proj.weight.reshape(heads, dh, C).to(xbar.dtype)
    pooled = torch.einsum("bhc,hdc->bhd", xbar, wv) + pool.v_proj.bias.reshape(heads, dh).to(xbar.dtype)
    glob = pool.c_proj(pooled.reshape(B, C))  # (B, D)
    if torch.is_grad_enabled():
        dense = pool.c_proj(pool.v_proj(x[:, 1:]))  # (B, hw, D)
    else:  # inference: c_proj ∘ v_proj as one (D, C) projection, h·w·C·D multiply-adds instead of h·w·C·(C + D)
        wf, bf = folded_value_projection(pool)
        dense = F.linear(x[:, 1:], wf.to(x.dtype), bf.to(x.dtype))  # (B, hw, D)
    dense = dense.transpose(1, 2).reshape(B, -1, h, w)  # (B, D, h, w)
    return dense, glob


def folded_value_projection(pool: AttentionPool2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) with W x + b = c_proj(v_proj(x)): W = W_c W_v (D, C), b = W_c b_v + b_c, computed in fp32 and kept on
    the pool until one of the four tensors changes (an optimiser step or load_state_dict bumps its version)."""
    params = (pool.v_proj.weight, pool.v_proj.bias, pool.c_proj.weight, pool.c_proj.bias)
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    cached = pool.__dict__.get("_folded_value_projection")  # a plain attribute: not a parameter, not saved
    if cached is None or cached[0] != key:
        with torch.no_grad():
            wv, bv, wc, bc = (p.float() for p in params)
            cached = (key, wc @ wv, wc @ bv + bc)
        pool.__dict__["_folded_value_projection"] = cached
    return cached[1], cached[2]


def attnpool_full(pool: AttentionPool2d, x: torch.Tensor, pos_mode: str = "bilinear"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Full attention (DenseCLIP, TCM): x (B, C, h, w) -> (visual_embeddings (B, D, h, w), global_feat (B, D)).

    Every token of [mean; pixels] (+ positional embedding) is a query over all tokens (multi-head, no mask),
    then c_proj: the mean token's output is the global feature (as AttentionPool2d.forward), each pixel's
    output is its embedding. Official: ocrclip/ocrclip/models.py:81-115 (bilinear positional embedding)."""
    B, C, h, w = x.shape
    heads = pool.num_heads
    t = _pool_tokens(pool, x, pos_mode)  # (B, 1+hw, C)

    def split(z):  # (B, N, C) -> (B, heads, N, C/heads)
        return z.reshape(B, -1, heads, C // heads).transpose(1, 2)

    q, k, v = split(pool.q_proj(t)), split(pool.k_proj(t)), split(pool.v_proj(t))
    o = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1+hw, C/heads)
    o = pool.c_proj(o.transpose(1, 2).reshape(B, -1, C))  # (B, 1+hw, D)
    return o[:, 1:].transpose(1, 2).reshape(B, -1, h, w), o[:, 0]  # (B, D, h, w), (B, D)


DENSE_ATTENTION = ("value", "full")


def dense_features(model, images: torch.Tensor, attention: str = "value", pos_mode: str | None = None
                   ) -> DenseFeatures:
    """images (B, 3, H, W), H and W divisible by 32, normalised with CLIP_MEAN/CLIP_STD -> DenseFeatures.

    attention: how the attention pool makes the pixel embeddings: "value" (attnpool_dense, MaskCLIP's value path:
    the kit's probes and pre-training) or "full" (attnpool_full: DenseCLIP / the TCM authors' code). The global
    feature is the same either way. pos_mode: the positional embedding's interpolation (None: bicubic for
    "value", bilinear for "full", as in open_clip and in the authors' code)."""
    visual = getattr(model, "visual", None)
    if not isinstance(visual, ModifiedResNet):
        raise ClipInputError(f"dense_features needs a CLIP with a ModifiedResNet image encoder, got "
                             f"{type(visual).__name__}")
    if attention not in DENSE_ATTENTION:
        raise ClipInputError(f"attention must be one of {DENSE_ATTENTION}, got {attention!r}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ClipInputError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    H, W = images.shape[-2:]
    if H % 32 or W % 32:
        raise ClipInputError(f"image size {H}x{W} is not divisible by 32")
    x = visual.stem(images)  # (B, w, H/4, W/4)
    s1 = visual.layer1(x)  # (B, 4w, H/4, W/4)
    s2 = visual.layer2(s1)  # (B, 8w, H/8, W/8)
    s3 = visual.layer3(s2)  # (B, 16w, H/16, W/16)
    s4 = visual.layer4(s3)  # (B, 32w, H/32, W/32)
    if attention == "full":
        emb, glob = attnpool_full(visual.attnpool, s4, pos_mode or "bilinear")
    else:
        emb, glob = attnpool_dense(visual.attnpool, s4, pos_mode or "bicubic")  # (B, D, H/32, W/32), (B, D)
    return DenseFeatures([s1, s2, s3, s4], emb, glob)


def eot_index(tokens: torch.Tensor) -> torch.Tensor:
    """tokens (B, L) from the CLIP tokenizer -> (B,) position of the end-of-text token (the largest id)."""
    return tokens.argmax(dim=-1)


def encode_text_from_embeddings(model, token_embeddings: torch.Tensor, eot_idx: torch.Tensor) -> torch.Tensor:
    """The text transformer fed token embeddings (B, L, D) instead of ids -> (B, C), C the joint-space width.

    Same as model.encode_text(ids) when token_embeddings = model.token_embedding(ids) and eot_idx = eot_index(ids).
    L may be shorter than the model's context length (positional embedding and causal mask are cut to L).
    """
    B, L, D = token_embeddings.shape
    if L > model.context_length or D != model.positional_embedding.shape[1]:
        raise ClipInputError(f"token embeddings {tuple(token_embeddings.shape)} do not fit a text encoder of "
                             f"context {model.context_length} and width {model.positional_embedding.shape[1]}")
    cast_dtype = model.transformer.get_cast_dtype()
    x = token_embeddings.to(cast_dtype) + model.positional_embedding[:L].to(cast_dtype)  # (B, L, D)
    x = model.transformer(x, attn_mask=model.attn_mask[:L, :L])  # (B, L, D), causal
    x = model.ln_final(x)  # (B, L, D)
    x = x[torch.arange(B, device=x.device), eot_idx.to(x.device)]  # (B, D)
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection  # (B, C)
