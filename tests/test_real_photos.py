"""benchmarks.real_photos: released detectors (and runs) on a benchmark folder, one resumable pass per detector and
split, then a stamped table with intervals over photos and Holm-corrected paired differences."""
import json

import pytest

from benchmarks import real_photos as R
from tcm_kit import train as T
from tcm_kit import zoo
from tcm_kit.data.synth import write_synth_set
from tcm_kit.train import TrainConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    run = root / "run"
    T.train(TrainConfig.for_profile("smoke", detector="tcm-dbnet"), run, progress=False)
    T.export_detector(run, "tiny", root / "weights")
    data = root / "datasets"
    write_synth_set("synth-ic15", num=3, size=128, seed=5, out=data / "icdar2015" / "test", progress=False)
    return run, root / "weights", data


@pytest.fixture()
def env(setup, tmp_path, monkeypatch):
    import shutil

    run, weights, data = setup
    shutil.copytree(weights, tmp_path / "weights")  # each test's own copy: the report writes into the record
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setenv("TCM_KIT_DATA", str(tmp_path / "kitdata"))
    monkeypatch.setenv("TCM_KIT_REPORTS", str(tmp_path / "reports"))
    return run, data, tmp_path


def test_a_table_of_the_released_detector_and_a_run_stamped_with_the_data(env):
    run, data, tmp = env
    assert R.main(["--data", str(data), "--runs", str(run), "--peers", "--quiet"]) == 0
    text = (tmp / "reports" / "real_photos.md").read_text()
    assert "| icdar2015/test | tiny | 1280 | 3/3 |" in text  # td500 is absent: left out, not an error
    from tcm_kit.data.benchmarks import fingerprint

    assert f"icdar2015/test {fingerprint(data / 'icdar2015' / 'test')}" in text
    assert "Figures reported by others" in text and "57.9" in text
    steps = zoo.detector_record("tiny")["config"]["optim"]["steps"]  # each release says how long it trained
    assert f"| icdar2015/test | tiny | 1280 | 3/3 | {steps} |" in text
    assert "| icdar2015/test | tcm-dbnet (run) | 1280 | 3/3 |  |" in text  # a run folder is no release
    (ev,) = zoo.detector_record("tiny")["evaluations"]  # the release's record holds its figure, data named
    assert (ev["split"], ev["data"], ev["long_side"], ev["photos"]) == (
        "icdar2015/test", fingerprint(data / "icdar2015" / "test"), 1280, "3/3")
    assert R.main(["--data", str(data), "--runs", str(run), "--peers", "--report", "--quiet"]) == 0
    assert zoo.detector_record("tiny")["evaluations"] == [ev]  # the same figure again replaces, never duplicates
    paired = (tmp / "reports" / "real_photos_paired.md").read_text()
    assert "Holm over 1 differences" in paired and "tiny - tcm-dbnet (run)" in paired


def test_an_interrupted_pass_resumes_without_detecting_the_done_photos_again(env):
    _, data, tmp = env
    assert R.main(["--data", str(data), "--peers", "--only", "tiny", "--quiet"]) == 0
    (path,) = (tmp / "kitdata" / "eval" / "real_photos" / "icdar2015-test").glob("tiny-*.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and not (tmp / "reports" / "real_photos.md").exists()  # --only writes no report
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed while writing the second photo
    assert R.main(["--data", str(data), "--peers", "--report", "--quiet"]) == 0  # detects nothing
    assert "| icdar2015/test | tiny | 1280 | 1/3 |" in (tmp / "reports" / "real_photos.md").read_text()
    assert path.read_text().splitlines()[0] == lines[0] and len(path.read_text().splitlines()) == 2
    assert R.main(["--data", str(data), "--peers", "--quiet"]) == 0
    again = path.read_text().splitlines()
    assert again[0] == lines[0] and len(again) == 4  # the first photo kept as it was, the cut line skipped
    assert sorted(R.read_pass(path)) == sorted(json.loads(x)["image"] for x in lines)
    assert "3/3" in (tmp / "reports" / "real_photos.md").read_text()


def test_no_split_in_the_folder_is_one_line(env, capsys):
    _, _, tmp = env
    (tmp / "empty").mkdir()
    assert R.main(["--data", str(tmp / "empty"), "--peers", "--quiet"]) == 1
    assert "real_photos: none of ['icdar2015/test', 'td500/test']" in capsys.readouterr().err


def test_sizes_give_one_row_each_and_no_paired_table(env):
    _, data, tmp = env
    assert R.main(["--data", str(data), "--peers", "--sizes", "128", "256", "--name", "val", "--quiet"]) == 0
    text = (tmp / "reports" / "val.md").read_text()
    assert "| icdar2015/test | tiny | 128 | 3/3 |" in text and "| icdar2015/test | tiny | 256 | 3/3 |" in text
    assert not (tmp / "reports" / "val_paired.md").exists()
    assert R.main(["--data", str(data), "--peers", "--long-side", "icdar2015/test=256", "--name", "one",
                   "--quiet", "--report"]) == 0  # the 256 px pass is read back, nothing detected
    assert "| icdar2015/test | tiny | 256 | 3/3 |" in (tmp / "reports" / "one.md").read_text()
    with pytest.raises(SystemExit):
        R.main(["--data", str(data), "--long-side", "icdar2015/test:256"])


def test_a_corrupt_photo_is_one_line_naming_it(env, capsys):
    import shutil

    _, data, tmp = env
    bad = tmp / "bad"
    shutil.copytree(data, bad)
    photo = sorted((bad / "icdar2015" / "test" / "images").iterdir())[1]
    photo.write_bytes(b"not an image")
    assert R.main(["--data", str(bad), "--peers", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"td500/test: not found in {bad}, left out"  # an absent split is a note, not an error
    assert len(err) == 2 and err[1].startswith("real_photos: ") and str(photo) in err[1]
