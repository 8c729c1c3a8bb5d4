"""Training and evaluation of a detector: profiles, few-shot subsets, checkpoints + resume, torchrun DDP.

One run = one frozen `TrainConfig`; its output folder holds `config.json`, `last.pt` (model, optimiser,
scheduler, RNG state and step), `log.csv` (loss parts per step) and, when finished, `result.json`. Re-running
the same config into the same folder resumes from `last.pt`; a finished run is not retrained.

Data: a synthetic domain (`synth-*`) is generated on first use under data_dir()/<domain>/ with fixed data seeds
per split (train 0, val 1, test 2), so runs with different training seeds see the same images. A real domain
reads `<data_root>/{train,val,test}`; without val/, a fixed part of train/ (at most num_val images, 20%) is the
validation split and is not trained on (carve_validation). Every split is read before the first step.

Scale-out: the same `train()` runs under `torchrun --nproc_per_node=K -m tcm_kit.cli train ...` with
DistributedDataParallel (gloo on CPU, NCCL on GPU); `batch_size` is per process (the official samples_per_gpu):
a step's global batch is batch_size x K images, of which each rank takes its own batch_size.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .config import TrainConfig, TrainConfigError
from .precision import autocast, default_device, precision_for
from .utils import config_hash, cpu_name, data_dir, git_commit, seed_everything

SYNTH_DATA_SEEDS = {"train": 0, "val": 1, "test": 2}
# config fields that name where something lies, not what it holds: run_hash keys them by their content instead
LOCATION_FIELDS = ("data_root", "init_from")


def run_hash(cfg: TrainConfig, device: str | None = None, precision: str | None = None,
             located: bool = False) -> str:
    """A run's identity (its folder name and cache key): the hash of the whole config, of the CLIP weights it
    starts from (tcm_kit.clip.clip_fingerprint), for a real domain of its data folder's content
    (data_fingerprint), of the detector it fine-tunes from (init_fingerprint), and of the precision it trains in
    (`precision`, else tcm_kit.precision.precision_for `device`, None: the default device) when that is bf16.
    So a new CLIP checkpoint or an edited dataset never reuses a run trained on another, and a bf16 run is never
    read back for fp32 or the other way round: both can sit in one cache. An fp32 run's key has no precision
    field, so it is the key the kit gave before precision could be chosen (the committed reports' runs were
    fp32). The data folder's and the start's paths (LOCATION_FIELDS) are left out, their content being in the
    key: a clone or a dataset moved to another folder keeps its runs. located=True gives the key with those
    paths, as runs were filed before (tcm_kit.runs.run_dir still finds a run under it)."""
    return _key(cfg, _fingerprints(cfg), precision or precision_for(device), located)


def run_keys(cfg: TrainConfig) -> dict[str, str]:
    """{run key: the precision it trains in} for every key a run of cfg may be filed under: fp32 and bf16, each
    with and without the paths (run_hash's located). The fingerprints are worked out once for all four."""
    fps = _fingerprints(cfg)
    return {_key(cfg, fps, p, loc): p for p in ("fp32", "bf16") for loc in (True, False)}


def _fingerprints(cfg: TrainConfig) -> dict:
    """The content hashes a run key holds besides the config: its CLIP weights, data folder and start."""
    from .clip import clip_fingerprint

    fps = {"clip_fingerprint": clip_fingerprint(cfg.clip_weights)}
    if cfg.data_root is not None:
        fps["data_fingerprint"] = data_fingerprint(cfg.data_root)
    if cfg.init_from is not None:
        fps["init_fingerprint"] = init_fingerprint(cfg.init_from)
    return fps


def _key(cfg: TrainConfig, fps: dict, precision: str, located: bool) -> str:
    """run_hash, given _fingerprints(cfg) already worked out."""
    extra = {**fps, "precision": "bf16"} if precision == "bf16" else dict(fps)
    fields = run_fields(cfg)
    if not located:
        for name in LOCATION_FIELDS:
            if fields.get(name) is not None:
                del fields[name]
    return config_hash({**fields, **extra})


def is_run_of(cfg: TrainConfig, key: str | None, device: str | None = None) -> bool:
    """Whether a run key written in a checkpoint or result is cfg's, in the precision this process trains in."""
    return run_keys(cfg).get(key) == precision_for(device)


def run_fields(cfg: TrainConfig) -> dict:
    """The config's fields as a run records them (run_hash, config.json): data_format and init_from only when
    named, so a run that detects its format or starts from the CLIP has the identity it had before those fields."""
    fields = dataclasses.asdict(cfg)
    for key in ("data_format", "init_from"):
        if fields[key] is None:
            del fields[key]
    return fields


def init_fingerprint(spec: str) -> str:
    """The sha256 of a fine-tuning start's weights (see init_weights), without loading them: a released
    detector's recorded one, a run's last.pt hashed once per path, size and mtime."""
    from .clip import _path_fingerprint

    if spec.startswith("zoo:"):
        from .zoo import detector_record

        return "zoo:" + str(detector_record(spec[4:])["sha256"])
    ckpt = Path(spec).expanduser().resolve() / "last.pt"
    if not (ckpt.parent / "result.json").exists() or not ckpt.exists():
        raise CheckpointError(f"{ckpt.parent}: not a finished tcm-kit run (no result.json) to fine-tune from; "
                              "finish it, or give zoo:<name> for a released detector")
    st = ckpt.stat()
    return "run:" + _path_fingerprint(str(ckpt), st.st_size, st.st_mtime_ns)


def init_weights(spec: str) -> tuple[dict, str]:
    """(state dict, detector) of a fine-tuning start: a finished run folder or "zoo:<name>" (a released
    detector, its sha256 checked)."""
    if spec.startswith("zoo:"):
        from .zoo import released_weights

        weights, fields, _ = released_weights(spec[4:])
        return weights, fields["detector"]
    init_fingerprint(spec)  # finished, or said in one line
    ckpt = torch.load(Path(spec) / "last.pt", map_location="cpu", weights_only=False)
    return ckpt["model"], run_config(spec).detector


def data_fingerprint(root) -> str:
    """A content hash of a real dataset folder (tcm_kit.data.benchmarks.fingerprint: every file's relative path and
    sha256), so that an annotation fixed in place gives runs on it a new identity, while a copy of the same files
    (a fresh download, another machine, a folder copied without its times or to another path) keeps it and its
    runs resume. The content is hashed once per process and listing of (path, size, mtime)."""
    root = Path(root).expanduser().resolve()
    listing = tuple(sorted((str(p.relative_to(root)), st.st_size, st.st_mtime_ns)
                           for p in root.rglob("*") if p.is_file() for st in [p.stat()]))
    return _content_fingerprint(str(root), listing)


@functools.lru_cache(maxsize=32)
def _content_fingerprint(root: str, listing: tuple) -> str:
    from .data.benchmarks import fingerprint

    return fingerprint(root)


# ---------------------------------------------------------------------------------------------------- data

def split_dir(cfg: TrainConfig, split: str, progress: bool = True) -> Path:
    """The folder holding a split's images; synthetic splits are generated (once, reused after) on first use.

    A real domain reads <data_root>/<split>; without val/ its validation images are a fixed part of train/
    (carve_validation), so split_dir(cfg, "val") is then the train/ folder: read a split with split_dataset."""
    if cfg.domain.startswith("synth-"):
        from .data.synth import with_text_scale, write_synth_set

        num = {"train": cfg.data.num_train, "val": cfg.data.num_val, "test": cfg.data.num_test}[split]
        scale = text_scale(cfg)
        text = "" if scale == 1.0 else f"-t{scale:g}"
        out = data_dir() / cfg.domain / f"{split}-n{num}-s{cfg.data.image_size}{text}"
        return write_synth_set(with_text_scale(cfg.domain, scale), num=num, size=cfg.data.image_size,
                               seed=SYNTH_DATA_SEEDS[split], out=out, progress=progress)
    if cfg.data_root is None:
        raise TrainConfigError(f"domain {cfg.domain!r} is not synthetic: give data_root (a folder with train/ "
                               f"and test/ sub-folders)")
    if _val_from_train(cfg) and split == "val":
        split = "train"
    root = Path(cfg.data_root) / split
    if not root.is_dir():
        raise TrainConfigError(f"{root} does not exist (domain {cfg.domain!r}, split {split!r}): a real domain "
                               "needs train/ and test/ folders (and val/, else validation images are taken from "
                               "train/)")
    return root


def _val_from_train(cfg: TrainConfig) -> bool:
    """A real domain without a val/ folder: its validation split is carved from train/."""
    return not cfg.domain.startswith("synth-") and cfg.data_root is not None \
        and not (Path(cfg.data_root) / "val").is_dir()


# the seed of the validation carve: the same images whatever the run's seed
VAL_CARVE_SEED = 104_729
VAL_CARVE_MAX_FRACTION = 0.2


def carve_validation(n: int, num_val: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation, training) positions among n training images, for a real domain without val/: the first
    min(num_val, 20% of n) (at least 1) of a fixed-seed permutation validate, the others train. The same images
    every time, never in both; TrainConfigError when n < 2."""
    if n < 2:
        raise TrainConfigError(f"a training split of {n} image(s) is too small to carve a validation split "
                               "from; add a val/ folder")
    k = max(1, min(num_val, int(n * VAL_CARVE_MAX_FRACTION)))
    order = np.random.default_rng(VAL_CARVE_SEED).permutation(n)
    return np.sort(order[:k]), np.sort(order[k:])


def split_dataset(cfg: TrainConfig, split: str, progress: bool = True, **options):
    """The TextDetDataset of a split (options: TextDetDataset's, e.g. size, train, targets): its folder
    (split_dir), where a real domain without val/ has its validation and training splits carved from train/
    (carve_validation)."""
    from .data.transforms import TextDetDataset

    data = TextDetDataset(split_dir(cfg, split, progress), fmt=cfg.data_format, **options)
    if split in ("train", "val") and _val_from_train(cfg):
        val, train = carve_validation(len(data), cfg.data.num_val)
        data = data.subset(val if split == "val" else train)
    return data


def text_scale(cfg: TrainConfig) -> float:
    """The factor on a synthetic preset's text sizes that brings its smallest font to cfg.data.min_text_px pixels on an
    image_size canvas (never below 1; 1 for real domains or min_text_px None), rounded to 2 decimals."""
    if cfg.data.min_text_px is None or not cfg.domain.startswith("synth-"):
        return 1.0
    from .data.synth import with_text_scale

    smallest = with_text_scale(cfg.domain).font_frac[0] * cfg.data.image_size  # the preset (unknown names refused)
    return round(max(1.0, cfg.data.min_text_px / smallest), 2)


def few_shot_indices(n: int, shot: float, seed: int) -> np.ndarray:
    """The first ceil(shot * n) items of a seeded permutation: nested (the 10% subset lies inside the 25%)."""
    if not 0 < shot <= 1:
        raise TrainConfigError(f"shot must be in (0, 1], got {shot}")
    k = max(1, math.ceil(shot * n))
    return np.sort(np.random.default_rng([seed, 7919]).permutation(n)[:k])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: max(1, n // batch_size) batches drawn from seeded permutations."""
    steps = max(1, n // batch_size)
    order, k = [], 0
    while len(order) < steps * batch_size:
        order.extend(np.random.default_rng([seed, epoch, k]).permutation(n).tolist())
        k += 1
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


# ---------------------------------------------------------------------------------------------------- model

def build_model(cfg: TrainConfig, progress: bool = True, clip=None):
    """The detector of the config, on top of a fresh copy of its CLIP (or of `clip`: e.g. a randomly
    initialised architecture for a speed benchmark)."""
    from .clip import load_clip
    from .detector import build_detector

    if clip is None:
        clip, _, _ = load_clip(cfg.clip_weights)
    model = build_detector(cfg.detector, clip, head=cfg.head, tcm=cfg.tcm)
    model.pixel_norm = cfg.pixel_norm
    if cfg.pixel_norm != "clip":
        # the kit's tensors are CLIP-normalised (tcm_kit.data.transforms.to_tensor): the detector converts its
        # input to its own normalisation on entry, so every caller (training, evaluation, predict) feeds the same
        model.register_forward_pre_hook(functools.partial(_renormalize_input, norm=cfg.pixel_norm))
    return model


def _renormalize_input(module, args, norm: str):
    from .data.transforms import renormalize

    return (renormalize(args[0], norm), *args[1:])


def train_augmentation(cfg: TrainConfig):
    """The training transforms of a config (tcm_kit.data.transforms.train_transforms)."""
    from .data.transforms import train_transforms

    a = cfg.aug
    return train_transforms(a.train_size, tuple(a.scale_range), a.max_angle, a.flip_p, pipeline=a.pipeline,
                            color_jitter=tuple(a.color_jitter))


def no_decay_parameters(model, mode: str) -> set[int]:
    """ids of the parameters that get no weight decay (TrainConfig.no_decay): "none" -> none; "norms" -> those of
    every normalisation layer (BatchNorm, LayerNorm, GroupNorm); "official" -> those of the LayerNorms inside the
    TCM decoders' layers (tcm_kit.prompts.DecoderLayer: official TransformerDecoderLayer.norm1-3 of the context
    decoder and the visual prompt generator). mmcv's DefaultOptimizerConstructor gives each parameter the settings
    of the longest custom key in its name and only those: the IC15 config's keys are 'text_encoder', 'backbone'
    and 'norm', so 'norm' (decay_mult 0) reaches no parameter of the backbone (whose BatchNorms are bn1-3 anyway),
    and elsewhere only names with "norm": the decoder layers' norm1-3; the neck and head BatchNorms (DBHead's
    Sequential indices), the other LayerNorms (nn.Sequential indices) and all biases keep the decay."""
    if mode == "none":
        return set()
    if mode == "norms":
        norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
        return {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}
    if mode == "official":
        from .prompts import DecoderLayer

        return {id(p) for layer in model.modules() if isinstance(layer, DecoderLayer) for m in layer.modules()
                if isinstance(m, torch.nn.LayerNorm) for p in m.parameters(recurse=False)}
    raise TrainConfigError(f"no_decay must be none, official or norms, got {mode!r}")


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """The pre-trained image encoder at backbone_lr_mult x lr (authors' code: 0.1), everything else trainable at
    lr; frozen parts (the text encoder) excluded. dbnet-scratch has no prior to preserve: all at lr. With
    cfg.optim.no_decay other than "none" each of the two is split into a group with weight_decay and one without
    (no_decay_parameters)."""
    mult = 1.0 if cfg.detector.endswith("-scratch") else cfg.optim.backbone_lr_mult
    encoder = {id(p) for p in model.backbone.image_encoder().parameters()}
    enc = [p for p in model.parameters() if p.requires_grad and id(p) in encoder]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder]
    free = no_decay_parameters(model, cfg.optim.no_decay)
    if not free:
        return [{"params": enc, "lr": cfg.optim.lr * mult}, {"params": rest, "lr": cfg.optim.lr}]
    groups = []
    for params, lr in ((enc, cfg.optim.lr * mult), (rest, cfg.optim.lr)):
        groups.append({"params": [p for p in params if id(p) not in free], "lr": lr,
                       "weight_decay": cfg.optim.weight_decay})
        groups.append({"params": [p for p in params if id(p) in free], "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def build_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled decay) or Adam (L2 decay in the gradient, the official IC15 optimiser) on param_groups,
    in PyTorch's fused kernel (one call for all parameters; on CPU the per-parameter loop is PyTorch's default)."""
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg.optim.optimizer]
    return cls(param_groups(model, cfg), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, fused=True)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """lr_schedule "warmup-poly": linear warm-up, then poly decay (power 0.9) towards min_lr."""
    if step < cfg.optim.warmup_steps:
        return (step + 1) / cfg.optim.warmup_steps
    t = (step - cfg.optim.warmup_steps) / max(1, cfg.optim.steps - cfg.optim.warmup_steps)
    return max((1 - min(t, 1.0)) ** cfg.optim.poly_power, cfg.optim.min_lr / cfg.optim.lr)


def epoch_poly_lr(step: int, base_lr: float, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """lr_schedule "poly-epoch", mmcv's PolyLrUpdaterHook(by_epoch=True): the learning rate of a group whose
    initial rate is base_lr during step `step`: (base_lr - min_lr) * (1 - epoch / epochs)^power + min_lr, epoch =
    step // steps_per_epoch, epochs = ceil(steps / steps_per_epoch); no warm-up."""
    epochs = math.ceil(cfg.optim.steps / steps_per_epoch)
    coeff = (1 - min(step // steps_per_epoch, epochs) / epochs) ** cfg.optim.poly_power
    return (base_lr - cfg.optim.min_lr) * coeff + cfg.optim.min_lr


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """LambdaLR over the optimiser's groups for cfg.optim.lr_schedule (its lambdas are functions: not in its state)."""
    if cfg.optim.lr_schedule == "warmup-poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))

    def group_factor(base_lr):
        return lambda s: epoch_poly_lr(s, base_lr, cfg, steps_per_epoch) / base_lr if base_lr > 0 else 0.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [group_factor(g["lr"]) for g in optimizer.param_groups])


# ---------------------------------------------------------------------------------------------------- checkpoints

def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, cfg: TrainConfig,
                    device: str | None = None) -> None:
    """Atomic write: a run killed mid-save keeps its previous checkpoint. The checkpoint of the last step holds
    no optimiser or scheduler state (nothing trains on from it), which halves a finished run's folder."""
    tmp = path.with_suffix(".tmp")
    state = {"model": model.state_dict(), "step": step, "rng": _rng_state(), "config_hash": run_hash(cfg, device),
             "precision": precision_for(device)}
    if step < cfg.optim.steps:
        state |= {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    torch.save(state, tmp)
    os.replace(tmp, path)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (corrupt, or written by another config)."""


def load_checkpoint(path: Path, cfg: TrainConfig, device: str | None = None, any_precision: bool = False) -> dict:
    """The checkpoint at `path`, checked to be `cfg`'s in the precision this process trains in on `device`
    (any_precision: in either precision, for evaluation and prediction, which run in fp32 whatever trained)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e}); delete it to restart") from e
    written = run_keys(cfg).get(ck.get("config_hash"))  # the precision it was written in, None: not cfg's
    if any_precision and written is not None:
        return ck
    if written != precision_for(device):
        want = run_hash(cfg, device)
        if written is not None:
            raise CheckpointError(f"{path}: this run trained in {written} and this process trains in "
                                  f"{precision_for(device)}; a run never mixes precisions: set "
                                  f"TCM_KIT_PRECISION={written} to resume it, or use another --out folder")
        raise CheckpointError(f"{path}: written by config {ck.get('config_hash')}, this run is {want}; "
                              f"use another --out folder")
    return ck


def _other_run(out_dir: Path, result: dict, cfg: TrainConfig, device: str) -> str:
    """The message for a finished run in out_dir that is not cfg's in this precision."""
    if result.get("config_hash") in run_keys(cfg):
        return (f"{out_dir} holds this config's finished run in {result.get('amp')}, and this process trains in "
                f"{precision_for(device)}; a run never mixes precisions: set TCM_KIT_PRECISION="
                f"{result.get('amp')} to read it back, or use another out folder")
    return f"{out_dir} holds a finished run of another config; use another out folder"


# ---------------------------------------------------------------------------------------------------- DDP

def _dist_env() -> tuple[int, int]:
    """(rank, world_size), initialising the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


# ---------------------------------------------------------------------------------------------------- train

def train(cfg: TrainConfig, out_dir, progress: bool = True, device: str | None = None) -> dict:
    """Train (or resume, or return the finished result of) one run, then evaluate it on val/test.

    Returns the result dict (also written to out_dir/result.json); under DDP, ranks other than 0 return {}.
    """
    out_dir = Path(out_dir)
    rank, _ = _dist_env()
    with _run_lock(out_dir, rank):
        return _train_locked(cfg, out_dir, progress, device)


@contextlib.contextmanager
def _run_lock(out_dir: Path, rank: int):
    """One writer per run folder: a second `train` into a folder in use stops at once with a clear error
    (under DDP only rank 0 takes the lock). The lock file is the kit's own and is left in place."""
    if rank != 0:
        yield
        return
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(f"{out_dir} is in use by another tcm-kit training run; wait for it or use "
                                  "another --out folder") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _train_locked(cfg: TrainConfig, out_dir: Path, progress: bool, device: str | None) -> dict:
    device = device or default_device()
    key = run_hash(cfg, device)
    done = out_dir / "result.json"
    if done.exists():  # a finished run is returned, never retrained
        result = json.loads(done.read_text())
        if is_run_of(cfg, result.get("config_hash"), device):
            return result
        raise CheckpointError(_other_run(out_dir, result, cfg, device))
    t0 = time.time()
    model, n_train = fit(cfg, out_dir, progress=progress, device=device)
    train_time = time.time() - t0
    rank, world = _dist_env()
    if rank != 0:
        return {}
    curve = read_val_curve(out_dir) if cfg.evaluation.val_every else []
    final = curve[-1] if curve and curve[-1]["step"] == cfg.optim.steps else None  # the val split, scored already
    result = evaluate_run(model, cfg, progress=progress, device=device,
                          box_thresh=None if final is None else final["box_thresh"])
    if final is not None:
        result["val_hmean"] = final["hmean"]
    result.update(config_hash=key, detector=cfg.detector, domain=cfg.domain, shot=cfg.shot,
                  seed=cfg.seed, profile=cfg.profile, steps=cfg.optim.steps, train_images=n_train,
                  train_seconds=round(train_time, 1), commit=git_commit(), amp=precision_for(device),
                  cpu=cpu_name())
    if cfg.evaluation.protocol == "authors":  # beside the kit's figure, never in its place
        result["authors_protocol"] = json.loads((out_dir / "authors_protocol.json").read_text())
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, done)
    return result


def fit(cfg: TrainConfig, out_dir, progress: bool = True, device: str = "cpu"):
    """The training loop alone: -> (model, number of training images). Resumes from out_dir/last.pt."""
    out_dir = Path(out_dir)
    rank, world = _dist_env()
    if device == "cuda" and world > 1:
        torch.cuda.set_device(rank % torch.cuda.device_count())
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_json = json.dumps(run_fields(cfg), indent=1, default=str)
    if rank == 0:
        old = out_dir / "config.json"
        if old.exists() and (out_dir / "last.pt").exists() and old.read_text() != cfg_json:
            raise CheckpointError(f"{out_dir} holds a run of another config (its config.json differs); use "
                                  "another --out folder")
        old.write_text(cfg_json)

    from .data.transforms import collate

    if rank == 0:
        split_dir(cfg, "train", progress)  # generate once, before the other ranks read it
        for split in ("val", "test"):  # a missing or unreadable split fails now, not after the training
            split_dataset(cfg, split, progress, size=cfg.evaluation.test_size, train=False)
    if world > 1:
        dist.barrier()

    seed_everything(cfg.seed)  # same init whatever the data preparation consumed
    model = build_model(cfg, progress and rank == 0).to(device)
    if cfg.init_from is not None and not (out_dir / "last.pt").exists():
        weights, detector = init_weights(cfg.init_from)
        if detector != cfg.detector:
            raise TrainConfigError(f"init_from {cfg.init_from} is a {detector}, this run trains a {cfg.detector}: "
                                   "fine-tune a detector of the same architecture")
        model.load_state_dict(weights)
    data = split_dataset(cfg, "train", progress=False, size=cfg.aug.train_size, train=True, seed=cfg.seed,
                         targets=model.target_fn(), aug=train_augmentation(cfg))
    data = data.subset(few_shot_indices(len(data), cfg.shot, cfg.seed))
    global_batch = cfg.optim.batch_size * world  # batch_size per rank, as the official samples_per_gpu
    steps_per_epoch = max(1, len(data) // global_batch)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    step = 0
    ckpt = out_dir / "last.pt"
    if ckpt.exists():
        ck = load_checkpoint(ckpt, cfg, device)
        model.load_state_dict(ck["model"])
        step = ck["step"]
        if step < cfg.optim.steps:  # the last step's checkpoint has no optimiser state, and needs none
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"])
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    log_path = out_dir / "log.csv"
    share = cfg.optim.batch_size
    authors = AuthorsProtocol(out_dir, cfg, steps_per_epoch) if cfg.evaluation.protocol == "authors" else None
    curve = ValCurve(out_dir, cfg, step) if cfg.evaluation.val_every and rank == 0 else None
    bar = tqdm(total=cfg.optim.steps, initial=step, desc=f"train {cfg.detector} [{cfg.profile}]",
               disable=not progress or rank != 0)
    amp = autocast(device)
    model.train()
    while step < cfg.optim.steps:
        epoch, first = divmod(step, steps_per_epoch)
        data.set_epoch(epoch)
        batches = epoch_batches(len(data), global_batch, cfg.seed, epoch)[first:]
        local = [b[rank * share:(rank + 1) * share] for b in batches][: cfg.optim.steps - step]
        # its own generator: creating a loader must not draw from the global RNG, or a resumed run would diverge
        loader = torch.utils.data.DataLoader(data, batch_sampler=local, collate_fn=collate,
                                             num_workers=cfg.num_workers,
                                             generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        for batch in loader:
            parts = train_step(model, ddp, optimizer, batch, device, amp)
            scheduler.step()
            step += 1
            row = {"step": step, "lr": scheduler.get_last_lr()[-1], **{k: v.item() for k, v in parts.items()}}
            if rank == 0:
                _append_csv(log_path, row)
            bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in row.items() if k.startswith("loss")})
            bar.update(1)
            if curve is not None and curve.due(step):  # before the checkpoint: a resumed run evaluates again
                curve.evaluate(model, step, device, progress)
            if rank == 0 and (step % cfg.ckpt_every == 0 or step == cfg.optim.steps):
                save_checkpoint(ckpt, model, optimizer, scheduler, step, cfg, device)
            if authors is not None and authors.due(step):
                if rank == 0:
                    authors.evaluate(model, step, device, progress)
                if world > 1:
                    dist.barrier()
    bar.close()
    if world > 1:
        dist.barrier()
    return model, len(data)


AUTHORS_PROTOCOL = ("authors' protocol: checkpoint and box threshold picked on the test split itself (the "
                    "official save_best on the test hmean, thresholds 0.3-0.9); optimistic, not comparable with "
                    "the validation-split figure")


class AuthorsProtocol:
    """The official evaluation (TrainConfig.eval_protocol="authors"), kept beside the kit's: every
    eval_every_epochs epochs (and at the last step) the test split is predicted and scored at each of
    cfg.evaluation.box_thresholds; the best (step, threshold) so far is kept in out_dir/authors_protocol.json and its
    weights in out_dir/best_test.pt. The training RNG state is restored after each evaluation, so a run trains
    the same with either protocol."""

    def __init__(self, out_dir: Path, cfg: TrainConfig, steps_per_epoch: int):
        self.path, self.weights, self.cfg = out_dir / "authors_protocol.json", out_dir / "best_test.pt", cfg
        self.every = max(1, cfg.evaluation.every_epochs * steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        self.state = json.loads(self.path.read_text()) if self.path.exists() else {
            "protocol": AUTHORS_PROTOCOL, "every_steps": self.every, "evaluations": [], "best": None}

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.cfg.optim.steps

    def evaluate(self, model, step: int, device: str, progress: bool) -> dict:
        row = {"step": step, "epoch": step / self.steps_per_epoch,
               **_aside(model, lambda: evaluate_on_test_split(model, self.cfg, progress, device))}
        self.state["evaluations"].append(row)
        if self.state["best"] is None or row["hmean"] > self.state["best"]["hmean"]:
            self.state["best"] = row
            tmp = self.weights.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "step": step, "config_hash": run_hash(self.cfg)}, tmp)
            os.replace(tmp, self.weights)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.path)
        return row


