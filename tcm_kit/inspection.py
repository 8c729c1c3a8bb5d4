"""Looking inside a CLIP: dense image-text similarity maps, pre-training curves, the prior table, a prompt widget.

The helpers behind notebooks 00 (the embedded CLIP prior) and 01 (CLIP feature inspection). A similarity map is
the cosine between each stride-32 cell of `tcm_kit.clip.dense_features(...).visual_embeddings` and the text
embedding of a prompt: the prior TCM's score map stands on. Figures are matplotlib `Figure` objects (no pyplot
state), so they build headless and go straight to `tcm_kit.report.save_figure`.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tcm_kit.clip import create_clip, dense_features
from tcm_kit.data.transforms import to_tensor
from tcm_kit.probe import PROBE_SIZES

__all__ = [
    "InspectError", "DEFAULT_PROMPTS", "PROFILE_SETTINGS", "settings_for", "to_clip_batch", "fit_to_stride",
    "load_image", "random_clip", "similarity_maps", "similarity_map", "cell_coverage", "text_cell_auc",
    "inspection_images", "similarity_table", "plot_similarity_grid", "pretrain_log", "plot_pretrain_curves",
    "checkpoint_info", "prior_table", "PromptExplorer", "prompt_explorer", "score_map_auc", "real_prior_auc",
    "state_digest", "detection_views", "plot_detection_views",
]

DEFAULT_PROMPTS = ("Text", "a sign", "a brick wall")  # "Text" is the paper's; the others are content words

# per profile: probe scenes for evaluate_prior (n scenes at each (width, height); floor_n of them for the randomly
# initialised floor, whose AUCs sit near 0.5; size_n: fewer scenes at the sizes named there, the first of the same
# draw) and the side of the inspected scenes; cpu and full probe at the sizes of the released CLIP's record, cpu
# on 64 scenes above 256 px (a 1280 x 720 scene holds 880 cells but costs 9x a 256 px one); step0_images: test
# images for the AUC of TCM's score map at step 0 (experiments.step0_score_table)
# real_n: photos of each real benchmark split for the prior on real photos (None: all); real_size: their long side
PROFILE_SETTINGS = {
    "smoke": dict(probe_n=32, floor_n=32, probe_sizes=((128, 128),), size_n={}, image_size=256, step0_images=4,
                  real_n=4, real_size=320),
    "cpu": dict(probe_n=256, floor_n=64, probe_sizes=PROBE_SIZES, size_n={(512, 512): 64, (1280, 720): 64},
                image_size=384, step0_images=60, real_n=None, real_size=1280),
    "full": dict(probe_n=256, floor_n=256, probe_sizes=PROBE_SIZES, size_n={}, image_size=512, step0_images=100,
                 real_n=None, real_size=1280),
}


class InspectError(ValueError):
    """Bad input to the inspection helpers (unknown profile, missing image, empty log, bad shapes)."""


def settings_for(profile: str) -> dict:
    """The inspection settings of a profile (see PROFILE_SETTINGS)."""
    if profile not in PROFILE_SETTINGS:
        raise InspectError(f"profile must be one of {tuple(PROFILE_SETTINGS)}, got {profile!r}")
    return dict(PROFILE_SETTINGS[profile])


# ----------------------------------------------------------------------------------------------------------------
# images


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InspectError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    return image


def to_clip_batch(images) -> torch.Tensor:
    """list of uint8 (H, W, 3) images of one size -> float (B, 3, H, W) normalised with CLIP_MEAN/CLIP_STD."""
    return to_tensor(np.stack([_check_image(i) for i in images]))


def fit_to_stride(image, long_side: int | None = None, stride: int = 32) -> np.ndarray:
    """Resize a uint8 (H, W, 3) image so both sides are multiples of `stride` (long side = `long_side` if given).

    The aspect ratio is kept up to the rounding to `stride`; an image already fitting is returned as is.
    """
    from PIL import Image

    image = _check_image(image)
    h, w = image.shape[:2]
    scale = 1.0 if long_side is None else long_side / max(h, w)
    th, tw = (max(stride, int(round(s * scale / stride)) * stride) for s in (h, w))
    if (th, tw) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((tw, th), Image.BICUBIC))


def load_image(path, long_side: int | None = 512) -> np.ndarray:
    """A picture file -> uint8 (H, W, 3) RGB with sides multiples of 32, decoded as training and prediction decode
    it (tcm_kit.data.transforms.read_image: EXIF orientation applied, transparency composited on white)."""
    from .data.transforms import CorruptImageError, read_image

    path = Path(path)
    if not path.is_file():
        raise InspectError(f"image not found: {path}")
    try:
        image = read_image(path)
    except CorruptImageError as e:
        raise InspectError(str(e)) from None
    return fit_to_stride(image, long_side)


def _as_image(v) -> np.ndarray:
    """An image given as an array, a (image, instances) pair or a Scene -> uint8 (H, W, 3)."""
    if hasattr(v, "image"):
        v = v.image
    elif isinstance(v, tuple):
        v = v[0]
    return _check_image(v)


# ----------------------------------------------------------------------------------------------------------------
# similarity maps


def random_clip(model, seed: int = 0):
    """A randomly initialised CLIP of the same architecture as `model` (eval mode, same device)."""
    name = getattr(model, "tcm_model_name", None)
    if name is None:
        raise InspectError("random_clip needs a model made by tcm_kit.clip (it records the model name)")
    device = next(model.parameters()).device
    return create_clip(name, seed=seed).to(device).eval()


@torch.no_grad()
def _text_embeddings(model, tokenizer, prompts) -> torch.Tensor:
    device = next(model.parameters()).device
    return F.normalize(model.encode_text(tokenizer(list(prompts)).to(device)), dim=-1)  # (P, C)


@torch.no_grad()
def similarity_maps(model, tokenizer, image, prompts, size: int | None = None) -> np.ndarray:
    """Cosine of every stride-32 cell of `image` with each prompt -> float32 (P, h, w), values in [-1, 1].

    image: uint8 (H, W, 3); size: long side the image is resized to first (None: its own size, rounded to
    multiples of 32). h, w = the resized image's sides / 32.
    """
    if isinstance(prompts, str):
        raise InspectError("prompts must be a list of strings (use similarity_map for one prompt)")
    image = fit_to_stride(_as_image(image), size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    emb = dense_features(model, to_clip_batch([image]).to(device)).visual_embeddings[0]  # (C, h, w)
    emb = F.normalize(emb, dim=0)
    txt = _text_embeddings(model, tokenizer, prompts)  # (P, C)
    model.train(was_training)
    sim = torch.einsum("chw,pc->phw", emb, txt)  # (P, h, w)
    return sim.clamp_(-1, 1).float().cpu().numpy()


def similarity_map(model, tokenizer, image, prompt: str, size: int | None = None) -> np.ndarray:
    """Cosine of every stride-32 cell of `image` with `prompt` -> float32 (h, w) in [-1, 1]."""
    return similarity_maps(model, tokenizer, image, [prompt], size)[0]


def cell_coverage(instances, image_hw, grid_hw) -> np.ndarray:
    """Fraction of each grid cell covered by the instances' polygons (pixel coords of an image_hw image)."""
    import cv2

    h, w = image_hw
    mask = np.zeros((h, w), np.uint8)
    for inst in instances:
        cv2.fillPoly(mask, [np.round(np.asarray(inst.polygon, np.float32)).astype(np.int32)], 1)
    gh, gw = grid_hw
    return cv2.resize(mask.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)  # (gh, gw)


