"""Re-score a finished Feng et al. run at other inference settings: val and test AJI of each.

For a ``feng2019`` benchmark run (``<run>`` = ``runs/feng2019_r*_seed*``, which keeps its
periodic checkpoints in ``train/``): the model of ``model_final.yaml`` / ``model_final.pth``
(or, with ``--average N``, the mean of the last N periodic checkpoints,
:mod:`nucleiweak_d2.engine.checkpoint_average`) at a box NMS threshold and a minimum detection
score (``MODEL.ROI_HEADS.NMS_THRESH_TEST`` / ``SCORE_THRESH_TEST``), its instance map painted
with every instance score threshold x overlap rule of the grid. One inference per image; the
mean per-image AJI on val and test is printed for every pair, the val-best pair marked. A
probe for choosing what the pipeline selects on val (docs/methods/feng2019.md); it decides
nothing itself.

    .venv/bin/python benchmarks/feng2019_rescore_run.py RUN [--average N] [--nms 0.5]
        [--score-test 0.05] [--data DIR]

About 5-15 CPU-minutes a run (18 MoNuSeg images).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# (overlap rule, overlap fraction) and instance score thresholds of the painted map
OVERLAPS = (("score", 0.5), ("mask_nms", 0.5), ("mask_nms", 0.3), ("mask_nms", 0.2))
SCORE_THRESHOLDS = (0.0, 0.1, 0.2, 0.3)


def main(argv=None):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from recalibrate_run import data_root, records

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a feng2019 run folder (OUTPUT_DIR)")
    parser.add_argument("--average", type=int, default=0, help="mean of the last N checkpoints")
    parser.add_argument("--nms", type=float, default=0.5, help="ROI_HEADS.NMS_THRESH_TEST")
    parser.add_argument("--score-test", type=float, default=0.05, help="SCORE_THRESH_TEST")
    parser.add_argument("--data", default=None, help="folder dataset (default MoNuSeg/MO)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    root = Path(args.data) if args.data else data_root()
    for f in (run / "model_final.yaml", run / "model_final.pth", root / "split.json"):
        if not f.is_file():
            print(f"error: {f} not found", file=sys.stderr)
            return 2

    import torch

    from nucleiweak_d2.api import load_predictor
    from nucleiweak_d2.engine.checkpoint_average import last_periodic_checkpoints, load_average
    from nucleiweak_d2.evaluation.ground_truth import gt_label_map
    from nucleiweak_d2.evaluation.metrics import aji
    from nucleiweak_d2.evaluation.outputs import output_instance_map

    torch.set_num_threads(1)
    opts = ["MODEL.ROI_HEADS.NMS_THRESH_TEST", str(args.nms)]
    opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score_test)]
    pred = load_predictor(run / "model_final.yaml", run / "model_final.pth", opts=opts)
    source = "model_final.pth"
    if args.average > 1:
        try:
            found = last_periodic_checkpoints(run / "train", args.average)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        pred.model.load_state_dict(load_average(found))
        source = "mean of " + ", ".join(p.name for p in found)
    grid = [(o, t) for o in OVERLAPS for t in SCORE_THRESHOLDS]
    scores = {}
    for split in ("val", "test"):
        per = {g: [] for g in grid}
        for r in records(root, split):
            out, gt = pred.run_model(r["image"]), gt_label_map(r)
            for (rule, frac), t in grid:
                label = output_instance_map(out, score_thresh=t, overlap=rule, overlap_thresh=frac)
                per[((rule, frac), t)].append(aji(gt, label))
            del out
        scores[split] = {g: float(np.mean(v)) for g, v in per.items()}
    best = max(grid, key=lambda g: scores["val"][g])  # first on ties
    print(f"{run} ({source}; box NMS {args.nms}, SCORE_THRESH_TEST {args.score_test})")
    print(f"{'overlap':<14} {'score thr':>9} {'val AJI':>8} {'test AJI':>9}")
    for g in grid:
        (rule, frac), t = g
        name = rule if rule == "score" else f"{rule} {frac:g}"
        mark = "  <- val best" if g == best else ""
        print(f"{name:<14} {t:>9g} {scores['val'][g]:>8.4f} {scores['test'][g]:>9.4f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
