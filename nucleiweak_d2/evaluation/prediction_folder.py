"""Score a folder of predicted label maps against a dataset (no Detectron2 needed).

Used by ``tools/evaluate.py`` so that the output of other tools (StarDist, Cellpose, QuPath
label exports, ...) is scored on the same footing as our models: same metrics, same ground
truth, same points.

Points-only ground truth (clicked points, no masks: see
:func:`~nucleiweak_d2.evaluation.ground_truth.is_points_only`) is scored for detection only,
as :class:`~nucleiweak_d2.evaluation.evaluator.NucleiEvaluator` does: the predicted points
(``points_dir``, else the centres of the predicted nuclei) against every clicked point.
"""

import glob
import os

from ..data.io import read_xy_csv
from .aggregate import aggregate
from .detection import detection_metrics, prefixed_detection
from .ground_truth import annotation_points, gt_label_map, gt_points, is_points_only, record_name
from .metrics import image_metrics
from .report import summary_from_aggregate

__all__ = [
    "DEFAULT_PATTERNS",
    "find_prediction",
    "read_prediction_points",
    "evaluate_prediction_folder",
]

# File names tried for the prediction of image ``name`` (first pattern with a match wins;
# two matches of the same pattern are an error). Covers plain names, ``_instances`` (written
# by tools/predict.py) and the suffixes of common tools (Cellpose ``_cp_masks``, ``_masks``,
# ``_label(s)``).
DEFAULT_PATTERNS = tuple(
    f"{{name}}{suffix}.{ext}"
    for suffix in ("", "_instances", "_label", "_labels", "_masks", "_cp_masks")
    for ext in ("png", "tif", "tiff", "npy")
)


def find_prediction(pred_dir, name, patterns=DEFAULT_PATTERNS):
    """Path of the prediction of image ``name`` in ``pred_dir``.

    Parameters
    ----------
    pred_dir : str
        Folder of predicted label maps.
    name : str
        Image name (file stem).
    patterns : sequence of str
        File name patterns with a ``{name}`` placeholder (glob wildcards allowed), tried in
        order.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        No file for the image, or several files for one pattern.
    """
    for pattern in patterns:
        found = sorted(
            glob.glob(
                os.path.join(glob.escape(str(pred_dir)), pattern.format(name=glob.escape(name)))
            )
        )
        if len(found) > 1:
            raise ValueError(f"several predictions for image {name!r} in {pred_dir}: {found}")
        if found:
            return found[0]
    raise ValueError(
        f"missing prediction for image {name!r}: no file in {pred_dir} matches "
        f"{', '.join(p.format(name=name) for p in patterns[:4])}"
        f"{', ...' if len(patterns) > 4 else ''}"
    )


def read_prediction_points(path):
    """Read detected points (float ``x, y`` in pixels; may be empty).

    Columns are found by header name as for clicked points
    (:func:`nucleiweak_d2.data.io.read_xy_csv`: ``x``/``y``, ``X``/``Y``, ``Centroid X px``/
    ``Centroid Y px``, tab or comma separated; a header-less file must have 2 columns x,y).
    """
    return read_xy_csv(path)[0]


def evaluate_prediction_folder(
    records,
    pred_dir,
    patterns=DEFAULT_PATTERNS,
    radius=11.0,
    method="greedy",
    hausdorff=False,
    point_mode="bbox_center",
    points_dir=None,
):
    """Score the predicted label map of every record of a dataset.

    Parameters
    ----------
    records : sequence of dict
        Dataset records (folder samples or COCO / Detectron2 dicts, see
        :mod:`.ground_truth`).
    pred_dir : str
        Folder of predicted instance label maps (PNG, TIF or NPY; integer, 0 = background).
    patterns : sequence of str
        See :func:`find_prediction`.
    radius, method, hausdorff
        See :func:`~nucleiweak_d2.evaluation.metrics.image_metrics`.
    point_mode : {"bbox_center", "centroid"}
        Point of each nucleus (ground truth, and predictions without a points file).
    points_dir : str, optional
        Folder of ``<name>.csv`` detected points (x, y) used instead of the centres of the
        predicted nuclei.

    Returns
    -------
    rows : list of dict
        Per-image records (``name``, ``prediction`` path and the metrics).
    summary : dict
        :func:`~nucleiweak_d2.evaluation.report.summary_from_aggregate` of the rows.
    """
    from nucleiweak_d2.data.io import read_label

    records = list(records)
    if not records:
        raise ValueError("the dataset has no image to evaluate")
    if not os.path.isdir(pred_dir):
        raise ValueError(f"prediction folder {pred_dir} does not exist")
    rows = []
    for record in records:
        name = record_name(record)
        if is_points_only(record):
            rows.append(
                _detection_row(
                    record, name, pred_dir, patterns, radius, method, point_mode, points_dir
                )
            )
            continue
        gt = gt_label_map(record)
        path = find_prediction(pred_dir, name, patterns)
        pred = read_label(path)
        if pred.shape != gt.shape:
            raise ValueError(
                f"size mismatch: prediction {path} is {pred.shape[0]}x"
                f"{pred.shape[1]} but the ground truth of {name!r} is "
                f"{gt.shape[0]}x{gt.shape[1]}"
            )
        if points_dir is not None:
            pred_pts = read_prediction_points(os.path.join(points_dir, f"{name}.csv"))
        else:
            pred_pts = gt_points(pred, point_mode)
        row = {"name": name, "prediction": path}
        row.update(
            image_metrics(
                gt,
                pred,
                gt_points(gt, point_mode),
                pred_pts,
                radius=radius,
                method=method,
                hausdorff=hausdorff,
            )
        )
        rows.append(row)
    return rows, summary_from_aggregate(aggregate(rows))


def _detection_row(record, name, pred_dir, patterns, radius, method, point_mode, points_dir):
    """Detection-only row of a points-only record (the keys of NucleiEvaluator's)."""
    from nucleiweak_d2.data.io import read_label

    gt = annotation_points(record)
    if points_dir is not None:
        path = os.path.join(points_dir, f"{name}.csv")
        pred_pts = read_prediction_points(path)
    else:
        path = find_prediction(pred_dir, name, patterns)
        pred = read_label(path)
        if "height" in record and "width" in record:
            expected = (int(record["height"]), int(record["width"]))
            if pred.shape != expected:
                raise ValueError(
                    f"size mismatch: prediction {path} is {pred.shape[0]}x"
                    f"{pred.shape[1]} but image {name!r} is {expected[0]}x"
                    f"{expected[1]}"
                )
        pred_pts = gt_points(pred, point_mode)
    det = detection_metrics(gt, pred_pts, radius, method)
    row = {"name": name, "prediction": path}
    row.update(prefixed_detection(det))
    return row
