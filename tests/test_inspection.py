"""tcm_kit.inspection: similarity maps, their figures, the pre-training log, the prior table, the prompt widget."""
import csv

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from tcm_kit import clip  # noqa: E402
from tcm_kit import inspection as ins  # noqa: E402
from tcm_kit.data.formats import Instance  # noqa: E402
from tcm_kit.pretrain import LOG_FIELDS, work_dir  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    model = clip.create_clip(clip.EMBEDDED_MODEL_NAME, seed=0).eval()
    tok = open_clip.get_tokenizer(clip.EMBEDDED_MODEL_NAME, context_length=model.context_length)
    return model, tok


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_similarity_map_shape_range_and_determinism(tiny):
    model, tok = tiny
    img = _image(96, 160)
    sim = ins.similarity_map(model, tok, img, "Text")
    assert sim.shape == (3, 5) and sim.dtype == np.float32
    assert np.isfinite(sim).all() and sim.min() >= -1 and sim.max() <= 1
    assert np.array_equal(sim, ins.similarity_map(model, tok, img, "Text"))
    assert not model.training


def test_similarity_maps_stack_the_single_prompt_maps(tiny):
    model, tok = tiny
    img = _image(64, 64, 1)
    maps = ins.similarity_maps(model, tok, img, ["Text", "a brick wall"])
    assert maps.shape == (2, 2, 2)
    np.testing.assert_allclose(maps[1], ins.similarity_map(model, tok, img, "a brick wall"), atol=1e-6)
    assert not np.allclose(maps[0], maps[1])
    with pytest.raises(ins.InspectError, match="list of strings"):
        ins.similarity_maps(model, tok, img, "Text")


def test_size_resizes_the_long_side_to_a_multiple_of_32(tiny):
    model, tok = tiny
    sim = ins.similarity_map(model, tok, _image(100, 50), "Text", size=128)
    assert sim.shape == (4, 2)
    assert ins.fit_to_stride(_image(100, 50)).shape == (96, 64, 3)
    assert ins.fit_to_stride(_image(64, 32)).shape == (64, 32, 3)
    with pytest.raises(ins.InspectError, match="uint8 RGB"):
        ins.fit_to_stride(np.zeros((8, 8), np.uint8))


def test_load_image_composites_transparency_on_white(tmp_path):
    rgba = np.zeros((50, 130, 4), np.uint8)
    rgba[:, :65] = (255, 0, 0, 255)  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = ins.load_image(tmp_path / "a.png", long_side=128)
    assert img.shape == (64, 128, 3) and img.dtype == np.uint8
    assert tuple(img[32, 10]) == (255, 0, 0) and tuple(img[32, 120]) == (255, 255, 255)
    with pytest.raises(ins.InspectError, match="not found"):
        ins.load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(ins.InspectError, match="cannot read"):
        ins.load_image(tmp_path / "bad.png")


def test_text_cell_auc_from_polygons():
    box = Instance(np.array([[0, 0], [64, 0], [64, 32], [0, 32]], np.float32), "word", False)
    cover = ins.cell_coverage([box], (128, 128), (4, 4))
    assert cover[0, :2].tolist() == [1.0, 1.0] and cover[2:].sum() == 0
    assert cover[1].max() < 0.05 and cover[0, 3] == 0  # at most the polygon's boundary pixels spill over
    sim = np.zeros((4, 4), np.float32)
    sim[0, :2] = 0.5
    assert ins.text_cell_auc(sim, [box], (128, 128)) == 1.0
    assert ins.text_cell_auc(-sim, [box], (128, 128)) == 0.0
    assert np.isnan(ins.text_cell_auc(sim, [], (128, 128)))


def test_inspection_images_and_similarity_table(tiny, tmp_path):
    model, tok = tiny
    Image.fromarray(_image(40, 100)).save(tmp_path / "real.png")
    images = ins.inspection_images(seed=0, size=64, real_image=tmp_path / "real.png", presets=["synth-doc"])
    assert list(images) == ["synth-doc", "real: real.png"]
    assert images["synth-doc"][0].shape == (64, 64, 3) and images["real: real.png"][1] is None
    assert list(ins.inspection_images(seed=0, size=64, real_image=tmp_path / "nope.png", presets=["synth-doc"]))\
        == ["synth-doc"]
    df = ins.similarity_table({"a": model, "b": model}, tok, images)
    assert df["image"].tolist() == ["synth-doc", "synth-doc"]  # the real picture has no polygons
    assert df["model"].tolist() == ["a", "b"] and df["text_cell_auc"].nunique(dropna=False) == 1


