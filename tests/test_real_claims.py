"""tcm_kit.real_claims: the real-data claims Plan on tiny benchmark folders the test writes itself (synthetic scenes
laid out as icdar2015/test, td500/train and td500/test): runs paired by seed, thresholds chosen off the test sets,
one claims table, resumable from its caches."""
import dataclasses
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
    sides = {p.name.split("-")[1]: set() for p in choices}
    for p in choices:
        sides[p.name.split("-")[1]].add(json.loads(p.read_text())["long_side"])
    assert sides["td500_train"] <= set(plan.photo_sizes) and sides["val"] <= set(plan.real_photo_sizes)
    import dataclasses

    # everything cached: the same numbers, also when two worker processes read the evaluations back
    again, runs2 = RC.real_claims(dataclasses.replace(plan, workers=2), env, progress=False)
    assert runs2.equals(runs)
    RC.save(plan, env, table, runs, 1.0)
    text = (env.parent / "reports" / "claims_real.md").read_text()
    from tcm_kit.data.benchmarks import fingerprint

    assert f"td500/test {fingerprint(env / 'td500' / 'test')}" in text
    # the cells the Plan leaves out are in the table, with time estimated from the Plan's own runs
    assert RC.LEFT_OUT_HEADING in text and "the ablation ladder's 5 middle rungs" in text
    lo = RC.left_out(plan, runs, 7200.0, "fp32")
    assert list(lo["claim"]) == ["i", "iv"] and list(lo["runs"]) == [8 * len(plan.seeds), 10 * len(plan.seeds)]
    used = runs[runs["trained on"].isin(["synth-ic15", "td500 x1"])].drop_duplicates("run")
    t = used.groupby("detector")["train_seconds"].sum() / len(plan.seeds)  # one seed's synthetic run + fine-tuning
    assert lo["training (h)"].tolist() == pytest.approx([2 * (t["dbnet"] + t["tcm-dbnet"]) / 3600,
                                                         5 * t["tcm-dbnet"] / 3600])
    assert all("own 2.0 h, against a budget of 8 h in fp32" in w for w in lo["why"])


