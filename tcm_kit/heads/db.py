"""DBNet (Liao et al., AAAI 2020) as a plug-in: FPN neck, probability/threshold head, loss, post-processing.

`Detector(backbone_or_tcm, head)` joins a backbone (`tcm.Backbone` or `tcm.TCM`) to the DB neck + head;
`build_detector(name, clip, **tcm_flags)` makes the three detectors of the spec: "dbnet", "tcm-dbnet",
"dbnet-scratch". Maps are (B,H,W) at the input resolution; H and W must be multiples of 32.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tcm_kit.data.targets import expand_polygon
from tcm_kit.losses import balanced_bce_ohem, dice_loss, masked_l1
from tcm_kit.tcm import TCM, Backbone

DETECTORS = ("dbnet", "tcm-dbnet", "dbnet-scratch")


class DetectorError(ValueError):
    """Bad detector name, options, inputs or targets."""


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
    """L = α·L_prob (BCE + OHEM 3:1) + β·L_thresh (L1 on thresh_mask) + L_binary (dice); α=5, β=10 as the
    authors' (MMOCR) code. forward(maps, batch) -> dict(loss, loss_prob, loss_thresh, loss_binary)."""

    def __init__(self, alpha: float = 5.0, beta: float = 10.0, ohem_ratio: float = 3.0):
        super().__init__()
        self.alpha, self.beta, self.ohem_ratio = alpha, beta, ohem_ratio

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


def _order_quad(pts: np.ndarray) -> np.ndarray:
    """4 points -> clockwise (in image coordinates) starting at the top-left-most point."""
    c = pts.mean(0)
    pts = pts[np.argsort(np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0]))]
    return np.roll(pts, -int(np.argmin(pts.sum(1))), axis=0)


def db_postprocess(prob_map: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.6, unclip_ratio: float = 1.5,
                   min_size: float = 3, max_candidates: int = 1000, polygon: bool = False,
                   scale: float | tuple[float, float] = 1.0) -> list[tuple[np.ndarray, float]]:
    """Probability map (H,W) -> [(polygon float32 (N,2), score)], coordinates multiplied by `scale` (sx, sy).

    threshold at `thresh` -> contours -> score = mean P inside the contour (drop < box_thresh) -> unclip by
    D = A·ratio/L (pyclipper) -> min-area rectangle (quads, clockwise from top-left) or the unclipped polygon.
    Regions whose min-area rectangle's short side is below `min_size` (below min_size + 2 after unclipping, for
    quads) are dropped.
    """
    prob = np.asarray(prob_map, dtype=np.float32)
    if prob.ndim != 2:
        raise DetectorError(f"prob_map must be (H,W), got {prob.shape}")
    H, W = prob.shape
    sx, sy = (scale, scale) if np.isscalar(scale) else scale
    bitmap = (prob > thresh).astype(np.uint8)
    contours = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[-2]
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
            out = _order_quad(cv2.boxPoints(rect))
        out = np.clip(out, 0, [W - 1, H - 1]) * np.array([sx, sy], np.float32)
        results.append((out.astype(np.float32), score))
    return results


@dataclass(frozen=True)
class DBPostprocess:
    """The post-processing settings of a detector (see db_postprocess)."""
    thresh: float = 0.3
    box_thresh: float = 0.6
    unclip_ratio: float = 1.5
    min_size: float = 3
    max_candidates: int = 1000
    polygon: bool = False

    def __call__(self, prob_map: np.ndarray, scale: float | tuple[float, float] = 1.0):
        return db_postprocess(prob_map, self.thresh, self.box_thresh, self.unclip_ratio, self.min_size,
                              self.max_candidates, self.polygon, scale)


# ---------------------------------------------------------------------------------------------------- detector

