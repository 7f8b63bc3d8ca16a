"""Speed of the pseudo-label generators on one 1000x1000 MoNuSeg image (about 500 points).

Targets: Voronoi label <= 0.1 s, cluster label <= 1 s, geodesic Voronoi + cluster
<= 2 s. Prints the median and the best wall time of ``--repeats`` runs after one warm-up run,
and the median CPU time of the process (all generators run single-threaded, so on an idle
machine CPU time and wall time agree; on a loaded machine the CPU time is the fairer figure).

    .venv/bin/python benchmarks/bench_pseudo_labels.py [--name TCGA-...] [--repeats 5]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pseudo_label_quality import data_root, load  # noqa: E402

from nucleiweak_d2 import pseudo_labels as pl  # noqa: E402

# A MoNuSeg training image with about 500 nuclei (479 bounding-box-centre points).
DEFAULT_NAME = "TCGA-18-5592-01Z-00-DX1"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(data_root()))
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "split.json").is_file():
        print(f"MoNuSeg not found at {root}; nothing to do")
        return 0
    image, _, points = load(root, args.name)
    shape = image.shape[:2]
    print(f"{args.name}: {shape[1]}x{shape[0]}, {len(points)} points")
    cases = [
        ("voronoi_label", lambda: pl.voronoi_label(points, shape), 0.1),
        ("cluster_label", lambda: pl.cluster_label(image, points), 1.0),
        ("adaptive_cluster_label", lambda: pl.adaptive_cluster_label(image, points), None),
        ("geodesic voronoi + cluster", lambda: pl.geodesic_labels(image, points), 2.0),
        ("extended_gaussian_target", lambda: pl.extended_gaussian_target(points, shape), None),
        ("donuseg_initial_label", lambda: pl.donuseg_initial_label(points, shape), None),
        ("center_heatmap", lambda: pl.center_heatmap(points, shape), None),
    ]
    print(f"{'generator':<28}{'median s':>10}{'best s':>9}{'cpu s':>8}{'target s':>10}")
    for name, fn, target in cases:
        fn()  # warm-up (imports, thread pools)
        wall, cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        tgt = f"{target:.1f}" if target else "-"
        print(
            f"{name:<28}{statistics.median(wall):>10.3f}{min(wall):>9.3f}"
            f"{statistics.median(cpu):>8.3f}{tgt:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
