"""tcm-kit: a reproducibility kit for TCM (Turning a CLIP Model into a Scene Text Detector, CVPR 2023)."""

__version__ = "0.1.0"
