"""Annotation readers/writers and read_folder, on tiny files the tests write themselves."""
import json
import math
import warnings

import numpy as np
import pytest

from tcm_kit.data.formats import (
    AnnotationError, Instance, MissingFileError, detect_format, find_dirs, natural_key, read_ctw1500,
    read_folder, read_icdar2015, read_mmocr_json, read_td500, read_totaltext, write_icdar2015, write_mmocr_json,
    write_totaltext)

QUAD = [[10, 20], [110, 20], [110, 60], [10, 60]]


def write(path, text, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def expect_annotation_error(reader, path, line, why):
    """reader(path) raises AnnotationError matching `why` that names `path` and `line`."""
    with pytest.raises(AnnotationError, match=why) as e:
        reader(path)
    assert (e.value.path, e.value.line) == (path, line)


def touch_images(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"\xff\xd8 not really a jpeg")


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.polygon, y.polygon, rtol=0, atol=0)
        assert (x.ignore, x.polygon.dtype) == (y.ignore, np.float32)
        if not x.ignore:
            assert x.text == y.text


# ------------------------------------------------------------------------------------------- ICDAR2015

def test_icdar2015_bom_commas_ignore_and_blank_lines(tmp_path):
    p = write(tmp_path / "gt_img_1.txt",
              "377,117,463,117,465,130,378,130,Genaxis Theatre\r\n\n"
              "493,115,519,115,519,131,493,131,[06]\n"
              "374,155,409,155,409,170,374,170,###\n"
              "1,2,30,2,30,20,1,20,Hello, world, again\n"
              "1,2,30,2,30,20,1,21\n", bom=True)
    insts = read_icdar2015(p)
    assert [i.text for i in insts] == ["Genaxis Theatre", "[06]", "###", "Hello, world, again", ""]
    assert [i.ignore for i in insts] == [False, False, True, False, False]
    assert insts[0].polygon.shape == (4, 2) and insts[0].polygon.dtype == np.float32
    np.testing.assert_array_equal(insts[0].polygon[0], [377, 117])  # the BOM did not spoil the first number


def test_icdar2015_round_trip(tmp_path):
    insts = [Instance(QUAD, "caf\u00e9, bar"), Instance(np.array(QUAD) + 0.25, "secret", ignore=True),
             Instance([[0.1, 0.2], [3.3, 0.2], [3.3, 4.7], [0.1, 4.7]], "")]
    p = tmp_path / "out" / "gt_a.txt"
    write_icdar2015(p, insts)
    back = read_icdar2015(p)
    assert_same(insts, back)
    assert back[1].text == "###"


def test_icdar2015_writer_rejects_non_quads(tmp_path):
    with pytest.raises(AnnotationError, match="instance 0 has 5 points"):
        write_icdar2015(tmp_path / "gt_x.txt", [Instance(np.zeros((5, 2)), "a")])


@pytest.mark.parametrize("line, why", [
    ("1,2,3,4,5,6,7", "expected 8 coordinates and a transcription, got 7 fields"),
    ("1,2,3,x4,5,6,7,8,text", "non-numeric coordinate 'x4'"),
    ("1,2,3,nan,5,6,7,8,text", "non-finite coordinate 'nan'"),
])
def test_icdar2015_malformed_names_file_and_line(tmp_path, line, why):
    p = write(tmp_path / "gt_img_3.txt", "1,2,3,4,5,6,7,8,ok\n\n" + line + "\n")
    with pytest.raises(AnnotationError) as e:
        read_icdar2015(p)
    assert (e.value.path, e.value.line, e.value.why) == (p, 3, why)
    assert str(e.value).startswith(f"{p}:3: ")


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(MissingFileError, match="not found"):
        read_icdar2015(tmp_path / "nope.txt")
    p = tmp_path / "gt_bad.txt"
    p.write_bytes(b"1,2,3,4,5,6,7,8,\xff\xfe\n")
    with pytest.raises(AnnotationError, match="not UTF-8"):
        read_icdar2015(p)


# ------------------------------------------------------------------------------------------- Total-Text

