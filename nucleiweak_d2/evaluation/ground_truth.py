"""Ground truth of one dataset record: instance label map and points (no Detectron2 needed).

A record is a Detectron2 dataset dict (``file_name``, ``height``, ``width``, optional
``label_file_name``, ``annotations`` with COCO ``segmentation``) or a folder-dataset sample
of :func:`nucleiweak_d2.data.folder.load_folder_dataset` (``name``, ``label_path``).
"""

import os

import numpy as np

__all__ = ["record_name", "gt_label_map", "gt_points", "masks_to_label_map"]


def record_name(record):
    """Short name of a record: ``name``, else the stem of ``file_name`` / ``image_path``."""
    if record.get("name"):
        return str(record["name"])
    for key in ("file_name", "image_path"):
        if record.get(key):
            return os.path.splitext(os.path.basename(str(record[key])))[0]
    if "image_id" in record:
        return str(record["image_id"])
    raise ValueError(f"dataset record has no name, file_name, image_path or image_id: "
                     f"{sorted(record)}")


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
            raise ValueError(f"{where}: RLE of size {rle['size']} in an image of "
                             f"{height}x{width}")
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
            raise ValueError(f"{where}: annotation {k} has no segmentation (points-only file?); "
                             f"the evaluator needs label_file_name or masks")
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
        raise ValueError(f"{record.get('file_name', record_name(record))}: no ground truth "
                         f"(neither label_file_name nor annotations)")
    if "height" in record and "width" in record:
        expected = (int(record["height"]), int(record["width"]))
        if label.shape != expected:
            raise ValueError(f"ground truth {path or record.get('file_name')} is "
                             f"{label.shape[0]}x{label.shape[1]} but the record says "
                             f"{expected[0]}x{expected[1]}")
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
