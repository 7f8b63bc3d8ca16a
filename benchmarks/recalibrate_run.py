"""Re-choose a trained segmentor's post-processing on val with today's calibration; score test.

For runs made before the calibration grid grew (threshold only, or none): loads a stage's
model (``<run>/<stage>/config.yaml`` + ``model_best.pth``), runs
:func:`nucleiweak_d2.engine.calibration.calibrate_fg_threshold` on the val split of a folder
dataset, and prints the chosen threshold / split distance with their val AJI, then the mean
per-image test AJI and object Dice with that choice and with the argmax (0.5, no split). Val
alone decides; test is only scored. The recalibrated weights are not written.

    .venv/bin/python benchmarks/recalibrate_run.py RUN_DIR [--stage crf] [--data DIR]
        [--val val] [--test test] [--opts KEY VALUE ...]

``--opts`` overrides the stage's config, e.g. ``NUCLEIWEAK.UNET.TEST_FLIPS 8`` to measure
test-time flips on a trained model (the threshold and split distance are chosen again on val
with them).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def data_root():
    """MoNuSeg folder: ``$NUCLEIWEAK_DATA`` or ``../shared/data/monuseg_mo`` next to the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"
    return Path(os.environ.get("NUCLEIWEAK_DATA", default))


def records(root, split):
    """``[{"name", "image", "label_path"}]`` of ``split`` in ``root/split.json``."""
    from nucleiweak_d2.data.io import read_image

    names = json.loads((root / "split.json").read_text()).get(split)
    if names is None:
        raise ValueError(f"split {split!r} is not in {root / 'split.json'}")
    out = []
    for name in names:
        image = next((root / "images").glob(f"{name}.*"))
        label = next((root / "labels").glob(f"{name}.*"))
        # "label_path": the key gt_label_map reads for folder samples
        out.append({"name": name, "image": read_image(image), "label_path": str(label)})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a pipeline's OUTPUT_DIR")
    parser.add_argument("--stage", default="crf", help="stage folder holding the model")
    parser.add_argument("--data", default=None, help="folder dataset (default MoNuSeg/MO)")
    parser.add_argument("--val", default="val")
    parser.add_argument("--test", default="test")
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    root = Path(args.data) if args.data else data_root()
    stage = Path(args.run) / args.stage
    for f in (root / "split.json", stage / "config.yaml", stage / "model_best.pth"):
        if not f.is_file():
            print(f"error: {f} not found", file=sys.stderr)
            return 2

    import torch

    from nucleiweak_d2.api import load_predictor
    from nucleiweak_d2.engine.calibration import calibrate_fg_threshold
    from nucleiweak_d2.evaluation.ground_truth import gt_label_map
    from nucleiweak_d2.evaluation.metrics import aji, object_dice
    from nucleiweak_d2.modeling.meta_arch.postprocess import instances_from_foreground

    torch.set_num_threads(1)
    t0 = time.time()
    predictor = load_predictor(
        stage / "config.yaml", stage / "model_best.pth", device="cpu", opts=args.opts
    )
    model = predictor.model
    val = records(root, args.val)
    info = calibrate_fg_threshold(model, val, lambda r: predictor.run_model(r["image"]))
    t, d = info["fg_threshold"], info["split_distance"]
    print(
        f"val ({len(val)} images): threshold {t}, split distance {d}: AJI "
        f"{info['val_aji'][f'{t}/{d}']:.4f}; argmax without split "
        f"{info['val_aji'].get('0.5/0', float('nan')):.4f}"
    )
    chosen, argmax, dice = [], [], []
    for r in records(root, args.test):
        prob = predictor.run_model(r["image"])["prob"].float().cpu().numpy()
        gt = gt_label_map(r)
        label = instances_from_foreground(prob > t, model.min_area, model.fill_holes, d > 0, d)
        chosen.append(aji(gt, label))
        dice.append(object_dice(gt, label))
        plain = instances_from_foreground(prob > 0.5, model.min_area, model.fill_holes)
        argmax.append(aji(gt, plain))
    print(
        f"{args.test} ({len(chosen)} images): AJI {np.mean(chosen):.4f}, Dice_obj "
        f"{np.mean(dice):.4f} with the val choice; AJI {np.mean(argmax):.4f} with the argmax "
        f"({time.time() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
