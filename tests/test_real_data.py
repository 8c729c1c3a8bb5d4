"""tcm_kit.data.benchmarks: which real benchmarks a user's folder holds, and a content fingerprint for stamps."""
import os

import pytest

from tcm_kit.data.benchmarks import find_benchmarks, find_test_splits, fingerprint, fingerprints


def _layout(root, parts=("icdar2015/test", "td500/train", "td500/test")):
    for part in parts:
        (root / part).mkdir(parents=True)
        (root / part / "gt_img_1.txt").write_text(f"1,1,9,1,9,9,1,9,{part}\n")
    return root


def test_found_splits_and_a_note_per_absent_one(tmp_path):
    found, notes = find_benchmarks(_layout(tmp_path, ("icdar2015/test", "td500/test")))
    assert sorted(found) == ["icdar2015/test", "td500/test"] and found["td500/test"] == tmp_path / "td500" / "test"
    assert notes == [f"td500/train: not found in {tmp_path}, its rows are left out"]
    (tmp_path / "td500" / "train").mkdir()  # an empty folder is absent too
    assert find_benchmarks(tmp_path)[1] == notes
    assert find_benchmarks(None) == ({}, [])
    tests, test_notes = find_test_splits(tmp_path)
    assert sorted(tests) == ["icdar2015/test", "td500/test"] and test_notes == []  # td500/train's note is not theirs
    with pytest.raises(FileNotFoundError, match="icdar2015/test/"):
        find_benchmarks(tmp_path / "missing")


def test_the_fingerprint_follows_content_not_copies_or_times(tmp_path):
    a = _layout(tmp_path / "a")
    b = _layout(tmp_path / "b")  # the same files written again elsewhere: same content, other mtimes
    os.utime(b / "td500" / "test" / "gt_img_1.txt", (0, 0))
    assert fingerprint(a) == fingerprint(b) and len(fingerprint(a)) == 12
    (b / "td500" / "test" / "gt_img_1.txt").write_text("1,1,9,1,9,9,1,9,edited\n")
    assert fingerprint(a) != fingerprint(b)
    found, _ = find_benchmarks(a)
    assert fingerprints(found) == ", ".join(f"{k} {fingerprint(v)}" for k, v in found.items())
    assert fingerprints({}) == ""