def text_cell_auc(sim: np.ndarray, instances, image_hw, pos_cover: float = 0.25) -> float:
    """ROC-AUC of map cells covered >= pos_cover by text above cells touching no text (nan if a side is empty)."""
    from tcm_kit.probe import roc_auc

    cover = cell_coverage(instances, image_hw, sim.shape)
    return roc_auc(sim[cover >= pos_cover], sim[cover <= 1e-6])


def inspection_images(seed: int = 0, size: int = 256, real_image=None, presets=None) -> dict:
    """{name: (image uint8, instances or None)}: one synthetic scene per preset (+ the real picture if given).

    real_image: None or a path; used only when the file exists (its long side is resized to 2 * size).
    """
    from tcm_kit.data.synth import PRESETS, render_scene

    out = {}
    for name in presets or PRESETS:
        scene = render_scene(name, seed, 0, size)
        out[name] = (scene.image, scene.instances)
    if real_image is not None and Path(real_image).is_file():
        out[f"real: {Path(real_image).name}"] = (load_image(real_image, long_side=2 * size), None)
    return out


def similarity_table(models: dict, tokenizer, images: dict, prompt: str = "Text") -> "pd.DataFrame":
    """Per (image with known instances, model): text-cell AUC of the prompt's map, mean cosine on text/background."""
    import pandas as pd

    rows = []
    for name, value in images.items():
        image, instances = (value if isinstance(value, tuple) else (value, getattr(value, "instances", None)))
        if not instances:
            continue
        hw = _as_image(image).shape[:2]  # the polygons' frame (the map's grid may come from a resized copy)
        for label, model in models.items():
            sim = similarity_map(model, tokenizer, image, prompt)
            cover = cell_coverage(instances, hw, sim.shape)
            rows.append({"image": name, "model": label, "prompt": prompt,
                         "text_cell_auc": text_cell_auc(sim, instances, hw),
                         "cos_text": float(sim[cover >= 0.25].mean()) if (cover >= 0.25).any() else float("nan"),
                         "cos_background": float(sim[cover <= 1e-6].mean()) if (cover <= 1e-6).any()
                         else float("nan")})
    return pd.DataFrame(rows, columns=["image", "model", "prompt", "text_cell_auc", "cos_text", "cos_background"])


