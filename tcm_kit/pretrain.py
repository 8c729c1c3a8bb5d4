"""Contrastive (CLIP InfoNCE) pre-training of the kit's embedded tiny CLIP on synthetic captioned scenes.

`pretrain(cfg, out_path)` trains `cfg.model` (TCM-RN-tiny) with a learnable temperature, AdamW and a warmup +
cosine schedule on scenes from `tcm_kit.data.synth.captioned_scene` (text and text-free images, captions that
mention the words). Each batch has one image size drawn from `cfg.sizes` (multi-scale), and identical captions
in a batch count as positives, not negatives. Runs are resumable (a state file every `ckpt_every` steps, in a
work directory next to `out_path` that also keeps `log.csv` with loss/accuracy per step) and deterministic by
`cfg.seed` on CPU; a finished run returns at once.
"""
from __future__ import annotations

import csv
import dataclasses
import fcntl
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tcm_kit.clip import (EMBEDDED_MODEL_NAME, ClipWeightsError, create_clip, dense_features, load_state_dict_file,
                          save_kit_checkpoint)
from tcm_kit.data.transforms import to_tensor
from tcm_kit.precision import autocast, precision_for
from tcm_kit.utils import config_hash, git_commit

__all__ = ["PretrainConfig", "PretrainError", "GENERIC_TEXT_CAPTIONS", "pretrain", "scene_batch", "clip_loss", "read_log", "work_dir",
           "evaluate_contrastive", "evaluate_prior"]

PROFILES = ("smoke", "cpu", "release-base", "release", "full")


class PretrainError(ValueError):
    """A bad pre-training config or a work directory that belongs to another run."""


@dataclass(frozen=True)
class PretrainConfig:
    profile: str = "cpu"
    model: str = EMBEDDED_MODEL_NAME  # a registered open_clip config of the ModifiedResNet family
    seed: int = 0
    steps: int = 500
    batch_size: int = 64
    sizes: tuple = (96, 128, 160)  # network input side, one per batch, drawn by step
    lr: float = 1e-3
    min_lr_ratio: float = 0.02  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 25
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-6
    max_logit_scale: float = 100.0  # temperature clamp, as in CLIP
    presets: tuple | None = None  # synthetic domains for captioned_scene (None: its default mix)
    # share of text scenes whose caption is replaced by a generic one (GENERIC_TEXT_CAPTIONS): without them the
    # bare prompts "text" / "a photo of text" never occur in training and land off the text direction
    generic_caption_p: float = 0.3
    # the generic captions all say "there is text": count them as one class in the loss (an image captioned
    # "text" is then not a negative for "printed text"); False: each distinct string is its own class
    generic_positives: bool = True
    # scenes are drawn at size * f, f ~ U(scene_scale), then cut to a square crop that holds the caption's quoted
    # word(s) (a random crop for text-free scenes) and resized to `size`: words keep their pixel size while the
    # network sees small inputs (cheap), and local crops tie cells to the caption. (1, 1): whole scenes.
    scene_scale: tuple = (1.5, 2.5)
    # a second stage: start from the finished checkpoint of this recipe (trained first if absent), with a fresh
    # optimiser and its own warm-up and cosine; the checkpoint's log, wall time and commits are both stages'
    init: "PretrainConfig | None" = None

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise PretrainError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if self.steps < 1 or self.batch_size < 2:
            raise PretrainError(f"need steps >= 1 and batch_size >= 2, got {self.steps}, {self.batch_size}")
        if not self.sizes or any(s % 32 for s in self.sizes):
            raise PretrainError(f"sizes must be multiples of 32, got {self.sizes}")
        if len(self.scene_scale) != 2 or not 1.0 <= self.scene_scale[0] <= self.scene_scale[1]:
            raise PretrainError(f"scene_scale must be (lo, hi) with 1 <= lo <= hi, got {self.scene_scale}")
        if self.init is not None and (not isinstance(self.init, PretrainConfig) or self.init.model != self.model):
            raise PretrainError(f"init must be a PretrainConfig of the same model ({self.model}), got {self.init!r}")

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> "PretrainConfig":
        """smoke: < 1 min (CI, notebooks under nbval); cpu: a small recipe that re-trains from scratch in minutes;
        release: the recipe of the released embedded CLIP (tcm_kit/weights/, hours on 2 cores, in parts): stage 1
        (`release-base`, 96-224 px crops), stage 2 (160-288 px inputs from scenes up to 3.5x larger), stage 3
        (256-384 px inputs), so that words and clutter are also seen at the pixel sizes of 512 px and 1280 x 720
        photos; full: a GPU budget. Precision is not a recipe's: it follows the hardware (tcm_kit.precision)."""
        release_base = dict(sizes=(96, 128, 160, 224), generic_caption_p=0.7, steps=2500, warmup_steps=50)
        # stage 2 keeps the profile name it was released under (embedded CLIP v2), so that its checkpoint's
        # config hash is the one stage 3 was trained from
        release_v2 = dict(sizes=(160, 224, 288), generic_caption_p=0.7, steps=1000, warmup_steps=50, lr=5e-4,
                          scene_scale=(1.0, 3.5), seed=1, init=cls(profile="release-base", **release_base))
        base = {
            "smoke": dict(steps=80, batch_size=16, sizes=(64, 96), warmup_steps=4),
            "cpu": dict(sizes=(96, 128, 160, 224), generic_caption_p=0.7, steps=1000),
            "release-base": release_base,
            "release": dict(sizes=(256, 320, 384), generic_caption_p=0.7, steps=600, warmup_steps=30, lr=3e-4,
                            scene_scale=(1.0, 2.5), seed=2, init=cls(profile="release", **release_v2)),
            "full": dict(steps=20000, batch_size=256, sizes=(224, 256, 288, 320, 384, 448, 512), warmup_steps=500,
                         lr=5e-4),
        }
        if profile not in base:
            raise PretrainError(f"profile must be one of {PROFILES}, got {profile!r}")
        return cls(profile=profile, **{**base[profile], **overrides})