def test_totaltext_records_quotes_ignore_and_wrapped_lines(tmp_path):
    p = write(tmp_path / "poly_gt_img1.txt",
              "x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'h'], transcriptions: [u'nauGHTY']\n"
              "x: [[ 10  20  30  20]], y: [[ 5 1 5 9]], ornt: [u'#'], transcriptions: [u'#']\n"
              "x: [[1 2 3]], y: [[4 9 6]], ornt: [u'c'], transcriptions: [u\"don't\"]\n"
              "x: [[100 200 300 400 500\n 600 700]], y: [[1 20 3 4 5\n 6 7]], ornt: [u'c'],\n"
              " transcriptions: [u'wrapped']\n"
              "x: [[1 2 3]], y: [[4 5 6]], ornt: [u'h'], transcriptions: [u'###']\n"
              "x: [[1, 2, 3]], y: [[4, 5, 9]], transcriptions: ['no ornt']\n", bom=True)
    insts = read_totaltext(p)
    assert [i.text for i in insts] == ["nauGHTY", "#", "don't", "wrapped", "###", "no ornt"]
    assert [i.ignore for i in insts] == [False, True, False, False, True, False]
    np.testing.assert_array_equal(insts[0].polygon, [[115, 322], [503, 346], [494, 426], [115, 404]])
    assert insts[3].polygon.shape == (7, 2) and insts[3].polygon[-1].tolist() == [700, 7]


def test_totaltext_round_trip_curved(tmp_path):
    t = np.linspace(0, math.pi, 8)
    top = np.stack([100 + 80 * np.cos(t), 200 - 80 * np.sin(t)], 1)
    curved = np.concatenate([top, top[::-1] * [1, 0.9] + [0, 25.5]]).astype(np.float32)  # 16 points
    insts = [Instance(curved, "arc's text"), Instance(QUAD, "x", ignore=True), Instance(QUAD, "")]
    p = tmp_path / "annotations" / "poly_gt_s0.txt"
    write_totaltext(p, insts)
    assert_same(insts, read_totaltext(p))


@pytest.mark.parametrize("text, line, why", [
    ("x: [[1 2 3]], y: [[4 5 6]], ornt: [u'h'], transcriptions: [u'a']\nx: [[1 2 3]] y [[4 5]]\n", 2,
     "unparseable Total-Text record"),
    ("x: [[1 2 3 4]], y: [[4 5 6]], ornt: [u'h'], transcriptions: [u'a']\n", 1, "4 x values but 3 y values"),
    ("x: [[1 2]], y: [[4 5]], ornt: [u'h'], transcriptions: [u'a']\n", 1, "polygon with 2 points"),
    ("x: [[1 b 3]], y: [[4 5 6]], ornt: [u'h'], transcriptions: [u'a']\n", 1, "non-numeric coordinate 'b'"),
    ("garbage first\nx: [[1 2 3]], y: [[4 5 6]], ornt: [u'h'], transcriptions: [u'a']\n", 1, "before the first"),
])
def test_totaltext_malformed(tmp_path, text, line, why):
    expect_annotation_error(read_totaltext, write(tmp_path / "poly_gt_img2.txt", text), line, why)


# ------------------------------------------------------------------------------------------- CTW1500

def test_ctw1500_offsets_are_relative_to_bbox_top_left(tmp_path):
    offsets = [(2 * k, 3 + k * k) for k in range(14)]
    line = "100,200,150,260," + ",".join(f"{dx},{dy}" for dx, dy in offsets)
    insts = read_ctw1500(write(tmp_path / "1001.txt", line + "\n"))
    assert len(insts) == 1 and insts[0].polygon.shape == (14, 2)
    np.testing.assert_array_equal(insts[0].polygon, [[100 + dx, 200 + dy] for dx, dy in offsets])
    assert (insts[0].text, insts[0].ignore) == ("", False)


def test_ctw1500_absolute_form_with_transcription(tmp_path):
    pts = [(10 + k, 50 - k * k) for k in range(14)]
    coords = ",".join(f"{x},{y}" for x, y in pts)
    p = write(tmp_path / "1002.txt", f"{coords},####Hello, CTW\n{coords},#######\n{coords}\n")
    insts = read_ctw1500(p)
    assert [(i.text, i.ignore) for i in insts] == [("Hello, CTW", False), ("###", True), ("", False)]
    for i in insts:
        np.testing.assert_array_equal(i.polygon, pts)


