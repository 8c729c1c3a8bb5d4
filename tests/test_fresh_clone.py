"""The fresh-clone timer (benchmarks/fresh_clone.py) on a tiny git repository with a Makefile: sittings are
logged, a killed one is closed at its heartbeat, the sum adds the parts, and a finished timing is not rerun."""
import json
import subprocess
import time

import pytest

from benchmarks import fresh_clone


@pytest.fixture
def source(tmp_path):
    repo = tmp_path / "src"
    repo.mkdir()
    # `make work` fails until a file `ok` exists beside the clone's parent; each call counts itself in `calls`
    (repo / "Makefile").write_text("work:\n\techo run >> calls\n\ttest -e ../ok\n")
    for cmd in (["init", "-q"], ["add", "Makefile"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tiny"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    return repo


def test_sittings_resume_after_a_failure_and_a_kill_and_sum_the_parts(tmp_path, source):
    work = tmp_path / "timing"
    assert fresh_clone.sit(work, ["work"], source=source) != 0  # first sitting: make fails
    assert fresh_clone.summary(fresh_clone.read_events(work)).endswith("h, not finished")
    events = fresh_clone.read_events(work)
    assert [e["event"] for e in events] == ["start", "end"] and events[1]["rc"] != 0
    assert events[0]["make"] == ["work"] and len(events[0]["commit"]) == 40 and "bf16_flags" in events[0]
    # a sitting killed 100 s after it started, its heartbeat 90 s in (as a session's end leaves it)
    t = time.time() - 1000
    with open(work / "sittings.jsonl", "a") as f:
        f.write(json.dumps({**events[0], "t": t}) + "\n")
    (work / "heartbeat").write_text(f"{t + 90:.0f}\n")
    (work / "ok").write_text("")
    assert fresh_clone.sit(work, ["work"], source=source) == 0
    events = fresh_clone.read_events(work)
    assert [e["event"] for e in events] == ["start", "end", "start", "killed", "start", "end"]
    parts = fresh_clone.sittings(events)
    assert [p["how"] for p in parts] == ["end", "killed", "end"]
    assert parts[1]["seconds"] == pytest.approx(90, abs=1)
    assert (work / "clone" / "calls").read_text().count("run") == 2  # the killed sitting was only logged
    text = fresh_clone.summary(events)
    assert f"sum of 3 sitting(s): {sum(p['seconds'] for p in parts):.0f} s" in text
    assert text.endswith("h, finished")
    # finished: a rerun runs nothing
    assert fresh_clone.sit(work, ["work"], source=source) == 0
    assert (work / "clone" / "calls").read_text().count("run") == 2


def test_a_running_sitting_or_other_make_args_are_refused(tmp_path, source):
    work = tmp_path / "timing"
    assert fresh_clone.sit(work, ["work"], source=source) != 0
    with pytest.raises(SystemExit, match="use a new WORKDIR"):
        fresh_clone.sit(work, ["work", "X=1"], source=source)
    events = fresh_clone.read_events(work)
    with open(work / "sittings.jsonl", "a") as f:  # a sitting whose heartbeat is fresh is still running
        f.write(json.dumps({**events[0], "t": time.time()}) + "\n")
    (work / "heartbeat").write_text(f"{time.time():.0f}\n")
    with pytest.raises(SystemExit, match="a sitting is running"):
        fresh_clone.sit(work, ["work"], source=source)


def test_a_malformed_line_names_its_file_and_line(tmp_path):
    (tmp_path / "sittings.jsonl").write_text('{"event": "start"}\nnot json\n')
    with pytest.raises(SystemExit, match=r"sittings.jsonl:2: not a JSON line"):
        fresh_clone.read_events(tmp_path)
