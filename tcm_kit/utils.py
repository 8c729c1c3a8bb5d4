"""Small shared helpers: config hashing, seeding, paths, provenance."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def config_hash(cfg) -> str:
    """12 hex chars identifying a (frozen dataclass) config: the sha1 of its fields as sorted JSON."""
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    import torch

    torch.manual_seed(seed)


def data_dir() -> Path:
    """Where generated data and cached checkpoints live: $TCM_KIT_DATA or <repo>/data."""
    p = Path(os.environ.get("TCM_KIT_DATA", REPO_ROOT / "data"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def git_commit() -> str:
    """The short commit hash of the checkout (with '+dirty' when code has uncommitted changes), or 'unknown'.

    Changes under reports/ do not count: a reproduction rewrites them while it runs."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)reports"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says: recorded by every run."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def atomic_write_text(path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it and one rename, so a reader (or a run killed
    mid-write) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cached_json(path, make):
    """The JSON value kept in `path`, else make() written there (atomic_write_text) and returned: a measurement
    done once and read back on the next call."""
    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    atomic_write_text(path, json.dumps(value, indent=1))
    return value


def file_sha256(path) -> str:
    """The sha256 of a file's content, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
