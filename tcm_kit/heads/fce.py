"""FCENet (Zhu et al., CVPR 2021): Fourier contour embedding for arbitrary-shaped text, as a plug-in head.

`FCENet` is the head that `tcm_kit.detector.Detector` joins to a backbone (`tcm.Backbone` or `tcm.TCM`).

Facts used (paper, and the authors' MMOCR settings where the paper leaves a choice):
- Neck: FPN over the backbone maps at strides 8, 16, 32 (the stride-4 map is unused): 1x1 laterals to `width`
  channels, top-down sum, 3x3 smooth convs -> P3, P4, P5.
- Head, shared by the three levels: a classification branch -> 4 channels (text region TR and text centre region
  TCL, 2-way logits each) and a regression branch -> 2(2k+1) channels (real parts of c_-k..c_k, then imaginary
  parts), k = 5. Each branch has `num_convs` conv3x3-ReLU layers (paper 4) before its output conv.
- Fourier contour embedding: the contour is resampled to N = 400 points evenly by arc length, clockwise in image
  coordinates (y down), starting at the rightmost intersection of the contour with the horizontal line through the
  polygon's centroid; z = x + iy, c_k = (1/N) sum_n z_n exp(-2πi k n / N) (np.fft); inverse
  z(t) = sum_k c_k exp(2πi k t), sampled at M = 50 points.
- Level assignment: proportion = max(bounding-box w, h) / max(image h, w) (MMOCR divides by the image height; the
  two agree on the square training crops); ranges (0, 0.25), (0.2, 0.65), (0.55, 1.0) for strides 8, 16, 32,
  inclusive, so an instance in an overlap goes to two levels. At a level it is not assigned to, an instance is
  background (as in MMOCR).

Coordinates: full-resolution pixel centres sit on integers (as tcm_kit.data.targets). Level-s pixel (i, j) is the
centre of the s x s block it summarises: full-resolution point (j·s + (s-1)/2, i·s + (s-1)/2). Targets and
decoding use "level units": u = (x - (s-1)/2) / s. A pixel's regression target is the instance's coefficients in
level units with c_0 taken relative to the pixel, c_0 - (j + i·1j) (MMOCR's convention: divided by the stride).

Text centre region (TCL): the paper's TCR is the band of 30% of the text height around the centre line (MMOCR
builds it from the two long sides, trimming the ends by h/4). We use a side-free equivalent: the pixels inside the
polygon at distance >= (1 - 0.3) / 2 · h from its border, where h is the thickness of the rectangle with the
polygon's area A and perimeter L (h = L/4 - sqrt(L²/16 - A)); for a rectangle or a bent band this leaves the
middle 30% of the height, the ends trimmed by 0.35 h. If no pixel of an assigned instance is that deep (tiny text
at a coarse level), its deepest pixels (>= 0.8 of the maximum depth) are used, so every assigned instance has a
centre region.
The text region TR is the polygon rasterised at the level (cv2.fillPoly, so cells the outline crosses count, as in
MMOCR); every TR pixel gets a regression target, and the loss uses those of the TCL (see FCELoss).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import shapely
import torch
import torch.nn as nn
import torch.nn.functional as F

from tcm_kit.data.targets import fill_polygons, min_side, points_to_border
from tcm_kit.heads.base import DetectorError, TextHead
from tcm_kit.losses import balanced_bce_ohem

__all__ = ["FCENet", "FCENeck", "FCEHead", "FCELoss", "FCETargets", "FCEPostprocess", "fce_postprocess",
           "resample_contour", "fourier_coefficients", "fourier_to_polygon", "assign_levels", "polygon_nms",
           "STRIDES", "LEVEL_RANGES"]

STRIDES = (8, 16, 32)
LEVEL_RANGES = ((0.0, 0.25), (0.2, 0.65), (0.55, 1.0))  # MMOCR 1.x level_proportion_range


# ---------------------------------------------------------------------------------------------------- Fourier

def _signed_area(p: np.ndarray) -> float:
    """Shoelace area; > 0 for a contour that is clockwise in image coordinates (y down)."""
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def resample_contour(poly: np.ndarray, n: int = 400) -> np.ndarray:
    """A polygon's contour resampled to `n` points evenly by arc length -> float64 (n, 2).

    Clockwise in image coordinates, starting at the rightmost intersection of the contour with the horizontal line
    through the polygon's centroid (the paper's canonical start point)."""
    p = np.asarray(poly, np.float64).reshape(-1, 2)
    if len(p) < 3 or n < 3:
        raise DetectorError(f"resample_contour needs a polygon of >= 3 points and n >= 3, got {len(p)} points, "
                            f"n={n}")
    area = _signed_area(p)
    if abs(area) < 1e-9:
        raise DetectorError("resample_contour got a zero-area polygon")
    if area < 0:
        p = p[::-1]
        area = -area
    a, b = p, np.roll(p, -1, axis=0)  # (P,2) edge starts / ends
    cr = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]  # (P,)
    cy = float(((a[:, 1] + b[:, 1]) * cr).sum() / (6.0 * area))  # centroid y
    ya, yb = a[:, 1], b[:, 1]
    crosses = ((ya - cy) * (yb - cy) <= 0) & (ya != yb)
    if crosses.any():
        t = np.where(crosses, (cy - ya) / np.where(crosses, yb - ya, 1.0), 0.0)
        xs = np.where(crosses, a[:, 0] + t * (b[:, 0] - a[:, 0]), -np.inf)
        e = int(np.argmax(xs))
        start = np.array([xs[e], cy])
    else:  # cannot happen for a simple polygon; keep a deterministic fallback
        e = int(np.argmax(p[:, 0])) - 1
        start = p[e + 1].copy()
    ring = np.vstack([start, p[e + 1:], p[:e + 1], start])  # closed, from the start point
    seg = np.linalg.norm(np.diff(ring, axis=0), axis=1)
    ring = np.vstack([ring[:1], ring[1:][seg > 1e-12]])  # drop zero-length segments (np.interp needs increasing xp)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(ring, axis=0), axis=1))])  # (R,)
    s = cum[-1] * np.arange(n) / n
    return np.stack([np.interp(s, cum, ring[:, 0]), np.interp(s, cum, ring[:, 1])], axis=1)


def fourier_coefficients(poly: np.ndarray, k: int = 5, n: int = 400) -> np.ndarray:
    """Fourier signature of a polygon: complex128 (2k+1,) = c_-k..c_k (c_0, the centre, at index k)."""
    if k < 1 or n < 2 * k + 1:
        raise DetectorError(f"Fourier degree k must be >= 1 and n >= 2k+1, got k={k}, n={n}")
    pts = resample_contour(poly, n)
    c = np.fft.fft(pts[:, 0] + 1j * pts[:, 1]) / n  # c[m] = c_m, negative m at n - |m|
    return np.concatenate([c[n - k:], c[:k + 1]])


def _inverse_basis(k: int, num_points: int) -> np.ndarray:
    """exp(2πi k t_m) for k = -K..K, t_m = m / M: complex128 (2K+1, M)."""
    ks = np.arange(-k, k + 1)[:, None]
    return np.exp(2j * np.pi * ks * np.arange(num_points)[None] / num_points)


def fourier_to_polygon(coeffs: np.ndarray, num_points: int = 50) -> np.ndarray:
    """Inverse Fourier transform: complex (..., 2k+1) coefficients -> float64 (..., num_points, 2) polygons."""
    c = np.asarray(coeffs)
    if c.shape[-1] % 2 == 0:
        raise DetectorError(f"Fourier coefficients need an odd last dimension 2k+1, got {c.shape}")
    z = c @ _inverse_basis(c.shape[-1] // 2, num_points)  # (..., M)
    return np.stack([z.real, z.imag], axis=-1)


def assign_levels(poly: np.ndarray, h: int, w: int,
                  ranges: Sequence[tuple[float, float]] = LEVEL_RANGES) -> list[int]:
    """Indices of the levels (into `ranges`) responsible for a polygon of an (h, w) image, by
    max(bounding-box w, h) / max(h, w) (clipped to [0, 1]) falling in a range (inclusive)."""
    p = np.asarray(poly, np.float64).reshape(-1, 2)
    size = float((p.max(0) - p.min(0)).max())
    prop = min(size / max(h, w, 1), 1.0)
    return [i for i, (lo, hi) in enumerate(ranges) if lo <= prop <= hi]


def _thickness(poly: np.ndarray) -> float:
    """Thickness of the rectangle with the polygon's area A and perimeter L: L/4 - sqrt(L²/16 - A)."""
    p = np.asarray(poly, np.float64)
    A = abs(_signed_area(p))
    L = float(np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1).sum())
    return L / 4.0 - np.sqrt(max(L * L / 16.0 - A, 0.0))


