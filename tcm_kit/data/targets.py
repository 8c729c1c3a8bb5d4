"""Head targets: DBNet probability / threshold maps and the stride-32 text mask for TCM's auxiliary loss.

Conventions: polygons are float32 (N, 2) arrays of (x, y) pixel coordinates with pixel centres on integers
(pixel (row i, col j) sits at (x=j, y=i)); maps are float32 (h, w). Polygon offsetting uses pyclipper on
coordinates scaled by `_CLIPPER_SCALE` so sub-pixel shapes survive its integer arithmetic.

DBNet facts used (Liao et al., AAAI 2020): the probability target is each text polygon shrunk inwards by
D = A (1 - r^2) / L (A area, L perimeter, r = 0.4); the threshold target lives in the polygon dilated outwards by
the same D, and is 1 - (distance to the polygon border) / D there, mapped to [thresh_min, thresh_max] = [0.3, 0.7].
Post-processing unclips a predicted region by D' = A' * ratio / L' with ratio 1.5 (`expand_polygon`).
"""
from __future__ import annotations

import cv2
import numpy as np
import pyclipper

from .formats import Instance

_CLIPPER_SCALE = 64.0  # pyclipper works on integers: 1/64 px resolution
_FILL_SHIFT = 4  # cv2.fillPoly fixed-point bits: 1/16 px resolution
_MAX_CHUNK = 1 << 20  # max pixels x segments evaluated at once in the distance computation


# ----------------------------------------------------------------------------- polygon geometry

def polygon_area(poly: np.ndarray) -> float:
    """Absolute shoelace area of a (N, 2) polygon."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_perimeter(poly: np.ndarray) -> float:
    """Length of the closed outline of a (N, 2) polygon."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 2:
        return 0.0
    return float(np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1).sum())


