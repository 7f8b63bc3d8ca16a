"""``NucleiEvaluator``: nuclei segmentation and detection metrics inside Detectron2.

It reads the model outputs described in docs/CONTRACTS.md, compares each image with the
ground-truth instance map of the registered dataset, gathers the per-image results across
processes and reports the means over images (detection counts summed over images). It
combines with Detectron2's ``COCOEvaluator`` through ``DatasetEvaluators``::

    DatasetEvaluators([COCOEvaluator(name, output_dir=out), NucleiEvaluator(name, out)])

Points-only ground truth (records without ``label_file_name`` whose annotations carry a
``point`` but no mask, see :func:`~nucleiweak_d2.evaluation.ground_truth.is_points_only`)
is scored for detection only: the ground-truth points are the ``point`` of every annotation,
labelled or not (integer pixel indices, like the nuclei centres of masked ground truth).
The segmentation metrics (AJI, Dice, PQ, pixel scores, ...) need masks: they are averaged
over the images that have masks, and left out of the result when no image has any, with a
warning logged once per evaluator. Detection metrics always cover every image. In a mixed
dataset the summary also holds ``num_images_seg``, the number of images with masks.
"""

import itertools
import logging
import os
import re
from collections import OrderedDict

from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from .aggregate import aggregate
from .detection import detection_metrics, prefixed_detection
from .ground_truth import annotation_points, gt_label_map, gt_points, is_points_only, record_name
from .metrics import image_metrics
from .outputs import output_instance_map, output_points
from .report import format_table, summary_from_aggregate, write_per_image_csv, write_summary_json

__all__ = ["NucleiEvaluator", "build_nuclei_evaluator", "per_image_csv_path"]


