"""PAN (Wang et al., ICCV 2019, "Pixel Aggregation Network") as a plug-in: FPEM x2 + FFM neck, text / kernel /
similarity-vector head, its loss, its targets and pixel-aggregation post-processing.

`PAN` is the head that `tcm_kit.detector.Detector` joins to a backbone (`tcm.Backbone` or `tcm.TCM`).

Resolution: PAN predicts at stride 4; here the 6 output channels are upsampled bilinearly to the input resolution
(as DBNet in this kit does), so the targets, the TCM shrink map ("prob") and the decoded coordinates all live at
full resolution. H and W must be multiples of 32.

Paper facts used: neck width 128; two cascaded FPEMs (up-scale then down-scale enhancement, each step an
element-wise add then a depthwise-separable conv; the down-scale steps use stride-2 depthwise convs); FFM sums the
FPEMs' maps level by level, upsamples to stride 4 and concatenates (4 x width channels); the head predicts 6
channels (text, kernel, 4-d similarity vector) from them. Two heads exist: MMOCR 0.x's PANHead, the one TCM's
authors plug in (official TCM: configs/_base_/det_models/panet_r50att_prompt_gen_vis_fpem_ffm.py, MMOCR
dense_heads/pan_head.py), is one conv1x1 (4 x width -> 6), the default here; the PAN authors' pan_pp.pytorch
PA_Head is conv3x3 (4 x width -> 128) - BN - ReLU - conv1x1 (head="pan_pp", hidden = the neck width). At 640 px
the pan_pp head's conv3x3 on the stride-4 map costs more than DBNet's whole neck and head (15 GMAC at width 128,
60 at 256). Kernels are the text polygons shrunk with r = 0.5.
L = L_text + 0.5 L_kernel + 0.25 (L_agg + L_dis), delta_agg = 0.5, delta_dis = 3; L_text = dice with OHEM 3:1,
L_kernel = dice inside the predicted text region.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from tcm_kit.data.targets import fill_polygons, shrunk_care_instances
from tcm_kit.heads.base import DetectorError, TextHead
from tcm_kit.heads.db import order_quad

__all__ = ["SepConv", "FPEM", "PANNeck", "PANHead", "PAN_HEADS", "PANLoss", "PANTargets", "PANPostprocess",
           "pan_targets", "pixel_aggregation", "pan_postprocess", "PAN", "TARGET_KEYS"]

EMBED_DIM = 4  # similarity-vector channels (paper)


# ---------------------------------------------------------------------------------------------------- neck + head

class SepConv(nn.Sequential):
    """Depthwise 3x3 (stride 1 or 2) -> pointwise 1x1 -> BN -> ReLU: (B,c,h,w) -> (B,c,h/stride,w/stride)."""

    def __init__(self, c: int, stride: int = 1):
        super().__init__(nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))


def _up_add(coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """Bilinear upsample `coarse` to `fine`'s size and add: (B,c,h',w'), (B,c,h,w) -> (B,c,h,w)."""
    return F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False) + fine


class FPEM(nn.Module):
    """Feature Pyramid Enhancement Module: 4 maps (strides 4, 8, 16, 32; c channels each) -> 4 maps, same shapes.

    Up-scale enhancement (32 -> 4): f_i = SepConv(up(f_{i+1}) + f_i).
    Down-scale enhancement (4 -> 32): g_i = SepConv_stride2(up(f_i) + g_{i-1}), g_4 = f_4.
    """

    def __init__(self, c: int):
        super().__init__()
        self.up = nn.ModuleList([SepConv(c) for _ in range(3)])  # outputs at strides 16, 8, 4
        self.down = nn.ModuleList([SepConv(c, stride=2) for _ in range(3)])  # outputs at strides 8, 16, 32

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        f = list(feats)
        for k, i in enumerate((2, 1, 0)):  # up-scale: stride 16, 8, 4
            f[i] = self.up[k](_up_add(f[i + 1], f[i]))
        for k, i in enumerate((1, 2, 3)):  # down-scale: stride 8, 16, 32
            f[i] = self.down[k](_up_add(f[i], f[i - 1]))
        return f


