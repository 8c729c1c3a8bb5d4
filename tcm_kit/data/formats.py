"""Readers and writers of text-detection annotation formats.

Every reader returns a list of `Instance`: polygon float32 (N, 2) in pixels, transcription, don't-care flag.
Formats: ICDAR2015 (`gt_img_1.txt`), Total-Text txt (`poly_gt_img1.txt`), CTW1500 txt (`1001.txt`, both the
bbox+offsets and the absolute `####text` forms), MSRA-TD500 (`IMG_0059.gt`) and MMOCR textdet JSON.
`read_folder(root)` pairs images with their annotation files and yields `(image_path, instances)`.

What a file says that cannot be right stops the reading with an AnnotationError `path:line: why` (malformed or
missing coordinates, too few points). What can be read but is likely a mistake is read as said below and warned
once per file, with the count and the lines (`check_instances`): a care polygon of zero area or wholly outside its
image is read as don't-care (it can neither be detected nor matched), a polygon listed twice is read once, a
care instance with a blank transcription (in formats whose lines carry one) is read as text without a
transcription, and an empty annotation file as an image without text.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
    for k, f in enumerate(fields, 1):
        if not str(f).strip():
            raise AnnotationError(path, lineno, f"blank coordinate field (number {k})")
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


class Record(NamedTuple):
    """One instance as read: where its file says it ("line 3", "data_list[0].instances[2]"), the instance, and
    whether the format gave it a transcription field."""
    where: str
    inst: Instance
    text_field: bool


class Findings:
    """What one annotation file holds that is read but is likely a mistake: one warning per kind, with the count
    and where. one_image: the file annotates one image (a txt file), so a warning can name its size."""

    def __init__(self, path, one_image: bool = True):
        self.path, self.one_image, self.kinds = Path(path), one_image, {}

    def add(self, noun: str, rest: str, where: str) -> None:
        self.kinds.setdefault((noun, rest), []).append(where)

    def warn(self) -> None:
        for (noun, rest), places in self.kinds.items():
            n = len(places)
            warnings.warn(f"{self.path}: {n} {noun}{'s' if n != 1 else ''}{rest} ({_places(places)})", stacklevel=3)


def _places(places: list[str], most: int = 10) -> str:
    """["line 2", "line 3"] -> "lines 2, 3"; other places listed as they are; at most `most`, then a count."""
    more = f" and {len(places) - most} more" if len(places) > most else ""
    shown = places[:most]
    if all(p.startswith("line ") for p in shown):
        return ("line " if len(places) == 1 else "lines ") + ", ".join(p[5:] for p in shown) + more
    return ", ".join(shown) + more


def has_area(polygon) -> bool:
    """Whether a polygon covers any area, as the evaluation sees it (tcm_kit.metrics: self-intersections repaired
    with shapely.make_valid)."""
    p = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        return False
    x, y = p[:, 0], p[:, 1]
    if abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) > 0:  # signed area: non-zero -> some area
        return True
    import shapely

    return shapely.area(shapely.make_valid(shapely.Polygon(p))) > 0


def _wholly_outside(polygon, size) -> bool:
    """Whether no point of the polygon's bounding box lies on an image of `size` (height, width)."""
    h, w = size
    lo, hi = polygon.min(0), polygon.max(0)
    return bool(hi[0] < 0 or hi[1] < 0 or lo[0] > w - 1 or lo[1] > h - 1)


def check_instances(records: list[Record], found: Findings, image_size=None, image=None) -> list[Instance]:
    """The instances of one image's records, with the likely mistakes noted in `found`: an instance listed before
    (same polygon, transcription and don't-care flag) is read once; the same polygon with another transcription
    or flag is kept as written; a care polygon of zero area, and a polygon wholly outside its image (image_size
    (h, w), when known), are read as don't-care; a care instance whose transcription field is blank is read as
    it is."""
    seen, polygons, out = set(), set(), []
    for where, inst, text_field in records:
        key = inst.polygon.tobytes()
        if (key, inst.text, inst.ignore) in seen:
            found.add("duplicated polygon", ", read once", where)
            continue
        if key in polygons:
            found.add("polygon", " listed again with another transcription or don't-care flag, kept as written", where)
        seen.add((key, inst.text, inst.ignore))
        polygons.add(key)
        if not inst.ignore and not has_area(inst.polygon):
            found.add("zero-area care polygon", ", read as don't-care", where)
            inst = dataclasses.replace(inst, ignore=True)
        elif image_size is not None and _wholly_outside(inst.polygon, image_size):
            on = f"the {image_size[1]} x {image_size[0]} image {Path(image).name}" if found.one_image \
                else "their image"
            found.add("polygon", f" wholly outside {on}, read as don't-care", where)
            inst = dataclasses.replace(inst, ignore=True)
        if text_field and not inst.ignore and not inst.text.strip():
            found.add("care instance", " with a blank transcription, read as text without one; ### marks a "
                      "don't-care region", where)
        out.append(inst)
    return out


