"""Real benchmarks in a folder the user names: which are there, and a fingerprint of their content.

The kit never ships a benchmark's files. A user gives a folder laid out as

    <data>/icdar2015/test/   ICDAR 2015 test: img_N.jpg + gt_img_N.txt
    <data>/td500/train/      MSRA-TD500 training set: IMG_*.JPG + IMG_*.gt
    <data>/td500/test/       MSRA-TD500 test set

(any of them may be missing; each split is read by tcm_kit.data.formats.read_folder), and a table made from
them is stamped with `fingerprint`: a hash of every file's relative path and content, so the same data on
another machine gives the same stamp and an edited annotation a new one.
"""
from __future__ import annotations

from pathlib import Path

from ..utils import config_hash, file_sha256

__all__ = ["BENCHMARK_SPLITS", "BenchmarkError", "find_benchmarks", "find_test_splits", "fingerprint",
           "fingerprints"]

# benchmark -> its splits, in the layout above
BENCHMARK_SPLITS = {"icdar2015": ("test",), "td500": ("train", "test")}


class BenchmarkError(FileNotFoundError):
    """The data folder a user named does not exist."""


def find_benchmarks(data) -> tuple[dict[str, Path], list[str]]:
    """({"icdar2015/test": folder, ...} for every split of BENCHMARK_SPLITS found under `data`, notes: one line
    per split that is absent). data None: nothing found, no notes."""
    if data is None:
        return {}, []
    root = Path(data).expanduser()
    if not root.is_dir():
        raise BenchmarkError(f"{root}: no such data folder (expected {', '.join(_layout())} inside)")
    found, notes = {}, []
    for name, splits in BENCHMARK_SPLITS.items():
        for split in splits:
            folder = root / name / split
            if folder.is_dir() and any(folder.iterdir()):
                found[f"{name}/{split}"] = folder
            else:
                notes.append(f"{name}/{split}: not found in {root}, its rows are left out")
    return found, notes


def find_test_splits(data) -> tuple[dict[str, Path], list[str]]:
    """find_benchmarks kept to the test splits, with the notes about absent test splits only."""
    found, notes = find_benchmarks(data)
    return ({k: v for k, v in found.items() if k.endswith("/test")},
            [n for n in notes if n.split(":", 1)[0].endswith("/test")])


def _layout() -> list[str]:
    return [f"{name}/{split}/" for name, splits in BENCHMARK_SPLITS.items() for split in splits]


def fingerprint(folder) -> str:
    """A content hash of a folder: every file's relative path and sha256 (12 hex digits)."""
    folder = Path(folder)
    entries = [(p.relative_to(folder).as_posix(), file_sha256(p)) for p in sorted(folder.rglob("*")) if p.is_file()]
    return config_hash({"files": entries})


def fingerprints(found: dict[str, Path]) -> str:
    """"icdar2015/test 0123456789ab, td500/test ..." for a stamp ('' when nothing was found)."""
    return ", ".join(f"{name} {fingerprint(folder)}" for name, folder in found.items())
