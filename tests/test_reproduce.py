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
    assert calls == [{"profile": "smoke", "progress": False}]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "--profile", "huge"])