def _checked(path, records: list[Record], image_size=None, image=None, warn_empty=True) -> list[Instance]:
    """check_instances for one annotation file, warned once per kind; an empty file is warned as such
    (warn_empty)."""
    if warn_empty and not records and not _read_lines(path):
        warnings.warn(f"{path}: empty annotation file: read as an image without text", stacklevel=3)
    found = Findings(path)
    out = check_instances(records, found, image_size, image)
    found.warn()
    return out



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
    return _checked(path, _icdar2015_records(path))


def _icdar2015_records(path) -> list[Record]:
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
        out.append(Record(f"line {i}", Instance(poly, text, text in IGNORE_TEXTS), True))
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
    return _checked(path, _totaltext_records(path))


def _totaltext_records(path) -> list[Record]:
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
        out.append(Record(f"line {i}", Instance(np.stack([xs, ys], 1), text, ignore), True))
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


def _ctw_line(line, path, i) -> Record:
    where = f"line {i}"
    if "####" in line:  # test-gt form: absolute x1,y1,...,xn,yn,####transcription
        coords, text = line.split("####", 1)
        fields = coords.split(",")
        if len(fields) > 1 and not fields[-1].strip():  # the comma before ####
            fields = fields[:-1]
        poly = _polygon(_numbers(fields, path, i), path, i)
        return Record(where, Instance(poly, text, text in IGNORE_TEXTS), True)
    fields = line.split(",")
    if len(fields) == 28:  # absolute form without transcription
        return Record(where, Instance(_polygon(_numbers(fields, path, i), path, i)), False)
    if len(fields) != 32:
        raise AnnotationError(
            path, i, f"expected 32 fields (xmin,ymin,xmax,ymax + 14 offset points) or 28 coordinates "
            f"followed by ####transcription, got {len(fields)} fields")
    v = _numbers(fields, path, i)
    offsets = np.asarray(v[4:], dtype=np.float32).reshape(14, 2)  # (dx, dy) relative to (xmin, ymin)
    return Record(where, Instance(offsets + np.asarray(v[:2], dtype=np.float32)), False)


def read_ctw1500(path) -> list[Instance]:
    """CTW1500 txt: 32 integers (bbox + 14 offsets from (xmin, ymin)) or 28 absolute coords + `####text`."""
    return _checked(path, _ctw1500_records(path))


def _ctw1500_records(path) -> list[Record]:
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
    return _checked(path, _td500_records(path))


def _td500_records(path) -> list[Record]:
    out = []
    for i, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 7:
            raise AnnotationError(path, i, f"expected 7 fields (index difficult x y w h theta), got {len(parts)}")
        _, difficult, x, y, w, h, theta = _numbers(parts, path, i)
        if w <= 0 or h <= 0:
            raise AnnotationError(path, i, f"box with non-positive width or height ({w:g} x {h:g})")
        out.append(Record(f"line {i}", Instance(td500_corners(x, y, w, h, theta), "", difficult != 0), False))
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
    """MMOCR textdet JSON -> [(image_path, instances)]; img_path is relative to data_root (default: json folder).

    Checked as check_instances checks a txt file (no image sizes here: read_folder adds those), with one warning
    per kind for the whole file."""
    return _checked_mmocr(path, _mmocr_records(path, data_root), sizes=False)


def _checked_mmocr(path, items, sizes: bool) -> list[tuple[Path, list[Instance]]]:
    """check_instances on every image of an MMOCR JSON (`sizes`: with each image's size, where it can be read),
    warned once per kind for the file."""
    found = Findings(path, one_image=False)
    out = [(img, check_instances(recs, found, image_size=_image_size(img) if sizes else None, image=img))
           for img, recs in items]
    found.warn()
    return out


def _mmocr_records(path, data_root=None) -> list[tuple[Path, list[Record]]]:
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise AnnotationError(path, 0, "empty file: expected an MMOCR textdet JSON (an object with a 'data_list' "
                              "list)")
    try:
        doc = json.loads(text)
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
        wheres = [f"data_list[{k}].instances[{j}]" for j in range(len(insts))]
        out.append((base / item["img_path"],
                    [Record(w, _mmocr_instance(d, path, w), False) for w, d in zip(wheres, insts)]))
    return out