def test_similarity_grid_builds_one_row_per_image(tiny):
    model, tok = tiny
    images = {"square": _image(64, 64), "wide": (_image(32, 96), None)}
    fig = ins.plot_similarity_grid({"m": model, "r": ins.random_clip(model, seed=1)}, tok, images,
                                   prompts=["Text", "a sign"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * (1 + 2 * 2)
    assert fig.axes[1].get_title().startswith("m: 'Text'")
    fig.canvas.draw()
    with pytest.raises(ins.InspectError, match="at least one"):
        ins.plot_similarity_grid({}, tok, images)


def test_random_clip_has_the_same_architecture_and_other_weights(tiny):
    model, _ = tiny
    rand = ins.random_clip(model, seed=5)
    assert rand.tcm_model_name == model.tcm_model_name and not rand.training
    a, b = model.state_dict(), rand.state_dict()
    assert a.keys() == b.keys() and not torch.equal(a["visual.conv1.weight"], b["visual.conv1.weight"])


def _log_rows(n=12):
    return [{"step": i, "loss": 3.0 - 0.1 * i, "acc": 0.05 * i, "lr": 1e-3, "logit_scale": 14.0 + i,
             "size": 64, "time": 0.5 * i} for i in range(n)]


def test_pretrain_log_reads_the_csv_or_the_checkpoint_copy(tmp_path):
    ckpt = tmp_path / "abc.pt"
    assert ins.pretrain_log(ckpt).empty
    torch.save({"kind": "tcm-kit-clip", "log": _log_rows(5)}, ckpt)
    assert ins.pretrain_log(ckpt)["step"].tolist() == [0, 1, 2, 3, 4]
    work_dir(ckpt).mkdir()
    with open(work_dir(ckpt) / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        w.writeheader()
        w.writerows(_log_rows(7))
    log = ins.pretrain_log(ckpt)
    assert len(log) == 7 and list(log.columns) == list(LOG_FIELDS)


def test_pretrain_curves_figure():
    fig = ins.plot_pretrain_curves(pd.DataFrame(_log_rows()), chance_acc=1 / 16)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert [a.get_title() for a in fig.axes][:2] == ["contrastive loss", "in-batch retrieval top-1"]
    fig.canvas.draw()
    with pytest.raises(ins.InspectError, match="empty"):
        ins.plot_pretrain_curves([])


def test_prior_table_has_one_row_per_model(tiny):
    model, _ = tiny
    df = ins.prior_table({"pretrained": model, "random init": ins.random_clip(model, 3)}, n=4,
                         sizes=((64, 64), (96, 40)), seed=0)
    assert df["model"].tolist() == ["pretrained", "pretrained", "random init", "random init"]
    assert df["size"].tolist() == ["64x64", "96x40"] * 2
    assert {"image_auc", "dense_auc", "retrieval_top1", "chance"} <= set(df.columns)
    assert df["n_images"].tolist() == [4] * 4
    # 40 px is padded to 64: only the first row of 32 px cells is more image than padding
    assert df["n_pos_cells"][1] + df["n_neg_cells"][1] <= 4 * 3


def test_prior_table_probes_a_model_on_fewer_scenes_when_asked(tiny):
    model, _ = tiny
    floor = ins.random_clip(model, 3)
    df = ins.prior_table({"pretrained": model, "random init": floor}, n=6, sizes=((64, 64),), seed=0,
                         n_for={"random init": 2})
    assert df["n_images"].tolist() == [6, 2]
    # the first scenes of the same draw: the floor's figures on 2 scenes are those of a 2-scene probe
    alone = ins.prior_table({"random init": floor}, n=2, sizes=((64, 64),), seed=0)
    assert df.iloc[1].drop("model").equals(alone.iloc[0].drop("model"))


def test_prior_table_probes_fewer_scenes_at_a_size_when_asked(tiny):
    model, _ = tiny
    floor = ins.random_clip(model, 3)
    df = ins.prior_table({"pretrained": model, "random init": floor}, n=6, sizes=((64, 64), (96, 64)), seed=0,
                         n_for={"random init": 4}, size_n={(96, 64): 3})
    assert df["n_images"].tolist() == [6, 3, 4, 3]
    alone = ins.prior_table({"pretrained": model}, n=3, sizes=((96, 64),), seed=0)
    assert df.iloc[1].equals(alone.iloc[0])


def test_settings_for_profiles():
    assert all(w > 0 and h > 0 for w, h in ins.settings_for("cpu")["probe_sizes"])
    with pytest.raises(ins.InspectError, match="profile"):
        ins.settings_for("gpu")


def test_prompt_explorer_redraws_on_change(tiny):
    model, tok = tiny
    ex = ins.prompt_explorer({"m": model}, tok, {"one": _image(64, 64), "two": _image(64, 96, 2)})
    assert ex.view.value[:4] == b"\x89PNG"
    assert ex.figure.axes[1].get_title().startswith("m: 'Text'")
    ex.text.value = "a brick wall"  # the observer redraws
    assert ex.figure.axes[1].get_title().startswith("m: 'a brick wall'")
    ex.choice.value = "two"
    assert ex.figure.axes[0].get_images()[0].get_array().shape[:2] == (64, 96)
    assert "application/vnd.jupyter.widget-view+json" in ex._repr_mimebundle_()


def test_prompt_explorer_shows_its_map_at_the_size_it_was_drawn(tiny):
    """Issue 22, item 16: the PNG was stretched to the notebook's width, so it looked blurry."""
    import io

    from PIL import Image

    model, tok = tiny
    ex = ins.prompt_explorer({"m": model}, tok, {"one": _image(64, 64)})
    png = Image.open(io.BytesIO(ex.view.value))
    shown_w = float(ex.view.layout.width.removesuffix("px"))
    assert abs(png.width - 2 * shown_w) <= 2  # 2x pixels for the width it is shown at, never stretched


class _MaskDetector(torch.nn.Module):
    """A stand-in TCM detector whose score map P is a function of the image's bright pixels per cell."""

    def __init__(self, sign: float):
        super().__init__()
        self.sign = sign
        self.backbone = type("B", (), {"aux_loss": lambda *a: None})()

    def forward(self, images):
        bright = (images.mean(1, keepdim=True) > 1.0).float()  # (B,1,H,W): white text on black
        p = torch.nn.functional.avg_pool2d(bright, 32)  # (B,1,H/32,W/32)
        return {"score_map": 0.5 + self.sign * (p - 0.5)}


def test_score_map_auc_ranks_text_cells(tmp_path):
    from tcm_kit.data.formats import write_icdar2015

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    for i in range(2):
        img = np.zeros((96, 160, 3), np.uint8)
        img[32:64, 32 + 32 * i:128] = 255  # a white "word", cells aligned to the 32 px grid
        Image.fromarray(img).save(tmp_path / "images" / f"img_{i}.png")
        poly = np.array([[32 + 32 * i, 32], [127, 32], [127, 63], [32 + 32 * i, 63]], np.float32)  # pixels inclusive
        write_icdar2015(tmp_path / "annotations" / f"gt_img_{i}.txt", [Instance(poly, "word")])
    good = ins.score_map_auc(_MaskDetector(+1), tmp_path, size=160)
    bad = ins.score_map_auc(_MaskDetector(-1), tmp_path, size=160)
    assert good["auc"] == 1.0 and bad["auc"] == 0.0
    assert good["n_images"] == 2 and good["n_pos_cells"] == 3 + 2 and good["n_neg_cells"] == 2 * 15 - 5
    plain = _MaskDetector(1)
    plain.backbone = object()
    with pytest.raises(ins.InspectError, match="TCM"):
        ins.score_map_auc(plain, tmp_path)


def test_real_prior_auc_ranks_text_cells_and_leaves_dont_care_out(tmp_path, monkeypatch):
    """A stand-in CLIP whose cell embedding points at "text" where the cell is bright: the white word's cells
    rank first (AUC 1), the reversed model ranks them last (AUC 0); a don't-care word's cells count nowhere."""
    from types import SimpleNamespace

    from tcm_kit.data.formats import write_icdar2015

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    img = np.zeros((96, 160, 3), np.uint8)
    img[32:64, 32:128] = 255  # a care word on 3 cells
    img[64:96, 0:32] = 255  # a don't-care word on 1 cell: bright, but neither positive nor negative
    Image.fromarray(img).save(tmp_path / "images" / "img_0.png")
    write_icdar2015(tmp_path / "annotations" / "gt_img_0.txt",
                    [Instance(np.array([[32, 32], [127, 32], [127, 63], [32, 63]], np.float32), "word"),
                     Instance(np.array([[0, 64], [31, 64], [31, 95], [0, 95]], np.float32), "###", True)])

    class StandIn(torch.nn.Module):
        def __init__(self, sign):
            super().__init__()
            self.sign = sign
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode_text(self, tokens):
            return torch.tensor([[1.0, 0.0]])  # "text" is the first axis

    def features(model, x):  # (1, 3, H, W) -> cells (1, 2, H/32, W/32): bright cells point along "text"
        b = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 32)
        return SimpleNamespace(visual_embeddings=torch.cat([model.sign * b, torch.ones_like(b)], 1))

    monkeypatch.setattr(ins, "dense_features", features)
    tokenizer = lambda prompts: torch.zeros(len(prompts), 4, dtype=torch.long)  # noqa: E731
    good = ins.real_prior_auc(StandIn(+1), tokenizer, tmp_path, size=160)
    bad = ins.real_prior_auc(StandIn(-1), tokenizer, tmp_path, size=160)
    assert good["dense_auc"] == 1.0 and bad["dense_auc"] == 0.0
    assert good["n_images"] == 1 and good["n_pos_cells"] == 3 and good["n_neg_cells"] == 15 - 3 - 1
    (tmp_path / "empty").mkdir()
    from tcm_kit.data.formats import MissingFileError

    with pytest.raises(MissingFileError, match="empty.*no image folder"):
        ins.real_prior_auc(StandIn(1), tokenizer, tmp_path / "empty")


def test_real_prior_auc_is_kept_and_read_back_by_the_models_weights_and_the_photos(tiny, tmp_path, monkeypatch):
    """With cache=True the figures of a (model, folder) are measured once; other weights, or a changed photo, are
    measured anew."""
    from tcm_kit.data.formats import write_icdar2015

    monkeypatch.setenv("TCM_KIT_DATA", str(tmp_path / "kitdata"))
    root = tmp_path / "photos"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(_image(96, 160, seed=3)).save(root / "images" / "img_0.png")
    write_icdar2015(root / "annotations" / "gt_img_0.txt",
                    [Instance(np.array([[32, 32], [127, 32], [127, 63], [32, 63]], np.float32), "word")])
    model, tok = tiny
    calls = []
    measure = ins._text_cell_auc
    monkeypatch.setattr(ins, "_text_cell_auc", lambda *a, **k: calls.append(1) or measure(*a, **k))
    first = ins.real_prior_auc(model, tok, root, size=160, cache=True)
    assert ins.real_prior_auc(model, tok, root, size=160, cache=True) == first and len(calls) == 1
    assert len(list((tmp_path / "kitdata" / "eval" / "clip_prior").glob("*-photos-*.json"))) == 1
    other = ins.random_clip(model, seed=1)
    assert ins.state_digest(other) != ins.state_digest(model)
    ins.real_prior_auc(other, tok, root, size=160, cache=True)
    assert len(calls) == 2  # other weights: measured
    Image.fromarray(_image(96, 160, seed=4)).save(root / "images" / "img_0.png")
    assert ins.real_prior_auc(model, tok, root, size=160, cache=True)["n_images"] == 1 and len(calls) == 3


@pytest.mark.parametrize("name", ["tcm-dbnet", "dbnet"])
def test_detection_views_show_prior_score_map_and_detections_on_one_picture(tiny, name):
    from tcm_kit import train as T
    from tcm_kit.train import TrainConfig

    model, tok = tiny
    detector = T.build_model(TrainConfig.for_profile("smoke", detector=name), progress=False)
    views = ins.detection_views(detector, model, tok, _image(72, 128), size=256, box_thresh=0.0)
    assert views["image"].shape == (128, 256, 3) and views["prior"].shape == (4, 8)  # sides in multiples of 32
    if name == "tcm-dbnet":  # P is a probability map over the picture; a plain DBNet has none
        assert views["score_map"].ndim == 2 and 0 <= views["score_map"].min() <= views["score_map"].max() <= 1
    else:
        assert views["score_map"] is None
    assert all(p.shape[1] == 2 for p, _ in views["detections"])
    fig = ins.plot_detection_views(views, name)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert fig.axes[2].get_title() == f"{len(views['detections'])} detections"