def test_a_missing_split_is_one_line_and_logs_no_part(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TCM_KIT_RUNS", str(tmp_path / "runs"))
    (tmp_path / "icdar2015" / "test").mkdir(parents=True)
    assert RC.main(["--data", str(tmp_path), "--profile", "smoke", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "td500/train, td500/test not found" in err and len(err.strip().splitlines()) == 1
    assert RC.PartLog(RC.RealPlan.for_profile("smoke")).parts() == {}


@pytest.mark.parametrize("notebook, made", [
    ("07_real_claims.ipynb", ("claims_real.png", "claims_real.md", "claims_real_plateau.md",
                              "claims_real_curves_synth.png", "claims_real_curves_td500.png")),
    ("03_few_shot_curves.ipynb", ("few_shot_real.md", "few_shot_real_curve.png")),
    ("04_cross_dataset_transfer.ipynb", ("transfer_real.md", "transfer_real_heatmap.png")),
])
def test_the_notebooks_show_the_real_rows_when_given_data(env, tmp_path, notebook, made):
    import papermill as pm

    from tcm_kit.utils import REPO_ROOT

    RC.real_claims(RC.RealPlan.for_profile("smoke"), env, progress=False)  # trained once (cached across tests)
    for name in made:
        (env.parent / "reports" / name).unlink(missing_ok=True)
    out = tmp_path / notebook
    pm.execute_notebook(str(REPO_ROOT / "notebooks" / notebook), str(out),
                        parameters={"profile": "smoke", "data": str(env)}, progress_bar=False, cwd=str(tmp_path))
    import nbformat

    printed = "".join(o.get("text", "") for c in nbformat.read(str(out), as_version=4).cells
                      for o in c.get("outputs", []))
    assert "checks passed" in printed and "no data folder given" not in printed
    assert all((env.parent / "reports" / name).exists() for name in made)


def test_the_part_log_sums_sittings_and_counts_a_killed_part_to_its_last_heartbeat(env):
    plan = RC.RealPlan.for_profile("smoke")
    log = RC.PartLog(plan, every=0.05)
    log.path.unlink(missing_ok=True)
    import time

    with log:
        time.sleep(0.2)
    first = log.total()
    assert 0.2 <= first < 5
    # a part killed without warning: its heartbeat stops, and only the time up to it counts
    killed = RC.PartLog(plan, every=0.05).__enter__()
    time.sleep(0.2)
    killed._stop.set()
    time.sleep(0.3)
    parts = log.parts()
    assert list(parts) == ["0", "1"] and parts["1"]["workers"] == plan.workers
    assert first + 0.1 <= log.total() <= first + 0.35
    # another plan has a log of its own; how many workers run it does not make it another plan
    assert RC.PartLog(dataclasses.replace(plan, workers=2)).path == log.path
    other = RC.PartLog(dataclasses.replace(plan, real_steps=plan.real_steps + 1))
    assert other.path != log.path and other.total() == 0


def test_peers_are_detected_or_read_back_on_the_same_photos_and_a_missing_one_is_a_note(env, monkeypatch):
    import types

    from tcm_kit.utils import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from benchmarks import real_photos as rp
    from benchmarks.peers import Contender

    calls = []

    def contender(name):  # a peer that finds one fixed box in every photo
        def detect(image):
            calls.append(name)
            return [([0, 0, 20, 0, 20, 10, 0, 10], 0.9)]
        return Contender(name, f"fake {name}", detect, lambda hw: hw)

    fake = types.SimpleNamespace(peer_contenders=lambda names, threads: [contender(n) for n in names])
    monkeypatch.setattr(RC, "_benchmarks", lambda: (fake, rp))
    rows, notes = RC.peer_runs(env, peers=("now", "later"), run_now=("now",), progress=False)
    assert {(r["detector"], r["tested on"]) for r in rows} == {("now", "icdar2015/test"), ("now", "td500/test")}
    assert len(calls) == 3 + 3 and all(0 <= r["hmean"] <= 1 for r in rows)
    assert len(notes) == 2 and all(n.startswith("later on ") and "0/3 photos" in n for n in notes)
    again, _ = RC.peer_runs(env, peers=("now",), run_now=("now",), progress=False)
    assert len(calls) == 6 and [r["hmean"] for r in again] == [r["hmean"] for r in rows]  # read back, not re-run

    def missing():
        raise ModuleNotFoundError("no module", name="rapidocr")

    # the bench extra's packages present but a peer's own package or weights missing (benchmarks.peer_models
    # raises PeerUnavailableError): that peer is a note and the others still run
    from benchmarks.peer_models import PeerUnavailableError

    def some(names, threads):
        if names == ["gone"]:
            raise PeerUnavailableError("gone is not installed; pip install 'tcm-kit[bench]'")
        return [contender(n) for n in names]

    monkeypatch.setattr(RC, "_benchmarks", lambda: (types.SimpleNamespace(peer_contenders=some), rp))
    rows, notes = RC.peer_runs(env, peers=("gone", "now"), run_now=("now",), progress=False)
    assert [r["detector"] for r in rows] == ["now", "now"] and len(calls) == 6  # read back
    assert notes == ["gone left out: gone is not installed; pip install 'tcm-kit[bench]'"]

    monkeypatch.setattr(RC, "_benchmarks", missing)
    assert RC.peer_runs(env, progress=False) == ([], ["peers left out: rapidocr is not installed "
                                                      "(`pip install -e '.[bench]'` brings them)"])


def test_the_few_shot_curve_and_the_transfer_matrix_on_real_photos_come_from_the_plans_runs(env):
    plan = RC.RealPlan.for_profile("smoke")
    _, runs = RC.real_claims(plan, env, progress=False)  # cached by the test above
    curve = RC.few_shot_real(runs)
    assert sorted(set(curve["shot"])) == [0.0, *plan.shots] and set(curve["detector"]) == set(plan.detectors)
    td = runs[(runs["tested on"] == "td500/test") & (runs["trained on"] == "td500 x0.5")]
    got = curve[(curve["shot"] == 0.5)].set_index("detector")["hmean_mean"]
    assert got.to_dict() == pytest.approx(td.groupby("detector")["hmean"].mean().to_dict())
    long = RC.transfer_real(runs)
    assert set(long["train_domain"]) == {"synth-ic15", "td500 x1"}  # the td500 x0.5 runs meet one benchmark only
    assert len(long) == 2 * 2 * 2 and long["in_domain"].sum() == 2
    from tcm_kit import plots

    fig = plots.plot_transfer_heatmap(long)
    assert len(fig.axes) >= 3  # dbnet, tcm-dbnet, and their difference


def test_the_learning_curves_are_the_runs_val_curves_one_line_per_kind_of_run(env):
    plan = RC.RealPlan.for_profile("smoke")
    RC.real_claims(plan, env, progress=False)  # cached by the tests above
    curves = RC.learning_curves(plan, env)
    kinds = {f"{d} · {t}" for d in plan.detectors for t in ("synth-ic15", "td500 x0.5", "td500 x1")}
    assert set(curves["detector"]) == kinds and set(curves["seed"]) == set(plan.seeds)
    from tcm_kit.runs import run_dir
    from tcm_kit.train import read_val_curve

    mine = read_val_curve(run_dir(RC.td500_config(plan, "dbnet", 0, 0.5, env)))
    got = curves[curves["detector"] == "dbnet · td500 x0.5"]
    assert list(got["step"]) == [p["step"] for p in mine] and list(got["hmean"]) == [p["hmean"] for p in mine]
    from tcm_kit.tables import plateau_table

    assert set(plateau_table(curves)["detector"]) == kinds
