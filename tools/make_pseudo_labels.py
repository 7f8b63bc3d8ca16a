#!/usr/bin/env python
"""Write pseudo-label PNGs and colour overlays for a nuclei COCO dataset with points.

Example (Qu's two labels for the training split, 2 processes)::

    python tools/make_pseudo_labels.py datasets/monuseg/coco/train.json \\
        --image-root datasets/monuseg --out output/pseudo_labels --kinds voronoi cluster \\
        --workers 2

For every image and kind it writes ``<out>/<kind>/<stem>.png``: uint8 labels with 0 background,
1 nucleus, 2 ignore (``ext_gaussian``: 1 where the Gaussian target is > 0, 0 on its background
ring, 2 ignored), and ``<out>/<kind>_overlay/<stem>.png``: the image with nucleus pixels
tinted green and background pixels red, ignored pixels untouched. Only points with
``point_labeled`` are used unless ``--all-points``. An image without a point gets an
all-ignore label.

Checked before anything is written (exit code 2 and one ``error:`` line naming the file or
option; ``--debug`` shows the traceback): the COCO file, every image it names, images that
share a file stem, and existing outputs, which are never replaced unless ``--overwrite`` is
given. The outputs are a function of the inputs only: reruns give byte-identical files.
"""

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from nucleiweak_d2.cli import add_debug_flag, cli_guard
from nucleiweak_d2.pseudo_labels.export import KINDS, output_paths, process


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json_file", help="COCO JSON with point annotations")
    parser.add_argument("--image-root", required=True, help="folder file_name is relative to")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--kinds", nargs="+", default=["voronoi", "cluster"], choices=KINDS)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument(
        "--all-points",
        action="store_true",
        help="use every annotation's point, not only point_labeled ones",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    parser.add_argument("--no-overlay", action="store_true", help="write label PNGs only")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def check_inputs(records, json_file):
    """Refuse a COCO file without images, or naming a missing image or two with one stem."""
    if not records:
        raise ValueError(f"COCO file {json_file} lists no image")
    missing = [r["file_name"] for r in records if not Path(r["file_name"]).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(
            f"image not found: {missing[0]}{more} (listed in {json_file}; is --image-root right?)"
        )
    stems = [Path(r["file_name"]).stem for r in records]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(
            f"several images of {json_file} share the file stem(s) {clashes}; "
            f"their outputs would overwrite each other"
        )


def check_outputs(paths, overwrite):
    """Refuse to replace existing outputs without ``--overwrite``, naming one of them."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{len(existing)} output file(s) exist, e.g. {existing[0]}; "
            f"pass --overwrite to replace them"
        )


@cli_guard
def main(argv=None):
    """Run the CLI; returns the exit code (2 and one ``error:`` line on bad input)."""
    from tqdm import tqdm

    from nucleiweak_d2.data.coco import load_nuclei_coco

    args = parse_args(argv)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    records = load_nuclei_coco(args.json_file, args.image_root)
    check_inputs(records, args.json_file)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder")
    kinds = list(dict.fromkeys(args.kinds))
    paths = [
        p
        for r in records
        for pair in output_paths(r, kinds, out_dir).values()
        for p in pair[: 1 if args.no_overlay else 2]
    ]
    check_outputs(paths, args.overwrite)
    for kind in kinds:
        (out_dir / kind).mkdir(parents=True, exist_ok=True)
        if not args.no_overlay:
            (out_dir / f"{kind}_overlay").mkdir(parents=True, exist_ok=True)
    jobs = [
        (r, kinds, str(out_dir), args.all_points, args.alpha, not args.no_overlay) for r in records
    ]
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="pseudo-labels", unit="img")
    if args.workers == 1:
        counts = []
        for job in jobs:
            counts.append(process(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            counts = []
            for n in pool.map(process, jobs):
                counts.append(n)
                bar.update()
    bar.close()
    empty = sum(1 for n in counts if n == 0)
    print(
        f"wrote {len(kinds)} kind(s) for {len(jobs)} image(s) to {out_dir} in "
        f"{time.perf_counter() - start:.1f} s ({sum(counts)} points"
        f"{f'; {empty} image(s) without points got all-ignore labels' if empty else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
