"""Readers and writers of text-detection annotation formats.

Every reader returns a list of `Instance`: polygon float32 (N, 2) in pixels, transcription, don't-care flag.
Formats: ICDAR2015 (`gt_img_1.txt`), Total-Text txt (`poly_gt_img1.txt`), CTW1500 txt (`1001.txt`, both the
bbox+offsets and the absolute `####text` forms), MSRA-TD500 (`IMG_0059.gt`) and MMOCR textdet JSON.
`read_folder(root)` pairs images with their annotation files and yields `(image_path, instances)`.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Instance:
    polygon: np.ndarray  # float32 (N, 2), pixel coordinates (x, y)
    text: str = ""
    ignore: bool = False  # don't-care ("###") region

    def __post_init__(self):
        self.polygon = np.asarray(self.polygon, dtype=np.float32).reshape(-1, 2)


class AnnotationError(ValueError):
    """A malformed annotation: names the file, the 1-based line number (0 when not line-bound) and why."""

    def __init__(self, path, line: int, why: str):
        self.path, self.line, self.why = Path(path), int(line), why
        super().__init__(f"{path}:{line}: {why}")


class MissingFileError(AnnotationError):
    """An image without annotation or an annotation without image (or a file that does not exist)."""

    def __init__(self, path, why: str, missing=()):
        self.missing = [Path(p) for p in missing]
        super().__init__(path, 0, why)


FORMATS = ("icdar2015", "totaltext", "ctw1500", "td500", "mmocr")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
IGNORE_TEXTS = ("###",)
TOTALTEXT_IGNORE = ("#", "###")

# ---------------------------------------------------------------------------------------------- helpers


def _read_text(path) -> str:
    """A UTF-8 file (with or without BOM); MissingFileError / AnnotationError when absent / undecodable."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "annotation file not found", [path])
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(path, 0, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _read_lines(path) -> list[tuple[int, str]]:
    """(1-based line number, line) of the non-blank lines of a text file."""
    text = _read_text(path)
    return [(i, ln.rstrip("\r")) for i, ln in enumerate(text.split("\n"), 1) if ln.strip()]


def _numbers(fields, path, lineno) -> list[float]:
    """Parse coordinate strings; AnnotationError on a non-numeric or non-finite one."""
    out = []
    for f in fields:
        try:
            v = float(f)
        except ValueError:
            raise AnnotationError(path, lineno, f"non-numeric coordinate {f.strip()!r}") from None
        if not math.isfinite(v):
            raise AnnotationError(path, lineno, f"non-finite coordinate {f.strip()!r}")
        out.append(v)
    return out


def _polygon(values, path, lineno) -> np.ndarray:
    """Flat [x1, y1, x2, y2, ...] -> float32 (N, 2); N >= 3 and an even count, else AnnotationError."""
    if len(values) % 2:
        raise AnnotationError(path, lineno, f"odd number of coordinates ({len(values)})")
    if len(values) < 6:
        raise AnnotationError(path, lineno, f"polygon with {len(values) // 2} points (need at least 3)")
    return np.asarray(values, dtype=np.float32).reshape(-1, 2)


def _fmt_num(v) -> str:
    """Shortest text that reads back to the same float32: '12' for integral values, '12.5' otherwise."""
    v = np.float32(v)
    return str(int(v)) if float(v).is_integer() else np.format_float_positional(v, trim="-")


def _check_text(text, path, k):
    if "\n" in text or "\r" in text:
        raise AnnotationError(path, 0, f"instance {k}: transcription contains a line break")


def _write_lines(path, lines):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- ICDAR2015


def _leading_numbers(text: str) -> int:
    """How many comma-separated fields at the start of `text` are numbers."""
    k = 0
    for f in text.split(","):
        try:
            float(f)
        except ValueError:
            break
        k += 1
    return k


def read_icdar2015(path) -> list[Instance]:
    """`x1,y1,...,x4,y4,transcription` per line; the transcription may contain commas; `###` = don't care."""
    out = []
    for i, line in _read_lines(path):
        parts = line.split(",", 8)
        if len(parts) < 8:
            raise AnnotationError(path, i, f"expected 8 coordinates and a transcription, got {len(parts)} fields")
        text = parts[8] if len(parts) == 9 else ""
        extra = _leading_numbers(text)
        if extra >= 2 and extra % 2 == 0 and len(text.split(",")) > extra:
            raise AnnotationError(path, i, f"{8 + extra} coordinates before the transcription "
                                  f"{text.split(',')[extra]!r}: a polygon, but ICDAR2015 lines hold quads (4 points); "
                                  "write polygons in the Total-Text or MMOCR JSON format")
        poly = _polygon(_numbers(parts[:8], path, i), path, i)
        out.append(Instance(poly, text, text in IGNORE_TEXTS))
    return out


def write_icdar2015(path, instances) -> None:
    """Write quadrilaterals as ICDAR2015 lines; a don't-care instance is written with `###`."""
    lines = []
    for k, inst in enumerate(instances):
        if len(inst.polygon) != 4:
            raise AnnotationError(path, 0, f"instance {k} has {len(inst.polygon)} points; ICDAR2015 holds quads")
        _check_text(inst.text, path, k)
        coords = ",".join(_fmt_num(v) for v in inst.polygon.reshape(-1))
        lines.append(f"{coords},{'###' if inst.ignore else inst.text}")
    _write_lines(path, lines)


# ---------------------------------------------------------------------------------------------- Total-Text

_TT_RECORD = re.compile(
    r"^x:\s*\[\[(?P<x>[^\]]*)\]\]\s*,\s*y:\s*\[\[(?P<y>[^\]]*)\]\]\s*"
    r"(?:,\s*ornt:\s*\[(?P<ornt>[^\]]*)\]\s*)?"
    r",\s*transcriptions:\s*\[(?P<text>.*)\]\s*$",
    re.IGNORECASE,
)


def _tt_string(s: str) -> str:
    """`u'abc'` / `'abc'` / `u"abc"` -> `abc`."""
    m = re.fullmatch(r"\s*[uU]?(['\"])(.*)\1\s*", s)
    return m[2] if m else s.strip()


def _tt_records(path) -> list[tuple[int, str]]:
    """Group lines into records: each starts with `x:`; a record may wrap over several lines."""
    records = []
    for i, line in _read_lines(path):
        if line.lstrip().lower().startswith("x:"):
            records.append((i, line.strip()))
        elif records:
            records[-1] = (records[-1][0], records[-1][1] + " " + line.strip())
        else:
            raise AnnotationError(path, i, "unparseable Total-Text record: text before the first 'x:' record")
    return records


def read_totaltext(path) -> list[Instance]:
    """`x: [[..]], y: [[..]], ornt: [u'h'], transcriptions: [u'..']`; `#`/`###` (or ornt `#`) = don't care."""
    out = []
    for i, rec in _tt_records(path):
        m = _TT_RECORD.match(rec)
        if m is None:
            raise AnnotationError(path, i, f"unparseable Total-Text record: {rec[:80]!r}")
        xs = _numbers([t for t in re.split(r"[\s,]+", m["x"]) if t], path, i)
        ys = _numbers([t for t in re.split(r"[\s,]+", m["y"]) if t], path, i)
        if len(xs) != len(ys):
            raise AnnotationError(path, i, f"{len(xs)} x values but {len(ys)} y values")
        if len(xs) < 3:
            raise AnnotationError(path, i, f"polygon with {len(xs)} points (need at least 3)")
        text = _tt_string(m["text"])
        ignore = text in TOTALTEXT_IGNORE or _tt_string(m["ornt"] or "") == "#"
        out.append(Instance(np.stack([xs, ys], 1), text, ignore))
    return out


def write_totaltext(path, instances) -> None:
    """Write polygons of any number of points as Total-Text txt records (don't care -> `###`, ornt `#`)."""
    lines = []
    for k, inst in enumerate(instances):
        _check_text(inst.text, path, k)
        text = "###" if inst.ignore else inst.text
        ornt = "#" if inst.ignore else ("h" if len(inst.polygon) == 4 else "c")
        q = '"' if "'" in text else "'"
        xs = " ".join(_fmt_num(v) for v in inst.polygon[:, 0])
        ys = " ".join(_fmt_num(v) for v in inst.polygon[:, 1])
        lines.append(f"x: [[{xs}]], y: [[{ys}]], ornt: [u'{ornt}'], transcriptions: [u{q}{text}{q}]")
    _write_lines(path, lines)


# ---------------------------------------------------------------------------------------------- CTW1500


def _ctw_line(line, path, i) -> Instance:
    if "####" in line:  # test-gt form: absolute x1,y1,...,xn,yn,####transcription
        coords, text = line.split("####", 1)
        fields = [f for f in coords.split(",") if f.strip()]
        return Instance(_polygon(_numbers(fields, path, i), path, i), text, text in IGNORE_TEXTS)
    fields = line.split(",")
    if len(fields) == 28:  # absolute form without transcription
        return Instance(_polygon(_numbers(fields, path, i), path, i))
    if len(fields) != 32:
        raise AnnotationError(
            path, i, f"expected 32 fields (xmin,ymin,xmax,ymax + 14 offset points) or 28 coordinates "
            f"followed by ####transcription, got {len(fields)} fields")
    v = _numbers(fields, path, i)
    offsets = np.asarray(v[4:], dtype=np.float32).reshape(14, 2)  # (dx, dy) relative to (xmin, ymin)
    return Instance(offsets + np.asarray(v[:2], dtype=np.float32))


def read_ctw1500(path) -> list[Instance]:
    """CTW1500 txt: 32 integers (bbox + 14 offsets from (xmin, ymin)) or 28 absolute coords + `####text`."""
    return [_ctw_line(line, path, i) for i, line in _read_lines(path)]


# ---------------------------------------------------------------------------------------------- MSRA-TD500


def td500_corners(x, y, w, h, theta) -> np.ndarray:
    """Rotated rectangle -> float32 (4, 2): (x, y) top-left of the unrotated box, rotation about its centre."""
    cx, cy = x + w / 2, y + h / 2
    d = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=np.float64) / 2  # tl, tr, br, bl
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return (d @ rot.T + [cx, cy]).astype(np.float32)


