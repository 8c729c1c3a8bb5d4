"""Shared tiny fixtures for the model tests: a small open_clip CLIP, random images, DB targets."""
import numpy as np
import open_clip
import torch

from tcm_kit.data.formats import Instance
from tcm_kit.data.targets import db_targets

C, D, L = 64, 32, 16  # joint width, token width, context length of the tiny CLIP


def tiny_clip(seed=0):
    """A tiny open_clip CLIP (ModifiedResNet).

    open_clip zero-initialises each residual block's last BN (so a fresh block is the identity and its convs get
    no gradient); a pre-trained CLIP has non-zero ones, which is what the detector starts from: set them to 1.
    """
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=C,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=(1, 1, 1, 1), width=16, head_width=32, image_size=64),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=L, vocab_size=49408, width=D, heads=2, layers=1))
    for name, m in model.visual.named_modules():
        if name.endswith("bn3") and isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    return model


def images(b=2, size=64, seed=0):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def targets(b=2, size=64):
    """DB targets for one synthetic rectangle per image, as (B,H,W) tensors."""
    maps = []
    for i in range(b):
        x0, y0 = 8 + 6 * i, 12 + 4 * i
        poly = np.array([[x0, y0], [x0 + 40, y0], [x0 + 40, y0 + 24], [x0, y0 + 24]], np.float32)
        maps.append(db_targets([Instance(poly, "txt", False)], size, size))
    return {k: torch.from_numpy(np.stack([m[k] for m in maps])) for k in maps[0]}