def offset_polygon(poly: np.ndarray, delta: float) -> np.ndarray:
    """Offset a polygon by `delta` pixels (> 0 grows, < 0 shrinks) with round joins.

    Returns the largest resulting polygon as float32 (M, 2), or an empty (0, 2) array when nothing is left.
    """
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return np.zeros((0, 2), np.float32)
    pco = pyclipper.PyclipperOffset()
    pco.ArcTolerance = 0.25 * _CLIPPER_SCALE  # round-join accuracy: a quarter pixel
    path = np.round(p * _CLIPPER_SCALE).astype(np.int64).tolist()
    pco.AddPath(path, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    out = pco.Execute(float(delta) * _CLIPPER_SCALE)
    out = [np.asarray(o, dtype=np.float64) / _CLIPPER_SCALE for o in out if len(o) >= 3]
    if not out:
        return np.zeros((0, 2), np.float32)
    best = max(out, key=polygon_area)
    return best.astype(np.float32)


def shrink_distance(poly: np.ndarray, ratio: float = 0.4) -> float:
    """DBNet / PSENet shrink offset D = A (1 - ratio^2) / L (0 for degenerate polygons)."""
    L = polygon_perimeter(poly)
    return polygon_area(poly) * (1.0 - ratio ** 2) / L if L > 0 else 0.0


def shrink_polygon(poly: np.ndarray, ratio: float = 0.4) -> np.ndarray:
    """Shrink a polygon inwards by D = A (1 - ratio^2) / L. float32 (M, 2), or (0, 2) if it vanishes."""
    d = shrink_distance(poly, ratio)
    if d <= 0:
        return np.zeros((0, 2), np.float32)
    return offset_polygon(poly, -d)


def expand_polygon(poly: np.ndarray, ratio: float = 1.5) -> np.ndarray:
    """Unclip a polygon outwards by D = A * ratio / L (DBNet post-processing uses ratio 1.5).

    float32 (M, 2), or (0, 2) for a degenerate input. Note: for a square this roughly undoes
    `shrink_polygon(., 0.4)`; for long thin text it gives back a thinner region than the original.
    """
    L = polygon_perimeter(poly)
    if L <= 0 or polygon_area(poly) <= 0:
        return np.zeros((0, 2), np.float32)
    return offset_polygon(poly, polygon_area(poly) * ratio / L)


def min_side(poly: np.ndarray) -> float:
    """The short side of the polygon's minimum-area rotated rectangle (0 for fewer than 3 points)."""
    p = np.asarray(poly, dtype=np.float32).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    (_, _), (rw, rh), _ = cv2.minAreaRect(p)
    return float(min(rw, rh))


def fill_polygons(canvas: np.ndarray, polys, value: float) -> np.ndarray:
    """Fill float polygons into `canvas` (h, w) in place with sub-pixel precision; returns canvas."""
    pts = [np.round(np.asarray(p, np.float64).reshape(-1, 2) * (1 << _FILL_SHIFT)).astype(np.int32)
           for p in polys if len(p) >= 2]
    if pts:
        cv2.fillPoly(canvas, pts, value, lineType=cv2.LINE_8, shift=_FILL_SHIFT)
    return canvas


def points_to_border(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Euclidean distance of each point to the closed outline of `poly`: poly (N, 2), pts (P, 2) -> float32 (P,).

    Point-to-segment distances for all N segments at once (numpy broadcasting), in chunks of points so that
    memory stays bounded.
    """
    p = np.asarray(poly, dtype=np.float32).reshape(-1, 2)
    pts = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
    a = p  # (S, 2) segment starts
    ab = np.roll(p, -1, axis=0) - p  # (S, 2) segment vectors
    ab2 = np.maximum((ab ** 2).sum(1), 1e-12)  # (S,)
    out = np.empty(len(pts), np.float32)
    step = max(1, _MAX_CHUNK // max(1, len(a)))
    for i in range(0, len(pts), step):
        q = pts[i:i + step]
        px = q[:, :1] - a[:, 0]  # (P, S) offsets from every segment start
        py = q[:, 1:] - a[:, 1]
        t = np.clip((px * ab[:, 0] + py * ab[:, 1]) / ab2, 0.0, 1.0)  # projection parameter on each segment
        dx = px - t * ab[:, 0]
        dy = py - t * ab[:, 1]
        out[i:i + step] = np.sqrt((dx * dx + dy * dy).min(1))
    return out


def distance_to_border(poly: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance of every grid point (xs x ys) to the outline of `poly`: xs (W,), ys (H,) -> float32 (H, W)."""
    gy, gx = np.meshgrid(np.asarray(ys, np.float32), np.asarray(xs, np.float32), indexing="ij")  # (H, W)
    return points_to_border(poly, np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)


# ----------------------------------------------------------------------------- DBNet targets

def _draw_border(canvas: np.ndarray, mask: np.ndarray, poly: np.ndarray, d: float) -> None:
    """Threshold-map contribution of one polygon: canvas = max(canvas, 1 - dist/d) inside the dilated polygon.

    canvas, mask: float32 (h, w), updated in place.
    """
    h, w = canvas.shape
    big = offset_polygon(poly, d)
    if len(big) == 0:
        return
    x0, y0 = np.floor(big.min(0)).astype(int) - 1
    x1, y1 = np.ceil(big.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 < x0 or y1 < y0:
        return  # dilated polygon entirely outside the image
    inside = fill_polygons(np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.float32), [big - (x0, y0)], 1.0)  # (ph, pw)
    band = inside.copy()  # pixels deeper than D inside the polygon get 0: skip them (2 px safety margin)
    core = offset_polygon(poly, -(d + 2.0))
    if len(core):
        fill_polygons(band, [core - (x0, y0)], 0.0)
    iy, ix = np.nonzero(band)  # only the band within ~D of the border, not the whole bounding box
    dist = points_to_border(poly, np.stack([ix + x0, iy + y0], 1))  # (P,)
    val = np.zeros_like(inside)
    val[iy, ix] = 1.0 - np.clip(dist / d, 0.0, 1.0)
    np.maximum(canvas[y0:y1 + 1, x0:x1 + 1], val, out=canvas[y0:y1 + 1, x0:x1 + 1])
    np.maximum(mask[y0:y1 + 1, x0:x1 + 1], inside, out=mask[y0:y1 + 1, x0:x1 + 1])


def shrunk_care_instances(instances: list[Instance], mask: np.ndarray, shrink_ratio: float, min_size: float):
    """Yield (polygon (N,2), shrink offset D, shrunk polygon) for each care instance whose shrink survives, and
    set `mask` to 0 over the whole polygon of every other one (don't-care, short side of the min-area rectangle
    below `min_size`, or a shrink that vanishes). Polygons with < 3 points are skipped. The one rule every
    head's targets share."""
    for inst in instances:
        poly = np.asarray(inst.polygon, np.float32).reshape(-1, 2)
        if len(poly) < 3:
            continue
        if inst.ignore or min_side(poly) < min_size:
            fill_polygons(mask, [poly], 0.0)
            continue
        d = shrink_distance(poly, shrink_ratio)
        kernel = offset_polygon(poly, -d) if d > 0 else np.zeros((0, 2), np.float32)
        if len(kernel) == 0 or polygon_area(kernel) <= 0:
            fill_polygons(mask, [poly], 0.0)
            continue
        yield poly, d, kernel


def db_targets(instances: list[Instance], h: int, w: int, shrink_ratio: float = 0.4, min_size: float = 8,
               thresh_min: float = 0.3, thresh_max: float = 0.7) -> dict[str, np.ndarray]:
    """DBNet training targets for one image of size (h, w). All four maps are float32 (h, w).

    - prob: 1 inside every care polygon shrunk by D = A (1 - r^2) / L, else 0.
    - prob_mask: 1 except (set to 0, and prob 0 there) the whole polygon of don't-care instances
      (`ignore=True`), of too-small instances (short side of the min-area rectangle < `min_size` px), and of
      polygons whose shrink vanishes (degenerate, zero-area).
    - thresh: thresh_min + (thresh_max - thresh_min) * max over care polygons of (1 - dist_to_border / D)
      clipped to [0, 1]; so values lie in [thresh_min, thresh_max], peak on the polygon border and fall to
      thresh_min at distance D from it (and everywhere else).
    - thresh_mask: 1 inside each care polygon dilated by D (where the threshold loss applies), else 0.
    Don't-care and too-small instances get no threshold target (as in the DBNet reference).
    """
    prob = np.zeros((h, w), np.float32)
    prob_mask = np.ones((h, w), np.float32)
    canvas = np.zeros((h, w), np.float32)  # 1 - normalised distance, in [0, 1]
    thresh_mask = np.zeros((h, w), np.float32)
    for poly, d, kernel in shrunk_care_instances(instances, prob_mask, shrink_ratio, min_size):
        fill_polygons(prob, [kernel], 1.0)
        _draw_border(canvas, thresh_mask, poly, d)
    prob[prob_mask == 0] = 0.0
    thresh = np.clip(thresh_min + (thresh_max - thresh_min) * canvas, thresh_min, thresh_max).astype(np.float32)
    return dict(prob=prob, prob_mask=prob_mask, thresh=thresh, thresh_mask=thresh_mask)


def shrink_targets(instances: list[Instance], h: int, w: int, shrink_ratio: float = 0.4,
                   min_size: float = 8) -> dict[str, np.ndarray]:
    """Only the `prob` and `prob_mask` maps of `db_targets` (same rules, no threshold map): the shrunk
    text-region map every head provides for TCM's auxiliary loss. float32 (h, w) each."""
    prob = np.zeros((h, w), np.float32)
    prob_mask = np.ones((h, w), np.float32)
    for _, _, kernel in shrunk_care_instances(instances, prob_mask, shrink_ratio, min_size):
        fill_polygons(prob, [kernel], 1.0)
    prob[prob_mask == 0] = 0.0
    return dict(prob=prob, prob_mask=prob_mask)
