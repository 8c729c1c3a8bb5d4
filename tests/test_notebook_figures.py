"""Every figure a notebook shows is an image in the executed copy (issue 22, item 15): a bare matplotlib Figure
made without pyplot used to display as the text '<Figure size ... with N Axes>' in JupyterLab and in the copies
that `make reproduce` writes. Executes each numbered notebook once with the smoke profile (papermill)."""

import nbformat
import pytest

from tcm_kit.reproduce import numbered_notebooks, run_notebooks


def figure_outputs_without_image(nb) -> list[str]:
    """'cell N' for every output whose text is a Figure's repr and which carries no image/png."""
    bad = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if str(data.get("text/plain", "")).startswith("<Figure size") and "image/png" not in data:
                bad.append(f"cell {i}")
    return bad


def test_the_check_sees_a_figure_shown_as_text():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
        "execute_result", data={"text/plain": "<Figure size 640x480 with 1 Axes>"}, execution_count=1)])])
    assert figure_outputs_without_image(nb) == ["cell 0"]


@pytest.mark.parametrize("notebook", numbered_notebooks(), ids=lambda p: p.stem)
def test_every_figure_cell_has_an_image(notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("TCM_KIT_REPORTS", str(tmp_path / "reports"))
    monkeypatch.setenv("TCM_KIT_PROFILE", "smoke")
    [executed] = run_notebooks("smoke", notebooks=[notebook], out_dir=tmp_path, progress=False, readme=False)
    nb = nbformat.read(executed, as_version=4)
    assert figure_outputs_without_image(nb) == []