# ---------------------------------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class FCETargets:
    """(instances, h, w) -> FCENet's training maps for one image; picklable for DataLoader workers.

    Per stride s in `strides`, maps of (ceil(h/s), ceil(w/s)) float32:
      tr_s: 1 inside the care polygons assigned to level s (text region); tcl_s: their centre regions (see the
      module doc); mask_s: 0 on don't-care polygons and too-small care polygons (min-area-rectangle short side <
      `min_size` px), at every level, 1 elsewhere; reg_s (2(2k+1), ., .): on each assigned instance's TR pixels,
      its Fourier coefficients in level units, c_0 relative to the pixel (real parts c_-k..c_k, then imaginary).
    """
    fourier_degree: int = 5
    resample_points: int = 400
    strides: tuple = STRIDES
    level_ranges: tuple = LEVEL_RANGES
    center_ratio: float = 0.3
    min_size: float = 8

    def __post_init__(self):
        if len(self.strides) != len(self.level_ranges):
            raise DetectorError(f"FCETargets needs one level range per stride, got {self.strides} and "
                                f"{self.level_ranges}")
        if not 0 < self.center_ratio < 1:
            raise DetectorError(f"center_ratio must be in (0, 1), got {self.center_ratio}")
        if self.fourier_degree < 1 or self.resample_points < 2 * self.fourier_degree + 1:
            raise DetectorError(f"bad Fourier settings: degree {self.fourier_degree}, "
                                f"{self.resample_points} resample points")

    def __call__(self, instances, h: int, w: int) -> dict[str, np.ndarray]:
        K = self.fourier_degree
        nc = 2 * K + 1
        sizes = [(-(-h // s), -(-w // s)) for s in self.strides]
        tr = [np.zeros(sz, np.float32) for sz in sizes]
        tcl = [np.zeros(sz, np.float32) for sz in sizes]
        mask = [np.ones(sz, np.float32) for sz in sizes]
        reg = [np.zeros((2 * nc, *sz), np.float32) for sz in sizes]
        late = [[] for _ in sizes]  # (ys, xs, coeffs) of TCL pixels: written last so they keep their own instance
        for inst in instances:
            poly = np.asarray(inst.polygon, np.float64).reshape(-1, 2)
            if len(poly) < 3:
                continue
            if inst.ignore or min_side(poly) < self.min_size or abs(_signed_area(poly)) < 1e-6:
                for m, s in zip(mask, self.strides):
                    fill_polygons(m, [(poly - (s - 1) / 2) / s], 0.0)
                continue
            coef = fourier_coefficients(poly, K, self.resample_points)  # full-resolution pixels
            depth = (1.0 - self.center_ratio) / 2.0 * _thickness(poly)  # TCL: >= this far from the border
            for li in assign_levels(poly, h, w, self.level_ranges):
                s = self.strides[li]
                off = (s - 1) / 2.0
                lp = (poly - off) / s  # level units
                own = fill_polygons(np.zeros(sizes[li], np.uint8), [lp], 1)
                ys, xs = np.nonzero(own)
                if len(ys) == 0:
                    continue
                c = coef / s
                c[K] = (coef[K] - off * (1 + 1j)) / s
                rel = np.repeat(c[None], len(ys), axis=0)  # (P, 2K+1)
                rel[:, K] -= xs + 1j * ys
                vec = np.concatenate([rel.real, rel.imag], axis=1).T.astype(np.float32)  # (2(2K+1), P)
                tr[li][ys, xs] = 1.0
                reg[li][:, ys, xs] = vec
                dist = points_to_border(lp, np.stack([xs, ys], 1).astype(np.float32))  # (P,) level units
                inside = shapely.contains_xy(shapely.Polygon(lp), xs.astype(np.float64), ys.astype(np.float64))
                dist = np.where(inside, dist, 0.0)
                core = dist >= depth / s
                if not core.any():
                    core = inside & (dist >= 0.8 * dist.max()) if dist.max() > 0 else np.ones_like(inside)
                late[li].append((ys[core], xs[core], vec[:, core]))
        out = {}
        for li, s in enumerate(self.strides):
            for ys, xs, vec in late[li]:
                tcl[li][ys, xs] = 1.0
                reg[li][:, ys, xs] = vec
            tr[li] *= mask[li]
            tcl[li] *= tr[li]
            out.update({f"tr_{s}": tr[li], f"tcl_{s}": tcl[li], f"mask_{s}": mask[li], f"reg_{s}": reg[li]})
        return out


# ---------------------------------------------------------------------------------------------------- neck + head

class FCENeck(nn.Module):
    """FPN over the stride-8/16/32 maps: 1x1 laterals to `width`, top-down sum, 3x3 smooth convs.

    forward(4 maps at strides 4..32) -> [P3 (B,width,H/8,W/8), P4 (H/16), P5 (H/32)]."""

    def __init__(self, in_channels: Sequence[int], width: int = 256):
        super().__init__()
        if len(in_channels) != 4 or width < 1:
            raise DetectorError(f"FCENeck needs 4 input widths (strides 4..32) and width >= 1, got "
                                f"{list(in_channels)}, {width}")
        self.laterals = nn.ModuleList([nn.Conv2d(c, width, 1) for c in in_channels[1:]])
        self.smooth = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1) for _ in in_channels[1:]])

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != 4:
            raise DetectorError(f"FCENeck expects 4 feature maps (strides 4..32), got {len(feats)}")
        lat = [conv(f) for conv, f in zip(self.laterals, feats[1:])]  # 3 x (B,width,H/s,W/s)
        for i in range(len(lat) - 2, -1, -1):  # top-down: P5 -> P3
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.smooth, lat)]