def read_td500(path) -> list[Instance]:
    """MSRA-TD500 `.gt`: `index difficult x y w h theta` (radians) per line; difficult=1 -> don't care."""
    out = []
    for i, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 7:
            raise AnnotationError(path, i, f"expected 7 fields (index difficult x y w h theta), got {len(parts)}")
        _, difficult, x, y, w, h, theta = _numbers(parts, path, i)
        if w <= 0 or h <= 0:
            raise AnnotationError(path, i, f"box with non-positive width or height ({w:g} x {h:g})")
        out.append(Instance(td500_corners(x, y, w, h, theta), "", difficult != 0))
    return out


# ---------------------------------------------------------------------------------------------- MMOCR JSON

MMOCR_METAINFO = {"dataset_type": "TextDetDataset", "task_name": "textdet", "category": [{"id": 0, "name": "text"}]}


def _mmocr_instance(d, path, where) -> Instance:
    if not isinstance(d, dict):
        raise AnnotationError(path, 0, f"{where}: expected an object, got {type(d).__name__}")
    flat = d.get("polygon")
    if flat is None and d.get("bbox") is not None:  # box only: x1, y1, x2, y2
        x1, y1, x2, y2 = (list(d["bbox"]) + [None] * 4)[:4]
        flat = [x1, y1, x2, y1, x2, y2, x1, y2]
    if not isinstance(flat, (list, tuple)):
        raise AnnotationError(path, 0, f"{where}: no polygon")
    try:
        poly = _polygon(_numbers([str(v) for v in flat], path, 0), path, 0)
    except AnnotationError as e:
        raise AnnotationError(path, 0, f"{where}: {e.why}") from None
    ignore, text = d.get("ignore", False), d.get("text", "")
    if not isinstance(ignore, bool) and ignore not in (0, 1):
        raise AnnotationError(path, 0, f"{where}.ignore: expected true or false, got {ignore!r}")
    if text is None:
        text = ""  # no transcription given
    if not isinstance(text, str):
        raise AnnotationError(path, 0, f"{where}.text: expected a string or null, got {text!r}")
    return Instance(poly, text, bool(ignore))


