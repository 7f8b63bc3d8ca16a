#!/usr/bin/env python
"""Qu et al. (TMI 2020) on MoNuSeg/MO with 10 % points: full pipeline, scores beside the paper.

Protocol (docs/PROTOCOL.md): train split with 10 % of the points (bounding-box centres,
seed 0), val split for model selection (full GT points for the detection F1 / AJI used to pick
checkpoints), test (and testA / testB) for the reported scores. The data folder is read in
place (never copied); COCO files and all outputs go under ``--out``.

Budget: ``--config-file configs/qu2020/R18_monuseg_p10_cpu.yaml`` (default) is the CPU-budget
variant (about 2 CPU hours on 2 cores, see that file); ``configs/qu2020/R34_monuseg_p10.yaml``
is the paper's schedule (GPU scale). ``--opts`` overrides config keys (e.g. shorter schedules).

Example::

    python benchmarks/qu2020_monuseg.py --out output/bench_qu2020_mo
    python benchmarks/qu2020_monuseg.py --out output/bench_short --opts \\
        NUCLEIWEAK.QU2020.DET.MAX_ITER 100 NUCLEIWEAK.QU2020.SEG.MAX_ITER 150

Prints a table: ours vs. the paper's 10 % rows (Table II detection P/R/F1 at radius 11,
Table III pixel accuracy, pixel F1, object Dice, AJI) and writes ``<out>/benchmark.json``.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER = {
    "det_P": 0.8238,
    "det_R": 0.8328,
    "det_F1": 0.8282,
    "pixel_acc": 0.8997,
    "pixel_F1": 0.7490,
    "Dice_obj": 0.7033,
    "AJI": 0.5031,
}
NAMES = {
    "det_P": "detection precision",
    "det_R": "detection recall",
    "det_F1": "detection F1",
    "pixel_acc": "pixel accuracy",
    "pixel_F1": "pixel F1",
    "Dice_obj": "object Dice",
    "AJI": "AJI",
}
SPLITS = ("train", "val", "test", "testA", "testB")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "monuseg_mo"))
    p.add_argument("--out", default="output/bench_qu2020_monuseg")
    p.add_argument("--config-file", default=str(REPO / "configs/qu2020/R18_monuseg_p10_cpu.yaml"))
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is far faster on a shared, oversubscribed CPU)",
    )
    p.add_argument("--resume", action="store_true")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[])
    return p.parse_args(argv)


def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def register(data, out, ratio, seed):
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.datasets import register_nuclei_dataset

    tag = f"monuseg_mo_p{round(ratio * 100):d}"
    files = export_coco_splits(
        data,
        out / "coco",
        ratio=ratio,
        seed=seed,
        weak_splits=["train"],
        splits=list(SPLITS),
        overwrite=True,
    )
    for split in SPLITS:
        register_nuclei_dataset(f"{tag}_{split}", files[split], data)
    return tag


def main(argv=None):
    args = parse_args(argv)
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine import entry_setup
    from nucleiweak_d2.methods.qu2020 import NucleiWeakQu2020Pipeline

    out = Path(args.out).resolve()
    entry_setup(out, threads=args.threads)
    wall0, cpu0 = time.time(), cpu_seconds()
    tag = register(Path(args.data), out, args.ratio, args.seed)
    cfg = setup_cfg(
        args.config_file,
        [
            "DATASETS.TRAIN",
            f"('{tag}_train',)",
            "DATASETS.TEST",
            f"('{tag}_val',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            f"['{tag}_test', '{tag}_testA', '{tag}_testB']",
            "OUTPUT_DIR",
            str(out / "pipeline"),
            "SEED",
            str(args.seed),
            *args.opts,
        ],
    )
    summary = NucleiWeakQu2020Pipeline(cfg, resume=args.resume).run()
    wall, cpu = time.time() - wall0, cpu_seconds() - cpu0

    test = f"{tag}_test"
    # segmentation metrics, then the detector's P/R/F1 (the segmentation evaluator also reports
    # det_* from instance centres; the paper's Table II is the detector's).
    ours = dict(summary["segmentation"].get(test, {}).get("nuclei", {}))
    ours.update(summary["detection"].get(test, {}))
    lines = [
        f"Qu et al. 2020 on MoNuSeg/MO test ({args.ratio:.0%} points, seed {args.seed}); "
        f"config {Path(args.config_file).name}; wall {wall / 60:.1f} min, CPU {cpu / 3600:.2f} h",
        f"{'metric':<22}{'ours':>8}{'paper':>8}{'diff':>8}",
        "-" * 46,
    ]
    for key, paper in PAPER.items():
        v = ours.get(key)
        lines.append(
            f"{NAMES[key]:<22}{v:>8.4f}{paper:>8.4f}{v - paper:>+8.4f}"
            if v is not None
            else f"{NAMES[key]:<22}{'n/a':>8}{paper:>8.4f}"
        )
    text = "\n".join(lines)
    print(text)
    (out / "benchmark.json").write_text(
        json.dumps(
            {
                "config": args.config_file,
                "opts": args.opts,
                "ratio": args.ratio,
                "seed": args.seed,
                "wall_s": wall,
                "cpu_s": cpu,
                "paper": PAPER,
                "ours_test": ours,
                "all": summary,
            },
            indent=1,
        )
    )
    print(f"written: {out / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
