"""DBNet (Liao et al., AAAI 2020) as a plug-in: FPN neck, probability/threshold head, loss, post-processing.

`DBNet` is the head that `tcm_kit.detector.Detector` joins to a backbone (`tcm.Backbone` or `tcm.TCM`);
`tcm_kit.detector.build_detector("dbnet" | "tcm-dbnet" | "dbnet-scratch", clip)` makes the spec's three
detectors. Maps are (B,H,W) at the input resolution; H and W must be multiples of 32.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tcm_kit.data.targets import db_targets, expand_polygon
from tcm_kit.heads.base import DetectorError, TextHead
from tcm_kit.losses import balanced_bce_ohem, dice_loss, masked_l1


# ---------------------------------------------------------------------------------------------------- neck + head

class DBNeck(nn.Module):
    """FPN (DBNet's FPNC): 1x1 laterals to `lateral` channels, top-down sum, 3x3 smooth convs to out/4 channels
    per level, everything upsampled to stride 4 and concatenated -> (B, out_channels, H/4, W/4)."""

    def __init__(self, in_channels: Sequence[int], lateral: int = 256, out_channels: int = 256):
        super().__init__()
        if len(in_channels) != 4 or out_channels % 4:
            raise DetectorError(f"DBNeck needs 4 input widths and out_channels divisible by 4, got "
                                f"{list(in_channels)}, {out_channels}")
        self.laterals = nn.ModuleList([nn.Conv2d(c, lateral, 1, bias=False) for c in in_channels])
        self.smooth = nn.ModuleList([nn.Conv2d(lateral, out_channels // 4, 3, padding=1, bias=False)
                                     for _ in in_channels])
        self.out_channels = out_channels

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]  # 4 x (B,lateral,H/s,W/s)
        for i in range(len(lat) - 2, -1, -1):  # top-down: C5 -> C2
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
        size = lat[0].shape[-2:]  # stride 4
        outs = [F.interpolate(conv(x), size=size, mode="nearest") if i else conv(x)
                for i, (conv, x) in enumerate(zip(self.smooth, lat))]  # 4 x (B,out/4,H/4,W/4)
        return torch.cat(outs[::-1], dim=1)  # (B,out,H/4,W/4), coarsest first as in DBNet


def _db_branch(c: int) -> nn.Sequential:
    """conv3x3-BN-ReLU-deconv2x2-BN-ReLU-deconv2x2: (B,c,H/4,W/4) -> (B,1,H,W) logits."""
    m = c // 4
    return nn.Sequential(nn.Conv2d(c, m, 3, padding=1, bias=False), nn.BatchNorm2d(m), nn.ReLU(inplace=True),
                         nn.ConvTranspose2d(m, m, 2, stride=2), nn.BatchNorm2d(m), nn.ReLU(inplace=True),
                         nn.ConvTranspose2d(m, 1, 2, stride=2))


class DBHead(nn.Module):
    """Probability P, threshold T and approximate binary B = 1/(1+exp(-k(P-T))) maps at the input resolution.

    forward(x, with_thresh=None) -> dict(prob_logits, prob[, thresh, binary]); the threshold branch runs when
    with_thresh is True (default: in training mode only, as inference needs P alone).
    """

    def __init__(self, in_channels: int = 256, k: float = 50.0):
        super().__init__()
        self.k = k
        self.prob = _db_branch(in_channels)
        self.thresh = _db_branch(in_channels)

    def forward(self, x: torch.Tensor, with_thresh: bool | None = None) -> dict[str, torch.Tensor]:
        logits = self.prob(x)[:, 0]  # (B,H,W)
        out = {"prob_logits": logits, "prob": torch.sigmoid(logits)}
        if self.training if with_thresh is None else with_thresh:
            thresh = torch.sigmoid(self.thresh(x)[:, 0].float())  # (B,H,W)
            out["thresh"] = thresh
            out["binary"] = torch.sigmoid(self.k * (out["prob"].float() - thresh))  # (B,H,W)
        return out


# ---------------------------------------------------------------------------------------------------- loss

class DBLoss(nn.Module):
    """L = α·L_prob + β·L_thresh (L1 on thresh_mask) + L_binary (dice); α=5, β=10 as the authors' (MMOCR) code.

    prob_loss "bce": L_prob is BCE + OHEM 3:1 (the DBNet paper, and the TCM authors' configs: MMOCR's
    `bbce_loss=True`); ohem_ratio=None trains it with the class-balanced BCE instead (no mining). prob_loss
    "dice": L_prob is the dice loss on sigmoid(prob_logits) (MMOCR 0.x DBLoss's default, `bbce_loss=False`).
    forward(maps, batch) -> dict(loss, loss_prob, loss_thresh, loss_binary)."""

    def __init__(self, alpha: float = 5.0, beta: float = 10.0, ohem_ratio: float | None = 3.0,
                 prob_loss: str = "bce"):
        super().__init__()
        if prob_loss not in ("bce", "dice"):
            raise DetectorError(f"prob_loss must be 'bce' or 'dice', got {prob_loss!r}")
        self.alpha, self.beta, self.ohem_ratio, self.prob_loss = alpha, beta, ohem_ratio, prob_loss

    def forward(self, maps: dict, batch: dict) -> dict[str, torch.Tensor]:
        missing = [k for k in ("prob", "prob_mask", "thresh", "thresh_mask") if k not in batch]
        if missing:
            raise DetectorError(f"DB targets missing from the batch: {missing}")
        if "thresh" not in maps:
            raise DetectorError("the DB loss needs the threshold branch: call the detector in train mode "
                                "(or its head with with_thresh=True)")
        prob, prob_mask = batch["prob"], batch["prob_mask"]
        if prob.shape != maps["prob_logits"].shape:
            raise DetectorError(f"target maps {tuple(prob.shape)} do not match predictions "
                                f"{tuple(maps['prob_logits'].shape)}")
        if self.prob_loss == "dice":
            l_prob = dice_loss(torch.sigmoid(maps["prob_logits"].float()), prob, prob_mask)
        else:
            l_prob = balanced_bce_ohem(maps["prob_logits"], prob, prob_mask, neg_ratio=self.ohem_ratio)
        l_thresh = masked_l1(maps["thresh"], batch["thresh"], batch["thresh_mask"])
        l_binary = dice_loss(maps["binary"], prob, prob_mask)
        loss = self.alpha * l_prob + self.beta * l_thresh + l_binary
        return {"loss": loss, "loss_prob": l_prob, "loss_thresh": l_thresh, "loss_binary": l_binary}


# ---------------------------------------------------------------------------------------------------- post-processing

def _region_score(prob: np.ndarray, contour: np.ndarray) -> float:
    """Mean probability inside the filled contour, computed on the contour's bounding box only."""
    x0, y0 = contour.min(0)
    x1, y1 = contour.max(0)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [(contour - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0])


def order_quad(pts: np.ndarray) -> np.ndarray:
    """4 points -> clockwise (in image coordinates) starting at the top-left-most point."""
    c = pts.mean(0)
    pts = pts[np.argsort(np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0]))]
    return np.roll(pts, -int(np.argmin(pts.sum(1))), axis=0)


