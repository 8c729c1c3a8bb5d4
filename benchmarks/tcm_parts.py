"""Where TCM's inference time goes: each part of a tcm-dbnet forward timed on its own, next to plain DBNet.

python -m benchmarks.tcm_parts [--arch TCM-RN-tiny|RN50] [--size 640] [--batch 1] [--runs 10] [--threads 1]

Random weights, eval mode, no grad. The parts, in forward order (tcm_kit.tcm.TCM.forward):
  image encoder    CLIP stem + stages 1-4 (shared with dbnet)
  attention pool   the attention pool applied densely (pixel embeddings I) and to the mean token (global Ī)
  text side        language prompt generator cue cc(Ī) + the frozen text encoder (per image: the cue depends on it)
  visual prompt    the visual prompt generator Î = I + γ·dec(I, t)
  matching         cosine map between Î and t (B,K,h,w)
  head             DBNet neck + maps on the 4 stages (tcm-dbnet: the stride-32 map has K more channels)
Each part is timed on inputs computed once beforehand (median of `runs` after 3 warm-ups), so the parts add up to
roughly, not exactly, the whole forward (also timed, `forward`). `x dbnet` divides by the dbnet forward timed in
the same process; `share of overhead` divides a TCM-only part by (tcm-dbnet forward - dbnet forward).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks import repeat_timed


def _median_ms(fn, runs: int, device: str) -> float:
    return 1000 * float(np.median(repeat_timed(fn, runs, device)))  # after 3 warm-up runs


def measure(arch: str = "TCM-RN-tiny", size: int = 640, batch: int = 1, runs: int = 10, threads: int = 1,
            device: str = "cpu") -> list[dict]:
    """One row per part: {"part", "ms", "x_dbnet", "overhead_share"} plus the arch/size/batch/device."""
    import torch

    from tcm_kit.clip import attnpool_dense, create_clip
    from tcm_kit.detector import build_detector

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clip = create_clip(arch, seed=0)
    tcm_det = build_detector("tcm-dbnet", clip).to(device).eval()
    db_det = build_detector("dbnet", clip).to(device).eval()
    tcm = tcm_det.backbone
    visual = tcm.clip.visual
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    t = {}
    with torch.no_grad():
        def stages():
            y = visual.stem(x)
            out = []
            for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
                y = layer(y)
                out.append(y)
            return out

        feats = stages()
        dense, glob = attnpool_dense(visual.attnpool, feats[3])
        text = tcm.text_embeddings(glob)
        text = text.expand(batch, -1, -1) if text.shape[0] != batch else text
        vis = tcm.vpg(dense, text) if tcm.vpg is not None else dense

        def matching():
            return torch.cat([feats[3], tcm.match(vis, text).to(feats[3].dtype)], dim=1)

        c5 = matching()
        t["image encoder"] = _median_ms(stages, runs, device)
        t["attention pool"] = _median_ms(lambda: attnpool_dense(visual.attnpool, feats[3]), runs, device)
        t["text side"] = _median_ms(lambda: tcm.text_embeddings(glob), runs, device)
        if tcm.vpg is not None:
            t["visual prompt"] = _median_ms(lambda: tcm.vpg(dense, text), runs, device)
        t["matching"] = _median_ms(matching, runs, device)
        t["head (tcm-dbnet)"] = _median_ms(lambda: tcm_det.head([*feats[:3], c5]), runs, device)
        t["head (dbnet)"] = _median_ms(lambda: db_det.head(feats), runs, device)
        t["forward tcm-dbnet"] = _median_ms(lambda: tcm_det(x), runs, device)
        t["forward dbnet"] = _median_ms(lambda: db_det(x), runs, device)
    base, over = t["forward dbnet"], t["forward tcm-dbnet"] - t["forward dbnet"]
    tcm_only = {"attention pool", "text side", "visual prompt", "matching"}
    rows = []
    for part, ms in t.items():
        share = ms / over if part in tcm_only and over > 0 else None
        if part == "head (tcm-dbnet)" and over > 0:
            share = (ms - t["head (dbnet)"]) / over
        rows.append({"arch": arch, "size": size, "batch": batch, "device": device, "threads": threads,
                     "part": part, "ms": ms, "x_dbnet": ms / base, "overhead_share": share})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="TCM-RN-tiny")
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    a = p.parse_args(argv)
    rows = measure(a.arch, a.size, a.batch, a.runs, a.threads, a.device)
    if a.json:
        print(json.dumps(rows))
        return
    print(f"{a.arch}, {a.size} px, batch {a.batch}, {a.device}, {a.threads} thread(s)")
    print(f"{'part':<20}{'ms':>10}{'x dbnet':>9}{'share of overhead':>19}")
    for r in rows:
        share = "" if r["overhead_share"] is None else f"{r['overhead_share']:.2f}"
        print(f"{r['part']:<20}{r['ms']:>10.1f}{r['x_dbnet']:>9.2f}{share:>19}")


if __name__ == "__main__":
    main()
