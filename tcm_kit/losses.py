"""Shared segmentation losses: balanced BCE with hard-negative mining, dice, masked L1, and TCM's auxiliary loss.

All maps are (B,H,W) (or any matching shape); `mask` is 1 where a pixel counts and 0 on don't-care regions.
Probability-map BCE works on logits (numerically safe and allowed under autocast).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class LossInputError(ValueError):
    """Bad shapes or arguments given to a loss."""


def _check_same_shape(**maps: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in maps.items()}
    if len(set(shapes.values())) != 1:
        raise LossInputError(f"maps must share one shape, got {shapes}")


def balanced_bce_ohem(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      neg_ratio: float | None = 3.0, min_neg: int = 100, eps: float = 1e-6) -> torch.Tensor:
    """BCE over all positives plus the hardest `neg_ratio`×#positives negatives, averaged over the kept pixels.

    Positives are target > 0.5 inside the mask. Over the whole batch (as in DBNet). When a batch has no positive
    pixel, the `min_neg` hardest negatives are kept so that text-free images still teach "no text here".
    neg_ratio=None: no mining, the class-balanced BCE (mean over positives + mean over negatives) instead; every
    negative then gets a gradient.
    """
    _check_same_shape(logits=logits, target=target, mask=mask)
    target, mask = target.float(), mask.float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")  # (B,H,W)
    pos = (target > 0.5).float() * mask
    neg = (target <= 0.5).float() * mask
    if neg_ratio is None:
        return (loss * pos).sum() / (pos.sum() + eps) + (loss * neg).sum() / (neg.sum() + eps)
    n_pos = int(pos.sum().item())
    n_neg_all = int(neg.sum().item())
    n_neg = min(n_neg_all, int(n_pos * neg_ratio)) if n_pos > 0 else min(n_neg_all, min_neg)
    pos_loss = (loss * pos).sum()
    if n_neg > 0:
        neg_loss = torch.topk((loss * neg).flatten(), n_neg).values.sum()
    else:
        neg_loss = loss.sum() * 0.0  # keeps the graph connected
    return (pos_loss + neg_loss) / (n_pos + n_neg + eps)


def dice_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - 2|P∩G| / (|P| + |G|) inside the mask; pred in [0, 1]."""
    _check_same_shape(pred=pred, target=target, mask=mask)
    pred, target, mask = pred.float(), target.float(), mask.float()
    inter = (pred * target * mask).sum()
    union = (pred * mask).sum() + (target * mask).sum() + eps
    return 1.0 - 2.0 * inter / union


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean absolute error over the pixels where mask is 1."""
    _check_same_shape(pred=pred, target=target, mask=mask)
    mask = mask.float()
    return ((pred.float() - target.float()).abs() * mask).sum() / (mask.sum() + eps)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Plain BCE (targets may be soft) averaged over the pixels where mask is 1."""
    _check_same_shape(logits=logits, target=target, mask=mask)
    mask = mask.float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return (loss * mask).sum() / (mask.sum() + eps)


def ilm_aux_loss(score_logits: torch.Tensor, prob: torch.Tensor, prob_mask: torch.Tensor, mode: str = "ohem",
                 neg_ratio: float | None = 3.0) -> torch.Tensor:
    """TCM's auxiliary instance-language matching loss on the text class (channel 0 of the score logits).

    score_logits: (B,K,h,w) = cosine/τ at stride s. prob, prob_mask: (B,H,W) DB shrink map and its mask.
    mode "ohem" (the authors' code): logits upsampled bilinearly to (H,W), balanced BCE + OHEM 3:1 vs the shrink map
      (neg_ratio=None: class-balanced BCE without mining, as balanced_bce_ohem).
    mode "bce" (the paper's form): plain BCE at stride s against the fraction of shrunk-text pixels per cell of the
      shrink map (a soft stride-s text mask); cells with any don't-care pixel (prob_mask 0) are left out.
    """
    if score_logits.dim() != 4:
        raise LossInputError(f"score_logits must be (B,K,h,w), got {tuple(score_logits.shape)}")
    logits = score_logits[:, 0]  # (B,h,w)
    if mode == "ohem":
        up = F.interpolate(logits[:, None], size=prob.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return balanced_bce_ohem(up, prob, prob_mask, neg_ratio=neg_ratio)
    if mode == "bce":
        h, w = logits.shape[-2:]
        text_mask = F.adaptive_avg_pool2d(prob[:, None].float(), (h, w))[:, 0]  # (B,h,w) soft text fraction
        # a cell counts only when no pixel of it is don't-care
        cell_mask = 1.0 - F.adaptive_max_pool2d(1.0 - prob_mask[:, None].float(), (h, w))[:, 0]
        return masked_bce(logits, text_mask, cell_mask)
    raise LossInputError(f"aux loss mode must be 'ohem' or 'bce', got {mode!r}")