class ValCurve:
    """The validation learning curve (cfg.evaluation.val_every > 0): every val_every steps and at the last step,
    P/R/hmean on the validation split at its best box threshold, appended to out_dir/val_curve.csv. Training is
    unchanged (the RNG state is restored after each evaluation); a resumed run drops the rows after the step it
    resumes from, which it trains again."""

    def __init__(self, out_dir: Path, cfg: TrainConfig, start_step: int):
        self.path, self.cfg = out_dir / "val_curve.csv", cfg
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
            self.path.unlink()
            for r in rows:
                _append_csv(self.path, r)

    def due(self, step: int) -> bool:
        return step % self.cfg.evaluation.val_every == 0 or step == self.cfg.optim.steps

    def evaluate(self, model, step: int, device: str, progress: bool) -> dict:
        row = {"step": step, **_aside(model, lambda: evaluate_on_split(model, self.cfg, "val", False, device))}
        _append_csv(self.path, row)
        return row


def _aside(model, evaluate):
    """evaluate() during training, leaving the training as it was: the model back in train mode and the RNG
    state restored, so a run trains the same with or without evaluations."""
    rng = _rng_state()
    try:
        return evaluate()
    finally:
        model.train()
        _set_rng_state(rng)


def read_val_curve(run_dir) -> list[dict]:
    """The rows of a run's val_curve.csv (step, precision, recall, hmean, box_thresh), [] if it has none."""
    path = Path(run_dir) / "val_curve.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def evaluate_on_test_split(model, cfg: TrainConfig, progress: bool = True, device: str = "cpu") -> dict:
    """One evaluation of the authors' protocol: P/R/hmean on the test split at the box threshold (among
    cfg.evaluation.box_thresholds) that is best on the test split itself (official eval_hmean: 0.3-0.9, the first
    best)."""
    return evaluate_on_split(model, cfg, "test", progress, device)