def _figure(width: float, height: float, footer: float = 0.22):
    """A constrained-layout Figure (inches) keeping `footer` inches free at the bottom for report.save_figure's
    provenance line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(rect=(0, footer / height, 1, 1 - footer / height))
    return fig


def plot_similarity_grid(models: dict, tokenizer, images: dict, prompts=DEFAULT_PROMPTS, size: int | None = None,
                         cmap: str = "jet", alpha: float = 0.55):
    """A Figure: one row per image; its picture, then each model's map for each prompt, overlaid on it.

    models: {label: CLIP}; images: {name: uint8 image | (image, instances) | Scene}. Each column (one model, one
    prompt) has its own colour scale, shared by all images (its range is in the column title): images compare
    within a column; a prompt whose cosines vary little still shows where it peaks.
    """
    if not models or not images or not prompts:
        raise InspectError("plot_similarity_grid needs at least one model, one image and one prompt")
    prompts = list(prompts)
    pics = {name: fit_to_stride(_as_image(v), size) for name, v in images.items()}
    maps = {label: {name: similarity_maps(m, tokenizer, pic, prompts) for name, pic in pics.items()}
            for label, m in models.items()}  # label -> name -> (P, h, w)
    ranges = {(label, p): (min(float(s[p].min()) for s in by.values()), max(float(s[p].max()) for s in by.values()))
              for label, by in maps.items() for p in range(len(prompts))}
    rows, cols = len(pics), 1 + len(models) * len(prompts)
    aspects = [p.shape[0] / p.shape[1] for p in pics.values()]  # one row height per image shape
    fig = _figure(1.8 * cols, 1.8 * sum(aspects) + 0.5)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False, gridspec_kw={"height_ratios": aspects}))
    for r, (name, pic) in enumerate(pics.items()):
        H, W = pic.shape[:2]
        axes[r, 0].imshow(pic)
        axes[r, 0].set_ylabel(name, fontsize=8)
        c = 1
        for label in models:
            for p, prompt in enumerate(prompts):
                lo, hi = ranges[label, p]
                ax = axes[r, c]
                ax.imshow(pic.mean(axis=2), cmap="gray", vmin=0, vmax=255)
                ax.imshow(maps[label][name][p], cmap=cmap, alpha=alpha, vmin=lo, vmax=hi,
                          extent=(0, W, H, 0), interpolation="bilinear")
                if r == 0:
                    ax.set_title(f"{label}: '{prompt}'\ncos [{lo:.2f}, {hi:.2f}]", fontsize=8)
                c += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=8)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# the embedded CLIP: its pre-training log, its checkpoint, its zero-shot prior


def pretrain_log(checkpoint_path) -> "pd.DataFrame":
    """The per-step pre-training log of a kit checkpoint: <stem>-log.csv beside it (the released CLIP), its run's
    log.csv, else the copy inside the checkpoint.

    Columns: step, loss, acc (in-batch image->caption top-1), lr, logit_scale, size, time. Empty if neither exists.
    """
    import pandas as pd

    from tcm_kit.pretrain import LOG_FIELDS, read_log

    checkpoint_path = Path(checkpoint_path)
    beside = checkpoint_path.with_name(checkpoint_path.stem + "-log.csv")  # a released checkpoint's curve
    if beside.is_file():
        return pd.read_csv(beside)[list(LOG_FIELDS)]
    rows = read_log(checkpoint_path)
    if not rows and checkpoint_path.is_file():
        try:
            ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a foreign or corrupt file: say which
            raise InspectError(f"cannot read the pre-training log inside {checkpoint_path}: {e}") from None
        rows = (ckpt.get("log") or []) if isinstance(ckpt, dict) else []
    return pd.DataFrame(rows, columns=list(LOG_FIELDS))


def _ema(x: np.ndarray, beta: float = 0.9) -> np.ndarray:
    out, m = np.empty(len(x)), x[0] if len(x) else 0.0
    for i, v in enumerate(x):
        m = beta * m + (1 - beta) * v
        out[i] = m
    return out


def plot_pretrain_curves(log, chance_acc: float | None = None):
    """A Figure of the contrastive pre-training: loss, in-batch retrieval accuracy, temperature, per step.

    log: a DataFrame or list of dicts with columns step, loss, acc, logit_scale (pretrain_log's output).
    """
    import pandas as pd

    df = pd.DataFrame(log)
    missing = [c for c in ("step", "loss", "acc", "logit_scale") if c not in df.columns]
    if missing or df.empty:
        raise InspectError(f"the pre-training log is empty or lacks columns {missing}")
    fig = _figure(12, 3.4)
    axes = fig.subplots(1, 3)
    step = df["step"].to_numpy()
    for ax, col, title in zip(axes[:2], ("loss", "acc"), ("contrastive loss", "in-batch retrieval top-1")):
        y = df[col].to_numpy(float)
        ax.plot(step, y, color="C0", alpha=0.3, lw=0.8, label="per step")
        ax.plot(step, _ema(y), color="C0", lw=1.8, label="EMA 0.9")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    if chance_acc is not None:
        axes[1].axhline(chance_acc, color="0.5", ls="--", lw=1, label="chance")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=8, loc="upper left")
    axes[2].plot(step, df["logit_scale"].to_numpy(float), color="C1")
    axes[2].set_title("logit scale (1 / temperature)", fontsize=10)
    axes[2].set_xlabel("step")
    return fig


def checkpoint_info(clip_weights="embedded") -> dict:
    """Where the CLIP weights `clip_weights` live and, for a kit checkpoint (the released embedded CLIP, or one
    written by `tcm-kit pretrain`), how they were made."""
    from tcm_kit.clip import RELEASED_CLIP, load_state_dict_file, released_clip_info

    if clip_weights == "embedded":
        rec = released_clip_info()
        keep = ("file", "sha256", "size_bytes", "dtype", "parameters", "config_hash", "steps", "wall_time_s",
                "amp", "cpu", "git_commit", "created")
        return {"clip_weights": "embedded", "path": str(RELEASED_CLIP), "profile": rec["pretrain_config"]["profile"],
                **{k: rec.get(k) for k in keep}}
    if clip_weights == "openai":
        return {"clip_weights": "openai", "path": "open_clip cache (RN50, openai)"}
    p = Path(clip_weights)
    info = {"clip_weights": str(clip_weights), "path": str(p), "exists": p.is_file(),
            "size_mb": round(p.stat().st_size / 2**20, 1) if p.is_file() else None}
    if p.is_file():
        _, kit = load_state_dict_file(p)
        if kit is not None:
            info.update({k: kit.get(k) for k in ("model_name", "config_hash", "steps", "wall_time_s", "amp",
                                                 "git_commit")})
    return info


def prior_table(models: dict, n: int = 64, sizes=((256, 256),), seed: int = 1234, progress: bool = False,
                n_for: dict | None = None, size_n: dict | None = None):
    """evaluate_prior for each {label: CLIP} at each (width, height) of `sizes`, on the same held-out probe
    scenes (the first min(n_for[label], size_n[(width, height)]) of them where given, else n) -> DataFrame, one
    row per model and size ("size" as "WxH", the scene count in "n_images")."""
    import pandas as pd

    from tcm_kit.probe import evaluate_prior

    n_for, size_n = n_for or {}, size_n or {}
    rows = [{"model": label, "size": f"{w}x{h}",
             **evaluate_prior(m, n=min(n_for.get(label, n), size_n.get((w, h), n)), size=(w, h), seed=seed,
                              progress=progress)}
            for label, m in models.items() for w, h in sizes]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# the prompt widget


class PromptExplorer:
    """An ipywidgets control: type a prompt, pick an image, see each model's similarity map for it.

    `.widget` is the ipywidgets box (displaying the explorer displays it); `.update()` redraws (it also runs on
    every change of the text box or the dropdown) and returns the matplotlib Figure, kept in `.figure`. The map
    is rendered to a PNG inside an `ipywidgets.Image`, so it also works headless (papermill, nbval).
    """

    DPI = 90  # display pixels per figure inch

    def __init__(self, models: dict, tokenizer, images: dict, prompt: str = "Text", size: int | None = None):
        import ipywidgets as W

        if not images:
            raise InspectError("prompt_explorer needs at least one image")
        self.models, self.tokenizer, self.size = models, tokenizer, size
        self.images = {name: _as_image(v) for name, v in images.items()}
        self.text = W.Text(value=prompt, description="prompt", continuous_update=False)
        self.choice = W.Dropdown(options=list(self.images), description="image")
        self.view = W.Image(format="png")
        self.widget = W.VBox([W.HBox([self.text, self.choice]), self.view])
        self.figure = None
        self.text.observe(self.update, names="value")
        self.choice.observe(self.update, names="value")

    def update(self, *_):
        """Redraw the maps of the current prompt on the current image -> the Figure."""
        name = self.choice.value
        fig = plot_similarity_grid(self.models, self.tokenizer, {name: self.images[name]}, [self.text.value],
                                   self.size)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=2 * self.DPI)  # twice the pixels of its shown size: sharp on HiDPI
        self.view.value = buf.getvalue()
        w, h = fig.get_size_inches() * self.DPI
        self.view.layout.width, self.view.layout.height = f"{w:.0f}px", f"{h:.0f}px"  # shown at its own size
        self.figure = fig
        return fig

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def prompt_explorer(models: dict, tokenizer, images: dict, prompt: str = "Text", size: int | None = None):
    """A PromptExplorer, drawn once (so a headless run shows the first map too)."""
    explorer = PromptExplorer(models, tokenizer, images, prompt, size)
    explorer.update()
    return explorer


# ----------------------------------------------------------------------------------------------------------------
# TCM's score map P on a domain's test images: how good the language prior is, before and after training


@torch.no_grad()
def _text_cell_auc(model, root, cell_map, size: int, max_images: int | None, pos_cover: float, progress: bool,
                   desc: str) -> dict:
    """ROC-AUC of `cell_map(x)` ((1, 3, H, W) -> numpy (H/32, W/32)) over the annotated images of `root`: each
    image's long side resized to `size` and padded to a multiple of 32, as in evaluation; a cell is a positive when
    care text covers >= pos_cover of it, a negative when no text (care or don't-care) touches it; cells over
    don't-care text or mostly padding are left out. Pooled over the images -> dict(auc, n_images, n_pos_cells,
    n_neg_cells)."""
    from tqdm.auto import tqdm

    from tcm_kit.data.formats import read_folder
    from tcm_kit.data.transforms import pad_to_multiple, read_image, resize_long_side
    from tcm_kit.probe import roc_auc

    samples = list(read_folder(root))[:max_images]
    if not samples:
        raise InspectError(f"{root}: no annotated images found")
    was_training = model.training
    model.eval()
    pos, neg = [], []
    try:
        for path, instances in tqdm(samples, disable=not progress, desc=desc, leave=False):
            image, insts, _ = resize_long_side(read_image(path), list(instances), size)
            vh, vw = image.shape[:2]
            image = pad_to_multiple(image, 32)
            h, w = image.shape[:2]
            p = cell_map(to_tensor(image)[None])  # (h/32, w/32)
            inside = cell_coverage([_box(vw, vh)], (h, w), p.shape) >= 0.5
            care = cell_coverage([x for x in insts if not x.ignore], (h, w), p.shape)
            anytext = cell_coverage(insts, (h, w), p.shape)
            pos.append(p[(care >= pos_cover) & inside])
            neg.append(p[(anytext <= 1e-6) & inside])
    finally:
        model.train(was_training)
    pos, neg = np.concatenate(pos), np.concatenate(neg)
    return {"auc": roc_auc(pos, neg), "n_images": len(samples), "n_pos_cells": int(len(pos)),
            "n_neg_cells": int(len(neg))}


def score_map_auc(model, root, size: int = 320, device: str = "cpu", max_images: int | None = None,
                  pos_cover: float = 0.25, progress: bool = False) -> dict:
    """Text-cell ROC-AUC of a TCM detector's score map P on the images of the folder `root` (cells as
    _text_cell_auc counts them) -> dict(auc, n_images, n_pos_cells, n_neg_cells).

    model: a Detector with a TCM backbone (tcm_kit.train.build_model(cfg) is its step 0, load_run(run)[0] the
    trained one)."""
    if getattr(model.backbone, "aux_loss", None) is None:
        raise InspectError("score_map_auc needs a TCM detector (tcm-*): a plain backbone has no score map")

    def cell_map(x):
        return model(x.to(device))["score_map"][0, 0].float().cpu().numpy()

    return _text_cell_auc(model, root, cell_map, size, max_images, pos_cover, progress, "score map AUC")


def state_digest(model) -> str:
    """sha256 of a module's state (each entry's name, dtype, shape and bytes), 16 hex digits: what a cached
    measurement of the model is keyed by."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def real_prior_auc(model, tokenizer, root, size: int = 1280, prompt: str = "text", device: str = "cpu",
                   max_images: int | None = None, pos_cover: float = 0.25, progress: bool = False,
                   cache: bool = False) -> dict:
    """Dense text-cell ROC-AUC of a CLIP's zero-shot prior on the annotated photos of the folder `root`: the
    cosine of every stride-32 cell of visual_embeddings with `prompt`, as the synthetic probe (tcm_kit.probe)
    measures it, with cells counted as _text_cell_auc does -> dict(dense_auc, n_images, n_pos_cells,
    n_neg_cells). With `cache`, the figures are kept in data/eval/clip_prior/, keyed by the model's state
    (state_digest), the folder's content (fingerprint) and the arguments, and read back on the next call."""
    if cache:
        from tcm_kit.data.benchmarks import fingerprint
        from tcm_kit.utils import cached_json, config_hash, data_dir

        key = config_hash({"model": state_digest(model), "data": fingerprint(root), "size": size, "prompt": prompt,
                           "max_images": max_images, "pos_cover": pos_cover})
        path = data_dir() / "eval" / "clip_prior" / f"{'-'.join(Path(root).resolve().parts[-2:])}-{key}.json"
        return cached_json(path, lambda: real_prior_auc(model, tokenizer, root, size, prompt, device, max_images,
                                                        pos_cover, progress))
    text = _text_embeddings(model, tokenizer, [prompt])[0]  # (C,)

    def cell_map(x):
        emb = dense_features(model, x.to(device)).visual_embeddings[0]  # (C, h/32, w/32)
        return torch.einsum("chw,c->hw", F.normalize(emb, dim=0), text).float().cpu().numpy()

    m = _text_cell_auc(model, root, cell_map, size, max_images, pos_cover, progress, f"prior AUC {Path(root).name}")
    return {"dense_auc": m.pop("auc"), **m}