def _branch(width: int, num_convs: int, out: int, norm: bool = False) -> nn.Sequential:
    """num_convs x (conv3x3[-GroupNorm]-ReLU) then conv3x3 -> out channels (output conv init N(0, 0.01), bias 0)."""
    layers = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(width, width, 3, padding=1, bias=not norm))
        if norm:
            layers.append(nn.GroupNorm(math.gcd(32, width), width))
        layers.append(nn.ReLU(inplace=True))
    last = nn.Conv2d(width, out, 3, padding=1)
    nn.init.normal_(last.weight, std=0.01)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class FCEHead(nn.Module):
    """The prediction head shared by all levels.

    forward(x (B,width,h,w)) -> (cls (B,4,h,w): TR logits (2) + TCL logits (2), reg (B,2(2k+1),h,w)).
    norm=True puts a GroupNorm after each hidden conv (as FCOS's head; not in the FCENet paper): without it a
    branch's ReLUs can all die early in training (reports/NOTES.md)."""

    def __init__(self, width: int = 256, fourier_degree: int = 5, num_convs: int = 4, norm: bool = False):
        super().__init__()
        if fourier_degree < 1 or num_convs < 0:
            raise DetectorError(f"FCEHead needs fourier_degree >= 1 and num_convs >= 0, got {fourier_degree}, "
                                f"{num_convs}")
        self.cls = _branch(width, num_convs, 4, norm)
        self.reg = _branch(width, num_convs, 2 * (2 * fourier_degree + 1), norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls(x), self.reg(x)


# ---------------------------------------------------------------------------------------------------- loss

def _fourier_points(real: torch.Tensor, imag: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, 2k+1) real and imaginary coefficient parts -> contour x, y (P, num_points)."""
    k = real.shape[-1] // 2
    ks = torch.arange(-k, k + 1, device=real.device, dtype=torch.float32)[:, None]
    t = torch.arange(num_points, device=real.device, dtype=torch.float32)[None] / num_points
    ang = 2 * torch.pi * ks * t  # (2k+1, M)
    cos, sin = torch.cos(ang), torch.sin(ang)
    return real @ cos - imag @ sin, real @ sin + imag @ cos


class FCELoss(nn.Module):
    """L = Σ_levels tr_weight·L_tr + tcl_weight·L_tcl + reg_weight·L_reg.

    L_tr: cls_loss "ce" (the paper, MMOCR): 2-way cross entropy with OHEM (all positives + the hardest ohem_ratio x
      as many negatives) in mask_s (ohem_ratio=None: class-balanced, no mining); cls_loss "balanced": the
      class-balanced cross entropy (mean over text pixels + mean over the others, no mining) in mask_s.
    L_tcl: 2-way cross entropy on the TR pixels, cls_loss "ce" its plain mean, "balanced" the mean over the centre
      pixels + the mean over the other TR pixels (+ tcl_outside_weight x the mean over the pixels outside TR;
      MMOCR uses 0.5, the paper 0). Small words have centre regions of a pixel or two at their level, so the plain
      mean is ruled by the rim: with "ce" the centre probability stayed under 0.4 after 400 cpu-plan steps, TR
      under 0.3 (mined equilibrium), and TR·TCL² never passed the score threshold. (A dice loss here let the
      logits grow without bound: Adam keeps stepping on the saturated sigmoid's tiny gradients, and the head has
      no normalisation.) L_reg: smooth L1 (level units) between the contours (num_points points) rebuilt from
      the predicted and the target coefficients, on the TCL pixels (+ the other TR pixels with weight
      tr_reg_weight; MMOCR 0.5, the paper 0), x and y summed, averaged over points and (weighted) pixels.
    forward(out, batch) -> dict(loss, loss_tr, loss_tcl, loss_reg)."""

    def __init__(self, tr_weight: float = 1.0, tcl_weight: float = 1.0, reg_weight: float = 1.0,
                 ohem_ratio: float | None = 3.0, num_points: int = 50, tcl_outside_weight: float = 0.0,
                 tr_reg_weight: float = 0.0, strides: Sequence[int] = STRIDES, cls_loss: str = "ce"):
        super().__init__()
        if cls_loss not in ("ce", "balanced"):
            raise DetectorError(f"cls_loss must be 'ce' or 'balanced', got {cls_loss!r}")
        self.cls_loss = cls_loss
        self.tr_weight, self.tcl_weight, self.reg_weight = tr_weight, tcl_weight, reg_weight
        self.ohem_ratio, self.num_points = ohem_ratio, num_points
        self.tcl_outside_weight, self.tr_reg_weight = tcl_outside_weight, tr_reg_weight
        self.strides = tuple(strides)

    def _level(self, out: dict, batch: dict, s: int) -> tuple[torch.Tensor, ...]:
        tr_logits, tcl_logits, reg = out[f"tr_logits_{s}"], out[f"tcl_logits_{s}"], out[f"reg_{s}"]
        tr, tcl, mask, reg_t = batch[f"tr_{s}"], batch[f"tcl_{s}"], batch[f"mask_{s}"], batch[f"reg_{s}"]
        if tr.shape != tr_logits.shape[:1] + tr_logits.shape[2:] or reg_t.shape != reg.shape:
            raise DetectorError(f"stride-{s} targets {tuple(tr.shape)}, {tuple(reg_t.shape)} do not match the "
                                f"predictions {tuple(tr_logits.shape)}, {tuple(reg.shape)}")
        zero = (tr_logits.sum() + tcl_logits.sum() + reg.sum()) * 0.0  # keeps the graph connected
        # TR: 2-way softmax CE == BCE on the logit difference
        tr_diff = tr_logits[:, 1].float() - tr_logits[:, 0].float()  # (B,h,w)
        valid = mask > 0.5
        pos = (tr > 0.5) & valid  # (B,h,w)
        ce = F.cross_entropy(tcl_logits.float(), (tcl > 0.5).long(), reduction="none")  # (B,h,w)
        if self.cls_loss == "balanced":
            l_tr = balanced_bce_ohem(tr_diff, tr, mask, neg_ratio=None)
            tcl_diff = tcl_logits[:, 1].float() - tcl_logits[:, 0].float()  # (B,h,w)
            l_tcl = balanced_bce_ohem(tcl_diff, tcl, pos.float(), neg_ratio=None) if pos.any() else zero
        else:
            l_tr = balanced_bce_ohem(tr_diff, tr, mask, neg_ratio=self.ohem_ratio)
            l_tcl = ce[pos].mean() if pos.any() else zero
        neg = valid & ~pos
        if self.tcl_outside_weight and neg.any():
            l_tcl = l_tcl + self.tcl_outside_weight * ce[neg].mean()
        w = ((tcl > 0.5) & pos).float() + self.tr_reg_weight * ((tcl <= 0.5) & pos).float()  # (B,h,w)
        sel = w > 0
        if not sel.any():
            return l_tr, l_tcl, zero
        nc = reg.shape[1] // 2
        p = reg.permute(0, 2, 3, 1)[sel].float()  # (P, 2(2k+1))
        g = reg_t.permute(0, 2, 3, 1)[sel].float()
        px, py = _fourier_points(p[:, :nc], p[:, nc:], self.num_points)  # (P, M)
        gx, gy = _fourier_points(g[:, :nc], g[:, nc:], self.num_points)
        per_pixel = (F.smooth_l1_loss(px, gx, reduction="none") +
                     F.smooth_l1_loss(py, gy, reduction="none")).mean(1)  # (P,)
        wp = w[sel]
        return l_tr, l_tcl, (per_pixel * wp).sum() / wp.sum()

    def forward(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        need = [f"{n}_{s}" for s in self.strides for n in ("tr", "tcl", "mask", "reg")]
        missing = [k for k in need if k not in batch]
        if missing:
            raise DetectorError(f"FCENet targets missing from the batch: {missing}")
        missing = [f"{n}_{s}" for s in self.strides for n in ("tr_logits", "tcl_logits", "reg")
                   if f"{n}_{s}" not in out]
        if missing:
            raise DetectorError(f"FCENet outputs missing: {missing}")
        parts = [self._level(out, batch, s) for s in self.strides]
        l_tr, l_tcl, l_reg = (sum(p[i] for p in parts) for i in range(3))
        loss = self.tr_weight * l_tr + self.tcl_weight * l_tcl + self.reg_weight * l_reg
        return {"loss": loss, "loss_tr": l_tr, "loss_tcl": l_tcl, "loss_reg": l_reg}


# ---------------------------------------------------------------------------------------------------- post-processing

def polygon_nms(polys: np.ndarray, scores: np.ndarray, thresh: float = 0.1) -> np.ndarray:
    """Greedy polygon NMS: polys (P, M, 2), scores (P,) -> indices kept, by decreasing score.

    A candidate is dropped when its IoU with a kept, higher-scored polygon exceeds `thresh`. Shapely's vectorised
    operations; one iteration per kept polygon, the exact IoU computed only against candidates whose bounding-box
    overlap could reach `thresh`. Self-intersecting polygons are repaired with make_valid (the "structure" method,
    10x faster than "linework" here); zero-area ones are dropped."""
    polys = np.asarray(polys, np.float64)
    if len(polys) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    polys = polys[order]
    geoms = shapely.polygons(polys)
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms[bad] = shapely.make_valid(geoms[bad], method="structure", keep_collapsed=False)
    areas = shapely.area(geoms)
    lo, hi = polys.min(1), polys.max(1)  # (P,2) boxes
    alive = areas > 0
    keep = []
    while True:
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        i, rest = idx[0], idx[1:]
        keep.append(i)
        alive[i] = False
        box = np.clip(np.minimum(hi[rest], hi[i]) - np.maximum(lo[rest], lo[i]), 0, None).prod(1)  # (R,)
        # IoU <= box overlap / (a_i + a_j - box overlap): the exact IoU only where that bound passes
        near = rest[box > thresh * np.maximum(areas[i] + areas[rest] - box, 1e-9)]
        if len(near):
            inter = shapely.area(shapely.intersection(geoms[i], geoms[near]))
            iou = inter / np.maximum(areas[i] + areas[near] - inter, 1e-9)
            alive[near[iou > thresh]] = False
    return order[np.asarray(keep, np.int64)]


def fce_postprocess(maps: dict, strides: Sequence[int] = STRIDES, score_thresh: float = 0.3,
                    box_thresh: float = 0.5, nms_thresh: float = 0.1, alpha: float = 1.0, beta: float = 2.0,
                    num_points: int = 50, max_candidates: int = 1000, min_area: float = 1.0,
                    scale: float | tuple[float, float] = 1.0) -> list[tuple[np.ndarray, float]]:
    """One image's maps -> [(polygon float32 (num_points, 2), score)] by decreasing score.

    maps: for each stride s, "tr_s", "tcl_s" (h,w) probabilities and "reg_s" (2(2k+1),h,w) coefficients.
    Score map TR^alpha · TCL^beta; every pixel above max(score_thresh, box_thresh) at every level gives a
    candidate polygon (its coefficients + its position, inverse Fourier transform, back to pixels), scored by its
    pixel score; the `max_candidates` best go through polygon NMS (IoU > nms_thresh suppressed). Since greedy NMS
    only lets higher scores suppress lower ones, cutting at box_thresh before NMS equals cutting after it.
    Polygons are clipped to the image (the stride-8 map's extent), those under `min_area` px² dropped, then
    multiplied by `scale` (sx, sy)."""
    sx, sy = (scale, scale) if np.isscalar(scale) else scale
    cut = max(score_thresh, box_thresh)
    cand_polys, cand_scores = [], []
    extent = None
    for s in strides:
        keys = (f"tr_{s}", f"tcl_{s}", f"reg_{s}")
        missing = [k for k in keys if k not in maps]
        if missing:
            raise DetectorError(f"FCENet decoding needs {missing}")
        tr, tcl, reg = (np.asarray(maps[k], np.float32) for k in keys)
        if tr.ndim != 2 or tcl.shape != tr.shape or reg.ndim != 3 or reg.shape[1:] != tr.shape:
            raise DetectorError(f"stride-{s} maps must be tr, tcl (h,w) and reg (C,h,w) of one image, got "
                                f"{tr.shape}, {tcl.shape}, {reg.shape}")
        nc = reg.shape[0] // 2
        if reg.shape[0] % 2 or nc % 2 == 0:
            raise DetectorError(f"reg_{s} must have 2(2k+1) channels, got {reg.shape[0]}")
        if extent is None:
            extent = (tr.shape[1] * s - 1, tr.shape[0] * s - 1)
        score = np.power(np.clip(tr, 0, 1), alpha) * np.power(np.clip(tcl, 0, 1), beta)
        ys, xs = np.nonzero(score > cut)
        if len(ys) == 0:
            continue
        c = (reg[:nc, ys, xs] + 1j * reg[nc:, ys, xs]).T.astype(np.complex128)  # (P, 2k+1), level units
        c[:, nc // 2] += xs + 1j * ys
        cand_polys.append(fourier_to_polygon(c, num_points) * s + (s - 1) / 2.0)  # (P, M, 2) pixels
        cand_scores.append(score[ys, xs])
    if not cand_polys:
        return []
    polys, scores = np.concatenate(cand_polys), np.concatenate(cand_scores)
    if len(scores) > max_candidates:
        top = np.argpartition(-scores, max_candidates - 1)[:max_candidates]
        polys, scores = polys[top], scores[top]
    polys = np.clip(polys, 0, extent)
    keep = polygon_nms(polys, scores, nms_thresh)
    results = []
    for i in keep:
        p = polys[i]
        if abs(_signed_area(p)) < min_area:
            continue
        results.append(((p * [sx, sy]).astype(np.float32), float(scores[i])))
    return results


@dataclass(frozen=True)
class FCEPostprocess:
    """FCENet's decoding settings (see fce_postprocess); alpha = 1, beta = 2, score 0.3, NMS 0.1 as the paper."""
    score_thresh: float = 0.3
    box_thresh: float = 0.5
    nms_thresh: float = 0.1
    alpha: float = 1.0
    beta: float = 2.0
    num_points: int = 50
    max_candidates: int = 1000
    min_area: float = 1.0

    def __call__(self, maps: dict, strides: Sequence[int] = STRIDES, scale=1.0):
        return fce_postprocess(maps, strides, scale=scale, **asdict(self))  # by name, not position


# ---------------------------------------------------------------------------------------------------- the head

@dataclass(frozen=True)
class FCEConfig:
    """FCENet's options (TrainConfig.head of the fcenet detectors)."""
    width: int = 256  # FPN width (FCENet paper, MMOCR FPN out_channels)
    # the classification losses: "ce" (cross entropy, OHEM on the text region: the paper, MMOCR) | "balanced"
    # (class-balanced cross entropy, see FCELoss)
    cls_loss: str = "ce"
    # the regression weight on text-region pixels outside the centre region (the paper 0, MMOCR 0.5)
    tr_reg_weight: float = 0.0
    norm: bool = False  # GroupNorm in the head branches (not in the paper; see FCEHead)
    ohem_ratio: float | None = 3.0  # hard negatives per positive of the "ce" text-region loss; None: balanced


class FCENet(TextHead):
    """FCENet as a detection head: FCENeck (P3-P5) -> FCEHead (shared) -> FCELoss; decoding by fce_postprocess.

    forward(features) -> for each stride s in (8, 16, 32): tr_logits_s, tcl_logits_s (B,2,h,w), reg_s
    (B,2(2k+1),h,w) and the text / centre probabilities tr_s, tcl_s (B,h,w) (softmax, class 1)."""

    strides = STRIDES
    decode_keys = tuple(f"{n}_{s}" for s in STRIDES for n in ("tr", "tcl", "reg"))
    Config = FCEConfig
    paper_width = 256  # FPN width (FCENet paper, MMOCR FPN out_channels)

    def __init__(self, in_channels: Sequence[int], width: int = 256, *, fourier_degree: int = 5,
                 num_convs: int = 4, norm: bool = False, loss: FCELoss | None = None,
                 postprocess: FCEPostprocess | None = None, targets: FCETargets | None = None):
        super().__init__()
        if targets is not None and targets.fourier_degree != fourier_degree:
            raise DetectorError(f"targets use Fourier degree {targets.fourier_degree}, the head {fourier_degree}")
        if targets is not None and tuple(targets.strides) != self.strides:
            raise DetectorError(f"FCENet predicts at strides {self.strides}, targets ask for {targets.strides}")
        self.fourier_degree = fourier_degree
        self.neck = FCENeck(in_channels, width)
        self.maps = FCEHead(width, fourier_degree, num_convs, norm)
        self.criterion = loss if loss is not None else FCELoss()
        self.postprocess = postprocess if postprocess is not None else FCEPostprocess()
        self.targets = targets if targets is not None else FCETargets(fourier_degree=fourier_degree)

    @classmethod
    def from_config(cls, in_channels: Sequence[int], cfg: FCEConfig) -> "FCENet":
        loss = FCELoss(ohem_ratio=cfg.ohem_ratio, cls_loss=cfg.cls_loss, tr_reg_weight=cfg.tr_reg_weight)
        return cls(in_channels, cfg.width, norm=cfg.norm, loss=loss)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for s, p in zip(self.strides, self.neck(features)):
            cls, reg = self.maps(p)  # (B,4,h,w), (B,2(2k+1),h,w)
            out[f"tr_logits_{s}"], out[f"tcl_logits_{s}"], out[f"reg_{s}"] = cls[:, :2], cls[:, 2:], reg
            out[f"tr_{s}"] = torch.softmax(cls[:, :2].float(), dim=1)[:, 1]
            out[f"tcl_{s}"] = torch.softmax(cls[:, 2:].float(), dim=1)[:, 1]
        return out



    def decode(self, maps: dict, scale=1.0, **overrides) -> list[tuple[np.ndarray, float]]:
        try:
            pp = replace(self.postprocess, **overrides) if overrides else self.postprocess
        except TypeError as e:
            raise DetectorError(f"unknown FCENet decoding option: {e}") from None
        return pp(maps, self.strides, scale)