def evaluate_on_split(model, cfg: TrainConfig, split: str, progress: bool = True, device: str = "cpu") -> dict:
    """P/R/hmean on one split at the box threshold (among cfg.evaluation.box_thresholds) best on that split."""
    from .metrics import best_threshold_sweep

    data = split_dataset(cfg, split, progress, size=cfg.evaluation.test_size, train=False)
    preds, gts = predict_dataset(model, data, device, progress=progress, box_thresh=min(cfg.evaluation.box_thresholds))
    best = best_threshold_sweep(preds, gts, thresholds=cfg.evaluation.box_thresholds)["best"]
    return {"precision": best["precision"], "recall": best["recall"], "hmean": best["hmean"],
            "box_thresh": best["threshold"]}


def train_step(model, forward, optimizer, batch: dict, device: str, amp) -> dict:
    """One optimisation step on a collated batch: forward (through `forward`: the model or its DDP wrapper) under
    `amp`, the detector's loss in fp32, backward, optimiser step. -> the loss parts (tensors)."""
    tensors = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
    with amp:
        out = forward(tensors["image"])
    parts = model.loss({k: v.float() for k, v in out.items()}, tensors)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    optimizer.step()
    return parts


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


# ---------------------------------------------------------------------------------------------------- evaluate

@torch.no_grad()
def predict_folder(model, root, size: int, device: str = "cpu", batch_size: int = 4, progress: bool = True,
                   fmt: str | None = None, **postprocess) -> tuple[list, list]:
    """Scored detections (low box threshold, so a sweep can filter) and ground truth of every image in a folder
    (annotations in format `fmt`, None: detected)."""
    from .data.transforms import TextDetDataset

    return predict_dataset(model, TextDetDataset(root, fmt=fmt, size=size, train=False), device, batch_size,
                           progress, **postprocess)


