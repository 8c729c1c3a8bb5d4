"""Transforms keep polygons and pixels in step; CLIP normalisation; the text-detection dataset."""
import cv2
import numpy as np
import pytest
import torch

from tcm_kit.data.formats import Instance, write_icdar2015
from tcm_kit.data.targets import fill_polygons, offset_polygon
from tcm_kit.data.transforms import (CLIP_MEAN, CLIP_STD, ColorJitter, Compose, CorruptImageError, RandomCrop,
                                     RandomFlip, RandomRotate, RandomScale, ResizePad, TextDetDataset,
                                     clip_instances, collate, denormalize, pad_to_multiple, to_tensor)
from tcm_kit.heads.db import DBTargets

FILL = (230, 30, 30)
BACK = (40, 90, 40)


def scene(h=120, w=160, poly=None):
    """A flat background with one filled quad -> (image uint8 (h, w, 3), [Instance])."""
    if poly is None:
        poly = np.array([[40, 30], [110, 40], [105, 75], [35, 65]], np.float32)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = BACK
    cv2.fillPoly(img, [np.round(poly).astype(np.int32)], FILL)
    return img, [Instance(poly, "word")]


def is_fill(img):
    """(H, W) bool: pixels close to the fill colour."""
    return np.abs(img.astype(int) - FILL).max(-1) < 40


def assert_aligned(img, inst, margin=2.0, frac=0.95):
    """Pixels well inside the polygon are fill colour; fill-coloured pixels lie in the slightly grown polygon."""
    h, w = img.shape[:2]
    inner = fill_polygons(np.zeros((h, w), np.float32), [offset_polygon(inst.polygon, -margin)], 1) > 0
    outer = fill_polygons(np.zeros((h, w), np.float32), [offset_polygon(inst.polygon, margin)], 1) > 0
    fill = is_fill(img)
    assert inner.sum() > 20
    assert fill[inner].mean() >= frac
    assert outer[fill].mean() >= frac


def test_scene_helper_is_aligned():
    img, insts = scene()
    assert_aligned(img, insts[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scale_keeps_alignment(seed):
    img, insts = scene()
    out, o = RandomScale((0.5, 2.0))(img, insts, np.random.default_rng(seed))
    assert out.shape[0] != img.shape[0] and out.dtype == np.uint8
    assert_aligned(out, o[0])
    assert insts[0].polygon[0, 0] == 40  # inputs are not modified


def test_random_scale_relative_to_long_side():
    img, insts = scene(120, 160)
    out, _ = RandomScale((1.0, 1.0), long_side=320)(img, insts, np.random.default_rng(0))
    assert out.shape[:2] == (240, 320)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_keeps_alignment(seed):
    img, insts = scene()
    out, o = RandomRotate(10.0)(img, insts, np.random.default_rng(seed))
    assert out.shape[0] > img.shape[0] and out.shape[1] > img.shape[1]  # expanded canvas
    assert_aligned(out, o[0])


def test_large_rotation_without_expand_keeps_size_and_alignment():
    img, insts = scene()
    out, o = RandomRotate(40.0, expand=False)(img, insts, np.random.default_rng(3))
    assert out.shape == img.shape
    assert_aligned(out, o[0])


def test_crop_keeps_text_whole_when_possible():
    img, insts = scene(200, 300)
    out, o = RandomCrop(96, tries=50)(img, insts, np.random.default_rng(0))
    assert out.shape == (96, 96, 3) and len(o) == 1 and not o[0].ignore
    shift = insts[0].polygon - o[0].polygon  # a pure translation by the crop origin
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape))
    assert_aligned(out, o[0])


def test_crop_pads_a_small_image():
    img, insts = scene(50, 70, np.array([[10, 10], [60, 10], [60, 40], [10, 40]], np.float32))
    out, o = RandomCrop(64)(img, insts, np.random.default_rng(0))
    assert out.shape == (64, 64, 3) and (out[55:, :] == 0).all()
    assert_aligned(out, o[0])


