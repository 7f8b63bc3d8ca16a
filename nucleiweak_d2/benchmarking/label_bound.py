"""Each UNet method's own pseudo-label used directly as the prediction (an upper bound).

The library of ``benchmarks/label_as_prediction.py`` (its docstring: the labels, the two rules
that turn them into an instance map, the metrics) and of ``tools/benchmark.py --decompose``.
A method's segmentation network learns from its pseudo-labels only, so the label itself,
post-processed as the network's output is, tells what the network could reach if it learned
its labels perfectly. :func:`settings_from_cfg` takes the label settings, the post-processing
and the stain normalisation of a run's config, so that the labels are those the run trained on.
"""

import json
import time
from pathlib import Path

import numpy as np
from skimage import measure, segmentation

from .. import pseudo_labels as pl
from ..data.coco import image_seeds
from ..data.io import read_image, read_label
from ..data.points import points_from_labels, sample_partial
from ..evaluation.metrics import aggregate, segmentation_metrics
from ..evaluation.report import summary_from_aggregate
from ..methods.nam2023.config import label_settings as nam_label_settings
from ..methods.nam2023.labels import binary_labels
from ..methods.qu2020.config import label_settings as qu_label_settings
from ..methods.qu2020.labels import cluster_label_of
from ..modeling.meta_arch.postprocess import (
    fill_holes_per_object,
    instances_from_foreground,
    remove_small_objects,
)

__all__ = [
    "FILL_HOLES",
    "KINDS",
    "LABEL_METHODS",
    "METRICS",
    "MIN_AREA",
    "evaluate",
    "foreground",
    "instances_from_cells",
    "load",
    "method_labels",
    "predict",
    "settings_from_cfg",
]

#: Methods whose labels are built, and the rules (kinds) that turn them into an instance map.
LABEL_METHODS = ("qu2020", "liu2022", "nam2023")
KINDS = tuple(k for m in LABEL_METHODS for k in (m, f"{m}_cells", f"{m}_free"))
METRICS = ("AJI", "Dice_obj", "pixel_F1", "PQ")
MIN_AREA = 20  # cfg.NUCLEIWEAK.UNET.MIN_AREA
FILL_HOLES = True  # cfg.NUCLEIWEAK.UNET.FILL_HOLES


def method_labels(method, image, points, qu_label=None, nam_label=None):
    """``{"voronoi", "cluster", "cells"}`` of one method (uint8 labels, int cell map).

    ``qu_label``: keyword arguments of
    :func:`~nucleiweak_d2.methods.qu2020.labels.cluster_label_of` for qu2020 (``kind``,
    ``d_max``, ``dilate_radius``, ``erode_radius``; default Qu et al.'s label); ``nam_label``:
    keyword arguments of :func:`~nucleiweak_d2.methods.nam2023.labels.binary_labels` for
    nam2023 (default PROnet's MoNuSeg settings).
    """
    shape = image.shape[:2]
    if method == "nam2023":
        return binary_labels(image, points, **(nam_label or {}))
    if method == "qu2020":
        clu = cluster_label_of(**{"kind": "kmeans", **(qu_label or {})}, image=image, points=points)
    elif method == "liu2022":
        clu = pl.adaptive_cluster_label(image, points, alpha=0.2, patch_size=60, d_max=20.0)
    else:
        raise ValueError(f"unknown method {method!r}")
    return {
        "voronoi": pl.voronoi_label(points, shape),
        "cluster": clu,
        "cells": pl.voronoi_cells(points, shape),
    }


def foreground(voronoi, cluster):
    """Nucleus pixels of the cluster label that are not Voronoi edges."""
    return (np.asarray(cluster) == pl.NUCLEUS) & (np.asarray(voronoi) != pl.BACKGROUND)


def instances_from_cells(fg, cells, min_area=MIN_AREA, fill_holes=FILL_HOLES):
    """One instance per cell: the cell's foreground, small pieces removed, holes filled.

    Parameters
    ----------
    fg : numpy.ndarray
        ``(H, W)`` bool foreground.
    cells : numpy.ndarray
        ``(H, W)`` integer cell index (>= 0) of every pixel.
    min_area : int
        8-connected pieces (within one cell) smaller than this are removed.
    fill_holes : bool
        Fill the holes of each instance (pixels already in another instance stay there).

    Returns
    -------
    numpy.ndarray
        int32 ``(H, W)`` instance map, 0 = background, ids 1..N.
    """
    fg = np.asarray(fg, dtype=bool)
    lab = np.where(fg, np.asarray(cells, dtype=np.int64) + 1, 0)
    if min_area > 0 and lab.max():
        pieces = remove_small_objects(measure.label(lab, background=0, connectivity=2), min_area)
        lab[pieces == 0] = 0
    if fill_holes:
        lab = fill_holes_per_object(lab)
    lab, _, _ = segmentation.relabel_sequential(lab)
    return lab.astype(np.int32)