class Detector(nn.Module):
    """backbone (Backbone or TCM) -> DBNeck -> DBHead; loss = L_det + λ·L_aux (TCM only).

    forward(images (B,3,H,W)) -> dict(prob_logits, prob[, thresh, binary in training][, score_logits, score_map]).
    loss(out, batch) with batch tensors prob, prob_mask, thresh, thresh_mask (B,H,W) (and optionally text_mask
    (B,H/32,W/32) for TCM's aux_loss="bce") -> dict(loss, loss_prob, loss_thresh, loss_binary[, loss_aux]).
    predict(images, scale) -> per image [(polygon (N,2) float32, score)].
    """

    def __init__(self, backbone: nn.Module, head: DBHead | None = None, *, neck: DBNeck | None = None,
                 loss: DBLoss | None = None, postprocess: DBPostprocess | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck if neck is not None else DBNeck(backbone.out_channels)
        self.head = head if head is not None else DBHead(self.neck.out_channels)
        self.criterion = loss if loss is not None else DBLoss()
        self.postprocess = postprocess if postprocess is not None else DBPostprocess()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[-1] % 32 or images.shape[-2] % 32:
            raise DetectorError(f"images must be (B,3,H,W) with H, W multiples of 32, got {tuple(images.shape)}")
        feats = self.backbone(images)
        out = self.head(self.neck(feats.features))
        if getattr(feats, "score_logits", None) is not None:
            out["score_logits"], out["score_map"] = feats.score_logits, feats.score_map
        return out

    def loss(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        parts = self.criterion(out, batch)
        if "score_logits" in out and hasattr(self.backbone, "aux_loss"):
            aux = self.backbone.aux_loss(out, batch["prob"], batch["prob_mask"], text_mask=batch.get("text_mask"))
            parts["loss_aux"] = aux  # already weighted by λ
            parts["loss"] = parts["loss"] + aux
        return parts

    @torch.no_grad()
    def predict(self, images: torch.Tensor, scale: float | tuple | list = 1.0,
                **overrides) -> list[list[tuple[np.ndarray, float]]]:
        """Detections per image; `scale` maps map pixels to original-image pixels: a float or an (sx, sy) tuple
        for all images, or a list with one of those per image; keyword overrides change DBPostprocess fields
        for this call (e.g. box_thresh=0.5). Runs in eval mode and restores the previous mode."""
        pp = replace(self.postprocess, **overrides) if overrides else self.postprocess
        was_training = self.training
        self.eval()
        try:
            prob = self(images)["prob"].float().cpu().numpy()  # (B,H,W)
        finally:
            self.train(was_training)
        if isinstance(scale, list) and len(scale) != len(prob):
            raise DetectorError(f"a list of scales needs one per image ({len(prob)}), got {len(scale)}")
        scales = scale if isinstance(scale, list) else [scale] * len(prob)
        return [pp(p, s) for p, s in zip(prob, scales)]


def build_detector(name: str, clip: nn.Module, *, postprocess: DBPostprocess | None = None,
                   db_loss: DBLoss | None = None, neck_width: int = 256, **tcm_flags) -> Detector:
    """"dbnet" (CLIP image encoder, no language side), "tcm-dbnet" (TCM(clip, **tcm_flags)) or "dbnet-scratch"
    (same architecture, random init). The CLIP is deep-copied, so detectors never share weights.
    neck_width: the FPN's lateral and fused width (DBNet: 256; the cpu profile uses less with the tiny CLIP)."""
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; choose one of {DETECTORS}")
    if name != "tcm-dbnet" and tcm_flags:
        raise DetectorError(f"{name!r} takes no TCM options, got {sorted(tcm_flags)}")
    clip = copy.deepcopy(clip)
    if name == "tcm-dbnet":
        backbone = TCM(clip, **tcm_flags)
    else:
        backbone = Backbone(clip, scratch=name == "dbnet-scratch")
    neck = DBNeck(backbone.out_channels, lateral=neck_width, out_channels=neck_width)
    return Detector(backbone, DBHead(neck_width), neck=neck, loss=db_loss, postprocess=postprocess)
