"""Adaptive k-means cluster labels of Liu, He and He (ISBI 2022, SPN pseudo-labels).

Liu et al. keep Qu's cluster label but scale colour per image: the feature of pixel ``i`` is
``(d_i, lambda * (r_i, g_i, b_i) / sigma_k)``, where ``d_i`` is the distance to the nearest point
clipped at ``d*`` and ``sigma_k`` is the standard deviation, within image ``k``, of the colour
distances between every pixel of the ``L x L`` patches centred on the points and its ``9 x 9``
neighbours. MoNuSeg: ``lambda = 0.2``, ``L = 60``, ``d* = 20``; TNBC: 0.12, 80, 18.

Facts from the authors' code (``docs/REFERENCE_CODE.md`` section 3) that fix what the paper leaves
open: colours are ``RGB / 255``; the distance feature is divided by its maximum (so it lies in
[0, 1]); cluster choice and per-cell morphology are Qu's.

Deviations: ``sigma_k`` is estimated on a seeded random sample of ``sample_size`` patch pixels
(default 20 000, each with all its in-image neighbours) instead of every patch pixel, which
changes it by well under 1 % on MoNuSeg and keeps it cheap; ``sample_size=None`` uses every
pixel. The pixel itself (distance 0) is not counted among its neighbours. k-means is fitted on a
pixel subsample as in :mod:`~nucleiweak_d2.pseudo_labels.cluster`.
"""

import numpy as np
from scipy import ndimage as ndi

from ._common import check_image, check_points, nearest_point, point_mask
from .cluster import cluster_label_from_features

__all__ = ["adaptive_color_scale", "adaptive_cluster_label"]


def adaptive_color_scale(
    image, points, patch_size=60, neighborhood=9, sample_size=20000, random_state=0
):
    """Per-image colour scale ``sigma_k`` of Liu et al.

    Parameters
    ----------
    image : array_like
        ``(H, W, 3)`` uint8 RGB image.
    points : array_like
        ``(N, 2)`` integer (x, y) points, ``N >= 1``, inside the image.
    patch_size : int
        Side ``L`` of the square patch around each point (MoNuSeg 60).
    neighborhood : int
        Odd side of the neighbour window (9 -> 80 neighbours).
    sample_size : int or None
        Patch pixels sampled (seeded) for the estimate; ``None`` uses all of them.
    random_state : int
        Seed of the sample.

    Returns
    -------
    float
        Standard deviation of the Euclidean distances between ``RGB / 255`` colours of the
        (sampled) patch pixels and their in-image neighbours. 0 on a constant image.

    Raises
    ------
    ValueError
        On an empty image, no points, points outside the image, or bad sizes.
    """
    image = check_image(image)
    h, w = image.shape[:2]
    pts = check_points(points, (h, w))
    if int(patch_size) < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if int(neighborhood) < 3 or int(neighborhood) % 2 == 0:
        raise ValueError(f"neighborhood must be odd and >= 3, got {neighborhood}")
    # Square L x L window around each point (offsets -L//2 .. (L-1)//2).
    in_patch = (
        ndi.maximum_filter(
            point_mask(pts, (h, w)).view(np.uint8), size=int(patch_size), mode="constant"
        )
        > 0
    )
    ys, xs = np.nonzero(in_patch)
    if sample_size is not None and len(ys) > sample_size:
        pick = np.random.default_rng(random_state).choice(len(ys), int(sample_size), replace=False)
        ys, xs = ys[pick], xs[pick]
    img = image.astype(np.float64) / 255.0
    centre = img[ys, xs]
    r = int(neighborhood) // 2
    total = total_sq = 0.0
    count = 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            ny, nx = ys + dy, xs + dx
            ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            d = np.linalg.norm(img[ny[ok], nx[ok]] - centre[ok], axis=1)
            total += d.sum()
            total_sq += (d * d).sum()
            count += d.size
    if count == 0:
        return 0.0
    mean = total / count
    return float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))


def adaptive_cluster_label(
    image,
    points,
    alpha=0.2,
    patch_size=60,
    d_max=20.0,
    scale=None,
    neighborhood=9,
    scale_sample_size=20000,
    random_state=0,
    **kwargs,
):
    """Adaptive k-means cluster label of Liu et al. (MoNuSeg defaults).

    Parameters
    ----------
    image : array_like
        ``(H, W, 3)`` uint8 RGB image.
    points : array_like
        ``(N, 2)`` integer (x, y) points, ``N >= 1``, inside the image.
    alpha : float
        Global colour weight ``lambda`` (MoNuSeg 0.2, TNBC 0.12).
    patch_size : int
        Patch side ``L`` for ``sigma_k`` (MoNuSeg 60, TNBC 80).
    d_max : float
        Distance clip ``d*`` (MoNuSeg 20, TNBC 18).
    scale : float, optional
        Precomputed ``sigma_k``; computed with :func:`adaptive_color_scale` when ``None``.
        A scale of 0 (constant image) drops the colour features.
    neighborhood, scale_sample_size
        See :func:`adaptive_color_scale`.
    random_state : int
        Seed of the ``sigma_k`` sample and of k-means.
    **kwargs
        Passed to :func:`~nucleiweak_d2.pseudo_labels.cluster.cluster_label_from_features`.

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W)``: 0 background, 1 nucleus, 2 ignore.
    """
    image = check_image(image)
    pts = check_points(points, image.shape[:2])
    if scale is None:
        scale = adaptive_color_scale(
            image,
            pts,
            patch_size=patch_size,
            neighborhood=neighborhood,
            sample_size=scale_sample_size,
            random_state=random_state,
        )
    if not scale >= 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    dist, cells = nearest_point(pts, image.shape[:2])
    d = np.minimum(dist, d_max)
    d = d / d.max() if d.max() > 0 else d
    factor = alpha / 255.0 / scale if scale > 0 else 0.0
    features = np.concatenate(
        [d[..., None].astype(np.float32), image.astype(np.float32) * np.float32(factor)], axis=-1
    )
    return cluster_label_from_features(
        features, pts, cells, dist, random_state=random_state, **kwargs
    )