@pytest.mark.parametrize("line, why", [
    (",".join(["1"] * 30), "expected 32 fields .* got 30 fields"),
    ("1,2,3,4,5,####odd", "odd number of coordinates \\(5\\)"),
    ("1,2,3,4,####two points", "polygon with 2 points"),
    (",".join(["1"] * 31 + ["a"]), "non-numeric coordinate 'a'"),
])
def test_ctw1500_malformed(tmp_path, line, why):
    expect_annotation_error(read_ctw1500, write(tmp_path / "1003.txt", "\n" + line + "\n"), 2, why)


# ------------------------------------------------------------------------------------------- MSRA-TD500

def test_td500_rotation_geometry(tmp_path):
    p = write(tmp_path / "IMG_0059.gt", "0 0 10 20 100 40 0\n1 1 10 20 100 40 1.5707963267948966\n")
    a, b = read_td500(p)
    np.testing.assert_allclose(a.polygon, [[10, 20], [110, 20], [110, 60], [10, 60]], atol=1e-4)
    # centre (60, 40); half sizes (50, 20); rotating by +90 deg maps (dx, dy) -> (-dy, dx)
    np.testing.assert_allclose(b.polygon, [[80, -10], [80, 90], [40, 90], [40, -10]], atol=1e-4)
    assert (a.ignore, b.ignore) == (False, True)


@pytest.mark.parametrize("line, why", [
    ("0 0 10 20 100 40", "expected 7 fields"),
    ("0 0 10 20 w 40 0.1", "non-numeric coordinate 'w'"),
    ("0 0 10 20 0 40 0.1", "non-positive width or height"),
])
def test_td500_malformed(tmp_path, line, why):
    expect_annotation_error(read_td500, write(tmp_path / "IMG_1.gt", line + "\n"), 1, why)


# ------------------------------------------------------------------------------------------- MMOCR JSON

def test_mmocr_round_trip_and_relative_paths(tmp_path):
    insts = [Instance(QUAD, "hi"), Instance(np.array(QUAD) * 1.5, "", True), Instance(np.array(QUAD) + 0.1, "f")]
    items = [(tmp_path / "imgs" / "a.jpg", insts, (64, 128)), (tmp_path / "imgs" / "b.jpg", [])]
    p = tmp_path / "textdet_train.json"
    write_mmocr_json(p, items)
    doc = json.loads(p.read_text())
    first = doc["data_list"][0]
    assert first["img_path"] == "imgs/a.jpg" and (first["height"], first["width"]) == (64, 128)
    assert first["instances"][0]["bbox"] == [10, 20, 110, 60] and first["instances"][1]["ignore"] is True
    back = read_mmocr_json(p)
    assert [img for img, _ in back] == [items[0][0], items[1][0]]
    assert_same(items[0][1], back[0][1])
    assert back[1][1] == []
    assert read_mmocr_json(p, data_root="/data/x")[0][0].as_posix() == "/data/x/imgs/a.jpg"


def test_mmocr_bbox_only_instance(tmp_path):
    doc = {"metainfo": {}, "data_list": [{"img_path": "a.jpg", "instances": [{"bbox": [1, 2, 5, 8], "bbox_label": 0}]}]}
    p = write(tmp_path / "d.json", json.dumps(doc))
    (_, (inst,)), = read_mmocr_json(p)
    np.testing.assert_array_equal(inst.polygon, [[1, 2], [5, 2], [5, 8], [1, 8]])


@pytest.mark.parametrize("text, line, why", [
    ('{"data_list": [\n\n  {"img_path": "a.jpg",}\n]}', 3, "invalid JSON at column"),
    ('{"metainfo": {}}', 0, "no 'data_list'"),
    ('{"data_list": [{"instances": []}]}', 0, "data_list\\[0\\]: missing 'img_path'"),
    ('{"data_list": [{"img_path": "a.jpg", "instances": [{"polygon": [1, 2, 3, 4, 5]}]}]}', 0,
     "data_list\\[0\\].instances\\[0\\]: odd number of coordinates"),
])
def test_mmocr_malformed(tmp_path, text, line, why):
    expect_annotation_error(read_mmocr_json, write(tmp_path / "bad.json", text), line, why)


# ------------------------------------------------------------------------------------------- read_folder