@torch.no_grad()
def predict_dataset(model, data, device: str = "cpu", batch_size: int = 4, progress: bool = True,
                    **postprocess) -> tuple[list, list]:
    """predict_folder on an evaluation TextDetDataset (train=False) -> (scored detections, ground truth)."""
    from .data.transforms import collate

    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate)
    preds, gts = [], []
    model.eval()
    for batch in tqdm(loader, desc=f"predict {data.root.name}", disable=not progress, leave=False):
        out = model.predict(batch["image"].to(device), scale=[1.0 / s for s in batch["scale"]], **postprocess)
        preds.extend(out)
        # ground truth in original-image coordinates
        gts.extend([[dataclasses.replace(i, polygon=i.polygon / s) for i in inst]
                    for inst, s in zip(batch["instances"], batch["scale"])])
    return preds, gts


def evaluate_run(model, cfg: TrainConfig, progress: bool = True, device: str = "cpu", test_root=None,
                 box_thresh: float | None = None, size: int | None = None, test_format: str | None = None) -> dict:
    """Pick the box-score threshold on the validation split, then report P/R/hmean on the test split once.

    box_thresh: a threshold already picked on this run's validation split (e.g. result["box_thresh"]), so the
    validation split is not predicted again (cross-domain tests). size: the long side test images are resized to
    (default cfg.evaluation.test_size; the validation split, from the training domain, always at
    cfg.evaluation.test_size).
    test_format: the annotation format of test_root (None: detected); the run's own test split is read in
    cfg.data_format. per_image: [tp, n_pred, n_gt] of each test image in the split's order (for paired
    bootstrap intervals over test images, tcm_kit.claims)."""
    from .metrics import aggregate, best_threshold_sweep, hmean_iou_per_image

    lo = min(cfg.evaluation.box_thresholds)
    if box_thresh is None:
        val = split_dataset(cfg, "val", progress, size=cfg.evaluation.test_size, train=False)
        val_preds, val_gts = predict_dataset(model, val, device, progress=progress, box_thresh=lo)
        sweep = best_threshold_sweep(val_preds, val_gts, thresholds=cfg.evaluation.box_thresholds)
        best, val_hmean = float(sweep["best"]["threshold"]), float(sweep["best"]["hmean"])
    else:
        best, val_hmean = float(box_thresh), None
    if test_root is None:
        test_root, test_format = split_dir(cfg, "test", progress), cfg.data_format
    size = size or cfg.evaluation.test_size
    preds, gts = predict_folder(model, test_root, size, device, progress=progress, fmt=test_format, box_thresh=lo)
    kept = [[p for p, s in img if s >= best] for img in preds]
    per_image = hmean_iou_per_image(kept, gts)
    m = aggregate(per_image)
    return {"precision": m["precision"], "recall": m["recall"], "hmean": m["hmean"], "box_thresh": best,
            "val_hmean": val_hmean, "n_test": len(gts), "test_size": size,
            "per_image": [[r["tp"], r["n_pred"], r["n_gt"]] for r in per_image]}



