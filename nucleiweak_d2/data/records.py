"""Small accessors of Detectron2 dataset dicts shared by mappers, pipelines and tools."""

import re

import numpy as np

__all__ = ["cache_key", "record_points"]


def cache_key(record):
    """File-system-safe key of a dataset record (its ``image_id``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(record["image_id"]))


def record_points(record, points_by_image=None, all_points=False):
    """Integer ``(N, 2)`` (x, y) points of one record, rounded to the nearest pixel.

    Parameters
    ----------
    record : dict
        Detectron2 dataset dict (docs/CONTRACTS.md).
    points_by_image : dict or None
        ``{str(image_id): [[x, y], ...]}``; when given it replaces the annotations (an image
        absent from it has no points).
    all_points : bool
        Use every annotation's point, not only those with ``point_labeled`` (a missing
        ``point_labeled`` counts as 1, the COCO contract's default).

    Returns
    -------
    numpy.ndarray
        int64 ``(N, 2)``.
    """
    if points_by_image is not None:
        pts = points_by_image.get(str(record["image_id"]), [])
    else:
        pts = [
            a["point"]
            for a in record.get("annotations", [])
            if "point" in a and (all_points or a.get("point_labeled", True))
        ]
    return np.round(np.asarray(pts, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
