"""Experiment tables: runs cached by config hash, plan sizes, few-shot mean/std, transfer matrix, main table.

`tcm_kit.train.train` (and the model loading of cross-evaluation) is replaced by fakes returning fixed numbers:
the tables' plumbing is the point here, real training is covered by test_train.py and the notebooks under nbval.
"""
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tcm_kit import describe, plots, runs, tables  # noqa: E402
from tcm_kit import experiments as ex  # noqa: E402
from tcm_kit import train as T  # noqa: E402
from tcm_kit.train import run_hash  # noqa: E402


def fake_hmean(cfg) -> float:
    """A fixed, config-dependent number: TCM +0.1, more data better, seeds differ."""
    return round(0.2 + 0.1 * cfg.detector.startswith("tcm-") + 0.3 * cfg.shot + 0.01 * cfg.seed
                 + (0.05 if cfg.domain == "synth-total" else 0.0), 6)


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    """TCM_KIT_DATA in tmp; T.train replaced by a fake that writes result.json as the real one does."""
    monkeypatch.setenv("TCM_KIT_DATA", str(tmp_path / "data"))
    calls = []

    def train(cfg, out_dir, progress=True, device=None):
        calls.append(cfg)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        h = fake_hmean(cfg)
        res = {"precision": h, "recall": h, "hmean": h, "box_thresh": 0.5, "config_hash": run_hash(cfg),
               "detector": cfg.detector, "train_images": max(1, math.ceil(cfg.shot * cfg.data.num_train))}
        (out / "result.json").write_text(json.dumps(res))
        return res

    monkeypatch.setattr(T, "train", train)
    # the fake runs have no checkpoint: the score map's AUC is faked too (tests/test_inspect.py tests the real one)
    monkeypatch.setattr(tables, "score_auc",
                        lambda cfg, n: {"step0": 0.5, "trained": 0.75} if cfg.detector.startswith("tcm-") else {})
    return calls


def test_run_one_trains_once_per_run_hash(fake_train):
    cfg = ex.Plan.for_profile("smoke").config("tcm-dbnet", "synth-ic15")
    first = runs.run_one(cfg)
    assert Path(first["run_dir"]).name == run_hash(cfg) and Path(first["run_dir"]).parent == runs.runs_dir()
    mtime = (Path(first["run_dir"]) / "result.json").stat().st_mtime_ns
    again = runs.run_one(cfg)
    assert len(fake_train) == 1 and again == first
    assert (Path(first["run_dir"]) / "result.json").stat().st_mtime_ns == mtime
    other = runs.run_one(ex.Plan.for_profile("smoke").config("tcm-dbnet", "synth-ic15", seed=1))
    assert len(fake_train) == 2 and other["run_dir"] != first["run_dir"]


def test_run_many_runs_a_repeated_config_once(fake_train):
    plan = ex.Plan.for_profile("smoke")
    a, b = plan.config("dbnet"), plan.config("tcm-dbnet")
    res = runs.run_many(plan, [a, b, a], "t", progress=False)
    assert len(fake_train) == 2 and res[0] == res[2] and res[1]["detector"] == "tcm-dbnet"


