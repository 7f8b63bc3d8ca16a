"""Ground truth of one dataset record: instance label map and points (no Detectron2 needed).

A record is a Detectron2 dataset dict (``file_name``, ``height``, ``width``, optional
``label_file_name``, ``annotations`` with COCO ``segmentation``) or a folder-dataset sample
of :func:`nucleiweak_d2.data.folder.load_folder_dataset` (``name``, ``label_path``).

Records of points-only COCO files (docs/CONTRACTS.md: annotations with ``point`` and no
``segmentation``) and samples of points-only folder datasets (``points/<name>.csv``, no
``labels/``) have no instance map; :func:`is_points_only` tells them apart and
:func:`annotation_points` gives their ground-truth points, for detection-only evaluation.
"""

import os

import numpy as np

__all__ = [
    "record_name",
    "gt_label_map",
    "gt_points",
    "masks_to_label_map",
    "is_points_only",
    "annotation_points",
]


def record_name(record):
    """Short name of a record: ``name``, else the stem of ``file_name`` / ``image_path``."""
    if record.get("name"):
        return str(record["name"])
    for key in ("file_name", "image_path"):
        if record.get(key):
            return os.path.splitext(os.path.basename(str(record[key])))[0]
    if "image_id" in record:
        return str(record["image_id"])
    raise ValueError(
        f"dataset record has no name, file_name, image_path or image_id: {sorted(record)}"
    )


