"""A training run's configuration: `TrainConfig`, nested frozen dataclasses (as open_clip's CLIPVisionCfg).

TrainConfig names the run (detector, domain, seed, shot, ...) and holds one config per job: `data` (the
synthetic splits' sizes), `aug` (training augmentation), `optim` (optimiser and schedule), `evaluation`, `head`
(the head family's own options, e.g. tcm_kit.heads.db.DBConfig) and `tcm` (tcm_kit.tcm.TCMConfig, for tcm-*
detectors). A run's identity is the hash of the whole nested config (tcm_kit.train.run_hash).

    cfg = TrainConfig.for_profile("cpu", detector="tcm-pan", optim=dict(steps=2000))
    cfg.updated(tcm=dict(visual_prompt=False))  # a dict updates the nested config field by field
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .detector import HEADS, head_family
from .heads.db import DBConfig, DBPostprocess
from .heads.fce import FCEConfig
from .heads.pan import PANConfig
from .tcm import TCMConfig

__all__ = ["TrainConfig", "TrainConfigError", "DataConfig", "AugConfig", "OptimConfig", "EvalConfig", "PROFILES"]

PROFILES = ("smoke", "cpu", "cpu-plan", "release", "full")


class TrainConfigError(ValueError):
    """An inconsistent training configuration."""


def _whole(**counts) -> None:
    bad = {k: v for k, v in counts.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise TrainConfigError(f"these must be whole numbers >= 1: {bad}")


def _choose(obj, **choices) -> None:
    wrong = {k: getattr(obj, k) for k, ok in choices.items() if getattr(obj, k) not in ok}
    if wrong:
        raise TrainConfigError(f"unknown choice(s) {wrong}; the choices are {choices}")


@dataclass(frozen=True)
class DataConfig:
    """The splits of a synthetic domain (num_val also caps the validation images carved from a real train/)."""
    num_train: int = 600
    num_val: int = 100
    num_test: int = 200
    image_size: int = 320  # side of the generated synthetic images
    # synthetic domains: text drawn larger (synth.with_text_scale) until the preset's smallest font is at least
    # this many pixels on the image_size canvas; None: the presets' own sizes
    min_text_px: float | None = None

    def __post_init__(self):
        _whole(num_train=self.num_train, num_val=self.num_val, num_test=self.num_test, image_size=self.image_size)


@dataclass(frozen=True)
class AugConfig:
    """Training augmentation (tcm_kit.data.transforms.train_transforms)."""
    train_size: int = 320  # training crop
    # random rescale before the crop, as a factor on the long side = train_size (DBNet: 0.5-3 of the image);
    # synthetic images larger than the crop want factors > 1 so that words keep their generated size
    scale_range: tuple = (0.5, 2.0)
    # "kit" (scale, rotate with the canvas grown, window crop, flip, jitter) | "official" (the official DBNet
    # pipeline: torchvision jitter, flip, rotate in place, scale relative to the image itself, MMOCR's
    # EastRandomCrop resized to fit train_size)
    pipeline: str = "kit"
    flip_p: float = 0.0  # horizontal-flip probability (official 0.5)
    max_angle: float = 10.0  # rotation uniform in +-max_angle degrees (official 10)
    color_jitter: tuple = (0.3, 0.3, 0.3, 0.05)  # brightness, contrast, saturation, hue (official 32/255, 0, 0.5, 0)

    def __post_init__(self):
        _whole(train_size=self.train_size)
        _choose(self, pipeline=("kit", "official"))
        if len(self.color_jitter) != 4 or not 0 <= self.flip_p <= 1 or len(self.scale_range) != 2:
            raise TrainConfigError(f"color_jitter is (brightness, contrast, saturation, hue), flip_p in [0, 1], "
                                   f"scale_range (lo, hi); got {self.color_jitter}, {self.flip_p}, "
                                   f"{self.scale_range}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule."""
    batch_size: int = 8  # per process (under DDP each rank trains on batch_size images per step)
    steps: int = 800
    lr: float = 1e-3
    backbone_lr_mult: float = 0.1  # image encoder at 0.1x the base rate (authors' code)
    weight_decay: float = 1e-4
    # "adamw" (decoupled weight decay) | "adam" (L2: the decay is added to the gradient; the official IC15 Adam)
    optimizer: str = "adamw"
    # parameters without weight decay: "none" | "official" (what mmcv's DefaultOptimizerConstructor makes of the
    # IC15 config's custom key 'norm': the LayerNorms inside the TCM decoders' layers) | "norms" (every
    # normalisation layer); see tcm_kit.train.no_decay_parameters
    no_decay: str = "none"
    # "warmup-poly" (linear warm-up over warmup_steps, then poly per step, floored at min_lr / lr) | "poly-epoch"
    # (mmcv's PolyLrUpdaterHook by epoch, the official: no warm-up)
    lr_schedule: str = "warmup-poly"
    warmup_steps: int = 50
    poly_power: float = 0.9
    min_lr: float = 1e-7

    def __post_init__(self):
        _whole(batch_size=self.batch_size, steps=self.steps)
        _choose(self, optimizer=("adamw", "adam"), no_decay=("none", "official", "norms"),
                lr_schedule=("warmup-poly", "poly-epoch"))
        if not self.lr > 0 or self.warmup_steps < 0:
            raise TrainConfigError(f"need lr > 0 and warmup_steps >= 0; got {self.lr}, {self.warmup_steps}")


