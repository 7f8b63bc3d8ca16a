"""Summaries, tables and files of nuclei evaluation results (no Detectron2 needed).

Shared by :class:`~nucleiweak_d2.evaluation.evaluator.NucleiEvaluator` and
``tools/evaluate.py`` so that both report the same names.
"""

import csv
import json
import math
import os

__all__ = [
    "PER_IMAGE_COLUMNS",
    "summary_from_aggregate",
    "write_per_image_csv",
    "write_summary_json",
    "format_table",
]

# Columns of the per-image CSV, in order (those absent from every record are left out).
PER_IMAGE_COLUMNS = (
    "name",
    "n_gt",
    "n_pred",
    "aji",
    "aji_plus",
    "dice_obj",
    "hausdorff_obj",
    "pixel_acc",
    "pixel_f1",
    "pixel_iou",
    "pq",
    "dq",
    "sq",
    "map_kaggle",
    "ncs",
    "obj_tp",
    "obj_fp",
    "obj_fn",
    "det_tp",
    "det_fp",
    "det_fn",
    "det_precision",
    "det_recall",
    "det_f1",
    "det_dist_mean",
    "det_dist_std",
)

# Reported name -> per-image key; the summary holds the mean over images and "<name>_std".
_SEGMENTATION_NAMES = (
    ("AJI", "aji"),
    ("AJI_plus", "aji_plus"),
    ("Dice_obj", "dice_obj"),
    ("Hausdorff_obj", "hausdorff_obj"),
    ("PQ", "pq"),
    ("DQ", "dq"),
    ("SQ", "sq"),
    ("pixel_F1", "pixel_f1"),
    ("pixel_acc", "pixel_acc"),
    ("pixel_IoU", "pixel_iou"),
    ("mAP_kaggle", "map_kaggle"),
    ("NCS", "ncs"),
)

# Reported name -> key of aggregate(): micro detection scores, per-image means, pooled stats.
_DETECTION_NAMES = (
    ("det_P", "det_precision"),
    ("det_R", "det_recall"),
    ("det_F1", "det_f1"),
    ("det_P_img", "det_precision_mean"),
    ("det_R_img", "det_recall_mean"),
    ("det_F1_img", "det_f1_mean"),
    ("det_dist_mean", "det_dist_mean"),
    ("det_dist_std", "det_dist_std"),
    ("det_TP", "det_tp"),
    ("det_FP", "det_fp"),
    ("det_FN", "det_fn"),
    # object precision / recall / F1 at IoU > 0.5 (unique matches, counts summed over images)
    ("obj_P", "obj_precision"),
    ("obj_R", "obj_recall"),
    ("obj_F1", "obj_f1"),
)


def summary_from_aggregate(agg):
    """Reported metrics from the output of :func:`~nucleiweak_d2.evaluation.aggregate`.

    Parameters
    ----------
    agg : dict

    Returns
    -------
    dict
        ``AJI``, ``AJI_plus``, ``Dice_obj``, (``Hausdorff_obj``), ``PQ``, ``DQ``, ``SQ``,
        ``pixel_F1``, ``pixel_acc``, ``pixel_IoU``, ``mAP_kaggle``, ``NCS`` (means over
        images), the detection scores ``det_P``, ``det_R``, ``det_F1`` (counts summed over
        images), ``det_*_img`` (per-image means), ``det_dist_mean``/``std``, the counts, ``obj_P``,
        ``obj_R``, ``obj_F1`` (IoU > 0.5 object matches, counts summed over images), the
        ``<name>_std`` over images of each segmentation metric and ``num_images``; all float.
    """
    out = {}
    for name, key in _SEGMENTATION_NAMES:
        if f"{key}_mean" in agg:
            out[name] = float(agg[f"{key}_mean"])
    for name, key in _DETECTION_NAMES:
        if key in agg:
            out[name] = float(agg[key])
    for name, key in _SEGMENTATION_NAMES:
        if f"{key}_std" in agg:
            out[f"{name}_std"] = float(agg[f"{key}_std"])
    out["num_images"] = float(agg["num_images"])
    return out


def _cell(value):
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return value


def write_per_image_csv(path, records):
    """Write one row per image (columns of :data:`PER_IMAGE_COLUMNS` found in the records).

    Parameters
    ----------
    path : str
        Destination CSV; its folder is created.
    records : sequence of dict
        Per-image records with a ``name``.
    """
    columns = [c for c in PER_IMAGE_COLUMNS if any(c in rec for rec in records)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for rec in records:
            writer.writerow([_cell(rec.get(c, "")) for c in columns])


def write_summary_json(path, summary, extra=None):
    """Write the summary (plus ``extra`` settings) as JSON; non-finite values become strings."""
    content = {k: (v if math.isfinite(v) else str(v)) for k, v in summary.items()}
    if extra:
        content = {"settings": extra, "metrics": content}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(content, f, indent=2)


def format_table(summary):
    """Two-column text table ``metric | mean | std`` of a summary."""
    lines = [f"{'metric':<16}{'value':>10}{'std':>10}", "-" * 36]
    for name, value in summary.items():
        if name.endswith("_std") and name[:-4] in summary:
            continue
        std = summary.get(f"{name}_std")
        std_text = f"{std:>10.4f}" if std is not None else ""
        lines.append(f"{name:<16}{value:>10.4f}{std_text}")
    return "\n".join(lines)
