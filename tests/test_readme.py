"""The README's Python example runs as written and returns detections per image; its layout keeps the results
block near the top and exactly the two set-up commands."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(text: str, heading: str) -> str:
    """The text under the `## heading` line, up to the next `## ` heading."""
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if m is None:
        pytest.fail(f"README.md has no '## {heading}' section")
    return m.group(1)


def _python_example(text: str) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", _section(text, "Python example"), flags=re.M | re.S)
    if not blocks:
        pytest.fail("the README's 'Python example' section has no ```python block")
    return blocks[0]


def test_readme_python_example_runs_and_returns_detections_per_image(capsys):
    code = _python_example(README.read_text())
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md:Python example", "exec"), namespace)
    detections, x = namespace.get("detections"), namespace.get("x")
    assert isinstance(detections, list), f"the example's `detections` is {type(detections).__name__}, not a list"
    assert len(detections) == x.shape[0] == 1, "one list of detections per input image"
    for per_image in detections:
        assert isinstance(per_image, list)
        for polygon, score in per_image:
            assert polygon.ndim == 2 and polygon.shape[1] == 2 and 0.0 <= float(score) <= 1.0
    assert "text regions" in capsys.readouterr().out


def test_readme_layout_results_near_top_and_two_setup_commands():
    text = README.read_text()
    lines = text.splitlines()
    start = lines.index("<!-- results:start -->")
    assert "<!-- results:end -->" in lines[start:]
    first_heading = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("#### "))
    assert first_heading + 1 < 60, f"the first results table heading is on line {first_heading + 1}"
    setup = re.findall(r"^```bash\n(.*?)^```", _section(text, "Set-up: two commands on a fresh clone"),
                       flags=re.M | re.S)
    commands = [ln.split("#")[0].strip() for ln in setup[0].splitlines() if ln.strip()]
    assert commands == ["make reproduce", "make test"]
