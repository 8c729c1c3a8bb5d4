"""Augmentations that keep polygons in step with pixels, CLIP normalisation, and the text-detection dataset.

Every transform is a small callable class: `t(image, instances, rng) -> (image, instances)` with image uint8
(H, W, 3) RGB, instances a list of `Instance` (never modified in place: new ones are returned) and rng a
`np.random.Generator` (all randomness comes from it, so a seeded generator repeats a run exactly).
Coordinates follow OpenCV's convention: pixel centres on integers, so resizing maps x -> (x + 0.5) * s - 0.5
and a horizontal flip maps x -> W - 1 - x.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from .formats import Instance

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# the official TCM pipeline's img_norm_cfg_r50dcnv2 (configs/_base_/det_pipelines/dbnet_pipeline.py): DBNet's
# mean, ImageNet's std, RGB, on 0-255 pixels (here on 0-1)
DBNET_MEAN = (122.67891434 / 255, 116.66876762 / 255, 104.00698793 / 255)
IMAGENET_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)
PIXEL_NORMS = {"clip": (CLIP_MEAN, CLIP_STD), "dbnet": (DBNET_MEAN, IMAGENET_STD)}
# the uint8 colour that is 0 after either normalisation (both means round to it): what the official pipeline pads
# with, as it pads after normalising
MEAN_FILL = (123, 117, 104)


# ----------------------------------------------------------------------------- helpers on instances

def _with_polygon(inst: Instance, poly: np.ndarray, ignore: bool | None = None) -> Instance:
    """A copy of `inst` with a new polygon (and optionally a new ignore flag)."""
    return dataclasses.replace(inst, polygon=np.asarray(poly, np.float32).reshape(-1, 2),
                               ignore=inst.ignore if ignore is None else ignore)


def map_points(instances: list[Instance], fn) -> list[Instance]:
    """Apply fn: (N, 2) -> (N, 2) to every polygon; returns new instances."""
    return [_with_polygon(i, fn(np.asarray(i.polygon, np.float64))) for i in instances]


def affine_points(pts: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (2, 3) affine matrix -> (N, 2)."""
    return pts @ M[:, :2].T + M[:, 2]


def _largest_polygon(geom):
    """The largest shapely Polygon in a (multi-)geometry, or None."""
    from shapely.geometry import Polygon

    if geom.is_empty:
        return None
    if isinstance(geom, Polygon):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]
    return max(polys, key=lambda g: g.area) if polys else None


def clip_instances(instances: list[Instance], x0: float, y0: float, x1: float, y1: float,
                   min_keep: float = 0.5) -> list[Instance]:
    """Clip polygons to the box [x0, x1] x [y0, y1] (same coordinates as the polygons; no translation).

    Polygons wholly inside are kept as they are, wholly outside are dropped; cut ones are intersected with the
    box (shapely; the largest piece is kept) and marked don't-care when less than `min_keep` of their area
    remains.
    """
    from shapely.geometry import Polygon, box

    frame = box(x0, y0, x1, y1)
    out = []
    for inst in instances:
        p = np.asarray(inst.polygon, np.float64).reshape(-1, 2)
        if len(p) == 0:
            continue
        lo, hi = p.min(0), p.max(0)
        if lo[0] >= x0 and lo[1] >= y0 and hi[0] <= x1 and hi[1] <= y1:
            out.append(inst)
            continue
        if hi[0] < x0 or hi[1] < y0 or lo[0] > x1 or lo[1] > y1 or len(p) < 3:
            continue
        shape = Polygon(p)
        if not shape.is_valid:
            shape = shape.buffer(0)
        if shape.area <= 0:
            continue
        piece = _largest_polygon(shape.intersection(frame))
        if piece is None or piece.area <= 0:
            continue
        kept = piece.area / shape.area
        poly = np.asarray(piece.exterior.coords, np.float64)[:-1]  # drop the closing point
        out.append(_with_polygon(inst, poly, ignore=inst.ignore or kept < min_keep))
    return out


