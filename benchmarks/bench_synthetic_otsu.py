#!/usr/bin/env python
"""How hard is the synthetic H&E? AJI of Otsu threshold + connected components on it.

Usage::

    python benchmarks/bench_synthetic_otsu.py [--n 20] [--size 256 256] [--monuseg]

Prints the mean AJI of (a) Otsu on the grey image + connected components and (b) the true
foreground + connected components (the best any semantic-only method can reach, which shows
how much touching nuclei cost), and the generation time per tile. With ``--monuseg`` the same
figures are printed for the real MoNuSeg images, for comparison.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from skimage.color import rgb2gray
from skimage.filters import threshold_otsu
from skimage.measure import label as connected_components

from nucleiweak_d2.data.io import read_image, read_label
from nucleiweak_d2.data.synthetic import synthesize_image

try:
    from nucleiweak_d2.evaluation.metrics import aji
except ImportError:  # evaluation module not there yet: a short private AJI (Kumar et al.)

    def aji(gt, pred):
        inter_sum = union_sum = 0
        used = set()
        for i in np.unique(gt)[1:]:
            g = gt == i
            best, best_j, best_u = -1.0, 0, g.sum()
            for j in np.unique(pred[g]):
                if j == 0:
                    continue
                p = pred == j
                inter, union = (g & p).sum(), (g | p).sum()
                if inter / union > best:
                    best, best_j, best_inter, best_u = inter / union, j, inter, union
            if best_j:
                inter_sum += best_inter
                used.add(best_j)
            union_sum += best_u
        for j in np.unique(pred)[1:]:
            if j not in used:
                union_sum += (pred == j).sum()
        return inter_sum / union_sum if union_sum else 1.0


DATA = Path(
    os.environ.get(
        "NUCLEIWEAK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"
    )
)


def otsu_cc(image):
    grey = rgb2gray(image)
    return connected_components(grey < threshold_otsu(grey))


def report(name, pairs):
    otsu = [aji(label, otsu_cc(image)) for image, label in pairs]
    oracle = [aji(label, connected_components(label > 0, connectivity=1)) for _, label in pairs]
    nuclei = [
        int(label.max() if name == "synthetic" else len(np.unique(label)) - 1) for _, label in pairs
    ]
    print(f"{name}: {len(pairs)} images, nuclei/image {np.mean(nuclei):.1f}")
    print(
        f"  Otsu + connected components AJI: {np.mean(otsu):.3f} +- {np.std(otsu):.3f} "
        f"(min {np.min(otsu):.3f}, max {np.max(otsu):.3f})"
    )
    print(f"  true foreground + connected components AJI: {np.mean(oracle):.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--monuseg", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    pairs = [synthesize_image(tuple(args.size), seed) for seed in range(args.n)]
    per_tile = (time.perf_counter() - start) / args.n
    print(f"generation: {per_tile * 1000:.1f} ms per {args.size[0]}x{args.size[1]} tile")
    report("synthetic", pairs)
    if args.monuseg and (DATA / "images").is_dir():
        names = sorted(p.stem for p in (DATA / "images").glob("*.png"))
        report(
            "MoNuSeg",
            [
                (read_image(DATA / "images" / f"{n}.png"), read_label(DATA / "labels" / f"{n}.png"))
                for n in names
            ],
        )


if __name__ == "__main__":
    main()
