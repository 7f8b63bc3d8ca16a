"""The cluster label of ``NUCLEIWEAK.QU2020.LABEL``: Qu et al.'s k-means label or Liu et al.'s
adaptive variant, with the per-cell refinement radii as settings (pure numpy, no Detectron2)."""

import numpy as np

__all__ = ["LABEL_KINDS", "check_label_settings", "cluster_label_of"]

LABEL_KINDS = ("kmeans", "adaptive")


def cluster_label_of(kind, image, points, d_max=20.0, dilate_radius=5, erode_radius=7):
    """Cluster label (uint8: 0 background, 1 nucleus, 2 ignore) of ``NUCLEIWEAK.QU2020.LABEL``.

    Parameters
    ----------
    kind : {"kmeans", "adaptive"}
        ``"kmeans"``: Qu et al.'s feature ``(min(d, d_max), RGB / 10)``
        (:func:`~nucleiweak_d2.pseudo_labels.cluster_label`). ``"adaptive"``: Liu et al.'s
        per-image colour scale (:func:`~nucleiweak_d2.pseudo_labels.adaptive_cluster_label`,
        MoNuSeg's lambda 0.2 and L 60), a deviation from Qu et al.
    image : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB (the stain-normalised image when normalisation is on).
    points : numpy.ndarray
        ``(N, 2)`` int (x, y) points, ``N >= 1``.
    d_max : float
        Clip of the distance feature (both: 20).
    dilate_radius, erode_radius : int
        Per-cell refinement (Qu's code: 5, 7). Measured on MO val with every point and
        Reinhard-normalised images, the label used as the prediction scores AJI 0.557 with
        erosion 7 and 0.632 with 5 (``benchmarks/label_as_prediction.py``; docs/RECIPE.md).

    Raises
    ------
    ValueError
        On an unknown kind or negative radii / distance clip.
    """
    from ...pseudo_labels import adaptive_cluster_label, cluster_label

    check_label_settings(kind, d_max, dilate_radius, erode_radius)
    fn = cluster_label if kind == "kmeans" else adaptive_cluster_label
    lab = fn(image, points, d_max=d_max, dilate_radius=dilate_radius, erode_radius=erode_radius)
    return lab.astype(np.uint8)


def check_label_settings(kind, d_max, dilate_radius, erode_radius):
    """Raise a one-line ``ValueError`` on settings :func:`cluster_label_of` cannot use."""
    if kind not in LABEL_KINDS:
        raise ValueError(
            f"NUCLEIWEAK.QU2020.LABEL.KIND must be one of {', '.join(LABEL_KINDS)}, got {kind!r}"
        )
    if not (d_max > 0 and dilate_radius >= 0 and erode_radius >= 0):
        raise ValueError(
            "NUCLEIWEAK.QU2020.LABEL needs D_MAX > 0 and DILATE_RADIUS, ERODE_RADIUS >= 0, got "
            f"{d_max}, {dilate_radius}, {erode_radius}"
        )
