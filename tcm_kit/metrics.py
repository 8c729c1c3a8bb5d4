"""hmean-IoU for text detection, following the ICDAR 2015 Robust Reading protocol.

Rules (those of the official ICDAR 2015 challenge 4 `script.py`, also used by MMOCR's HmeanIOUMetric):
- a ground-truth flagged `ignore` (don't-care, "###") is never matched and not counted in n_gt;
- a prediction is dropped (not counted in n_pred) when its intersection with ONE don't-care gt covers strictly
  more than `ignore_thr` of the prediction's own area (each don't-care gt is checked on its own, not their union);
- matching is one-to-one and greedy in the official order: for each gt in order, the first (lowest index) still
  free prediction whose IoU with it is strictly greater than `iou_thr` is taken. This is NOT a maximum matching;
- counts are summed over the whole dataset, then precision = tp / n_pred, recall = tp / n_gt,
  hmean = 2PR / (P + R).

Empty cases, as in the official script:
- per image: no care gt -> recall 1, precision 1 if there is no counted prediction else 0;
  otherwise recall = tp / n_gt and precision = tp / n_pred (0 when n_pred == 0); hmean 0 when P + R == 0;
- dataset: recall 0 when n_gt == 0, precision 0 when n_pred == 0, hmean 0 when P + R == 0.

Polygons: self-intersecting polygons (bow-ties...) are repaired with `shapely.make_valid`. Degenerate polygons
(fewer than 3 points, non-finite coordinates, zero area) raise `InvalidPolygonError` for care ground
truth, and are dropped silently (listed in `invalid_preds`) for predictions. A degenerate don't-care gt covers no
area, so it can neither match nor drop anything: it is skipped rather than raised on (real "###" boxes are
sometimes collapsed). Deviation from the official script: it would count a zero-area detection as an unmatched
one; here it is dropped, as asked by the kit's issue.

Speed: polygons of the whole dataset are built with one vectorised shapely call; candidate (gt, pred) pairs are
those whose bounding boxes overlap (numpy, per image), and all their intersections are computed in one
vectorised `shapely.intersection` call.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from tqdm.auto import tqdm

DEFAULT_THRESHOLDS = np.arange(0.3, 0.91, 0.05)


class InvalidPolygonError(ValueError):
    """A polygon that cannot be evaluated: names the image index, the instance index and why."""

    def __init__(self, image: int, index: int, why: str, kind: str = "ground-truth"):
        self.image, self.index, self.why, self.kind = int(image), int(index), why, kind
        super().__init__(f"{kind} polygon: image {image}, instance {index}: {why}")


# ----------------------------------------------------------------------------------------------------------
# polygons


def _coords(poly, image: int, index: int, kind: str):
    """(N, 2) float64 without a repeated closing point, or None when it has fewer than 3 points."""
    try:
        c = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as e:
        raise InvalidPolygonError(image, index, f"not an (N, 2) array of coordinates ({e})", kind) from None
    if len(c) >= 2 and c[0, 0] == c[-1, 0] and c[0, 1] == c[-1, 1]:
        c = c[:-1]
    return c if len(c) >= 3 else None


@dataclass
class _Polys:
    geoms: np.ndarray  # (M,) object: shapely geometry, None where degenerate
    area: np.ndarray  # (M,) float64, 0 where degenerate
    bounds: np.ndarray  # (M, 4) xmin, ymin, xmax, ymax (nan where degenerate)
    ok: np.ndarray  # (M,) bool, usable
    why: list  # (M,) reason for not ok ("" when ok)
    image: np.ndarray  # (M,) int, owning image
    offsets: np.ndarray  # (n_images + 1,) int, image i owns [offsets[i], offsets[i+1])


def _build(per_image: list, kind: str) -> _Polys:
    """Flatten polygons of all images and build their shapely geometries in one vectorised call."""
    coords, image, sizes = [], [], []
    for i, polys in enumerate(per_image):
        sizes.append(len(polys))
        for j, p in enumerate(polys):
            coords.append(_coords(p, i, j, kind))
            image.append(i)
    m = len(coords)
    ok = np.array([c is not None for c in coords], dtype=bool)
    why = ["" if c is not None else "fewer than 3 points" for c in coords]
    good = np.flatnonzero(ok)
    if len(good):
        lengths = [len(coords[k]) for k in good]
        flat = np.concatenate([coords[k] for k in good])  # (sum N, 2)
        finite = np.logical_and.reduceat(np.isfinite(flat).all(1), np.cumsum([0] + lengths[:-1]))
        for k in good[~finite]:
            ok[k], why[k] = False, "non-finite coordinates"
        keep_pts = np.repeat(finite, lengths)
        ring_id = np.repeat(np.arange(finite.sum()), np.asarray(lengths)[finite])
        good = good[finite]
    geoms = np.full(m, None, dtype=object)
    if len(good):
        polys = shapely.polygons(shapely.linearrings(flat[keep_pts], indices=ring_id))
        bad = ~shapely.is_valid(polys)
        polys[bad] = shapely.make_valid(polys[bad])  # repair self-intersections (bow-ties...)
        geoms[good] = polys
    area = np.nan_to_num(shapely.area(geoms)) if m else np.zeros(0)
    for k in np.flatnonzero(ok & ~(area > 0)):
        ok[k], why[k] = False, "zero area"
    area = np.where(ok, area, 0.0)
    bounds = shapely.bounds(geoms).reshape(m, 4)
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    return _Polys(geoms, area, bounds, ok, why, np.asarray(image, dtype=np.int64), offsets)


def _check_gts(g: _Polys, ignore: np.ndarray) -> None:
    """Degenerate care gt -> InvalidPolygonError; degenerate don't-care gt -> skipped (ok stays False)."""
    bad = np.flatnonzero(~g.ok & ~ignore)
    if len(bad):
        k = bad[0]
        i = g.image[k]
        raise InvalidPolygonError(i, k - g.offsets[i], g.why[k])


