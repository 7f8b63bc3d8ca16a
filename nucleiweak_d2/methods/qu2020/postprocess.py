"""Point merging of Qu et al. (TMI 2020): annotated points plus detections beyond r1."""

import numpy as np

__all__ = ["merge_points"]


def merge_points(annotated, detected, radius):
    """Keep every annotated point; add a detection only if it lies outside ``radius`` of all
    annotated points (Qu et al.: ``disk(r1)`` around each annotated point).

    Parameters
    ----------
    annotated : array_like
        ``(N, 2)`` (x, y) annotated points.
    detected : array_like
        ``(M, 2)`` (x, y) detected points (rounded to integer pixels).
    radius : float
        A detection at distance ``<= radius`` of an annotated point is dropped (the disk of
        radius r includes its boundary, as ``skimage.morphology.disk``).

    Returns
    -------
    numpy.ndarray
        int64 ``(N + M', 2)``: the annotated points first, then the kept detections.
    """
    ann = np.asarray(annotated, dtype=np.float64).reshape(-1, 2)
    det = np.round(np.asarray(detected, dtype=np.float64).reshape(-1, 2))
    if len(ann) and len(det):
        d2 = ((det[:, None, :] - ann[None, :, :]) ** 2).sum(-1)
        det = det[(d2 > radius * radius).all(axis=1)]
    return np.concatenate([ann, det]).astype(np.int64).reshape(-1, 2)
