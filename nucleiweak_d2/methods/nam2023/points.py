"""Points of a PROnet run: the JSON files of each round, and their distance to the true centres.

The simulated shifted clicks of :func:`nucleiweak_d2.data.points.shift_points` keep their shift in
the annotations (``point_shift``), so the true centre of a labelled point is ``point -
point_shift``; the pipeline logs how far the current points are from it after every E-step.
"""

import json

import numpy as np

__all__ = ["read_points_json", "true_centres", "point_error"]


def read_points_json(path):
    """``{str(image_id): (N, 2) int64 array}`` from a points JSON file (rounded to pixels)."""
    with open(path) as f:
        data = json.load(f)
    return {
        str(k): np.round(np.asarray(v, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
        for k, v in data.items()
    }


def true_centres(record):
    """``(N, 2)`` float true centres ``point - point_shift`` of the labelled points of a record.

    In the order of :func:`~nucleiweak_d2.data.records.record_points`; None when an annotation
    lacks ``point_shift`` (clicked data, where the true centre is unknown).
    """
    anns = [
        a for a in record.get("annotations", []) if "point" in a and a.get("point_labeled", True)
    ]
    if any("point_shift" not in a for a in anns):
        return None
    pts = np.round(np.asarray([a["point"] for a in anns], dtype=np.float64).reshape(-1, 2))
    return pts - np.asarray([a["point_shift"] for a in anns], dtype=np.float64).reshape(-1, 2)


def point_error(points_by_image, records):
    """Mean distance (pixels) of the points to the true centres, over every labelled point.

    Parameters
    ----------
    points_by_image : dict
        ``{str(image_id): (N, 2) points}``, in record order.
    records : list of dict
        Detectron2 dataset dicts.

    Returns
    -------
    dict or None
        ``{"mean": float, "n": int}``; None when the true centres are unknown.
    """
    dists = []
    for record in records:
        centres = true_centres(record)
        if centres is None:
            return None
        pts = np.asarray(
            points_by_image.get(str(record["image_id"]), []), dtype=np.float64
        ).reshape(-1, 2)
        if len(pts) != len(centres):
            raise ValueError(
                f"image {record['image_id']}: {len(pts)} points for {len(centres)} annotations"
            )
        dists.append(np.linalg.norm(pts - centres, axis=1))
    d = np.concatenate(dists) if dists else np.zeros(0)
    return {"mean": float(d.mean()) if len(d) else float("nan"), "n": int(len(d))}
