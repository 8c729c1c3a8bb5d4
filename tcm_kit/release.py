"""The released embedded CLIP: export a finished pre-training run as the kit's versioned artefact.

`export_release(ckpt)` takes the fp32 checkpoint that `tcm_kit.pretrain` wrote for the ``release`` recipe and
writes, into tcm_kit/weights/:

- ``embedded-clip.pt``: the kit checkpoint with fp16 weights (what `load_clip("embedded")` loads);
- ``embedded-clip.json``: its sha256 and size, the PretrainConfig and its hash, the commit(s) that trained it,
  the precision, the CPU, the wall time, and the probe figures (tcm_kit.probe) at the sizes of PROBE_SIZES;
- ``embedded-clip-log.csv``: the training curve (loss, accuracy, lr, temperature, image size per step).

Re-making it is one command: ``tcm-kit pretrain --profile release --export``.
"""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import torch

from tcm_kit.clip import (RELEASED_CLIP, ClipWeightsError, _load_from_path, file_sha256, load_state_dict_file,
                          save_kit_checkpoint)
from tcm_kit.inspection import prior_table
from tcm_kit.probe import PROBE_SIZES
from tcm_kit.utils import atomic_write_text, cpu_name

__all__ = ["export_release", "PROBE_SIZES", "cpu_name"]

PROBE_N, PROBE_SEED = 256, 1234  # held-out scenes per size of tcm_kit.probe.PROBE_SIZES


def export_release(ckpt_path, out_path: Path = RELEASED_CLIP, probe_n: int = PROBE_N, probe_sizes=PROBE_SIZES,
                   progress: bool = True) -> dict:
    """Write the fp16 release of the finished pre-training checkpoint `ckpt_path` -> the record (also the json).

    probe_n scenes of each (width, height) in probe_sizes are probed (probe_n=0: none)."""
    import json

    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    if ckpt_path.resolve() == out_path.resolve():
        raise ClipWeightsError(f"{ckpt_path}: the release would overwrite its own source; give another checkpoint")
    sd, kit = load_state_dict_file(ckpt_path)
    if kit is None or "pretrain_config" not in kit:
        raise ClipWeightsError(f"{ckpt_path} is not a finished tcm-kit pre-training checkpoint (no pretrain_config)")
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    meta = {k: kit.get(k) for k in ("pretrain_config", "config_hash", "git_commit", "amp", "wall_time_s", "steps")}
    meta["amp"] = meta["amp"] or kit.get("precision")  # the key's name in checkpoints of 2026-12-01
    save_kit_checkpoint(_StateHolder(half, kit["model_name"]), out_path, **meta)
    t0 = time.time()
    model, _ = _load_from_path(out_path)  # probed as users load it: fp16 weights, fp32 arithmetic
    probe_rows = prior_table({"released": model.float().eval()}, n=probe_n, sizes=probe_sizes, seed=PROBE_SEED,
                             progress=progress).drop(columns="model").to_dict("records") if probe_n else []
    probe_s = time.time() - t0
    log = kit.get("log") or []
    meta_path = out_path.with_suffix(".json")
    log_path = out_path.with_name(out_path.stem + "-log.csv")
    if log:
        tmp = log_path.with_name(log_path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, list(log[0]))
            w.writeheader()
            w.writerows(log)
        os.replace(tmp, log_path)
    record = {
        "file": out_path.name, "sha256": file_sha256(out_path), "size_bytes": out_path.stat().st_size,
        "dtype": "float16", "model_name": kit["model_name"], "parameters": sum(v.numel() for v in sd.values()),
        **meta, "cpu": cpu_name(), "torch": torch.__version__, "log": log_path.name if log else None,
        "source": ckpt_path.name, "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "probe": {"n": probe_n, "seed": PROBE_SEED, "seconds": round(probe_s, 1), "rows": probe_rows},
    }
    atomic_write_text(meta_path, json.dumps(record, indent=1, default=str) + "\n")
    return record


class _StateHolder(torch.nn.Module):
    """Carries a ready state dict through save_kit_checkpoint (which records the model's name and config)."""

    def __init__(self, sd: dict, name: str):
        super().__init__()
        self._sd, self.tcm_model_name = sd, name

    def state_dict(self, *args, **kwargs):
        return dict(self._sd)

