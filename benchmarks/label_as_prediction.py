"""Each UNet method's own pseudo-label used directly as the prediction (an upper bound).

"Know where the accuracy is lost before tuning": the segmentation network of a UNet method
learns from its pseudo-labels only, so the label itself, turned into an instance map the way
the network's output is post-processed, tells what the network could reach if it learned its
labels perfectly. Compare with the trained model at 10 % and 100 % points (rows of
``tools/benchmark.py``).

Labels, from the bbox-centre points of each image's ground truth (a seeded subset with
``--ratio < 1``, the same subset the training data uses: ``sample_partial`` with the seeds of
``nucleiweak_d2.data.coco.image_seeds``), with the settings of each method's mapper:

- ``qu2020``: Euclidean Voronoi label (``voronoi_label``) + cluster label (``cluster_label``,
  k = 3, d* = 20) of Qu et al.;
- ``liu2022``: the same Voronoi label + the adaptive k-means label of Liu et al.
  (``adaptive_cluster_label``, lambda 0.2, L 60, d* 20);
- ``nam2023``: PROnet's geodesic Voronoi and cluster labels and geodesic cells
  (``nucleiweak_d2.methods.nam2023.binary_labels``, geodesic, beta 40, d* 70).

Label codes: 0 background, 1 nucleus, 2 ignore; the Voronoi label is 0 on the cell edges,
1 within 2 px of a point and 2 elsewhere. Two rules turn them into an instance map:

- ``<method>`` (connected components, the network's post-processing):
  ``fg = (cluster == 1) & (voronoi != 0)``: nucleus in the cluster label and not on a Voronoi
  edge (an ignored cluster pixel is not foreground; the dilated points alone are not either).
  Then ``instances_from_foreground(fg, min_area=20, fill_holes=True)`` (the UNet defaults).
  Edges are two pixels wide (a pixel with a 4-neighbour in another cell), so no 8-connected
  component of ``fg`` crosses a cell border: every instance lies in one cell.
- ``<method>_cells`` (the cells split the foreground): ``fg = (cluster == 1)`` (edge pixels
  kept) and each cell's foreground is one instance (for nam2023 the geodesic cells its offset
  targets use, else the Euclidean ones). Within each cell, 8-connected pieces smaller than
  20 px are removed and the holes of the cell's instance are filled.

An image with no point gets an empty prediction. Metrics per image
(``segmentation_metrics``), then ``aggregate`` and ``summary_from_aggregate`` as the
evaluator: AJI, Dice_obj, pixel_F1, PQ are means over images. With ``--ratio < 1`` the label
is built from the subset only (no detection-based point expansion as Qu et al. at 10 %), so
the unannotated nuclei fall in large Voronoi cells of their annotated neighbours.

    .venv/bin/python benchmarks/label_as_prediction.py [--data DIR] [--splits val test]
        [--kinds ...] [--ratio 1.0] [--seed 0] [--out file.json] [--quick]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import measure, segmentation

from nucleiweak_d2 import pseudo_labels as pl
from nucleiweak_d2.data.coco import image_seeds
from nucleiweak_d2.data.io import read_image, read_label
from nucleiweak_d2.data.points import points_from_labels, sample_partial
from nucleiweak_d2.evaluation.metrics import aggregate, segmentation_metrics
from nucleiweak_d2.evaluation.report import summary_from_aggregate
from nucleiweak_d2.methods.nam2023.labels import binary_labels
from nucleiweak_d2.modeling.meta_arch.postprocess import (
    fill_holes_per_object,
    instances_from_foreground,
    remove_small_objects,
)

METHODS = ("qu2020", "liu2022", "nam2023")
KINDS = tuple(k for m in METHODS for k in (m, f"{m}_cells"))
METRICS = ("AJI", "Dice_obj", "pixel_F1", "PQ")
MIN_AREA = 20  # cfg.NUCLEIWEAK.UNET.MIN_AREA
FILL_HOLES = True  # cfg.NUCLEIWEAK.UNET.FILL_HOLES


def data_root():
    """MoNuSeg folder: ``$NUCLEIWEAK_DATA`` or ``../shared/data/monuseg_mo`` next to the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"
    return Path(os.environ.get("NUCLEIWEAK_DATA", default))


