"""The classical, no-learning nuclei segmentation (numpy / scipy / scikit-image).

Hematoxylin channel by colour deconvolution (``skimage.color.rgb2hed``, Ruifrok and Johnston's
H&E-DAB stain matrix) -> Gaussian smoothing -> global threshold (Otsu) -> holes filled ->
watershed on the negated distance transform, seeded at its local maxima at least
``min_distance`` apart -> instance label map. The foreground-to-instances part is the shared
post-processing of the UNet methods
(:func:`~nucleiweak_d2.modeling.meta_arch.postprocess.instances_from_foreground`), so the
baseline and the learned methods split touching nuclei by one rule.
"""

import numpy as np
from scipy import ndimage as ndi
from skimage import filters
from skimage.color import rgb2hed

from ...modeling.meta_arch.postprocess import instances_from_foreground

__all__ = ["CHANNELS", "THRESHOLDS", "stain_channel", "nuclei_foreground", "classical_instances"]

#: Channels the pipeline can threshold: higher value = more nucleus-like.
CHANNELS = ("hematoxylin", "grey")
#: Global thresholds, by name of ``skimage.filters.threshold_<name>``.
THRESHOLDS = ("otsu", "li", "yen", "triangle", "mean")


def _check_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    return image


def stain_channel(image, channel="hematoxylin"):
    """One channel of an RGB image in which nuclei are bright.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` RGB, uint8 (0..255) or float (0..1).
    channel : {"hematoxylin", "grey"}
        ``"hematoxylin"``: the H channel of ``rgb2hed`` (optical density of hematoxylin);
        ``"grey"``: ``1 - luminance`` (for images that are not H&E).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float64.

    Raises
    ------
    ValueError
        A shape other than ``(H, W, 3)`` or an unknown channel.
    """
    image = _check_image(image)
    if channel == "hematoxylin":
        return rgb2hed(image)[..., 0].astype(np.float64)
    if channel == "grey":
        rgb = image.astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
        return 1.0 - rgb @ np.array([0.2125, 0.7154, 0.0721])
    raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")


def nuclei_foreground(channel_map, sigma=1.0, threshold="otsu"):
    """Foreground of a channel map: Gaussian smoothing, then pixels above a global threshold.

    Parameters
    ----------
    channel_map : numpy.ndarray
        ``(H, W)`` float, nuclei bright (:func:`stain_channel`).
    sigma : float
        Gaussian standard deviation in pixels (``<= 0``: no smoothing).
    threshold : str
        One of :data:`THRESHOLDS`.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool; all False on a constant map (no threshold separates anything).
    """
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
    smooth = np.asarray(channel_map, dtype=np.float64)
    if smooth.ndim != 2:
        raise ValueError(f"channel map must be (H, W), got shape {smooth.shape}")
    if sigma > 0:
        smooth = ndi.gaussian_filter(smooth, float(sigma), mode="nearest")
    if smooth.size == 0 or np.ptp(smooth) <= 1e-12 * max(1.0, float(np.abs(smooth).max())):
        return np.zeros(smooth.shape, dtype=bool)
    return smooth > getattr(filters, f"threshold_{threshold}")(smooth)


def classical_instances(
    image,
    *,
    channel="hematoxylin",
    sigma=1.0,
    threshold="otsu",
    fill_holes=True,
    min_area=0,
    split=True,
    min_distance=5,
):
    """Instance label map of an H&E image without learning (see the module docstring).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W, 3)`` RGB, uint8 or float in [0, 1].
    channel : {"hematoxylin", "grey"}
        See :func:`stain_channel`.
    sigma : float
        Gaussian smoothing of the channel (pixels; ``<= 0``: none).
    threshold : str
        Global threshold, one of :data:`THRESHOLDS`.
    fill_holes : bool
        Fill the holes of each object.
    min_area : int
        Objects of fewer pixels are removed before the split (0 keeps all).
    split : bool
        Split touching nuclei by the distance-transform watershed.
    min_distance : int
        Minimum distance in pixels between two watershed seeds.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, 0 = background, nuclei 1..N.
    """
    fg = nuclei_foreground(stain_channel(image, channel), sigma, threshold)
    return instances_from_foreground(
        fg,
        min_area=int(min_area),
        fill_holes=bool(fill_holes),
        split_touching=bool(split),
        split_min_distance=int(min_distance),
    )
