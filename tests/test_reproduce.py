"""The papermill runner: parameters reach the notebook, failures name the notebook and cell."""
import nbformat
import pytest

from tcm_kit.cli import build_parser
from tcm_kit.reproduce import NotebookFailed, numbered_notebooks, run_notebooks


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_parameters_reach_the_notebook(tmp_path):
    nb = _notebook(tmp_path / "00_x.ipynb", 'open("seen.txt", "w").write(profile)')
    out = run_notebooks("smoke", notebooks=[nb], out_dir=tmp_path / "out", progress=False)
    assert out == [tmp_path / "out" / "00_x.ipynb"]
    assert (tmp_path / "seen.txt").read_text() == "smoke"


def test_failure_names_notebook_and_error(tmp_path):
    good = _notebook(tmp_path / "00_ok.ipynb", "x = 1")
    bad = _notebook(tmp_path / "01_bad.ipynb", 'raise RuntimeError("boom here")')
    with pytest.raises(NotebookFailed, match=r"01_bad.ipynb: cell \d+ failed: RuntimeError: boom here"):
        run_notebooks("smoke", notebooks=[good, bad], out_dir=tmp_path / "out", progress=False)


def test_unknown_profile_refused(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        run_notebooks("huge", notebooks=[], out_dir=tmp_path)


def test_numbered_notebooks_order(tmp_path):
    for name in ["03_c.ipynb", "00_a.ipynb", "scratch.ipynb", "01_b.ipynb"]:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in numbered_notebooks(tmp_path)] == ["00_a.ipynb", "01_b.ipynb", "03_c.ipynb"]


def test_cli_reproduce_runs_the_notebooks_of_its_profile(monkeypatch):
    import tcm_kit.reproduce as R
    from tcm_kit.cli import main

    calls = []
    monkeypatch.setattr(R, "run_notebooks", lambda **kw: calls.append(kw) or [])
    assert main(["reproduce", "--profile", "smoke", "--quiet"]) == 0
    assert calls == [{"profile": "smoke", "progress": False, "data": None}]
    assert main(["reproduce", "--profile", "smoke", "--quiet", "--data", "/some/where"]) == 0
    assert calls[-1]["data"] == "/some/where"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "--profile", "huge"])


def test_the_whole_reproduction_trains_the_plan_in_one_pool_before_the_notebooks(tmp_path, monkeypatch):
    import tcm_kit.reproduce as R
    import tcm_kit.runs as runs

    order = []
    nbs = [_notebook(tmp_path / "00_a.ipynb", 'open("ran.txt", "a").write("a")'),
           _notebook(tmp_path / "01_b.ipynb", 'open("ran.txt", "a").write("b")')]
    monkeypatch.setattr(R, "numbered_notebooks", lambda folder=None: list(nbs))
    monkeypatch.setattr(runs, "train_plan", lambda plan, progress=True: order.append(("plan", plan.profile)))
    run_notebooks("smoke", out_dir=tmp_path / "out", progress=False, readme=False)
    assert order == [("plan", "smoke")] and (tmp_path / "ran.txt").read_text() == "ab"
    # a chosen notebook, or parameters beyond the profile (another Plan): the notebooks train their own runs
    run_notebooks("smoke", notebooks=nbs[:1], out_dir=tmp_path / "out", progress=False, readme=False)
    run_notebooks("smoke", out_dir=tmp_path / "out", parameters={"seed": 1}, progress=False, readme=False)
    assert order == [("plan", "smoke")]


def test_train_plan_trains_every_distinct_run_of_the_notebooks(monkeypatch):
    import tcm_kit.runs as runs
    from tcm_kit import experiments as ex
    from tcm_kit.train import run_hash

    seen = []
    monkeypatch.setattr(runs, "run_many", lambda plan, configs, desc, progress=True: seen.append(configs) or [])
    plan = ex.Plan.for_profile("smoke")
    runs.train_plan(plan, progress=False)
    wanted = {run_hash(c) for cfgs in ex.notebook_configs(plan).values() for c in cfgs}
    assert {run_hash(c) for c in seen[0]} == wanted and len(wanted) > 5
    runs.train_plan(ex.Plan.for_profile("full"), progress=False)  # no real data given: what can run, no error
    with pytest.raises(ex.ExperimentError):
        ex.notebook_configs(ex.Plan.for_profile("full"))


def test_real_data_reaches_the_notebooks_that_take_it_and_absent_benchmarks_are_named(tmp_path, capsys):
    takes = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"\ndata = None')
    params.metadata["tags"] = ["parameters"]
    takes.cells = [params, nbformat.v4.new_code_cell('open("data.txt", "w").write(str(data))')]
    takes.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(takes, tmp_path / "00_takes.ipynb")
    plain = _notebook(tmp_path / "01_plain.ipynb", 'open("plain.txt", "w").write(str("data" in globals()))')
    data = tmp_path / "datasets"
    (data / "td500" / "test").mkdir(parents=True)
    (data / "td500" / "test" / "IMG_1.gt").write_text("")
    run_notebooks("smoke", notebooks=[tmp_path / "00_takes.ipynb", plain], out_dir=tmp_path / "out",
                  progress=False, readme=False, data=data)
    assert (tmp_path / "data.txt").read_text() == str(data.resolve())
    assert (tmp_path / "plain.txt").read_text() == "False"  # not given to a notebook without the parameter
    said = capsys.readouterr()
    said = said.out + said.err
    assert "icdar2015/test: not found" in said and "td500/train: not found" in said and "real data: td500/test" in said
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        run_notebooks("smoke", notebooks=[plain], out_dir=tmp_path / "out", progress=False, data=tmp_path / "nope")
    from tcm_kit.cli import main

    assert main(["reproduce", "--profile", "smoke", "--quiet", "--data", str(tmp_path / "nope")]) == 2  # one line
