"""The synthetic scene-text generator: determinism, geometry, ink tightness, set writing and captions."""
import json
import re

import cv2
import numpy as np
import pytest
import shapely

from tcm_kit.data import synth
from tcm_kit.data.formats import Instance, read_icdar2015, read_totaltext

SIZE = 192


@pytest.fixture(scope="module")
def scenes():
    """A few scenes per preset, rendered once with their ink masks."""
    return {p: [synth.render_scene(p, 3, i, SIZE, with_ink=True) for i in range(4)] for p in synth.PRESETS}


def test_presets_are_frozen_and_named():
    assert set(synth.PRESETS) == {"synth-ic15", "synth-td500", "synth-total", "synth-doc"}
    assert len({c.preset_id for c in synth.PRESETS.values()}) == 4
    with pytest.raises(Exception):
        synth.PRESETS["synth-ic15"].blocks = (1, 1)
    with pytest.raises(synth.SynthError, match="unknown synthetic preset"):
        synth.render_scene("synth-nope", 0, 0, 64)


def test_same_arguments_give_identical_bytes():
    a = synth.render_scene("synth-ic15", 7, 2, 160)
    b = synth.render_scene("synth-ic15", 7, 2, 160)
    c = synth.render_scene("synth-ic15", 7, 3, 160)
    assert a.image.tobytes() == b.image.tobytes()
    assert [(i.text, i.ignore, i.polygon.tobytes()) for i in a.instances] == \
           [(i.text, i.ignore, i.polygon.tobytes()) for i in b.instances]
    assert a.image.tobytes() != c.image.tobytes()


def test_rectangular_size():
    s = synth.render_scene("synth-total", 0, 0, (96, 160))
    assert s.image.shape == (96, 160, 3) and s.image.dtype == np.uint8


def test_every_preset_renders_valid_in_bounds_polygons(scenes):
    for name, batch in scenes.items():
        n_points = 2 * synth.PRESETS[name].poly_side if synth.PRESETS[name].shape == "poly" else 4
        assert sum(len(s.instances) for s in batch) > 0, name
        for s in batch:
            assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
            for inst in s.instances:
                p = inst.polygon
                assert isinstance(inst, Instance) and p.dtype == np.float32
                assert len(p) == n_points, (name, len(p))
                assert p.min() >= 0 and p[:, 0].max() <= SIZE - 1 and p[:, 1].max() <= SIZE - 1
                assert shapely.Polygon(p).is_valid and shapely.Polygon(p).area > 1
                assert inst.text and (inst.text == "###") == inst.ignore


def test_total_polygons_have_fourteen_points_and_some_bend(scenes):
    polys = [i.polygon for s in scenes["synth-total"] for i in s.instances]
    assert polys and all(len(p) >= 14 for p in polys)
    # a bent polygon: its top edge leaves the chord between its end points
    def deviation(p):
        d, q = p[6] - p[0], p[1:6] - p[0]
        return np.abs(d[0] * q[:, 1] - d[1] * q[:, 0]).max() / (np.linalg.norm(d) + 1e-6)

    top_dev = [deviation(p) for p in polys]
    assert max(top_dev) > 1.0


def test_ignore_flags_appear_across_a_batch():
    batch = [synth.render_scene("synth-ic15", 0, i, 320) for i in range(6)]
    flags = [i.ignore for s in batch for i in s.instances]
    assert any(flags) and not all(flags)


def _poly_mask(instances, h, w, care_only=False):
    m = np.zeros((h, w), np.uint8)
    for inst in instances:
        if not (care_only and inst.ignore):
            cv2.fillPoly(m, [np.round(inst.polygon).astype(np.int32)], 1)
    return m


def test_no_ink_far_outside_polygons(scenes):
    for name, batch in scenes.items():
        for s in batch:
            far = cv2.dilate(_poly_mask(s.instances, SIZE, SIZE), np.ones((13, 13), np.uint8)) == 0  # > 6 px away
            assert s.ink is not None and s.ink.shape == (SIZE, SIZE)
            assert s.ink[far].max(initial=0) < 0.05, name
            if s.instances:
                assert s.ink.max() > 0.5