def predict(
    kind,
    image,
    points,
    cache=None,
    *,
    qu_label=None,
    nam_label=None,
    min_area=MIN_AREA,
    fill_holes=FILL_HOLES,
):
    """Instance map of ``kind`` for one image from ``points`` ((N, 2) int (x, y)).

    ``cache`` (a dict, one per image) shares a method's labels between its rules;
    ``qu_label``, ``nam_label`` as :func:`method_labels`; ``min_area`` and ``fill_holes``
    post-process the label as the network's output is (``NUCLEIWEAK.UNET.MIN_AREA``,
    ``FILL_HOLES``). The rules are those of ``benchmarks/label_as_prediction.py``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    if len(points) == 0:
        return np.zeros(image.shape[:2], dtype=np.int32)
    method = kind.removesuffix("_cells").removesuffix("_free")
    cache = {} if cache is None else cache
    if method not in cache:
        cache[method] = method_labels(method, image, points, qu_label, nam_label)
    labels = cache[method]
    if kind.endswith("_free"):  # no point information: as a network's output would be
        fg = np.asarray(labels["cluster"]) == pl.NUCLEUS
        return instances_from_foreground(fg, min_area=min_area, fill_holes=fill_holes)
    if kind.endswith("_cells"):
        fg = np.asarray(labels["cluster"]) == pl.NUCLEUS
        return instances_from_cells(fg, labels["cells"], min_area, fill_holes)
    fg = foreground(labels["voronoi"], labels["cluster"])
    return instances_from_foreground(fg, min_area=min_area, fill_holes=fill_holes)


def load(root, name, ratio=1.0, seed=0):
    """``(image, instance map, points)``: the seeded ``ratio`` subset of bbox-centre points."""
    image = read_image(Path(root) / "images" / f"{name}.png")
    inst = read_label(Path(root) / "labels" / f"{name}.png")
    points = points_from_labels(inst, mode="bbox_center")[1]
    if ratio < 1.0 and len(points):
        points = points[sample_partial(len(points), ratio, image_seeds(seed, name)[0])]
    return image, inst, points


def settings_from_cfg(cfg):
    """Keyword arguments of :func:`evaluate` that build the labels as the run of ``cfg`` does.

    ``qu_label`` from ``NUCLEIWEAK.QU2020.LABEL``, ``nam_label`` from
    ``NUCLEIWEAK.NAM2023.LABELS``, ``min_area`` / ``fill_holes`` from
    ``NUCLEIWEAK.UNET``, and ``normalizer``: the training mappers' stain normalisation
    (``NUCLEIWEAK.DATA.STAIN_NORM``; a method with an empty target is fitted on
    ``DATASETS.TRAIN[0]``, which must be registered, as the pipeline fits it), None when off.
    Liu's labels keep their fixed MoNuSeg settings.
    """
    from ..data.stain import StainNormalizer
    from ..engine.stain import fit_stain_target

    stain = fit_stain_target(cfg).NUCLEIWEAK.DATA.STAIN_NORM
    return {
        "qu_label": qu_label_settings(cfg),
        "nam_label": nam_label_settings(cfg),
        "min_area": cfg.NUCLEIWEAK.UNET.MIN_AREA,
        "fill_holes": cfg.NUCLEIWEAK.UNET.FILL_HOLES,
        "normalizer": None
        if stain.METHOD == "none"
        else StainNormalizer(stain.METHOD, stain.TARGET),
    }


def evaluate(
    root,
    splits,
    kinds,
    ratio=1.0,
    seed=0,
    limit=0,
    *,
    qu_label=None,
    nam_label=None,
    min_area=MIN_AREA,
    fill_holes=FILL_HOLES,
    normalizer=None,
):
    """Summaries ``{split: {kind: summary}}`` and seconds ``{kind: s}`` spent per kind.

    ``qu_label``, ``nam_label``, ``min_area``, ``fill_holes`` as :func:`predict`;
    ``normalizer`` (a callable RGB uint8 image -> image, e.g. a
    :class:`~nucleiweak_d2.data.stain.StainNormalizer`) is applied to every image before its
    labels are built (see :func:`settings_from_cfg`).

    Raises
    ------
    ValueError
        Missing data folder, unknown split or kind, ratio outside (0, 1].
    """
    root = Path(root)
    if not (root / "split.json").is_file():
        raise ValueError(f"no dataset at {root} (no split.json); set --data or $NUCLEIWEAK_DATA")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown kind {bad[0]!r} (choose from {', '.join(KINDS)})")
    if not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    split_map = json.loads((root / "split.json").read_text())
    bad = [s for s in splits if s not in split_map]
    if bad:
        raise ValueError(f"unknown split {bad[0]!r} (split.json has {', '.join(split_map)})")
    results, seconds = {}, dict.fromkeys(kinds, 0.0)
    for split in splits:
        names = split_map[split][:limit] if limit else split_map[split]
        if not names:
            raise ValueError(f"split {split!r} has no image")
        records = {k: [] for k in kinds}
        n_points = n_gt = 0
        for name in names:
            image, inst, points = load(root, name, ratio, seed)
            if normalizer is not None:
                image = normalizer(image)
            n_points += len(points)
            n_gt += len(np.unique(inst[inst > 0]))
            cache = {}
            for kind in kinds:
                t0 = time.perf_counter()
                pred = predict(
                    kind,
                    image,
                    points,
                    cache,
                    qu_label=qu_label,
                    nam_label=nam_label,
                    min_area=min_area,
                    fill_holes=fill_holes,
                )
                records[kind].append(segmentation_metrics(inst, pred))
                seconds[kind] += time.perf_counter() - t0
        results[split] = {
            kind: {**summary_from_aggregate(aggregate(recs)), "points": n_points, "nuclei": n_gt}
            for kind, recs in records.items()
        }
    return results, seconds