# ---------------------------------------------------------------------------------------------------- finished runs

def run_config(run_dir) -> TrainConfig:
    """The TrainConfig of a run folder written by `train` (its config.json)."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{cfg_path} not found: {run_dir} is not a (started) tcm-kit training run")
    try:
        fields = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}:{e.lineno}: not valid JSON ({e.msg}); the run's config is damaged") \
            from None
    try:
        return TrainConfig.from_dict(fields)
    except (TypeError, TrainConfigError) as e:
        raise CheckpointError(f"{cfg_path}: written by another version of tcm-kit ({e}); train the run "
                              "again") from None


def load_run(run_dir, device: str = "cpu"):
    """(model in eval mode, config, result or None) of a run folder written by `train`."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    ckpt = run_dir / "last.pt"
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt} not found: {run_dir} is not a (started) tcm-kit training run")
    model = build_model(cfg, progress=False)
    ck = load_checkpoint(ckpt, cfg, any_precision=True)
    model.load_state_dict(ck["model"])
    done = run_dir / "result.json"
    if not done.exists():
        import warnings

        warnings.warn(f"{run_dir} is unfinished: its checkpoint is at step {ck['step']} of {cfg.optim.steps} "
                      "(run `tcm-kit train` with the same arguments to finish it)", stacklevel=2)
    return model.to(device).eval(), cfg, (json.loads(done.read_text()) if done.exists() else None)