def test_read_folder_synthetic_layout_icdar_and_totaltext(tmp_path):
    touch_images(tmp_path / "ic" / "images", "s10.jpg", "s2.jpg", "s1.jpg")
    for n in ("s10", "s2", "s1"):
        write_icdar2015(tmp_path / "ic" / "annotations" / f"gt_{n}.txt", [Instance(QUAD, n)])
    out = list(read_folder(tmp_path / "ic"))
    assert [p.name for p, _ in out] == ["s1.jpg", "s2.jpg", "s10.jpg"]  # natural order
    assert [insts[0].text for _, insts in out] == ["s1", "s2", "s10"]

    touch_images(tmp_path / "tt" / "images", "c0.jpg")
    write_totaltext(tmp_path / "tt" / "annotations" / "poly_gt_c0.txt", [Instance(np.zeros((14, 2)) + 3, "c")])
    (img, (inst,)), = read_folder(tmp_path / "tt")
    assert img == tmp_path / "tt" / "images" / "c0.jpg" and inst.polygon.shape == (14, 2)
    assert detect_format(tmp_path / "tt" / "annotations") == "totaltext"


def test_read_folder_one_folder_td500_and_ctw1500(tmp_path):
    touch_images(tmp_path / "td", "IMG_0059.JPG", "IMG_0100.JPG")
    write(tmp_path / "td" / "IMG_0059.gt", "0 0 10 20 100 40 0\n")
    write(tmp_path / "td" / "IMG_0100.gt", "")
    out = list(read_folder(tmp_path / "td"))
    assert [(p.name, len(i)) for p, i in out] == [("IMG_0059.JPG", 1), ("IMG_0100.JPG", 0)]

    touch_images(tmp_path / "ctw", "1001.jpg")
    write(tmp_path / "ctw" / "1001.txt", "0,0,10,10," + ",".join(["1"] * 28) + "\n")
    (img, (inst,)), = read_folder(tmp_path / "ctw")
    assert img.name == "1001.jpg" and inst.polygon.shape == (14, 2)


def _icdar_like_real(root):
    """ICDAR2015's sibling folders for train and test (the same image names occur in both)."""
    for split, img_dir, gt_dir in (("train", "ch4_training_images", "ch4_training_localization_transcription_gt"),
                                   ("test", "ch4_test_images", "Challenge4_Test_Task1_GT")):
        touch_images(root / img_dir, "img_1.jpg", "img_2.png")
        for n in (1, 2):
            write(root / gt_dir / f"gt_img_{n}.txt", f"1,1,9,1,9,9,1,9,{split}{n}\n", bom=True)


def test_read_folder_real_sibling_folders_with_split(tmp_path):
    _icdar_like_real(tmp_path)
    with pytest.raises(AnnotationError, match="ambiguous.*split"):
        read_folder(tmp_path)
    out = list(read_folder(tmp_path, split="test"))
    assert [(p.parent.name, p.name, i[0].text) for p, i in out] == [
        ("ch4_test_images", "img_1.jpg", "test1"), ("ch4_test_images", "img_2.png", "test2")]
    assert find_dirs(tmp_path, split="train") == (
        tmp_path / "ch4_training_images", tmp_path / "ch4_training_localization_transcription_gt")


def test_read_folder_totaltext_real_layout(tmp_path):
    for split, names in (("Train", ("img11", "img100")), ("Test", ("img1",))):
        touch_images(tmp_path / "Images" / split, *(n + ".jpg" for n in names))
        for n in names:
            write(tmp_path / "gt" / split / f"gt_{n}.txt",
                  "x: [[1 2 3]], y: [[4 5 6]], ornt: [u'c'], transcriptions: [u'ok']\n")
    out = list(read_folder(tmp_path, split="train"))
    assert [p.name for p, _ in out] == ["img11.jpg", "img100.jpg"]
    assert out[0][1][0].text == "ok" and detect_format(tmp_path / "gt" / "Train") == "totaltext"


def test_read_folder_mmocr(tmp_path):
    touch_images(tmp_path / "textdet_imgs" / "train", "a.jpg")
    write_mmocr_json(tmp_path / "textdet_train.json",
                     [(tmp_path / "textdet_imgs" / "train" / "a.jpg", [Instance(QUAD, "m")]),
                      (tmp_path / "textdet_imgs" / "train" / "gone.jpg", [])])
    with pytest.raises(MissingFileError, match="gone.jpg"):
        read_folder(tmp_path)
    with pytest.warns(UserWarning, match="gone.jpg.*not found"):
        (img, (inst,)), = read_folder(tmp_path, on_missing="warn")
    assert img.name == "a.jpg" and inst.text == "m"