def _cuts(instances: list[Instance], x0: float, y0: float, x1: float, y1: float) -> tuple[int, int]:
    """(number of polygons the box cuts through, number of care polygons wholly inside), by bounding boxes."""
    cut = whole = 0
    for inst in instances:
        p = np.asarray(inst.polygon).reshape(-1, 2)
        if len(p) == 0:
            continue
        lo, hi = p.min(0), p.max(0)
        inside = lo[0] >= x0 and lo[1] >= y0 and hi[0] <= x1 and hi[1] <= y1
        outside = hi[0] < x0 or hi[1] < y0 or lo[0] > x1 or lo[1] > y1
        whole += inside and not inst.ignore
        cut += not inside and not outside
    return cut, whole


# ----------------------------------------------------------------------------- geometry transforms

def resize(image: np.ndarray, instances: list[Instance], new_w: int, new_h: int):
    """Resize to (new_h, new_w) and map polygons in step -> (image (new_h, new_w, 3), instances)."""
    h, w = image.shape[:2]
    sx, sy = new_w / w, new_h / h
    out = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR if sx * sy >= 1 else cv2.INTER_AREA)
    s = np.array([sx, sy])
    return out, map_points(instances, lambda p: (p + 0.5) * s - 0.5)


def resize_long_side(image: np.ndarray, instances: list[Instance], size: int):
    """Resize keeping the aspect ratio so the long side is `size` -> (image, instances, scale = new / original)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    image, instances = resize(image, instances, new_w, new_h)
    return image, instances, scale


def resize_to_scale(image: np.ndarray, instances: list[Instance], size):
    """Evaluation resize keeping the aspect ratio -> (image, instances, scale = new / original).

    size int: the long side becomes `size` (resize_long_side). size (long, short): mmcv's keep-ratio rescale, as
    the official test pipelines' Resize: the largest scale with long side <= long and short side <= short
    (official IC15 (4068, 1024): a 1280x720 image becomes 1820x1024), sides rounded as mmcv rounds them.
    """
    if isinstance(size, (int, np.integer)):
        return resize_long_side(image, instances, int(size))
    long, short = (int(v) for v in size)
    h, w = image.shape[:2]
    scale = min(max(long, short) / max(h, w), min(long, short) / min(h, w))
    new_w, new_h = max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))
    image, instances = resize(image, instances, new_w, new_h)
    return image, instances, scale


def pad_to(image: np.ndarray, h: int, w: int, value: int = 0) -> np.ndarray:
    """Pad bottom/right to at least (h, w) with a constant; polygons are unchanged by this."""
    ph, pw = max(0, h - image.shape[0]), max(0, w - image.shape[1])
    if ph == 0 and pw == 0:
        return image
    return cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(value,) * 3)


def pad_to_multiple(image: np.ndarray, divisor: int = 32, value: int = 0) -> np.ndarray:
    """Pad bottom/right so that height and width are multiples of `divisor`."""
    h, w = image.shape[:2]
    return pad_to(image, math.ceil(h / divisor) * divisor, math.ceil(w / divisor) * divisor, value)


class RandomScale:
    """Resize by a factor drawn uniformly from `scale_range`.

    With `long_side` set, the factor is relative to the image resized so its long side is `long_side`
    (so training sees the same text sizes as evaluation at that size, jittered); else relative to the image.
    """

    def __init__(self, scale_range=(0.5, 2.0), long_side: int | None = None):
        self.scale_range, self.long_side = tuple(scale_range), long_side

    def __call__(self, image, instances, rng):
        h, w = image.shape[:2]
        s = rng.uniform(*self.scale_range)
        if self.long_side is not None:
            s *= self.long_side / max(h, w)
        return resize(image, instances, max(1, round(w * s)), max(1, round(h * s)))

    def __repr__(self):
        return f"RandomScale(scale_range={self.scale_range}, long_side={self.long_side})"


class RandomRotate:
    """Rotate by an angle uniform in [-max_angle, max_angle] degrees (with probability p).

    expand=True grows the canvas so no pixel is lost (corners padded with `fill`, a grey level or an RGB colour);
    expand=False keeps the size (imgaug's Affine, fit_output=False) and clips polygons to the frame (see
    `clip_instances`).
    """

    def __init__(self, max_angle: float = 10.0, expand: bool = True, p: float = 1.0, fill: int = 0,
                 min_keep: float = 0.5):
        self.max_angle, self.expand, self.p, self.fill, self.min_keep = max_angle, expand, p, fill, min_keep

    def __call__(self, image, instances, rng):
        angle = rng.uniform(-self.max_angle, self.max_angle)
        if rng.random() >= self.p or angle == 0:
            return image, instances
        h, w = image.shape[:2]
        M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)  # (2, 3)
        out_w, out_h = w, h
        if self.expand:
            corners = affine_points(np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64), M)
            lo, hi = corners.min(0), corners.max(0)
            M[:, 2] -= lo
            out_w, out_h = int(math.ceil(hi[0] - lo[0])) + 1, int(math.ceil(hi[1] - lo[1])) + 1
        fill = tuple(self.fill) if isinstance(self.fill, (tuple, list)) else (self.fill,) * 3
        out = cv2.warpAffine(image, M, (out_w, out_h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
        instances = map_points(instances, lambda p: affine_points(p, M))
        if not self.expand:
            instances = clip_instances(instances, 0, 0, out_w - 1, out_h - 1, self.min_keep)
        return out, instances

    def __repr__(self):
        return f"RandomRotate(max_angle={self.max_angle}, expand={self.expand}, p={self.p})"


class RandomCrop:
    """Crop a fixed (size x size, or (h, w)) window; a smaller image is first padded bottom/right with `fill`.

    Up to `tries` random windows are drawn; the first one that cuts no polygon and holds at least one whole care
    instance (when the image has any) is taken, else the window cutting the fewest polygons. Polygons the window
    cuts are clipped (shapely) and marked don't-care when less than `min_keep` of their area remains.
    """

    def __init__(self, size, tries: int = 10, min_keep: float = 0.5, fill: int = 0):
        self.size = (size, size) if isinstance(size, int) else tuple(size)  # (h, w)
        self.tries, self.min_keep, self.fill = tries, min_keep, fill

    def __call__(self, image, instances, rng):
        ch, cw = self.size
        image = pad_to(image, ch, cw, self.fill)
        h, w = image.shape[:2]
        has_care = any(not i.ignore for i in instances)
        best, best_cut = (0, 0), None
        for _ in range(self.tries):
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            cut, whole = _cuts(instances, x0, y0, x0 + cw - 1, y0 + ch - 1)
            if cut == 0 and (whole > 0 or not has_care):
                best = (x0, y0)
                break
            if best_cut is None or cut < best_cut:
                best, best_cut = (x0, y0), cut
        x0, y0 = best
        crop = image[y0:y0 + ch, x0:x0 + cw].copy()
        kept = clip_instances(instances, x0, y0, x0 + cw - 1, y0 + ch - 1, self.min_keep)
        return crop, map_points(kept, lambda p: p - (x0, y0))

    def __repr__(self):
        return f"RandomCrop(size={self.size}, tries={self.tries}, min_keep={self.min_keep})"


def _free_runs(covered: np.ndarray) -> list[np.ndarray]:
    """The runs of consecutive indices where `covered` is 0."""
    free = np.flatnonzero(covered == 0)
    return [r for r in np.split(free, np.flatnonzero(np.diff(free) != 1) + 1) if len(r)]


class RegionCrop:
    """The official DBNet pipeline's crop (MMOCR's EastRandomCrop, min_crop_side_ratio 0.1): a random region
    whose edges lie on rows and columns free of care text, resized to fit a size x size canvas (aspect kept) and
    padded bottom/right with `fill`.

    Each of up to `tries` draws picks two free columns (from two random runs of free columns when there are
    several, else anywhere among the free ones) and two free rows; the region between them is taken when it is
    at least `min_side` of the image in both directions and touches a care polygon; else the whole image is
    used. Polygons wholly outside the region are dropped, the others kept whole (the region's edges cross no care
    text by construction).
    """

    def __init__(self, size: int, tries: int = 10, min_side: float = 0.1, fill=MEAN_FILL):
        self.size, self.tries, self.min_side, self.fill = int(size), tries, min_side, fill

    @staticmethod
    def _pick(runs: list[np.ndarray], free: np.ndarray, rng) -> tuple[int, int]:
        if len(runs) > 1:
            a, b = (int(rng.choice(runs[int(rng.integers(len(runs)))])) for _ in range(2))
        else:
            a, b = (int(v) for v in rng.choice(free, size=2))
        return min(a, b), max(a, b)

    def _region(self, image, instances, rng) -> tuple[int, int, int, int]:
        h, w = image.shape[:2]
        cols, rows = np.zeros(w, np.int32), np.zeros(h, np.int32)
        care = [np.round(np.asarray(i.polygon, np.float64).reshape(-1, 2)).astype(np.int64)
                for i in instances if not i.ignore and len(i.polygon)]
        for p in care:
            cols[max(0, p[:, 0].min()):max(0, p[:, 0].max())] = 1
            rows[max(0, p[:, 1].min()):max(0, p[:, 1].max())] = 1
        free_x, free_y = np.flatnonzero(cols == 0), np.flatnonzero(rows == 0)
        if not len(free_x) or not len(free_y):
            return 0, 0, w, h
        runs_x, runs_y = _free_runs(cols), _free_runs(rows)
        for _ in range(self.tries):
            x0, x1 = self._pick(runs_x, free_x, rng)
            y0, y1 = self._pick(runs_y, free_y, rng)
            if x1 - x0 < self.min_side * w or y1 - y0 < self.min_side * h:
                continue
            if any(not _outside(p, x0, y0, x1, y1) for p in care):
                return x0, y0, x1 - x0, y1 - y0
        return 0, 0, w, h

    def __call__(self, image, instances, rng):
        x0, y0, cw, ch = self._region(image, instances, rng)
        s = min(self.size / cw, self.size / ch)
        nw, nh = max(1, int(cw * s)), max(1, int(ch * s))
        canvas = np.empty((self.size, self.size, 3), np.uint8)
        canvas[:] = self.fill
        crop, _ = resize(image[y0:y0 + ch, x0:x0 + cw], [], nw, nh)
        canvas[:nh, :nw] = crop
        # the region's pixel edges map onto the resized crop's: x -> (x - x0 + 0.5) * s - 0.5
        moved = map_points(instances, lambda p: (p - (x0, y0) + 0.5) * (nw / cw, nh / ch) - 0.5)
        kept = [i for i in moved if len(i.polygon) and not _outside(i.polygon, 0, 0, nw, nh)]
        return canvas, kept

    def __repr__(self):
        return f"RegionCrop(size={self.size}, tries={self.tries}, min_side={self.min_side}, fill={self.fill})"


def _outside(poly, x0, y0, x1, y1) -> bool:
    """Whether a polygon lies wholly left, right, above or below the box [x0, x1] x [y0, y1]."""
    p = np.asarray(poly).reshape(-1, 2)
    return bool(p[:, 0].max() < x0 or p[:, 0].min() > x1 or p[:, 1].max() < y0 or p[:, 1].min() > y1)


class RandomFlip:
    """Horizontal flip with probability p. Off by default: text is not mirror-symmetric."""

    def __init__(self, p: float = 0.0):
        self.p = p

    def __call__(self, image, instances, rng):
        if rng.random() >= self.p:
            return image, instances
        w = image.shape[1]
        # reverse the vertex order to keep the orientation, then roll by N/2 so that a polygon listed
        # "top edge left to right, then bottom edge right to left" (ICDAR quads, Total-Text) still is
        flipped = map_points(instances, lambda q: np.roll(np.stack([w - 1 - q[:, 0], q[:, 1]], 1)[::-1],
                                                          len(q) // 2, axis=0))
        return np.ascontiguousarray(image[:, ::-1]), flipped

    def __repr__(self):
        return f"RandomFlip(p={self.p})"


class ResizePad:
    """Evaluation resize: long side to `size` keeping the aspect ratio, then pad to a multiple of `divisor`."""

    def __init__(self, size: int, divisor: int = 32, fill: int = 0):
        self.size, self.divisor, self.fill = size, divisor, fill

    def __call__(self, image, instances, rng=None):
        image, instances, _ = resize_long_side(image, instances, self.size)
        return pad_to_multiple(image, self.divisor, self.fill), instances

    def __repr__(self):
        return f"ResizePad(size={self.size}, divisor={self.divisor})"


# ----------------------------------------------------------------------------- photometric

JITTER_MODES = ("kit", "torchvision")


def _luma(img: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an RGB image (PIL's convert("L")), float (H, W)."""
    f = img.astype(np.float32)
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def _blend(img: np.ndarray, other, factor: float) -> np.ndarray:
    """factor * img + (1 - factor) * other, rounded and clipped to uint8 (PIL's ImageEnhance)."""
    out = factor * img.astype(np.float32) + (1.0 - factor) * np.asarray(other, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


class ColorJitter:
    """Random brightness / contrast (RGB) and saturation / hue (HSV) changes; polygons untouched.

    Factors are uniform in [1 - x, 1 + x] for brightness, contrast and saturation; the hue shift is uniform in
    [-hue, hue] of a full turn; a 0 switches a change off.
    mode "kit": brightness, contrast, then saturation and hue in HSV, in that order.
    mode "torchvision": torchvision's ColorJitter on a PIL image, as the official pipeline applies it (MMOCR's
    ColorJitter): the changes that are on, in a random order, each rounded to uint8; brightness scales the pixels,
    contrast blends with the mean grey level, saturation blends with the grey image (ITU-R 601-2 luma), hue
    shifts the HSV hue.
    """

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3, hue: float = 0.05,
                 p: float = 1.0, mode: str = "kit"):
        if mode not in JITTER_MODES:
            raise ValueError(f"jitter mode must be one of {JITTER_MODES}, got {mode!r}")
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p
        self.mode = mode

    def _torchvision(self, image, rng):
        ops = [k for k, x in (("b", self.brightness), ("c", self.contrast), ("s", self.saturation), ("h", self.hue))
               if x > 0]
        img = image
        for k in (ops[i] for i in rng.permutation(len(ops))):
            if k == "h":
                hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)  # H in [0, 180) for uint8
                hsv[..., 0] = np.mod(np.round(hsv[..., 0] + rng.uniform(-self.hue, self.hue) * 180.0), 180.0)
                img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
                continue
            x = {"b": self.brightness, "c": self.contrast, "s": self.saturation}[k]
            f = rng.uniform(max(0.0, 1 - x), 1 + x)
            if k == "b":
                img = _blend(img, 0.0, f)
            elif k == "c":
                img = _blend(img, np.round(_luma(img).mean()), f)
            else:
                img = _blend(img, np.round(_luma(img))[..., None], f)
        return img

    def __call__(self, image, instances, rng):
        if self.mode == "torchvision":
            if rng.random() >= self.p:
                return image, instances
            return self._torchvision(image, rng), instances
        b, c, s = (rng.uniform(1 - x, 1 + x) for x in (self.brightness, self.contrast, self.saturation))
        dh = rng.uniform(-self.hue, self.hue)
        if rng.random() >= self.p:
            return image, instances
        img = image.astype(np.float32) * b  # (H, W, 3)
        mean = img.mean()
        img = np.clip((img - mean) * c + mean, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)  # H in [0, 180) for uint8
        hsv[..., 0] = np.mod(hsv[..., 0] + dh * 180.0, 180.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * s, 0, 255)
        img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
        return img, instances

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}, p={self.p}, mode={self.mode!r})")


