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