def per_image_csv_path(output_dir, dataset_name):
    """Path of the per-image CSV of ``dataset_name`` in ``output_dir`` (name made file-safe)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_name)
    return os.path.join(output_dir, f"nuclei_per_image_{safe}.csv")


class NucleiEvaluator(DatasetEvaluator):
    """Nuclei metrics (AJI, AJI+, object Dice, PQ, pixel F1, Kaggle mAP, NCS, detection P/R/F1).

    ``evaluate()`` returns ``OrderedDict({"nuclei": {"AJI": ..., "AJI_plus": ..., ...}})``
    (see :func:`~nucleiweak_d2.evaluation.report.summary_from_aggregate` for every key;
    values are fractions in [0, 1], not percentages) and, with an ``output_dir``, writes
    ``nuclei_per_image_<dataset>.csv`` and ``nuclei_results_<dataset>.json`` there.
    """

    def __init__(
        self,
        dataset_name,
        output_dir=None,
        *,
        distributed=True,
        radius=11.0,
        det_method="greedy",
        hausdorff=False,
        gt_point_mode="bbox_center",
        foreground_classes=(1,),
        connectivity=2,
        mask_threshold=0.5,
        pred_points_offset=0.0,
        dataset_dicts=None,
        instance_score_thresh=0.0,
        instance_overlap="score",
        instance_overlap_thresh=0.5,
    ):
        """
        Parameters
        ----------
        dataset_name : str
            Registered dataset (its dicts give the ground truth), also used in file names.
        output_dir : str, optional
            Folder of the per-image CSV and the JSON summary; nothing is written when None.
        distributed : bool
            Gather the per-image results of all processes before aggregating.
        radius : float
            Detection radius in pixels (11 on MoNuSeg at 40x, 8 at 20x; Qu et al.).
        det_method : {"greedy", "hungarian"}
            Point matching of the detection metrics.
        hausdorff : bool
            Also compute the object Hausdorff distance (slower).
        gt_point_mode : {"bbox_center", "centroid"}
            Point of each ground-truth nucleus, and of each predicted nucleus when the output
            has no ``pred_points``.
        foreground_classes, connectivity, mask_threshold
            See :func:`~nucleiweak_d2.evaluation.outputs.output_instance_map`.
        pred_points_offset : float
            Subtracted from output ``pred_points`` before matching. Ground-truth points are
            integer pixel indices (column, row), as docs/CONTRACTS.md and the qu2020 detector
            use (default 0); outputs in Detectron2's continuous coordinates (pixel centre at
            +0.5, like the mapper's ``gt_points``) need 0.5.
        dataset_dicts : list of dict, optional
            Records to use instead of ``DatasetCatalog.get(dataset_name)``.
        instance_score_thresh, instance_overlap, instance_overlap_thresh
            ``score_thresh``, ``overlap`` and ``overlap_thresh`` of
            :func:`~nucleiweak_d2.evaluation.outputs.output_instance_map` (``instances``
            outputs; the defaults paint every instance, the higher score winning overlaps).
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._metric_args = {
            "radius": float(radius),
            "method": det_method,
            "hausdorff": bool(hausdorff),
        }
        if det_method not in ("greedy", "hungarian"):
            raise ValueError(f"det_method must be 'greedy' or 'hungarian', got {det_method!r}")
        self._point_mode = gt_point_mode
        self._points_offset = float(pred_points_offset)
        self._output_args = {
            "foreground_classes": tuple(foreground_classes),
            "connectivity": int(connectivity),
            "mask_threshold": float(mask_threshold),
            "score_thresh": float(instance_score_thresh),
            "overlap": str(instance_overlap),
            "overlap_thresh": float(instance_overlap_thresh),
        }
        records = DatasetCatalog.get(dataset_name) if dataset_dicts is None else dataset_dicts
        self._by_file = {r["file_name"]: r for r in records if "file_name" in r}
        self._by_id = {r["image_id"]: r for r in records if "image_id" in r}
        self._records = []
        self._warned_points_only = False

    def reset(self):
        self._records = []

    def _lookup(self, inp):
        if inp.get("file_name") in self._by_file:
            return self._by_file[inp["file_name"]]
        if "image_id" in inp and inp["image_id"] in self._by_id:
            return self._by_id[inp["image_id"]]
        raise ValueError(
            f"image {inp.get('file_name', inp.get('image_id'))} is not in dataset "
            f"{self._dataset_name}"
        )

    def process(self, inputs, outputs):
        """Score each (input, output) pair against its ground truth; keep the per-image row."""
        for inp, out in zip(inputs, outputs):
            record = self._lookup(inp)
            where = record.get("file_name", record_name(record))
            if is_points_only(record):
                self._records.append(self._detection_row(record, out, where))
                continue
            gt = gt_label_map(record)
            pred = output_instance_map(out, **self._output_args)
            if pred.shape != gt.shape:
                raise ValueError(
                    f"{where}: prediction is {pred.shape[0]}x{pred.shape[1]} but "
                    f"the ground truth is {gt.shape[0]}x{gt.shape[1]}"
                )
            pred_points = output_points(out)
            if pred_points is None:
                pred_points = gt_points(pred, self._point_mode)
            else:
                pred_points = pred_points - self._points_offset
            row = {"name": record_name(record)}
            row.update(
                image_metrics(
                    gt, pred, gt_points(gt, self._point_mode), pred_points, **self._metric_args
                )
            )
            self._records.append(row)

    def _detection_row(self, record, out, where):
        """Per-image detection record of points-only ground truth (no segmentation keys)."""
        pred_points = output_points(out)
        if pred_points is None:
            pred = output_instance_map(out, **self._output_args)
            if "height" in record and "width" in record:
                expected = (int(record["height"]), int(record["width"]))
                if pred.shape != expected:
                    raise ValueError(
                        f"{where}: prediction is {pred.shape[0]}x{pred.shape[1]} "
                        f"but the image is {expected[0]}x{expected[1]}"
                    )
            pred_points = gt_points(pred, self._point_mode)
        else:
            pred_points = pred_points - self._points_offset
        det = detection_metrics(
            annotation_points(record),
            pred_points,
            self._metric_args["radius"],
            self._metric_args["method"],
        )
        row = {"name": record_name(record)}
        row.update(prefixed_detection(det))
        return row

    def _warn_points_only(self, records):
        """Log once per evaluator how many images lack masks; returns that number."""
        n_points_only = sum("aji" not in r for r in records)
        if n_points_only and not self._warned_points_only:
            self._warned_points_only = True
            n_seg = len(records) - n_points_only
            self._logger.warning(
                f"[NucleiEvaluator] {n_points_only} of {len(records)} images of "
                f"{self._dataset_name} have points-only ground truth: segmentation metrics "
                f"need masks, so they cover the {n_seg} images with masks"
                f"{' (none: left out)' if n_seg == 0 else ''}; detection metrics cover all "
                f"{len(records)} images."
            )
        return n_points_only

    def evaluate(self):
        """Aggregate over images; returns ``OrderedDict(nuclei={...})`` on the main process."""
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain(*comm.gather(self._records, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            records = self._records
        if not records:
            self._logger.warning("[NucleiEvaluator] did not receive valid predictions.")
            return {}
        records = sorted(records, key=lambda r: r["name"])
        summary = summary_from_aggregate(aggregate(records))
        n_points_only = self._warn_points_only(records)
        if 0 < n_points_only < len(records):
            summary["num_images_seg"] = float(len(records) - n_points_only)
        if self._output_dir:
            csv_path = per_image_csv_path(self._output_dir, self._dataset_name)
            write_per_image_csv(csv_path, records)
            write_summary_json(
                csv_path.replace("nuclei_per_image_", "nuclei_results_").replace(".csv", ".json"),
                summary,
                {
                    "dataset": self._dataset_name,
                    **self._metric_args,
                    "gt_point_mode": self._point_mode,
                    "pred_points_offset": self._points_offset,
                },
            )
            self._logger.info(f"Per-image nuclei metrics written to {csv_path}")
        self._logger.info(f"Nuclei metrics on {self._dataset_name}:\n{format_table(summary)}")
        return OrderedDict({"nuclei": summary})


def build_nuclei_evaluator(cfg, dataset_name, output_folder=None):
    """``NucleiEvaluator`` configured by ``cfg.NUCLEIWEAK.EVAL`` (see ``evaluation/config.py``).

    Parameters
    ----------
    cfg : detectron2.config.CfgNode
        With :func:`~nucleiweak_d2.evaluation.config.add_evaluation_config` applied.
    dataset_name : str
    output_folder : str, optional
        Defaults to ``<cfg.OUTPUT_DIR>/inference``.
    """
    ev = cfg.NUCLEIWEAK.EVAL
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    return NucleiEvaluator(
        dataset_name,
        output_folder,
        radius=ev.DET_RADIUS,
        det_method=ev.DET_MATCHING,
        hausdorff=ev.HAUSDORFF,
        gt_point_mode=ev.POINT_MODE,
        foreground_classes=ev.SEM_SEG_FOREGROUND_CLASSES,
        connectivity=ev.CONNECTIVITY,
        mask_threshold=ev.MASK_THRESHOLD,
        pred_points_offset=ev.PRED_POINTS_OFFSET,
        instance_score_thresh=ev.INSTANCE_SCORE_THRESH,
        instance_overlap=ev.INSTANCE_OVERLAP,
        instance_overlap_thresh=ev.INSTANCE_OVERLAP_THRESH,
    )
