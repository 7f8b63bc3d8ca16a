#!/usr/bin/env python
"""Convert a folder dataset (images/ + labels/ or points/ + split.json) to COCO JSON per split.

Examples
--------
10 % of the points, shifted by 2-4 px, seed 0::

    python tools/prepare_dataset.py datasets/monuseg --out datasets/monuseg/coco_r0.1_s2-4 \\
        --ratio 0.1 --shift 2-4 --seed 0

Partial masks (25 % of the instances keep their masks)::

    python tools/prepare_dataset.py ROOT --out OUT --ratio 0.25 --annotation partial_mask

Clicked points only (points/<name>.csv, no labels)::

    python tools/prepare_dataset.py ROOT --out OUT --annotation points_only

Existing files are never replaced unless ``--overwrite`` is given (a refused run changes no
file). Every split named by ``--splits`` / ``--weak-splits`` must exist in split.json.

Errors in the input (ValueError, FileNotFoundError, FileExistsError) print one line
``error: <message>`` on stderr and exit with code 2; ``--debug`` shows the traceback instead
(:mod:`nucleiweak_d2.cli`). ``run(argv)`` does the work and raises; ``main(argv)`` is the
guarded command-line entry and returns the exit code.
"""

import argparse
import json
import sys
import time

from nucleiweak_d2.cli import add_debug_flag, cli_guard
from nucleiweak_d2.data.coco import ANNOTATION_MODES, export_coco_splits
from nucleiweak_d2.data.points import POINT_MODES, SHIFT_PRESETS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", help="folder dataset (images/, labels/ or points/, split.json)")
    parser.add_argument("--out", required=True, help="output folder for <split>.json")
    parser.add_argument(
        "--ratio", type=float, default=1.0, help="fraction of points labelled, (0, 1]"
    )
    parser.add_argument(
        "--shift",
        default="0",
        help=f"shift range 'min-max' in px or a preset {sorted(SHIFT_PRESETS)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and shifts")
    parser.add_argument("--point-mode", default="bbox_center", choices=POINT_MODES)
    parser.add_argument("--annotation", default="points", choices=ANNOTATION_MODES)
    parser.add_argument("--splits", nargs="+", help="splits to export (default: all in split.json)")
    parser.add_argument(
        "--weak-splits", nargs="+", help="apply --ratio/--shift only to these splits (default: all)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing JSON files")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def run(argv=None):
    """Export the COCO files and print a summary; raises on bad input. Returns 0."""
    args = parse_args(argv)
    start = time.perf_counter()
    written = export_coco_splits(
        args.root,
        args.out,
        ratio=args.ratio,
        shift=args.shift,
        seed=args.seed,
        point_mode=args.point_mode,
        annotation=args.annotation,
        splits=args.splits,
        weak_splits=args.weak_splits,
        overwrite=args.overwrite,
    )
    for split, path in written.items():
        content = json.loads(path.read_text())
        labeled = sum(a["point_labeled"] for a in content["annotations"])
        print(
            f"{split}: {len(content['images'])} images, {len(content['annotations'])} instances, "
            f"{labeled} labelled points -> {path}"
        )
    print(f"done in {time.perf_counter() - start:.2f} s")
    return 0


#: Command-line entry: 0, or 2 with a one-line ``error: ...`` on stderr for bad input.
main = cli_guard(run)


if __name__ == "__main__":
    sys.exit(main())
