"""tcm_kit.real_claims: the real-data claims Plan on tiny benchmark folders the test writes itself (synthetic scenes
laid out as icdar2015/test, td500/train and td500/test): runs paired by seed, thresholds chosen off the test sets,
one claims table, resumable from its caches."""
import json

import pytest

from tcm_kit import real_claims as RC
from tcm_kit.data.synth import write_synth_set


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_claims")
    for split, preset, n, seed in (("icdar2015/test", "synth-ic15", 3, 1), ("td500/train", "synth-td500", 6, 2),
                                   ("td500/test", "synth-td500", 3, 3)):
        write_synth_set(preset, num=n, size=128, seed=seed, out=root / "datasets" / split, progress=False)
    return root


@pytest.fixture()
def env(data, monkeypatch):
    monkeypatch.setenv("TCM_KIT_DATA", str(data / "kitdata"))
    monkeypatch.setenv("TCM_KIT_RUNS", str(data / "runs"))
    monkeypatch.setenv("TCM_KIT_REPORTS", str(data / "reports"))
    return data / "datasets"


def test_the_plan_pairs_runs_by_seed_and_fine_tunes_from_the_synthetic_run(env):
    plan = RC.RealPlan.for_profile("smoke")
    syn = RC.synth_config(plan, "tcm-dbnet", 0)
    ft = RC.td500_config(plan, "tcm-dbnet", 0, 0.5, env)
    assert syn.domain == "synth-ic15" and ft.domain == "td500" and ft.shot == 0.5
    from tcm_kit.runs import run_dir

    assert ft.init_from == str(run_dir(syn))
    assert ft.optim.steps == RC.td500_config(plan, "tcm-dbnet", 0, 1.0, env).optim.steps  # same steps at each shot


def test_real_claims_make_one_table_and_read_everything_back(env, tmp_path):
    plan = RC.RealPlan.for_profile("smoke")
    table, runs = RC.real_claims(plan, env, progress=False)
    assert list(table["claim"]) == ["iii", "iii", "ii", "ii", "ii", "real → real"]
    assert set(runs["tested on"]) == {"icdar2015/test", "td500/test"}
    assert (runs[runs["tested on"] == "icdar2015/test"]["long side"] == 1280).all()
    assert len(runs) == 2 * (2 + 2 + 1)  # detectors x (synthetic and td500 x1.0 on both test sets, td500 x0.5 on one)
    assert all(v.startswith("inconclusive") for v in table["verdict"])  # one seed decides nothing
    choices = sorted(env.parent.glob("runs/*/real_photos/choice-*.json"))
    assert len(choices) == 2 + 2 * len(plan.shots)
    assert {json.loads(p.read_text())["long_side"] for p in choices} <= set(plan.photo_sizes)
    import dataclasses

    # everything cached: the same numbers, also when two worker processes read the evaluations back
    again, runs2 = RC.real_claims(dataclasses.replace(plan, workers=2), env, progress=False)
    assert runs2.equals(runs)
    RC.save(plan, env, table, runs, 1.0)
    text = (env.parent / "reports" / "claims_real.md").read_text()
    from tcm_kit.data.benchmarks import fingerprint

    assert f"td500/test {fingerprint(env / 'td500' / 'test')}" in text


def test_a_missing_split_is_one_line(tmp_path, capsys):
    (tmp_path / "icdar2015" / "test").mkdir(parents=True)
    assert RC.main(["--data", str(tmp_path), "--profile", "smoke", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "td500/train, td500/test not found" in err and len(err.strip().splitlines()) == 1


def test_the_notebook_runs_the_plan_when_given_data(env, tmp_path):
    import papermill as pm

    from tcm_kit.utils import REPO_ROOT

    RC.real_claims(RC.RealPlan.for_profile("smoke"), env, progress=False)  # trained once (cached across tests)
    out = tmp_path / "07.ipynb"
    pm.execute_notebook(str(REPO_ROOT / "notebooks" / "07_real_claims.ipynb"), str(out),
                        parameters={"profile": "smoke", "data": str(env)}, progress_bar=False, cwd=str(tmp_path))
    import nbformat

    printed = "".join(o.get("text", "") for c in nbformat.read(str(out), as_version=4).cells
                      for o in c.get("outputs", []))
    assert "checks passed" in printed and "no data folder given" not in printed
    assert (env.parent / "reports" / "claims_real.png").exists()
