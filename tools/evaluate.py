#!/usr/bin/env python
"""Score a folder of predicted nuclei label maps against a dataset.

The dataset is a folder (``images/``, ``labels/``, optional ``split.json``) or a nuclei COCO
JSON; predictions are integer instance maps (PNG / TIF / NPY, 0 = background) named after
the images, so the output of any tool (StarDist, Cellpose, QuPath exports) is scored with the
same metrics as our models. Prints a table and writes ``nuclei_per_image_<tag>.csv`` and
``nuclei_results_<tag>.json``.

Points-only ground truth (a COCO JSON of clicked points, e.g. from ``tools/prepare_dataset.py
--points``, or a folder dataset with ``points/<name>.csv`` and no ``labels/``) is scored for
detection only: the predicted points (``--points``, else the centres of the predicted nuclei)
against every clicked point within ``--radius``; segmentation metrics need masks and are
left out (a dataset mixing both gets segmentation metrics over the images with masks).

A COCO JSON's relative paths are resolved against ``--image-root``, by default the dataset
root recorded in the file by ``tools/prepare_dataset.py`` (``info.image_root``), else the
nearest folder above the JSON that contains ``images/``.

Results are never overwritten: when ``nuclei_per_image_<tag>.csv`` or
``nuclei_results_<tag>.json`` already exists in the output folder, the run stops before
scoring unless ``--overwrite`` is given (or another ``--output`` / ``--tag``).

Errors in the input (ValueError, FileNotFoundError, FileExistsError) print one line
``error: <message>`` on stderr and exit with code 2; ``--debug`` shows the traceback instead.
(:mod:`nucleiweak_d2.cli`). ``main(argv)`` does the work, returns the summary and raises;
``cli(argv)`` is the guarded command-line entry and returns the exit code.

Examples::

    python tools/evaluate.py --gt ../shared/data/monuseg_mo --split test --pred out/pred
    python tools/evaluate.py --gt coco/test.json --image-root ../shared/data/monuseg_mo \\
        --pred cellpose_out --pattern "{name}_cp_masks.png" --radius 11
"""

import argparse
import os
import re
import sys

from nucleiweak_d2.cli import add_debug_flag, run_cli
from nucleiweak_d2.evaluation.prediction_folder import DEFAULT_PATTERNS, evaluate_prediction_folder
from nucleiweak_d2.evaluation.report import format_table, write_per_image_csv, write_summary_json


def load_records(gt, split=None, image_root=None):
    """Dataset records of a folder dataset (with ``split``) or a COCO JSON file."""
    if os.path.isdir(gt):
        from nucleiweak_d2.data.folder import load_folder_dataset

        return load_folder_dataset(gt, split=split)
    if gt.endswith(".json") and os.path.isfile(gt):
        if split is not None:
            raise ValueError("--split applies to folder datasets; a COCO file is one split")
        return load_coco_records(gt, image_root)
    raise ValueError(f"--gt {gt} is neither a dataset folder nor a COCO .json file")


def load_coco_records(json_file, image_root=None):
    """Records of a COCO file whose ground-truth label maps exist under the image root.

    Parameters
    ----------
    json_file : str
    image_root : str, optional
        ``--image-root``; default: :func:`nucleiweak_d2.data.coco.find_image_root`.
    """
    from nucleiweak_d2.data.coco import find_image_root, load_nuclei_coco

    if image_root is None:
        image_root, how = find_image_root(json_file)
    else:
        how = "--image-root"
    records = load_nuclei_coco(json_file, image_root)
    for record in records:
        path = record.get("label_file_name")
        if path and not os.path.isfile(path):
            raise ValueError(
                f"label map {path} of {json_file} does not exist: the image root "
                f"{image_root} ({how}) does not hold the dataset; pass "
                f"--image-root"
            )
    return records


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="dataset folder or nuclei COCO JSON")
    parser.add_argument("--split", default=None, help="split of a folder dataset (default: all)")
    parser.add_argument(
        "--image-root",
        default=None,
        help="root of the relative paths of a COCO JSON (default: the root "
        "recorded in it, else the nearest folder above it with images/)",
    )
    parser.add_argument("--pred", required=True, help="folder of predicted label maps")
    parser.add_argument(
        "--pattern",
        action="append",
        default=None,
        help="prediction file name with {name}, e.g. '{name}_masks.tif' "
        "(repeatable; default: {name}[_instances|_label|_labels|_masks|"
        "_cp_masks].png|tif|tiff|npy)",
    )
    parser.add_argument(
        "--points",
        default=None,
        help="folder of <name>.csv detected points (columns x,y by header, "
        "see docs/CONTRACTS.md; default: the bbox centres of the "
        "predicted nuclei)",
    )
    parser.add_argument(
        "--radius",
        type=float,
        default=11.0,
        help="detection radius in px (Qu et al.: 11 at 40x, 8 at 20x)",
    )
    parser.add_argument("--matching", choices=("greedy", "hungarian"), default="greedy")
    parser.add_argument("--point-mode", choices=("bbox_center", "centroid"), default="bbox_center")
    parser.add_argument("--hausdorff", action="store_true", help="also object Hausdorff")
    parser.add_argument("--output", default=None, help="folder of the CSV/JSON (default: --pred)")
    parser.add_argument(
        "--tag",
        default=None,
        help="name used in the output files (default: dataset name and split)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the result files of an earlier run"
    )
    add_debug_flag(parser)
    return parser


def output_paths(args):
    """``(csv_path, json_path)`` of the results; FileExistsError if one exists (no --overwrite)."""
    tag = args.tag or "_".join(
        filter(None, [os.path.splitext(os.path.basename(os.path.normpath(args.gt)))[0], args.split])
    )
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)
    out_dir = args.output or args.pred
    paths = (
        os.path.join(out_dir, f"nuclei_per_image_{tag}.csv"),
        os.path.join(out_dir, f"nuclei_results_{tag}.json"),
    )
    for path in paths:
        if os.path.exists(path) and not args.overwrite:
            raise FileExistsError(
                f"refusing to overwrite {path} (results of an earlier run); "
                f"pass --overwrite, or another --output or --tag"
            )
    return paths


def main(argv=None):
    """Score the predictions and write the CSV/JSON; raises on bad input. Returns the summary."""
    args = build_parser().parse_args(argv)
    records = load_records(args.gt, args.split, args.image_root)
    csv_path, json_path = output_paths(args)
    rows, summary = evaluate_prediction_folder(
        records,
        args.pred,
        tuple(args.pattern) if args.pattern else DEFAULT_PATTERNS,
        radius=args.radius,
        method=args.matching,
        hausdorff=args.hausdorff,
        point_mode=args.point_mode,
        points_dir=args.points,
    )
    write_per_image_csv(csv_path, rows)
    write_summary_json(
        json_path,
        summary,
        {
            "gt": os.path.abspath(args.gt),
            "split": args.split,
            "pred": os.path.abspath(args.pred),
            "radius": args.radius,
            "matching": args.matching,
            "point_mode": args.point_mode,
            "hausdorff": args.hausdorff,
            "points": args.points,
        },
    )
    n_points_only = sum("aji" not in r for r in rows)
    print(f"{len(rows)} images, predictions from {args.pred}")
    if n_points_only:
        print(
            f"{n_points_only} image(s) with points-only ground truth: detection metrics only"
            f" for them (radius {args.radius:g} px)"
        )
    print(format_table(summary))
    print(f"per-image CSV: {csv_path}\nsummary JSON:  {json_path}")
    return summary


def cli(argv=None):
    """Command-line entry: 0, or 2 with a one-line ``error: ...`` on stderr for bad input."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