@dataclass(frozen=True)
class EvalConfig:
    """How a run is scored."""
    test_size: int | tuple = 320  # evaluation resize: long side, or (long, short) as mmcv (official IC15 (4068, 1024))
    box_thresholds: tuple = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    # "val" (the kit's: box threshold picked on the validation split, the test split reported once) | "authors"
    # (also the authors' protocol, labelled: the test split evaluated every every_epochs and the best checkpoint
    # and box threshold on it reported, as the official save_best on the test set)
    protocol: str = "val"
    every_epochs: int = 5  # the authors' protocol's evaluation interval (official: evaluation interval=5)
    # the validation learning curve (out_dir/val_curve.csv: hmean on the validation split at its best box
    # threshold every val_every steps and at the last step, training unchanged); 0: none
    val_every: int = 0

    def __post_init__(self):
        test = self.test_size if isinstance(self.test_size, tuple) else (self.test_size,)
        if len(test) not in (1, 2):
            raise TrainConfigError(f"test_size is a long side or a (long, short) pair, got {self.test_size}")
        _whole(every_epochs=self.every_epochs, **{f"test_size[{i}]": v for i, v in enumerate(test)})
        _choose(self, protocol=("val", "authors"))
        if not isinstance(self.val_every, int) or self.val_every < 0:
            raise TrainConfigError(f"val_every is a number of steps >= 0 (0: no validation curve), got "
                                   f"{self.val_every!r}")
        if not self.box_thresholds:
            raise TrainConfigError("box_thresholds is empty")


HeadConfig = DBConfig | PANConfig | FCEConfig


