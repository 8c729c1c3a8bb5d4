"""The interface every detection head implements (see tcm_kit.detector)."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

__all__ = ["TextHead", "DetectorError"]


class DetectorError(ValueError):
    """Bad detector name, options, inputs or targets."""


class TextHead(nn.Module):
    """The detection part of a detector: neck + output maps + loss + targets + decoding.

    Subclasses set `decode_keys` (the outputs `decode` reads), `paper_width` (their paper's neck width) and
    `loss_class` (their loss; it takes an
    `ohem_ratio` keyword: float = hard-negative mining ratio of the text-region loss, None = class-balanced) and
    implement:
      forward(features: 4 maps at strides 4..32) -> dict of output tensors (B, ...);
      loss(out, batch) -> dict(loss, loss_<part>...);
      target_fn() -> picklable callable (instances, h, w) -> dict of float32 numpy maps for one (h, w) training
        image; it must include "prob" and "prob_mask" (the shrunk text-region map TCM's auxiliary loss uses);
      decode(maps, scale, **overrides) -> [(polygon float32 (N,2), score)] for ONE image, where maps holds
        out[k][i] as numpy for k in decode_keys; `box_thresh=` among the overrides is the instance-score cut every
        head understands (evaluation sweeps it).
    """

    decode_keys: tuple = ()
    loss_class: type | None = None
    paper_width: int = 256  # the neck width of the head's paper (what the `full` profile and the benchmarks use)

    def target_fn(self) -> Callable:
        raise NotImplementedError

    def decode(self, maps: dict, scale=1.0, **overrides) -> list:
        raise NotImplementedError
