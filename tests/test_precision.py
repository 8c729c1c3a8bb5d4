"""Precision: auto follows the hardware (bf16 autocast only where bf16 is native), fp32 / bf16 when asked; a run
is never read back, resumed or paired across precisions."""
import warnings

import pytest
import torch

from tcm_kit import precision


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv("TCM_KIT_PRECISION", raising=False)  # "auto" unless a test asks
    monkeypatch.delenv("TCM_KIT_NATIVE_BF16", raising=False)
    monkeypatch.setattr(precision, "_warned", set())
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


def _host(monkeypatch, native: bool):
    """Decide as a CPU with (True) or without (False) native bf16, through the flags the kit reads."""
    monkeypatch.setattr(precision.platform, "system", lambda: "Linux")
    monkeypatch.setattr(precision, "_mkldnn_bf16", lambda: True)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"} if native else {"avx512f"})
    precision._native_cpu_bf16.cache_clear()


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("asked,expected", [("fp32", {True: "fp32", False: "fp32"}),
                                            ("bf16", {True: "bf16", False: "bf16"}),
                                            ("auto", {True: "bf16", False: "fp32"}),
                                            ("", {True: "bf16", False: "fp32"})])
def test_the_user_chooses_and_auto_follows_the_hardware(monkeypatch, native, asked, expected):
    _host(monkeypatch, native)
    monkeypatch.setenv("TCM_KIT_PRECISION", asked)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert precision.precision_for("cpu") == expected[native]
        with precision.autocast("cpu"):
            y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == (torch.bfloat16 if expected[native] == "bf16" else torch.float32)


def test_forced_bf16_where_emulated_warns_once_with_the_slowdown(monkeypatch):
    monkeypatch.setenv("TCM_KIT_PRECISION", "bf16")
    _host(monkeypatch, native=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning at all
        assert precision.precision_for("cpu") == "bf16"
    _host(monkeypatch, native=False)
    with pytest.warns(UserWarning, match=precision.EMULATED_BF16_SLOWDOWN) as seen:
        precision.precision_for("cpu")
        precision.precision_for("cpu")
        precision.autocast("cpu")
    assert len(seen) == 1


def test_an_unknown_precision_is_refused_in_one_line(monkeypatch, capsys):
    from tcm_kit import cli

    monkeypatch.setenv("TCM_KIT_PRECISION", "fp16")
    with pytest.raises(precision.PrecisionError, match="TCM_KIT_PRECISION='fp16'.*auto, fp32, bf16"):
        precision.precision_for("cpu")
    assert cli.main(["synth", "--preset", "synth-ic15", "--num", "1", "--out", "/nonexistent/never"]) == 2
    assert "TCM_KIT_PRECISION='fp16'" in capsys.readouterr().err
    monkeypatch.setenv("TCM_KIT_PRECISION", "auto")
    monkeypatch.setenv("TCM_KIT_NATIVE_BF16", "maybe")
    precision._native_cpu_bf16.cache_clear()
    with pytest.raises(precision.PrecisionError, match="TCM_KIT_NATIVE_BF16"):
        precision.precision_for("cpu")


@pytest.mark.parametrize("value,expected", [("1", "bf16"), ("0", "fp32")])
def test_native_bf16_can_be_forced_for_tests_and_ci(monkeypatch, value, expected):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512f"} if value == "1" else {"avx512_bf16"})
    monkeypatch.setenv("TCM_KIT_NATIVE_BF16", value)
    precision._native_cpu_bf16.cache_clear()
    assert precision.precision_for("cpu") == expected


def test_the_cli_option_sets_the_precision_for_the_command_and_its_workers(monkeypatch):
    from tcm_kit import cli

    seen = []
    monkeypatch.setattr(cli, "_cmd_reproduce", lambda args: seen.append(precision.requested_precision()) or 0)
    assert cli.main(["reproduce", "--profile", "smoke", "--precision", "fp32"]) == 0
    assert seen == ["fp32"] and __import__("os").environ["TCM_KIT_PRECISION"] == "fp32"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["reproduce", "--precision", "fp16"])


def test_the_run_key_holds_the_precision_and_fp32_keeps_the_old_key(monkeypatch):
    from tcm_kit import train as T
    from tcm_kit.clip import clip_fingerprint
    from tcm_kit.utils import config_hash

    cfg = T.TrainConfig.for_profile("smoke")
    old = config_hash({**T.run_fields(cfg), "clip_fingerprint": clip_fingerprint(cfg.clip_weights)})
    assert T.run_hash(cfg, precision="fp32") == old  # runs made before precision was a choice keep their key
    assert T.run_hash(cfg, precision="bf16") != old
    monkeypatch.setenv("TCM_KIT_PRECISION", "fp32")
    assert T.run_hash(cfg, "cpu") == old
    monkeypatch.setenv("TCM_KIT_PRECISION", "bf16")
    assert T.run_hash(cfg, "cpu") == T.run_hash(cfg, precision="bf16")