@dataclass(frozen=True)
class TrainConfig:
    """One training run. head / tcm None: the detector's defaults (filled in, so a run's hash sees them)."""
    detector: str = "tcm-dbnet"  # <head> | tcm-<head> | <head>-scratch (tcm_kit.detector.DETECTORS)
    domain: str = "synth-ic15"  # synth-* preset, or a real domain read from data_root
    data_root: str | None = None  # real domains: folder with train/ [val/] test/
    data_format: str | None = None  # real domains: one of tcm_kit.data.formats.FORMATS; None: detected
    clip_weights: str = "embedded"  # embedded | openai | path to a checkpoint
    profile: str = "cpu"
    seed: int = 0
    shot: float = 1.0  # fraction of the training split (nested subsets across shots for one seed)
    # what the detector's input is normalised with: "clip" (OpenAI CLIP's mean/std) | "dbnet" (the official
    # pipeline's img_norm_cfg_r50dcnv2: DBNet's mean, ImageNet's std)
    pixel_norm: str = "clip"
    data: DataConfig = DataConfig()
    aug: AugConfig = AugConfig()
    optim: OptimConfig = OptimConfig()
    evaluation: EvalConfig = EvalConfig()
    head: HeadConfig | None = None
    tcm: TCMConfig | None = None
    ckpt_every: int = 100
    num_workers: int = 2
    # fine-tune from a finished detector of the same architecture instead of the CLIP weights alone: a run folder
    # (written by tcm-kit train) or "zoo:<name>" (a released detector, tcm_kit.zoo); None: train from the CLIP
    init_from: str | None = None
    # bumped when a code change alters what a config trains, so cached runs (keyed by run_hash) miss; the CLIP
    # weights a run starts from are in run_hash already (clip_fingerprint)
    code_version: int = 14

    def __post_init__(self):
        family, is_tcm, _ = _family(self.detector)
        if self.data_root is not None:  # one dataset, one identity, whatever the working directory
            object.__setattr__(self, "data_root", str(Path(self.data_root).expanduser().resolve()))
        head_cls = HEADS[family].Config
        if self.head is None:
            object.__setattr__(self, "head", head_cls())
        elif not isinstance(self.head, head_cls):
            raise TrainConfigError(f"{self.detector} takes head options of type {head_cls.__name__}, got "
                                   f"{type(self.head).__name__}")
        if is_tcm and self.tcm is None:
            object.__setattr__(self, "tcm", TCMConfig())
        elif not is_tcm and self.tcm is not None:
            raise TrainConfigError(f"{self.detector} has no TCM: tcm must be None, got {self.tcm}")
        _whole(ckpt_every=self.ckpt_every)
        _choose(self, pixel_norm=("clip", "dbnet"))
        if not 0 < self.shot <= 1:
            raise TrainConfigError(f"shot is a fraction of the training split in (0, 1], got {self.shot}")
        if self.num_workers < 0:
            raise TrainConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.data_format is not None:
            from .data.formats import FORMATS

            if self.data_format not in FORMATS or self.data_root is None:
                raise TrainConfigError(f"data_format names the annotation format of a real domain's data_root: "
                                       f"one of {FORMATS}; got {self.data_format!r} with data_root "
                                       f"{self.data_root!r}")

    def updated(self, **changes) -> "TrainConfig":
        """A copy with `changes`: a nested config field given as a dict is updated field by field (the other
        fields kept), given as a config it is replaced. Changing the detector's head family resets `head` (and
        leaving TCM resets `tcm`) unless they are given too."""
        cur = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if "detector" in changes:
            new_family, new_tcm, _ = _family(changes["detector"])
            if new_family != _family(self.detector)[0] and "head" not in changes:
                cur["head"] = None
            if not new_tcm:
                cur["tcm"] = None
        for k, v in changes.items():
            if k not in cur:
                raise TrainConfigError(f"TrainConfig has no field {k!r}")
            if isinstance(v, dict):
                nested = cur[k]
                if nested is None:  # reset above: the new detector's defaults
                    nested = getattr(TrainConfig(detector=changes.get("detector", self.detector)), k)
                if nested is None:
                    raise TrainConfigError(f"{changes.get('detector', self.detector)} has no TCM: no tcm options")
                try:
                    v = _from_dict(type(nested), {**_shallow(nested), **v})
                except TypeError as e:
                    raise TrainConfigError(f"{k}: {e}") from None
            cur[k] = v
        return TrainConfig(**cur)

    @classmethod
    def for_profile(cls, profile: str = "cpu", **overrides) -> "TrainConfig":
        """smoke: seconds (CI); cpu: about 10 min per run on 2 cores (`tcm-kit train`); cpu-plan: cpu shortened
        to 400 steps of batch 4 (1.5-2 min a run: the many runs of the cpu Plan of notebooks 02-05,
        tcm_kit.experiments.Plan); release: the released synthetic-only detectors (hours); full: the paper's
        setting on GPUs (real data). Overrides as in `updated`."""
        if profile not in PROFILES:
            raise TrainConfigError(f"profile must be one of {PROFILES}, got {profile!r}")
        detector = overrides.get("detector", cls.detector)
        family = _family(detector)[0]
        base = _profile_settings(profile, family)
        head = base.pop("head")
        if not detector.startswith("tcm-"):
            base.pop("tcm", None)
        cfg = cls(profile=profile, detector=detector).updated(head=head, **base)
        return cfg.updated(**overrides)

    @classmethod
    def from_dict(cls, fields: dict) -> "TrainConfig":
        """The config of `dataclasses.asdict(cfg)` (e.g. read back from a run's config.json)."""
        fields = dict(fields)
        family = _family(fields.get("detector", cls.detector))[0]
        if isinstance(fields.get("head"), dict):
            fields["head"] = _from_dict(HEADS[family].Config, fields["head"])
        if isinstance(fields.get("tcm"), dict):
            fields["tcm"] = _from_dict(TCMConfig, fields["tcm"])
        return _from_dict(cls, fields)


def _family(detector: str) -> tuple:
    from .heads.base import DetectorError

    try:
        return head_family(detector)
    except DetectorError as e:
        raise TrainConfigError(str(e)) from None


