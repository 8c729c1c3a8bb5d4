"""reports/: tables and figures carry their provenance, the index lists them."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import pytest  # noqa: E402

from tcm_kit.report import README_END, README_START, Stamp, save_figure, save_table, update_readme  # noqa: E402


def test_table_and_figure_are_stamped_and_indexed(tmp_path, monkeypatch):
    monkeypatch.setenv("TCM_KIT_REPORTS", str(tmp_path))
    df = pd.DataFrame({"detector": ["dbnet", "tcm-dbnet"], "hmean": [0.5, 0.625]})
    stamp = Stamp(profile="smoke", seeds=(0, 1), wall_seconds=12.3, commit="abc123", precision="fp32")
    paper = pd.DataFrame({"detector": ["tcm-dbnet"], "hmean": [0.888]})
    md = save_table(df, "main_table", "Main table", stamp, paper=paper)
    text = md.read_text()
    assert "profile `smoke`, precision fp32, seeds 0,1, commit `abc123`" in text
    assert "| tcm-dbnet | 0.625 |" in text
    assert "The paper's figures" in text and "0.888" in text
    assert pd.read_csv(tmp_path / "main_table.csv")["hmean"].tolist() == [0.5, 0.625]
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = save_figure(fig, "curve", "A curve", stamp)
    assert png.read_bytes()[:4] == b"\x89PNG"
    index = (tmp_path / "README.md").read_text()
    assert "[main_table.md](main_table.md)" in index and "[curve.png](curve.png)" in index
    assert index.count("commit `abc123`") == 2


def test_readme_results_block_is_filled_from_reports_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TCM_KIT_REPORTS", str(tmp_path / "reports"))
    stamp = Stamp(profile="cpu", seeds=(0,), wall_seconds=5, commit="abc123")
    paper = pd.DataFrame({"detector": ["tcm-dbnet"], "hmean": [0.888]})
    save_table(pd.DataFrame({"detector": ["dbnet"], "hmean": [0.25]}), "main_table", "Main", stamp, paper=paper)
    field = pd.DataFrame({"detector": ["EAST"], "F": [57.9]})
    save_table(pd.DataFrame({"detector": ["ours"], "hmean": [0.5]}), "real", "Real", stamp, paper=field,
               paper_heading="## Figures reported by others")
    fig, ax = plt.subplots()
    save_figure(fig, "few_shot_curve", "Curve", stamp)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nstale\n{README_END}\noutro\n")
    assert update_readme(readme, names=("main_table", "real", "few_shot_curve", "missing")) == [
        "main_table", "real", "few_shot_curve"]
    assert "## Figures reported by others" in (tmp_path / "reports" / "real.md").read_text()
    text = readme.read_text()
    assert "| ours | 0.500 |" in text and "57.9" not in text and "reported by others" not in text
    assert text.startswith("intro\n") and text.endswith(f"{README_END}\noutro\n") and "stale" not in text
    assert "| dbnet | 0.250 |" in text and "commit `abc123`" in text and "0.888" not in text  # ours only
    assert "(reports/few_shot_curve.png)" in text and "(reports/main_table.md)" in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="results"):
        update_readme(readme)
