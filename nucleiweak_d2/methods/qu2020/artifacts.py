"""Files exchanged between the stages of the Qu et al. pipeline, and overlay pictures.

JSON is written with :func:`nucleiweak_d2.data.atomic.write_json`.

Numpy/PIL only (plus the data layer's writers); no Detectron2 import.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

__all__ = ["read_points_json", "write_mask_png", "overlay_instances",
           "side_by_side"]


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


def _boundaries(label):
    """Pixels of an instance map whose 4-neighbourhood holds another id."""
    label = np.asarray(label)
    edge = np.zeros(label.shape, dtype=bool)
    edge[:-1] |= label[:-1] != label[1:]
    edge[1:] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:, 1:] |= label[:, :-1] != label[:, 1:]
    return edge & (ndi.grey_dilation(label, size=3) > 0)


def overlay_instances(image, label, points=None, colour=(0, 255, 0), point_colour=(255, 255, 0)):
    """RGB picture: ``image`` with the outlines of ``label``'s objects and optional points.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` uint8.
    label : numpy.ndarray
        ``(H, W)`` int instance map.
    points : array_like, optional
        ``(K, 2)`` (x, y) points drawn as 3x3 squares.
    colour, point_colour : tuple of int

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    out[_boundaries(label)] = colour
    if points is not None and len(points):
        h, w = out.shape[:2]
        pts = np.round(np.asarray(points, dtype=np.float64)).astype(int).reshape(-1, 2)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                x = np.clip(pts[:, 0] + dx, 0, w - 1)
                y = np.clip(pts[:, 1] + dy, 0, h - 1)
                out[y, x] = point_colour
    return out


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
