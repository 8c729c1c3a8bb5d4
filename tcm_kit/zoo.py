"""Released detectors: finished training runs shipped in the package as hashed fp16 files, as a model zoo.

A released detector `<name>` is three files in tcm_kit/weights/:

- ``<name>.pt``: {"kind", "name", "config" (the run's TrainConfig fields), "state_dict" (fp16 floats)};
- ``<name>.json``: its record: sha256 and size, the detector, the config and its run hash, the commit(s), CPU,
  precision and training time of the run, its validation and test figures, and `evaluations` (figures measured
  on benchmarks after the release, each with its data fingerprint);
- ``<name>-log.csv`` and, where the run recorded one, ``<name>-val.csv``: its training log and validation curve.

`export_detector(run_dir, name)` writes them from a finished run (re-making one is: train with the config in the
record, then export); `load_detector(name)` checks the sha256 before it builds the model.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .clip import WEIGHTS_DIR, file_sha256

__all__ = ["ZooError", "export_detector", "load_detector", "released_weights", "detector_record",
           "released_detectors", "DEFAULT_DETECTOR"]

KIND = "tcm-kit-detector"
DEFAULT_DETECTOR = "tcm-dbnet-synth"  # what `tcm-kit predict` uses without a run folder


class ZooError(RuntimeError):
    """A released detector that is missing, damaged, or cannot be made from the run given."""


def _paths(name: str, folder: Path) -> dict[str, Path]:
    return {"weights": folder / f"{name}.pt", "record": folder / f"{name}.json", "log": folder / f"{name}-log.csv",
            "val": folder / f"{name}-val.csv"}


def _folder(folder) -> Path:
    return Path(WEIGHTS_DIR if folder is None else folder)


def released_detectors(folder: Path | None = None) -> list[str]:
    """The names of the released detectors in `folder` (None: tcm_kit/weights), those with a record."""
    out = []
    for p in sorted(_folder(folder).glob("*.json")):
        try:
            if json.loads(p.read_text()).get("kind") == KIND:
                out.append(p.stem)
        except (OSError, json.JSONDecodeError):
            continue
    return out


def export_detector(run_dir, name: str, folder: Path | None = None) -> dict:
    """Write the release `name` of the finished run in `run_dir` into `folder` (None: tcm_kit/weights) -> its
    record."""
    from .train import load_run, run_hash, run_fields

    run_dir, folder = Path(run_dir), _folder(folder)
    model, cfg, result = load_run(run_dir)
    if result is None:
        raise ZooError(f"{run_dir} has not finished (no result.json): finish the run, then export it")
    folder.mkdir(parents=True, exist_ok=True)
    paths = _paths(name, folder)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    tmp = paths["weights"].with_suffix(".tmp")
    torch.save({"kind": KIND, "name": name, "config": run_fields(cfg), "state_dict": half}, tmp)
    os.replace(tmp, paths["weights"])
    shutil.copyfile(run_dir / "log.csv", paths["log"])
    has_val = (run_dir / "val_curve.csv").exists()
    if has_val:
        shutil.copyfile(run_dir / "val_curve.csv", paths["val"])
    keep = ("precision", "recall", "hmean", "box_thresh", "val_hmean", "n_test", "test_size", "steps",
            "train_images", "train_seconds", "commit", "amp", "cpu")
    record = {"kind": KIND, "name": name, "file": paths["weights"].name, "sha256": file_sha256(paths["weights"]),
              "size_bytes": paths["weights"].stat().st_size, "dtype": "float16", "detector": cfg.detector,
              "domain": cfg.domain, "run_hash": result.get("config_hash") or run_hash(cfg),
              "config": run_fields(cfg), "result": {k: result.get(k) for k in keep},
              "log": paths["log"].name, "val_curve": paths["val"].name if has_val else None, "evaluations": []}
    text = json.dumps(record, indent=1, default=str)
    paths["record"].write_text(text + "\n")
    return json.loads(text)  # as load_detector will read it (tuples as lists)


def detector_record(name: str, folder: Path | None = None) -> dict:
    """The record of the released detector `name` (its json) in `folder` (None: tcm_kit/weights)."""
    path = _paths(name, _folder(folder))["record"]
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        have = released_detectors(folder)
        raise ZooError(f"{path}: no released detector {name!r} in this checkout (released: "
                       f"{', '.join(have) or 'none yet'}); pass a run folder of your own instead") from None
    except json.JSONDecodeError as e:
        raise ZooError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if record.get("kind") != KIND:
        raise ZooError(f"{path} is not a released detector's record (kind {record.get('kind')!r})")
    return record


def released_weights(name: str, folder: Path | None = None) -> tuple[dict, dict, dict]:
    """(fp32 state dict, TrainConfig fields, record) of the released detector `name`, its sha256 checked first."""
    record = detector_record(name, folder)
    path = _paths(name, _folder(folder))["weights"]
    if not path.is_file():
        raise ZooError(f"{path} is missing (its record {path.with_suffix('.json').name} is there): restore it "
                       "from git")
    digest = file_sha256(path)
    if digest != record.get("sha256"):
        raise ZooError(f"{path}: sha256 {digest[:16]}... does not match the recorded {str(record.get('sha256'))[:16]}"
                       f"... in {path.with_suffix('.json').name}: the file is damaged or was replaced")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    return weights, ckpt["config"], record


def load_detector(name: str = DEFAULT_DETECTOR, device: str = "cpu", folder: Path | None = None):
    """(model in eval mode, TrainConfig, record) of the released detector `name` in `folder` (None:
    tcm_kit/weights), its sha256 checked first."""
    from .train import TrainConfig, build_model

    weights, fields, record = released_weights(name, folder)
    cfg = TrainConfig.from_dict(fields)
    model = build_model(cfg, progress=False)
    model.load_state_dict(weights)
    return model.to(device).eval(), cfg, record
