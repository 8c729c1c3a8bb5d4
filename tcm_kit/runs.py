"""The run cache and scheduler: every run of notebooks 02-05 trained once, on disk by config hash.

A run is one `TrainConfig`, trained by `tcm_kit.train.train` into runs_dir()/<run_hash>/. A finished run (its
result.json written for this config: `cached_result`) is read back, an unfinished one resumes, so re-running a
notebook (or another notebook asking for the same config: the full-data TCM run is shared by 02-05) costs nothing
for runs already done. `run_many` trains a list of configs (side by side in `plan.workers` processes);
`cross_evaluate` tests a finished run on other domains' test splits, cached beside the run.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from . import train as T
from .detector import head_family
from .experiments import METRICS, Plan, notebook_configs
from .train import TrainConfig
from .utils import atomic_write_text, config_hash, data_dir


def runs_dir() -> Path:
    """Where finished and unfinished runs live: $TCM_KIT_RUNS, else data_dir()/runs."""
    return Path(os.environ["TCM_KIT_RUNS"]) if os.environ.get("TCM_KIT_RUNS") else data_dir() / "runs"


def run_dir(cfg: TrainConfig) -> Path:
    """runs_dir()/<run_hash>, or the folder of cfg's run filed under its key with paths (run_hash's located)
    where only that one exists."""
    path = runs_dir() / T.run_hash(cfg)
    if not path.exists():
        located = runs_dir() / T.run_hash(cfg, located=True)
        if located.exists():
            return located
    return path


def cached_result(cfg: TrainConfig, out: Path | str | None = None) -> dict | None:
    """The result dict of `cfg`'s finished run in `out` (default run_dir(cfg)): its result.json when that was
    written for this config (its config_hash is cfg's run_hash), else None (no result.json, or another config's)."""
    done = Path(run_dir(cfg) if out is None else out) / "result.json"
    if not done.exists():
        return None
    result = json.loads(done.read_text())
    return result if T.is_run_of(cfg, result.get("config_hash")) else None


def run_one(cfg: TrainConfig, progress: bool = False) -> dict:
    """Train (or resume, or read back) one run in runs_dir()/<run_hash>/ -> its result dict + run_dir."""
    out = run_dir(cfg)
    result = cached_result(cfg, out)
    if result is None:
        result = T.train(cfg, out, progress=progress)
    return {**result, "run_dir": str(out)}


def result_metrics(result: dict) -> dict:
    """The P/R/hmean of a result dict, as floats."""
    return {k: float(result[k]) for k in METRICS}


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch.set_num_threads(n) inside the block, the old count after it (None: unchanged)."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _prepare_shared(configs: Sequence[TrainConfig]) -> None:
    """Make what runs share before they start side by side: the synthetic splits and the embedded CLIP."""
    from .clip import load_clip

    for cfg in {(c.domain, c.data, c.data_root): c for c in configs}.values():
        for split in ("train", "val", "test"):
            T.split_dir(cfg, split, progress=False)
    for weights in {c.clip_weights for c in configs}:
        load_clip(weights)


def _run_in_worker(job) -> dict:
    cfg, threads = job
    import torch

    torch.set_num_threads(threads or 1)
    return run_one(cfg)


# training time of a head's step relative to DBNet's at equal batch and crop (benchmarks.train_speed's `x dbnet`,
# reports/benchmarks.md): PAN's is the slowest, FCENet's the fastest; TCM adds its text side
_HEAD_COST = {"dbnet": 1.0, "pan": 1.5, "fcenet": 0.9}


def _expected_cost(cfg: TrainConfig) -> float:
    """A run's training cost in relative units, to start the longest runs first."""
    family, is_tcm, _ = head_family(cfg.detector)
    return (cfg.optim.steps * cfg.optim.batch_size * cfg.aug.train_size ** 2 * _HEAD_COST.get(family, 1.0)
            * (1.15 if is_tcm else 1.0))


