"""tcm_kit.calibrate: a released detector's box threshold and long side for photos, chosen on labelled validation
photos (td500/train), recorded beside its weights and used by `tcm-kit predict` and benchmarks.real_photos."""
import cv2
import numpy as np
import pytest

from benchmarks import real_photos as R
from tcm_kit import calibrate as C
from tcm_kit import train as T
from tcm_kit import zoo
from tcm_kit.cli import main
from tcm_kit.data.benchmarks import fingerprint
from tcm_kit.data.synth import write_synth_set
from tcm_kit.detector import Detector
from tcm_kit.train import TrainConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate")
    T.train(TrainConfig.for_profile("smoke", detector="dbnet"), root / "run", progress=False)
    T.export_detector(root / "run", "tiny", root / "weights")
    data = root / "datasets"
    write_synth_set("synth-td500", num=3, size=128, seed=3, out=data / "td500" / "train", progress=False)
    return root / "weights", data


@pytest.fixture()
def env(setup, tmp_path, monkeypatch):
    import shutil

    weights, data = setup
    shutil.copytree(weights, tmp_path / "weights")  # each test's own copy: calibration writes into the record
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setenv("TCM_KIT_DATA", str(tmp_path / "kitdata"))
    monkeypatch.setenv("TCM_KIT_REPORTS", str(tmp_path / "reports"))
    return data, tmp_path


def test_calibrate_records_the_best_pair_of_its_grid_and_leaves_the_weights_alone(env, capsys):
    data, tmp = env
    before = zoo.detector_record("tiny")
    assert "photo_calibration" not in before
    assert zoo.photo_box_thresh(before) == (before["result"]["box_thresh"], "chosen on its synthetic validation split")
    assert main(["calibrate", "tiny", "--data", str(data), "--sizes", "96", "128", "--quiet"]) == 0
    assert "tiny: box_thresh" in capsys.readouterr().out
    rec = zoo.detector_record("tiny")
    cal = rec["photo_calibration"]
    assert (cal["split"], cal["data"], cal["photos"]) == ("td500/train", fingerprint(data / "td500" / "train"), 3)
    assert len(cal["grid"]) == 2 * len(C.PHOTO_BOX_THRESHOLDS)
    assert {g["long_side"] for g in cal["grid"]} == {96, 128}
    assert cal["hmean"] == max(g["hmean"] for g in cal["grid"])
    assert {k: cal[k] for k in ("long_side", "box_thresh", "hmean")} in [
        {k: g[k] for k in ("long_side", "box_thresh", "hmean")} for g in cal["grid"]]
    assert zoo.photo_box_thresh(rec)[0] == cal["box_thresh"]
    assert rec["sha256"] == before["sha256"] and rec["evaluations"] == before["evaluations"]
    T.load_detector("tiny")  # the sha256 check still passes: only the record changed


def test_predict_and_real_photos_use_the_calibration(env, monkeypatch):
    data, tmp = env
    entry = {"split": "td500/train", "data": "x", "photos": 3, "long_side": 96, "box_thresh": 0.97,
             "precision": 0, "recall": 0, "hmean": 0, "grid": []}
    zoo.record_calibration("tiny", entry)
    seen = []
    real = Detector.predict

    def spy(self, images, scale=1.0, **overrides):
        seen.append(overrides.get("box_thresh"))
        return real(self, images, scale, **overrides)

    monkeypatch.setattr(Detector, "predict", spy)
    img = tmp / "photo.jpg"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (72, 128, 3), dtype=np.uint8))
    assert main(["predict", str(img), "--detector", "tiny", "--out", str(tmp / "preds"), "--quiet"]) == 0
    assert seen == [0.97]
    c, _ = R.released_contender("tiny", 1280)
    assert "box_thresh 0.97 chosen on td500/train (3 photos) at 96 px" in c.weights
    monkeypatch.setattr(zoo, "DEFAULT_DETECTOR", "tiny")
    ns = type("A", (), {"long_side": [], "sizes": None})
    assert R.sizes_for("td500/test", ns) == [96] and R.sizes_for("icdar2015/test", ns) == [zoo.PHOTO_SIZE]
    ns.long_side = ["td500/test=640"]
    assert R.sizes_for("td500/test", ns) == [640]


def test_no_validation_split_is_one_line(env, capsys):
    _, tmp = env
    (tmp / "empty").mkdir()
    assert main(["calibrate", "tiny", "--data", str(tmp / "empty"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "td500/train: not found" in err and len(err.strip().splitlines()) == 1
    assert "photo_calibration" not in zoo.detector_record("tiny")
