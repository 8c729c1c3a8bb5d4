"""The `tcm-kit` command line: reproduce | synth (more subcommands join as their modules land)."""
from __future__ import annotations

import argparse
import sys


def _cmd_reproduce(args) -> int:
    from .reproduce import NotebookFailed, run_notebooks

    try:
        run_notebooks(profile=args.profile, progress=not args.quiet)
    except NotebookFailed as e:
        print(f"tcm-kit reproduce: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_synth(args) -> int:
    from .data.synth import write_synth_set

    out = write_synth_set(args.preset, num=args.num, size=args.size, seed=args.seed, out=args.out,
                          workers=args.workers, progress=not args.quiet)
    print(f"wrote {args.num} {args.preset} images to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcm-kit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="run the numbered notebooks headless and regenerate reports/")
    r.add_argument("--profile", choices=["smoke", "cpu", "full"], default="cpu")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_cmd_reproduce)

    s = sub.add_parser("synth", help="write a synthetic scene-text set (images + annotations)")
    s.add_argument("--preset", required=True, help="synth-ic15 | synth-td500 | synth-total | synth-doc")
    s.add_argument("--num", type=int, default=1000)
    s.add_argument("--size", type=int, default=640)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_synth)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