def export_detector(run_dir, name: str, folder=None) -> dict:
    """Release the finished run in `run_dir` as the detector `name` (tcm_kit.zoo; folder None: tcm_kit/weights)
    -> its record. The release is loaded back and must give the run's outputs on a synthetic test scene, up to
    fp16 rounding; if not, its files are removed and ZooError says which output differs."""
    from .data.synth import render_scene
    from .data.transforms import to_tensor
    from .zoo import ZooError, remove_release, write_release

    model, cfg, result = load_run(run_dir)
    if result is None:
        raise ZooError(f"{run_dir} has not finished (no result.json): finish the run, then export it")
    record = write_release(run_dir, model.state_dict(), run_fields(cfg), result, name, folder)
    released, _, _ = load_detector(name, folder=folder)
    size = cfg.evaluation.test_size if isinstance(cfg.evaluation.test_size, int) else 320
    x = to_tensor(render_scene("synth-ic15", 0, 0, size=size).image)[None]  # (1, 3, size, size)
    with torch.no_grad():
        a, b = model(x), released(x)
    for k in a:  # the release must do what its run does, up to fp16 rounding
        tol = 0.05 * max(1.0, float(a[k].abs().max())) if torch.is_tensor(a[k]) else 0.0
        if torch.is_tensor(a[k]) and not torch.allclose(b[k], a[k], rtol=0.05, atol=tol):
            remove_release(name, folder)  # the files just written: a damaged release must not be loadable
            raise ZooError(f"{name}: the released weights' {k} differs from the run's by up to "
                           f"{float((b[k] - a[k]).abs().max()):.3g} on a test scene; nothing released")
    return record


