"""The training-throughput benchmark measures real training steps (smoke profile, tiny data it generates)."""
import importlib

import pytest


@pytest.mark.parametrize("detector", ["dbnet", "tcm-dbnet"])
def test_train_speed_measures_real_steps(detector):
    bench = importlib.import_module("benchmarks.train_speed")
    r = bench.measure(detector, "smoke", None, steps=2, threads=1, device="cpu")
    assert r["detector"] == detector and r["arch"] == "TCM-RN-tiny" and r["steps"] == 2
    assert r["batch"] == 2 and r["crop"] == 128  # the smoke profile's batch and crop
    assert 0 < r["data_ms"] < r["median_step_ms"]
    assert r["images_per_s"] == pytest.approx(r["batch"] / (r["median_step_ms"] / 1000))


def test_tcm_parts_times_every_part_against_dbnet():
    bench = importlib.import_module("benchmarks.tcm_parts")
    rows = bench.measure("TCM-RN-tiny", size=64, batch=2, runs=1, threads=1)
    by = {r["part"]: r for r in rows}
    assert set(by) == {"image encoder", "attention pool", "text side", "visual prompt", "matching",
                       "head (tcm-dbnet)", "head (dbnet)", "forward tcm-dbnet", "forward dbnet"}
    assert all(r["ms"] > 0 for r in rows)
    assert by["forward dbnet"]["x_dbnet"] == pytest.approx(1.0)
    # only the TCM parts (and the head's extra input channel) are shares of TCM's overhead
    assert by["image encoder"]["overhead_share"] is None and by["forward tcm-dbnet"]["overhead_share"] is None
    over = by["forward tcm-dbnet"]["ms"] - by["forward dbnet"]["ms"]
    for part in ("attention pool", "text side", "visual prompt", "matching"):  # a share of TCM's extra time
        want = by[part]["ms"] / over if over > 0 else None
        assert by[part]["overhead_share"] == (pytest.approx(want) if want is not None else None)


def test_gpu_benchmark_script_runs_and_reports_the_device(tmp_path, monkeypatch):
    """The GPU benchmark's code path, tried on the CPU (the script's --device option): a report naming the device,
    one row per detector, batch and autocast dtype, FPS = batch / median time."""
    import torch

    gpu = importlib.import_module("benchmarks.gpu")
    monkeypatch.setenv("TCM_KIT_REPORTS", str(tmp_path))
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            gpu.main([])
    gpu.main(["--device", "cpu", "--runs", "1", "--size", "64", "--batches", "2", "--amps", "fp32,bf16",
              "--skip-train"])
    text = (tmp_path / "benchmarks_gpu.md").read_text()
    assert "Device: " in text and "(cpu)" in text
    import pandas as pd

    df = pd.read_csv(tmp_path / "benchmarks_gpu_inference.csv")
    assert len(df) == 2 * 2 and set(df["amp"]) == {"fp32", "bf16"} and set(df["batch"]) == {2}
    assert (df["FPS"] - df["batch"] / (df["median ms"] / 1000)).abs().max() < 1e-6 * df["FPS"].max()


@pytest.mark.parametrize("variant", ["tcm-dbnet [fast]", "tcm-dbnet [value]", "tcm-dbnet [fast, value]"])
def test_inference_variants_build_the_tcm_option_they_name(variant, monkeypatch):
    inference = importlib.import_module("benchmarks.inference")
    import tcm_kit.detector as det

    built = []
    real = det.build_detector
    monkeypatch.setattr(det, "build_detector", lambda *a, **k: built.append(k) or real(*a, **k))
    row = inference.measure(variant, "TCM-RN-tiny", 64, 1, 1, "cpu", 1, amp="fp32")
    assert row["detector"] == variant and row["median_ms"] > 0
    options = inference.VARIANTS[variant][1]
    assert {k: getattr(built[0]["tcm"], k) for k in options} == options


def test_paired_ratio_is_the_median_of_per_round_ratios_with_an_interval():
    import numpy as np

    paired = importlib.import_module("benchmarks.paired")
    rng = np.random.default_rng(0)
    load = rng.uniform(1.0, 3.0, 40)  # a shared machine: every round slowed by its own factor
    db = 0.1 * load
    rows = {r["detector"]: r for r in paired.ratio_summary({"dbnet": db.tolist(), "tcm": (1.2 * db).tolist(),
                                                            "odd": (db * rng.uniform(1.4, 1.6, 40)).tolist()})}
    assert rows["dbnet"]["x_dbnet"] == pytest.approx(1.0)
    assert rows["tcm"]["x_dbnet"] == pytest.approx(1.2) and rows["tcm"]["ci_hi"] - rows["tcm"]["ci_lo"] < 1e-9
    # the load cancels: the ratio stays at 1.2 although the times spread by 3x
    assert rows["tcm"]["median_ms"] == pytest.approx(1200 * np.median(db))
    odd = rows["odd"]
    assert 1.4 < odd["ci_lo"] < odd["x_dbnet"] < odd["ci_hi"] < 1.6 and odd["q1"] < odd["x_dbnet"] < odd["q3"]
    with pytest.raises(ValueError, match="rounds must be aligned"):
        paired.ratio_summary({"dbnet": [1.0, 1.0], "tcm": [1.0]})


def test_paired_benchmark_times_every_model_each_round():
    paired = importlib.import_module("benchmarks.paired")
    rows = paired.measure(("dbnet", "tcm-dbnet [fast]"), "TCM-RN-tiny", size=64, rounds=3, warmup=1)
    assert [r["detector"] for r in rows] == ["dbnet", "tcm-dbnet [fast]"]
    assert all(r["rounds"] == 3 and r["median_ms"] > 0 for r in rows)
    assert rows[0]["x_dbnet"] == 1.0 and rows[1]["ci_lo"] <= rows[1]["x_dbnet"] <= rows[1]["ci_hi"]
    with pytest.raises(ValueError, match="must be dbnet"):
        paired.measure(("tcm-dbnet", "dbnet"), "TCM-RN-tiny", size=64, rounds=1)
