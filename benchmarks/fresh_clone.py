"""Time a `make` target from a fresh clone, in sittings that resume after a kill (standard library only: it runs
before the clone's .venv exists).

    python3 -m benchmarks.fresh_clone WORKDIR [--commit REV] -- reproduce DATA=/path/to/datasets
    python3 -m benchmarks.fresh_clone WORKDIR --sum

The first sitting clones this repository at REV (default HEAD) into WORKDIR/clone; each sitting then runs
`make ARGS` there. Run the same command again after a kill (a session's end, a reboot): the killed sitting is
closed at its last heartbeat and the next one starts; `make reproduce` itself resumes from the runs kept in the
clone's data/runs. WORKDIR holds:

    clone/            the fresh clone (its own .venv, data/runs, reports/)
    sittings.jsonl    one event a line: start (time, commit, CPU, make args), end (time, exit code), killed
    heartbeat         epoch seconds, rewritten every 30 s while make runs: where a killed sitting ended
    make-<start>.log  each sitting's output

`--sum` prints each sitting and their sum: the time the README quotes, with the CPU each part ran on.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HEARTBEAT_S = 30
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # the flags tcm_kit.precision reads for native bf16


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def cpu(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name and whether its flags name a bf16 instruction set (as tcm_kit.precision reads them)."""
    name, flags = "unknown", set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and name == "unknown":
                    name = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu": name, "bf16_flags": any(f in flags for f in _BF16_FLAGS)}


def read_events(workdir: Path) -> list[dict]:
    path = workdir / "sittings.jsonl"
    if not path.exists():
        return []
    events = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not a JSON line ({e.msg})") from None
    return events


def _append(workdir: Path, event: dict) -> None:
    with open(workdir / "sittings.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n")


def sittings(events: list[dict]) -> list[dict]:
    """Pair each start with its end or kill -> [{start, stop, seconds, how, cpu, bf16_flags, rc}]; a start with
    neither (a sitting still running, or killed and not yet closed) is left out."""
    out, open_ = [], None
    for e in events:
        if e["event"] == "start":
            open_ = e
        elif e["event"] in ("end", "killed") and open_ is not None:
            out.append({"start": open_["t"], "stop": e["t"], "seconds": e["t"] - open_["t"], "how": e["event"],
                        "cpu": open_["cpu"], "bf16_flags": open_["bf16_flags"], "rc": e.get("rc")})
            open_ = None
    return out


def summary(events: list[dict]) -> str:
    rows = sittings(events)
    if not rows:
        return "no finished or killed sitting yet"
    lines = [f"{i}. {_utc(r['start'])} -> {_utc(r['stop'])}  {r['seconds']:.0f} s  "
             f"{'exit ' + str(r['rc']) if r['how'] == 'end' else 'killed (last heartbeat)'}  {r['cpu']}"
             f"{', bf16 flags' if r['bf16_flags'] else ', no bf16 flags'}" for i, r in enumerate(rows, 1)]
    total = sum(r["seconds"] for r in rows)
    done = rows[-1]["how"] == "end" and rows[-1]["rc"] == 0
    lines.append(f"sum of {len(rows)} sitting(s): {total:.0f} s = {total / 3600:.2f} h, "
                 f"{'finished' if done else 'not finished'}")
    if len({(r["cpu"], r["bf16_flags"]) for r in rows}) > 1:
        lines.append("the sittings ran on different CPUs: the sum is no one machine's time")
    return "\n".join(lines)


def _beat(path: Path, stop: threading.Event) -> None:
    while True:
        path.write_text(f"{time.time():.0f}\n")
        if stop.wait(HEARTBEAT_S):
            return


def sit(workdir: Path, make_args: list[str], commit: str | None = None, source: Path | None = None) -> int:
    """One sitting: close a killed one, clone on the first, run `make make_args` in the clone, log its end."""
    workdir.mkdir(parents=True, exist_ok=True)
    clone = workdir / "clone"
    events = read_events(workdir)
    if events and events[-1]["event"] == "start":  # the last sitting never logged its end: killed, or running
        beat = workdir / "heartbeat"
        t = float(beat.read_text()) if beat.exists() else events[-1]["t"]
        if time.time() - t < 2 * HEARTBEAT_S:
            raise SystemExit(f"{workdir}: a sitting is running (heartbeat {time.time() - t:.0f} s ago)")
        t = max(t, events[-1]["t"])  # a heartbeat older than the start is an earlier sitting's
        killed = {"event": "killed", "t": t, "utc": _utc(t)}
        _append(workdir, killed)
        events.append(killed)
    if not clone.exists():
        source = source or Path(__file__).resolve().parents[1]
        subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit or "HEAD"], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    first = next((e for e in events if e["event"] == "start"), None)
    if first is not None and (first["commit"] != head or first["make"] != make_args):
        raise SystemExit(f"{workdir}: its first sitting timed `make {' '.join(first['make'])}` at "
                         f"{first['commit'][:12]}; this one asks `make {' '.join(make_args)}` at {head[:12]}: "
                         "use a new WORKDIR")
    if any(s["how"] == "end" and s["rc"] == 0 for s in sittings(events)):
        print(f"{workdir}: the timed run has finished already\n{summary(events)}")
        return 0
    t0 = time.time()
    _append(workdir, {"event": "start", "t": t0, "utc": _utc(t0), "commit": head, "make": make_args, **cpu()})
    stop = threading.Event()
    beater = threading.Thread(target=_beat, args=(workdir / "heartbeat", stop), daemon=True)
    beater.start()
    with open(workdir / f"make-{t0:.0f}.log", "w") as log:
        rc = subprocess.run(["make", *make_args], cwd=clone, stdout=log, stderr=subprocess.STDOUT).returncode
    stop.set()
    beater.join()
    t1 = time.time()
    _append(workdir, {"event": "end", "t": t1, "utc": _utc(t1), "rc": rc})
    print(summary(read_events(workdir)))
    return rc


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    make_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.fresh_clone", description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--commit", default=None, help="the revision to clone (default: HEAD of this repository)")
    ap.add_argument("--sum", action="store_true", help="print the sittings and their sum, run nothing")
    args = ap.parse_args(own)
    if args.sum:
        print(summary(read_events(args.workdir)))
        return 0
    if not make_args:
        ap.error("give the make arguments after --, e.g. -- reproduce DATA=/path/to/datasets")
    return sit(args.workdir, make_args, args.commit)


if __name__ == "__main__":
    sys.exit(main())