def load_detector(name: str | None = None, device: str = "cpu", folder=None):
    """(model in eval mode, config, record) of the released detector `name` (None: tcm_kit.zoo.DEFAULT_DETECTOR)
    in `folder` (None: tcm_kit/weights), its sha256 checked before the model is built."""
    from .zoo import DEFAULT_DETECTOR, released_weights

    weights, fields, record = released_weights(name or DEFAULT_DETECTOR, folder)
    cfg = TrainConfig.from_dict(fields)
    model = build_model(cfg, progress=False)
    model.load_state_dict(weights)
    return model.to(device).eval(), cfg, record


def evaluate_checkpoint(run_dir, test_root=None, progress: bool = True, device: str = "cpu",
                        size: int | None = None, test_format: str | None = None) -> dict:
    """Re-evaluate a run: threshold picked on its validation split, P/R/hmean on `test_root` (default: its test
    split; annotations in `test_format`, None: detected) with its images' long side resized to `size` (default:
    the run's test_size)."""
    model, cfg, _ = load_run(run_dir, device)
    return evaluate_run(model, cfg, progress=progress, device=device, test_root=test_root, size=size,
                        test_format=test_format)


def output_names(paths: list) -> list[str]:
    """One distinct output name per input image: its stem, or, where stems collide (camA/x.jpg, camB/x.jpg,
    x.png), the stem with its extension and then its parent folders until the names differ."""
    names = [p.stem for p in paths]
    for depth in range(0, max((len(p.parts) for p in paths), default=0) + 1):
        counts = {n: names.count(n) for n in names}
        if all(c == 1 for c in counts.values()):
            return names
        for i, p in enumerate(paths):
            if counts[names[i]] > 1:
                parents = [q for q in p.resolve().parent.parts[-depth:] if q != "/"] if depth else []
                names[i] = "_".join([*parents, p.stem + (p.suffix.replace(".", "_") if p.suffix else "")])
    raise CheckpointError(f"the same image is given twice: {sorted({str(p) for p in paths if paths.count(p) > 1})}")