def db_postprocess(prob_map: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.6, unclip_ratio: float = 1.5,
                   min_size: float = 3, max_candidates: int = 1000, polygon: bool = False,
                   scale: float | tuple[float, float] = 1.0,
                   contour_approx: float | None = None) -> list[tuple[np.ndarray, float]]:
    """Probability map (H,W) -> [(polygon float32 (N,2), score)], coordinates multiplied by `scale` (sx, sy).

    threshold at `thresh` -> contours -> score = mean P inside the contour (drop < box_thresh) -> unclip by
    D = A·ratio/L (pyclipper) -> min-area rectangle (quads, clockwise from top-left) or the unclipped polygon.
    Regions whose min-area rectangle's short side is below `min_size` (below min_size + 2 after unclipping, for
    quads) are dropped.

    contour_approx=r (the official TCM IC15 postprocessor, DBParamPostprocessor with arcLength_ratio r = 0.001):
    each contour is simplified by approxPolyDP(r·perimeter) and kept with at least 4 points; the score is the
    mean P inside that polygon, the polygon itself is unclipped, and the output is the unclipped polygon's
    min-area rectangle (polygon=False, the official text_repr_type 'quad') or the unclipped polygon; a region is
    dropped when that rectangle's short side is not above `min_size` (official min_text_width 2), with no check
    before unclipping.
    """
    if contour_approx is not None:
        return _db_postprocess_approx(prob_map, thresh, box_thresh, unclip_ratio, min_size, max_candidates, polygon,
                                      scale, contour_approx)
    prob, (H, W), (sx, sy), contours = _regions(prob_map, thresh, scale)
    results = []
    for contour in contours[:max_candidates]:
        pts = contour.reshape(-1, 2)
        if len(pts) < 3 or min(cv2.minAreaRect(contour)[1]) < min_size:
            continue
        if polygon:
            shape = cv2.approxPolyDP(contour, 0.01 * cv2.arcLength(contour, True), True).reshape(-1, 2)
            if len(shape) < 4:
                shape = cv2.boxPoints(cv2.minAreaRect(contour))
        else:
            shape = cv2.boxPoints(cv2.minAreaRect(contour))  # (4,2)
        score = _region_score(prob, pts)
        if score < box_thresh:
            continue
        grown = expand_polygon(shape.astype(np.float32), unclip_ratio)  # (M,2)
        if len(grown) < 3:
            continue
        if polygon:
            out = grown
        else:
            rect = cv2.minAreaRect(grown)
            if min(rect[1]) < min_size + 2:
                continue
            out = order_quad(cv2.boxPoints(rect))
        out = np.clip(out, 0, [W - 1, H - 1]) * np.array([sx, sy], np.float32)
        results.append((out.astype(np.float32), score))
    return results