def test_read_folder_missing_raise_and_warn(tmp_path):
    touch_images(tmp_path / "images", "a.jpg", "b.jpg")
    write_icdar2015(tmp_path / "annotations" / "gt_a.txt", [Instance(QUAD, "a")])
    write_icdar2015(tmp_path / "annotations" / "gt_orphan.txt", [Instance(QUAD, "o")])
    with pytest.raises(MissingFileError) as e:
        read_folder(tmp_path)
    assert "b.jpg (image without annotation" in str(e.value)
    assert "gt_orphan.txt (annotation without image" in str(e.value)
    assert {p.name for p in e.value.missing} == {"b.jpg", "gt_orphan.txt"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = list(read_folder(tmp_path, on_missing="warn"))
    assert [p.name for p, _ in out] == ["a.jpg"]
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 2
    assert any("b.jpg: image without annotation" in m for m in msgs)
    assert any("gt_orphan.txt: annotation without image" in m for m in msgs)


def test_read_folder_detection_errors(tmp_path):
    touch_images(tmp_path / "mix", "a.jpg", "b.jpg")
    write(tmp_path / "mix" / "a.gt", "0 0 1 1 5 5 0\n")
    write(tmp_path / "mix" / "gt_b.txt", "1,1,9,1,9,9,1,9,x\n")
    with pytest.raises(AnnotationError, match=r"several formats \['icdar2015', 'td500'\]"):
        read_folder(tmp_path / "mix")
    with pytest.warns(UserWarning, match="b.jpg: image without annotation"):  # fmt settles it
        out = list(read_folder(tmp_path / "mix", fmt="td500", on_missing="warn"))
    assert [p.name for p, _ in out] == ["a.jpg"]

    touch_images(tmp_path / "lonely" / "pics", "x.jpg")
    write(tmp_path / "lonely" / "labels" / "gt_y.txt", "")
    looked = r"looked for images .*found image folders \['pics'\] and annotation folders \['labels'\]"
    with pytest.raises(MissingFileError, match=looked):
        read_folder(tmp_path / "lonely")
    with pytest.raises(ValueError, match="unknown format"):
        read_folder(tmp_path / "mix", fmt="coco")
    with pytest.raises(ValueError, match="on_missing"):
        read_folder(tmp_path / "mix", on_missing="skip")


def test_natural_key():
    names = ["img_10.jpg", "img_2.jpg", "IMG_1.jpg", "img_100.jpg"]
    assert sorted(names, key=natural_key) == ["IMG_1.jpg", "img_2.jpg", "img_10.jpg", "img_100.jpg"]


def test_read_folder_reports_two_images_with_one_stem(tmp_path):
    touch_images(tmp_path, "a.jpg", "a.png")
    write_icdar2015(tmp_path / "gt_a.txt", [Instance(QUAD, "a")])
    with pytest.raises(MissingFileError, match="a second image named 'a'"):
        read_folder(tmp_path)
    with pytest.warns(UserWarning, match="a.png: a second image"):
        (img, _), = read_folder(tmp_path, on_missing="warn")
    assert img.name == "a.jpg"


def test_read_folder_json_and_txt_is_ambiguous_unless_fmt(tmp_path):
    touch_images(tmp_path / "images", "a.jpg")
    write_icdar2015(tmp_path / "annotations" / "gt_a.txt", [Instance(QUAD, "txt")])
    write_mmocr_json(tmp_path / "train.json", [(tmp_path / "images" / "a.jpg", [Instance(QUAD, "json")])])
    write(tmp_path / "meta.json", '{"seed": 0}')  # not MMOCR: no data_list, never a candidate
    with pytest.raises(AnnotationError, match=r"ambiguous: MMOCR json \['train.json'\]"):
        read_folder(tmp_path)
    assert [i[0].text for _, i in read_folder(tmp_path, fmt="icdar2015")] == ["txt"]
    assert [i[0].text for _, i in read_folder(tmp_path, fmt="mmocr")] == ["json"]