def read_mmocr_json(path, data_root=None) -> list[tuple[Path, list[Instance]]]:
    """MMOCR textdet JSON -> [(image_path, instances)]; img_path is relative to data_root (default: json folder)."""
    path = Path(path)
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise AnnotationError(path, e.lineno, f"invalid JSON at column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data_list"), list):
        raise AnnotationError(path, 0, "not an MMOCR textdet file: no 'data_list' list at the top level")
    base = Path(data_root) if data_root is not None else path.parent
    out = []
    for k, item in enumerate(doc["data_list"]):
        if not isinstance(item, dict) or not isinstance(item.get("img_path"), str):
            raise AnnotationError(path, 0, f"data_list[{k}]: missing 'img_path'")
        if "instances" not in item:
            raise AnnotationError(path, 0, f"data_list[{k}] ({item['img_path']}): no 'instances' key (an image "
                                  "without text has \"instances\": [])")
        insts = item["instances"]
        if not isinstance(insts, list):
            raise AnnotationError(path, 0, f"data_list[{k}].instances: expected a list")
        out.append((base / item["img_path"],
                    [_mmocr_instance(d, path, f"data_list[{k}].instances[{j}]") for j, d in enumerate(insts)]))
    return out


def _image_size(p: Path):
    """(height, width) of an image file as displayed (tcm_kit.data.transforms.image_size), or None."""
    from .transforms import image_size

    return image_size(p)


