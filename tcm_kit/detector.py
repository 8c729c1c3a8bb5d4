"""A text detector = a backbone (plain CLIP image encoder or TCM) + a detection head (DBNet, PAN, FCENet).

`Detector(backbone_or_tcm, head)` is the one interface the training loop, evaluation, the CLI and the notebooks
use; `build_detector(name, clip)` makes the detectors by name: "<head>" (CLIP image encoder, no language side),
"tcm-<head>" (TCM in front of the same head) and "<head>-scratch" (same architecture, random init) for every
head family in `HEADS`.

A head (`TextHead`) owns its neck, its output maps, its loss, its training targets and its decoding into
polygons, so a new detector family is one module with one class.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from tcm_kit.heads.base import DetectorError, TextHead
from tcm_kit.heads.db import DBNet
from tcm_kit.heads.fce import FCENet
from tcm_kit.heads.pan import PAN
from tcm_kit.tcm import TCM, Backbone

__all__ = ["TextHead", "Detector", "DetectorError", "build_detector", "detector_names", "head_family", "HEADS",
           "DETECTORS"]


class Detector(nn.Module):
    """backbone (Backbone or TCM) -> head (TextHead); loss = L_det + λ·L_aux (TCM only).

    forward(images (B,3,H,W)) -> the head's outputs [+ score_logits, score_map from TCM].
    loss(out, batch) -> dict(loss, the head's parts[, loss_aux]).
    predict(images, scale, **overrides) -> per image [(polygon (N,2) float32, score)].
    """

    def __init__(self, backbone: nn.Module, head: TextHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        # NHWC convolutions: oneDNN takes every convolution (NCHW sends small-batch 1x1 convs to a slow path on
        # CPU), measured 0.55 -> 0.44 s per dbnet training step (batch 8, 160 px, 1 thread)
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[-1] % 32 or images.shape[-2] % 32:
            raise DetectorError(f"images must be (B,3,H,W) with H, W multiples of 32, got {tuple(images.shape)}")
        feats = self.backbone(images.contiguous(memory_format=torch.channels_last))
        out = self.head(feats.features)
        if getattr(feats, "score_logits", None) is not None:
            out["score_logits"], out["score_map"] = feats.score_logits, feats.score_map
        return out

    def loss(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        parts = self.head.loss(out, batch)
        if "score_logits" in out and hasattr(self.backbone, "aux_loss"):
            aux = self.backbone.aux_loss(out, batch["prob"], batch["prob_mask"], text_mask=batch.get("text_mask"))
            parts["loss_aux"] = aux  # already weighted by λ
            parts["loss"] = parts["loss"] + aux
        return parts

    def target_fn(self) -> Callable:
        """(instances, h, w) -> the training maps this detector's loss needs (picklable, for DataLoader workers)."""
        return self.head.target_fn()

    @torch.no_grad()
    def predict(self, images: torch.Tensor, scale: float | tuple | list = 1.0,
                **overrides) -> list[list[tuple[np.ndarray, float]]]:
        """Detections per image; `scale` maps map pixels to original-image pixels: a float or an (sx, sy) tuple
        for all images, or a list with one of those per image; keyword overrides change the head's decoding
        settings for this call (e.g. box_thresh=0.5). Runs in eval mode and restores the previous mode."""
        was_training = self.training
        self.eval()
        try:
            out = self(images)
        finally:
            self.train(was_training)
        maps = {k: out[k].float().cpu().numpy() for k in self.head.decode_keys}
        n = len(images)
        if isinstance(scale, list) and len(scale) != n:
            raise DetectorError(f"a list of scales needs one per image ({n}), got {len(scale)}")
        scales = scale if isinstance(scale, list) else [scale] * n
        return [self.head.decode({k: v[i] for k, v in maps.items()}, s, **overrides) for i, s in enumerate(scales)]


# ---------------------------------------------------------------------------------------------------- by name

# one entry per head family (a new family: one TextHead module and one line here)
HEADS: dict = {"dbnet": DBNet, "pan": PAN, "fcenet": FCENet}


def detector_names(families: Sequence[str] = tuple(HEADS)) -> tuple[str, ...]:
    """"<f>", "tcm-<f>", "<f>-scratch" for each head family."""
    return tuple(n for f in families for n in (f, f"tcm-{f}", f"{f}-scratch"))


DETECTORS = detector_names()


def head_family(name: str) -> tuple[str, bool, bool]:
    """"tcm-pan" -> ("pan", tcm=True, scratch=False)."""
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; choose one of {DETECTORS}")
    tcm = name.startswith("tcm-")
    base = name[4:] if tcm else name
    scratch = base.endswith("-scratch")
    return (base[: -len("-scratch")] if scratch else base), tcm, scratch


def build_detector(name: str, clip: nn.Module, *, neck_width: int = 256, ohem_ratio: float | None = 3.0,
                   head_options: dict | None = None, **tcm_flags) -> Detector:
    """The detector `name` on a deep copy of `clip` (detectors never share weights).

    neck_width: the head's neck width (DBNet/FCENet FPN 256, PAN 128 in the papers; the cpu profile uses less
    with the tiny CLIP); ohem_ratio: hard-negative mining of the text-region loss of the head and of TCM's
    auxiliary loss (3 in all three papers; None = class-balanced, no mining); head_options: extra keyword
    arguments of the head class (e.g. a DBPostprocess; a "loss" given there wins over ohem_ratio);
    tcm_flags: TCM options, only for "tcm-*" detectors."""
    family, tcm, scratch = head_family(name)
    if not tcm and tcm_flags:
        raise DetectorError(f"{name!r} takes no TCM options, got {sorted(tcm_flags)}")
    clip = copy.deepcopy(clip)
    backbone = TCM(clip, ohem_ratio=ohem_ratio, **tcm_flags) if tcm else Backbone(clip, scratch=scratch)
    options = dict(head_options or {})
    if ohem_ratio != 3.0:
        options.setdefault("loss", HEADS[family].loss_class(ohem_ratio=ohem_ratio))
    head = HEADS[family](backbone.out_channels, width=neck_width, **options)
    return Detector(backbone, head)
