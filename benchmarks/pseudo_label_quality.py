"""Quality of every pseudo-label kind against the MoNuSeg ground-truth masks.

For each kind, over all images of a split with 100 % bounding-box-centre points: the precision
of its nucleus pixels (fraction that lie in a ground-truth nucleus), the precision of its
background pixels (fraction outside every nucleus) and the fraction of pixels it labels
(not ignored). Pixel counts are summed over images.

    .venv/bin/python benchmarks/pseudo_label_quality.py [--split train] [--kinds ...]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from nucleiweak_d2 import pseudo_labels as pl
from nucleiweak_d2.data.io import read_image, read_label
from nucleiweak_d2.data.points import points_from_labels


def data_root():
    """MoNuSeg folder: ``$NUCLEIWEAK_DATA`` or ``../shared/data/monuseg_mo`` next to the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"
    return Path(os.environ.get("NUCLEIWEAK_DATA", default))


def split_names(root, split):
    """Image names of ``split`` in ``split.json``."""
    return json.loads((Path(root) / "split.json").read_text())[split]


def load(root, name):
    """``(image uint8 (H, W, 3), instance map (H, W), bbox-centre points (N, 2) (x, y))``."""
    image = read_image(Path(root) / "images" / f"{name}.png")
    inst = read_label(Path(root) / "labels" / f"{name}.png")
    return image, inst, points_from_labels(inst, mode="bbox_center")[1]


KINDS = ("voronoi", "cluster", "adaptive", "geo_voronoi", "geo_cluster", "donuseg", "ext_gaussian")


def make(kind, image, points, args):
    """Return ``(nucleus_mask, background_mask)`` of one label kind."""
    shape = image.shape[:2]
    if kind == "voronoi":
        lab = pl.voronoi_label(points, shape)
    elif kind == "cluster":
        lab = pl.cluster_label(image, points)
    elif kind == "adaptive":
        lab = pl.adaptive_cluster_label(image, points)
    elif kind in ("geo_voronoi", "geo_cluster"):
        if "labels" not in make.cache:  # both geodesic labels from one transform
            make.cache["labels"] = pl.geodesic_labels(
                image, points, beta=args.beta, d_max=args.geo_dmax, smooth_sigma=args.smooth
            )
        lab = make.cache["labels"][0 if kind == "geo_voronoi" else 1]
    elif kind == "donuseg":
        lab = pl.donuseg_initial_label(points, shape)
    elif kind == "ext_gaussian":
        target, weight = pl.extended_gaussian_target(points, shape)
        return target > 0, (weight == 1) & (target == 0)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return lab == pl.NUCLEUS, lab == pl.BACKGROUND


make.cache = {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(data_root()))
    parser.add_argument("--split", default="train")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--beta", type=float, default=40.0, help="geodesic colour weight")
    parser.add_argument("--geo-dmax", type=float, default=70.0, help="geodesic distance clip")
    parser.add_argument("--smooth", type=float, default=1.0, help="geodesic smoothing sigma")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "split.json").is_file():
        print(f"MoNuSeg not found at {root}; nothing to do")
        return 0
    names = split_names(root, args.split)
    if args.limit:
        names = names[: args.limit]
    stats = {k: np.zeros(5) for k in args.kinds}  # nuc, nuc_ok, bg, bg_ok, total
    t0 = time.perf_counter()
    for name in names:
        image, inst, points = load(root, name)
        gt = inst > 0
        make.cache.clear()
        for kind in args.kinds:
            nuc, bg = make(kind, image, points, args)
            stats[kind] += [nuc.sum(), (nuc & gt).sum(), bg.sum(), (bg & ~gt).sum(), gt.size]
    print(
        f"MoNuSeg {args.split}: {len(names)} images, 100 % bbox-centre points, "
        f"{time.perf_counter() - t0:.1f} s"
    )
    print(
        f"{'kind':<14}{'nucleus prec':>13}{'bg prec':>10}{'labelled':>10}"
        f"{'nucleus %':>11}{'bg %':>8}"
    )
    for kind, (n, n_ok, b, b_ok, tot) in stats.items():
        print(
            f"{kind:<14}{n_ok / max(n, 1):>13.4f}{b_ok / max(b, 1):>10.4f}"
            f"{(n + b) / tot:>10.4f}{100 * n / tot:>11.2f}{100 * b / tot:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
