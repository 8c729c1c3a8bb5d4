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
