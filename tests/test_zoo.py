"""Released detectors: export a finished run as hashed fp16 files, load it back with its sha256 checked, and
predict with it from the command line without a run folder."""
import json

import cv2
import numpy as np
import pytest
import torch

from tcm_kit import train as T
from tcm_kit import zoo
from tcm_kit.cli import main
from tcm_kit.train import TrainConfig


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A smoke TCM-DBNet run exported as the release 'tiny' into a weights folder of the test's own."""
    root = tmp_path_factory.mktemp("zoo")
    run = root / "run"
    T.train(TrainConfig.for_profile("smoke", detector="tcm-dbnet"), run, progress=False)
    record = T.export_detector(run, "tiny", root / "weights")
    return run, root / "weights", record


def test_export_writes_fp16_weights_record_and_curves(released):
    run, folder, record = released
    assert sorted(p.name for p in folder.iterdir()) == ["tiny-log.csv", "tiny-val.csv", "tiny.json", "tiny.pt"]
    assert json.loads((folder / "tiny.json").read_text()) == record
    assert record["sha256"] == zoo.file_sha256(folder / "tiny.pt") and record["detector"] == "tcm-dbnet"
    assert record["run_hash"] == json.loads((run / "result.json").read_text())["config_hash"]
    assert record["result"]["box_thresh"] is not None and record["result"]["amp"] in ("fp32", "bf16")
    sd = torch.load(folder / "tiny.pt", weights_only=False)["state_dict"]
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}
    assert (folder / "tiny-log.csv").read_text() == (run / "log.csv").read_text()
    assert zoo.released_detectors(folder) == ["tiny"]


def test_the_release_predicts_as_its_run_within_fp16_rounding(released):
    run, folder, _ = released
    model, cfg, record = T.load_detector("tiny", folder=folder)
    ref, _, _ = T.load_run(run)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), ref(x)
    key = next(k for k in a if torch.is_tensor(a[k]))
    assert torch.allclose(a[key], b[key], atol=5e-2) and not model.training
    assert cfg == T.run_config(run)


def test_a_damaged_or_missing_release_is_refused_in_one_line(released, tmp_path):
    _, folder, _ = released
    broken = tmp_path / "weights"
    broken.mkdir()
    for name in ("tiny.pt", "tiny.json"):
        (broken / name).write_bytes((folder / name).read_bytes())
    data = bytearray((broken / "tiny.pt").read_bytes())
    data[-10] ^= 0xFF
    (broken / "tiny.pt").write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match="sha256 .* does not match"):
        T.load_detector("tiny", folder=broken)
    with pytest.raises(zoo.ZooError, match="no released detector 'other'.*released: tiny"):
        T.load_detector("other", folder=broken)
    (broken / "tiny.pt").unlink()
    with pytest.raises(zoo.ZooError, match="is missing"):
        T.load_detector("tiny", folder=broken)


def test_predict_without_a_run_folder_uses_the_released_detector(released, tmp_path, monkeypatch, capsys):
    _, folder, _ = released
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", folder)  # the package's weights folder, as the test's own
    img = tmp_path / "photo.jpg"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 255, (72, 128, 3), dtype=np.uint8))
    assert main(["predict", str(img), "--detector", "tiny", "--out", str(tmp_path / "preds"), "--quiet"]) == 0
    assert (tmp_path / "preds" / "photo.png").exists() and (tmp_path / "preds" / "res_photo.txt").exists()
    out = capsys.readouterr().out  # a photo is resized to the record's photo_size, not the synthetic test_size
    assert "released detector tiny" in out and f"long side of {zoo.PHOTO_SIZE} px" in out
    assert T.load_detector("tiny", folder=folder)[2]["photo_size"] == zoo.PHOTO_SIZE
    assert main(["predict", str(img), "--detector", "nope", "--out", str(tmp_path / "p2"), "--quiet"]) == 2
    assert "no released detector 'nope'" in capsys.readouterr().err


def test_fine_tuning_starts_from_a_run_or_a_release_and_has_its_own_identity(released, tmp_path, monkeypatch):
    run, folder, _ = released
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", folder)
    base = TrainConfig.for_profile("smoke", detector="tcm-dbnet", optim=dict(steps=1))
    from_run, from_zoo = base.updated(init_from=str(run)), base.updated(init_from="zoo:tiny")
    assert len({T.run_hash(base), T.run_hash(from_run), T.run_hash(from_zoo)}) == 3
    assert "init_from" not in T.run_fields(base)  # runs that start from the CLIP keep their identity
    seen = {}
    real_fit = T.fit

    def spy(cfg, out_dir, progress=True, device="cpu"):
        model, n = real_fit(cfg, out_dir, progress, device)
        seen[cfg.init_from] = model
        return model, n

    monkeypatch.setattr(T, "fit", spy)
    start = zoo.released_weights("tiny")[0]
    T.train(from_zoo.updated(optim=dict(lr=1e-9)), tmp_path / "ft", progress=False)  # a step that moves nothing
    got = seen["zoo:tiny"].state_dict()
    assert all(torch.allclose(got[k].float(), start[k], atol=1e-6) for k in start if start[k].is_floating_point()
               and "running" not in k and "num_batches" not in k)
    with pytest.raises(T.TrainConfigError, match="is a tcm-dbnet, this run trains a dbnet"):
        T.train(TrainConfig.for_profile("smoke", detector="dbnet", init_from="zoo:tiny"), tmp_path / "x",
                progress=False)
    with pytest.raises(T.CheckpointError, match="not a finished tcm-kit run"):
        T.run_hash(base.updated(init_from=str(tmp_path)))


def test_train_with_export_releases_the_finished_run_in_one_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "weights")
    run = tmp_path / "run"
    assert main(["train", "--profile", "smoke", "--detector", "dbnet", "--out", str(run), "--export", "mine",
                 "--quiet"]) == 0
    record = zoo.detector_record("mine")
    assert f"released: mine.pt sha256 {record['sha256']}" in capsys.readouterr().out
    assert record["detector"] == "dbnet" and record["run_hash"] == json.loads((run / "result.json").read_text())[
        "config_hash"]


def test_the_release_profile_is_the_cpu_recipe_on_more_images_and_steps():
    for det in ("tcm-dbnet", "dbnet"):
        cpu, rel = (TrainConfig.for_profile(p, detector=det) for p in ("cpu", "release"))
        assert (rel.aug, rel.head, rel.tcm, rel.optim.lr, rel.domain) == (cpu.aug, cpu.head, cpu.tcm, cpu.optim.lr,
                                                                           cpu.domain)
        assert (rel.data.num_train, rel.optim.steps, rel.evaluation.val_every, rel.num_workers) == (4000, 12000,
                                                                                                  1000, 0)


def test_values_beyond_fp16_stay_fp32_and_a_release_that_differs_from_its_run_is_not_left_behind(
        released, tmp_path, monkeypatch):
    assert zoo._half(torch.tensor([3e7, 1.0])).dtype == torch.float32  # a BatchNorm variance of 3e7 is inf in fp16
    assert zoo._half(torch.tensor([1.5, -2.0])).dtype == torch.float16
    assert zoo._half(torch.tensor([3])).dtype == torch.int64
    run, _, _ = released
    monkeypatch.setattr(zoo, "_half", lambda v: torch.zeros_like(v).half() if v.is_floating_point() else v)
    with pytest.raises(zoo.ZooError, match="differs from the run's by up to .*nothing released"):
        T.export_detector(run, "broken", tmp_path / "w")
    assert list((tmp_path / "w").iterdir()) == []
