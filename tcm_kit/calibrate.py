"""Photo settings of a released detector, chosen on real validation photos: the box-score threshold and long side.

A detector trained on synthetic scenes picks its box threshold on its synthetic validation split, where its
scores mean something else than on photos: on real photos it also scores background clutter above 0.9. This
module picks, on a labelled real split that is not a test split (td500/train: `benchmarks.real_photos` and the
README say so), the (long side, box threshold) pair with the best hmean-IoU, the binarisation threshold and the
other decoding settings kept as trained:

    entry = calibrate_photos(model, "<data>/td500/train")   # {"box_thresh", "long_side", "hmean", "grid", ...}
    tcm_kit.zoo.record_calibration("tcm-dbnet-synth", entry)

`tcm-kit calibrate NAME --data FOLDER` does both. `tcm-kit predict` and `benchmarks.real_photos` then use the
recorded box threshold for photos (tcm_kit.zoo.photo_box_thresh); the recorded long side is the one for photos of
a benchmark other than ICDAR2015, which is run at its own 1280 x 720.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["PHOTO_BOX_THRESHOLDS", "PHOTO_SIZES", "VALIDATION_SPLIT", "calibrate_photos", "calibration_split"]

# box thresholds tried on photos: a synthetic-trained detector's pick on photos lies at the top of the training
# grid (0.3-0.9), so the grid goes on in finer steps up to 0.98
PHOTO_BOX_THRESHOLDS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98)
PHOTO_SIZES = (640, 960, 1280)  # long sides tried
VALIDATION_SPLIT = "td500/train"  # the labelled real photos that are no test split


def calibrate_photos(model, root, sizes=PHOTO_SIZES, thresholds=PHOTO_BOX_THRESHOLDS, split: str = VALIDATION_SPLIT,
                     device: str = "cpu", progress: bool = True) -> dict:
    """The (long side, box threshold) with the best hmean-IoU on the labelled photos in `root` (ties: the smaller
    long side, then the lower threshold) -> {"split", "data" (content fingerprint), "photos", "long_side",
    "box_thresh", "precision", "recall", "hmean", "grid": [{"long_side", "box_thresh", "precision", "recall",
    "hmean"}, ...]}. Each long side costs one pass over the photos; the thresholds are swept on its detections."""
    from .data.benchmarks import fingerprint
    from .metrics import best_threshold_sweep
    from .train import predict_folder

    if not sizes or not thresholds:
        raise ValueError("calibrate_photos needs at least one long side and one box threshold")
    grid = []
    for size in sizes:
        preds, gts = predict_folder(model, root, int(size), device, batch_size=1, progress=progress,
                                    box_thresh=min(thresholds))
        for r in best_threshold_sweep(preds, gts, thresholds=thresholds)["results"]:
            grid.append({"long_side": int(size), "box_thresh": r["threshold"], "precision": round(r["precision"], 4),
                         "recall": round(r["recall"], 4), "hmean": round(r["hmean"], 4)})
    best = max(grid, key=lambda g: (g["hmean"], -g["long_side"], -g["box_thresh"]))
    return {"split": split, "data": fingerprint(root), "photos": len(gts), **best, "grid": grid}


def calibration_split(data) -> Path:
    """The validation split VALIDATION_SPLIT inside a data folder laid out like ../shared/datasets."""
    from .data.benchmarks import BenchmarkError

    root = Path(data).expanduser() / VALIDATION_SPLIT
    if not root.is_dir():
        raise BenchmarkError(f"{root}: not found; calibration needs the labelled {VALIDATION_SPLIT} photos "
                             "(the README says where to get them)")
    return root