def _box(w: int, h: int):
    """An instance-like rectangle [0, w] x [0, h] for cell_coverage."""
    from tcm_kit.data.formats import Instance

    return Instance(np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32), "", False)


# ----------------------------------------------------------------------------------------------------------------
# a trained detector on one picture: the CLIP prior beside what training made of it


@torch.no_grad()
def detection_views(detector, clip, tokenizer, image, size: int = 1280, box_thresh: float = 0.5,
                    prompt: str = "text") -> dict:
    """One picture through a CLIP and a trained detector -> dict(image uint8 (H, W, 3) at long side `size` in
    multiples of 32, prior (h/32, w/32) cosine map of `prompt`, score_map (h', w') TCM's score map P in [0, 1] or
    None for a plain detector, detections [(polygon (N, 2) in the image's pixels, score)])."""
    pic = fit_to_stride(_as_image(image), size)
    prior = similarity_map(clip, tokenizer, pic, prompt)
    was_training = detector.training
    detector.eval()
    device = next(detector.parameters()).device
    x = to_tensor(np.array(pic))[None].to(device)  # (1, 3, H, W), the detector's own input normalisation (as predict)
    out = detector(x)
    score = out["score_map"][0, 0].float().cpu().numpy() if "score_map" in out else None
    dets = detector.predict(x, scale=1.0, box_thresh=box_thresh)[0]
    detector.train(was_training)
    return {"image": pic, "prior": prior, "score_map": score, "detections": dets}


