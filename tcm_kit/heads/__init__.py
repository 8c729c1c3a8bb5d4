"""Detector plug-ins (neck, head, loss, post-processing): DBNet, PAN, FCENet."""
