#!/usr/bin/env python
"""Time the COCO export of the whole MoNuSeg folder (all ratios, seed 0) and print statistics.

Usage::

    python benchmarks/bench_prepare_monuseg.py [--data ../shared/data/monuseg_mo] [--shift 0]

Writes into a temporary folder that is deleted afterwards. Prints the wall time per ratio and
in total, nuclei per image, and labelled points per ratio (all splits, and train only).
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from nucleiweak_d2.data.coco import export_coco_splits
from nucleiweak_d2.data.folder import list_splits

RATIOS = (0.05, 0.1, 0.25, 0.5, 1.0)
DEFAULT = Path(
    os.environ.get(
        "NUCLEIWEAK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"
    )
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--shift", default="0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.data / "images").is_dir():
        raise SystemExit(f"no dataset at {args.data}")
    splits = [s for s in list_splits(args.data) if s in ("train", "val", "test")] or None
    total_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in RATIOS:
            start = time.perf_counter()
            written = export_coco_splits(
                args.data,
                Path(tmp) / str(ratio),
                ratio=ratio,
                shift=args.shift,
                seed=args.seed,
                splits=splits,
            )
            elapsed = time.perf_counter() - start
            per_image, labelled, train_labelled = [], 0, 0
            for split, path in written.items():
                content = json.loads(path.read_text())
                counts = {im["id"]: 0 for im in content["images"]}
                for ann in content["annotations"]:
                    counts[ann["image_id"]] += 1
                    labelled += ann["point_labeled"]
                    train_labelled += ann["point_labeled"] if split == "train" else 0
                per_image.extend(counts.values())
            rows.append((ratio, elapsed, labelled, train_labelled))
    total = time.perf_counter() - total_start
    per_image = np.asarray(per_image)
    print(
        f"dataset: {args.data} ({len(per_image)} images, splits {splits}), shift {args.shift}, "
        f"seed {args.seed}"
    )
    print(
        f"nuclei per image: mean {per_image.mean():.1f}, median {np.median(per_image):.0f}, "
        f"min {per_image.min()}, max {per_image.max()}, total {per_image.sum()}"
    )
    print("ratio  seconds  labelled(all splits)  labelled(train)")
    for ratio, elapsed, labelled, train_labelled in rows:
        print(f"{ratio:5.2f}  {elapsed:7.2f}  {labelled:20d}  {train_labelled:15d}")
    print(f"total export time, {len(RATIOS)} ratios: {total:.2f} s")


if __name__ == "__main__":
    main()