class PANNeck(nn.Module):
    """1x1 reduce (conv-BN-ReLU) to `width` -> `n_fpem` cascaded FPEMs -> FFM (sum the FPEMs' outputs per level,
    upsample to stride 4, concatenate): 4 maps -> (B, 4*width, H/4, W/4). `levels` stops before the upsampling
    (the 4 summed maps at strides 4..32), for a head that is linear in them (see PANHead)."""

    def __init__(self, in_channels: Sequence[int], width: int = 128, n_fpem: int = 2):
        super().__init__()
        if len(in_channels) != 4 or width < 1 or n_fpem < 1:
            raise DetectorError(f"PANNeck needs 4 input widths, width >= 1 and n_fpem >= 1, got "
                                f"{list(in_channels)}, width={width}, n_fpem={n_fpem}")
        self.reduce = nn.ModuleList([nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width),
                                                   nn.ReLU(inplace=True)) for c in in_channels])
        self.fpems = nn.ModuleList([FPEM(width) for _ in range(n_fpem)])
        self.out_channels = 4 * width

    def levels(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """4 maps -> the FFM's per-level sums of the FPEM outputs, 4 x (B,width,H/s,W/s), s = 4, 8, 16, 32."""
        if len(feats) != 4:
            raise DetectorError(f"PAN needs 4 feature maps (strides 4, 8, 16, 32), got {len(feats)}")
        f = [conv(x) for conv, x in zip(self.reduce, feats)]  # 4 x (B,width,H/s,W/s)
        fused = None
        for fpem in self.fpems:
            f = fpem(f)
            fused = f if fused is None else [a + b for a, b in zip(fused, f)]  # FFM: element-wise sum
        return fused

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        fused = self.levels(feats)
        size = fused[0].shape[-2:]  # stride 4
        ups = [fused[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in fused[1:]]
        return torch.cat(ups, dim=1)  # (B,4*width,H/4,W/4)


class PANHead(nn.Module):
    """The 6 output channels, upsampled bilinearly by `upsample` (4: input resolution).

    hidden=None: one conv1x1 (in_channels -> 6), MMOCR 0.x's PANHead (TCM's PAN; its init: normal, std 0.01).
    hidden=int: conv3x3 (in_channels -> hidden) - BN - ReLU - conv1x1 (hidden -> 6), pan_pp.pytorch's PA_Head.
    forward(x) takes the FFM's concatenation (B,in_channels,h,w), or, for the conv1x1 head, the FFM's per-level
    maps (`PANNeck.levels`, channels summing to in_channels): the conv1x1 is then applied to each level at its own
    resolution and the 6-channel results are upsampled and summed, which equals the conv1x1 of the upsampled
    concatenation (bilinear upsampling and a 1x1 conv are both linear, and bilinear weights sum to 1) without
    building the 4 x width channel stride-4 map. -> dict(text_logits (B,H,W), kernel_logits (B,H,W),
    embedding (B,4,H,W), text = sigmoid(text_logits), kernel = sigmoid(kernel_logits)) with H = upsample*h.
    """

    def __init__(self, in_channels: int, hidden: int | None = None, upsample: int = 4):
        super().__init__()
        out = 2 + EMBED_DIM
        if hidden is None:
            self.conv = nn.Conv2d(in_channels, out, 1)
            nn.init.normal_(self.conv.weight, std=0.01)
            nn.init.zeros_(self.conv.bias)
        else:
            self.conv = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(hidden), nn.ReLU(inplace=True), nn.Conv2d(hidden, out, 1))
        self.hidden = hidden
        self.upsample = upsample

    def _per_level(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        widths = [x.shape[1] for x in levels]
        if self.hidden is not None or sum(widths) != self.conv.in_channels:
            raise DetectorError(f"per-level input needs the conv1x1 head (hidden=None, got {self.hidden}) and "
                                f"widths summing to its input channels, got {widths}")
        size = levels[0].shape[-2:]  # stride 4
        y = None
        for x, w in zip(levels, self.conv.weight.split(widths, dim=1)):
            z = F.conv2d(x, w)  # (B,6,h_s,w_s)
            if z.shape[-2:] != size:
                z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
            y = z if y is None else y + z
        return y + self.conv.bias.view(1, -1, 1, 1)  # (B,6,h,w)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        y = self.conv(x) if torch.is_tensor(x) else self._per_level(x)  # (B,6,h,w)
        if self.upsample != 1:
            y = F.interpolate(y, scale_factor=self.upsample, mode="bilinear", align_corners=False)  # (B,6,H,W)
        text_logits, kernel_logits = y[:, 0], y[:, 1]
        return {"text_logits": text_logits, "kernel_logits": kernel_logits, "embedding": y[:, 2:],
                "text": torch.sigmoid(text_logits), "kernel": torch.sigmoid(kernel_logits)}


# ---------------------------------------------------------------------------------------------------- targets

def pan_targets(instances, h: int, w: int, kernel_ratio: float = 0.5, min_size: float = 8) -> dict[str, np.ndarray]:
    """PAN training maps for one (h, w) image, all float32 (h, w):

    - pan_text: 1 inside every care polygon (full text region); pan_kernel: 1 inside each care polygon shrunk by
      D = A (1 - r^2) / L with r = `kernel_ratio` (0.5, paper).
    - pan_mask: 1 except the whole polygon of don't-care (`ignore=True`) instances, of instances whose min-area
      rectangle's short side is below `min_size`, and of instances whose kernel vanishes.
    - pan_text_ids / pan_kernel_ids: instance labels 1..N (care instances only, same label in both maps; later
      instances overwrite earlier ones where they overlap), 0 elsewhere.
    """
    text = np.zeros((h, w), np.float32)
    kernel = np.zeros((h, w), np.float32)
    mask = np.ones((h, w), np.float32)
    text_ids = np.zeros((h, w), np.float32)
    kernel_ids = np.zeros((h, w), np.float32)
    n = 0
    for poly, _, k in shrunk_care_instances(instances, mask, kernel_ratio, min_size):
        n += 1
        fill_polygons(text, [poly], 1.0)
        fill_polygons(text_ids, [poly], float(n))
        fill_polygons(kernel, [k], 1.0)
        fill_polygons(kernel_ids, [k], float(n))
    off = mask == 0  # a don't-care region wins over overlapping care text
    for m in (text, kernel, text_ids, kernel_ids):
        m[off] = 0.0
    return dict(pan_text=text, pan_kernel=kernel, pan_mask=mask, pan_text_ids=text_ids, pan_kernel_ids=kernel_ids)


@dataclass(frozen=True)
class PANTargets:
    """(instances, h, w) -> PAN's training maps (`pan_targets`); picklable for workers."""
    kernel_ratio: float = 0.5
    min_size: float = 8

    def __call__(self, instances, h: int, w: int) -> dict[str, np.ndarray]:
        return pan_targets(instances, h, w, self.kernel_ratio, self.min_size)


# ---------------------------------------------------------------------------------------------------- loss

def _dice_per_image(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """1 - 2 sum(p g) / (sum(p^2) + sum(g^2)) inside mask, per image, averaged over the batch. (B,H,W) -> ()."""
    p, g = pred * mask, gt * mask
    inter = (p * g).flatten(1).sum(1)  # (B,)
    union = (p * p).flatten(1).sum(1) + (g * g).flatten(1).sum(1) + 2 * eps
    return (1.0 - 2.0 * inter / union).mean()


def _ohem_mask(score: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, ratio: float | None) -> torch.Tensor:
    """PSENet/PAN OHEM: all positives + the `ratio`x#positives highest-scoring negatives, per image (B,H,W) -> (B,H,W)
    float. An image without positives (or without negatives) keeps its whole mask; ratio=None keeps every mask."""
    if ratio is None:
        return (mask > 0.5).float()
    B = score.shape[0]
    pos = (gt > 0.5) & (mask > 0.5)
    neg = (gt <= 0.5) & (mask > 0.5)
    n_pos, n_neg_all = pos.flatten(1).sum(1), neg.flatten(1).sum(1)  # (B,)
    n_neg = torch.minimum(n_neg_all, (n_pos.float() * ratio).long())  # (B,)
    ranked = torch.where(neg, score, torch.full_like(score, -1.0)).flatten(1).sort(1, descending=True).values
    thr = ranked.gather(1, (n_neg - 1).clamp(min=0)[:, None])[:, 0]  # (B,) score of the n_neg-th negative
    picked = (pos | (neg & (score >= thr.view(B, 1, 1)))).float()
    whole = ((n_pos == 0) | (n_neg == 0)).view(B, 1, 1)
    return torch.where(whole, (mask > 0.5).float(), picked)


def _embedding_losses(emb: torch.Tensor, text_ids: torch.Tensor, kernel_ids: torch.Tensor, delta_agg: float,
                      delta_dis: float, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """L_agg and L_dis, vectorised over all instances of the batch with index ops.

    emb (B,C,H,W); text_ids, kernel_ids (B,H,W) long (0 = background). G_i = mean of emb over kernel i;
    L_agg = mean_i mean_{p in T_i} ln(1 + max(|F(p) - G_i| - delta_agg, 0)^2);
    L_dis = mean_{i != j} ln(1 + max(delta_dis - |G_i - G_j|, 0)^2); both per image (0 without instances / pairs),
    then averaged over the batch. Instances without a kernel pixel are left out.
    """
    B, C = emb.shape[:2]
    K = int(torch.maximum(text_ids.max(), kernel_ids.max()).item()) + 1 if text_ids.numel() else 1
    flat = emb.permute(0, 2, 3, 1).reshape(-1, C).float()  # (B*H*W,C)
    base = (torch.arange(B, device=emb.device) * K).view(B, 1, 1)
    kid, tid = (kernel_ids + base).flatten(), (text_ids + base).flatten()  # global instance index b*K + id
    ksel, tsel = kernel_ids.flatten() > 0, text_ids.flatten() > 0
    k_idx, t_idx = kid[ksel], tid[tsel]
    k_cnt = torch.bincount(k_idx, minlength=B * K).float()  # (B*K,)
    G = flat.new_zeros(B * K, C).index_add_(0, k_idx, flat[ksel]) / k_cnt.clamp(min=1)[:, None]  # (B*K,C)
    has_kernel = k_cnt > 0
    # aggregation: text pixels -> their kernel's mean
    keep = has_kernel[t_idx]
    t_idx = t_idx[keep]
    d = ((flat[tsel][keep] - G[t_idx]).pow(2).sum(1) + eps).sqrt()  # (P,)
    pix = torch.log1p(F.relu(d - delta_agg).pow(2))
    t_cnt = torch.bincount(t_idx, minlength=B * K).float()
    inst = flat.new_zeros(B * K).index_add_(0, t_idx, pix) / t_cnt.clamp(min=1)  # (B*K,)
    valid = (has_kernel & (t_cnt > 0)).view(B, K)
    l_agg = ((inst.view(B, K) * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()
    # discrimination: pairs of kernels of one image
    Gb = G.view(B, K, C)
    dist = ((Gb[:, :, None] - Gb[:, None]).pow(2).sum(-1) + eps).sqrt()  # (B,K,K)
    hk = has_kernel.view(B, K)
    pair = hk[:, :, None] & hk[:, None] & ~torch.eye(K, dtype=torch.bool, device=emb.device)
    pd = torch.log1p(F.relu(delta_dis - dist).pow(2)) * pair
    l_dis = (pd.flatten(1).sum(1) / pair.flatten(1).sum(1).clamp(min=1)).mean()
    return l_agg, l_dis


TARGET_KEYS = ("pan_text", "pan_kernel", "pan_mask", "pan_text_ids", "pan_kernel_ids")


@dataclass(frozen=True)
class PANLoss:
    """L = L_text + alpha L_kernel + beta (L_agg + L_dis) with alpha = 0.5, beta = 0.25 (paper).

    L_text: dice on sigmoid(text) over all positives + the ohem_ratio x #positives hardest negatives (by score;
      ohem_ratio=None: over every pixel of the mask);
    L_kernel: dice on sigmoid(kernel) inside (sigmoid(text) > 0.5) & mask, the predicted text region;
    L_agg / L_dis: see `_embedding_losses` (delta_agg 0.5, delta_dis 3).
    __call__(maps, batch) -> dict(loss, loss_text, loss_kernel, loss_agg, loss_dis).
    """
    alpha: float = 0.5
    beta: float = 0.25
    delta_agg: float = 0.5
    delta_dis: float = 3.0
    ohem_ratio: float | None = 3.0

    def __call__(self, maps: dict, batch: dict) -> dict[str, torch.Tensor]:
        missing = [k for k in TARGET_KEYS if k not in batch]
        if missing:
            raise DetectorError(f"PAN targets missing from the batch: {missing} (use PAN.target_fn())")
        missing = [k for k in ("text_logits", "kernel_logits", "embedding") if k not in maps]
        if missing:
            raise DetectorError(f"PAN outputs missing: {missing}")
        text_logits = maps["text_logits"].float()
        if batch["pan_text"].shape != text_logits.shape:
            raise DetectorError(f"target maps {tuple(batch['pan_text'].shape)} do not match predictions "
                                f"{tuple(text_logits.shape)}")
        gt_text, gt_kernel = batch["pan_text"].float(), batch["pan_kernel"].float()
        mask = batch["pan_mask"].float()
        text = torch.sigmoid(text_logits)
        kernel = torch.sigmoid(maps["kernel_logits"].float())
        sel = _ohem_mask(text.detach(), gt_text, mask, self.ohem_ratio)
        l_text = _dice_per_image(text, gt_text, sel)
        in_text = ((text.detach() > 0.5) & (mask > 0.5)).float()
        l_kernel = _dice_per_image(kernel, gt_kernel, in_text)
        m = mask > 0.5
        l_agg, l_dis = _embedding_losses(maps["embedding"], batch["pan_text_ids"].round().long() * m,
                                         batch["pan_kernel_ids"].round().long() * m, self.delta_agg, self.delta_dis)
        loss = l_text + self.alpha * l_kernel + self.beta * (l_agg + l_dis)
        return {"loss": loss, "loss_text": l_text, "loss_kernel": l_kernel, "loss_agg": l_agg, "loss_dis": l_dis}


# ---------------------------------------------------------------------------------------------------- post-processing

def pixel_aggregation(kernel_labels: np.ndarray, region: np.ndarray, embedding: np.ndarray,
                      distance_threshold: float = 3.0) -> np.ndarray:
    """Grow labelled kernels into the text region, wave by wave (a vectorised breadth-first search).

    kernel_labels (H,W) int (0 = none, 1..n-1 kernels); region (H,W) bool (text pixels); embedding (C,H,W).
    Each wave, every unlabelled region pixel 4-adjacent to a pixel labelled in the previous wave joins the
    neighbouring label whose kernel-mean similarity vector is closest, if that distance is <= distance_threshold;
    rejected pixels stay free (another kernel may reach them later). Stops when a wave adds nothing.
    Work per wave is proportional to the wave's size, not to the image. Returns (H,W) int32 labels.
    """
    H, W = kernel_labels.shape
    Wp = W + 2  # padded by one pixel: neighbours never leave the array; pixels addressed by flat padded index
    n = int(kernel_labels.max()) + 1
    lab = np.zeros((H + 2, Wp), np.int32)
    lab[1:-1, 1:-1] = kernel_labels
    free = np.zeros((H + 2, Wp), np.uint8)
    free[1:-1, 1:-1] = region & (kernel_labels == 0)
    emb = np.asarray(embedding, np.float32).reshape(len(embedding), -1)  # (C,H*W), no copy
    kidx = np.flatnonzero(kernel_labels)
    kl = kernel_labels.ravel()[kidx]
    count = np.maximum(np.bincount(kl, minlength=n), 1)
    means = np.stack([np.bincount(kl, weights=e[kidx], minlength=n) for e in emb], 1) / count[:, None]  # (n,C)
    means = means.astype(np.float32)  # row 0 unused
    # first wave: kernel pixels that touch a free pixel
    edge = cv2.dilate(free, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))).astype(bool) & (lab > 0)
    wave = np.flatnonzero(edge)
    lab_f, free_f = lab.ravel(), free.ravel()  # views
    steps = np.array([-Wp, Wp, -1, 1])  # 4-connectivity, as PAN's BFS
    stamp = np.full(lab_f.shape, -1, np.int64)
    while len(wave):
        cand = (wave[:, None] + steps).ravel()  # neighbours of the wave
        cand = cand[free_f[cand] == 1]
        stamp[cand] = np.arange(len(cand))
        cand = cand[stamp[cand] == np.arange(len(cand))]  # each pixel once (the last write wins the stamp)
        if not len(cand):
            break
        nl = lab_f[cand[:, None] + steps]  # (P,4) labels around each candidate
        orig = (cand // Wp - 1) * W + cand % Wp - 1  # index in the unpadded (H,W) maps
        diff = emb[:, orig].T[:, None, :] - means[nl]  # (P,4,C)
        d = np.einsum("pkc,pkc->pk", diff, diff)
        d[nl == 0] = np.inf
        best = d.argmin(1)
        take = d[np.arange(len(best)), best] <= distance_threshold ** 2
        wave = cand[take]
        lab_f[wave] = nl[take, best[take]]
        free_f[wave] = 0
    return lab[1:-1, 1:-1]


def _check_maps(text, kernel, embedding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    text = np.asarray(text, np.float32)
    kernel = np.asarray(kernel, np.float32)
    embedding = np.asarray(embedding, np.float32)
    if text.ndim != 2 or kernel.shape != text.shape:
        raise DetectorError(f"PAN decoding needs text and kernel maps of one (H,W) shape, got {text.shape} and "
                            f"{kernel.shape}")
    if embedding.ndim != 3 or embedding.shape[1:] != text.shape:
        raise DetectorError(f"PAN decoding needs a (C,H,W) embedding matching the text map {text.shape}, got "
                            f"{embedding.shape}")
    return text, kernel, embedding


def pan_postprocess(text: np.ndarray, kernel: np.ndarray, embedding: np.ndarray, min_text_confidence: float = 0.5,
                    min_kernel_confidence: float = 0.5, box_thresh: float = 0.6, min_area: float = 16,
                    min_kernel_area: float = 4, distance_threshold: float = 3.0, polygon: bool = False,
                    scale: float | tuple[float, float] = 1.0) -> list[tuple[np.ndarray, float]]:
    """Text (H,W), kernel (H,W) probabilities and similarity vectors (C,H,W) -> [(polygon float32 (N,2), score)].

    region = text > min_text_confidence; kernels = 4-connected components of (kernel > min_kernel_confidence) &
    region, smaller than `min_kernel_area` pixels dropped; `pixel_aggregation` grows them into the region; per
    instance score = mean text probability over its pixels, instances with fewer than `min_area` pixels or a score
    below `box_thresh` dropped; shape = min-area rectangle of the pixel centres (quads, clockwise from top-left)
    or, with polygon=True, the simplified outer contour of the instance. Coordinates (x, y) times `scale`.
    """
    text, kernel, embedding = _check_maps(text, kernel, embedding)
    H, W = text.shape
    try:
        sx, sy = (float(scale), float(scale)) if np.isscalar(scale) else (float(scale[0]), float(scale[1]))
    except (TypeError, ValueError, IndexError):
        raise DetectorError(f"scale must be a number or an (sx, sy) pair, got {scale!r}") from None
    region = text > min_text_confidence
    n, klabels = cv2.connectedComponents(((kernel > min_kernel_confidence) & region).astype(np.uint8),
                                         connectivity=4)
    if n <= 1:
        return []
    karea = np.bincount(klabels.ravel(), minlength=n)
    small = karea < min_kernel_area
    small[0] = False
    if small.any():  # drop tiny kernels and renumber the rest 1..m
        new = np.cumsum(~small) - 1
        new[small] = 0
        klabels = new[klabels].astype(np.int32)
    labels = pixel_aggregation(klabels, region, embedding, distance_threshold)
    m = int(labels.max()) + 1
    idx = np.flatnonzero(labels)
    lab = labels.ravel()[idx]
    area = np.bincount(lab, minlength=m)  # (m,) pixels per instance
    score = np.bincount(lab, weights=text.ravel()[idx], minlength=m) / np.maximum(area, 1)  # mean text prob
    results = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or area[i] < min_area or score[i] < box_thresh:
            continue
        inst = (labels[sl] == i).astype(np.uint8)  # (h,w) crop
        off = np.array([sl[1].start, sl[0].start], np.float32)
        contours = cv2.findContours(inst, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
        if polygon:
            c = max(contours, key=cv2.contourArea)  # grown 4-connected from one kernel: one piece
            shape = cv2.approxPolyDP(c, 0.01 * cv2.arcLength(c, True), True).reshape(-1, 2).astype(np.float32)
            if len(shape) < 4:
                shape = cv2.boxPoints(cv2.minAreaRect(c)).astype(np.float32)
        else:  # the outer contour holds the convex hull of the pixel centres: same min-area rectangle
            pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
            shape = order_quad(cv2.boxPoints(cv2.minAreaRect(pts)))
        out = np.clip(shape + off, 0, [W - 1, H - 1]) * np.array([sx, sy], np.float32)
        results.append((out.astype(np.float32), float(score[i])))
    return results


@dataclass(frozen=True)
class PANPostprocess:
    """The post-processing settings of PAN (see pan_postprocess).

    distance_threshold 3.0 is the authors' (pan_pp.pytorch) and MMOCR's value. Reasoning: training pulls text
    pixels to within delta_agg = 0.5 of their kernel's mean and pushes kernel means >= delta_dis = 3 apart, so for
    perfectly trained vectors any value in (0.5, 2.5) would separate instances by the vectors alone; 3.0 is
    lenient on purpose: the growth order (a pixel is reached from the nearest kernel first) and the tie-break
    (when two kernels reach a pixel in the same wave the closer mean wins) do most of the separating, and the
    threshold only blocks clearly foreign vectors (e.g. a neighbour whose own kernel was missed), without cutting
    words short when the vectors are poorly trained (small models, short schedules). Pass a smaller value (e.g.
    1.5) for stricter vector-based separation. min_area / min_kernel_area are in map pixels (maps are at the
    input resolution here, so 16 px is looser than MMOCR's 16 px at stride 4). box_thresh cuts the mean text
    probability of an instance, which is > min_text_confidence by construction.
    """
    min_text_confidence: float = 0.5
    min_kernel_confidence: float = 0.5
    box_thresh: float = 0.6
    min_area: float = 16
    min_kernel_area: float = 4
    distance_threshold: float = 3.0
    polygon: bool = False

    def __call__(self, text, kernel, embedding, scale: float | tuple[float, float] = 1.0):
        return pan_postprocess(text, kernel, embedding, scale=scale, **asdict(self))  # by name, not position


# ---------------------------------------------------------------------------------------------------- the head

PAN_HEADS = ("mmocr", "pan_pp")


@dataclass(frozen=True)
class PANConfig:
    """PAN's options (TrainConfig.head of the pan detectors)."""
    width: int = 128  # FPEM width (PAN paper, MMOCR FPEM_FFM conv_out, pan_pp.pytorch)
    # "mmocr" (one conv1x1 on the FFM output: MMOCR 0.x's PANHead, TCM's PAN) | "pan_pp" (conv3x3-BN-ReLU at the
    # neck width, then conv1x1: pan_pp.pytorch's head)
    head: str = "mmocr"
    ohem_ratio: float | None = 3.0  # hard negatives per positive of the text loss; None: every pixel


class PAN(TextHead):
    """PAN as a detection head: PANNeck (FPEM x2 + FFM) -> PANHead -> PANLoss; decoding by pixel aggregation.

    head: "mmocr" (one conv1x1 on the FFM output: MMOCR 0.x's PANHead, which TCM's authors use) or "pan_pp"
    (conv3x3-BN-ReLU to `width` channels, then conv1x1: pan_pp.pytorch's PA_Head, hidden 128 = its neck width).
    forward(features) -> dict(text_logits, kernel_logits (B,H,W), embedding (B,4,H,W), text, kernel (B,H,W)) at
    the input resolution (stride-4 predictions upsampled bilinearly)."""

    decode_keys = ("text", "kernel", "embedding")
    Config = PANConfig
    paper_width = 128  # FPEM width (PAN paper, MMOCR FPEM_FFM conv_out, pan_pp.pytorch)

    def __init__(self, in_channels: Sequence[int], width: int = 128, *, n_fpem: int = 2, head: str = "mmocr",
                 loss: PANLoss | None = None, postprocess: PANPostprocess | None = None,
                 targets: PANTargets | None = None):
        super().__init__()
        if head not in PAN_HEADS:
            raise DetectorError(f"PAN head must be one of {PAN_HEADS}, got {head!r}")
        self.neck = PANNeck(in_channels, width=width, n_fpem=n_fpem)
        self.maps = PANHead(self.neck.out_channels, hidden=None if head == "mmocr" else width)
        self.criterion = loss if loss is not None else PANLoss()
        self.postprocess = postprocess if postprocess is not None else PANPostprocess()
        self.targets = targets if targets is not None else PANTargets()

    @classmethod
    def from_config(cls, in_channels: Sequence[int], cfg: PANConfig) -> "PAN":
        return cls(in_channels, cfg.width, head=cfg.head, loss=PANLoss(ohem_ratio=cfg.ohem_ratio))

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.maps.hidden is None:  # conv1x1 head: per level, no stride-4 concatenation (same result)
            return self.maps(self.neck.levels(features))
        return self.maps(self.neck(features))



    def decode(self, maps: dict, scale=1.0, **overrides) -> list[tuple[np.ndarray, float]]:
        missing = [k for k in self.decode_keys if k not in maps]
        if missing:
            raise DetectorError(f"PAN decoding needs the maps {list(self.decode_keys)}, missing {missing}")
        try:
            pp = replace(self.postprocess, **overrides) if overrides else self.postprocess
        except TypeError as e:
            raise DetectorError(f"unknown PAN decoding setting in {sorted(overrides)}: {e}") from None
        return pp(maps["text"], maps["kernel"], maps["embedding"], scale)