# ----------------------------------------------------------------------------------------------------------------
# data: a whole batch per item, so one image size per batch and determinism by (seed, step) whatever the workers


GENERIC_TEXT_CAPTIONS = ("text", "a photo of text", "an image with text", "some text", "text in a picture",
                         "printed text", "words")


def scene_source(seed: int, index: int, size: int, presets=None):
    """(image uint8 (S,S,3), caption, instances) of captioned scene `index`: tcm_kit.data.synth.captioned_scene."""
    from tcm_kit.data.synth import captioned_scene

    return captioned_scene(seed, index, size, presets=presets)


def batch_image_size(cfg: PretrainConfig, step: int) -> int:
    """The image size of batch `step` (the same whatever resumes or workers)."""
    return int(cfg.sizes[np.random.default_rng([cfg.seed, step, 7]).integers(len(cfg.sizes))])


def caption_crop_box(h: int, w: int, caption: str, instances, size: int, rng) -> tuple[int, int, int]:
    """(x, y, side) of a square crop of an (h, w) scene that keeps the caption's words.

    The crop holds the care instances whose text the caption quotes, or the largest care instance when it
    quotes none (generic captions); scenes without care text get a random crop. The side is drawn between
    `size` and the scene's short side (widened to 1.15x the words' extent), and the words are never cut when
    they fit."""
    import re

    import cv2

    short = min(h, w)
    care = [i for i in instances if not i.ignore]
    quoted = set(re.findall(r'"([^"]*)"', caption))
    keep = [i for i in care if i.text in quoted] or sorted(care, key=lambda i: -cv2.contourArea(
        np.asarray(i.polygon, np.float32)))[:1]
    side = int(rng.integers(min(size, short), short + 1))
    if keep:
        pts = np.concatenate([np.asarray(i.polygon, np.float32).reshape(-1, 2) for i in keep])
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        side = int(min(short, max(side, 1.15 * (x1 - x0), 1.15 * (y1 - y0))))
        # left edge range that keeps [x0, x1] inside (or centres the words when they do not fit)
        lo_x, hi_x = max(0.0, x1 - side), min(float(w - side), x0)
        lo_y, hi_y = max(0.0, y1 - side), min(float(h - side), y0)
        cx = rng.uniform(lo_x, hi_x) if lo_x <= hi_x else np.clip((x0 + x1 - side) / 2, 0, w - side)
        cy = rng.uniform(lo_y, hi_y) if lo_y <= hi_y else np.clip((y0 + y1 - side) / 2, 0, h - side)
    else:
        cx, cy = rng.uniform(0, w - side), rng.uniform(0, h - side)
    return int(round(cx)), int(round(cy)), side