def predict_images(run_dir, images, out_dir, progress: bool = True, device: str = "cpu", size: int | None = None,
                   released: str | None = None):
    """Detect text in image files with the run in `run_dir` (None: the released detector `released`, default
    tcm_kit.zoo.DEFAULT_DETECTOR, at long side `size` or its record's photo_size, with its box threshold for
    photos, tcm_kit.zoo.photo_box_thresh): yields (png with the polygons drawn, ICDAR2015 result txt) per image,
    or (None, why) for an image that cannot be read, and goes on with the next."""
    import cv2

    from .data.transforms import CorruptImageError, pad_to_multiple, read_image, resize_to_scale, to_tensor

    if run_dir is None:
        from .zoo import PHOTO_SIZE, photo_box_thresh

        model, cfg, record = load_detector(released, device)
        box_thresh, _ = photo_box_thresh(record)
        size = size or record.get("photo_size", PHOTO_SIZE)
    else:
        model, cfg, result = load_run(run_dir, device)
        thresholds = cfg.evaluation.box_thresholds
        box_thresh = result["box_thresh"] if result else thresholds[len(thresholds) // 2]
    out_dir = Path(out_dir)
    paths = [Path(p) for p in images]
    names = output_names(paths)
    inputs = {p.resolve() for p in paths}
    for name in names:
        for target in (out_dir / f"{name}.png", out_dir / f"res_{name}.txt"):
            if target.resolve() in inputs:
                raise CheckpointError(f"{target}: the prediction would overwrite an input image; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, name in tqdm(list(zip(paths, names)), desc="predict", disable=not progress):
        try:
            image = read_image(path)
        except CorruptImageError as e:
            yield None, str(e)
            continue
        small, _, scale = resize_to_scale(image, [], size or cfg.evaluation.test_size)
        x = to_tensor(pad_to_multiple(small, 32))[None].to(device)
        dets = model.predict(x, scale=1.0 / scale, box_thresh=box_thresh)[0]
        canvas = image.copy()
        for poly, score in dets:
            cv2.polylines(canvas, [np.round(poly).astype(np.int32)], True, (0, 255, 0), 2)
        png, txt = out_dir / f"{name}.png", out_dir / f"res_{name}.txt"
        cv2.imwrite(str(png), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        txt.write_text("".join(",".join(str(int(round(v))) for v in poly.reshape(-1)) + "\n" for poly, _ in dets))
        yield png, txt

def exit_process(rc: int | None = 0) -> None:
    """End the process with exit code rc. Under torchrun: destroy the process group, then leave without the
    interpreter's teardown, which gloo's threads can abort at random after the work is done ("terminate called
    without an active exception", SIGABRT: 1 run in 7 here)."""
    import sys

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc or 0)
    sys.exit(rc)