def test_clip_marks_mostly_cut_polygons_dont_care():
    poly = np.array([[0, 0], [100, 0], [100, 20], [0, 20]], np.float32)
    big_part = clip_instances([Instance(poly, "a")], 30, -5, 200, 50)  # 70% kept
    small_part = clip_instances([Instance(poly, "a")], 70, -5, 200, 50)  # 30% kept
    gone = clip_instances([Instance(poly, "a")], 150, 0, 200, 50)
    assert len(big_part) == 1 and not big_part[0].ignore and big_part[0].polygon[:, 0].min() == 30
    assert len(small_part) == 1 and small_part[0].ignore and small_part[0].text == "a"
    assert gone == []


def test_flip_is_off_by_default_and_aligned_when_on():
    img, insts = scene()
    out, o = RandomFlip()(img, insts, np.random.default_rng(0))
    assert out is img and o is insts
    out, o = RandomFlip(1.0)(img, insts, np.random.default_rng(0))
    assert_aligned(out, o[0])
    assert o[0].polygon[:, 0].min() == pytest.approx(img.shape[1] - 1 - 110)


def test_resize_pad_to_multiple_of_32():
    img, insts = scene(120, 160)
    out, o = ResizePad(100)(img, insts)
    assert out.shape == (96, 128, 3)  # 75 x 100 resized, padded to multiples of 32
    assert out[80:, :].max() == 0 and out[:, 100:].max() == 0
    assert_aligned(out[:75, :100], o[0], margin=1.5)
    assert pad_to_multiple(np.zeros((33, 64, 3), np.uint8)).shape == (64, 64, 3)


def test_color_jitter_changes_colours_only_and_is_deterministic():
    img, insts = scene()
    a, oa = ColorJitter()(img, insts, np.random.default_rng(5))
    b, _ = ColorJitter()(img, insts, np.random.default_rng(5))
    assert a.shape == img.shape and a.dtype == np.uint8 and not np.array_equal(a, img)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(oa[0].polygon, insts[0].polygon)