def run_many(plan: Plan, configs: Sequence[TrainConfig], desc: str, progress: bool = True) -> list[dict]:
    """run_one over configs with one tqdm bar; a config repeated in the list is run once. With plan.workers > 1
    the runs not yet finished train in that many spawned processes (results are identical: each run is
    deterministic by its config whatever process trains it)."""
    unique = list({T.run_hash(c): c for c in configs}.items())
    results: dict[str, dict] = {}
    todo = []
    for h, cfg in unique:
        done = cached_result(cfg)
        if done is not None:
            results[h] = {**done, "run_dir": str(run_dir(cfg))}  # read back, as run_one does
        else:
            todo.append((h, cfg))
    bar = tqdm(total=len(unique), initial=len(results), desc=f"{desc} [{plan.profile}]", unit="run",
               disable=not progress)
    if plan.workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        _prepare_shared([c for _, c in todo])
        todo.sort(key=lambda hc: -_expected_cost(hc[1]))  # longest first: the pool's last runs are short ones
        with mp.get_context("spawn").Pool(min(plan.workers, len(todo))) as pool:
            jobs = pool.imap(_run_in_worker, [(cfg, plan.threads) for _, cfg in todo])
            for (h, cfg), r in zip(todo, jobs):
                results[h] = r
                bar.set_postfix_str(f"{cfg.detector} {cfg.domain} shot={cfg.shot} seed={cfg.seed}")
                bar.update(1)
    else:
        with torch_threads(plan.threads):
            for h, cfg in todo:
                bar.set_postfix_str(f"{cfg.detector} {cfg.domain} shot={cfg.shot} seed={cfg.seed}")
                results[h] = run_one(cfg)
                bar.update(1)
    bar.close()
    return [results[T.run_hash(c)] for c in configs]


def train_plan(plan: Plan, seed: int = 0, progress: bool = True) -> list[dict]:
    """Every distinct run of notebooks 02-06 (experiments.notebook_configs) in one run_many pool, longest first,
    so the notebooks then read their runs back. One pool instead of one per notebook: a pool's workers idle
    while its last run finishes, once here instead of once per notebook. A notebook whose runs need data
    that is not given (the full profile's real domains) is left to train its own."""
    configs = [c for cfgs in notebook_configs(plan, seed, available_only=True).values() for c in cfgs]
    return run_many(plan, configs, "the Plan's runs", progress=progress)


# ------------------------------------------------------------------------------------------ cross-domain tests

def _test_key(cfg: TrainConfig) -> str:
    """Identity of a test split (independent of where data_dir() is)."""
    scale = T.text_scale(cfg)
    split = {"domain": cfg.domain, "data_root": cfg.data_root, "num_test": cfg.data.num_test,
             "image_size": cfg.data.image_size, **({"text_scale": scale} if scale != 1.0 else {}),
             "test_size": cfg.evaluation.test_size}
    return f"{cfg.domain}-{config_hash(split)}"


def cross_evaluate(result: dict, cfg: TrainConfig, targets: Sequence[TrainConfig]) -> list[dict]:
    """P/R/hmean of a finished run on each target's test split (threshold from the run's own val split), its
    images resized to the target's evaluation.test_size (a real domain's may differ from the run's own).

    Cached in <run_dir>/transfer/<test key>.json; the model is loaded only when something is missing.
    """
    out_dir = Path(result["run_dir"]) / "transfer"
    metrics, todo = {}, []
    for t in targets:
        if _test_key(t) == _test_key(cfg):
            metrics[_test_key(t)] = {**result_metrics(result), "per_image": result.get("per_image")}  # its own
            continue
        path = out_dir / f"{_test_key(t)}.json"
        if path.exists():
            metrics[_test_key(t)] = json.loads(path.read_text())
        else:
            todo.append((t, path))
    if todo:
        model, run_cfg, _ = T.load_run(result["run_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        for t, path in todo:
            m = T.evaluate_run(model, run_cfg, progress=False, test_root=T.split_dir(t, "test", progress=False),
                               box_thresh=result.get("box_thresh"), size=t.evaluation.test_size,
                               test_format=t.data_format)
            m = {**result_metrics(m), "box_thresh": m.get("box_thresh"), "n_test": m.get("n_test"),
                 "per_image": m.get("per_image")}
            atomic_write_text(path, json.dumps(m, indent=1))
            metrics[_test_key(t)] = m
    return [metrics[_test_key(t)] for t in targets]