# ----------------------------------------------------------------------------------------------------------
# pairs: everything that does not depend on which predictions are kept (computed once, reused by the sweep)


@dataclass
class _Prepared:
    n_images: int
    gt: _Polys
    pred: _Polys
    gt_ignore: np.ndarray  # (Mg,) bool
    pred_dropped: np.ndarray  # (Mp,) bool, covered by a don't-care gt
    cand_g: np.ndarray  # (K,) global gt index of pairs with IoU > iou_thr, sorted by (gt, pred)
    cand_p: np.ndarray  # (K,) global pred index
    cand_iou: np.ndarray  # (K,) float64


def _bbox_pairs(g: _Polys, p: _Polys, progress: bool):
    """Global (gt, pred) indices of usable pairs in the same image whose bounding boxes overlap."""
    gi, pi = [], []
    for i in tqdm(range(len(g.offsets) - 1), desc="hmean-iou pairs", disable=not progress):
        g0, g1, p0, p1 = g.offsets[i], g.offsets[i + 1], p.offsets[i], p.offsets[i + 1]
        if g0 == g1 or p0 == p1:
            continue
        gb, pb = g.bounds[g0:g1, None, :], p.bounds[None, p0:p1, :]  # (G,1,4), (1,P,4)
        hit = (gb[..., 0] <= pb[..., 2]) & (pb[..., 0] <= gb[..., 2])
        hit &= (gb[..., 1] <= pb[..., 3]) & (pb[..., 1] <= gb[..., 3])  # (G,P); nan bounds -> False
        a, b = np.nonzero(hit)
        gi.append(a + g0)
        pi.append(b + p0)
    if not gi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(gi), np.concatenate(pi)


def _prepare(preds, gts, iou_thr: float, ignore_thr: float, progress: bool) -> _Prepared:
    if len(preds) != len(gts):
        raise ValueError(f"preds has {len(preds)} images but gts has {len(gts)}")
    gt = _build([[inst.polygon for inst in im] for im in gts], "ground-truth")
    gt_ignore = np.array([bool(inst.ignore) for im in gts for inst in im], dtype=bool)
    _check_gts(gt, gt_ignore)
    pred = _build(preds, "prediction")
    gi, pi = _bbox_pairs(gt, pred, progress)
    inter = shapely.area(shapely.intersection(gt.geoms[gi], pred.geoms[pi]))  # (K,)
    inter = np.nan_to_num(inter)
    # don't-care: covered fraction of the prediction, one don't-care gt at a time (strict >)
    dc = gt_ignore[gi] & (inter / np.maximum(pred.area[pi], 1e-300) > ignore_thr)
    dropped = np.zeros(len(pred.ok), dtype=bool)
    dropped[pi[dc]] = True
    # IoU against care gts (strict >)
    iou = inter / (gt.area[gi] + pred.area[pi] - inter)
    m = ~gt_ignore[gi] & (iou > iou_thr)
    order = np.lexsort((pi[m], gi[m]))  # official order: gt-major, then pred
    return _Prepared(len(gts), gt, pred, gt_ignore, dropped, gi[m][order], pi[m][order], iou[m][order])


# ----------------------------------------------------------------------------------------------------------
# matching and summaries


def _greedy(cand_g, cand_p, cand_iou):
    """One-to-one greedy matching over candidate pairs sorted gt-major (indices are global, unique per image)."""
    used_g, used_p, out = set(), set(), []
    for a, b, v in zip(cand_g.tolist(), cand_p.tolist(), cand_iou.tolist()):
        if a in used_g or b in used_p:
            continue
        used_g.add(a)
        used_p.add(b)
        out.append((a, b, v))
    return out