def _image_size(path):
    """(height, width) of an image file as displayed (EXIF orientations 5-8 turn it, as read_image does), from its
    header; None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            h, w = im.height, im.width
            turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - the size is optional metadata
        return None
    return (w, h) if turned else (h, w)


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
RECORDS = {"icdar2015": _icdar2015_records, "totaltext": _totaltext_records, "ctw1500": _ctw1500_records,
           "td500": _td500_records}
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
    sniffs = [_sniff(p) for p in plain[:10]]
    if plain and ("ctw1500" in sniffs or not kinds and not any(sniffs)):
        kinds.add("ctw1500")
    kinds.discard(None)
    if len(kinds) > 1:
        raise AnnotationError(ann_dir, 0, f"cannot detect the format: several formats {sorted(kinds)}; expected "
                                          f"{NAMING}; pass fmt= (tcm-kit: --format)")
    if not kinds:
        raise AnnotationError(ann_dir, 0, f"cannot detect the format: {_unknown(files, plain)}")
    return kinds.pop()


def _unknown(files: list[Path], plain: list[Path]) -> str:
    """What an annotation folder of no detected format holds, and what was expected."""
    if not plain:
        return f"no known annotation files among {len(files)} .txt/.gt files; expected {NAMING}; pass fmt= " \
               "(tcm-kit: --format)"
    p = plain[0]
    i, line = (_read_lines(p) or [(1, "")])[0]
    return (f"{len(plain)} files named as CTW1500 names them (<name>.txt), but {p}:{i} is {line.strip()[:60]!r}, "
            "not a CTW1500 line (32 comma-separated numbers, or coordinates then ####transcription), nor of "
            f"another format; expected {NAMING}; pass fmt='ctw1500' (tcm-kit: --format ctw1500) to read them as "
            "CTW1500 and have the bad line named")


def _jsons(root: Path, split=None) -> list[Path]:
    return sorted(p for p in root.glob("*.json") if split is None or split.lower() in p.name.lower())


def _mmocr_jsons(root: Path, split=None) -> list[Path]:
    return [p for p in _jsons(root, split) if '"data_list"' in p.read_text(encoding="utf-8-sig", errors="ignore")]


def _not_mmocr(root: Path, split=None) -> str:
    """'' or, for the json files of a folder that are not MMOCR textdet files, '; <path>: why' for each."""
    whys = []
    for p in _jsons(root, split):
        try:
            _mmocr_records(p)
        except AnnotationError as e:
            whys.append(f"{p}: {e.why}")
    return "".join(f"; {w}" for w in whys)


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
        except MissingFileError as e:
            if not jsons:
                others = _not_mmocr(root, split) if fmt is None else ""
                if not others:
                    raise
                raise MissingFileError(root, e.why + "; no MMOCR json either" + others, e.missing) from None
    if fmt is None and jsons and dirs:
        raise AnnotationError(root, 0, f"ambiguous: MMOCR json {[p.name for p in jsons]} and txt annotations in "
                                       f"{dirs[1]}; pass fmt=")
    if dirs is None:
        if len(jsons) != 1:
            what = [p.name for p in jsons] or "none"
            raise MissingFileError(root, f"expected one MMOCR json (with a data_list) in the folder, found {what}"
                                   + (_not_mmocr(root, split) if not jsons else ""))
        items = _mmocr_records(jsons[0], data_root if data_root is not None else root)
        _report([(p, f"image listed in {jsons[0]} not found") for p, _ in items if not p.is_file()],
                on_missing, root)
        return iter(_checked_mmocr(jsons[0], [(p, recs) for p, recs in items if p.is_file()], sizes=True))
    fmt = fmt or detect_format(dirs[1])
    pairs, missing = _pair_files(*dirs, fmt)
    _report(missing, on_missing, root)
    empty = [str(ann) for _, ann in pairs if not _read_lines(ann)]
    if empty:
        warnings.warn(f"{root}: {len(empty)} empty annotation file{'s' if len(empty) > 1 else ''}, read as "
                      f"image{'s' if len(empty) > 1 else ''} without text ({_places(empty)})", stacklevel=2)
    return ((img, _checked(ann, RECORDS[fmt](ann), _image_size(img), img, warn_empty=False)) for img, ann in pairs)