def _annotation_rle(segm, height, width, where):
    """COCO RLE dict of one annotation ``segmentation`` (RLE or polygons)."""
    from pycocotools import mask as mask_util

    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):  # uncompressed RLE
            return mask_util.frPyObjects(segm, height, width)
        rle = dict(segm)
        if isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode("ascii")
        if [int(v) for v in rle["size"]] != [height, width]:
            raise ValueError(f"{where}: RLE of size {rle['size']} in an image of {height}x{width}")
        return rle
    if isinstance(segm, list) and segm:
        polygons = [np.asarray(p, dtype=np.float64).ravel().tolist() for p in segm]
        if any(len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError(f"{where}: a polygon needs an even number (>= 6) of coordinates")
        return mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    raise ValueError(f"{where}: unsupported or empty segmentation {type(segm).__name__}")


def masks_to_label_map(record):
    """Paint the annotation masks of a record into a label map (ids 1..N in annotation order).

    Where masks overlap, the first annotation keeps the pixel (as the MoNuSeg rasterisation).

    Parameters
    ----------
    record : dict
        With ``height``, ``width`` and ``annotations`` holding ``segmentation``.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32.
    """
    from pycocotools import mask as mask_util

    where = record.get("file_name", record_name(record))
    if "height" not in record or "width" not in record:
        raise ValueError(f"{where}: record needs height and width to paint its masks")
    height, width = int(record["height"]), int(record["width"])
    label = np.zeros((height, width), dtype=np.int32)
    annotations = record.get("annotations", [])
    for k in range(len(annotations) - 1, -1, -1):  # reverse: the first annotation wins
        ann = annotations[k]
        if "segmentation" not in ann:
            raise ValueError(
                f"{where}: annotation {k} has no segmentation; an instance map "
                f"needs label_file_name or a mask on every annotation "
                f"(NucleiEvaluator scores records without any mask for "
                f"detection only)"
            )
        mask = mask_util.decode(_annotation_rle(ann["segmentation"], height, width, where))
        label[mask.astype(bool)] = k + 1
    return label


def gt_label_map(record):
    """Ground-truth instance label map of a record.

    Read from ``label_file_name`` (or ``label_path``) with
    :func:`nucleiweak_d2.data.io.read_label` when present, else painted from the annotation
    masks (pycocotools).

    Parameters
    ----------
    record : dict

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32; checked against the record's ``height``/``width`` when given.
    """
    path = record.get("label_file_name") or record.get("label_path")
    if path:
        from nucleiweak_d2.data.io import read_label

        label = read_label(path)
    elif "annotations" in record:
        label = masks_to_label_map(record)
    else:
        raise ValueError(
            f"{record.get('file_name', record_name(record))}: no ground truth "
            f"(neither label_file_name nor annotations)"
        )
    if "height" in record and "width" in record:
        expected = (int(record["height"]), int(record["width"]))
        if label.shape != expected:
            raise ValueError(
                f"ground truth {path or record.get('file_name')} is "
                f"{label.shape[0]}x{label.shape[1]} but the record says "
                f"{expected[0]}x{expected[1]}"
            )
    return label


def gt_points(label, mode="bbox_center"):
    """Ground-truth points (x, y) of a label map, one per nucleus (the papers' bbox centre).

    Parameters
    ----------
    label : numpy.ndarray
        ``(H, W)`` instance label map.
    mode : {"bbox_center", "centroid"}
        Passed to :func:`nucleiweak_d2.data.points.points_from_labels`.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` float64.
    """
    from nucleiweak_d2.data.points import points_from_labels

    _, points = points_from_labels(label, mode=mode)
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def is_points_only(record):
    """Whether a record's ground truth is points without masks (detection-only evaluation).

    A record is points-only when it has no ``label_file_name`` / ``label_path`` and either
    its settings say so (``record["nucleiweak"]["annotation"] == "points_only"``, as
    :func:`nucleiweak_d2.data.coco.load_nuclei_coco` sets for files without any
    ``segmentation``; this also covers an image of such a file without any point), or it has
    at least one annotation and none of its annotations has a ``segmentation``. A record
    whose annotations are only partly masked is not points-only: :func:`gt_label_map` raises
    for it, naming the annotation without mask. An empty annotation list of any other record
    is an image without nuclei (an empty instance map).

    Parameters
    ----------
    record : dict

    Returns
    -------
    bool
    """
    if record.get("label_file_name") or record.get("label_path"):
        return False
    if record.get("points_path") and "annotations" not in record:
        return True  # a folder sample with clicked points only
    settings = record.get("nucleiweak")
    if isinstance(settings, dict) and settings.get("annotation") == "points_only":
        return True
    annotations = record.get("annotations") or []
    return bool(annotations) and not any("segmentation" in a for a in annotations)


def annotation_points(record):
    """Ground-truth points (x, y) of a record: the ``point`` of every annotation.

    Every annotation counts, whether its point is labelled (``point_labeled``) or not, since
    the unlabelled points are the evaluation ground truth (docs/CONTRACTS.md). Points are
    integer pixel indices (column, row), the convention of :func:`gt_points`, taken as
    stored (after any simulated ``point_shift``).

    Parameters
    ----------
    record : dict
        With ``annotations`` holding ``point`` [x, y]; with ``height``/``width``, points
        outside the image are rejected.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` float64, in annotation order.

    Raises
    ------
    ValueError
        Naming the image, when an annotation has no valid ``point`` or a point lies outside
        the image.
    """
    where = record.get("file_name", record_name(record))
    if record.get("points_path") and "annotations" not in record:
        from nucleiweak_d2.data.coco import read_points_file

        shape = (
            (int(record["height"]), int(record["width"]))
            if "height" in record and "width" in record
            else None
        )
        return read_points_file(record["points_path"], shape, record_name(record)).astype(
            np.float64
        )
    points = []
    for k, ann in enumerate(record.get("annotations") or []):
        point = ann.get("point")
        try:
            x, y = (float(v) for v in point)
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: annotation {k} has no valid 'point' [x, y] "
                f"(got {point!r}); points-only ground truth needs one per "
                f"annotation"
            ) from None
        points.append((x, y))
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise ValueError(f"{where}: annotation points must be finite")
    if "height" in record and "width" in record and len(points):
        height, width = int(record["height"]), int(record["width"])
        outside = (
            (points[:, 0] < 0)
            | (points[:, 0] > width - 1)
            | (points[:, 1] < 0)
            | (points[:, 1] > height - 1)
        )
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"{where}: annotation {k} has point {points[k].tolist()} outside "
                f"the {height}x{width} image"
            )
    return points