def _ratios(tp: int, n_pred: int, n_gt: int, per_image: bool) -> tuple[float, float, float]:
    """(precision, recall, hmean) with the official script's empty-case conventions (see module doc)."""
    if per_image and n_gt == 0:
        recall, precision = 1.0, (0.0 if n_pred > 0 else 1.0)
    else:
        recall = tp / n_gt if n_gt else 0.0
        precision = tp / n_pred if n_pred else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, hmean


def _per_image(prep: _Prepared, keep: np.ndarray | None) -> list[dict]:
    """Per-image records for the predictions selected by `keep` ((Mp,) bool, None = all)."""
    g, p = prep.gt, prep.pred
    keep = np.ones(len(p.ok), dtype=bool) if keep is None else keep
    counted = p.ok & ~prep.pred_dropped & keep  # (Mp,)
    sel = counted[prep.cand_p]
    matches = _greedy(prep.cand_g[sel], prep.cand_p[sel], prep.cand_iou[sel])
    n = prep.n_images
    n_gt = np.bincount(g.image[~prep.gt_ignore], minlength=n)
    n_pred = np.bincount(p.image[counted], minlength=n)
    by_image = [[] for _ in range(n)]
    for a, b, v in matches:
        i = g.image[a]
        by_image[i].append((int(a - g.offsets[i]), int(b - p.offsets[i]), float(v)))
    records = []
    for i in range(n):
        local = slice(p.offsets[i], p.offsets[i + 1])
        tp = len(by_image[i])
        precision, recall, hmean = _ratios(tp, int(n_pred[i]), int(n_gt[i]), per_image=True)
        records.append(dict(
            precision=precision, recall=recall, hmean=hmean, tp=tp, n_pred=int(n_pred[i]), n_gt=int(n_gt[i]),
            matches=by_image[i],  # (gt index, pred index, iou), indices into gts[i] / preds[i]
            ignored_preds=np.flatnonzero(prep.pred_dropped[local] & p.ok[local] & keep[local]).tolist(),
            invalid_preds=np.flatnonzero(~p.ok[local] & keep[local]).tolist(),
        ))
    return records


def aggregate(per_image: list[dict]) -> dict:
    """Dataset figures from per-image records: counts summed first, then ratios (not a mean of per-image ratios)."""
    tp = sum(r["tp"] for r in per_image)
    n_pred = sum(r["n_pred"] for r in per_image)
    n_gt = sum(r["n_gt"] for r in per_image)
    precision, recall, hmean = _ratios(tp, n_pred, n_gt, per_image=False)
    return dict(precision=precision, recall=recall, hmean=hmean, tp=tp, n_pred=n_pred, n_gt=n_gt)


# ----------------------------------------------------------------------------------------------------------
# public API


def hmean_iou_per_image(preds, gts, iou_thr: float = 0.5, ignore_thr: float = 0.5,
                        progress: bool = False) -> list[dict]:
    """Per-image hmean-IoU records.

    preds: per image, a list of (N, 2) polygons (numpy arrays, flat (2N,) accepted); gts: per image, a list of
    `Instance` (polygon, text, ignore). Each record: precision, recall, hmean, tp, n_pred, n_gt, matches
    [(gt index, pred index, iou)], ignored_preds (dropped on don't-care), invalid_preds (degenerate, dropped).
    """
    return _per_image(_prepare(preds, gts, iou_thr, ignore_thr, progress), keep=None)


def hmean_iou(preds, gts, iou_thr: float = 0.5, ignore_thr: float = 0.5, progress: bool = False) -> dict:
    """Dataset hmean-IoU: dict(precision, recall, hmean, tp, n_pred, n_gt), counts summed over all images."""
    return aggregate(hmean_iou_per_image(preds, gts, iou_thr, ignore_thr, progress))


def best_threshold_sweep(scored_preds, gts, thresholds=DEFAULT_THRESHOLDS, iou_thr: float = 0.5,
                         ignore_thr: float = 0.5, progress: bool = False) -> dict:
    """hmean-IoU for each score threshold (a prediction is kept when score >= threshold) and the best one.

    scored_preds: per image, a list of (polygon, score). Geometry is computed once for all thresholds.
    Returns dict(results=[dict(threshold, precision, recall, hmean, tp, n_pred, n_gt), ...], best=<one of them>):
    best has the highest hmean, the lowest threshold among ties. Thresholds are rounded to 10 decimals
    (np.arange's 0.35000000000000003 -> 0.35).
    """
    polys = [[poly for poly, _ in im] for im in scored_preds]
    scores = np.array([float(s) for im in scored_preds for _, s in im], dtype=np.float64)
    prep = _prepare(polys, gts, iou_thr, ignore_thr, progress)
    results = []
    for t in thresholds:
        t = round(float(t), 10)
        summary = aggregate(_per_image(prep, keep=scores >= t))
        results.append(dict(threshold=t, **summary))
    if not results:
        raise ValueError("best_threshold_sweep needs at least one threshold")
    best = max(results, key=lambda r: r["hmean"])  # max() keeps the first of ties
    return dict(results=results, best=best)
