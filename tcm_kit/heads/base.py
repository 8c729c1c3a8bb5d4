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
    `Config` (a frozen dataclass of their options, with at least `width`: what a run's config holds as
    TrainConfig.head), hold `criterion` (their loss) and `targets` (their target function), and implement:
      from_config(in_channels, cfg) -> the head of those options (its loss, targets and decoding included);
      forward(features: 4 maps at strides 4..32) -> dict of output tensors (B, ...);
    and so have:
      loss(out, batch) = criterion(out, batch) -> dict(loss, loss_<part>...);
      target_fn() = targets: picklable (instances, h, w) -> dict of float32 numpy maps for one (h, w) training
        image (the maps its loss reads; a Detector adds TCM's);
    and implement:
      decode(maps, scale, **overrides) -> [(polygon float32 (N,2), score)] for ONE image, where maps holds
        out[k][i] as numpy for k in decode_keys; `box_thresh=` among the overrides is the instance-score cut every
        head understands (evaluation sweeps it).
    """

    decode_keys: tuple = ()
    Config: type | None = None
    paper_width: int = 256  # the neck width of the head's paper (what the `full` profile and the benchmarks use)

    @classmethod
    def from_config(cls, in_channels, cfg) -> "TextHead":
        raise NotImplementedError

    def loss(self, out: dict, batch: dict) -> dict:
        return self.criterion(out, batch)

    def target_fn(self) -> Callable:
        return self.targets

    def decode(self, maps: dict, scale=1.0, **overrides) -> list:
        raise NotImplementedError
