"""Precision follows the hardware: bf16 autocast only where bf16 is native, fp32 elsewhere."""
import pytest
import torch

from tcm_kit import precision


@pytest.fixture(autouse=True)
def fresh_cache():
    precision._native_cpu_bf16.cache_clear()
    yield
    precision._native_cpu_bf16.cache_clear()


@pytest.mark.parametrize("mkldnn,flags,expected", [
    (True, {"avx512f", "avx512_bf16"}, "bf16"),  # Cooper Lake and later
    (True, {"avx512f", "amx_bf16", "amx_tile"}, "bf16"),  # Sapphire Rapids
    (True, {"avx512f", "avx512bw", "avx512vl"}, "fp32"),  # Ice Lake: oneDNN says yes, but it emulates bf16
    (False, {"avx2"}, "fp32"),  # AMD EPYC without bf16
    (False, {"avx512_bf16"}, "fp32"),  # a torch build without oneDNN bf16
])
def test_cpu_precision_is_decided_by_the_hardware(monkeypatch, mkldnn, flags, expected):
    monkeypatch.setattr(precision.platform, "system", lambda: "Linux")
    monkeypatch.setattr(precision, "_mkldnn_bf16", lambda: mkldnn)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: set(flags))
    assert precision.precision_for("cpu") == expected
    with precision.autocast("cpu"):
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_cuda_is_always_bf16_and_unknown_systems_fp32(monkeypatch):
    assert precision.precision_for("cuda") == "bf16"
    monkeypatch.setattr(precision.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(precision, "_mkldnn_bf16", lambda: True)
    assert precision.precision_for("cpu") == "fp32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu avx2\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU implementer\t: 0x41\n")
    assert precision._cpu_flags(str(x86)) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert "bf16" in precision._cpu_flags(str(arm))
    assert precision._cpu_flags(str(tmp_path / "missing")) == set()
