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
1 within 2 px of a point and 2 elsewhere. Three rules turn them into an instance map:

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

``--config FILE [--opts KEY VALUE ...]`` builds the labels as a run of that config does:
its ``NUCLEIWEAK.QU2020.LABEL`` settings, ``NUCLEIWEAK.UNET.MIN_AREA`` / ``FILL_HOLES``, and its
stain normalisation fitted on the data's ``train`` split (``label_bound.settings_from_cfg``);
without it, Qu et al.'s label on the raw images (min area 20, holes filled).

- ``<method>_free`` (no point information, as the network's output at test time):
  ``fg = (cluster == 1)``, then ``instances_from_foreground`` as the first rule. Neighbouring
  nuclei are only apart where the label leaves a gap between them (Qu's erosion by disk(7)
  after disk(5) does; a closing does not), so this is the bound a network can reach with the
  point-free post-processing; the first two rules separate nuclei with the points.

An image with no point gets an empty prediction. Metrics per image
(``segmentation_metrics``), then ``aggregate`` and ``summary_from_aggregate`` as the
evaluator: AJI, Dice_obj, pixel_F1, PQ are means over images. With ``--ratio < 1`` the label
is built from the subset only (no detection-based point expansion as Qu et al. at 10 %), so
the unannotated nuclei fall in large Voronoi cells of their annotated neighbours.

    .venv/bin/python benchmarks/label_as_prediction.py [--data DIR] [--splits val test]
        [--kinds ...] [--ratio 1.0] [--seed 0] [--out file.json] [--quick]
        [--config configs/qu2020/R18_monuseg_p10_cpu_erode5.yaml [--opts KEY VALUE ...]]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from nucleiweak_d2.benchmarking.label_bound import (  # noqa: F401  (the script's API)
    KINDS,
    METRICS,
    evaluate,
    instances_from_cells,
    predict,
    settings_from_cfg,
)


def data_root():
    """MoNuSeg folder: ``$NUCLEIWEAK_DATA`` or ``../shared/data/monuseg_mo`` next to the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"
    return Path(os.environ.get("NUCLEIWEAK_DATA", default))


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
    parser.add_argument("--config", default="", help="build the labels as this config's runs do")
    parser.add_argument("--opts", nargs="*", default=[], help="KEY VALUE pairs for --config")
    return parser


def run_settings(config, opts, root):
    """``evaluate`` keyword arguments of ``config`` (+ ``opts``), its stain normalisation
    fitted on ``root``'s train split; {} without a config."""
    if not config:
        if opts:
            raise ValueError("--opts needs --config")
        return {}
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.data.folder import load_folder_dataset

    if not Path(config).is_file():
        raise ValueError(f"no config file {config}")
    cfg = setup_cfg(config, list(opts), freeze=False)
    name = f"label_as_prediction_train_{os.getpid()}"
    records = [{"file_name": str(r["image_path"])} for r in load_folder_dataset(root, "train")]
    DatasetCatalog.register(name, lambda: records)
    try:
        cfg.DATASETS.TRAIN = (name,)
        return settings_from_cfg(cfg)
    finally:
        DatasetCatalog.remove(name)


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
            settings = run_settings(args.config, args.opts, root)
            results, seconds = evaluate(
                root, args.splits, args.kinds, args.ratio, args.seed, args.limit, **settings
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
            "config": args.config,
            "opts": args.opts,
            "seconds": elapsed,
            "seconds_per_kind": seconds,
            "results": results,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
