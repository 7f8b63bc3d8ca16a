"""Files exchanged between the stages of the Qu et al. pipeline, and overlay pictures.

JSON is written with :func:`nucleiweak_d2.data.atomic.write_json`; the outlines of the overlay
pictures are drawn with :func:`nucleiweak_d2.data.overlay.draw_outlines`.

Numpy/PIL only (plus the data layer's writers); no Detectron2 import.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["read_points_json", "write_mask_png", "side_by_side"]


def read_points_json(path):
    """``{str(image_id): (N, 2) int64 array}`` from a points JSON file."""
    with open(path) as f:
        data = json.load(f)
    return {str(k): np.asarray(v, dtype=np.int64).reshape(-1, 2) for k, v in data.items()}


def write_mask_png(path, mask):
    """Write a boolean map as an 8-bit PNG (1 = True); read back with ``read_label(...) > 0``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(path)


def side_by_side(*pictures, gap=4):
    """Concatenate equally tall RGB pictures horizontally with white gaps."""
    h = pictures[0].shape[0]
    sep = np.full((h, gap, 3), 255, dtype=np.uint8)
    parts = []
    for i, p in enumerate(pictures):
        if i:
            parts.append(sep)
        parts.append(p)
    return np.concatenate(parts, axis=1)
