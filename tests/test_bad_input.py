"""Bad input and unlucky users: nothing the kit did not write is lost or overwritten (issue 22, items 1-3)."""
import fcntl
import json
from pathlib import Path

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
    assert T.train(cfg, out, progress=False)["steps"] == cfg.optim.steps  # the original run still finishes


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
        T.train(TrainConfig.for_profile("smoke", optim=dict(steps=2), ckpt_every=1), out, progress=False)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="step 2 of 2"):
        T.load_run(out)


def _real_set(folder, n, seed=0):
    """n ICDAR2015-format images (96 x 128, one white word box each) in folder/images + folder/annotations."""
    from tcm_kit.data.formats import Instance, write_icdar2015

    rng = np.random.default_rng(seed)
    for k in range(1, n + 1):
        img = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
        x, y = int(rng.integers(4, 60)), int(rng.integers(4, 60))
        img[y:y + 20, x:x + 50] = 255
        (folder / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "images" / f"img_{k}.jpg"), img)
        write_icdar2015(folder / "annotations" / f"gt_img_{k}.txt",
                        [Instance([[x, y], [x + 49, y], [x + 49, y + 19], [x, y + 19]], f"w{k}")])


def test_a_real_domain_without_test_fails_before_training(tmp_path):
    """Issue 22, item 10: a missing split is found before the first step, not after."""
    root = tmp_path / "real"
    _real_set(root / "train", 6)
    cfg = TrainConfig.for_profile("smoke", domain="icdar2015", data_root=str(root))
    with pytest.raises(T.TrainConfigError, match="test"):
        T.train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_real_domain_with_train_and_test_only_carves_val_from_train(tmp_path, capsys):
    """Issue 22, item 10: train/ + test/ (what the README asks for) trains, evaluates and re-evaluates; the
    validation images are a fixed part of train/, the same whatever the seed, and never trained on."""
    from tcm_kit.cli import main

    root = tmp_path / "real"
    _real_set(root / "train", 10)
    _real_set(root / "test", 3, seed=1)
    cfg = TrainConfig.for_profile("smoke", detector="dbnet", domain="icdar2015", data_root=str(root))
    names = lambda data: [p.name for p, _ in data.samples]  # noqa: E731
    val, train = names(T.split_dataset(cfg, "val")), names(T.split_dataset(cfg, "train"))
    assert val and train and not set(val) & set(train)
    assert sorted(val + train) == sorted(f"img_{k}.jpg" for k in range(1, 11))
    again = TrainConfig.for_profile("smoke", detector="dbnet", domain="icdar2015", data_root=str(root), seed=5)
    assert names(T.split_dataset(again, "val")) == val
    result = T.train(cfg, tmp_path / "run", progress=False)
    assert result["n_test"] == 3 and result["train_images"] == len(train) and result["val_hmean"] is not None
    assert main(["eval", str(tmp_path / "run"), "--quiet"]) == 0
    assert "hmean=" in capsys.readouterr().out


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


def test_a_real_domain_copied_again_keeps_its_runs(tmp_path):
    """The same files written again in place (a fresh download or copy: new times) keep a run's identity, so a
    run trained in one session resumes in the next; a changed file still gives it a new one."""
    import os

    root = tmp_path / "ic15"
    (root / "train").mkdir(parents=True)
    gt = root / "train" / "gt_img_1.txt"
    gt.write_text("1,1,9,1,9,9,1,9,a\n")
    cfg = TrainConfig.for_profile("smoke", domain="icdar2015", data_root=str(root))
    first = T.run_hash(cfg)
    gt.write_text("1,1,9,1,9,9,1,9,a\n")
    os.utime(gt, ns=(10**18, 10**18))
    assert T.run_hash(cfg) == first
    gt.write_text("1,1,9,1,9,9,1,9,b\n")
    assert T.run_hash(cfg) != first


