"""A text detector = a backbone (plain CLIP image encoder or TCM) + a detection head (DBNet, PAN, FCENet).

`Detector(backbone_or_tcm, head)` is the one interface the training loop, evaluation, the CLI and the notebooks
use; `build_detector(name, clip)` makes the detectors by name: "<head>" (CLIP image encoder, no language side),
"tcm-<head>" (TCM in front of the same head) and "<head>-scratch" (same architecture, random init) for every
head family in `HEADS`.

A head (`TextHead`) owns its neck, its output maps, its options (`Config`), its loss, its training targets and
its decoding into polygons, so a new detector family is one module with one class, plus its line in `HEADS`.
The detector adds TCM's auxiliary target to the head's when the backbone is TCM.
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
from tcm_kit.tcm import TCM, Backbone, TCMConfig

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
        # NHWC convolutions: oneDNN takes every convolution (NCHW sends small-batch 1x1 convs to a slow path on CPU)
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
        if "score_logits" in out and isinstance(self.backbone, TCM):
            aux = self.backbone.aux_loss(out, batch["prob"], batch["prob_mask"])
            parts["loss_aux"] = aux  # already weighted by λ
            parts["loss"] = parts["loss"] + aux
        return parts

    def target_fn(self) -> Callable:
        """(instances, h, w) -> the training maps this detector's loss needs (picklable, for DataLoader workers):
        the head's, and with a TCM backbone also TCM's (TCM.target_fn)."""
        if isinstance(self.backbone, TCM):
            return DetectorTargets(self.head.target_fn(), self.backbone.target_fn())
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


class DetectorTargets:
    """The head's training maps, then the backbone's that the head's do not already hold (DBNet's "prob" and
    "prob_mask" are TCM's shrink map: the same function with the same settings, so they are computed once)."""

    def __init__(self, head_fn: Callable, backbone_fn: Callable):
        self.head_fn, self.backbone_fn = head_fn, backbone_fn

    def __call__(self, instances, h: int, w: int) -> dict:
        maps = self.head_fn(instances, h, w)
        if not {"prob", "prob_mask"} <= maps.keys():
            maps.update(self.backbone_fn(instances, h, w))
        return maps


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


def build_detector(name: str, clip: nn.Module, head=None, tcm: TCMConfig | None = None) -> Detector:
    """The detector `name` on a deep copy of `clip` (detectors never share weights).

    head: the head family's options (its `Config`, e.g. tcm_kit.heads.db.DBConfig; None: the family's defaults);
    tcm: TCM's options (tcm_kit.tcm.TCMConfig; None: the defaults), only for "tcm-*" detectors."""
    family, is_tcm, scratch = head_family(name)
    head_cls = HEADS[family]
    if tcm is not None and not is_tcm:
        raise DetectorError(f"{name!r} takes no TCM options, got {tcm}")
    if head is not None and not isinstance(head, head_cls.Config):
        raise DetectorError(f"{name!r} takes head options of type {head_cls.Config.__name__}, got {head!r}")
    clip = copy.deepcopy(clip)
    backbone = TCM(clip, tcm or TCMConfig()) if is_tcm else Backbone(clip, scratch=scratch)
    return Detector(backbone, head_cls.from_config(backbone.out_channels, head or head_cls.Config()))