def test_plans_budget_flows_into_every_config_and_bad_fields_are_refused():
    plan = ex.Plan.for_profile("cpu", steps=37, image_size=256, train_size=128, scale_range=(1.0, 1.5),
                               min_text_px=12.0, main_whole_images=False)  # whole images: see the next tests
    cfgs = [c for cs in ex.notebook_configs(plan).values() for c in cs]
    assert {c.optim.steps for c in cfgs} == {37} and {c.aug.train_size for c in cfgs} == {plan.train_size}
    assert {c.data.image_size for c in cfgs} == {c.evaluation.test_size for c in cfgs} == {plan.image_size}
    assert {c.aug.scale_range for c in cfgs} == {plan.scale_range} and {c.data.min_text_px for c in cfgs} == {12.0}
    assert all(c.optim.warmup_steps <= 37 and c.ckpt_every <= 37 for c in cfgs)
    # budget fields left None keep the values of the Plan's TrainConfig profile (cpu: "cpu-plan")
    base, c = T.TrainConfig.for_profile("cpu-plan"), ex.Plan.for_profile("cpu").config()
    assert c.profile == "cpu-plan" and (c.data, c.aug, c.optim) == (base.data, base.aug, base.optim)
    assert (c.optim.steps, c.optim.batch_size) == (400, 4) and T.TrainConfig.for_profile("cpu").optim.steps == 1000
    assert ex.Plan.for_profile("smoke").config().optim.steps == T.TrainConfig.for_profile("smoke").optim.steps
    with pytest.raises(ex.ExperimentError, match="unknown Plan fields"):
        ex.Plan.for_profile("cpu", step=10)
    with pytest.raises(ex.ExperimentError, match="profile"):
        ex.Plan.for_profile("laptop")
    with pytest.raises(ex.ExperimentError, match="data_roots"):
        ex.Plan.for_profile("full").config("dbnet", "icdar2015")
    with pytest.raises(ex.ExperimentError, match="TCM options"):
        ex.Plan.for_profile("smoke").config("dbnet", tau=0.1)