def write_mmocr_json(path, items, data_root=None, metainfo=None) -> None:
    """Write [(image_path, instances) or (image_path, instances, (h, w))] as MMOCR textdet JSON.

    img_path is stored relative to data_root (default: the json's folder) when below it; height/width come from
    the optional size or the image file, and are left out when neither is available.
    """
    path = Path(path)
    base = Path(data_root) if data_root is not None else path.parent
    data_list = []
    for item in items:
        img, insts = Path(item[0]), item[1]
        size = item[2] if len(item) > 2 else _image_size(img if img.is_file() else base / img)
        try:
            rel = img.relative_to(base) if img.is_absolute() == base.is_absolute() else img
        except ValueError:
            rel = img
        entry = {"img_path": rel.as_posix()}
        if size is not None:
            entry["height"], entry["width"] = int(size[0]), int(size[1])
        entry["instances"] = [{
            "polygon": [float(_fmt_num(v)) for v in inst.polygon.reshape(-1)],
            "bbox": [float(_fmt_num(v)) for v in (*inst.polygon.min(0), *inst.polygon.max(0))],
            "bbox_label": 0, "ignore": bool(inst.ignore), "text": inst.text} for inst in insts]
        data_list.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"metainfo": dict(metainfo or MMOCR_METAINFO), "data_list": data_list}
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- folders

READERS = {"icdar2015": read_icdar2015, "totaltext": read_totaltext, "ctw1500": read_ctw1500, "td500": read_td500}
NAMING = "gt_<name>.txt (icdar2015), poly_gt_<name>.txt / gt_<name>.txt (totaltext), <name>.txt (ctw1500), " \
         "<name>.gt (td500), *.json with a data_list (mmocr)"


def natural_key(name: str):
    """Sort key putting img_2 before img_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _ann_stem(name: str, fmt: str):
    """The image stem an annotation file name refers to under `fmt`'s naming rule, else None."""
    low = name.lower()
    if fmt == "td500":
        return name[:-3] if low.endswith(".gt") else None
    if not low.endswith(".txt"):
        return None
    if fmt == "ctw1500":
        return name[:-4]
    if fmt == "totaltext" and low.startswith("poly_gt_"):
        return name[8:-4]
    return name[3:-4] if low.startswith("gt_") and fmt in ("icdar2015", "totaltext") else None


