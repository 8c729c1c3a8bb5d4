"""Bad input and unlucky users: nothing the kit did not write is lost or overwritten (issue 22, items 1-3)."""
import fcntl
import json

import cv2
import numpy as np
import pytest

from tcm_kit import train as T
from tcm_kit.train import TrainConfig


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    T.train(TrainConfig.for_profile("smoke", detector="dbnet"), out, progress=False)
    return out


def _photo(path, seed):
    img = np.random.default_rng(seed).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path.read_bytes()


def test_predict_never_overwrites_its_input(tmp_path, finished_run):
    shop = tmp_path / "photos" / "shop.png"
    before = _photo(shop, 0)
    with pytest.raises(T.CheckpointError, match="overwrite an input") as e:
        list(T.predict_images(finished_run, [shop], tmp_path / "photos", progress=False))
    assert "shop.png" in str(e.value)
    assert shop.read_bytes() == before


def test_predict_gives_colliding_names_one_output_each(tmp_path, finished_run):
    inputs = [tmp_path / "camA" / "scene.jpg", tmp_path / "camB" / "scene.jpg", tmp_path / "x.jpg",
              tmp_path / "x.png"]
    for i, p in enumerate(inputs):
        _photo(p, i)
    outs = list(T.predict_images(finished_run, inputs, tmp_path / "pc", progress=False))
    pngs = [png for png, _ in outs]
    assert len(set(pngs)) == len(inputs) and all(p.exists() for p in pngs)
    assert T.output_names([tmp_path / "a" / "img_1.jpg", tmp_path / "b" / "img_2.jpg"]) == ["img_1", "img_2"]
    with pytest.raises(T.CheckpointError, match="twice"):
        T.output_names([tmp_path / "x.jpg", tmp_path / "x.jpg"])


def test_a_run_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".lock", "w") as f:  # another process holds the folder
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(T.CheckpointError, match="in use"):
            T.train(TrainConfig.for_profile("smoke", seed=1), out, progress=False)
    assert not (out / "config.json").exists() and not (out / "last.pt").exists()


def test_a_refused_resume_keeps_the_config_of_the_run_there(tmp_path, monkeypatch):
    out = tmp_path / "r"
    cfg = TrainConfig.for_profile("smoke")

    def die(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(T, "evaluate_run", die)  # trained, killed before result.json
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, out, progress=False)
    monkeypatch.undo()
    kept = (out / "config.json").read_text()
    ckpt = (out / "last.pt").read_bytes()
    with pytest.raises(T.CheckpointError, match="another config"):
        T.train(TrainConfig.for_profile("smoke", seed=1), out, progress=False)
    assert (out / "config.json").read_text() == kept and (out / "last.pt").read_bytes() == ckpt
    assert json.loads(kept)["seed"] == 0
    assert T.train(cfg, out, progress=False)["steps"] == cfg.steps  # the original run still finishes


def test_an_icdar2015_line_with_more_than_four_points_is_refused_by_file_and_line(tmp_path):
    """Issue 22, item 4: the extra points used to become the transcription."""
    from tcm_kit.data.formats import AnnotationError, read_icdar2015

    gt = tmp_path / "gt_img_1.txt"
    gt.write_text("1,1,9,1,9,9,1,9,fine\n10,10,30,8,50,10,50,30,30,32,10,30,word\n")
    with pytest.raises(AnnotationError, match="polygon") as e:
        read_icdar2015(gt)
    assert f"{gt}:2" in str(e.value)
    gt.write_text("1,1,9,1,9,9,1,9,1,000\n1,1,9,1,9,9,1,9,1984\n")  # numbers as transcriptions stay text
    assert [i.text for i in read_icdar2015(gt)] == ["1,000", "1984"]


@pytest.mark.parametrize("flag", [["--steps", "0"], ["--steps", "-5"], ["--batch-size", "0"],
                                  ["--batch-size", "-2"]])