def test_pixels_inside_polygons_differ_from_the_textless_render():
    for name in synth.PRESETS:
        for i in range(3):
            with_text = synth.render_scene(name, 5, i, 256)
            without = synth.render_scene(name, 5, i, 256, draw_text=False)
            assert [x.polygon.tobytes() for x in with_text.instances] == \
                   [x.polygon.tobytes() for x in without.instances]
            diff = np.abs(with_text.image.astype(int) - without.image.astype(int)).max(2)
            for inst in with_text.instances:
                if not inst.ignore:
                    m = _poly_mask([inst], 256, 256).astype(bool)
                    assert diff[m].max() >= 10, (name, i, inst.text)
            far = cv2.dilate(_poly_mask(with_text.instances, 256, 256), np.ones((25, 25), np.uint8)) == 0
            assert np.mean(diff[far] > 3) < 0.01  # only JPEG blocks next to text may change


def test_write_synth_set_layout_manifest_and_reuse(tmp_path):
    out = synth.write_synth_set("synth-ic15", 3, 96, 1, tmp_path / "ic", workers=1, progress=False)
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["img_0.jpg", "img_1.jpg", "img_2.jpg"]
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["gt_img_0.txt", "gt_img_1.txt", "gt_img_2.txt"]
    man = json.loads((out / "manifest.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{12}", man["config_hash"]) and man["num"] == 3 and man["seed"] == 1
    img = cv2.imread(str(out / "images" / "img_1.jpg"))
    assert img.shape == (96, 96, 3)
    insts = read_icdar2015(out / "annotations" / "gt_img_1.txt")
    ref = synth.render_scene("synth-ic15", 1, 1, 96).instances
    assert len(insts) == len(ref)
    for a, b in zip(insts, ref):
        assert a.ignore == b.ignore and np.abs(a.polygon - b.polygon).max() <= 0.051
    # the same call again touches nothing
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    synth.write_synth_set("synth-ic15", 3, 96, 1, out, workers=1, progress=False)
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_text_scale_draws_larger_words_in_a_separate_set(tmp_path):
    big = synth.with_text_scale("synth-ic15", 2.0)
    assert big.font_frac == tuple(2 * f for f in synth.PRESETS["synth-ic15"].font_frac) and big.name == "synth-ic15"
    assert synth.with_text_scale("synth-ic15", 1.0) is synth.PRESETS["synth-ic15"]
    with pytest.raises(synth.SynthError):
        synth.with_text_scale("synth-ic15", 0.0)

    def median_height(preset):  # short side of every word's min-area rectangle (tiny don't-care words included)
        hs = [min(cv2.minAreaRect(i.polygon.astype(np.float32))[1]) for k in range(6)
              for i in synth.render_scene(preset, 5, k, 320).instances]
        return float(np.median(hs))

    assert median_height(big) > 1.4 * median_height("synth-ic15")
    a = synth.write_synth_set("synth-ic15", 1, 96, 0, tmp_path / "a", workers=1, progress=False)
    b = synth.write_synth_set(big, 1, 96, 0, tmp_path / "b", workers=1, progress=False)
    assert (json.loads((a / "manifest.json").read_text())["config_hash"]
            != json.loads((b / "manifest.json").read_text())["config_hash"])


def test_polygon_presets_write_totaltext(tmp_path):
    out = synth.write_synth_set("synth-total", 2, 96, 0, tmp_path / "tt", workers=2, progress=False)
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["poly_gt_img_0.txt", "poly_gt_img_1.txt"]
    insts = read_totaltext(out / "annotations" / "poly_gt_img_0.txt")
    assert all(len(i.polygon) == 14 for i in insts)
    assert json.loads((out / "manifest.json").read_text())["format"] == "totaltext"
    # worker processes write the very bytes this process renders
    assert (out / "images" / "img_1.jpg").read_bytes() == synth._encode_scene(synth.PRESETS["synth-total"], 0, 1, 96)[1]


def test_interrupted_set_is_completed(tmp_path):
    out = synth.write_synth_set("synth-doc", 3, 96, 0, tmp_path / "d", workers=1, progress=False)
    ref = (out / "images" / "img_2.jpg").read_bytes()
    keep = (out / "images" / "img_0.jpg").stat().st_mtime_ns
    # an interrupted run: manifest not yet written, the pending marker there, a file missing, a temp file left
    (out / "manifest.json").unlink()
    (out / ".synth_pending.json").write_text(json.dumps(synth._set_digest("synth-doc", 3, 96, 0)))
    (out / "images" / "img_2.jpg").unlink()
    (out / "images" / ".img_2.jpg.tmp").write_bytes(b"\xff\xd8partial")
    synth.write_synth_set("synth-doc", 3, 96, 0, out, workers=1, progress=False)
    assert (out / "images" / "img_2.jpg").read_bytes() == ref
    assert (out / "images" / "img_0.jpg").stat().st_mtime_ns == keep  # complete files of this set are kept
    assert not list(out.rglob("*.tmp")) and not (out / ".synth_pending.json").exists()
    assert (out / "manifest.json").exists()
    # a truncated image (no JPEG end marker) is re-rendered even when the manifest matches
    (out / "images" / "img_1.jpg").write_bytes(ref[: len(ref) // 2])
    synth.write_synth_set("synth-doc", 3, 96, 0, out, workers=1, progress=False)
    assert (out / "images" / "img_1.jpg").read_bytes()[-2:] == b"\xff\xd9"
    # manifest removed, no pending marker: files of unknown provenance are refused and left as they are
    (out / "manifest.json").unlink()
    (out / "annotations" / "gt_img_0.txt").write_text("garbage\n")
    with pytest.raises(synth.SynthError, match="did not write"):
        synth.write_synth_set("synth-doc", 3, 96, 0, out, workers=1, progress=False)
    assert (out / "annotations" / "gt_img_0.txt").read_text() == "garbage\n"


def test_synth_never_touches_a_real_dataset_in_its_out_folder(tmp_path):
    """Issue 22, item 2: a folder holding a real ICDAR2015-style set with the generator's own file names."""
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    (real / "annotations").mkdir()
    for i in range(1, 21):
        (real / "images" / f"img_{i}.jpg").write_bytes(b"real photo %d" % i)
        (real / "annotations" / f"gt_img_{i}.txt").write_text(f"1,1,9,1,9,9,1,9,word{i}\n")
    before = {p: p.read_bytes() for p in real.rglob("*") if p.is_file()}
    with pytest.raises(synth.SynthError, match="did not write") as e:
        synth.write_synth_set("synth-ic15", 5, 96, 0, real, workers=1, progress=False)
    assert str(real) in str(e.value)
    assert {p: p.read_bytes() for p in real.rglob("*") if p.is_file()} == before


def test_other_arguments_regenerate(tmp_path):
    out = synth.write_synth_set("synth-doc", 3, 96, 0, tmp_path / "d", workers=1, progress=False)
    h0 = json.loads((out / "manifest.json").read_text())["config_hash"]
    synth.write_synth_set("synth-doc", 2, 96, 5, out, workers=1, progress=False)
    assert json.loads((out / "manifest.json").read_text())["config_hash"] != h0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["img_0.jpg", "img_1.jpg"]
    assert (out / "images" / "img_0.jpg").read_bytes() == \
        synth._encode_scene(synth.PRESETS["synth-doc"], 5, 0, 96)[1]


NEGATIONS = {"no", "not", "without", "none", "nothing", "empty", "blank", "free", "lacking", "absent", "never"}


def test_captions():
    seen_text = seen_free = 0
    for i in range(40):
        img, cap, insts = synth.captioned_scene(0, i, 128 if i % 2 else (96, 128))
        assert img.dtype == np.uint8 and img.shape[2] == 3 and isinstance(cap, str) and cap
        care = [x for x in insts if not x.ignore]
        if care:
            seen_text += 1
            quoted = re.findall(r'"([^"]+)"', cap)
            assert quoted and all(q in [x.text for x in care] for q in quoted), cap
        elif insts:  # only don't-care text (faint): described, not quoted
            assert "text" in cap and '"' not in cap, cap
        else:
            seen_free += 1
            assert '"' not in cap and not NEGATIONS & set(re.findall(r"[a-z]+", cap.lower())), cap
    assert 4 <= seen_free <= 24 and seen_text >= 16
    a = synth.captioned_scene(4, 9, 128)
    b = synth.captioned_scene(4, 9, 128)
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1]
    img, cap, _ = synth.captioned_scene(1, 2, 128, presets=["synth-doc"])
    assert img.shape == (128, 128, 3)
    with pytest.raises(synth.SynthError):
        synth.captioned_scene(0, 0, 128, presets=["nope"])


def test_show_scene_and_gallery():
    import matplotlib

    matplotlib.use("Agg")
    s = synth.render_scene("synth-ic15", 0, 1, 128)
    ax = synth.show_scene(s.image, s.instances + [Instance(np.float32([[1, 1], [9, 1], [9, 9]]), "###", True)],
                          title="x")
    assert len(ax.patches) == len(s.instances) + 1
    assert any(p.get_linestyle() == "--" for p in ax.patches)
    fig = synth.gallery(["synth-doc", "synth-total"], n=2, size=96)
    assert len(fig.axes) == 4