def caption_crop(image: np.ndarray, caption: str, instances, size: int, rng) -> np.ndarray:
    """The crop of `caption_crop_box` cut from `image` (H, W, 3) and resized to (size, size, 3)."""
    import cv2

    x, y, side = caption_crop_box(image.shape[0], image.shape[1], caption, instances, size, rng)
    crop = image[y:y + side, x:x + side]
    if crop.shape[0] == size and crop.shape[1] == size:
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def scene_batch(cfg: PretrainConfig, step: int):
    """-> (images float (B,3,S,S) normalised with CLIP mean/std, captions list[str]) of batch `step`."""
    size = batch_image_size(cfg, step)
    images, captions = [], []
    for j in range(cfg.batch_size):
        index = step * cfg.batch_size + j
        rng = np.random.default_rng([cfg.seed, index, 11])
        scene_size = int(round(size * rng.uniform(*cfg.scene_scale)))
        image, caption, instances = scene_source(cfg.seed, index, scene_size,
                                                 presets=list(cfg.presets) if cfg.presets else None)
        if instances and rng.uniform() < cfg.generic_caption_p:  # identical captions in a batch are positives
            caption = GENERIC_TEXT_CAPTIONS[rng.integers(len(GENERIC_TEXT_CAPTIONS))]
        image = np.asarray(image, dtype=np.uint8)[..., :3]
        if scene_size != size or image.shape[:2] != (size, size):
            image = caption_crop(image, caption, instances, size, rng)
        images.append(image)
        captions.append(caption)
    return to_tensor(np.stack(images)), captions  # (B, 3, S, S)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, cfg: PretrainConfig, tokenizer):
        self.cfg, self.tokenizer = cfg, tokenizer

    def __len__(self):
        return self.cfg.steps

    def __getitem__(self, step):
        images, captions = scene_batch(self.cfg, step)
        return images, self.tokenizer(captions), captions  # (B,3,S,S), (B,L) ids, list[str]


def _worker_init(_):
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------------
# the loss


def clip_loss(image_feat, text_feat, logit_scale, captions) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE with soft targets: pairs with identical captions are all positives.

    image_feat, text_feat (B, C); logit_scale: log of the inverse temperature -> (loss, in-batch retrieval acc).
    """
    img = F.normalize(image_feat, dim=-1)
    txt = F.normalize(text_feat, dim=-1)
    logits = logit_scale.exp() * img @ txt.T  # (B, B) image -> text
    index = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([index[c] for c in captions], device=logits.device)
    same = (ids[:, None] == ids[None, :]).float()  # (B, B) symmetric
    target = same / same.sum(dim=1, keepdim=True)  # rows sum to 1
    loss_i = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(target * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    acc = same[torch.arange(len(ids)), logits.argmax(dim=1)].mean()  # image -> a caption equal to its own
    return (loss_i + loss_t) / 2, acc


def positive_keys(cfg: PretrainConfig, captions: list) -> list:
    """The captions as clip_loss compares them: with cfg.generic_positives every generic text caption is one key."""
    if not cfg.generic_positives:
        return list(captions)
    return ["\0generic text" if c in GENERIC_TEXT_CAPTIONS else c for c in captions]


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
            or "positional_embedding" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(cfg: PretrainConfig):
    def f(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


# ----------------------------------------------------------------------------------------------------------------
# the run


def checkpoint_path(profile: "str | PretrainConfig") -> Path:
    """Where `tcm-kit pretrain --profile P` writes by default: data_dir()/clip/<config hash of P>.pt."""
    from tcm_kit.utils import data_dir

    cfg = profile if isinstance(profile, PretrainConfig) else PretrainConfig.for_profile(profile)
    return data_dir() / "clip" / f"{config_hash(cfg)}.pt"


def work_dir(out_path: Path) -> Path:
    """The run's directory next to its checkpoint: state.pt (resume), log.csv (loss/acc per step), lock."""
    out_path = Path(out_path)
    return out_path.parent / out_path.stem


