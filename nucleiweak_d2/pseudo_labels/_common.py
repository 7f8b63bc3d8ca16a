"""Shared helpers of the pseudo-label generators: input checks, label codes, point maps.

Everything here is numpy/scipy only. Points follow ``docs/CONTRACTS.md``: an array of shape
``(N, 2)`` holding integer pixel indices in **(x, y) = (column, row)** order.
"""

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "BACKGROUND",
    "NUCLEUS",
    "IGNORE",
    "check_image",
    "check_shape",
    "check_points",
    "disk",
    "point_mask",
    "nearest_point",
    "dilate_points",
]

#: Segmentation pseudo-label codes (uint8), shared by every generator.
BACKGROUND = 0
NUCLEUS = 1
IGNORE = 2


def check_image(image, name="image"):
    """Validate an RGB image and return it as a uint8 ``(H, W, 3)`` array.

    Parameters
    ----------
    image : array_like
        ``(H, W, 3)`` RGB image; uint8, or any integer/float array with values in [0, 255].
    name : str
        Argument name used in error messages.

    Returns
    -------
    numpy.ndarray
        The image as uint8 (a view when it already is one).

    Raises
    ------
    ValueError
        If the image is empty, not ``(H, W, 3)`` or has values outside [0, 255].
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {image.shape}")
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"{name} must be numeric RGB, got dtype {image.dtype}")
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 255:
        raise ValueError(f"{name} values must lie in [0, 255]")
    return np.round(image).astype(np.uint8)


def check_shape(shape, name="shape"):
    """Return ``shape`` as a tuple ``(H, W)`` of positive ints; ValueError otherwise."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as exc:
        raise ValueError(f"{name} must be a pair (H, W), got {shape!r}") from exc
    if len(shape) < 2:
        raise ValueError(f"{name} must be a pair (H, W), got {shape!r}")
    shape = shape[:2]
    if shape[0] <= 0 or shape[1] <= 0:
        raise ValueError(f"{name} must be positive, got {shape!r} (empty image)")
    return shape


def check_points(points, shape, name="points", allow_empty=False):
    """Validate point coordinates and return them as an int64 ``(N, 2)`` (x, y) array.

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` pixel coordinates (x = column, y = row). Float values must be integral.
    shape : tuple of int
        ``(H, W)`` of the image the points belong to.
    name : str
        Argument name used in error messages.
    allow_empty : bool
        Accept ``N == 0`` (an empty ``(0, 2)`` array is returned); otherwise raise.

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(N, 2)``.

    Raises
    ------
    ValueError
        On a wrong shape, non-integral or non-finite values, no points (unless
        ``allow_empty``) or a point outside ``[0, W) x [0, H)``.
    """
    h, w = check_shape(shape)
    pts = np.asarray(points)
    if pts.size == 0:
        if allow_empty:
            return np.zeros((0, 2), dtype=np.int64)
        raise ValueError(f"{name} is empty: at least one point is needed")
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) in (x, y) order, got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.number) or pts.dtype == bool:
        raise ValueError(f"{name} must be numeric, got dtype {pts.dtype}")
    if not np.issubdtype(pts.dtype, np.integer):
        if not np.all(np.isfinite(pts)):
            raise ValueError(f"{name} contains non-finite values")
        if not np.all(pts == np.round(pts)):
            raise ValueError(f"{name} must be integer pixel indices (x, y)")
    pts = pts.astype(np.int64)
    outside = (pts[:, 0] < 0) | (pts[:, 0] >= w) | (pts[:, 1] < 0) | (pts[:, 1] >= h)
    if outside.any():
        bad = pts[np.argmax(outside)].tolist()
        raise ValueError(
            f"{name}: {int(outside.sum())} point(s) outside the image of shape "
            f"{(h, w)}, e.g. (x, y) = {bad}"
        )
    return pts


def disk(radius):
    """Boolean disk footprint ``x^2 + y^2 <= radius^2`` of size ``2*radius + 1`` (skimage's)."""
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy) <= r * r


def point_mask(points, shape):
    """Boolean ``(H, W)`` map that is True at every point (points already validated)."""
    mask = np.zeros(shape, dtype=bool)
    if len(points):
        mask[points[:, 1], points[:, 0]] = True
    return mask


def nearest_point(points, shape):
    """Euclidean distance to, and index of, the nearest point for every pixel.

    Parameters
    ----------
    points : numpy.ndarray
        Validated int ``(N, 2)`` (x, y) points, ``N >= 1``.
    shape : tuple of int
        ``(H, W)``.

    Returns
    -------
    dist : numpy.ndarray
        float64 ``(H, W)`` Euclidean distance to the nearest point.
    index : numpy.ndarray
        int32 ``(H, W)`` index into ``points`` of the nearest point. When several points share
        a pixel, the last one of them in ``points`` owns it. Ties between different pixels are
        broken by :func:`scipy.ndimage.distance_transform_edt`.
    """
    owner = np.full(shape, -1, dtype=np.int32)
    owner[points[:, 1], points[:, 0]] = np.arange(len(points), dtype=np.int32)
    dist, (iy, ix) = ndi.distance_transform_edt(owner < 0, return_indices=True)
    return dist, owner[iy, ix]


def dilate_points(points, shape, radius):
    """Boolean map of the points dilated by a disk of ``radius`` (distance <= radius)."""
    if len(points) == 0:
        return np.zeros(shape, dtype=bool)
    if radius <= 0:
        return point_mask(points, shape)
    return ndi.distance_transform_edt(~point_mask(points, shape)) <= radius
