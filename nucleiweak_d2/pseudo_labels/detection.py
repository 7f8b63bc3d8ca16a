"""Detection targets of Qu et al. (TMI 2020): extended Gaussian mask and background propagation.

Eq. (1): with ``D`` the distance of a pixel to the closest labelled point,
``M = exp(-D^2 / (2 sigma^2))`` if ``D < r1``, ``0`` (background) if ``r1 < D < r2``, ``-1``
(ignored) otherwise; MoNuSeg ``r1 = 11``, ``r2 = 2 r1 = 22``, ``sigma = 2.75`` (LC: 8, 16, 2).
Eq. (2) weights the squared error by ``w = 10`` where ``M > 0`` and ``w = 1`` on background.
Eq. (3), self-training: pixels beyond ``r2`` become background when the previous round's
probability ``p < 0.1``, or when they lie in a connected component of ``p > 0.7`` whose area
exceeds the average nucleus area ``pi r1^2``.

Deviations (both from the authors' ``code_detection``, documented in ``docs/REFERENCE_CODE.md``):
Gaussian values below ``min_value = 0.05`` are set to 0 (background, weight 1), as the code
does with its blurred point map (``min_value=0`` gives the paper's Eq. (1)); and the
background ring is the closed disk ``D <= r2`` (the code's ``dilation(.., disk(r2))``). Pixels
with ``D == r1`` count as Gaussian. Components of ``p > 0.7`` are 8-connected.
"""

import numpy as np
from scipy import ndimage as ndi

from ._common import check_points, check_shape, nearest_point

__all__ = ["extended_gaussian_target", "propagated_background", "background_propagation"]

#: Loss weight of Gaussian (nucleus) pixels in Eq. (2).
POSITIVE_WEIGHT = 10.0


def _check_radii(r1, r2, sigma):
    if not (r1 > 0 and r2 >= r1 and sigma > 0):
        raise ValueError(
            f"need r1 > 0, r2 >= r1 and sigma > 0, got r1={r1}, r2={r2}, sigma={sigma}"
        )


def _distance(points, shape):
    if len(points) == 0:
        return np.full(shape, np.inf)
    return nearest_point(points, shape)[0]


def extended_gaussian_target(
    points, shape, r1=11, r2=22, sigma=2.75, min_value=0.05, positive_weight=POSITIVE_WEIGHT
):
    """Extended Gaussian mask (Eq. 1) and loss weights (Eq. 2) of Qu et al.

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` integer (x, y) labelled points inside the image. May be empty (e.g. an
        augmented crop without points): everything is then ignored.
    shape : tuple of int
        ``(H, W)`` of the target (an image shape ``(H, W, 3)`` is accepted too).
    r1, r2 : float
        Gaussian radius (average nucleus radius) and background radius (MoNuSeg 11, 22).
    sigma : float
        Gaussian bandwidth (MoNuSeg 2.75).
    min_value : float
        Gaussian values below this become background (authors' code: 0.05; paper: 0).
    positive_weight : float
        Weight of pixels with target > 0 (paper: 10).

    Returns
    -------
    target : numpy.ndarray
        float32 ``(H, W)``: ``exp(-D^2 / 2 sigma^2)`` (>= ``min_value``) near points, 0
        elsewhere (both on background and on ignored pixels).
    weight : numpy.ndarray
        float32 ``(H, W)``: ``positive_weight`` where target > 0, 1 on background
        (``D <= r2`` and target == 0), 0 where ignored (``D > r2``).
    """
    shape = check_shape(shape)
    pts = check_points(points, shape, allow_empty=True)
    _check_radii(r1, r2, sigma)
    dist = _distance(pts, shape)
    gauss = np.exp(-(dist * dist) / (2.0 * sigma * sigma))
    positive = (dist <= r1) & (gauss >= min_value) & (gauss > 0)
    target = np.where(positive, gauss, 0.0).astype(np.float32)
    weight = np.where(dist <= r2, 1.0, 0.0).astype(np.float32)
    weight[positive] = positive_weight
    return target, weight


def propagated_background(prob, r1=11, low=0.1, high=0.7, min_area=None):
    """Background map of one self-training round (Eq. 3 without the point constraint).

    Parameters
    ----------
    prob : array_like
        ``(H, W)`` nucleus probability of the previous round, values in [0, 1].
    r1 : float
        Average nucleus radius; the default ``min_area`` is ``pi r1^2``.
    low, high : float
        ``p < low`` is background; components of ``p > high`` larger than ``min_area`` too.
    min_area : float, optional
        Area threshold (pixels) of the large components; ``pi r1^2`` when ``None``.

    Returns
    -------
    numpy.ndarray
        bool ``(H, W)`` background map.
    """
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or prob.size == 0:
        raise ValueError(f"prob must be a non-empty (H, W) array, got shape {prob.shape}")
    if not np.all(np.isfinite(prob)) or prob.min() < 0 or prob.max() > 1:
        raise ValueError("prob values must lie in [0, 1]")
    if min_area is None:
        min_area = np.pi * r1 * r1
    background = prob < low
    high_lab, n = ndi.label(prob > high, structure=np.ones((3, 3), dtype=bool))
    if n:
        area = np.bincount(high_lab.ravel(), minlength=n + 1)
        large = area > min_area
        large[0] = False
        background |= large[high_lab]
    return background


def background_propagation(
    prob,
    points,
    r1=11,
    r2=22,
    sigma=2.75,
    low=0.1,
    high=0.7,
    min_area=None,
    min_value=0.05,
    positive_weight=POSITIVE_WEIGHT,
):
    """Updated mask ``M~`` of Eq. (3): extended Gaussian mask plus propagated background.

    Parameters
    ----------
    prob : array_like
        ``(H, W)`` nucleus probability from the previous round, in [0, 1].
    points : array_like
        ``(N, 2)`` integer (x, y) labelled points (may be empty).
    r1, r2, sigma, min_value, positive_weight
        See :func:`extended_gaussian_target`.
    low, high, min_area
        See :func:`propagated_background`.

    Returns
    -------
    target : numpy.ndarray
        float32 ``(H, W)``, as :func:`extended_gaussian_target` (new background is 0).
    weight : numpy.ndarray
        float32 ``(H, W)``: the extended-mask weights for ``D <= r2``; beyond ``r2`` 1 on
        propagated background and 0 (ignored) elsewhere.
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"prob must be (H, W), got shape {prob.shape}")
    target, weight = extended_gaussian_target(
        points,
        prob.shape,
        r1=r1,
        r2=r2,
        sigma=sigma,
        min_value=min_value,
        positive_weight=positive_weight,
    )
    background = propagated_background(prob, r1=r1, low=low, high=high, min_area=min_area)
    weight[(weight == 0) & background] = 1.0
    return target, weight
