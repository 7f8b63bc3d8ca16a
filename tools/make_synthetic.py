#!/usr/bin/env python
"""Write a seeded synthetic H&E folder dataset (images/, labels/, split.json).

Example::

    python tools/make_synthetic.py datasets/synthetic --n-images 12 --size 256 256 --seed 0

The same arguments give byte-identical files. Every file written is listed, with its SHA-256,
in ``<out>/.nucleiweak_synthetic.json``. An existing dataset is replaced only with
``--overwrite``, which deletes only the files listed there (and unchanged since). A folder
whose ``images/``, ``labels/`` or ``split.json`` hold anything else (a real dataset, a file
edited by hand) is refused, naming the file, and nothing is deleted. Bad input exits with
code 2 and one ``error:`` line (``--debug`` shows the traceback).
"""

import argparse
import sys
import time

from nucleiweak_d2.cli import add_debug_flag, cli_guard
from nucleiweak_d2.data.synthetic import make_synthetic_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split-fractions",
        type=float,
        nargs=3,
        default=(0.5, 0.25, 0.25),
        metavar=("TRAIN", "VAL", "TEST"),
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset this tool wrote (deletes only the files of its manifest)",
    )
    add_debug_flag(parser)
    return parser.parse_args(argv)


@cli_guard
def main(argv=None):
    """Run the CLI; returns the exit code (2 and one ``error:`` line on bad input)."""
    args = parse_args(argv)
    start = time.perf_counter()
    out = make_synthetic_dataset(
        args.out,
        n_images=args.n_images,
        size=tuple(args.size),
        seed=args.seed,
        split_fractions=tuple(args.split_fractions),
        overwrite=args.overwrite,
    )
    print(f"wrote {args.n_images} tiles to {out} in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