def test_a_run_is_never_read_back_or_resumed_in_the_other_precision(tmp_path, monkeypatch):
    from tcm_kit import runs
    from tcm_kit import train as T

    monkeypatch.setenv("TCM_KIT_RUNS", str(tmp_path / "runs"))
    cfg = T.TrainConfig.for_profile("smoke", optim=dict(steps=2))
    monkeypatch.setenv("TCM_KIT_PRECISION", "fp32")
    fp32 = runs.run_one(cfg)
    assert fp32["amp"] == "fp32" and runs.cached_result(cfg) is not None
    monkeypatch.setenv("TCM_KIT_PRECISION", "bf16")
    assert runs.cached_result(cfg) is None  # the fp32 run is not this precision's
    with pytest.raises(T.CheckpointError, match="trains in bf16.*TCM_KIT_PRECISION=fp32"):
        T.train(cfg, fp32["run_dir"], progress=False)  # its finished run, asked in bf16
    (tmp_path / "half").mkdir()
    monkeypatch.setenv("TCM_KIT_PRECISION", "fp32")
    T.train(T.TrainConfig.for_profile("smoke", optim=dict(steps=2), ckpt_every=1), tmp_path / "half",
            progress=False)
    (tmp_path / "half" / "result.json").unlink()  # as if killed before the end: last.pt is left
    monkeypatch.setenv("TCM_KIT_PRECISION", "bf16")
    with pytest.raises(T.CheckpointError, match="trained in fp32.*trains in bf16"):
        T.train(T.TrainConfig.for_profile("smoke", optim=dict(steps=2), ckpt_every=1), tmp_path / "half",
                progress=False)
    bf16 = runs.run_one(cfg)  # a run of its own, beside the fp32 one
    assert bf16["amp"] == "bf16" and bf16["run_dir"] != fp32["run_dir"]
    assert bf16["config_hash"] != fp32["config_hash"]
    model, _, result = T.load_run(fp32["run_dir"])  # evaluation reads either precision's checkpoint
    assert result["amp"] == "fp32" and not model.training


def test_claims_refuse_to_pair_runs_of_different_precisions():
    import numpy as np

    from tcm_kit import claims as C

    counts = np.tile([[2, 3, 3]], (5, 1)).tolist()
    run = lambda seed, amp: {"seed": seed, "hmean": 0.5, "per_image": counts, "amp": amp}  # noqa: E731
    ok = C.Comparison("i", "a − b", (run(0, "bf16"), run(1, "bf16")), (run(0, "bf16"), run(1, "bf16")))
    assert C.per_seed_differences(ok).tolist() == [0.0, 0.0]
    mixed = C.Comparison("i", "a − b", (run(0, "bf16"), run(1, "bf16")), (run(0, "fp32"), run(1, "fp32")))
    with pytest.raises(C.ClaimError, match="different precisions \\(bf16, fp32\\)"):
        C.claim_row(mixed)


def test_tables_are_stamped_with_the_precision(tmp_path, monkeypatch):
    import pandas as pd

    from tcm_kit import report

    monkeypatch.setenv("TCM_KIT_REPORTS", str(tmp_path))
    for asked in ("fp32", "bf16"):
        monkeypatch.setenv("TCM_KIT_PRECISION", asked)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = report.save_table(pd.DataFrame({"a": [1]}), f"t_{asked}", "t", report.Stamp("smoke", (0,), 1.0))
        assert f"precision {asked}," in path.read_text()
        assert f"precision {asked}," in (tmp_path / "README.md").read_text()


def test_the_precision_study_compares_each_claim_and_run_across_precisions(tmp_path, monkeypatch):
    from tcm_kit import claims as C
    from tcm_kit import precision_study as S
    from tcm_kit.experiments import Plan

    monkeypatch.setenv("TCM_KIT_RUNS", str(tmp_path / "runs"))
    plan = Plan.for_profile("smoke", steps=2)
    runs = lambda det: tuple(plan.config(det, plan.claim_domain, s) for s in (0, 1))  # noqa: E731
    monkeypatch.setattr(S, "claim_specs", lambda p: [C.Comparison("i", "tcm-dbnet − dbnet", runs("tcm-dbnet"),
                                                                  runs("dbnet"))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims_df, runs_df, seconds = S.precision_tables(plan, progress=False, n_boot=50)
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())
    assert len(claims_df) == 1 and len(runs_df) == 2 and set(runs_df["detector"]) == {"tcm-dbnet", "dbnet"}
    row = claims_df.iloc[0]
    assert row["bf16_minus_fp32"] == pytest.approx(row["difference_bf16"] - row["difference_fp32"])
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(folders) == 8  # 4 runs in each precision, none shared
    import json

    amps = sorted(json.loads((tmp_path / "runs" / f / "result.json").read_text())["amp"] for f in folders)
    assert amps == ["bf16"] * 4 + ["fp32"] * 4
    assert "seed-to-seed" in S.summary(claims_df, runs_df)
    with pytest.raises(ValueError, match="two different"):
        S.precision_tables(plan, precisions=("fp32", "fp32"))