def _shallow(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _from_dict(cls, d: dict):
    """cls(**d) with nested dataclass fields rebuilt from dicts (by the type of the field's default) and lists
    made tuples (JSON has no tuples); unknown keys raise TypeError."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(defaults))
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and dataclasses.is_dataclass(defaults[k]):
            v = _from_dict(type(defaults[k]), v)
        elif isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return cls(**out)


# the official IC15 DBNet config's DBParamPostprocessor (clip_db_r50_fpnc_prompt_gen_vis_1200e_ft_gen_ic15_adam_taiji)
OFFICIAL_DB_POSTPROCESS = DBPostprocess(thresh=0.28, box_thresh=0.2, unclip_ratio=1.6, min_size=2,
                                        max_candidates=3000, polygon=False, contour_approx=0.001)


def _profile_settings(profile: str, family: str) -> dict:
    """The profile's TrainConfig.updated() arguments for a detector of head family `family`."""
    if profile == "smoke":
        head = {"dbnet": dict(width=32), "pan": dict(width=32, head="pan_pp"), "fcenet": dict(width=32)}[family]
        return dict(data=dict(num_train=8, num_val=4, num_test=4, image_size=128), aug=dict(train_size=128),
                    optim=dict(batch_size=2, steps=4, warmup_steps=1),
                    evaluation=dict(test_size=128, box_thresholds=(0.3, 0.6), val_every=2),
                    ckpt_every=2, num_workers=0, head=head,
                    tcm=dict(decoder_width=32, dense_attention="value", prompt_init="prior", aux_loss="bce"))
    if profile == "cpu-plan":
        cpu = _profile_settings("cpu", family)
        # validation at steps 150, 300 (3/4 of the run, where the plateau test starts: tables.plateau_table) and 400
        return {**cpu, "optim": {**cpu["optim"], "steps": 400, "batch_size": 4, "warmup_steps": 40},
                "evaluation": {**cpu["evaluation"], "val_every": 150}, "num_workers": 0}
    if profile == "release":
        # the released synthetic-only detectors (tcm_kit/weights/, `tcm-kit train --profile release`): the cpu recipe
        # on 20x its training images (4,000) for 12x its steps, with the validation curve every 1,000 steps; one
        # thread and no data workers, so that two detectors train side by side on a 2-core machine
        cpu = _profile_settings("cpu", family)
        return {**cpu, "data": {**cpu["data"], "num_train": 4000, "num_val": 100},
                "optim": {**cpu["optim"], "steps": 12000, "warmup_steps": 200},
                "evaluation": {**cpu["evaluation"], "val_every": 1000}, "ckpt_every": 500, "num_workers": 0}
    if profile == "cpu":
        # 160 px crops of 320 px images, text drawn with its smallest font at 16 px; DBNet and PAN rescale by
        # 1.0-1.6 of the crop's side (the image at 0.5-0.8x, most of it in each crop) at lr 4e-3, FCENet by 1.6-2.4
        # (its words at their drawn size) at lr 2e-3 (reports/NOTES.md, 2026-12-02); TCM on the value path with
        # the prior init, where its score map starts from the embedded CLIP's prior instead of near chance
        # (reports/score_map_step0.md), and the paper's plain BCE as its auxiliary loss: with the code's OHEM the score
        # map of the embedded CLIP's weak prior is pushed to a constant (reports/NOTES.md, 2026-12-05)
        head = {"dbnet": dict(width=64, prob_loss="dice"), "pan": dict(width=64, head="pan_pp"),
                "fcenet": dict(width=64, cls_loss="balanced", tr_reg_weight=0.5, norm=True)}[family]
        scale, lr = ((1.6, 2.4), 2e-3) if family == "fcenet" else ((1.0, 1.6), 4e-3)
        return dict(data=dict(num_train=200, num_val=50, num_test=200, image_size=320, min_text_px=16.0),
                    aug=dict(train_size=160, scale_range=scale),
                    optim=dict(steps=1000, lr=lr, warmup_steps=50),
                    evaluation=dict(test_size=320, box_thresholds=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), val_every=100),
                    head=head, tcm=dict(decoder_width=64, dense_attention="value", prompt_init="prior", aux_loss="bce"))
    # full: the official IC15 config (configs/textdet/dbnet/clip_db_r50_fpnc_prompt_gen_vis_1200e_ft_gen_ic15_adam_
    # taiji.py and its bases); steps are set per dataset by the caller: epochs * len(train) / (batch_size * GPUs),
    # 1200 epochs in the paper (75,000 steps: 1000 images on one GPU; 9,375 on 8)
    head = {"dbnet": dict(width=HEADS["dbnet"].paper_width, postprocess=OFFICIAL_DB_POSTPROCESS),
            "pan": dict(width=HEADS["pan"].paper_width), "fcenet": dict(width=HEADS["fcenet"].paper_width)}[family]
    return dict(clip_weights="openai", pixel_norm="dbnet",
                data=dict(num_train=1000, num_val=200, num_test=500, image_size=640),
                aug=dict(train_size=640, pipeline="official", flip_p=0.5, scale_range=(0.5, 3.0), max_angle=10.0,
                         color_jitter=(32 / 255, 0.0, 0.5, 0.0)),
                optim=dict(batch_size=16, steps=75000, lr=1e-4, optimizer="adam", no_decay="official",
                           lr_schedule="poly-epoch", warmup_steps=0),
                evaluation=dict(test_size=(4068, 1024), box_thresholds=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
                ckpt_every=1000, num_workers=8, head=head,
                tcm=dict(prompt="the pixels of many arbitrary-shape text instances."))
