"""Fully annotated crops: the training data of the paper's "DH25crop" baseline (numpy only).

Feng et al. (section III): "As the baseline model is not designed to handle partial
annotation, it is not appropriate to directly train it on DH25. Instead we trained it on a
dataset that contains a random crop (25%) of each image. This dataset, named DH25crop, is
fully annotated". A baseline on partial masks (``baseline`` in ``benchmarks/feng2019_monuseg.py``)
learns every unannotated nucleus as background; this baseline sees fewer nuclei but no wrong
negative.

Rule used here (the simplest faithful one): each fully annotated training image is cropped
to one window of ``area_fraction`` of its area (the partial ratio, e.g. 0.25), with the
image's aspect ratio (sides scaled by ``sqrt(area_fraction)``, so 500x500 of a 1000x1000
MoNuSeg image), at a uniformly random position; every nucleus in the window keeps its label.
On average the window holds ``area_fraction`` of the nuclei, the amount of annotation of the
partial data, plus the nuclei cut by the window's border (kept with their visible part, as in
the paper's count: DH25crop has 676 annotations against DH25's 525). The window of an image
depends only on the seed and the image's name (:func:`crop_seed`).
"""

import math
import zlib

import numpy as np

__all__ = ["crop_seed", "crop_window", "crop_fully_annotated"]


def crop_seed(seed, name):
    """Seed of an image's crop window: ``(seed, crc32(name))`` (independent of the split)."""
    return (int(seed), zlib.crc32(str(name).encode("utf-8")))


def crop_window(height, width, area_fraction, rng):
    """A random window of about ``area_fraction`` of a ``height x width`` image.

    Parameters
    ----------
    height, width : int
        Image size.
    area_fraction : float
        In (0, 1]; the window's sides are the image's times ``sqrt(area_fraction)``, rounded
        (at least 1 pixel).
    rng : numpy.random.Generator
        Draws the top-left corner uniformly among the valid positions.

    Returns
    -------
    tuple of int
        ``(y0, x0, h, w)``.
    """
    if not 0 < area_fraction <= 1:
        raise ValueError(f"area_fraction must be in (0, 1], got {area_fraction}")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    scale = math.sqrt(area_fraction)
    h = min(height, max(1, int(round(height * scale))))
    w = min(width, max(1, int(round(width * scale))))
    y0 = int(rng.integers(0, height - h + 1))
    x0 = int(rng.integers(0, width - w + 1))
    return y0, x0, h, w


def crop_fully_annotated(image, label, area_fraction, seed):
    """Crop a fully annotated image and its instance map to one random window.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, ...)`` image.
    label : numpy.ndarray
        ``(H, W)`` integer instance map (0 = background), every nucleus labelled.
    area_fraction : float
        Window area as a fraction of the image (see :func:`crop_window`).
    seed : int or tuple
        Seed of the window (e.g. :func:`crop_seed`).

    Returns
    -------
    image_crop : numpy.ndarray
    label_crop : numpy.ndarray
        Same dtype as ``label``, ids renumbered ``1..K`` in order of the original ids.
    window : tuple of int
        ``(y0, x0, h, w)``.
    """
    image, label = np.asarray(image), np.asarray(label)
    if label.ndim != 2 or image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} must share (H, W)")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an integer instance map, got dtype {label.dtype}")
    y0, x0, h, w = crop_window(
        label.shape[0], label.shape[1], area_fraction, np.random.default_rng(seed)
    )
    label_crop = label[y0 : y0 + h, x0 : x0 + w]
    ids, inverse = np.unique(label_crop, return_inverse=True)
    renumber = np.arange(len(ids)) + (0 if ids[0] == 0 else 1)
    label_crop = renumber[inverse.reshape(label_crop.shape)].astype(label.dtype)
    return image[y0 : y0 + h, x0 : x0 + w].copy(), label_crop, (y0, x0, h, w)
