"""Held-out probe scenes and the zero-shot proof that a CLIP knows what text looks like.

The scenes here are drawn by code independent of `tcm_kit.data.synth` (its own word list, layouts, font sizes,
colours, backgrounds and clutter, plain PIL rendering), so a prior that only memorised the generator's look does
not pass. `evaluate_prior(model)` measures, through the public CLIP API (dense_features, encode_text):

- image AUC: cos(global image feature, "a photo of text") ranks images with text above text-free ones;
- dense AUC: cos(each stride-32 cell of visual_embeddings, "text") ranks cells covered >= 25 % by a word box
  above cells touching no word;
- retrieval top-1: image -> caption among the distinct captions of the probe set, against chance (1 / distinct).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy.stats import rankdata
from tqdm.auto import tqdm

from tcm_kit.clip import dense_features
from tcm_kit.data.transforms import to_tensor

__all__ = ["ProbeScene", "draw_probe_scene", "roc_auc", "cell_coverage", "evaluate_prior", "PROBE_WORDS",
           "PROBE_SIZES"]

# words of the probe set (not the generator's list): everyday nouns/verbs, shop-sign words, codes
PROBE_WORDS = (
    "river harbor lantern violet meadow copper fabric garden pencil ticket window basket marble jacket candle "
    "orbit thunder velvet saddle pepper falcon timber cobalt walnut glacier kettle mosaic nickel parlor quartz "
    "rocket salmon tunnel umbrella vortex willow yonder zephyr anchor bakery cinema dental empire ferry grill "
    "hotel island joker kiosk lounge market noodle office parking quick radio salon tailor union valley wharf "
    "express yellow zone open closed sale exit entry stop north south east west fresh daily deluxe grand "
    "royal super metro city central station avenue street plaza tower bridge museum library pharmacy "
    "coffee bread pizza sushi books music games tools paint shoes"
).split()

# the probe sizes of the released CLIP's record and of the cpu profile's notebook 00: the kit's 256 px probe,
# 512 px, and the size of an ICDAR2015 photo (1280 x 720, padded to 736)
PROBE_SIZES = ((256, 256), (512, 512), (1280, 720))

_BACKGROUNDS = ("solid", "linear", "radial", "noise", "photo", "stripes")
# scikit-image sample photos that tcm_kit.data.synth does not use (and that hold no text)
_PHOTOS = ("moon", "retina", "immunohistochemistry", "cell", "microaneurysms", "lfw_subset")


@dataclass
class ProbeScene:
    image: np.ndarray  # uint8 (S, S, 3)
    boxes: list  # per word a float32 (4, 2) polygon of its (possibly rotated) text box
    words: list  # the strings drawn
    caption: str
    has_text: bool


@lru_cache(maxsize=None)
def _font_files() -> tuple:
    """matplotlib's fonts (the generator draws from these too) -> tuple of .ttf paths."""
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    keep = ("DejaVuSans", "DejaVuSerif", "STIXGeneral", "cmr10", "cmss10", "cmtt10", "cmb10", "cmti10")
    return tuple(sorted(str(p) for p in ttf.glob("*.ttf") if p.stem.startswith(keep) and "Display" not in p.stem))


@lru_cache(maxsize=None)
def _unseen_font_files() -> tuple:
    """Condensed / light DejaVu cuts of the system, if installed (the generator does not use them)."""
    return tuple(sorted(str(p) for p in Path("/usr/share/fonts").rglob("DejaVu*.ttf")
                        if any(k in p.stem for k in ("Condensed", "ExtraLight"))))


