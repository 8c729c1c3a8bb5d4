"""Synthetic scene-text generator: words printed on surfaces, seen by a camera, with word/line polygons.

A scene is built in four passes, each from its own random stream of `default_rng([seed, index, preset_id])`:
  1. background: a natural photo from scikit-image (cropped, scaled, flipped, recoloured) or a procedural
     surface (gradient, plaster, paper), plus planar "surfaces" and text-like distractors that are not text
     (stripes, fences, windows, tiles, bars, rows of marks, icons) drawn through the same perspective warp as text;
  2. text: blocks of lines of words rendered with PIL in a matplotlib font, optional sign plate, outline and
     drop shadow, placed on a 3-D tilted plane (homography) or bent along an arc/wave; every polygon is the
     word's actual ink box pushed through the same mapping as its pixels;
  3. occluders (poles, blobs, photo patches): instances hidden by more than 40 % become don't care;
  4. camera: lighting gradient and cast shadow, defocus/motion blur, sensor noise, JPEG at a random quality.
Words come from `_word`: English sign words, syllable pseudo-words, numbers, prices, dates, codes (no corpus).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from tcm_kit.data.formats import Instance, write_icdar2015, write_totaltext
from tcm_kit.utils import config_hash

SYNTH_VERSION = 1  # bump when the renderer changes: existing sets are then regenerated


class SynthError(ValueError):
    """Bad arguments to the synthetic generator (unknown preset, bad size, bad count)."""


@dataclass(frozen=True)
class SynthConfig:
    name: str
    preset_id: int
    level: str = "word"                  # "word" | "line": what one instance holds
    shape: str = "quad"                  # "quad" (4 points) | "poly" (2 * poly_side points)
    poly_side: int = 7
    blocks: tuple = (3, 8)               # text blocks (sign / paragraph / line group) per image
    lines_per_block: tuple = (1, 3)
    words_per_line: tuple = (1, 3)
    font_frac: tuple = (0.02, 0.07)      # font size / short image side (log-uniform)
    tiny_prob: float = 0.15              # blocks of illegibly small text (don't care)
    max_angle: float = 30.0              # in-plane rotation, degrees
    tilt: float = 40.0                   # out-of-plane yaw/pitch of the text plane, degrees
    curve_prob: float = 0.0              # probability that a one-line block is bent (arc or wave)
    photo_prob: float = 0.8              # natural-photo background
    paper_prob: float = 0.0              # paper background (documents)
    surfaces: tuple = (0, 2)             # extra planar surfaces pasted over the background
    distractors: tuple = (3, 10)
    plate_prob: float = 0.5              # sign board behind a block
    outline_prob: float = 0.15
    shadow_prob: float = 0.15
    wear_prob: float = 0.15              # worn / patchy paint
    contrast: tuple = (20.0, 150.0)      # luma difference text vs local background (0-255)
    min_care_contrast: float = 14.0
    min_care_px: float = 8.0             # text height below which an instance is don't care
    occluders: tuple = (0, 3)
    light: float = 0.35                  # strength of the lighting gradient
    shadow_cast_prob: float = 0.3
    blur_prob: float = 0.5
    blur_max: float = 1.4                # defocus sigma, pixels at 640
    motion_prob: float = 0.15
    noise_max: float = 7.0
    jpeg_prob: float = 0.9
    jpeg_quality: tuple = (35, 92)


PRESETS: dict[str, SynthConfig] = {
    "synth-ic15": SynthConfig("synth-ic15", 0, blocks=(3, 9), lines_per_block=(1, 2), font_frac=(0.017, 0.06),
                              tilt=45.0, surfaces=(1, 2), distractors=(5, 12), tiny_prob=0.25, contrast=(18.0, 130.0),
                              blur_prob=0.6, motion_prob=0.25, occluders=(0, 4), min_care_contrast=20.0),
    "synth-td500": SynthConfig("synth-td500", 1, level="line", blocks=(2, 6), words_per_line=(2, 5),
                               font_frac=(0.025, 0.07), max_angle=50.0, tilt=30.0, contrast=(35.0, 190.0),
                               tiny_prob=0.1, blur_prob=0.3, jpeg_quality=(55, 95)),
    "synth-total": SynthConfig("synth-total", 2, shape="poly", blocks=(2, 6), lines_per_block=(1, 1),
                               words_per_line=(1, 3), font_frac=(0.035, 0.1), max_angle=20.0, tilt=25.0,
                               curve_prob=0.8, contrast=(30.0, 180.0), tiny_prob=0.1, jpeg_quality=(50, 95)),
    "synth-doc": SynthConfig("synth-doc", 3, blocks=(2, 5), lines_per_block=(2, 7), words_per_line=(2, 6),
                             font_frac=(0.018, 0.035), tiny_prob=0.05, max_angle=1.5, tilt=4.0, photo_prob=0.0,
                             paper_prob=1.0, surfaces=(0, 0), distractors=(1, 4), plate_prob=0.0, outline_prob=0.0,
                             shadow_prob=0.0, wear_prob=0.05, contrast=(110.0, 220.0), occluders=(0, 0),
                             light=0.15, shadow_cast_prob=0.1, blur_prob=0.25, blur_max=0.8, motion_prob=0.0,
                             noise_max=3.0, jpeg_quality=(70, 97)),
}


@dataclass
class Scene:
    image: np.ndarray                    # uint8 (H, W, 3) RGB
    instances: list                      # list[Instance]
    ink: np.ndarray | None = None        # float32 (H, W): visible text coverage before blur (with_ink=True)
    meta: dict = field(default_factory=dict)  # background subject, drawn patterns, words: used for captions


def _resolve(preset) -> SynthConfig:
    if isinstance(preset, SynthConfig):
        return preset
    if preset not in PRESETS:
        raise SynthError(f"unknown synthetic preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def with_text_scale(preset, text_scale: float = 1.0) -> SynthConfig:
    """The preset with its text sizes (font_frac) multiplied by `text_scale`: text_scale=2 on a 320 px canvas draws
    words as large in pixels as the preset draws them on a 640 px canvas (fewer fit in an image). The name stays,
    the config hash changes, so such sets never mix with the preset's own."""
    cfg = _resolve(preset)
    if not text_scale > 0:
        raise SynthError(f"text_scale must be > 0, got {text_scale}")
    if text_scale == 1.0:
        return cfg
    return dataclasses.replace(cfg, font_frac=tuple(f * text_scale for f in cfg.font_frac))


def _hw(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if min(h, w) < 32:
        raise SynthError(f"image size must be at least 32 pixels, got {size!r}")
    return int(h), int(w)


# ------------------------------------------------------------------------------------------------ words

_ONSETS = "b c d f g h j k l m n p r s t v w z br ch cl cr dr fl fr gl gr pl pr sh sl sp st str th tr".split()
_VOWELS = "a e i o u a e i o ai ea ee ie oa oo ou".split()
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "nt", "rk", "ck", "st", "sh", "x"]
_ENGLISH = """open closed sale exit stop park hotel cafe bank bar pizza shop market street road avenue free new hot
fresh coffee tea bread beer wine food taxi bus station metro train police school hospital pharmacy museum city
center north south east west left right enter push pull toilet hours daily menu lunch dinner salad burger grill
books music studio fashion shoes hair beauty market garden flowers bakery butcher fish meat fruit store office
bookshop welcome thank you please only parking no entry one way slow danger caution private public space rent
lease service repair auto tires gas oil wash express post mail bank loan money change gold silver jewel watch
phone mobile computer games toys sport club gym yoga dance cinema theatre ticket gate door floor level room
hall tower bridge river lake park zoo beach island airport ship port dock line zone area street lane square
best price deal offer special discount half off big super mega mini grand royal golden star sun moon blue red
green black white pink orange house home family kitchen table chair bed sofa lamp light sale now today open
""".split()
_PUNCT = "!.:?"


def _pseudo_word(rng) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(int(rng.integers(1, 4))))