def _regions(prob_map, thresh: float, scale):
    """-> (prob (H,W) float32, (H, W), (sx, sy), contours of prob > thresh)."""
    prob = np.asarray(prob_map, dtype=np.float32)
    if prob.ndim != 2:
        raise DetectorError(f"prob_map must be (H,W), got {prob.shape}")
    sx, sy = (scale, scale) if np.isscalar(scale) else scale
    bitmap = (prob > thresh).astype(np.uint8)
    return prob, prob.shape, (sx, sy), cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[-2]


def _db_postprocess_approx(prob_map, thresh, box_thresh, unclip_ratio, min_size, max_candidates, polygon, scale,
                           ratio) -> list[tuple[np.ndarray, float]]:
    """db_postprocess with contour_approx=ratio (see there)."""
    prob, (H, W), (sx, sy), contours = _regions(prob_map, thresh, scale)
    results = []
    for contour in contours[:max_candidates]:
        pts = cv2.approxPolyDP(contour, ratio * cv2.arcLength(contour, True), True).reshape(-1, 2)
        if len(pts) < 4:
            continue
        score = _region_score(prob, pts)
        if score < box_thresh:
            continue
        grown = expand_polygon(pts.astype(np.float32), unclip_ratio)  # (M,2)
        if len(grown) < 3:
            continue
        rect = cv2.minAreaRect(grown)
        if min(rect[1]) <= min_size:
            continue
        out = grown if polygon else order_quad(cv2.boxPoints(rect))
        out = np.clip(out, 0, [W - 1, H - 1]) * np.array([sx, sy], np.float32)
        results.append((out.astype(np.float32), score))
    return results


@dataclass(frozen=True)
class DBPostprocess:
    """The post-processing settings of a detector (see db_postprocess)."""
    thresh: float = 0.3  # binarisation threshold of the probability map (official IC15: mask_thr 0.28)
    box_thresh: float = 0.6  # minimum region score (official: min_text_score 0.2; evaluation sweeps it)
    unclip_ratio: float = 1.5  # unclip distance D = A * ratio / L (official IC15: 1.6)
    min_size: float = 3  # minimum short side of a region's rectangle (official: min_text_width 2)
    max_candidates: int = 1000  # contours looked at per image (official: 3000)
    polygon: bool = False  # output the unclipped polygon instead of its min-area rectangle (official IC15: quads)
    contour_approx: float | None = None  # None: the kit's; r: official candidates, approxPolyDP(r * perimeter)

    def __call__(self, prob_map: np.ndarray, scale: float | tuple[float, float] = 1.0):
        return db_postprocess(prob_map, scale=scale, **asdict(self))  # by name: field order cannot matter


# ---------------------------------------------------------------------------------------------------- the head

@dataclass(frozen=True)
class DBTargets:
    """(instances, h, w) -> DBNet's training maps (tcm_kit.data.targets.db_targets); picklable for workers."""
    shrink_ratio: float = 0.4
    min_size: float = 8

    def __call__(self, instances, h: int, w: int) -> dict[str, np.ndarray]:
        return db_targets(instances, h, w, self.shrink_ratio, self.min_size)


@dataclass(frozen=True)
class DBConfig:
    """DBNet's options (TrainConfig.head of the dbnet detectors)."""
    width: int = 256  # FPN width (DBNet paper, MMOCR FPNC lateral_channels)
    # the probability-map loss: "bce" (BCE + OHEM, the DBNet paper and the TCM authors' configs) | "dice" (MMOCR
    # 0.x DBLoss's default)
    prob_loss: str = "bce"
    ohem_ratio: float | None = 3.0  # hard negatives per positive in the "bce" loss; None: class-balanced
    postprocess: DBPostprocess = DBPostprocess()


class DBNet(TextHead):
    """DBNet as a detection head: DBNeck (FPN to stride 4) -> DBHead -> DBLoss; decoding by db_postprocess.

    forward(features) -> dict(prob_logits, prob[, thresh, binary in training]) at the input resolution."""

    decode_keys = ("prob",)
    Config = DBConfig
    paper_width = 256  # FPN width (DBNet paper, MMOCR FPNC lateral_channels)

    def __init__(self, in_channels: Sequence[int], width: int = 256, *, loss: DBLoss | None = None,
                 postprocess: DBPostprocess | None = None, targets: DBTargets | None = None):
        super().__init__()
        self.neck = DBNeck(in_channels, lateral=width, out_channels=width)
        self.maps = DBHead(width)
        self.criterion = loss if loss is not None else DBLoss()
        self.postprocess = postprocess if postprocess is not None else DBPostprocess()
        self.targets = targets if targets is not None else DBTargets()

    @classmethod
    def from_config(cls, in_channels: Sequence[int], cfg: DBConfig) -> "DBNet":
        return cls(in_channels, cfg.width, loss=DBLoss(ohem_ratio=cfg.ohem_ratio, prob_loss=cfg.prob_loss),
                   postprocess=cfg.postprocess)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.maps(self.neck(features))



    def decode(self, maps: dict, scale=1.0, **overrides) -> list[tuple[np.ndarray, float]]:
        pp = replace(self.postprocess, **overrides) if overrides else self.postprocess
        return pp(maps["prob"], scale)
