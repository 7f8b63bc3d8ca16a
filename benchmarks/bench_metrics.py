"""Time the nuclei metrics on a 1000x1000 pair with about 700 nuclei each.

Usage::

    python benchmarks/bench_metrics.py [--repeats 5] [--real]

Prints the median wall time (``time.perf_counter``) of ``segmentation_metrics`` (all segmentation metrics from one
contingency table), of the detection metrics, of their sum (the target is <= 0.2 s on the
project's CPU) and, separately, of the opt-in object Hausdorff distance. ``--real`` also times
MoNuSeg ground truth (from $NUCLEIWEAK_DATA or ../shared/data/monuseg_mo) against a perturbed
copy of itself.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from nucleiweak_d2.data.points import points_from_labels
from nucleiweak_d2.evaluation.hausdorff import object_hausdorff
from nucleiweak_d2.evaluation.metrics import detection_metrics, segmentation_metrics


def synthetic_pair(size=1000, grid=27, seed=0):
    """GT: ~grid^2 disks on a jittered grid; pred: shifted, resized, 5% dropped, 5% added."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    step = size / grid
    gt = np.zeros((size, size), np.int32)
    pred = np.zeros((size, size), np.int32)
    n = 0
    for gy in range(grid):
        for gx in range(grid):
            cy, cx = (gy + 0.5) * step + rng.uniform(-6, 6), (gx + 0.5) * step + rng.uniform(-6, 6)
            r = rng.uniform(7, 14)
            n += 1
            box = (
                slice(max(int(cy - r - 4), 0), int(cy + r + 5)),
                slice(max(int(cx - r - 4), 0), int(cx + r + 5)),
            )
            d2 = (yy[box] - cy) ** 2 + (xx[box] - cx) ** 2
            gt[box][d2 <= r * r] = 1000 + 3 * n  # non-contiguous ids
            if rng.random() > 0.05:
                py, px = cy + rng.normal(0, 1.5), cx + rng.normal(0, 1.5)
                pr = r + rng.normal(0, 1.5)
                d2 = (yy[box] - py) ** 2 + (xx[box] - px) ** 2
                pred[box][d2 <= pr * pr] = 7 * n
            if rng.random() < 0.05:  # a false positive between nuclei
                fy, fx = cy + step / 2, cx + step / 2
                fb = (
                    slice(max(int(fy - 8), 0), int(fy + 8)),
                    slice(max(int(fx - 8), 0), int(fx + 8)),
                )
                pred[fb][((yy[fb] - fy) ** 2 + (xx[fb] - fx) ** 2) <= 25] = 50000 + n
    return gt, pred


def _points(label):
    """Bounding-box centres (x, y) of the nuclei, as the evaluator computes them."""
    return points_from_labels(label, mode="bbox_center")[1].astype(np.float64)


def timeit(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name, gt, pred, repeats):
    gp, pp = _points(gt), _points(pred)
    seg = timeit(lambda: segmentation_metrics(gt, pred), repeats)
    det = timeit(lambda: detection_metrics(gp, pp, 11.0), repeats)
    det_h = timeit(lambda: detection_metrics(gp, pp, 11.0, "hungarian"), repeats)
    haus = timeit(lambda: object_hausdorff(gt, pred), repeats)
    every = timeit(
        lambda: (segmentation_metrics(gt, pred, hausdorff=True), detection_metrics(gp, pp, 11.0)),
        repeats,
    )
    print(
        f"[{name}] {gt.shape[0]}x{gt.shape[1]}, {len(np.unique(gt)) - 1} gt / "
        f"{len(np.unique(pred)) - 1} pred nuclei (median of {repeats})"
    )
    print(f"  segmentation_metrics (AJI, AJI+, Dice_obj, pixel, PQ, mAP, NCS): {seg:.4f} s")
    print(f"  detection_metrics greedy:                                      {det:.4f} s")
    print(f"  detection_metrics hungarian:                                   {det_h:.4f} s")
    print(f"  all default metrics together (seg + greedy det):               {seg + det:.4f} s")
    print(f"  object_hausdorff (opt-in):                                     {haus:.4f} s")
    print(f"  everything incl. Hausdorff (one table):                        {every:.4f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real", action="store_true", help="also time MoNuSeg labels")
    args = parser.parse_args()
    gt, pred = synthetic_pair()
    segmentation_metrics(gt, pred)  # warm-up (imports, caches)
    bench("synthetic", gt, pred, args.repeats)
    if args.real:
        root = Path(
            os.environ.get(
                "NUCLEIWEAK_DATA",
                Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo",
            )
        )
        files = sorted((root / "labels").glob("*.png"))
        if not files:
            print(f"no labels under {root}; skipping --real")
            return
        from nucleiweak_d2.data.io import read_label

        gt = read_label(files[0])
        rng = np.random.default_rng(0)
        perm = np.concatenate([[0], rng.permutation(int(gt.max())) + 1]).astype(np.int32)
        pred = np.roll(perm[gt], (1, 2), axis=(0, 1))
        bench(files[0].name, gt, pred, args.repeats)


if __name__ == "__main__":
    main()