def test_cli_refuses_counts_below_one_in_one_line(tmp_path, capsys, flag):
    from tcm_kit.cli import main

    assert main(["train", "--profile", "smoke", *flag, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tcm-kit: error:") and ">= 1" in err[0]
    assert not (tmp_path / "r").exists()
    with pytest.raises(T.TrainConfigError):  # --debug: the traceback
        main(["--debug", "train", "--profile", "smoke", *flag, "--out", str(tmp_path / "r")])


def test_eval_and_predict_take_a_size_and_say_it(tmp_path, finished_run, capsys):
    """Issue 22, item 14: a real photo must not be shrunk to the run's small test size without a word."""
    from tcm_kit.cli import main

    img = tmp_path / "in" / "photo.png"
    _photo(img, 3)
    assert main(["predict", str(finished_run), str(img), "--out", str(tmp_path / "o"), "--size", "96",
                 "--quiet"]) == 0
    assert "long side of 96 px" in capsys.readouterr().out
    assert main(["eval", str(finished_run), "--size", "160", "--quiet"]) == 0
    assert "long side of 160 px" in capsys.readouterr().out
    assert T.evaluate_checkpoint(finished_run, progress=False, size=160)["test_size"] == 160


def test_a_cut_config_json_is_named(tmp_path, finished_run):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    (run / "config.json").write_text((run / "config.json").read_text()[:40])
    with pytest.raises(T.CheckpointError, match="config.json:"):
        T.load_run(run)


def test_predict_reports_a_bad_image_and_goes_on(tmp_path, finished_run, capsys):
    from tcm_kit.cli import main

    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    _photo(good, 4)
    bad.write_bytes(b"not a picture")
    assert main(["predict", str(finished_run), str(bad), str(good), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "bad.jpg" in err and (tmp_path / "o" / "good.png").exists()


def test_an_unfinished_run_is_said_with_its_step(tmp_path, monkeypatch):
    out = tmp_path / "r"
    monkeypatch.setattr(T, "evaluate_run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        T.train(TrainConfig.for_profile("smoke", steps=2, ckpt_every=1), out, progress=False)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="step 2 of 2"):
        T.load_run(out)


def test_a_real_domain_without_val_fails_before_training(tmp_path):
    """Issue 22, item 10 (first half): the missing split is found before the first step, not after."""
    root = tmp_path / "real"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
    cfg = TrainConfig.for_profile("smoke", domain="icdar2015", data_root=str(root))
    with pytest.raises(T.TrainConfigError, match="val"):
        T.train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_real_domain_is_keyed_by_its_resolved_path_and_its_files(tmp_path, monkeypatch):
    """Issue 22, item 6: a relative --data-root, and an annotation fixed in place."""
    import os
    import time

    root = tmp_path / "ic15"
    (root / "train").mkdir(parents=True)
    gt = root / "train" / "gt_img_1.txt"
    gt.write_text("1,1,9,1,9,9,1,9,a\n")
    monkeypatch.chdir(tmp_path)
    rel = TrainConfig.for_profile("smoke", domain="icdar2015", data_root="ic15")
    assert rel.data_root == str(root.resolve())
    h = T.run_hash(rel)
    time.sleep(0.01)
    gt.write_text("1,1,9,1,9,9,1,9,b\n")
    os.utime(gt)
    assert T.run_hash(rel) != h


@pytest.mark.parametrize("instance,match", [
    ({"polygon": [1, 1, 9, 1, 9, 9, 1, 9], "text": "a", "ignore": "false"}, "ignore"),
    ({"polygon": [1, 1, 9, 1, 9, 9, 1, 9], "text": 5, "ignore": False}, "text"),
    (None, "instances"),
])
def test_mmocr_json_values_of_the_wrong_kind_are_refused(tmp_path, instance, match):
    """Issue 22, item 5: "false" as a string was ignore=True; a missing instances key meant no text."""
    from tcm_kit.data.formats import AnnotationError, read_mmocr_json

    item = {"img_path": "a.jpg"} if instance is None else {"img_path": "a.jpg", "instances": [instance]}
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"data_list": [item]}))
    with pytest.raises(AnnotationError, match=match) as e:
        read_mmocr_json(p)
    assert str(p) in str(e.value)


def test_mmocr_json_null_text_is_empty_not_none(tmp_path):
    from tcm_kit.data.formats import read_mmocr_json

    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"data_list": [{"img_path": "a.jpg", "instances": [
        {"polygon": [1, 1, 9, 1, 9, 9, 1, 9], "text": None, "ignore": 0}]}]}))
    (_, [inst]), = read_mmocr_json(p)
    assert inst.text == "" and inst.ignore is False