def read_log(out_path: Path) -> list[dict]:
    """The per-step log of the run writing `out_path` (from its log.csv), as a list of dicts."""
    p = work_dir(out_path) / "log.csv"
    if not p.exists():
        return []
    with open(p) as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


LOG_FIELDS = ("step", "loss", "acc", "lr", "logit_scale", "size", "time")


def _finished(out_path: Path, h: str) -> bool:
    if not out_path.exists():
        return False
    try:
        _, kit = load_state_dict_file(out_path)
    except ClipWeightsError:
        return False
    return kit is not None and kit.get("config_hash") == h


def pretrain(cfg: PretrainConfig, out_path, progress: bool = True, workers: int = 2, ckpt_every: int = 100,
             threads: int | None = None, stop_after: int | None = None, device=None) -> Path:
    """Pre-train `cfg.model` and write the kit checkpoint to `out_path`; resumes; returns `out_path`.

    workers: data processes (0: in the main process); threads: torch threads during the run (None: leave);
    stop_after: stop (with a resumable state) after this many steps in total, to split a run in parts;
    device: where to train (None: CUDA if available, else CPU; bit-exact determinism is promised on CPU only).
    """
    out_path = Path(out_path)
    h = config_hash(cfg)
    if _finished(out_path, h):
        return out_path
    wd = work_dir(out_path)
    wd.mkdir(parents=True, exist_ok=True)
    with open(wd / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the run finished
        if _finished(out_path, h):
            return out_path
        old_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            _run(cfg, h, out_path, wd, progress, workers, ckpt_every, stop_after, device)
        finally:
            torch.set_num_threads(old_threads)
    return out_path


def _run(cfg, h, out_path, wd, progress, workers, ckpt_every, stop_after, device):
    import open_clip

    precision = precision_for(device)
    torch.manual_seed(cfg.seed)
    model = create_clip(cfg.model).train().to(device)
    model.visual.to(memory_format=torch.channels_last)  # NHWC: oneDNN convolutions, ~25% faster steps on CPU
    tokenizer = open_clip.get_tokenizer(cfg.model)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    state_path, log_path = wd / "state.pt", wd / "log.csv"

    start, elapsed, precisions, commits = 0, 0.0, [], []
    base = None  # stage 1's record (cfg.init): its log, wall time, commits and precisions lead this run's
    if cfg.init is not None:
        base_path = pretrain(cfg.init, checkpoint_path(cfg.init), progress=progress, workers=workers,
                             ckpt_every=ckpt_every, device=device)
        base_sd, base = load_state_dict_file(base_path)
        if not state_path.exists():
            model.load_state_dict(base_sd)
        commits = [base["git_commit"]] if base.get("git_commit") else []  # may hold "+dirty": kept whole
        precisions = [p for p in (base.get("amp") or "").split("+") if p]
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state.get("config_hash") != h:
            raise PretrainError(f"{state_path} belongs to another pre-training run (config hash "
                                f"{state.get('config_hash')}, this run {h}); delete {wd} to start again")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"].cpu())
        start, elapsed = state["step"], state["elapsed"]
        precisions, commits = state.get("precisions", precisions), state.get("commits", commits)
    if precision not in precisions:
        precisions.append(precision)  # a run resumed on other hardware records both
    if git_commit() not in commits:
        commits.append(git_commit())  # the code that ran each part
    # the log keeps exactly the steps done so far (a crash after the last state may have written more)
    rows = [r for r in read_log(out_path) if r["step"] < start]
    with open(log_path, "w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)

    def save_state(step):
        tmp = state_path.with_name("state.pt.tmp")
        torch.save({"config_hash": h, "pretrain_config": dataclasses.asdict(cfg), "step": step,
                    "elapsed": elapsed + time.perf_counter() - t0, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                    "precisions": precisions, "commits": commits},
                   tmp)
        os.replace(tmp, state_path)

    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    loader = torch.utils.data.DataLoader(
        _Batches(cfg, tokenizer), batch_size=None, sampler=range(start, end), num_workers=workers,
        worker_init_fn=_worker_init if workers else None, prefetch_factor=4 if workers else None)
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc=f"pretrain {cfg.profile} {h}",
               dynamic_ncols=True)
    t0 = time.perf_counter()
    ema_loss = ema_acc = None
    with open(log_path, "a", newline="") as f:
        log = csv.DictWriter(f, LOG_FIELDS)
        for step, (images, tokens, captions) in enumerate(loader, start=start):
            images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
            images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                image_feat = dense_features(model, images).global_feat  # (B, C), any batch size
                text_feat = model.encode_text(tokens)  # (B, C)
            loss, acc = clip_loss(image_feat.float(), text_feat.float(), model.logit_scale,
                                  positive_keys(cfg, captions))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(cfg.max_logit_scale))
            row = {"step": step, "loss": loss.item(), "acc": acc.item(), "lr": opt.param_groups[0]["lr"],
                   "logit_scale": model.logit_scale.exp().item(), "size": images.shape[-1],
                   "time": round(elapsed + time.perf_counter() - t0, 3)}
            log.writerow(row)
            ema_loss = row["loss"] if ema_loss is None else 0.9 * ema_loss + 0.1 * row["loss"]
            ema_acc = row["acc"] if ema_acc is None else 0.9 * ema_acc + 0.1 * row["acc"]
            bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.2f}", px=images.shape[-1])
            bar.update(1)
            if (step + 1) % ckpt_every == 0 and step + 1 < end:
                f.flush()
                save_state(step + 1)
    bar.close()
    if end < cfg.steps:  # stopped early on request: leave a resumable state
        save_state(end)
        return
    wall = elapsed + time.perf_counter() - t0
    log, steps = read_log(out_path), cfg.steps
    if base is not None:  # one curve over both stages, stage 2's steps after stage 1's
        log = list(base.get("log") or []) + [{**r, "step": r["step"] + base["steps"],
                                               "time": r["time"] + base["wall_time_s"]} for r in log]
        wall, steps = wall + base["wall_time_s"], steps + base["steps"]
    save_kit_checkpoint(model.cpu().eval(), out_path, pretrain_config=dataclasses.asdict(cfg), config_hash=h,
                        log=log, wall_time_s=wall, steps=steps, git_commit="+".join(commits),
                        amp="+".join(precisions))
    state_path.unlink(missing_ok=True)