def _font(rng, px: int):
    """Pillow's own Aileron (35 %), system condensed/light DejaVu (25 %, if any), else matplotlib's fonts."""
    r = rng.uniform()
    if r < 0.35:
        return ImageFont.load_default(size=px)
    files = _unseen_font_files() if r < 0.6 and _unseen_font_files() else _font_files()
    return ImageFont.truetype(files[rng.integers(len(files))], px)


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if name == "lfw_subset":  # 200 faces of 25 x 25 in [0, 1]: tile a 5 x 5 mosaic of them
        img = (img[:25].reshape(5, 5, 25, 25).transpose(0, 2, 1, 3).reshape(125, 125) * 255).astype(np.uint8)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def _rand_colour(rng) -> tuple:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _background(rng, w: int, h: int) -> tuple[Image.Image, str]:
    kind = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    c0, c1 = np.array(_rand_colour(rng), np.float32), np.array(_rand_colour(rng), np.float32)
    if kind == "solid":
        img = np.broadcast_to(c0, (h, w, 3)).copy()
        desc = "a plain background"
    elif kind == "linear":
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * xx + np.sin(a) * yy)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
        img = c0 + (c1 - c0) * t[..., None]
        desc = "a colour gradient"
    elif kind == "radial":
        cx, cy = rng.uniform(0, 1, 2)
        t = np.clip(np.hypot(xx - cx, yy - cy) / 1.2, 0, 1)
        img = c0 + (c1 - c0) * t[..., None]
        desc = "a colour gradient"
    elif kind == "noise":
        g = int(rng.integers(3, 9))
        small = rng.uniform(0, 1, (g, g, 3)).astype(np.float32)
        t = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
        img = c0 * 0.4 + t * 0.6
        desc = "a blotchy texture"
    elif kind == "stripes":
        period = rng.uniform(0.05, 0.3)
        a = rng.uniform(0, np.pi)
        t = (np.sin((np.cos(a) * xx + np.sin(a) * yy) / period * 2 * np.pi) > 0).astype(np.float32)
        img = c0 + (c1 - c0) * t[..., None] * 0.5
        desc = "a striped pattern"
    else:
        photo = _photo(_PHOTOS[rng.integers(len(_PHOTOS))])
        ph, pw = photo.shape[:2]
        c = int(rng.integers(min(ph, pw) // 3, min(ph, pw) + 1))  # crop height; its width keeps the scene's aspect
        cw = min(pw, max(1, round(c * w / h)))
        y0, x0 = int(rng.integers(0, ph - c + 1)), int(rng.integers(0, pw - cw + 1))
        img = np.asarray(Image.fromarray(photo[y0:y0 + c, x0:x0 + cw]).resize((w, h), Image.BILINEAR), np.float32)
        if rng.uniform() < 0.5:
            img = img[:, ::-1]
        img = img * rng.uniform(0.6, 1.2) + rng.uniform(-30, 30, 3)
        desc = "a photo"
    img = np.clip(img + rng.normal(0, rng.uniform(0, 6), (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(img), desc


def _clutter(rng, draw: ImageDraw.ImageDraw, sw: int, sh: int) -> int:
    """Random shapes and lines (the same distribution on text and text-free scenes); returns how many."""
    k = int(rng.integers(0, 7))
    s = min(sw, sh)
    for _ in range(k):
        kind = rng.integers(4)
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * [sw, sh]
        w, h = rng.uniform(0.05, 0.4, 2) * s
        col = _rand_colour(rng)
        width = int(rng.integers(1, max(2, s // 40)))
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=col if rng.uniform() < 0.5 else None, outline=col,
                         width=width)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=col if rng.uniform() < 0.5 else None, outline=col,
                           width=width)
        elif kind == 2:
            draw.line([(x0, y0), (x0 + w * rng.choice([-1, 1]), y0 + h * rng.choice([-1, 1]))], fill=col,
                      width=width)
        else:
            pts = [tuple(p) for p in (rng.uniform(0, 1, (int(rng.integers(3, 6)), 2)) * [w, h] + [x0, y0])]
            draw.polygon(pts, fill=col)
    return k


def _word_text(rng) -> str:
    r = rng.uniform()
    if r < 0.75:
        w = PROBE_WORDS[rng.integers(len(PROBE_WORDS))]
    elif r < 0.9:  # codes / numbers
        w = "".join(rng.choice(list("0123456789"), int(rng.integers(2, 6))))
    else:
        w = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ0123456789"), int(rng.integers(3, 7))))
    case = rng.uniform()
    return w.upper() if case < 0.4 else w.capitalize() if case < 0.7 else w


def _draw_word(rng, img: Image.Image, taken: np.ndarray, word: str):
    """Render `word` at a free random place (maybe rotated); returns its (4,2) box or None if it did not fit.

    Its height is 5-20 % of the scene's short side."""
    sw, sh = img.size
    font = _font(rng, int(rng.uniform(0.05, 0.2) * min(sw, sh)))
    l, t, r, b = font.getbbox(word)
    pad = 2
    tw, th = r - l + 2 * pad, b - t + 2 * pad
    tile = Image.new("L", (tw, th), 0)
    ImageDraw.Draw(tile).text((pad - l, pad - t), word, font=font, fill=255)
    angle = float(rng.uniform(-35, 35)) if rng.uniform() < 0.3 else 0.0
    corners = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32) - [tw / 2, th / 2]
    if angle:
        tile = tile.rotate(angle, resample=Image.BICUBIC, expand=True)
        a = np.deg2rad(-angle)  # PIL rotates counter-clockwise on screen
        corners = corners @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]], np.float32)
    W, H = tile.size
    if W >= sw or H >= sh:
        return None
    for _ in range(20):
        x, y = int(rng.integers(0, sw - W)), int(rng.integers(0, sh - H))
        if not taken[y:y + H, x:x + W].any():
            break
    else:
        return None
    box = corners + [x + W / 2, y + H / 2]
    region = np.asarray(img.crop((x, y, x + W, y + H)), np.float32).mean()
    base = np.array(_rand_colour(rng), np.float32)
    colour = base * 0.35 if region > 128 else 255 - (255 - base) * 0.35  # contrast with what is under it
    if rng.uniform() < 0.2:  # an outline/shadow in the opposite tone
        shadow = tile.filter(ImageFilter.MaxFilter(3))
        img.paste(tuple(int(255 - c) for c in colour), (x + 1, y + 1), shadow)
    img.paste(tuple(int(c) for c in colour), (x, y), tile)
    taken[max(0, y - 2):y + H + 2, max(0, x - 2):x + W + 2] = True
    return box.astype(np.float32)


def _wh(size) -> tuple[int, int]:
    """A probe size, an int (square side) or (width, height) -> (width, height)."""
    w, h = (size, size) if np.isscalar(size) else size
    return int(w), int(h)


def draw_probe_scene(seed: int, index: int, size=256, with_text: bool = True) -> ProbeScene:
    """One held-out scene of `size` (side, or (width, height)): background + clutter (+ 1-5 words, a word or a
    line of words); deterministic."""
    rng = np.random.default_rng([seed, index, 31337])
    w, h = _wh(size)
    img, desc = _background(rng, w, h)
    _clutter(rng, ImageDraw.Draw(img), w, h)
    boxes, words = [], []
    if with_text:
        taken = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 6))):
            n = int(rng.integers(1, 3)) if rng.uniform() < 0.3 else 1
            word = " ".join(_word_text(rng) for _ in range(n))
            box = _draw_word(rng, img, taken, word)
            if box is not None:
                boxes.append(box)
                words.append(word)
    if rng.uniform() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    caption = f'text "{" ".join(words)}" on {desc}' if words else desc
    return ProbeScene(np.asarray(img, np.uint8).copy(), boxes, words, caption, bool(words))


