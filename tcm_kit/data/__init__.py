"""Data: annotation formats, the synthetic scene-text generator, head targets and transforms."""