def _number_like(rng) -> str:
    k = rng.integers(0, 9)
    n = lambda a, b: int(rng.integers(a, b))  # noqa: E731
    if k == 0:
        return str(n(0, 10 ** n(1, 6)))
    if k == 1:
        return f"{rng.choice(['$', '€', '£', ''])}{n(1, 500)}.{n(0, 100):02d}"
    if k == 2:
        return f"{n(5, 95)}%" if rng.random() < 0.5 else f"-{n(5, 80)}%"
    if k == 3:
        return f"{n(1, 29):02d}/{n(1, 13):02d}/{n(1990, 2031)}"
    if k == 4:
        return f"{n(1990, 2031)}-{n(1, 13):02d}-{n(1, 29):02d}"
    if k == 5:
        return f"{n(0, 24)}:{rng.choice(['00', '15', '30', '45'])}"
    if k == 6:
        letters = "".join(chr(65 + n(0, 26)) for _ in range(n(1, 4)))
        return f"{letters}{rng.choice(['-', ''])}{n(1, 1000)}"
    if k == 7:
        return f"{n(100, 1000)}-{n(1000, 10000)}"
    return f"www.{_pseudo_word(rng)}.{rng.choice(['com', 'net', 'org'])}"


def _word(rng) -> str:
    """One token: an English sign word, a pseudo-word or a number-like string, in a random case."""
    r = rng.random()
    if r < 0.22:
        return _number_like(rng)
    w = str(rng.choice(_ENGLISH)) if r < 0.6 else _pseudo_word(rng)
    c = rng.random()
    w = w.upper() if c < 0.4 else w.title() if c < 0.7 else w if c < 0.95 else \
        "".join(ch.upper() if rng.random() < 0.5 else ch for ch in w)
    return w + (str(rng.choice(list(_PUNCT))) if rng.random() < 0.07 else "")


# ------------------------------------------------------------------------------------------------ fonts

# matplotlib's own fonts; DejaVuSansDisplay/STIXNonUni/STIXSiz*/cmex/cmsy/cmmi have no plain latin letters.
_FONT_FILES = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
               "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
               "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
               "DejaVuSansMono-BoldOblique.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
               "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf"]
_FONT_MISSING = {"cmr10.ttf": "€", "cmb10.ttf": "€", "cmss10.ttf": "€", "cmtt10.ttf": "€", "cmti10.ttf": "€$"}


@functools.lru_cache(maxsize=None)
def _font_paths() -> tuple[str, ...]:
    import matplotlib

    d = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = tuple(str(d / f) for f in _FONT_FILES if (d / f).exists())
    if not paths:
        raise SynthError(f"no fonts found under {d}")
    return paths