@torch.no_grad()
def evaluate_contrastive(model, cfg: PretrainConfig, batches: int = 4, seed_offset: int = 10_000) -> dict:
    """In-distribution check on held-out captioned scenes (the training generator, another seed).

    -> dict(loss, acc, chance_loss, chance_acc): the pre-training loss and in-batch image->caption accuracy on
    `batches` batches of cfg.batch_size scenes drawn with seed cfg.seed + seed_offset, beside their chance values.
    """
    import open_clip

    held = dataclasses.replace(cfg, seed=cfg.seed + seed_offset)
    tokenizer = open_clip.get_tokenizer(getattr(model, "tcm_model_name", cfg.model),
                                        context_length=model.context_length)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses, accs, chance_acc = [], [], []
    for step in range(batches):
        images, captions = scene_batch(held, step)
        image_feat = dense_features(model, images.to(device)).global_feat
        text_feat = model.encode_text(tokenizer(captions).to(device))
        keys = positive_keys(cfg, captions)
        loss, acc = clip_loss(image_feat, text_feat, model.logit_scale, keys)
        losses.append(loss.item())
        accs.append(acc.item())
        chance_acc.append(np.mean([keys.count(k) / len(keys) for k in keys]))
    model.train(was_training)
    return {"loss": float(np.mean(losses)), "acc": float(np.mean(accs)),
            "chance_loss": math.log(cfg.batch_size), "chance_acc": float(np.mean(chance_acc))}


def evaluate_prior(model, n: int = 64, size: int = 256, seed: int = 1234, progress: bool = False) -> dict:
    """Zero-shot proof of the prior on independently drawn scenes (see tcm_kit.probe.evaluate_prior)."""
    from tcm_kit.probe import evaluate_prior as _evaluate

    return _evaluate(model, n=n, size=size, seed=seed, progress=progress)
