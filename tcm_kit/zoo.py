"""Released detectors: finished training runs shipped in the package as hashed fp16 files, as a model zoo.

A released detector `<name>` is three or four files in tcm_kit/weights/:

- ``<name>.pt``: {"kind", "name", "config" (the run's TrainConfig fields), "state_dict" (fp16 floats, fp32 for
  a tensor with a value beyond fp16's range, listed as the record's `float32_keys`)};
- ``<name>.json``: its record: sha256 and size, the detector, the config and its run hash, the commit(s), CPU,
  precision and training time of the run, its validation and test figures, `evaluations` (figures measured
  on benchmarks after the release, each with its data fingerprint) and, once calibrated, `photo_calibration`
  (the box threshold and long side for photos, chosen on real validation photos: tcm_kit.calibrate);
- ``<name>-log.csv`` and, where the run recorded one, ``<name>-val.csv``: its training log and validation curve.

`tcm_kit.train.export_detector(run_dir, name)` writes them from a finished run (re-making one is: train with the
config in the record, then export); `tcm_kit.train.load_detector(name)` checks the sha256 (`released_weights`)
before it builds the model. This module reads and writes the files only, so that tcm_kit.train can use it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .clip import WEIGHTS_DIR, file_sha256, verify_release
from .utils import atomic_write_text

__all__ = ["ZooError", "write_release", "record_evaluation", "record_calibration", "photo_box_thresh",
           "remove_release", "released_weights",
           "detector_record", "released_detectors", "DEFAULT_DETECTOR", "PHOTO_SIZE"]

KIND = "tcm-kit-detector"
DEFAULT_DETECTOR = "tcm-dbnet-synth"  # what `tcm-kit predict` uses without a run folder
# the long side a released detector resizes a real photo to (`tcm-kit predict`, benchmarks.real_photos): ICDAR2015's
# photos at their own 1280 x 720. Its own test_size is the synthetic test split's, far smaller than a photo.
PHOTO_SIZE = 1280


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


def _half(v: torch.Tensor) -> torch.Tensor:
    """A floating tensor in fp16 for the release file, unless a value of it overflows fp16 (|x| > 65504, e.g. a
    BatchNorm running variance): that one stays fp32, since inf would silence the layer."""
    if not v.is_floating_point():
        return v
    h = v.half()
    return h if bool(torch.isfinite(h).all()) or not bool(torch.isfinite(v).all()) else v.float()


def write_release(run_dir, state_dict: dict, fields: dict, result: dict, name: str, folder: Path | None = None) -> dict:
    """Write the release `name` of a finished run (its folder, model state, TrainConfig fields and result) into
    `folder` (None: tcm_kit/weights) -> its record. tcm_kit.train.export_detector reads the run and calls this."""
    run_dir, folder = Path(run_dir), _folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = _paths(name, folder)
    half = {k: _half(v) for k, v in state_dict.items()}
    wide = sorted(k for k, v in half.items() if v.dtype == torch.float32)
    tmp = paths["weights"].with_suffix(".tmp")
    torch.save({"kind": KIND, "name": name, "config": fields, "state_dict": half}, tmp)
    os.replace(tmp, paths["weights"])
    shutil.copyfile(run_dir / "log.csv", paths["log"])
    has_val = (run_dir / "val_curve.csv").exists()
    if has_val:
        shutil.copyfile(run_dir / "val_curve.csv", paths["val"])
    keep = ("precision", "recall", "hmean", "box_thresh", "val_hmean", "n_test", "test_size", "steps",
            "train_images", "train_seconds", "commit", "amp", "cpu")
    record = {"kind": KIND, "name": name, "file": paths["weights"].name, "sha256": file_sha256(paths["weights"]),
              "size_bytes": paths["weights"].stat().st_size, "dtype": "float16", "float32_keys": wide,
              "detector": fields["detector"],
              "domain": fields["domain"], "run_hash": result["config_hash"], "config": fields,
              "result": {k: result.get(k) for k in keep}, "photo_size": PHOTO_SIZE,
              "log": paths["log"].name, "val_curve": paths["val"].name if has_val else None, "evaluations": []}
    text = json.dumps(record, indent=1, default=str)
    paths["record"].write_text(text + "\n")
    return json.loads(text)  # as it will be read back (tuples as lists)


def record_evaluation(name: str, entry: dict, folder: Path | None = None) -> dict:
    """Add a benchmark figure to the record of the released detector `name` (its `evaluations`): `entry` holds at
    least "split", "data" (the split's content fingerprint) and "long_side"; an entry with the same three is
    replaced. The weights, and so the sha256, are untouched -> the record."""
    record = detector_record(name, folder)
    key = tuple(entry[k] for k in ("split", "data", "long_side"))
    kept = [e for e in record.get("evaluations", []) if tuple(e.get(k) for k in ("split", "data", "long_side")) != key]
    record["evaluations"] = kept + [entry]
    _write_record(record, _paths(name, _folder(folder))["record"])
    return record


def record_calibration(name: str, entry: dict, folder: Path | None = None) -> dict:
    """Set the photo settings (tcm_kit.calibrate.calibrate_photos) in the record of the released detector `name`
    (its `photo_calibration`, replacing an earlier one). The weights, and so the sha256, are untouched -> the
    record."""
    record = detector_record(name, folder)
    record["photo_calibration"] = entry
    _write_record(record, _paths(name, _folder(folder))["record"])
    return record


def photo_box_thresh(record: dict) -> tuple[float, str]:
    """(box threshold for photos, where it was chosen) of a released detector's record: its calibration's when it
    has one (tcm_kit.calibrate), else the one its run picked on its synthetic validation split."""
    cal = record.get("photo_calibration")
    if cal:
        return float(cal["box_thresh"]), f"chosen on {cal['split']} ({cal['photos']} photos) at {cal['long_side']} px"
    return float(record["result"]["box_thresh"]), "chosen on its synthetic validation split"


def _write_record(record: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")


def remove_release(name: str, folder: Path | None = None) -> None:
    """Delete the files write_release wrote for `name` (export_detector, when they fail its check)."""
    for path in _paths(name, _folder(folder)).values():
        path.unlink(missing_ok=True)


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
    paths = _paths(name, _folder(folder))
    verify_release(paths["weights"], paths["record"], record.get("sha256"), ZooError)
    path = paths["weights"]
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    return weights, ckpt["config"], record