def plot_detection_views(views: dict, title: str = "", cmap: str = "jet", alpha: float = 0.55):
    """A Figure of detection_views: the CLIP prior's map, the trained TCM score map and the detections, side by
    side over the picture."""
    import cv2

    pic = views["image"]
    H, W = pic.shape[:2]
    fig = _figure(13.5, 13.5 / 3 * H / W + 0.7)
    axes = fig.subplots(1, 3)
    grey = pic.mean(axis=2)
    prior = views["prior"]
    axes[0].imshow(grey, cmap="gray", vmin=0, vmax=255)
    axes[0].imshow(prior, cmap=cmap, alpha=alpha, extent=(0, W, H, 0), interpolation="bilinear")
    axes[0].set_title(f"CLIP prior: cosine with 'text' [{prior.min():.2f}, {prior.max():.2f}]", fontsize=9)
    axes[1].imshow(grey, cmap="gray", vmin=0, vmax=255)
    if views["score_map"] is not None:
        axes[1].imshow(views["score_map"], cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=(0, W, H, 0),
                       interpolation="bilinear")
        axes[1].set_title("trained TCM score map P (0 to 1)", fontsize=9)
    else:
        axes[1].set_title("no score map: a detector without TCM", fontsize=9)
    canvas = pic.copy()
    for poly, _ in views["detections"]:
        cv2.polylines(canvas, [np.round(poly).astype(np.int32)], True, (0, 255, 0), max(1, W // 640))
    axes[2].imshow(canvas)
    axes[2].set_title(f"{len(views['detections'])} detections", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
