#!/usr/bin/env python
"""Score a folder of predicted nuclei label maps against a dataset.

The dataset is a folder (``images/``, ``labels/``, optional ``split.json``) or a nuclei COCO
JSON; predictions are integer instance maps (PNG / TIF / NPY, 0 = background) named after
the images, so the output of any tool (StarDist, Cellpose, QuPath exports) is scored with the
same metrics as our models. Prints a table and writes ``nuclei_per_image_<tag>.csv`` and
``nuclei_results_<tag>.json``.

Examples::

    python tools/evaluate.py --gt ../shared/data/monuseg_mo --split test --pred out/pred
    python tools/evaluate.py --gt coco/test.json --image-root ../shared/data/monuseg_mo \\
        --pred cellpose_out --pattern "{name}_cp_masks.png" --radius 11
"""

import argparse
import os
import re
import sys

from nucleiweak_d2.evaluation.prediction_folder import (DEFAULT_PATTERNS,
                                                        evaluate_prediction_folder)
from nucleiweak_d2.evaluation.report import format_table, write_per_image_csv, write_summary_json


def load_records(gt, split=None, image_root=None):
    """Dataset records of a folder dataset (with ``split``) or a COCO JSON file."""
    if os.path.isdir(gt):
        from nucleiweak_d2.data.folder import load_folder_dataset

        return load_folder_dataset(gt, split=split)
    if gt.endswith(".json") and os.path.isfile(gt):
        if split is not None:
            raise ValueError("--split applies to folder datasets; a COCO file is one split")
        from nucleiweak_d2.data.coco import load_nuclei_coco

        return load_nuclei_coco(gt, image_root or os.path.dirname(os.path.abspath(gt)))
    raise ValueError(f"--gt {gt} is neither a dataset folder nor a COCO .json file")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="dataset folder or nuclei COCO JSON")
    parser.add_argument("--split", default=None, help="split of a folder dataset (default: all)")
    parser.add_argument("--image-root", default=None,
                        help="root of the relative paths of a COCO JSON (default: its folder)")
    parser.add_argument("--pred", required=True, help="folder of predicted label maps")
    parser.add_argument("--pattern", action="append", default=None,
                        help="prediction file name with {name}, e.g. '{name}_masks.tif' "
                             "(repeatable; default: {name}[_label|_labels|_masks|_cp_masks]"
                             ".png|tif|tiff|npy)")
    parser.add_argument("--points", default=None,
                        help="folder of <name>.csv detected points x,y (default: the bbox "
                             "centres of the predicted nuclei)")
    parser.add_argument("--radius", type=float, default=11.0,
                        help="detection radius in px (Qu et al.: 11 at 40x, 8 at 20x)")
    parser.add_argument("--matching", choices=("greedy", "hungarian"), default="greedy")
    parser.add_argument("--point-mode", choices=("bbox_center", "centroid"), default="bbox_center")
    parser.add_argument("--hausdorff", action="store_true", help="also object Hausdorff")
    parser.add_argument("--output", default=None, help="folder of the CSV/JSON (default: --pred)")
    parser.add_argument("--tag", default=None,
                        help="name used in the output files (default: dataset name and split)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    records = load_records(args.gt, args.split, args.image_root)
    rows, summary = evaluate_prediction_folder(
        records, args.pred, tuple(args.pattern) if args.pattern else DEFAULT_PATTERNS,
        radius=args.radius, method=args.matching, hausdorff=args.hausdorff,
        point_mode=args.point_mode, points_dir=args.points)
    tag = args.tag or "_".join(filter(None, [os.path.splitext(os.path.basename(
        os.path.normpath(args.gt)))[0], args.split]))
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)
    out_dir = args.output or args.pred
    csv_path = os.path.join(out_dir, f"nuclei_per_image_{tag}.csv")
    json_path = os.path.join(out_dir, f"nuclei_results_{tag}.json")
    write_per_image_csv(csv_path, rows)
    write_summary_json(json_path, summary, {
        "gt": os.path.abspath(args.gt), "split": args.split, "pred": os.path.abspath(args.pred),
        "radius": args.radius, "matching": args.matching, "point_mode": args.point_mode,
        "hausdorff": args.hausdorff, "points": args.points})
    print(f"{len(rows)} images, predictions from {args.pred}")
    print(format_table(summary))
    print(f"per-image CSV: {csv_path}\nsummary JSON:  {json_path}")
    return summary


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"error: {exc}")