class Compose:
    """Apply transforms in order, all drawing from the same rng."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, instances, rng):
        for t in self.transforms:
            image, instances = t(image, instances, rng)
        return image, instances

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


AUG_PIPELINES = ("kit", "official")


def train_transforms(size: int, scale_range=(0.5, 2.0), max_angle: float = 10.0, flip_p: float = 0.0,
                     jitter: bool = True, *, pipeline: str = "kit",
                     color_jitter: tuple = (0.3, 0.3, 0.3, 0.05)) -> Compose:
    """A training pipeline; color_jitter = (brightness, contrast, saturation, hue) (see ColorJitter).

    "kit": scale (relative to the image resized to long side = size), rotate (the canvas grows), crop a
    size x size window, flip, colour jitter.
    "official" (the official DBNet pipeline, configs/_base_/det_pipelines/dbnet_pipeline.py train_pipeline_r50dcnv2):
    colour jitter (torchvision's), then imgaug's Fliplr(flip_p), Affine(rotate uniform in +-max_angle, the size
    kept), Resize(uniform in scale_range, relative to the image itself, both sides alike), then MMOCR's
    EastRandomCrop (RegionCrop) to size x size; what the rotation and the crop add is the mean colour (0 after
    the normalisation, as the official pipeline normalises before them).
    """
    if pipeline not in AUG_PIPELINES:
        raise ValueError(f"augmentation pipeline must be one of {AUG_PIPELINES}, got {pipeline!r}")
    if pipeline == "official":
        ts = [ColorJitter(*color_jitter, mode="torchvision")] if jitter else []
        if flip_p > 0:
            ts.append(RandomFlip(flip_p))
        if max_angle > 0:
            ts.append(RandomRotate(max_angle, expand=False, fill=MEAN_FILL))
        ts += [RandomScale(scale_range), RegionCrop(size, fill=MEAN_FILL)]
        return Compose(ts)
    ts = [RandomScale(scale_range, long_side=size)]
    if max_angle > 0:
        ts.append(RandomRotate(max_angle))
    ts.append(RandomCrop(size))
    if flip_p > 0:
        ts.append(RandomFlip(flip_p))
    if jitter:
        ts.append(ColorJitter(*color_jitter))
    return Compose(ts)


# ----------------------------------------------------------------------------- tensors

def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W), or a stack (B, H, W, 3) -> (B, 3, H, W), normalised with the
    OpenAI CLIP mean/std (the kit's one normalisation of images; `renormalize` converts to another)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).movedim(-1, -3).float().div_(255.0)  # (..., 3, H, W)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


def renormalize(x: torch.Tensor, norm: str) -> torch.Tensor:
    """A CLIP-normalised image tensor (..., 3, H, W) (what `to_tensor` gives) normalised instead with
    PIXEL_NORMS[norm]: a per-channel affine map, so x is unchanged for "clip"."""
    if norm not in PIXEL_NORMS:
        raise ValueError(f"pixel normalisation must be one of {tuple(PIXEL_NORMS)}, got {norm!r}")
    if norm == "clip":
        return x
    mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(3, 1, 1) for v in PIXEL_NORMS[norm])
    clip_mean, clip_std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    return (x * clip_std + clip_mean - mean) / std


def denormalize(x: torch.Tensor) -> np.ndarray:
    """Inverse of `to_tensor` for plotting: (3, H, W) -> uint8 (H, W, 3), or (B, 3, H, W) -> (B, H, W, 3)."""
    x = x.detach().float().cpu()
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    img = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return img.movedim(-3, -1).numpy()


# ----------------------------------------------------------------------------- dataset

class CorruptImageError(OSError):
    """An image file that is missing, truncated, corrupt or not an image; names the file and why."""

    def __init__(self, path, why: str = "missing, truncated or not an image"):
        self.path, self.why = Path(path), why
        super().__init__(f"cannot read image {path} ({why})")


# What libjpeg says, on stderr only, when it decodes a JPEG whose compressed data is damaged (jerror.h: the
# JWRN_* messages about the data); it fills what it cannot decode with grey or smears instead of failing.
_LIBJPEG_CORRUPT = ("Corrupt JPEG data", "Premature end of JPEG file")
_STDERR_LOCK = threading.Lock()

# EXIF Orientation (tag 0x0112) -> the flips and turns that show the stored pixels as displayed: PIL's
# ImageOps.exif_transpose table, which OpenCV's imread / imdecode apply too (unless IMREAD_IGNORE_ORIENTATION).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def exif_orientation(data: bytes) -> int:
    """The EXIF Orientation (1-8) of an encoded image, 1 when it has none or it cannot be read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _pil_orientation(im)
    except Exception:  # noqa: BLE001 - no readable EXIF: stored as displayed
        return 1


def _pil_orientation(im) -> int:
    value = im.getexif().get(0x0112, 1)
    return value if value in _ORIENT else 1


def _decode_watching_libjpeg(data: np.ndarray, flags: int):
    """cv2.imdecode with libjpeg's stderr messages caught -> (image or None, [corrupt-data messages]).

    Messages that are not about corrupt data are written on to stderr as they came."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to watch
        return cv2.imdecode(data, flags), []
    with _STDERR_LOCK, tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        os.dup2(caught.fileno(), 2)
        try:
            img = cv2.imdecode(data, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        lines = caught.read().decode("utf-8", "replace").splitlines()
    corrupt = [ln.strip() for ln in lines if ln.strip().startswith(_LIBJPEG_CORRUPT)]
    rest = [ln for ln in lines if ln.strip() and not ln.strip().startswith(_LIBJPEG_CORRUPT)]
    if rest:
        print("\n".join(rest), file=sys.stderr)
    return img, corrupt


def _to_rgb(img: np.ndarray) -> np.ndarray:
    """A decoded image as OpenCV gives it with IMREAD_UNCHANGED (grey, BGR or BGRA; 8 or 16 bit) -> uint8 RGB;
    transparency composited on white."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)  # as IMREAD_COLOR reduces 16-bit files
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:].astype(np.float32) / 255.0
        img = np.round(img[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path) -> np.ndarray:
    """The kit's one image decoder (training, evaluation, prediction and the inspection helpers): an image file
    -> uint8 (H, W, 3) RGB as displayed.

    - EXIF orientation is applied, so pixels and shape are those a viewer shows; ICDAR-style annotations are
      drawn on the displayed image. This is mmcv's convention too: LoadImageFromFile(color_type='color') ->
      mmcv.imfrombytes(flag='color') -> cv2.IMREAD_COLOR, which applies the orientation ('color_ignore_orientation'
      turns it off), and its pillow backend calls ImageOps.exif_transpose (mmcv/image/io.py).
    - transparency is composited on white; grey and 16-bit images become 8-bit RGB.
    - CorruptImageError names the file when it is missing, empty, not an image, truncated, or a JPEG whose
      compressed data libjpeg reports as corrupt (which OpenCV alone decodes, with a warning on stderr).
    """
    path = Path(path)
    if not path.is_file():
        raise CorruptImageError(path, "file not found")
    raw = np.fromfile(str(path), dtype=np.uint8)
    if raw.size == 0:
        raise CorruptImageError(path, "empty file")
    flags = cv2.IMREAD_UNCHANGED  # orientation applied below, the same way for every format
    if raw[:2].tobytes() == b"\xff\xd8":  # JPEG
        img, corrupt = _decode_watching_libjpeg(raw, flags)
        if corrupt:
            raise CorruptImageError(path, f"corrupt JPEG data: libjpeg says {corrupt[0]!r}")
    else:
        img = cv2.imdecode(raw, flags)
    if img is None or img.size == 0 or img.dtype not in (np.uint8, np.uint16) or img.ndim not in (2, 3):
        raise CorruptImageError(path)
    img = _to_rgb(img)
    turn = _ORIENT.get(exif_orientation(raw.tobytes()))
    return np.ascontiguousarray(turn(img)) if turn else img


class TextDetDataset(torch.utils.data.Dataset):
    """Text-detection samples of a folder, with a detector's training targets.

    root/fmt (and `split`) are read with `tcm_kit.data.formats.read_folder`. `indices` keeps a subset
    (positions in the folder's order; for few-shot splits). train=True: `aug` (default `train_transforms(size)`)
    then size x size images; train=False: resized by `resize_to_scale` (size: the long side, or a (long, short)
    box as the official test pipelines) and padded to a multiple of 32, no randomness. Item i draws its randomness
    from np.random.default_rng([seed, epoch, i]); call `set_epoch` each epoch (with DataLoader workers, before the
    iterator is created, i.e. not with persistent_workers). on_corrupt="raise" raises CorruptImageError when an
    unreadable image is loaded; "skip" checks every selected image when the dataset is built and drops unreadable
    ones with a warning.

    `targets` is a detector's target function, `(instances, h, w) -> dict of float32 numpy maps`
    (`Detector.target_fn()`); None (evaluation): no target maps.

    Items: {"image": float32 (3, H, W) CLIP-normalised, the target maps (e.g. DBNet's "prob", "prob_mask",
    "thresh", "thresh_mask" float32 (H, W)), "instances": list[Instance] in the item's coordinates, "path": str,
    "scale": float} where scale is resized / original size for evaluation items (divide predicted coordinates by
    it) and 1.0 for training items (random scale, rotation and crop cannot be undone by one number).
    """

    def __init__(self, root, fmt=None, size: int = 320, train: bool = True, seed: int = 0, indices=None, aug=None,
                 on_corrupt: str = "raise", split: str | None = None, progress: bool = True, targets=None):
        from .formats import read_folder  # imported here: formats may load lazily / optional readers

        if on_corrupt not in ("raise", "skip"):
            raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        if not isinstance(size, (int, np.integer)):
            if train or len(tuple(size)) != 2:
                raise ValueError(f"size must be a whole number (or, for evaluation, a (long, short) pair), got {size}")
            size = tuple(int(v) for v in size)
        elif size % 32:
            raise ValueError(f"size must be a multiple of 32, got {size}")
        self.root, self.size, self.train, self.seed, self.epoch = Path(root), size, train, seed, 0
        self.targets = targets
        self.aug = aug if aug is not None else (train_transforms(size) if train else None)
        samples = [(Path(p), list(inst)) for p, inst in read_folder(root, fmt, split=split)]
        if indices is not None:
            samples = [samples[int(i)] for i in indices]
        if on_corrupt == "skip":
            samples = self._drop_corrupt(samples, progress)
        self.samples = samples

    @staticmethod
    def _drop_corrupt(samples, progress):
        from tqdm.auto import tqdm

        good = []
        for path, inst in tqdm(samples, desc="checking images", disable=not progress):
            try:
                read_image(path)
            except CorruptImageError as e:
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=3)
                continue
            good.append((path, inst))
        return good

    def subset(self, indices) -> "TextDetDataset":
        """A copy that keeps the samples at `indices` (positions in this dataset's order; few-shot splits)."""
        sub = copy.copy(self)
        sub.samples = [self.samples[int(i)] for i in indices]
        return sub

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, instances = self.samples[index]
        image = read_image(path)  # (H0, W0, 3) RGB
        scale = 1.0
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            image, instances = self.aug(image, instances, rng)
        else:
            image, instances, scale = resize_to_scale(image, instances, self.size)
            image = pad_to_multiple(image, 32)
        h, w = image.shape[:2]
        item = {"image": to_tensor(image)}
        if self.targets is not None:
            item.update({k: torch.from_numpy(v) for k, v in self.targets(instances, h, w).items()})
        item.update(instances=instances, path=str(path), scale=float(scale))
        return item


def collate(batch: list[dict]) -> dict:
    """Stack a list of items into a batch.

    image (B, 3, H, W) and every target map (B, ...): items of different sizes (evaluation) are padded
    bottom/right to the largest, images with the normalised value of black (as `pad_to_multiple` pads), maps
    with 0 (so padding is outside every loss mask). instances, path and scale stay lists.
    """
    black = (-torch.tensor(CLIP_MEAN) / torch.tensor(CLIP_STD)).view(3, 1, 1)
    out = {}
    for k in batch[0]:
        if not torch.is_tensor(batch[0][k]):
            out[k] = [b[k] for b in batch]
            continue
        shape = [max(b[k].shape[d] for b in batch) for d in range(batch[0][k].ndim)]
        stacked = torch.zeros(len(batch), *shape, dtype=batch[0][k].dtype)
        if k == "image":
            stacked[:] = black
        for j, b in enumerate(batch):
            stacked[(j, *[slice(0, n) for n in b[k].shape])] = b[k]
        out[k] = stacked
    return out