def test_runs_on_a_real_domain_are_found_again_after_the_data_and_the_start_move(tmp_path, monkeypatch):
    """A run keys its data folder and its fine-tuning start by content, not by path: the same files in another
    folder (a moved clone, a dataset put elsewhere) read the finished runs back; a run filed under the key with
    paths (the kit's key before) is still found and read back."""
    import shutil

    from tcm_kit import runs

    monkeypatch.setenv("TCM_KIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TCM_KIT_DATA", str(tmp_path / "kitdata"))
    for name in ("a", "b"):
        _real_set(tmp_path / name / "train", 6)
        _real_set(tmp_path / name / "test", 2, seed=1)
    cfg = lambda root, **kw: TrainConfig.for_profile("smoke", detector="dbnet", domain="icdar2015",  # noqa: E731
                                                     data_root=str(tmp_path / root), **kw)
    first = runs.run_one(cfg("a"))
    start = runs.run_dir(cfg("a"))
    tuned = runs.run_one(cfg("a", init_from=str(start)))
    moved = tmp_path / "elsewhere" / start.name  # the start's folder moved: its content is the same
    shutil.copytree(start, moved)
    assert T.run_hash(cfg("b")) == T.run_hash(cfg("a")) != T.run_hash(cfg("b"), located=True)
    assert runs.cached_result(cfg("b")) is not None and runs.run_one(cfg("b"))["hmean"] == first["hmean"]
    again = cfg("b", init_from=str(moved))
    assert runs.run_dir(again) == Path(tuned["run_dir"]) and runs.cached_result(again)["hmean"] == tuned["hmean"]
    # a run filed under its key with paths, as the kit filed them before, is found there and read back
    old = runs.runs_dir() / T.run_hash(cfg("a"), located=True)
    start.rename(old)
    result = json.loads((old / "result.json").read_text())
    (old / "result.json").write_text(json.dumps({**result, "config_hash": old.name}))
    assert runs.run_dir(cfg("a")) == old and runs.cached_result(cfg("a"))["hmean"] == first["hmean"]
    assert T.train(cfg("a"), old, progress=False)["config_hash"] == old.name  # read back, not retrained
    other = cfg("a", seed=7)  # another config is not read back from there
    with pytest.raises(T.CheckpointError, match="another config"):
        T.train(other, old, progress=False)


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


# ---------------------------------------------------------------------------------------------- image decoding

def _oriented(path, orientation, size=(32, 64)):
    """An image file whose stored pixels are `size` (h, w), left half white, with EXIF Orientation
    `orientation`; -> the stored pixels (RGB)."""
    from PIL import Image

    h, w = size
    stored = np.zeros((h, w, 3), np.uint8)
    stored[:, : w // 2] = 255
    stored[: h // 4, :, 0] = 200  # a red band along the top: no orientation maps the image onto itself
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return stored


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_image_applies_the_exif_orientation_as_opencv_and_pil_do(tmp_path, orientation):
    """Issue 22, item 8: one decoder, the image as displayed (OpenCV IMREAD_COLOR, PIL exif_transpose)."""
    from PIL import Image, ImageOps

    from tcm_kit.data.transforms import read_image

    png, jpg = tmp_path / "a.png", tmp_path / "a.jpg"
    _oriented(png, orientation)
    _oriented(jpg, orientation)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(png)).convert("RGB"))
    assert np.array_equal(read_image(png), shown)
    opencv = cv2.cvtColor(cv2.imread(str(jpg), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(read_image(jpg), opencv)


def test_every_path_sees_a_rotated_photo_as_displayed(tmp_path, finished_run):
    """Orientation 6 (rotate 90): stored 32 x 64, displayed 64 x 32 in training, evaluation, prediction, the
    inspection helpers and the image sizes written to MMOCR JSON."""
    import json as _json

    from tcm_kit import inspection as ins
    from tcm_kit.data.formats import Instance, write_icdar2015, write_mmocr_json
    from tcm_kit.data.transforms import Compose, TextDetDataset

    photo = tmp_path / "set" / "images" / "img_1.jpg"
    _oriented(photo, 6)
    write_icdar2015(tmp_path / "set" / "annotations" / "gt_img_1.txt",
                    [Instance([[2, 2], [20, 2], [20, 40], [2, 40]], "word")])
    train = TextDetDataset(tmp_path / "set", size=64, train=True, aug=Compose([]))
    assert tuple(train[0]["image"].shape) == (3, 64, 32)
    test = TextDetDataset(tmp_path / "set", size=64, train=False)
    assert tuple(test[0]["image"].shape[1:]) == (64, 32) and test[0]["scale"] == 1.0
    assert ins.load_image(photo, long_side=None).shape == (64, 32, 3)
    (png, _), = T.predict_images(finished_run, [photo], tmp_path / "out", progress=False, size=64)
    assert cv2.imread(str(png)).shape == (64, 32, 3)
    write_mmocr_json(tmp_path / "ann.json", [(photo, [])])
    entry = _json.loads((tmp_path / "ann.json").read_text())["data_list"][0]
    assert (entry["height"], entry["width"]) == (64, 32)


def _corrupt_middle(path):
    """A JPEG whose entropy-coded data has garbage in its middle (libjpeg decodes it with a warning only)."""
    img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8), (9, 9), 3)
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    middle = len(data) // 2
    garbage = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:middle] + garbage + data[middle + 64:])


