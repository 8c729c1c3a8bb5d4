"""reports/: tables and figures carry their provenance, the index lists them."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from tcm_kit.report import Stamp, save_figure, save_table  # noqa: E402


def test_table_and_figure_are_stamped_and_indexed(tmp_path, monkeypatch):
    monkeypatch.setenv("TCM_KIT_REPORTS", str(tmp_path))
    df = pd.DataFrame({"detector": ["dbnet", "tcm-dbnet"], "hmean": [0.5, 0.625]})
    stamp = Stamp(profile="smoke", seeds=(0, 1), wall_seconds=12.3, commit="abc123")
    paper = pd.DataFrame({"detector": ["tcm-dbnet"], "hmean": [0.888]})
    md = save_table(df, "main_table", "Main table", stamp, paper=paper)
    text = md.read_text()
    assert "profile `smoke`, seeds 0,1, commit `abc123`" in text
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
