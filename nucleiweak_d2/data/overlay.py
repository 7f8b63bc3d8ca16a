"""The one instance-outline painter: an RGB image with the outlines of an instance map's objects
and optional points drawn on it (the prediction overlays of ``tools/predict.py``, the pictures
of ``tools/demo.py`` and of the Qu et al. pipeline).

Tinting the pixels of a *class* map (the pseudo-label overlays of ``tools/make_pseudo_labels.py``,
:func:`nucleiweak_d2.pseudo_labels.export.overlay`) is a different picture and lives there.

Numpy/scipy only.
"""

import numpy as np
from scipy import ndimage as ndi

__all__ = ["outline_pixels", "draw_outlines"]

OUTLINE_MODES = ("inner", "thick")


def outline_pixels(instance_map, mode="inner"):
    """Boolean map of the outline pixels of an instance map.

    A pixel is on a boundary when one of its 4 neighbours inside the image holds another id
    (the image border is no boundary).

    Parameters
    ----------
    instance_map : array_like
        ``(H, W)`` non-negative integer ids, 0 = background.
    mode : {"inner", "thick"}
        ``"inner"``: the boundary pixels of the objects (ids > 0) only, as
        ``skimage.segmentation.find_boundaries(mode="inner") & (instance_map > 0)``; a line
        one pixel wide outside touching objects. ``"thick"``: the boundary pixels on both
        sides, background included (two pixels wide).

    Returns
    -------
    numpy.ndarray
        bool ``(H, W)``.
    """
    label = np.asarray(instance_map)
    if label.ndim != 2:
        raise ValueError(f"instance map must be (H, W), got shape {label.shape}")
    if mode not in OUTLINE_MODES:
        raise ValueError(f"outline mode must be one of {OUTLINE_MODES}, got {mode!r}")
    edge = np.zeros(label.shape, dtype=bool)
    rows = label[:-1] != label[1:]
    edge[:-1] |= rows
    edge[1:] |= rows
    cols = label[:, :-1] != label[:, 1:]
    edge[:, :-1] |= cols
    edge[:, 1:] |= cols
    if mode == "inner":
        return edge & (label > 0)
    return edge & (ndi.grey_dilation(label, size=3) > 0)


def draw_outlines(
    image, instance_map, points=None, color=(0, 255, 0), point_color=(255, 0, 0), mode="inner"
):
    """The image with the outlines of the instances (and points) drawn on it.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.
    instance_map : numpy.ndarray
        ``(H, W)`` instance label map; its :func:`outline_pixels` are painted ``color``.
    points : array_like, optional
        ``(K, 2)`` (x, y) pixel coordinates, rounded to the nearest pixel and drawn as 3x3
        squares of ``point_color`` (the parts inside the image), over the outlines.
    color, point_color : tuple of int
        RGB colours.
    mode : {"inner", "thick"}
        Outline mode of :func:`outline_pixels`.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 copy.
    """
    instance_map = np.asarray(instance_map)
    if np.shape(image)[:2] != instance_map.shape:
        raise ValueError(
            f"overlay: image is {np.shape(image)[:2]} but instance map is {instance_map.shape}"
        )
    out = np.array(image, dtype=np.uint8, copy=True)
    out[outline_pixels(instance_map, mode)] = color
    if points is not None and len(points):
        height, width = instance_map.shape
        centres = np.rint(np.asarray(points, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                rows, cols = centres[:, 1] + dy, centres[:, 0] + dx
                ok = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
                out[rows[ok], cols[ok]] = point_color
    return out