def _images(d: Path) -> list[Path]:
    return sorted((p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                  key=lambda p: natural_key(p.name))


def _ann_files(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".gt")]


def _subdirs(root: Path, depth=3) -> list[Path]:
    out, frontier = [root], [root]
    for _ in range(depth):
        frontier = [c for d in frontier for c in sorted(d.iterdir()) if c.is_dir() and c.name[:1] not in "._"]
        out += frontier
    return out


def find_dirs(root, split=None) -> tuple[Path, Path]:
    """(image folder, annotation folder) under root (depth <= 3) whose file names pair up.

    Accepts one folder holding both, `images/` + `annotations/`, and sibling pairs such as
    `ch4_training_images` + `ch4_training_localization_transcription_gt` or `Images/Train` + `gt/Train`.
    `split` (e.g. "train", "test") keeps only folders whose path below root contains that word.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(root, "dataset folder not found", [root])
    dirs = [d for d in _subdirs(root)
            if split is None or d == root or split.lower() in d.relative_to(root).as_posix().lower()]
    img_dirs = {d: {p.stem for p in _images(d)} for d in dirs}
    img_dirs = {d: s for d, s in img_dirs.items() if s}
    ann_dirs = {d: {_ann_stem(p.name, f) for p in _ann_files(d) for f in READERS} - {None} for d in dirs}
    ann_dirs = {d: s for d, s in ann_dirs.items() if s}
    pairs = [(len(si & sa), di, da) for di, si in img_dirs.items() for da, sa in ann_dirs.items() if si & sa]
    rel = lambda d: d.relative_to(root).as_posix()  # noqa: E731
    if len(pairs) == 1:
        return pairs[0][1], pairs[0][2]
    if not pairs:
        raise MissingFileError(
            root, f"no image folder with a matching annotation folder (depth <= 3{', split=' + split if split else ''})"
            f"; looked for images {'/'.join(IMAGE_EXTS)} and annotations named {NAMING}; found image folders "
            f"{sorted(map(rel, img_dirs)) or 'none'} and annotation folders {sorted(map(rel, ann_dirs)) or 'none'}")
    found = ", ".join(f"{rel(a)} + {rel(b)} ({n} matches)" for n, a, b in pairs)
    raise AnnotationError(root, 0, f"ambiguous: several image/annotation folder pairs ({found}); "
                                   "pass split='train'/'test' or a deeper root")


def _sniff(p: Path):
    """Format suggested by the first non-blank line of a txt file, or None."""
    try:
        lines = _read_lines(p)
    except AnnotationError:
        return None
    if not lines:
        return None
    line = lines[0][1].strip()
    if line.lower().startswith("x:"):
        return "totaltext"
    fields = line.split(",")
    if "####" in line or len(fields) in (28, 32) and all(re.fullmatch(r"\s*-?[\d.]+\s*", f) for f in fields):
        return "ctw1500"
    return "icdar2015" if len(fields) >= 8 else None


def _first_sniff(files, default=None):
    return next((s for s in map(_sniff, files[:10]) if s), default)


def detect_format(ann_dir) -> str:
    """Annotation format of a folder from its file names, then contents; AnnotationError if ambiguous/unknown."""
    files = sorted(_ann_files(Path(ann_dir)), key=lambda p: natural_key(p.name))
    low = lambda p: p.name.lower()  # noqa: E731
    kinds = set()
    if any(low(p).endswith(".gt") for p in files):
        kinds.add("td500")
    if any(low(p).startswith("poly_gt_") and low(p).endswith(".txt") for p in files):
        kinds.add("totaltext")
    gt = [p for p in files if low(p).startswith("gt_") and low(p).endswith(".txt")]
    if gt:
        kinds.add(_first_sniff(gt, "icdar2015"))
    plain = [p for p in files if low(p).endswith(".txt") and not low(p).startswith(("gt_", "poly_gt_"))]
    if plain and (_first_sniff(plain) == "ctw1500" or not kinds and _first_sniff(plain) is None):
        kinds.add("ctw1500")
    kinds.discard(None)
    if len(kinds) != 1:
        what = f"several formats {sorted(kinds)}" if kinds else "no known annotation files"
        raise AnnotationError(ann_dir, 0, f"cannot detect the format: {what}; expected {NAMING}; pass fmt=")
    return kinds.pop()


def _mmocr_jsons(root: Path, split=None) -> list[Path]:
    js = sorted(p for p in root.glob("*.json") if '"data_list"' in p.read_text(encoding="utf-8-sig", errors="ignore"))
    return [p for p in js if split is None or split.lower() in p.name.lower()]


def _report(missing: list[tuple[Path, str]], on_missing: str, root: Path):
    if not missing:
        return
    if on_missing == "raise":
        listed = "; ".join(f"{p} ({why})" for p, why in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise MissingFileError(root, f"{len(missing)} unpaired files: {listed}{more}", [p for p, _ in missing])
    for p, why in missing:
        warnings.warn(f"{p}: {why}; skipped", stacklevel=3)


def _pair_files(img_dir: Path, ann_dir: Path, fmt: str):
    """[(image, annotation)] by `fmt`'s naming rule and the unpaired files with why."""
    images, anns, missing = {}, {}, []
    for p in _images(img_dir):
        if p.stem in images:  # a.jpg and a.png: only one can own gt_a.txt
            missing.append((p, f"a second image named {p.stem!r} besides {images[p.stem].name}"))
        images.setdefault(p.stem, p)
    for p in sorted(_ann_files(ann_dir), key=lambda p: natural_key(p.name)):
        stem = _ann_stem(p.name, fmt)
        if stem is not None and (stem not in anns or p.name.lower().startswith("poly_gt_")):
            anns[stem] = p
    pairs = [(img, anns[s]) for s, img in images.items() if s in anns]
    missing += [(img, f"image without annotation in {ann_dir}") for s, img in images.items() if s not in anns]
    missing += [(a, f"annotation without image in {img_dir}") for s, a in anns.items() if s not in images]
    return pairs, missing


