"""The `tcm-kit` command line: reproduce | synth | pretrain | train | eval | predict | calibrate."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import PROFILES
from .data.formats import FORMATS
from .precision import ENV, PRECISIONS, requested_precision


def _cmd_reproduce(args) -> int:
    from .reproduce import NotebookFailed, run_notebooks

    try:
        run_notebooks(profile=args.profile, progress=not args.quiet, data=args.data)
    except NotebookFailed as e:
        print(f"tcm-kit reproduce: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_synth(args) -> int:
    from .data.synth import write_synth_set

    if args.gallery:
        return _gallery(args)
    if not args.preset or not args.out:
        print("tcm-kit synth: --preset and --out are required (or --gallery)", file=sys.stderr)
        return 2
    out = write_synth_set(args.preset, num=args.num, size=args.size, seed=args.seed, out=args.out,
                          workers=args.workers, progress=not args.quiet)
    print(f"wrote {args.num} {args.preset} images to {out}")
    return 0


def _gallery(args) -> int:
    import time

    from .data.synth import gallery
    from .report import Stamp, save_figure

    t0 = time.time()
    fig = gallery(seed=args.seed, n=3, size=320)
    path = save_figure(fig, "synth_gallery", "Synthetic scene-text domains (polygons: green care, red don't-care)",
                       Stamp(profile="n/a", seeds=(args.seed,), wall_seconds=time.time() - t0), dpi=80)
    print(f"gallery: {path}")
    return 0


def _train_config(args):
    from .train import TrainConfig

    overrides = {k: getattr(args, k) for k in ("detector", "domain", "data_root", "data_format", "clip_weights",
                                               "seed", "shot", "init_from") if getattr(args, k, None) is not None}
    optim = {k: getattr(args, k) for k in ("steps", "batch_size", "lr") if getattr(args, k, None) is not None}
    return TrainConfig.for_profile(args.profile, **overrides, optim=optim)


def _cmd_train(args) -> int:
    from .train import train

    result = train(_train_config(args), args.out, progress=not args.quiet)
    if result:  # rank 0
        print(" ".join(f"{k}={result[k]:.4f}" for k in ("precision", "recall")))
        print(f"hmean={result['hmean']:.4f}")
        if args.export:
            from .train import export_detector

            rec = export_detector(args.out, args.export)
            print(f"released: {rec['file']} sha256 {rec['sha256']} ({rec['size_bytes'] / 2**20:.1f} MB)")
    return 0


def _cmd_eval(args) -> int:
    from .train import evaluate_checkpoint

    if args.format and not args.data:
        print("tcm-kit: error: --format names the format of --data (the run's own test split is read in the "
              "format it was trained with)", file=sys.stderr)
        return 2
    result = evaluate_checkpoint(args.run, test_root=args.data, progress=not args.quiet, size=args.size,
                                 test_format=args.format)
    print(f"test images resized to a long side of {result['test_size']} px")
    print(" ".join(f"{k}={result[k]:.4f}" for k in ("precision", "recall")))
    print(f"hmean={result['hmean']:.4f}")
    return 0


def _cmd_predict(args) -> int:
    from .train import predict_images, run_config

    first = Path(args.inputs[0])
    run, images = (first, args.inputs[1:]) if (first / "config.json").is_file() else (None, args.inputs)
    if not images:
        print("tcm-kit: error: no images given", file=sys.stderr)
        return 2
    if run is None:  # a missing release is said here, a damaged one when predict_images loads it
        size = args.size or _released_test_size(args.detector)
    else:
        size = args.size or run_config(run).evaluation.test_size
    print(f"images resized to a long side of {size} px")
    failed = 0
    for png, txt in predict_images(run, images, args.out, progress=not args.quiet, size=size,
                                   released=args.detector):
        if png is None:
            failed += 1
            print(f"tcm-kit: skipped: {txt}", file=sys.stderr)
        else:
            print(f"{png}  {txt}")
    return 1 if failed else 0


def _released_test_size(name) -> int:
    from .zoo import DEFAULT_DETECTOR, PHOTO_SIZE, detector_record

    name = name or DEFAULT_DETECTOR
    print(f"released detector {name}")
    return int(detector_record(name).get("photo_size", PHOTO_SIZE))


def _cmd_calibrate(args) -> int:
    from .calibrate import PHOTO_SIZES, calibrate_photos, calibration_split
    from .train import load_detector
    from .zoo import record_calibration

    root = calibration_split(args.data)
    model, _, _ = load_detector(args.detector)
    entry = calibrate_photos(model, root, sizes=args.sizes or PHOTO_SIZES, progress=not args.quiet)
    record_calibration(args.detector, entry)
    print(f"{args.detector}: box_thresh {entry['box_thresh']:g} at long side {entry['long_side']} px, hmean "
          f"{entry['hmean']:.4f} (P {entry['precision']:.4f} R {entry['recall']:.4f}) on {entry['photos']} photos "
          f"of {entry['split']} ({entry['data']}); recorded in its record's photo_calibration")
    return 0


def _cmd_pretrain(args) -> int:
    from .pretrain import PretrainConfig, checkpoint_path, pretrain

    cfg = PretrainConfig.for_profile(args.profile)
    out = Path(args.out) if args.out else checkpoint_path(args.profile)
    path = pretrain(cfg, out, progress=not args.quiet, stop_after=args.stop_after)
    if args.stop_after is not None and args.stop_after < cfg.steps:
        print(f"embedded CLIP [{args.profile}]: stopped at step {args.stop_after} of {cfg.steps}; "
              "run the same command without --stop-after to go on")
        return 0
    print(f"embedded CLIP [{args.profile}]: {path}")
    if args.export:
        from .release import export_release

        rec = export_release(path, progress=not args.quiet)
        print(f"released: {rec['file']} sha256 {rec['sha256']} ({rec['size_bytes'] / 2**20:.1f} MB)")
        for r in rec["probe"]["rows"]:
            print(f"  probe {r['size']}: image AUC {r['image_auc']:.3f}, dense AUC {r['dense_auc']:.3f}")
    return 0


def _add_train_args(t) -> None:
    t.add_argument("--detector", default=None, help="<head> | tcm-<head> | <head>-scratch, head: dbnet (default tcm-dbnet)")
    t.add_argument("--domain", default=None, help="synth-ic15 | synth-td500 | synth-total | synth-doc | a real domain")
    t.add_argument("--data-root", dest="data_root", default=None, help="real domains: folder with train/ and test/")
    t.add_argument("--format", dest="data_format", choices=FORMATS, default=None,
                   help="annotation format of --data-root (default: detected from the files)")
    t.add_argument("--clip-weights", dest="clip_weights", default=None, help="embedded | openai | path")
    t.add_argument("--init-from", dest="init_from", default=None,
                   help="fine-tune from a finished run folder, or zoo:<name> for a released detector")
    t.add_argument("--profile", choices=list(PROFILES), default="cpu")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--shot", type=float, default=None, help="fraction of the training split")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)


def _add_precision_arg(parser) -> None:
    parser.add_argument("--precision", choices=list(PRECISIONS), default=None,
                        help="training precision: auto (bf16 where the hardware has it natively, else fp32; the "
                             "default), fp32 or bf16; sets TCM_KIT_PRECISION for this command and its workers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcm-kit", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="run the numbered notebooks headless and regenerate reports/")
    r.add_argument("--profile", choices=["smoke", "cpu", "full"], default="cpu")
    r.add_argument("--data", default=None,
                   help="folder with real benchmarks (icdar2015/test, td500/train, td500/test): adds their rows")
    _add_precision_arg(r)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_cmd_reproduce)

    s = sub.add_parser("synth", help="write a synthetic scene-text set (images + annotations)")
    s.add_argument("--preset", help="synth-ic15 | synth-td500 | synth-total | synth-doc")
    s.add_argument("--num", type=int, default=1000)
    s.add_argument("--size", type=int, default=640)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out")
    s.add_argument("--gallery", action="store_true", help="write reports/synth_gallery.png (every preset) instead")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_synth)

    t = sub.add_parser("train", help="train a detector (resumes a run in --out; a finished run is not retrained)")
    _add_train_args(t)
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--export", default=None, metavar="NAME",
                   help="once the run has finished, release it as the detector NAME in tcm_kit/weights (model zoo)")
    _add_precision_arg(t)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a finished run's checkpoint on its test split or another folder")
    e.add_argument("run", help="run folder (written by tcm-kit train)")
    e.add_argument("--data", default=None, help="annotated folder to test on (default: the run's test split)")
    e.add_argument("--format", choices=FORMATS, default=None,
                   help="annotation format of --data (default: detected from the files)")
    e.add_argument("--size", type=int, default=None,
                   help="long side the test images are resized to (default: the run's test_size)")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=_cmd_eval)

    pr = sub.add_parser("predict", help="detect text in images: PNG with polygons + ICDAR2015 txt per image")
    pr.add_argument("inputs", nargs="+", metavar="[RUN] IMAGE",
                    help="a run folder (written by tcm-kit train) then images; without a run folder, a released "
                         "detector (--detector)")
    pr.add_argument("--detector", default=None,
                    help="released detector used when no run folder is given (tcm_kit/weights; default: the "
                         "synthetic-trained TCM-DBNet)")
    pr.add_argument("--out", default="predictions")
    pr.add_argument("--size", type=int, default=None,
                    help="long side the images are resized to (default: the run's test_size; a released "
                         "detector's photo_size, 1280)")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=_cmd_predict)

    k = sub.add_parser("calibrate", help="choose a released detector's box threshold and long side for photos on "
                                         "real validation photos (td500/train), and record them")
    k.add_argument("detector", help="released detector (tcm_kit/weights)")
    k.add_argument("--data", required=True, help="folder laid out like ../shared/datasets, with td500/train")
    k.add_argument("--sizes", nargs="+", type=int, default=None, help="long sides tried (default 640 960 1280)")
    k.add_argument("--quiet", action="store_true")
    k.set_defaults(func=_cmd_calibrate)

    c = sub.add_parser("pretrain", help="pre-train (or resume) the embedded CLIP of a profile")
    c.add_argument("--profile", choices=["smoke", "cpu", "release", "full"], default="cpu")
    c.add_argument("--out", default=None, help="checkpoint file (default: data/clip/<config hash>.pt)")
    c.add_argument("--stop-after", dest="stop_after", type=int, default=None,
                   help="stop after this many steps in total (resumable), to train in parts")
    c.add_argument("--export", action="store_true",
                   help="then write it as the released embedded CLIP (tcm_kit/weights/, fp16, hashed, probed)")
    _add_precision_arg(c)
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=_cmd_pretrain)
    return p


def _is_kit_error(e: BaseException) -> bool:
    """An error of one of the kit's own families (AnnotationError, ClipWeightsError, CheckpointError, ...): its
    message names the file (and line) and what to do, so the traceback adds nothing for a user."""
    return any(c.__module__.startswith("tcm_kit.") and c.__name__.endswith(("Error", "Failed"))
               for c in type(e).__mro__)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "precision", None):  # through the environment: pool workers and notebook kernels inherit it
        os.environ[ENV] = args.precision
    try:
        requested_precision()  # a bad TCM_KIT_PRECISION is one line before any work, not a traceback mid-run
        return args.func(args)
    except Exception as e:  # noqa: BLE001 - only the kit's own families are turned into one line
        if args.debug or not _is_kit_error(e):
            raise
        print(f"tcm-kit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # also `torchrun --nproc_per_node=K -m tcm_kit.cli train ...` (DDP)
    from .train import exit_process

    exit_process(main())