def method_labels(method, image, points):
    """``{"voronoi", "cluster", "cells"}`` of one method (uint8 labels, int cell map)."""
    shape = image.shape[:2]
    if method == "nam2023":
        return binary_labels(image, points, geodesic=True, beta=40.0, d_max=70.0)
    if method == "qu2020":
        clu = pl.cluster_label(image, points)
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


def predict(kind, image, points, cache=None):
    """Instance map of ``kind`` for one image from ``points`` ((N, 2) int (x, y)).

    ``cache`` (a dict, one per image) shares a method's labels between its two rules.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    if len(points) == 0:
        return np.zeros(image.shape[:2], dtype=np.int32)
    method = kind.removesuffix("_cells")
    cache = {} if cache is None else cache
    if method not in cache:
        cache[method] = method_labels(method, image, points)
    labels = cache[method]
    if kind.endswith("_cells"):
        fg = np.asarray(labels["cluster"]) == pl.NUCLEUS
        return instances_from_cells(fg, labels["cells"])
    fg = foreground(labels["voronoi"], labels["cluster"])
    return instances_from_foreground(fg, min_area=MIN_AREA, fill_holes=FILL_HOLES)


def load(root, name, ratio=1.0, seed=0):
    """``(image, instance map, points)``: the seeded ``ratio`` subset of bbox-centre points."""
    image = read_image(Path(root) / "images" / f"{name}.png")
    inst = read_label(Path(root) / "labels" / f"{name}.png")
    points = points_from_labels(inst, mode="bbox_center")[1]
    if ratio < 1.0 and len(points):
        points = points[sample_partial(len(points), ratio, image_seeds(seed, name)[0])]
    return image, inst, points


def evaluate(root, splits, kinds, ratio=1.0, seed=0, limit=0):
    """Summaries ``{split: {kind: summary}}`` and seconds ``{kind: s}`` spent per kind.

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
            n_points += len(points)
            n_gt += len(np.unique(inst[inst > 0]))
            cache = {}
            for kind in kinds:
                t0 = time.perf_counter()
                pred = predict(kind, image, points, cache)
                records[kind].append(segmentation_metrics(inst, pred))
                seconds[kind] += time.perf_counter() - t0
        results[split] = {
            kind: {**summary_from_aggregate(aggregate(recs)), "points": n_points, "nuclei": n_gt}
            for kind, recs in records.items()
        }
    return results, seconds


def format_table(results, seconds, ratio):
    """Text table: one row per (split, kind) with the four metrics and the time per kind."""
    lines = [f"{'split':<8}{'kind':<16}" + "".join(f"{m:>10}" for m in METRICS) + f"{'s':>8}"]
    for split, by_kind in results.items():
        for kind, s in by_kind.items():
            lines.append(
                f"{split:<8}{kind:<16}"
                + "".join(f"{s[m]:>10.4f}" for m in METRICS)
                + f"{seconds[kind]:>8.1f}"
            )
    head = (
        f"label as prediction, {100 * ratio:g} % points (s: seconds per kind over all splits; "
        "a method's labels are timed in its first kind listed)"
    )
    return "\n".join([head, *lines])


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="folder dataset (default: MoNuSeg/MO)")
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), help=", ".join(KINDS))
    parser.add_argument("--ratio", type=float, default=1.0, help="fraction of points used")
    parser.add_argument("--seed", type=int, default=0, help="seed of the point subset")
    parser.add_argument("--limit", type=int, default=0, help="first N images of each split")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny synthetic dataset (tests)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.quick:
                from nucleiweak_d2.data.synthetic import make_synthetic_dataset

                root = make_synthetic_dataset(Path(tmp) / "data", n_images=4, size=(128, 128))
            else:
                root = Path(args.data) if args.data else data_root()
            results, seconds = evaluate(
                root, args.splits, args.kinds, args.ratio, args.seed, args.limit
            )
    except ValueError as e:
        print(f"label_as_prediction: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    print(f"data: {'synthetic (--quick)' if args.quick else root}")
    print(format_table(results, seconds, args.ratio))
    print(f"time: {elapsed:.1f} s")
    if args.out:
        out = {
            "data": "quick" if args.quick else str(root),
            "ratio": args.ratio,
            "seed": args.seed,
            "seconds": elapsed,
            "seconds_per_kind": seconds,
            "results": results,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