def test_a_jpeg_with_garbage_in_its_middle_is_refused_by_name(tmp_path, finished_run, capfd):
    from tcm_kit.data.transforms import CorruptImageError, read_image

    bad, good = tmp_path / "bad.jpg", tmp_path / "good.jpg"
    _corrupt_middle(bad)
    cv2.imwrite(str(good), np.full((40, 60, 3), 128, np.uint8))
    assert cv2.imdecode(np.fromfile(str(bad), np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV alone: a warning
    with pytest.raises(CorruptImageError, match="corrupt JPEG data") as e:
        read_image(bad)
    assert str(bad) in str(e.value)
    assert read_image(good).shape == (40, 60, 3)
    capfd.readouterr()
    outs = list(T.predict_images(finished_run, [bad, good], tmp_path / "o", progress=False))
    assert outs[0][0] is None and str(bad) in outs[0][1] and outs[1][0].exists()


# ---------------------------------------------------------------------------------------------- annotation formats

def test_a_typo_in_the_first_ctw1500_file_names_what_was_found(tmp_path):
    """Issue 22, item 12: not only 'no known annotation files'."""
    from tcm_kit.data.formats import AnnotationError, detect_format, read_folder

    offsets = ",".join(f"{2 * k},{3 + k}" for k in range(14))  # the bbox + offsets form of the training files
    (tmp_path / "1001.txt").write_text(f"1O,20,50,60,{offsets}\n")
    cv2.imwrite(str(tmp_path / "1001.jpg"), np.zeros((64, 96, 3), np.uint8))
    with pytest.raises(AnnotationError) as e:
        detect_format(tmp_path)
    msg = str(e.value)
    assert "1001.txt" in msg and "1O" in msg and "ctw1500" in msg and "--format" in msg
    (tmp_path / "1002.txt").write_text(f"10,20,50,60,{offsets}\n")
    cv2.imwrite(str(tmp_path / "1002.jpg"), np.zeros((64, 96, 3), np.uint8))
    with pytest.raises(AnnotationError, match="non-numeric coordinate '1O'") as e:
        list(read_folder(tmp_path))  # the other file settles the format; the typo is named by file and line
    assert str(e.value).startswith(f"{tmp_path / '1001.txt'}:1: ")


def test_the_cli_takes_a_format_for_data_and_data_root(tmp_path, finished_run, capsys):
    from tcm_kit.cli import build_parser, main
    from tcm_kit.cli import _train_config

    offsets = ",".join(f"{2 * k},{3 + k}" for k in range(14))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1001.txt").write_text(f"1O,20,50,60,{offsets}\n")
    cv2.imwrite(str(tmp_path / "d" / "1001.jpg"), np.zeros((64, 96, 3), np.uint8))
    assert main(["eval", str(finished_run), "--data", str(tmp_path / "d"), "--format", "ctw1500", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tcm-kit: error: ") and f"{tmp_path / 'd' / '1001.txt'}:1: non-numeric" in err
    args = build_parser().parse_args(["train", "--profile", "smoke", "--domain", "ctw", "--data-root",
                                      str(tmp_path), "--format", "ctw1500", "--out", str(tmp_path / "r")])
    assert _train_config(args).data_format == "ctw1500"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", str(finished_run), "--data", str(tmp_path), "--format", "coco"])
    with pytest.raises(T.TrainConfigError, match="data_format"):
        TrainConfig.for_profile("smoke", data_format="ctw1500")  # a synthetic domain has no format to name
    plain = TrainConfig.for_profile("smoke", domain="ctw", data_root=str(tmp_path))
    assert "data_format" not in T.run_fields(plain)  # naming no format leaves a run's identity as it was
    assert T.run_fields(TrainConfig.for_profile("smoke", domain="ctw", data_root=str(tmp_path),
                                                data_format="ctw1500"))["data_format"] == "ctw1500"


def test_an_empty_json_is_named(tmp_path):
    from tcm_kit.data.formats import AnnotationError, MissingFileError, read_folder

    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((64, 96, 3), np.uint8))
    (tmp_path / "ann.json").write_text("")
    for fmt in (None, "mmocr"):
        with pytest.raises((AnnotationError, MissingFileError), match="ann.json.*empty file"):
            list(read_folder(tmp_path, fmt))


def test_outside_and_duplicated_polygons_warn_once_per_file_with_the_count(tmp_path):
    """Issue 22, item 13."""
    from tcm_kit.data.formats import read_folder

    cv2.imwrite(str(tmp_path / "img_1.jpg"), np.zeros((64, 96, 3), np.uint8))
    (tmp_path / "gt_img_1.txt").write_text("1,1,9,1,9,9,1,9,in\n"
                                           "500,1,509,1,509,9,500,9,out\n1,500,9,500,9,509,1,509,out\n"
                                           "1,1,9,1,9,9,1,9,in\n")
    with pytest.warns(UserWarning) as caught:
        (_, insts), = read_folder(tmp_path)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 2
    assert any("gt_img_1.txt: 2 polygons wholly outside the 96 x 64 image" in m and "lines 2, 3" in m for m in msgs)
    assert any("gt_img_1.txt: 1 duplicated polygon" in m and "line 4" in m for m in msgs)
    assert [(i.text, i.ignore) for i in insts] == [("in", False), ("out", True), ("out", True)]


@pytest.mark.parametrize("line", [
    ",".join(f"{10 + k},{50 - k}" for k in range(14)).replace(",11,49,", ",,,", 1) + ",####two blanks",
    ",".join(f"{10 + k},{50 - k}" for k in range(14)).replace(",11,", ",,", 1),
])
def test_blank_ctw1500_fields_are_refused_by_file_and_line(tmp_path, line):
    """Issue 22, item 5: blank fields of a CTW1500 line were dropped, shifting the points after them."""
    from tcm_kit.data.formats import AnnotationError, read_ctw1500

    p = tmp_path / "1001.txt"
    p.write_text("10,20,50,60," + ",".join(f"{2 * k},{3 + k}" for k in range(14)) + "\n" + line + "\n")
    with pytest.raises(AnnotationError, match="blank coordinate field") as e:
        read_ctw1500(p)
    assert str(e.value).startswith(f"{p}:2: ")


# The formats x faults matrix: every format the reader registry knows (formats.FORMATS) under every fault; the
# outcome must be an error naming the file (and line) or a warning naming it -- never a silent result.

GOOD = [([(10, 10), (60, 10), (60, 30), (10, 30)], "alpha"), ([(70, 50), (120, 50), (120, 80), (70, 80)], "beta")]
W, H = 128, 96


def _icdar2015_files(items):
    return [(f"annotations/gt_{stem}.txt", ["".join(f"{x},{y}," for x, y in pts) + text for pts, text in specs])
            for stem, specs in items]


def _totaltext_files(items):
    return [(f"annotations/poly_gt_{stem}.txt", [
        f"x: [[{' '.join(str(x) for x, _ in pts)}]], y: [[{' '.join(str(y) for _, y in pts)}]], ornt: [u'h'], "
        f"transcriptions: [u'{text}']" for pts, text in specs]) for stem, specs in items]


def _ctw1500_files(items):
    return [(f"annotations/{stem}.txt", ["".join(f"{x},{y}," for x, y in pts) + "####" + text for pts, text in specs])
            for stem, specs in items]


def _td500_line(k, pts):
    """A TD500 box: x y w h of the points' bounds (an x given as text stays text); fewer than 3 points -> a line
    without its angle."""
    xs, ys = [x for x, _ in pts if not isinstance(x, str)], [y for _, y in pts]
    x = next((x for x, _ in pts if isinstance(x, str)), min(xs))
    fields = [k, 0, x, min(ys), max(xs) - min(xs), max(ys) - min(ys)] + ([0] if len(pts) >= 3 else [])
    return " ".join(map(str, fields))


def _td500_files(items):
    return [(f"annotations/{stem}.gt", [_td500_line(k, pts) for k, (pts, _) in enumerate(specs)])
            for stem, specs in items]


def _mmocr_files(items):
    data = [{"img_path": f"images/{stem}.jpg", "height": H, "width": W, "instances": [
        {"polygon": [v for p in pts for v in p], "text": text, "ignore": False} for pts, text in specs]}
        for stem, specs in items]
    return [("ann.json", [json.dumps({"metainfo": {}, "data_list": data}, indent=1)])]


# format -> writer of [(image stem, [(points, text)])] -> [(annotation file, lines)], the first file holding the
# first image's instances
SAMPLES = {"icdar2015": _icdar2015_files, "totaltext": _totaltext_files, "ctw1500": _ctw1500_files,
           "td500": _td500_files, "mmocr": _mmocr_files}

# fault -> (how it changes the instances, expected outcome: "error" | "warning", what the message says)
FAULTS = {
    "none": (lambda s: s, None, None),
    "malformed coordinate": (lambda s: s[:-1] + [([("1O", s[-1][0][0][1])] + s[-1][0][1:], s[-1][1])],
                             "error", "non-numeric coordinate '1O'"),
    "too few points": (lambda s: s[:-1] + [(s[-1][0][:2], s[-1][1])], "error", "points|fields"),
    "blank transcription": (lambda s: s[:-1] + [(s[-1][0], "")], "warning", "blank transcription"),
    "zero-area polygon": (lambda s: s[:-1] + [([(10, 40), (30, 40), (50, 40), (70, 40)], "flat")], "warning",
                          "zero-area"),
    "outside-image polygon": (lambda s: s[:-1] + [([(x + 1000, y) for x, y in s[-1][0]], s[-1][1])], "warning",
                              "wholly outside"),
    "duplicate polygon": (lambda s: s + [s[-1]], "warning", "duplicated polygon"),
    "missing image": (lambda s: s, "error", "without image|not found"),
    "corrupt image": (lambda s: s, "error", "corrupt JPEG data"),
    "empty annotation file": (lambda s: s, "warning", "empty annotation file"),
}
# where a format's nature changes the outcome
OVERRIDES = {
    ("td500", "blank transcription"): ("n/a", "TD500 lines have no transcription"),
    ("mmocr", "blank transcription"): ("n/a", "text is optional in MMOCR textdet JSON"),
    ("td500", "zero-area polygon"): ("error", "non-positive width or height"),
    ("mmocr", "empty annotation file"): ("error", "empty file"),
}


def _write_sample(root, fmt, fault):
    """A two-image dataset of `fmt`, `fault` in the first image (img_1) -> (its annotation file, its image, where
    the faulty instance is)."""
    if fmt not in SAMPLES:
        pytest.fail(f"formats.FORMATS has {fmt!r}: add its sample writer to SAMPLES in {__file__}")
    specs = FAULTS[fault][0](list(GOOD))
    files = SAMPLES[fmt]([("img_1", specs), ("img_2", GOOD)])
    for k, (rel, lines) in enumerate(files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("" if fault == "empty annotation file" and k == 0 else "\n".join(lines) + "\n")
    img = root / "images" / "img_1.jpg"
    img.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / "img_2.jpg"), np.full((H, W, 3), 90, np.uint8))
    if fault == "corrupt image":
        _corrupt_middle(img)
    elif fault != "missing image":
        cv2.imwrite(str(img), np.full((H, W, 3), 90, np.uint8))
    k = len(specs) - 1
    where = f"data_list[0].instances[{k}]" if fmt == "mmocr" else f"line {k + 1}"
    return root / files[0][0], img, where


def _read_all(root):
    from tcm_kit.data.transforms import TextDetDataset

    data = TextDetDataset(root, size=128, train=False)
    for i in range(len(data)):
        data[i]
    return data


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("fmt", __import__("tcm_kit.data.formats", fromlist=["FORMATS"]).FORMATS)
def test_formats_x_faults(tmp_path, fmt, fault):
    import re
    import warnings

    from tcm_kit.data.formats import AnnotationError
    from tcm_kit.data.transforms import CorruptImageError

    outcome, says = OVERRIDES.get((fmt, fault), FAULTS[fault][1:])
    if outcome == "n/a":
        pytest.skip(says)
    ann, img, where = _write_sample(tmp_path, fmt, fault)
    named = img if fault == "corrupt image" else ann
    line_bound = fmt != "mmocr" and fault in ("malformed coordinate", "too few points", "zero-area polygon")
    if outcome == "error":
        with pytest.raises((AnnotationError, CorruptImageError)) as e:
            _read_all(tmp_path)
        msg = str(e.value)
        assert str(named) in msg and re.search(says, msg), msg
        if line_bound:
            assert f"{ann}:{where.split()[-1]}: " in msg, msg
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = _read_all(tmp_path)
    msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    insts = dict((p.name, i) for p, i in data.samples).get("img_1.jpg", [])
    if outcome is None:
        assert msgs == [], msgs
        assert len(insts) == len(GOOD) and not any(i.ignore for i in insts)
        if fmt != "td500":  # TD500 holds no transcriptions
            assert [i.text for i in insts] == [t for _, t in GOOD]
        return
    assert len(msgs) == 1 and str(named) in msgs[0] and re.search(says, msgs[0]), msgs
    if fault != "empty annotation file":
        assert where in msgs[0], msgs
        np.testing.assert_array_equal(insts[0].polygon, np.float32(GOOD[0][0]))  # the rest read as written
        assert not insts[0].ignore


def test_cached_json_measures_once_and_leaves_no_temporary(tmp_path):
    """cached_json writes the value once (no .tmp file left beside it) and reads it back without calling make."""
    from tcm_kit.utils import cached_json

    calls = []
    path = tmp_path / "deep" / "m.json"
    make = lambda: calls.append(1) or {"hmean": 0.5, "n": [1, 2]}  # noqa: E731
    assert cached_json(path, make) == {"hmean": 0.5, "n": [1, 2]}
    assert cached_json(path, make) == {"hmean": 0.5, "n": [1, 2]} and len(calls) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]


def test_run_keys_are_run_hash_in_each_precision_and_location(tmp_path):
    """run_keys (fingerprints worked out once) gives the same four keys as run_hash called for each."""
    cfg = TrainConfig.for_profile("smoke", detector="dbnet", domain="synth-ic15", seed=0)
    keys = T.run_keys(cfg)
    want = {T.run_hash(cfg, precision=p, located=loc): p for p in ("fp32", "bf16") for loc in (True, False)}
    assert keys == want and set(keys.values()) == {"fp32", "bf16"}