def test_plan_sizes_smoke_is_tiny_and_cpu_has_three_seeds_on_small_shots():
    smoke = ex.plan_summary("smoke").set_index("notebook")
    assert smoke.loc["total", "distinct"] <= 36
    assert (smoke.drop("total")["distinct"] <= 18).all()
    assert ex.Plan.for_profile("full").shots == (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
    cpu = ex.Plan.for_profile("cpu")
    # the cpu curve has the two shots the few-shot claim compares, each with the claims' seeds (issue 23)
    assert cpu.shots == (cpu.claim_shot, 1.0) and set(cpu.domains) == set(ex.SYNTH_DOMAINS)
    few = ex.few_shot_configs(cpu)
    small = [s for s in cpu.shots if s <= cpu.small_shot_max]
    assert small and all(len({c.seed for c in few if c.shot == s and c.detector == "dbnet"}) >= 3 for s in small)
    assert len(few) == len(cpu.detectors) * 3 * len(cpu.shots)  # 3 seeds on every shot (large_shot_seeds=3)
    assert all(len({c.seed for c in few if c.shot == s}) == 3 for s in cpu.shots)
    main = ex.detector_configs(cpu)  # every head with and without TCM on the main domains
    assert {c.detector for c in main} == set(ex.ALL_DETECTORS) and {c.domain for c in main} == set(cpu.main_domains)
    summary = ex.plan_summary(cpu).set_index("notebook")
    assert summary.loc["total", "distinct"] == len({run_hash(c) for cs in ex.notebook_configs(cpu).values()
                                                    for c in cs})
    n = len(cpu.domains)
    assert cpu.transfer_sources == (cpu.claim_domain,)  # 04 trains on the claims' domain, tests on all
    assert summary.loc["04_cross_dataset_transfer", "cross_evals"] == 2 * 1 * (n - 1)
    # the all-data TCM run on synth-ic15 (seed 0) is shared by every notebook, 06 included
    nb = {k: {run_hash(c) for c in cs} for k, cs in ex.notebook_configs(cpu).items()}
    shared = run_hash(cpu.config("tcm-dbnet", "synth-ic15"))
    assert all(shared in nb[k] for k in nb)
    # 05's runs are the claims' seed-0 runs, but for the randomly initialised baseline
    assert {c.detector for c in ex.notebook_configs(cpu)["05_plugged_detectors"]
            if run_hash(c) not in nb["06_claims"]} == {"dbnet-scratch"}
    # with main_whole_images, 05 trains on whole images: its own runs
    whole = ex.Plan.for_profile("cpu", main_domains=("synth-total",), main_whole_images=True)
    nb = {k: {run_hash(c) for c in cs} for k, cs in ex.notebook_configs(whole).items()}
    assert run_hash(whole.main_config("tcm-dbnet", "synth-total")) in nb["05_plugged_detectors"]
    assert run_hash(whole.config("tcm-dbnet", "synth-total")) not in nb["05_plugged_detectors"]


def test_main_table_on_whole_images_keeps_pixels_per_step_and_text_scale():
    cpu = ex.Plan.for_profile("cpu", main_domains=("synth-total",), main_whole_images=True)
    crop, whole = cpu.config("fcenet", "synth-total", 1), cpu.main_config("fcenet", "synth-total", 1)
    cs, ws = crop.aug.train_size, whole.aug.train_size
    assert (cs, crop.optim.batch_size) == (160, 4) and (ws, whole.optim.batch_size) == (320, 1)
    assert ws ** 2 * whole.optim.batch_size == cs ** 2 * crop.optim.batch_size
    # RandomScale is relative to the crop side: the text is drawn at the same size relative to the test image
    assert [s * ws for s in whole.aug.scale_range] == pytest.approx([s * cs for s in crop.aug.scale_range])
    assert whole.updated(aug=dict(train_size=cs, scale_range=crop.aug.scale_range),
                         optim=dict(batch_size=crop.optim.batch_size)) == crop  # nothing else differs
    assert {c.aug.train_size for c in ex.detector_configs(cpu)} == {320}
    off = ex.Plan.for_profile("cpu", main_whole_images=False)
    assert off.main_config("dbnet", "synth-total") == off.config("dbnet", "synth-total")
    smoke = ex.Plan.for_profile("smoke", main_whole_images=True)  # crops already whole: unchanged
    assert smoke.main_config("dbnet", "synth-ic15") == smoke.config("dbnet", "synth-ic15")
    assert "main table (05) on whole 320 px images, batch 1" in cpu.describe()


def test_ablation_table_has_the_ladder_and_extra_rows(fake_train):
    df = tables.ablation_table("smoke", progress=False)
    assert list(df["variant"]) == list(ex.ablation_configs("smoke"))
    assert len(df) == 8 and df["delta_hmean"].iloc[0] == 0.0
    ladder = df.iloc[:7]
    assert list(ladder["learnable_prompt"]) == [False, False, True, True, True, True, True]
    assert list(ladder["visual_prompt"]) == [False, False, False, False, True, True, True]
    assert list(ladder["aux_weight"]) == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert list(ladder["context_decoder"]) == [False] * 6 + [True]  # the last rung is the authors' TCM
    assert df["prompt"].iloc[7] == ex.AUTHORS_PROMPT and bool(df["context_decoder"].iloc[7])
    assert df["hmean"].between(0, 1).all()
    said = describe.describe_ablation(df)  # one seed: the fake's +0.1 of TCM is not called an effect
    assert "'+ score map, fixed prompt' vs 'DBNet (no TCM)': hmean 0.500 -> 0.600 (+0.100) [one seed: not an " \
        "effect]" in said and "[no difference]" in said and "Best" not in said
    assert df["P_auc_step0"].isna().tolist() == [True] + [False] * 7 and (df["P_auc"].iloc[1:] == 0.75).all()
    tl = tables.tau_lambda_table("smoke", progress=False)
    assert len(tl) == 2 and set(tl["tau"]) == {0.07, 0.2}
    # the τ=0.07, λ=1 point is the ablation's TCM row: reused, not retrained
    assert len(fake_train) == 8 + 1


def test_few_shot_table_mean_and_std_over_seeds(fake_train):
    plan = ex.Plan.for_profile("smoke", shots=(0.1, 0.5, 1.0), seeds=(0, 1, 2), small_shot_max=0.1)
    table = tables.few_shot_table(plan, progress=False)
    assert len(table) == 2 * 3
    row = table[(table["detector"] == "tcm-dbnet") & (table["shot"] == 0.1)].iloc[0]
    vals = [fake_hmean(plan.config("tcm-dbnet", shot=0.1, seed=s)) for s in (0, 1, 2)]
    assert row["n_seeds"] == 3 and row["hmean_mean"] == pytest.approx(np.mean(vals))
    assert row["hmean_std"] == pytest.approx(np.std(vals, ddof=1))
    big = table[(table["detector"] == "dbnet") & (table["shot"] == 0.5)].iloc[0]
    assert big["n_seeds"] == 1 and math.isnan(big["hmean_std"])
    gain = tables.few_shot_gain(table)
    assert gain["gain"].to_numpy() == pytest.approx([0.1, 0.1, 0.1])
    assert "tcm-dbnet minus dbnet" in describe.describe_few_shot(table)
    fig = plots.plot_few_shot(table)
    assert len(fig.axes[0].lines) >= 2
    with pytest.raises(ex.ExperimentError, match="shots"):
        ex.few_shot_configs(plan, shots=(0.0,))


def test_transfer_matrix_shape_diagonal_and_cross_eval_cache(fake_train, monkeypatch, tmp_path):
    loads = []

    def load_run(run_dir, device="cpu"):
        loads.append(run_dir)
        return "model", json.loads((Path(run_dir) / "result.json").read_text()), None

    monkeypatch.setattr(T, "load_run", load_run)
    monkeypatch.setattr(T, "split_dir", lambda cfg, split, progress=True: Path("/fake") / cfg.domain / split)
    thresholds = []

    sizes = []

    def evaluate_run(model, cfg, progress=True, device="cpu", test_root=None, box_thresh=None, size=None,
                     test_format=None):
        thresholds.append(box_thresh)
        sizes.append(size)
        return {"precision": 0.1, "recall": 0.1, "hmean": 0.1 if "synth-td500" in str(test_root) else 0.05,
                "box_thresh": box_thresh, "n_test": 4}

    monkeypatch.setattr(T, "evaluate_run", evaluate_run)
    domains = ("synth-ic15", "synth-td500", "synth-total")
    long = tables.transfer_table("smoke", domains=domains, progress=False)
    assert len(long) == 2 * 3 * 3 and long["in_domain"].sum() == 2 * 3
    diag = long[long["in_domain"] & (long["detector"] == "dbnet") & (long["train_domain"] == "synth-total")]
    assert diag["hmean"].item() == fake_hmean(ex.Plan.for_profile("smoke").config("dbnet", "synth-total"))
    cross = long[(long["train_domain"] == "synth-ic15") & (long["test_domain"] == "synth-td500")]
    assert (cross["hmean"] == 0.1).all()
    m = tables.transfer_matrix(long)
    assert m.shape == (2 * 3, 2 + 3 + 1)
    assert list(m.columns) == ["detector", "train_domain", *domains, "mean on other domains"]
    assert len(loads) == 6
    assert len(thresholds) == 2 * 3 * 2 and None not in thresholds  # the run's own threshold, no val re-run
    tables.transfer_table("smoke", domains=domains, progress=False)
    assert len(loads) == 6 and len(fake_train) == 6  # cross-evaluations and runs all read back from disk
    # the fake cross-evaluations give both detectors the same off-domain mean: a tie, said as one
    off = long[~long["in_domain"]].groupby("detector")["hmean"].mean()
    assert off["dbnet"] == pytest.approx(off["tcm-dbnet"])
    assert describe.describe_transfer(long).endswith("The detectors transfer equally well here.")
    lifted = long.copy()
    lifted.loc[~lifted["in_domain"] & (lifted["detector"] == "tcm-dbnet"), "hmean"] += 0.02
    said = describe.describe_transfer(lifted)
    assert "tcm-dbnet has the highest mean off its training domain (+0.020 over the next)" in said
    assert "claim (iii)" in said and "best" not in said  # a one-seed ranking is not stated as a finding
    assert describe.describe_transfer(long[long["in_domain"]]) == "Only one domain: no transfer to measure."
    assert len(plots.plot_transfer_heatmap(long).axes) >= 3
    one = ex.Plan.for_profile("smoke", transfer_sources=("synth-total",))  # one training domain, tested on all
    row = tables.transfer_table(one, domains=domains, progress=False)
    assert len(row) == 2 * 3 and set(row["train_domain"]) == {"synth-total"} and row["in_domain"].sum() == 2
    assert tables.transfer_matrix(row).shape == (2, 2 + 3 + 1)
    assert len(fake_train) == 6  # its runs are the matrix's, read back
    summary = ex.plan_summary(one).set_index("notebook")
    assert summary.loc["04_cross_dataset_transfer", "runs"] == 2
    assert set(sizes) == {128}  # synthetic targets: the run's own test size
    # a real domain is tested at the plan's real_test_size, whatever the run was tested at
    real = ex.Plan.for_profile("smoke", real_test_size=256)
    roots = {"icdar2015": str(tmp_path)}
    target = real.config("dbnet", "icdar2015", data_roots=roots)
    assert target.evaluation.test_size == 256 and real.config("dbnet", "synth-ic15").evaluation.test_size == 128
    source = real.config("dbnet", "synth-ic15")
    [r] = runs.run_many(real, [source], "one", progress=False)
    runs.cross_evaluate(r, source, [target])
    assert sizes[-1] == 256


def test_detector_table_gain_and_validation(fake_train):
    df = tables.detector_table("smoke", detectors=["dbnet", "tcm-dbnet", "dbnet-scratch"],
                           domains=["synth-ic15", "synth-total"], progress=False)
    assert len(df) == 6 and set(df["detector"]) == {"dbnet", "tcm-dbnet", "dbnet-scratch"}
    gains = df.dropna(subset=["tcm_gain"])
    assert list(gains["detector"]) == ["tcm-dbnet"] * 2 and gains["tcm_gain"].to_numpy() == pytest.approx([0.1, 0.1])
    said = describe.describe_main(df)
    assert "higher than dbnet on 2 of 2 domains, lower on 0" in said and "one seed: not an effect" in said
    assert "+10.0 F points" in said and "the paper reports +1.9 F points for tcm-dbnet over dbnet on ICDAR2015" in said
    with pytest.raises(ex.ExperimentError, match="unknown detectors"):
        tables.detector_table("smoke", detectors=["yolo"], progress=False)
    with pytest.raises(ex.ExperimentError, match="need a folder"):
        tables.detector_table("smoke", domains=["icdar2015"], progress=False)
    roots = ex.resolve_domains("full", data_roots={"icdar2015": "/d/ic15", "td500": None})
    assert roots == ("icdar2015",)
    paper = tables.paper_main_table()
    assert paper[paper["metric"] == "F-measure (%)"]["value (paper)"].tolist() == ["88.8", "88.8", "85.1", "85.9"]
    assert paper[paper["method (paper)"] == "TCM-DBNet vs DBNet"]["value (paper)"].item() == "+1.9"


def test_describers_say_when_nothing_separates_the_runs():
    df = pd.DataFrame({"variant": ["a", "b"], "hmean": [0.0, 0.0]})
    assert "same test hmean" in describe.describe_ablation(df)
    tl = pd.DataFrame({"tau": [0.07, 0.2], "lambda": [1.0, 1.0], "hmean": [0.3, 0.3]})
    assert "same hmean" in describe.describe_tau_lambda(tl)
    flat = pd.DataFrame({"detector": ["dbnet", "tcm-dbnet"], "shot": [0.1, 0.1], "hmean_mean": [0.2, 0.2]})
    assert "no gain measured" in describe.describe_few_shot(flat)


def test_run_many_in_two_processes_matches_one_process(tmp_path, monkeypatch):
    """Real smoke training: two spawned 1-thread workers give the same results as the runs in this process.
    (The smoke CLIP and synthetic splits come from the repo's data cache; only the runs go to tmp.)"""
    monkeypatch.setenv("TCM_KIT_RUNS", str(tmp_path / "runs"))
    base = ex.Plan.for_profile("smoke")
    configs = [base.config("dbnet", "synth-ic15"), base.config("tcm-dbnet", "synth-ic15"),
               base.config("dbnet", "synth-ic15")]
    par = runs.run_many(ex.Plan.for_profile("smoke", workers=2), configs, "parallel", progress=False)
    assert par[0] == par[2] and len({r["run_dir"] for r in par}) == 2
    logs = {}
    for r in par[:2]:  # train again, one after the other, in this process
        logs[r["run_dir"]] = Path(r["run_dir"], "log.csv").read_text()
        for name in ("result.json", "last.pt", "log.csv"):
            Path(r["run_dir"], name).unlink()
    seq = runs.run_many(base, configs, "sequential", progress=False)
    keys = ("precision", "recall", "hmean", "config_hash", "run_dir")
    assert [{k: r[k] for k in keys} for r in par] == [{k: r[k] for k in keys} for r in seq]
    for run, text in logs.items():  # every step's losses, to the last digit
        assert text.count("\n") == 5 and Path(run, "log.csv").read_text() == text


LADDER = list(ex.ABLATION_LADDER)


def ablation_rows(hmeans, seeds=(0,), jitter=0.0):
    """An ablation table in the ladder's order: one row per (variant, seed), hmean + jitter * seed."""
    return pd.DataFrame([{"variant": v, "seed": s, "hmean": h + jitter * s}
                         for v, h in zip([*LADDER, *ex.ABLATION_EXTRAS], hmeans) for s in seeds])


def test_describe_ablation_compares_each_rung_with_the_one_below_whatever_the_row_order():
    h = [0.30, 0.32, 0.28, 0.28, 0.29, 0.31, 0.35, 0.33]
    df = ablation_rows(h)
    said = describe.describe_ablation(df)
    # a rung that is worse is said to be worse, with its sign; one seed: never an effect
    assert "'+ learnable prompt' vs '+ score map, fixed prompt': hmean 0.320 -> 0.280 (-0.040)" in said
    assert "'+ language prompt generator' vs '+ learnable prompt': hmean 0.280 -> 0.280 (+0.000) [no difference]" \
        in said
    assert "Extra rows: 'TCM, authors' prompt sentence' vs '+ context decoder (= TCM)': hmean 0.350 -> 0.330 " \
        "(-0.020)" in said
    assert "Top of the ladder vs its bottom: '+ context decoder (= TCM)' vs 'DBNet (no TCM)': hmean 0.300 -> " \
        "0.350 (+0.050) [one seed: not an effect]" in said
    assert said.count("[one seed: not an effect]") == 7 and "**+ context decoder (= TCM)** (0.350, one seed)" in said
    # the order comes from the ladder, not from the rows
    for order in (df.index[::-1], [3, 0, 7, 5, 1, 6, 2, 4]):
        assert describe.describe_ablation(df.loc[order].reset_index(drop=True)) == said
    # a rung the table lacks: the next one is compared with the rung below it that the table has
    gap = describe.describe_ablation(df[df["variant"] != "+ learnable prompt"])
    assert "'+ language prompt generator' vs '+ score map, fixed prompt': hmean 0.320 -> 0.280 (-0.040)" in gap
    # the trained score map's AUC where the table has it
    auc = df.assign(P_auc=[np.nan, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7])
    assert "hmean 0.300 -> 0.320 (+0.020)" in describe.describe_ablation(auc)
    assert "'+ learnable prompt' vs '+ score map, fixed prompt': hmean 0.320 -> 0.280 (-0.040), P AUC 0.600 -> " \
        "0.700 (+0.100) [one seed: not an effect]" in describe.describe_ablation(auc)
    with pytest.raises(ex.ExperimentError, match="neither on the ladder"):
        describe.describe_ablation(df.replace({"variant": {"+ auxiliary loss": "+ something else"}}))
    assert "'b' vs 'a': hmean 0.100 -> 0.200" in describe.describe_ablation(
        pd.DataFrame({"variant": ["b", "a"], "hmean": [0.2, 0.1]}), ladder=["a", "b"], extras={})


def test_describe_ablation_with_seeds_says_within_noise_when_a_step_is_below_the_spread():
    h = [0.30, 0.305, 0.40, 0.40, 0.40, 0.40, 0.40, 0.40]
    said = describe.describe_ablation(ablation_rows(h, seeds=(0, 1, 2), jitter=0.02))  # std 0.02 in every row
    assert "(3 seeds per variant" in said
    assert "'+ score map, fixed prompt' vs 'DBNet (no TCM)': hmean 0.320 -> 0.325 (+0.005) [within noise (seed std " \
        "up to 0.020, 3 seeds)]" in said
    assert "'+ learnable prompt' vs '+ score map, fixed prompt': hmean 0.325 -> 0.420 (+0.095) [larger than the " \
        "seed spread (std up to 0.020, 3 seeds)]" in said
    assert "one seed" not in said
    # an aggregated table (mean / std / n_seeds columns) says the same
    agg = pd.DataFrame({"variant": [*LADDER, *ex.ABLATION_EXTRAS], "hmean_mean": np.add(h, 0.02),
                        "hmean_std": 0.02, "n_seeds": 3})
    assert "[within noise (seed std up to 0.020, 3 seeds)]" in describe.describe_ablation(agg)
    with pytest.raises(ex.ExperimentError, match="no seed column"):
        describe.describe_ablation(ablation_rows(h, seeds=(0, 1)).drop(columns="seed"))


def main_rows(gains, base=0.30, domains=("synth-ic15", "synth-total")):
    return pd.DataFrame([{"domain": d, "detector": det, "hmean": base + (g if det.startswith("tcm-") else 0.0)}
                         for d, g in zip(domains, gains) for det in ("dbnet", "tcm-dbnet", "dbnet-scratch")])


def test_describe_main_computes_the_gain_from_the_table_and_the_paper_figure_from_paper_main_table():
    worse = main_rows([-0.05, -0.03])
    said = describe.describe_main(worse)
    assert "tcm-dbnet minus dbnet (test hmean): -0.050 on synth-ic15, -0.030 on synth-total" in said
    assert "higher than dbnet on 0 of 2 domains, lower on 2, equal on 0; mean -0.040 (-4.0 F points; one seed: not " \
        "an effect)" in said
    assert describe.describe_main(worse.iloc[::-1].reset_index(drop=True)) == said.replace(
        "-0.050 on synth-ic15, -0.030 on synth-total", "-0.030 on synth-total, -0.050 on synth-ic15")
    # the paper's figure is read from paper_main_table(), not typed in the sentence
    paper = tables.paper_main_table()
    paper.loc[paper["method (paper)"] == "TCM-DBNet vs DBNet", "value (paper)"] = "+2.7"
    assert "the paper reports +2.7 F points for tcm-dbnet over dbnet on ICDAR2015" in describe.describe_main(
        worse, paper=paper)
    assert "the paper reports no tcm-dbnet gain" in describe.describe_main(worse, paper=paper.iloc[:4])
    # PAN's figure for PAN's head; a head without its baseline is left out
    pan = pd.DataFrame({"domain": ["d", "d", "d"], "detector": ["pan", "tcm-pan", "tcm-fcenet"],
                        "hmean": [0.2, 0.2, 0.5]})
    assert describe.describe_main(pan) == (
        "tcm-pan minus pan (test hmean): +0.000 on d; higher than pan on 0 of 1 domains, lower on 0, equal on 1; "
        "mean +0.000 (+0.0 F points; one seed: not an effect) — the paper reports +1.7 F points for tcm-pan over "
        "pan on ICDAR2015.")
    # seeds: the per-domain difference against the seed spread
    seeded = pd.concat([main_rows([0.10, 0.01]).assign(seed=0),
                        main_rows([0.10, 0.01], base=0.32).assign(seed=1)], ignore_index=True)
    said = describe.describe_main(seeded)
    assert "+0.100 on synth-ic15 (larger than the seed spread" in said and "+0.010 on synth-total (within noise" in said
    assert "2+ seeds: larger than the seed spread on 1 of 2 domains" in said and "one seed" not in said


def test_step0_tau_lambda_and_few_shot_sentences_name_no_winner_from_one_seed_or_row_order():
    labels = list(ex.STEP0_VARIANTS)
    df = pd.DataFrame({"variant": labels, "P_auc_step0": [0.93, 0.43, 0.69, 0.47, 0.91], "n_images": 60})
    said = describe.describe_step0(df)
    assert "the authors' setting 0.430" in said and "the bare prompt 0.930" in said
    assert describe.describe_step0(df.iloc[::-1].reset_index(drop=True)) == said  # labels, not positions
    tl = pd.DataFrame({"tau": [0.07, 0.2], "lambda": [1.0, 1.0], "hmean": [0.30, 0.32]})
    assert "no setting is shown to be better" in describe.describe_tau_lambda(tl)
    few = pd.DataFrame({"detector": ["dbnet", "tcm-dbnet"] * 2, "shot": [0.1, 0.1, 1.0, 1.0],
                        "hmean_mean": [0.2, 0.4, 0.5, 0.5], "hmean_std": [0.01] * 4, "n_seeds": [3] * 4})
    s = describe.describe_few_shot(few)
    assert "claim (ii)" in s and "as the paper reports" not in s and "+0.200" in s


def test_tcm_setting_table_pairs_each_setting_with_the_baseline_by_seed(fake_train, monkeypatch):
    def with_counts(cfg, out_dir, progress=True, device=None):  # per-image counts: prior init finds one more word
        res = real(cfg, out_dir)
        extra = int(cfg.tcm.prompt_init == "prior")
        counts = [[2 + extra, 4, 5]] * 10
        res.update(per_image=counts, hmean=float(claims.dataset_hmean(np.array(counts))))
        (Path(out_dir) / "result.json").write_text(json.dumps(res))
        return res

    from tcm_kit import claims
    real = T.train
    monkeypatch.setattr(T, "train", with_counts)
    plan = ex.Plan.for_profile("smoke")
    df = tables.tcm_setting_table(plan, {"prior": dict(prompt_init="prior"), "official": dict(prompt_init="official")},
                                  baseline="official", seeds=(0, 1, 2), progress=False, n_boot=100)
    assert list(df["comparison"]) == ["prior − official"] and df["n_seeds"].iloc[0] == 3
    assert df["difference"].iloc[0] > 0 and len(fake_train) == 6


def test_run_many_starts_the_costliest_runs_first():
    from tcm_kit.runs import _expected_cost

    cfg = lambda det, **kw: T.TrainConfig.for_profile("smoke", detector=det, **kw)  # noqa: E731
    order = sorted(["dbnet", "tcm-pan", "fcenet", "pan", "tcm-dbnet"], key=lambda d: -_expected_cost(cfg(d)))
    assert order == ["tcm-pan", "pan", "tcm-dbnet", "dbnet", "fcenet"]
    assert _expected_cost(cfg("dbnet", optim=dict(steps=8))) == 2 * _expected_cost(cfg("dbnet", optim=dict(steps=4)))


def test_real_targets_add_synthetic_to_real_rows_and_keep_the_synthetic_ones(tmp_path):
    (tmp_path / "icdar2015" / "test").mkdir(parents=True)
    cpu = ex.Plan.for_profile("cpu")
    plain = ex.claim_specs(cpu)
    real = ex.claim_specs(cpu, real_targets={"icdar2015": str(tmp_path / "icdar2015")})
    assert [c.label for c in real if c.label not in {x.label for x in plain}] == \
        ["tcm-dbnet − dbnet, synth-ic15 → icdar2015"]
    added = next(c for c in real if c.label.endswith("icdar2015"))
    assert added.test_on.data_root == str((tmp_path / "icdar2015").resolve())
    assert added.test_on.evaluation.test_size == cpu.real_test_size == 1280  # the photos' own long side
    assert added.method == next(c for c in plain if c.claim == "iii").method  # the same synthetic-trained runs