def cell_coverage(boxes: list, size, stride: int = 32) -> np.ndarray:
    """Fraction of each stride x stride cell covered by the union of the polygons `boxes` in a scene of `size`
    (side, or (width, height)) -> (height // stride, width // stride)."""
    w, h = _wh(size)
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    for b in boxes:
        d.polygon([tuple(p) for p in b], fill=1)
    m = np.asarray(mask, np.float32)
    gh, gw = h // stride, w // stride
    return m[:gh * stride, :gw * stride].reshape(gh, stride, gw, stride).mean(axis=(1, 3))


def roc_auc(pos, neg) -> float:
    """ROC-AUC of scores `pos` above `neg` (Mann-Whitney with ties counted half); nan if a side is empty."""
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _to_tensor(images: list) -> torch.Tensor:
    return to_tensor(np.stack(images))  # (B, 3, S, S)


@torch.no_grad()
def evaluate_prior(model, n: int = 64, size=256, seed: int = 1234, batch: int = 16,
                   image_prompt: str = "a photo of text", dense_prompt: str = "text", progress: bool = False,
                   tokenizer=None) -> dict:
    """-> dict(image_auc, dense_auc, retrieval_top1, chance, n_images, n_pos_cells, n_neg_cells).

    n probe scenes (half with text) of `size` (side, or (width, height)), drawn by draw_probe_scene(seed, i, size).
    A side that is not a multiple of 32 (720 of a 1280 x 720 photo) is padded up to one with the mean colour
    (zero after normalisation); cells more than half padding are left out of the dense AUC.
    """
    import open_clip

    w, h = _wh(size)
    pw, ph = -(-w // 32) * 32, -(-h // 32) * 32
    tokenizer = tokenizer or open_clip.get_tokenizer(getattr(model, "tcm_model_name", "RN50"),
                                                     context_length=model.context_length)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scenes = [draw_probe_scene(seed, i, size, with_text=(i % 2 == 0)) for i in range(n)]
    glob, dense = [], []
    for i in tqdm(range(0, n, batch), disable=not progress, desc="probe"):
        x = F.pad(_to_tensor([s.image for s in scenes[i:i + batch]]), (0, pw - w, 0, ph - h))  # (b, 3, ph, pw)
        f = dense_features(model, x.to(device))
        glob.append(F.normalize(f.global_feat, dim=-1).cpu())  # (b, C)
        dense.append(F.normalize(f.visual_embeddings, dim=1).cpu())  # (b, C, g, g)
    glob, dense = torch.cat(glob), torch.cat(dense)

    def text(prompts):
        return F.normalize(model.encode_text(tokenizer(prompts).to(device)), dim=-1).cpu()  # (P, C)

    t_img, t_dense = text([image_prompt])[0], text([dense_prompt])[0]
    has_text = np.array([s.has_text for s in scenes])
    img_score = (glob @ t_img).numpy()
    cell_score = torch.einsum("bchw,c->bhw", dense, t_dense).numpy()  # (n, g, g)
    cover = np.stack([cell_coverage(s.boxes, (pw, ph)) for s in scenes])  # (n, gh, gw)
    inside = cell_coverage([np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)], (pw, ph)) >= 0.5
    cover[:, ~inside] = np.nan  # neither positive nor negative

    captions = list(dict.fromkeys(s.caption for s in scenes))
    t_cap = text(captions)  # (U, C)
    pick = (glob @ t_cap.T).argmax(dim=1).numpy()
    top1 = float(np.mean([captions[p] == s.caption for p, s in zip(pick, scenes)]))
    model.train(was_training)
    return {
        "image_auc": roc_auc(img_score[has_text], img_score[~has_text]),
        "dense_auc": roc_auc(cell_score[cover >= 0.25], cell_score[cover == 0]),
        "retrieval_top1": top1,
        "chance": 1.0 / len(captions),
        "n_images": n,
        "n_pos_cells": int((cover >= 0.25).sum()),
        "n_neg_cells": int((cover == 0).sum()),
    }