def test_compose_is_deterministic_and_aligned():
    img, insts = scene()
    t = Compose([RandomScale((0.8, 1.2)), RandomRotate(10), RandomCrop(112), ColorJitter(hue=0.0)])
    a, oa = t(img, insts, np.random.default_rng(7))
    b, ob = t(img, insts, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(oa[0].polygon, ob[0].polygon)
    assert a.shape == (112, 112, 3) and not oa[0].ignore
    c, _ = Compose(t.transforms[:3])(img, insts, np.random.default_rng(7))  # same geometry without the jitter
    assert_aligned(c, oa[0], frac=0.9)


def test_to_tensor_and_denormalize_round_trip():
    img, _ = scene()
    x = to_tensor(img)
    assert x.shape == (3, 120, 160) and x.dtype == torch.float32
    expected = (FILL[0] / 255 - CLIP_MEAN[0]) / CLIP_STD[0]
    assert x[0, 50, 70].item() == pytest.approx(expected, abs=1e-5)
    np.testing.assert_array_equal(denormalize(x), img)
    assert denormalize(x[None]).shape == (1, 120, 160, 3)


# ----------------------------------------------------------------------------- dataset

def write_folder(root, shapes=((96, 128), (128, 96), (100, 300))):
    """A tiny ICDAR2015-layout folder: root/images/img_<k>.jpg + root/annotations/gt_img_<k>.txt."""
    (root / "images").mkdir(parents=True)
    for k, (h, w) in enumerate(shapes):
        poly = np.array([[w * 0.2, h * 0.3], [w * 0.8, h * 0.3], [w * 0.8, h * 0.6], [w * 0.2, h * 0.6]], np.float32)
        img, insts = scene(h, w, poly)
        insts.append(Instance(np.array([[2, 2], [12, 2], [12, 8], [2, 8]], np.float32), "###", True))
        cv2.imwrite(str(root / "images" / f"img_{k}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        write_icdar2015(root / "annotations" / f"gt_img_{k}.txt", insts)
    return root


MAPS = ("prob", "prob_mask", "thresh", "thresh_mask")


def test_eval_items_shapes_scale_and_collate(tmp_path):
    ds = TextDetDataset(write_folder(tmp_path / "set"), size=64, train=False, targets=DBTargets())
    assert len(ds) == 3
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    for k in MAPS:
        assert item[k].shape == (64, 64) and item[k].dtype == torch.float32
    assert item["scale"] == pytest.approx(0.5) and item["path"].endswith("img_0.jpg")
    assert item["instances"][0].polygon[:, 0].max() == pytest.approx((128 * 0.8 + 0.5) * 0.5 - 0.5, abs=0.01)
    assert item["instances"][1].ignore and item["prob"].max() == 1
    wide = ds[2]
    assert wide["image"].shape == (3, 32, 64)  # 100 x 300 -> 21 x 64 -> padded to 32 x 64
    batch = collate([ds[0], wide])
    assert batch["image"].shape == (2, 3, 64, 64) and batch["prob"].shape == (2, 64, 64)
    assert batch["prob_mask"][1, 40:].max() == 0  # collate padding is outside the loss masks
    assert len(batch["instances"]) == 2 and batch["scale"][0] == pytest.approx(0.5)
    np.testing.assert_array_equal(denormalize(batch["image"][1, :, 40:]), 0)  # padded with black


def test_train_items_shapes_and_determinism(tmp_path):
    root = write_folder(tmp_path / "set")
    a = TextDetDataset(root, size=64, train=True, seed=3, targets=DBTargets())
    b = TextDetDataset(root, size=64, train=True, seed=3, targets=DBTargets())
    x, y = a[1], b[1]
    assert x["image"].shape == (3, 64, 64)
    for k in MAPS:
        assert x[k].shape == (64, 64) and x[k].dtype == torch.float32
        assert torch.equal(x[k], y[k])
    assert torch.equal(x["image"], y["image"]) and x["scale"] == 1.0
    a.set_epoch(1)
    assert not torch.equal(a[1]["image"], x["image"])
    c = TextDetDataset(root, size=64, train=True, seed=4, targets=DBTargets())
    assert not torch.equal(c[1]["image"], x["image"])
    loader = torch.utils.data.DataLoader(a, batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 64, 64) and len(batch["path"]) == 3


def test_eval_items_without_targets_have_no_maps(tmp_path):
    """targets=None (evaluation): an item holds the image and its annotations, no training maps."""
    root = write_folder(tmp_path / "set")
    ds = TextDetDataset(root, size=64, train=False)
    assert ds.targets is None
    item = ds[0]
    assert set(item) == {"image", "instances", "path", "scale"}
    assert item["image"].shape == (3, 64, 64) and item["scale"] == pytest.approx(0.5)
    assert len(item["instances"]) == 2 and item["path"].endswith("img_0.jpg")
    batch = collate([item, ds[2]])
    assert set(batch) == {"image", "instances", "path", "scale"} and batch["image"].shape == (2, 3, 64, 64)
    with_maps = TextDetDataset(root, size=64, train=False, targets=DBTargets())[0]  # the same item with DB maps
    assert set(with_maps) == set(item) | set(MAPS) and torch.equal(with_maps["image"], item["image"])


def test_indices_select_a_subset(tmp_path):
    ds = TextDetDataset(write_folder(tmp_path / "set"), size=64, train=False, indices=[2, 0])
    assert len(ds) == 2 and ds[0]["path"].endswith("img_2.jpg") and ds[1]["path"].endswith("img_0.jpg")


def test_corrupt_image_raises_or_is_skipped_with_a_warning(tmp_path):
    root = write_folder(tmp_path / "set")
    (root / "images" / "img_1.jpg").write_bytes(b"not a jpeg at all")
    ds = TextDetDataset(root, size=64, train=False)
    assert len(ds) == 3
    with pytest.raises(CorruptImageError, match="img_1.jpg"):
        ds[1]
    with pytest.warns(UserWarning, match="img_1.jpg"):
        skipped = TextDetDataset(root, size=64, train=False, on_corrupt="skip", progress=False)
    assert len(skipped) == 2 and [p.name for p, _ in skipped.samples] == ["img_0.jpg", "img_2.jpg"]


def test_bad_arguments(tmp_path):
    root = write_folder(tmp_path / "set")
    with pytest.raises(ValueError):
        TextDetDataset(root, size=100)
    with pytest.raises(ValueError):
        TextDetDataset(root, size=64, on_corrupt="ignore")