def read_folder(root, fmt=None, *, split=None, on_missing="raise", data_root=None):
    """Yield (image_path, instances) for every image of a dataset folder, in natural order of names.

    fmt: one of FORMATS or None (detected from annotation names/contents). on_missing: "raise" (a
    MissingFileError listing every image without annotation / annotation without image) or "warn" (warn
    for each and skip it). split: keep folders / json files whose name contains it (e.g. "train").
    """
    root = Path(root)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if on_missing not in ("raise", "warn"):
        raise ValueError(f"on_missing must be 'raise' or 'warn', got {on_missing!r}")
    if not root.is_dir():
        raise MissingFileError(root, "dataset folder not found", [root])
    jsons = _mmocr_jsons(root, split) if fmt in (None, "mmocr") else []
    dirs = None
    if fmt != "mmocr":
        try:
            dirs = find_dirs(root, split)
        except MissingFileError:
            if not jsons:
                raise
    if fmt is None and jsons and dirs:
        raise AnnotationError(root, 0, f"ambiguous: MMOCR json {[p.name for p in jsons]} and txt annotations in "
                                       f"{dirs[1]}; pass fmt=")
    if dirs is None:
        if len(jsons) != 1:
            what = [p.name for p in jsons] or "none"
            raise MissingFileError(root, f"expected one MMOCR json (with a data_list) in the folder, found {what}")
        items = read_mmocr_json(jsons[0], data_root if data_root is not None else root)
        _report([(p, f"image listed in {jsons[0].name} not found") for p, _ in items if not p.is_file()],
                on_missing, root)
        return iter([(p, insts) for p, insts in items if p.is_file()])
    fmt = fmt or detect_format(dirs[1])
    pairs, missing = _pair_files(*dirs, fmt)
    _report(missing, on_missing, root)
    return ((img, READERS[fmt](ann)) for img, ann in pairs)