@functools.lru_cache(maxsize=4096)
def _font(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


def _pick_font(rng, texts) -> str:
    path = str(rng.choice(_font_paths()))
    bad = _FONT_MISSING.get(Path(path).name, "")
    return _font_paths()[0] if any(c in bad for t in texts for c in t) else path


# ------------------------------------------------------------------------------------------------ backgrounds

# file, subject phrase for captions, kind ("texture": grey texture tinted; "photo": colour/grey photo)
_PHOTOS = {
    "brick": ("brick.png", "a brick wall", "texture"), "grass": ("grass.png", "grass", "texture"),
    "gravel": ("gravel.png", "gravel", "texture"), "astronaut": ("astronaut.png", "an astronaut", "photo"),
    "chelsea": ("chelsea.png", "a cat", "photo"), "coffee": ("coffee.png", "a cup of coffee", "photo"),
    "motorcycle_left": ("motorcycle_left.png", "a motorcycle in a garage", "photo"),
    "motorcycle_right": ("motorcycle_right.png", "a motorcycle in a garage", "photo"),
    "rocket": ("rocket.jpg", "a rocket on a launch pad", "photo"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "stars and galaxies", "photo"),
    "camera": ("camera.png", "a man with a camera", "photo"), "coins": ("coins.png", "old coins", "photo"),
    "horse": ("horse.png", "a horse", "photo"),
}  # never text.png / page.png / logo.png: they hold unannotated text


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB, loaded once per process from scikit-image's data folder."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SynthError("scikit-image is not installed; it ships the background photos")
    im = cv2.imread(str(Path(spec.origin).parent / "data" / _PHOTOS[name][0]), cv2.IMREAD_COLOR)
    if im is None:
        raise SynthError(f"could not read scikit-image sample {name!r}")
    return np.ascontiguousarray(im[:, :, ::-1])


@functools.lru_cache(maxsize=None)
def _grain() -> np.ndarray:
    """A fixed (1024, 1024, 3) unit-variance noise tile, cropped at random offsets for sensor noise."""
    return np.random.default_rng(12345).standard_normal((1024, 1024, 3), dtype=np.float32)


def _grain_crop(rng, h, w) -> np.ndarray:
    g = _grain()
    if h > g.shape[0] or w > g.shape[1]:
        g = np.tile(g, (h // g.shape[0] + 1, w // g.shape[1] + 1, 1))
    y, x = rng.integers(0, g.shape[0] - h + 1), rng.integers(0, g.shape[1] - w + 1)
    return g[y:y + h, x:x + w]


def _rand_colour(rng, sat=1.0) -> np.ndarray:
    """A random RGB colour, float32 (3,); saturation mostly low as in real scenes, scaled by `sat`."""
    hsv = np.uint8([[[rng.integers(0, 180), min(255, sat * 255 * rng.random() ** 1.5), rng.integers(15, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(3).astype(np.float32)


# sign boards: white, black, red, blue, green, yellow, brown, grey, orange (RGB), jittered when used
_SIGN_COLOURS = np.float32([[240, 240, 235], [25, 25, 30], [190, 30, 35], [20, 60, 150], [20, 110, 60],
                            [245, 200, 30], [110, 70, 40], [150, 150, 150], [235, 120, 30]])


def _sign_colour(rng) -> np.ndarray:
    c = _SIGN_COLOURS[rng.integers(len(_SIGN_COLOURS))] if rng.random() < 0.75 else _rand_colour(rng)
    return np.clip(c + rng.normal(0, 12, 3), 0, 255).astype(np.float32)


def _blend(sub, alpha, colour) -> None:
    """sub <- sub + alpha * (colour - sub) in place; sub float32 (h, w, 3), alpha float32 (h, w), colour a
    (3,) colour or an (h, w, 3) image. cv2 ops: numpy broadcasting over a trailing axis of 3 is slow."""
    a3 = cv2.merge([alpha, alpha, alpha])
    other = colour if np.ndim(colour) == 3 else tuple(float(c) for c in colour) + (0.0,)
    sub -= cv2.multiply(cv2.subtract(sub, other), a3)


def _mean_colour(sub) -> np.ndarray:
    return np.float32(cv2.mean(sub)[:3])


def _photo_crop(rng, h, w, names=None, tint=None) -> tuple[np.ndarray, str, str]:
    """A cropped, scaled, flipped, recoloured photo as uint8 (h, w, 3), its subject phrase and kind."""
    name = str(rng.choice(names or list(_PHOTOS)))
    src = _photo(name)
    sh, sw = src.shape[:2]
    s = rng.uniform(0.35, 1.0) * min(sh / h, sw / w)  # crop scale: source pixels per output pixel
    ch, cw = max(8, int(h * s)), max(8, int(w * s))
    y, x = rng.integers(0, sh - ch + 1), rng.integers(0, sw - cw + 1)
    im = cv2.resize(src[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        im = cv2.flip(im, 1)
    _, subject, kind = _PHOTOS[name]
    if tint is not None or kind == "texture" or rng.random() < 0.25:  # duotone: red bricks, green grass
        c0, c1 = tint if tint is not None else (_rand_colour(rng, 0.6) * 0.5, _rand_colour(rng, 0.6) * 0.5 + 127)
        lut = (c0 + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * (c1 - c0)).astype(np.uint8)
        return cv2.LUT(im, lut[:, None, :]), subject, kind  # channels are equal for grey sources
    mix = np.eye(3, dtype=np.float32) * rng.uniform(0.7, 1.1) + rng.uniform(-0.15, 0.25, (3, 3)).astype(np.float32)
    mix = mix / mix.sum(1, keepdims=True) * rng.uniform(0.7, 1.2)
    off = rng.uniform(-20, 20)
    return cv2.transform(im, np.hstack([mix, np.full((3, 1), off, np.float32)])), subject, kind


def _smooth_field(rng, h, w, cells=4, amp=1.0, ch=1) -> np.ndarray:
    """Low-frequency random field float32 (h, w) or (h, w, ch) with values in about [-amp, amp]."""
    lo = rng.uniform(-amp, amp, (cells, cells, ch) if ch > 1 else (cells, cells)).astype(np.float32)
    return cv2.resize(lo, (w, h), interpolation=cv2.INTER_CUBIC)


def _procedural(rng, h, w, paper=False) -> tuple[np.ndarray, str, str]:
    """Paper, gradient or plaster surface as uint8 (h, w, 3) with subject phrase and kind."""
    if paper:
        base = np.float32(rng.uniform(215, 252)) - np.array([0, rng.uniform(0, 8), rng.uniform(0, 20)], np.float32)
        lo = base + rng.uniform(-6, 6, (3, 3, 1)).astype(np.float32)
        im = cv2.resize(np.clip(lo, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        return im, str(rng.choice(["a sheet of paper", "a piece of paper", "a paper sheet"])), "paper"
    c0, c1 = _rand_colour(rng), _rand_colour(rng)
    if rng.random() < 0.5:  # linear gradient (bilinear upsampling of a 2x2 grid stays linear)
        t = np.array([[0, rng.random()], [rng.random(), 1]], np.float32)[..., None]
        lo, what = c0 + t * (c1 - c0), "a colour gradient"
        interp = cv2.INTER_LINEAR
    else:  # plaster / concrete: mottled low-frequency blend of two colours
        n = int(rng.integers(3, 12))
        lo = c0 + (rng.random((n, n, 1)).astype(np.float32) * 0.4) * (c1 - c0)
        what, interp = str(rng.choice(["a painted wall", "a concrete wall", "a plaster wall"])), cv2.INTER_CUBIC
    return cv2.resize(np.clip(lo, 0, 255).astype(np.uint8), (w, h), interpolation=interp), what, "plain"


def _background(rng, cfg, h, w) -> tuple[np.ndarray, dict]:
    """float32 (h, w, 3) background: a photo or procedural surface plus planar surfaces pasted over it."""
    paper = rng.random() < cfg.paper_prob
    im, subject, kind = (_photo_crop(rng, h, w) if not paper and rng.random() < cfg.photo_prob
                         else _procedural(rng, h, w, paper))
    im = im.astype(np.float32)
    for _ in range(int(rng.integers(cfg.surfaces[0], cfg.surfaces[1] + 1))):  # facades, boards, panels
        quad = _random_quad(rng, h, w)
        x0, y0 = np.maximum(np.floor(quad.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(quad.max(0)).astype(int) + 1, [w, h])
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        rh, rw = y1 - y0, x1 - x0
        tex = _photo_crop(rng, rh, rw)[0] if rng.random() < 0.4 else _procedural(rng, rh, rw)[0]
        mask = np.zeros((rh, rw), np.uint8)
        cv2.fillConvexPoly(mask, np.round((quad - [x0, y0]) * 16).astype(np.int32), 255, cv2.LINE_AA, 4)
        _blend(im[y0:y1, x0:x1], mask.astype(np.float32) / 255.0, tex.astype(np.float32))
    return im, {"subject": subject, "kind": kind, "patterns": []}


def _random_quad(rng, h, w) -> np.ndarray:
    """A large convex quad (a wall, a panel, a window) partly inside the frame."""
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    rw, rh = rng.uniform(0.2, 0.7) * w, rng.uniform(0.2, 0.7) * h
    q = np.array([[-rw, -rh], [rw, -rh], [rw, rh], [-rw, rh]], np.float32) / 2
    q += rng.uniform(-0.12, 0.12, (4, 2)).astype(np.float32) * np.float32([rw, rh])
    return q + np.float32([cx, cy])


# ------------------------------------------------------------------------------------------------ geometry

def _projection(rng, cfg, src_rect, center, angle_deg, f) -> np.ndarray:
    """3x3 homography taking the rectangle src_rect=(x0,y0,x1,y1) onto a plane tilted in 3-D, rotated in the
    image plane by angle_deg and centred at `center`; f is the focal length in pixels."""
    x0, y0, x1, y1 = src_rect
    hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
    yaw, pitch = (math.radians(v) for v in rng.uniform(-1, 1, 2) * (cfg.tilt, 0.6 * cfg.tilt))
    cyw, syw, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    ca, sa = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    dst = []
    for x, y in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)):  # corner -> yaw, pitch -> pinhole -> roll
        z0 = -syw * x
        px, py, z = cyw * x, cp * y - sp * z0, sp * y + cp * z0
        k = f / (f + z)
        dst.append((ca * px * k - sa * py * k + center[0], sa * px * k + ca * py * k + center[1]))
    src = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return cv2.getPerspectiveTransform(src, np.float32(dst))


def _apply_h(m, pts) -> np.ndarray:
    return cv2.perspectiveTransform(np.asarray(pts, np.float32).reshape(-1, 1, 2), m).reshape(-1, 2)


@dataclass(frozen=True)
class _Curve:
    """Bends a strip (u right, v down, centre (uc, vc)) onto an arc of radius r (>0 convex, <0 concave) or a
    wave y += amp * sin(k x + ph); `fwd` maps strip -> surface (centred on 0), `inv` maps surface -> strip."""
    r: float = 0.0
    amp: float = 0.0
    k: float = 0.0
    ph: float = 0.0
    uc: float = 0.0
    vc: float = 0.0

    def fwd(self, u, v):
        if self.r == 0:
            return u - self.uc, v - self.vc + self.amp * np.sin(self.k * (u - self.uc) + self.ph)
        big, s = abs(self.r), np.sign(self.r)
        phi, rad = (u - self.uc) / big, big + s * (self.vc - v)
        return rad * np.sin(phi), s * (big - rad * np.cos(phi))

    def inv(self, x, y):
        if self.r == 0:
            return x + self.uc, y - self.amp * np.sin(self.k * x + self.ph) + self.vc
        big, s = abs(self.r), np.sign(self.r)
        dy = s * big - y  # vector from point to centre (0, s*big), vertical part
        rad = np.sqrt(x * x + dy * dy)
        phi = np.arctan2(x, s * dy)
        return self.uc + big * phi, self.vc - s * (rad - big)


def _random_curve(rng, w, h) -> _Curve:
    if rng.random() < 0.65:  # arc spanning 0.6-2.4 rad
        r = max(w / rng.uniform(0.6, 2.4), 3.0 * h)  # short words bend gently, like text on a big circle
        return _Curve(r=float(r * rng.choice([-1, 1])), uc=w / 2, vc=h / 2)
    return _Curve(amp=float(rng.uniform(0.25, 0.7) * h), k=float(2 * np.pi * rng.uniform(0.4, 1.0) / max(w, 5 * h)),
                  ph=float(rng.uniform(0, 2 * np.pi)), uc=w / 2, vc=h / 2)


# ------------------------------------------------------------------------------------------------ text blocks

@dataclass
class _Block:
    layers: np.ndarray   # uint8 (h, w, k): coverage of the used layers among glyph, outline, shadow
    boxes: list          # per instance: ink box (x0, y0, x1, y1) in canvas pixel-centre coordinates
    texts: list
    px: int
    used: tuple = (True, False, False)  # which of glyph, outline, shadow are in `layers`


def _word_layers(font, text, sw, shadow) -> tuple[np.ndarray, tuple, tuple]:
    """uint8 (h, w, k) coverage of one word on its own small canvas (glyph, then outline and drop shadow when
    used), the ink box of their union and the pixel of the text anchor (left end of the baseline).
    Boxes come from the word's own pixels, so neighbours never leak into them."""
    l, t, r, b = font.getbbox(text, anchor="ls")
    e = sw + (int(np.abs(shadow).max()) + 1 if shadow is not None else 0) + 2
    ox, oy = e - l, e - t
    im = Image.new("L", (r - l + 2 * e, b - t + 2 * e), 0)
    ImageDraw.Draw(im).text((ox, oy), text, font=font, fill=255, anchor="ls")
    layers = [np.asarray(im)]
    if sw:
        layers.append(cv2.dilate(layers[0], cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * sw + 1, 2 * sw + 1))))
    if shadow is not None:  # drop shadow: the shifted, slightly blurred silhouette
        dx, dy = int(shadow[0]), int(shadow[1])
        src, shade = layers[-1], np.zeros_like(layers[0])
        hh, ww = shade.shape
        shade[max(dy, 0):hh + min(dy, 0), max(dx, 0):ww + min(dx, 0)] = \
            src[max(-dy, 0):hh + min(-dy, 0), max(-dx, 0):ww + min(-dx, 0)]
        layers.append(cv2.GaussianBlur(shade, (3, 3), 0))
    ink = (np.maximum(layers[-1], layers[-2]) if len(layers) > 1 else layers[0]) > 5
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    box = (cols[0], rows[0], cols[-1], rows[-1]) if len(rows) else None
    return (cv2.merge(layers) if len(layers) > 1 else layers[0][..., None]), box, (ox, oy)


def _render_block(rng, cfg, lines, font_path, px) -> _Block:
    """Lay out lines of words (PIL text in a matplotlib font) with optional outline, drop shadow and wear;
    returns the block canvas and each instance's ink box (word or line)."""
    font = _font(font_path, px)
    asc, desc = font.getmetrics()
    sw = int(rng.integers(1, max(2, round(px * 0.07)) + 1)) if rng.random() < cfg.outline_prob else 0
    shadow = None
    if rng.random() < cfg.shadow_prob:
        shadow = np.round(rng.uniform(0.03, 0.08, 2) * px).astype(int) * rng.choice([-1, 1], 2) + rng.choice([-1, 1], 2)
    space = font.getlength(" ") * rng.uniform(1.0, 1.5) + 2 * sw + 1
    lh = (asc + desc) * rng.uniform(1.0, 1.25) + 2 * sw
    words = [[_word_layers(font, t, sw, shadow) for t in ln] for ln in lines]
    adv = [[font.getlength(t) for t in ln] for ln in lines]
    widths = [sum(a) + space * (len(a) - 1) for a in adv]
    m = 4 + 2 * (sw + (int(np.abs(shadow).max()) + 1 if shadow is not None else 0))
    cw, ch = int(max(widths) + 2 * m), int(lh * (len(lines) - 1) + asc + desc + 2 * m)
    canvas = np.zeros((ch, cw, 1 + (sw > 0) + (shadow is not None)), np.uint8)
    align = rng.integers(0, 3)  # left, centre, right
    boxes, texts = [], []
    for i, (ln, wl, a, lw) in enumerate(zip(lines, words, adv, widths)):
        x, y = m + align * (max(widths) - lw) / 2, m + asc + i * lh  # y: baseline
        line_boxes = []
        for t, (layers, box, (ox, oy)), adv_t in zip(ln, wl, a):
            x0, y0 = int(round(x)) - ox, int(round(y)) - oy
            hh, ww = layers.shape[:2]
            sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + ww, cw), min(y0 + hh, ch)
            np.maximum(canvas[sy0:sy1, sx0:sx1], layers[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0],
                       out=canvas[sy0:sy1, sx0:sx1])
            if box is not None:
                line_boxes.append((t, (x0 + box[0] - 0.8, y0 + box[1] - 0.8, x0 + box[2] + 0.8, y0 + box[3] + 0.8)))
            x += adv_t + space
        if cfg.level == "line" and line_boxes:
            bx = [b for _, b in line_boxes]
            boxes.append((min(b[0] for b in bx), min(b[1] for b in bx), max(b[2] for b in bx), max(b[3] for b in bx)))
            texts.append(" ".join(t for t, _ in line_boxes))
        elif cfg.level != "line":
            boxes += [b for _, b in line_boxes]
            texts += [t for t, _ in line_boxes]
    if rng.random() < cfg.wear_prob:  # patchy paint: keep at least 40 % of the glyph and outline ink
        wear = np.clip(_smooth_field(rng, ch, cw, 6, 1.0) * 2.0 + 0.5, 0.4, 1.0)
        for k in range(1 + (sw > 0)):
            canvas[..., k] = (canvas[..., k] * wear).astype(np.uint8)
    return _Block(canvas, [tuple(float(v) for v in b) for b in boxes], texts, px,
                  (True, sw > 0, shadow is not None))


def _box_polygon(box, n_side) -> tuple[np.ndarray, np.ndarray]:
    """Top edge left->right and bottom edge right->left of an ink box, n_side points each (2 for a quad)."""
    x0, y0, x1, y1 = box
    if n_side == 2:
        return np.float32([x0, x1, x1, x0]), np.float32([y0, y0, y1, y1])
    u = np.linspace(x0, x1, n_side, dtype=np.float32)
    return np.concatenate([u, u[::-1]]), np.concatenate([np.full(n_side, y0), np.full(n_side, y1)]).astype(np.float32)


def _contrast_colour(rng, bg, lo, hi) -> tuple[np.ndarray, float]:
    """A random colour whose luma differs from bg's by about U(lo, hi); returns it and the achieved difference."""
    luma = lambda c: 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]  # noqa: E731
    lb, d = luma([float(v) for v in bg]), rng.uniform(lo, hi)
    up, down = 255 - lb, lb
    sign = (1 if rng.random() < 0.5 else -1) if min(up, down) >= d else (1 if up >= down else -1)
    target = min(255.0, max(0.0, lb + sign * d))
    c = [float(v) for v in _rand_colour(rng, rng.uniform(0, 1))]
    for _ in range(3):  # shift towards the target luma, clipping to the gamut
        shift = target - luma(c)
        c = [min(255.0, max(0.0, v + shift)) for v in c]
    return np.float32(c), abs(luma(c) - lb)


def _fill_poly(img, poly, colour, alpha=1.0) -> None:
    """Anti-aliased polygon fill of a float image, in place, only over its bounding box."""
    h, w = img.shape[:2]
    x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
    _blend(img[y0:y1, x0:x1], mask.astype(np.float32) * (alpha / 255.0), colour)


def _place_blocks(rng, cfg, img, ink, draw_text, meta) -> list[Instance]:
    """Lay out, place and composite all text blocks; returns instances (ignore set for tiny / faint text)."""
    h, w = img.shape[:2]
    short = min(h, w)
    occ = np.zeros((h // 4 + 1, w // 4 + 1), np.uint8)  # coarse occupancy: blocks never overlap
    n_side = cfg.poly_side if cfg.shape == "poly" else 2
    out = []
    for _ in range(int(rng.integers(cfg.blocks[0], cfg.blocks[1] + 1))):
        tiny = rng.random() < cfg.tiny_prob
        px = (rng.uniform(0.5, 1.0) * cfg.min_care_px if tiny
              else math.exp(rng.uniform(*np.log(cfg.font_frac))) * short)
        px = int(max(6, round(px)))
        lines = [[_word(rng) for _ in range(int(rng.integers(cfg.words_per_line[0], cfg.words_per_line[1] + 1)))]
                 for _ in range(int(rng.integers(cfg.lines_per_block[0], cfg.lines_per_block[1] + 1)))]
        curve = len(lines) == 1 and rng.random() < cfg.curve_prob
        font_path = _pick_font(rng, [t for ln in lines for t in ln])
        plate = rng.random() < cfg.plate_prob and not tiny
        ref = _font(font_path, 100)  # cap the size so the block fits the frame: widths scale with px
        per_px = max(sum(ref.getlength(t) for t in ln) + 40 * (len(ln) - 1) for ln in lines) / 100
        px = int(max(6, min(px, 0.8 * w / max(per_px, 1e-3), 0.75 * h / (1.3 * len(lines)))))
        placed = None
        for _attempt in range(3):  # shrink the font when a large block does not fit
            blk = _render_block(rng, cfg, lines, font_path, px)
            if blk.boxes:
                placed = _try_place(rng, cfg, blk, curve, plate, h, w, occ, n_side)
            if (placed is not None or max(blk.layers.shape[:2]) < 0.4 * short  # small: the frame is just full
                    or (not tiny and px * 0.7 < cfg.font_frac[0] * short)):  # never shrink below the preset
                break
            px = max(6, int(px * 0.7))
        if placed is None:
            continue
        m, crv, plate_quads, polys = placed
        if plate:
            fill_c = _sign_colour(rng)
            border = _sign_colour(rng) if rng.random() < 0.6 else fill_c * 0.7
            _fill_poly(img, plate_quads[0], border, rng.uniform(0.85, 1.0))
            _fill_poly(img, plate_quads[1], fill_c, rng.uniform(0.85, 1.0))
            meta["plates"] = meta.get("plates", 0) + 1
        all_pts = np.concatenate(polys)
        x0, y0 = np.maximum(np.floor(all_pts.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(all_pts.max(0)).astype(int) + 3, [w, h])
        under = np.zeros((y1 - y0, x1 - x0), np.uint8)  # the background right under the text
        cv2.fillPoly(under, [np.round(p - [x0, y0]).astype(np.int32) for p in polys], 255)
        bg, spread = (np.float32(v).reshape(3) for v in cv2.meanStdDev(img[y0:y1, x0:x1], mask=under))
        lo, hi = cfg.contrast
        col, achieved = _contrast_colour(rng, bg, *((max(lo, 70.0), max(hi, 160.0)) if plate else (lo, hi)))
        out_col = _contrast_colour(rng, col, 60, 200)[0]
        opacity = rng.uniform(0.75, 1.0)
        legible = achieved * opacity >= max(cfg.min_care_contrast, 0.7 * float(spread.mean()))  # vs texture
        warped = _warp_layers(blk.layers, m, crv, x0, y0, x1, y1)  # uint8 (y1 - y0, x1 - x0[, k])
        warped = warped.reshape(y1 - y0, x1 - x0, -1)
        layers = {k: warped[..., j] for j, k in enumerate(k for k in range(3) if blk.used[k])}
        if draw_text:
            sub = img[y0:y1, x0:x1]
            for k, c, a in ((2, (0, 0, 0), 0.6), (1, out_col, opacity), (0, col, opacity)):
                if k in layers:
                    _blend(sub, layers[k].astype(np.float32) * (a / 255.0), c)
        if ink is not None:
            ink[y0:y1, x0:x1] = np.maximum(ink[y0:y1, x0:x1], warped.max(2).astype(np.float32) / 255.0)
        for poly, text in zip(polys, blk.texts):
            hgt = float(np.linalg.norm(poly[:n_side] - poly[::-1][:n_side], axis=1).mean())
            ignore = hgt < cfg.min_care_px or not legible
            out.append(Instance(poly, "###" if ignore else text, ignore))
        meta.setdefault("words", []).extend(blk.texts)
        meta["curved"] = meta.get("curved", False) or curve
    return out


def _try_place(rng, cfg, blk, curve, plate, h, w, occ, n_side):
    """Find a homography (and curve) putting every ink polygon inside the frame on free space; None if none."""
    ch, cw = blk.layers.shape[:2]
    crv = _random_curve(rng, cw, ch) if curve else None
    pad = blk.px * rng.uniform(0.3, 0.8) if plate else 0.0
    if crv is None:
        rect = (-pad, -pad, cw + pad, ch + pad)
        outline = np.float32([[-pad, -pad], [cw + pad, -pad], [cw + pad, ch + pad], [-pad, ch + pad]])
    else:  # bounding rectangle of the bent strip on the surface
        us, vs = _box_polygon((0, 0, cw, ch), 16)
        xs, ys = crv.fwd(us, vs)
        outline = np.stack([xs, ys], 1).astype(np.float32)
        rect = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    f = rng.uniform(0.8, 2.0) * max(h, w)
    angle = float(np.clip(rng.normal(0, cfg.max_angle / 2.5), -cfg.max_angle, cfg.max_angle))
    uv = np.concatenate([np.stack(_box_polygon(b, n_side), 1) for b in blk.boxes])  # (n * 2 n_side, 2)
    if crv is not None:
        uv = np.stack(crv.fwd(uv[:, 0], uv[:, 1]), 1)
    for _ in range(6):
        center = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h)
        m = _projection(rng, cfg, rect, center, angle, f)
        pts = _apply_h(m, uv)
        if pts.min() < 1 or pts[:, 0].max() > w - 2 or pts[:, 1].max() > h - 2:
            continue
        region = _apply_h(m, outline)
        cand = np.zeros_like(occ)
        cv2.fillPoly(cand, [np.round(region / 4).astype(np.int32)], 1)
        if (cand & occ).any():
            continue
        occ |= cand
        plates = []
        if plate:
            b = blk.px * 0.12
            inner = np.float32([[-pad + b, -pad + b], [cw + pad - b, -pad + b], [cw + pad - b, ch + pad - b],
                                [-pad + b, ch + pad - b]])
            plates = [region, _apply_h(m, inner)]
        return m, crv, plates, [_valid_polygon(p, w, h) for p in pts.reshape(len(blk.boxes), -1, 2)]
    return None


def _valid_polygon(p, w, h) -> np.ndarray:
    """Clip to the frame; a bent polygon that self-intersects (never seen, but cheap to guard) -> its hull.
    Quads are projective images of rectangles in front of the camera, hence convex and valid."""
    import shapely

    p = np.clip(p, 0, [w - 1, h - 1]).astype(np.float32)
    if len(p) > 4 and not shapely.Polygon(p).is_valid:
        p = cv2.convexHull(p).reshape(-1, 2)
    return p


def _warp_layers(layers, m, crv, x0, y0, x1, y1) -> np.ndarray:
    """Pull the canvas layers into the scene box [x0,x1) x [y0,y1) through m (and the curve, if any)."""
    t = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    if crv is None:
        return cv2.warpPerspective(layers, t @ m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    mi = np.linalg.inv(m).astype(np.float32)
    den = mi[2, 0] * xs + mi[2, 1] * ys + mi[2, 2]
    sx = (mi[0, 0] * xs + mi[0, 1] * ys + mi[0, 2]) / den
    sy = (mi[1, 0] * xs + mi[1, 1] * ys + mi[1, 2]) / den
    u, v = crv.inv(sx, sy)
    return cv2.remap(layers, u.astype(np.float32), v.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ------------------------------------------------------------------------------------------------ distractors

def _pattern(rng, kind, ph, pw) -> np.ndarray:
    """A text-like but non-text pattern as uint8 alpha (ph, pw)."""
    a = np.zeros((ph, pw), np.uint8)
    t = max(1, int(min(ph, pw) * rng.uniform(0.02, 0.08)))
    if kind in ("stripes", "fence", "barcode", "tiles", "windows"):
        step = max(3 * t, int(pw * rng.uniform(0.04, 0.15)))
        xs = np.cumsum(rng.integers(1, 4, 200)) * (t + 1) if kind == "barcode" else np.arange(0, pw, step)
        for x in xs[xs < pw]:
            bw = int(rng.integers(1, 3)) * (t + 1) // 2 + 1 if kind == "barcode" else t
            cv2.rectangle(a, (int(x), 0), (int(x) + bw, ph), 255, -1)
        if kind == "fence":
            for y in rng.uniform(0.1, 0.9, int(rng.integers(1, 3))) * ph:
                cv2.rectangle(a, (0, int(y)), (pw, int(y) + t), 255, -1)
        if kind in ("tiles", "windows"):
            for y in np.arange(0, ph, step):
                cv2.rectangle(a, (0, int(y)), (pw, int(y) + t), 255, -1)
            if kind == "windows" and rng.random() < 0.5:  # filled panes inside the grid
                a = 255 - a
    elif kind == "marks":  # rows of glyph-sized blobs, dashes and bars: text rhythm without letters
        size = max(4, int(ph / rng.uniform(1.5, 4)))
        for y in range(size, ph - size // 2, int(size * 1.6)):
            x = int(rng.integers(0, size))
            shape = rng.integers(0, 4)
            while x < pw - size:
                s = int(size * rng.uniform(0.4, 1.0))
                if shape == 0:
                    cv2.circle(a, (x + s // 2, y - s // 2), max(1, s // 2), 255, t, cv2.LINE_AA)
                elif shape == 1:
                    cv2.rectangle(a, (x, y - s), (x + max(1, s // 4), y), 255, -1)
                elif shape == 2:
                    cv2.line(a, (x, y - s // 2), (x + s, y - s // 2), 255, t, cv2.LINE_AA)
                else:
                    cv2.ellipse(a, (x + s // 2, y - s // 2), (max(1, s // 2), max(1, s // 3)), 0, 0, 360, 255, -1)
                x += int(s * rng.uniform(1.1, 2.0))
    elif kind == "icon":  # arrows, rings, triangles, stars
        c, r = (pw // 2, ph // 2), int(min(ph, pw) * 0.4)
        k = rng.integers(0, 4)
        if k == 0:
            cv2.arrowedLine(a, (pw // 8, ph // 2), (7 * pw // 8, ph // 2), 255, 2 * t + 1, cv2.LINE_AA, 0, 0.4)
        elif k == 1:
            cv2.circle(a, c, r, 255, 2 * t + 1, cv2.LINE_AA)
        else:
            n = 3 if k == 2 else 10
            ang = np.linspace(0, 2 * np.pi, n, endpoint=False) - np.pi / 2
            rad = r * (np.where(np.arange(n) % 2, 0.45, 1.0) if n == 10 else 1.0)
            pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(a, [pts], 255, cv2.LINE_AA)
    elif kind == "rules":  # document rules, table grids, bars
        step = max(4, int(ph * rng.uniform(0.08, 0.25)))
        for y in range(step // 2, ph, step):
            cv2.line(a, (0, y), (pw, y), 255, 1)
        if rng.random() < 0.5:
            for x in np.linspace(0, pw - 1, int(rng.integers(2, 6))).astype(int):
                cv2.line(a, (x, 0), (x, ph), 255, 1)
    else:  # clutter: cables and blobs
        for _ in range(int(rng.integers(2, 7))):
            p = (rng.random((2, 2)) * [pw, ph]).astype(np.int32)
            if rng.random() < 0.5:
                cv2.line(a, tuple(p[0]), tuple(p[1]), 255, t, cv2.LINE_AA)
            else:
                cv2.ellipse(a, tuple(p[0]), (int(rng.integers(2, pw // 4 + 3)), int(rng.integers(2, ph // 4 + 3))),
                            float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    return a


_STREET_PATTERNS = ("stripes", "fence", "barcode", "tiles", "windows", "marks", "marks", "icon", "clutter")
_PATTERN_PHRASE = {"stripes": "stripes", "fence": "a fence", "barcode": "vertical bars", "tiles": "tiles",
                   "windows": "windows", "marks": "a row of dots and dashes", "icon": "a simple symbol",
                   "clutter": "cables", "rules": "ruled lines", "figure": "a figure"}


def _draw_distractors(rng, cfg, img, meta) -> None:
    h, w = img.shape[:2]
    short = min(h, w)
    kinds = ("rules", "rules", "marks", "figure", "icon") if cfg.paper_prob > 0.5 else _STREET_PATTERNS
    for _ in range(int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))):
        kind = str(rng.choice(kinds))
        ph = int(short * math.exp(rng.uniform(math.log(0.04), math.log(0.45))))
        pw = int(ph * math.exp(rng.uniform(-0.7, 1.5)))
        ph, pw = max(8, min(ph, h)), max(8, min(pw, w))
        if kind == "figure":  # a photo inset on a page
            patch = _photo_crop(rng, ph, pw)[0].astype(np.float32)
            y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            img[y:y + ph, x:x + pw] = patch
        else:
            alpha = _pattern(rng, kind, ph, pw).astype(np.float32) / 255.0
            m = _projection(rng, cfg, (0, 0, pw, ph), (rng.uniform(0, w), rng.uniform(0, h)),
                            float(rng.normal(0, cfg.max_angle / 2)), rng.uniform(0.8, 2.0) * max(h, w))
            q = _apply_h(m, [[0, 0], [pw, 0], [pw, ph], [0, ph]])
            x0, y0 = np.maximum(np.floor(q.min(0)).astype(int), 0)
            x1, y1 = np.minimum(np.ceil(q.max(0)).astype(int) + 1, [w, h])
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            a = _warp_layers(alpha, m, None, x0, y0, x1, y1)
            sub = img[y0:y1, x0:x1]
            col = _contrast_colour(rng, _mean_colour(sub), *cfg.contrast)[0]
            _blend(sub, a * rng.uniform(0.6, 1.0), col)
        meta["patterns"].append(kind)


# ------------------------------------------------------------------------------------------------ occluders, camera

def _occlude(rng, cfg, img, ink, instances) -> None:
    """Poles, blobs and photo patches in front of the text; instances hidden > 40 % become don't care."""
    h, w = img.shape[:2]
    n = int(rng.integers(cfg.occluders[0], cfg.occluders[1] + 1))
    if n == 0:
        return
    cover = np.zeros((h, w), np.uint8)
    for _ in range(n):
        target = instances[int(rng.integers(len(instances)))].polygon.mean(0) if instances and rng.random() < 0.7 \
            else rng.uniform(0, 1, 2) * [w, h]
        cx, cy = (target + rng.normal(0, 0.04 * min(h, w), 2)).astype(int)
        k = rng.integers(0, 3)
        if k == 0:  # pole / post
            dx, t = int(rng.normal(0, 0.15) * h), int(rng.uniform(0.01, 0.05) * w) + 2
            x0, x1 = max(0, min(cx - dx, cx + dx) - t), min(w, max(cx - dx, cx + dx) + t + 1)
            y0, y1 = 0, h
        else:  # foliage cluster or a passing object
            ax, ay = int(rng.uniform(0.02, 0.12) * w) + 2, int(rng.uniform(0.02, 0.12) * h) + 2
            r = max(ax, ay) + 1
            x0, x1, y0, y1 = max(0, cx - r), min(w, cx + r + 1), max(0, cy - r), min(h, cy + r + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        rh, rw = y1 - y0, x1 - x0
        one = np.zeros((rh, rw), np.uint8)
        if k == 0:  # a cylinder: lit across its width
            cv2.line(one, (cx - dx - x0, -10 - y0), (cx + dx - x0, h + 10 - y0), 255, t, cv2.LINE_AA)
            ys, xs = np.mgrid[0:rh, 0:rw].astype(np.float32)
            ln = math.hypot(2 * dx, h + 20)
            d = ((xs - (cx - dx - x0)) * (h + 20) - (ys + 10 + y0) * 2 * dx) / ln / (t / 2 + 1)
            shade = np.clip(0.35 + 0.8 * np.cos(np.clip(d - 0.3, -1.5, 1.5)), 0.2, 1.2).astype(np.float32)
            fill = cv2.merge([shade * c for c in _rand_colour(rng, 0.5)])
        elif k == 1:  # foliage: overlapping leaves textured with a green/brown duotone
            for _ in range(int(rng.integers(5, 14))):
                ex, ey = rng.normal(cx - x0, ax / 2), rng.normal(cy - y0, ay / 2)
                cv2.ellipse(one, (int(ex), int(ey)), (int(ax * rng.uniform(0.2, 0.5)) + 1,
                            int(ay * rng.uniform(0.15, 0.35)) + 1), float(rng.uniform(0, 180)), 0, 360, 255, -1,
                            cv2.LINE_AA)
            leaf = np.float32([rng.uniform(20, 90), rng.uniform(50, 140), rng.uniform(10, 60)])
            fill = _photo_crop(rng, rh, rw, ["grass"], (leaf * 0.3, leaf * 1.4))[0].astype(np.float32)
        else:  # an object cut from a photo
            cv2.ellipse(one, (int(cx - x0), int(cy - y0)), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 255, -1,
                        cv2.LINE_AA)
            fill = _photo_crop(rng, rh, rw)[0].astype(np.float32)
        a = one.astype(np.float32) / 255.0
        _blend(img[y0:y1, x0:x1], a, fill)
        if ink is not None:
            ink[y0:y1, x0:x1] *= 1.0 - a
        np.maximum(cover[y0:y1, x0:x1], one, out=cover[y0:y1, x0:x1])
    for inst in instances:
        x0, y0 = np.floor(inst.polygon.min(0)).astype(int)
        x1, y1 = np.ceil(inst.polygon.max(0)).astype(int) + 1
        pm = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(pm, [np.round(inst.polygon - [x0, y0]).astype(np.int32)], 1)
        covered = float(cover[y0:y1, x0:x1][pm > 0].mean()) / 255.0 if pm.any() else 1.0
        if covered > 0.4 and not inst.ignore:
            inst.text, inst.ignore = "###", True


def _camera(rng, cfg, img) -> np.ndarray:
    """Lighting (gradient, tint, cast shadow), blur and sensor noise on a float image; returns uint8."""
    h, w = img.shape[:2]
    sh, sw = h // 8 + 1, w // 8 + 1  # the light field is built at 1/8 resolution, upsampled once
    light = (1.0 + _smooth_field(rng, sh, sw, 3, cfg.light)[..., None]) * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    if rng.random() < cfg.shadow_cast_prob:  # a soft shadow cast across the scene
        sm = np.zeros((sh, sw), np.float32)
        cv2.fillConvexPoly(sm, (_random_quad(rng, h, w) / 8).astype(np.int32), 1.0)
        sm = cv2.GaussianBlur(sm, (0, 0), rng.uniform(0.5, 3))
        light *= (1.0 - rng.uniform(0.25, 0.6) * sm)[..., None]
    cv2.multiply(img, cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR), dst=img)
    scale = min(h, w) / 640
    if rng.random() < cfg.blur_prob:
        if rng.random() < cfg.motion_prob / max(cfg.blur_prob, 1e-6):  # motion blur: a line kernel
            n = int(rng.integers(3, max(4, int(9 * scale) + 1)))
            k = np.zeros((n, n), np.float32)
            a = rng.uniform(0, np.pi)
            c = (n - 1) / 2
            cv2.line(k, (int(round(c - c * math.cos(a))), int(round(c - c * math.sin(a)))),
                     (int(round(c + c * math.cos(a))), int(round(c + c * math.sin(a)))), 1.0, 1, cv2.LINE_AA)
            img = cv2.filter2D(img, -1, k / k.sum())
        else:
            img = cv2.GaussianBlur(img, (0, 0), max(0.3, rng.uniform(0.3, 1.0) * cfg.blur_max * max(scale, 0.5)))
    sigma = rng.uniform(0, cfg.noise_max)
    img = cv2.scaleAdd(_grain_crop(rng, h, w), sigma, img)
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _jpeg(rng, cfg, img, decode=True) -> tuple[np.ndarray | None, bytes | None]:
    """JPEG at a random quality, re-read in memory; returns (image, file bytes); bytes None when skipped,
    image None when decode=False (the writer only needs the bytes)."""
    if rng.random() >= cfg.jpeg_prob:
        return img, None
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])[1]
    if not decode:
        return None, buf.tobytes()
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), buf.tobytes()


# ------------------------------------------------------------------------------------------------ public API

def _render(cfg, rng, h, w, draw_text=True, with_ink=False, decode=True) -> tuple[Scene, bytes | None]:
    r_bg, r_text, r_occ, r_cam = rng.spawn(4)
    img, meta = _background(r_bg, cfg, h, w)
    _draw_distractors(r_bg, cfg, img, meta)
    ink = np.zeros((h, w), np.float32) if with_ink else None
    instances = _place_blocks(r_text, cfg, img, ink, draw_text, meta)
    _occlude(r_occ, cfg, img, ink, instances)
    img, jpg = _jpeg(r_cam, cfg, _camera(r_cam, cfg, img), decode)
    meta["preset"] = cfg.name
    return Scene(img, instances, ink, meta), jpg


def render_scene(preset_or_cfg, seed: int, index: int, size=640, *, draw_text=True, with_ink=False) -> Scene:
    """Render scene `index` of a preset: same (preset, seed, index, size) -> identical pixels and polygons.

    draw_text=False renders the very same scene with the glyphs left out (plates, patterns, noise stay);
    with_ink=True also returns `Scene.ink`, the visible text coverage before blur (for tests and debugging)."""
    cfg = _resolve(preset_or_cfg)
    h, w = _hw(size)
    return _render(cfg, np.random.default_rng([int(seed), int(index), cfg.preset_id]), h, w, draw_text, with_ink)[0]


# ------------------------------------------------------------------------------------------------ captioned scenes

@functools.lru_cache(maxsize=None)
def _caption_cfg(name: str, text_free: bool) -> SynthConfig:
    """A light variant of a preset for CLIP pre-training: few, large, legible words; cheap camera effects."""
    c = PRESETS[name]
    big = (0.06, 0.12) if c.paper_prob > 0.5 else (0.08, 0.2)
    return dataclasses.replace(
        c, name=f"{name}-caption", preset_id=100 + c.preset_id, blocks=(0, 0) if text_free else (1, 1),
        lines_per_block=(1, 1 + (c.lines_per_block[1] > 2)), words_per_line=(1, 2),
        font_frac=big, tiny_prob=0.0, surfaces=(0, 1), distractors=(0, 3) if text_free else (0, 2),
        occluders=(0, 0), contrast=(max(45.0, c.contrast[0]), max(120.0, c.contrast[1])), min_care_px=5.0,
        min_care_contrast=10.0, blur_prob=0.2,
        motion_prob=0.05, jpeg_prob=0.3, shadow_cast_prob=0.15)


_FREE_TEMPLATES = {
    "photo": ["a photo of {s}", "{s}", "a picture of {s}", "a close-up photo of {s}"],
    "texture": ["{s} texture", "a photo of {s}", "a close-up of {s}", "{s}"],
    "plain": ["{s}", "a photo of {s}", "a background of {s}"],
    "paper": ["{s}", "a photo of {s}", "a scan of {s}"],
}
_TEXT_TEMPLATES = {
    "plate": ['text {q} printed on a sign', 'a sign with the text {q}', 'a photo of a sign that says {q}',
              'the text {q} on a sign {on}'],
    "paper": ['a printed page with the text {q}', 'a document with the text {q}', 'text {q} printed on paper',
              'a photo of the text {q} on a page'],
    "curved": ['curved text {q} {on}', 'the word {q} written along a curve {on}', 'text {q} bent in an arc'],
    "plain": ['a photo of the word {q} {on}', 'text {q} {on}', 'the text {q} written {on}', 'text {q} painted {on}',
              'a photo of text {q} {on}'],
}


def _caption(rng, scene: Scene) -> str:
    meta = scene.meta
    subj, kind = meta["subject"], meta["kind"]
    care = sorted((i for i in scene.instances if not i.ignore), key=lambda i: -cv2.contourArea(i.polygon))
    if not scene.instances:  # describe the content, never the absence of text
        cap = str(rng.choice(_FREE_TEMPLATES[kind])).format(s=subj)
        if meta["patterns"] and rng.random() < 0.5:
            cap += f" with {_PATTERN_PHRASE[meta['patterns'][0]]}"
        return cap
    if not care:
        return f"faint text on {subj}"
    words = [care[0].text] + ([care[1].text] if len(care) > 1 and rng.random() < 0.4 else [])
    q = " and ".join(f'"{t}"' for t in words)
    on = f"over a photo of {subj}" if kind == "photo" else f"on {subj}"
    group = ("paper" if kind == "paper" else "plate" if meta.get("plates") else
             "curved" if meta.get("curved") and rng.random() < 0.5 else "plain")
    return str(rng.choice(_TEXT_TEMPLATES[group])).format(q=q, on=on)


def captioned_scene(seed: int, index: int, size=224, presets=None) -> tuple[np.ndarray, str, list]:
    """A (image uint8 (H, W, 3), caption, instances) triple for contrastive pre-training.

    Mixes the presets' domains; about 30 % of the scenes hold no text and are captioned by their content
    (`a photo of a cat`, `a brick wall texture with stripes`), text scenes quote their most prominent word(s)
    (`text "SALE" printed on a sign`). Same (seed, index, size, presets) -> same triple."""
    names = tuple(presets) if presets else tuple(PRESETS)
    for n in names:
        _resolve(n)
    h, w = _hw(size)
    rng = np.random.default_rng([int(seed), int(index), 1000])
    name = names[int(rng.integers(len(names)))]
    cfg = _caption_cfg(name, bool(rng.random() < 0.3))
    scene, _ = _render(cfg, rng, h, w)
    return scene.image, _caption(rng, scene), scene.instances


# ------------------------------------------------------------------------------------------------ writing sets

_NAME_RE = re.compile(r"^(img_(\d+)\.jpg|(poly_)?gt_img_(\d+)\.txt)$")


def _atomic_write(path: Path, write) -> None:
    """write(tmp_path) then rename: a crash never leaves a half-written file under the final name."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _paths(out: Path, i: int, shape: str) -> tuple[Path, Path]:
    ann = f"gt_img_{i}.txt" if shape == "quad" else f"poly_gt_img_{i}.txt"
    return out / "images" / f"img_{i}.jpg", out / "annotations" / ann


def _complete(img: Path, ann: Path) -> bool:
    if not ann.exists() or not img.exists() or img.stat().st_size < 4:
        return False
    with open(img, "rb") as f:
        f.seek(-2, os.SEEK_END)
        return f.read(2) == b"\xff\xd9"  # JPEG end-of-image marker


def _encode_scene(cfg, seed, index, size) -> tuple[Scene, bytes]:
    """The scene's instances and its JPEG file bytes (the camera's own JPEG when it made one, else quality 95;
    scene.image is None when the camera's JPEG is used: decoding it is not needed to write a set)."""
    h, w = _hw(size)
    scene, jpg = _render(cfg, np.random.default_rng([int(seed), int(index), cfg.preset_id]), h, w, decode=False)
    if jpg is None:
        jpg = cv2.imencode(".jpg", scene.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return scene, jpg


def _set_identity(preset, num, size, seed) -> dict:
    cfg = _resolve(preset)
    h, w = _hw(size)
    return {"generator": "tcm_kit.data.synth", "version": SYNTH_VERSION, "config": dataclasses.asdict(cfg),
            "num": int(num), "size": h if h == w else [h, w], "seed": int(seed)}


def _set_digest(preset, num, size, seed) -> str:
    """The manifest's config_hash: preset config + num/size/seed + generator version."""
    return config_hash(_set_identity(preset, num, size, seed))


def _write_one(job) -> int:
    cfg, i, size, seed, out = job
    scene, jpg = _encode_scene(cfg, seed, i, size)
    img_path, ann_path = _paths(out, i, cfg.shape)
    writer = write_icdar2015 if cfg.shape == "quad" else write_totaltext
    insts = [Instance(np.round(x.polygon, 1), x.text, x.ignore) for x in scene.instances]
    _atomic_write(ann_path, lambda p: writer(p, insts))
    _atomic_write(img_path, lambda p: p.write_bytes(jpg))
    return i


def _clear_set(out: Path) -> None:
    """Remove the files of an earlier synthetic set (only names this module writes)."""
    for sub in ("images", "annotations"):
        d = out / sub
        if d.is_dir():
            for p in d.iterdir():
                if _NAME_RE.match(p.name) or (p.name.startswith(".") and p.name.endswith(".tmp")):
                    p.unlink()


def _read_json(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _init_worker():
    cv2.setNumThreads(1)


def write_synth_set(preset, num: int, size=640, seed: int = 0, out=None, workers=None, progress=True) -> Path:
    """Write `num` scenes of a preset as out/images/img_<i>.jpg + out/annotations/(poly_)gt_img_<i>.txt.

    out/manifest.json (config hash of preset config + num/size/seed + generator version) is written last.
    Re-running with the same arguments returns at once when the manifest matches and every file is whole;
    an interrupted run (out/.synth_pending.json with the same hash) is completed, rendering only what is
    missing; a set made with other arguments (manifest or pending marker with another hash) is deleted and
    regenerated. A folder with files but neither a manifest nor a pending marker is refused (SynthError): they
    may be a real dataset, and nothing the kit did not write is deleted or overwritten."""
    cfg = _resolve(preset)
    if int(num) < 0:
        raise SynthError(f"num must be >= 0, got {num}")
    if out is None:
        raise SynthError("write_synth_set needs an output folder `out`")
    out = Path(out)
    ident = _set_identity(cfg, num, size, seed)
    size_rec, digest = ident["size"], config_hash(ident)
    manifest, pending = out / "manifest.json", out / ".synth_pending.json"
    paths = [_paths(out, i, cfg.shape) for i in range(num)]
    old, marker = _read_json(manifest), _read_json(pending)
    if old is not None and old.get("config_hash") == digest and all(_complete(*p) for p in paths):
        return out
    if old is None and marker is None:  # no sign that this module wrote what is there: never touch it
        foreign = sorted(str(p.relative_to(out)) for sub in ("images", "annotations") if (out / sub).is_dir()
                         for p in (out / sub).iterdir())
        if foreign:
            raise SynthError(f"{out} holds {len(foreign)} files that tcm-kit synth did not write (e.g. "
                             f"{foreign[0]}) and no manifest.json; give an empty or new --out folder")
    if (old is not None and old.get("config_hash") != digest) or (marker is not None and marker != digest):
        _clear_set(out)  # made with other arguments: regenerate from scratch
    trusted = marker == digest or (old is not None and old.get("config_hash") == digest)
    for sub in ("images", "annotations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _atomic_write(pending, lambda p: p.write_text(json.dumps(digest)))  # before the manifest goes: never neither
    manifest.unlink(missing_ok=True)
    for sub in ("images", "annotations"):  # drop leftovers: temp files, indices beyond num
        for p in (out / sub).iterdir():
            m = _NAME_RE.match(p.name)
            if (p.name.endswith(".tmp") and p.name.startswith(".")) or (m and int(m[2] or m[4]) >= num):
                p.unlink()
    todo = [i for i, p in enumerate(paths) if not (trusted and _complete(*p))]
    jobs = [(cfg, i, size_rec, int(seed), out) for i in todo]
    workers = max(1, min(int(workers or os.cpu_count() or 1), len(jobs) or 1))
    bar = tqdm(total=len(jobs), desc=f"{cfg.name} -> {out.name}", disable=not progress, unit="img")
    if workers == 1:
        for job in jobs:
            _write_one(job)
            bar.update()
    else:
        import multiprocessing as mp

        # spawn, not fork: a forked child of a process whose OpenCV thread pool is running can hang
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=max(1, min(16, len(jobs) // (8 * workers)))):
                bar.update()
    bar.close()
    _atomic_write(manifest, lambda p: p.write_text(json.dumps({**ident, "config_hash": digest,
                                                               "format": "icdar2015" if cfg.shape == "quad"
                                                               else "totaltext"}, indent=1)))
    pending.unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------------------ viewing

def show_scene(image, instances, ax=None, title=None):
    """Draw an image with its polygons: green = care, red dashed = don't care. Returns the axes."""
    from matplotlib.patches import Polygon as MplPolygon

    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]))[1]
    ax.imshow(image)
    for inst in instances:
        ax.add_patch(MplPolygon(inst.polygon, closed=True, fill=False, lw=1.2,
                                ec="red" if inst.ignore else "lime", ls="--" if inst.ignore else "-"))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def gallery(presets=None, seed: int = 0, n: int = 3, size=320):
    """A Figure with n scenes per preset (one row each) and their polygons, for the README."""
    from matplotlib.figure import Figure

    names = list(presets) if presets else list(PRESETS)
    fig = Figure(figsize=(3 * n, 3 * len(names)), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(names), n, squeeze=False))
    for r, name in enumerate(names):
        for c in range(n):
            s = render_scene(name, seed, c, size)
            show_scene(s.image, s.instances, ax=axes[r, c], title=f"{name} #{c}" if c == 0 else None)
    return fig
