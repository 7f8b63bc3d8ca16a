#!/usr/bin/env python
"""Demo: Qu et al.'s pipeline end to end on a freshly generated synthetic dataset (CPU, minutes).

Generates synthetic H&E-like tiles, exports COCO files with the training points (a click on
every nucleus by default; ``--ratio 0.1`` for the paper's partial points; val and test keep
every point for evaluation), registers them, runs the whole
pipeline (detection, merge, pseudo-labels, segmentation, CRF fine-tuning, post-processing
chosen on val, evaluation), scores the no-learning baseline on the same test split (its split
distance and minimum area chosen on the same val split), predicts the test images with the
trained model and writes

- ``<out>/demo_metrics.json`` and a printed table: the trained model beside the baseline
  (detection P/R/F1, pixel Acc/F1, object Dice, AJI on the test split);
- ``<out>/overlays/<image>.png``: image | ground-truth outlines | predicted outlines;
- ``<out>/predictions/``: what ``tools/predict.py`` writes for the test images: instance label
  PNGs, overlays, QuPath GeoJSON (``*_nuclei.geojson``) and per-nucleus CSV (``*_nuclei.csv``).

Measured on the 2-core CPU of the development machine with nothing else running (defaults,
``./run demo``): 4.5 min wall, test AJI 0.601 against 0.526 for the baseline. With
``--ratio 0.1`` the margin is small and noisy at this budget (+0.004 to +0.058 in three runs);
see ``docs/RECIPE.md`` (the demo section).

Example::

    python tools/demo.py --out output/demo
    python tools/demo.py --out output/demo --resume        # reuse finished stages
    python tools/demo.py --out output/demo_fast --opts NUCLEIWEAK.QU2020.SEG.MAX_ITER 300
"""

import argparse
import json
import sys
import time
from pathlib import Path

DATASETS = ("nucleiweak_synthetic_train", "nucleiweak_synthetic_val", "nucleiweak_synthetic_test")
CLASSICAL_CONFIG = str(Path(__file__).resolve().parents[1] / "configs/classical/synthetic.yaml")
ROWS = (
    ("det_P", "detection precision"),
    ("det_R", "detection recall"),
    ("det_F1", "detection F1"),
    ("pixel_acc", "pixel accuracy"),
    ("pixel_F1", "pixel F1"),
    ("Dice_obj", "object Dice"),
    ("AJI", "AJI"),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="output/demo", help="output folder")
    p.add_argument("--config-file", default="configs/qu2020/R18_synthetic.yaml")
    p.add_argument(
        "--n-images", type=int, default=32, help="synthetic tiles (train/val/test 50/25/25 %%)"
    )
    p.add_argument("--size", type=int, default=256, help="tile side in pixels")
    p.add_argument(
        "--ratio",
        type=float,
        default=1.0,
        help="fraction of training points labelled (1: a click on every nucleus; 0.1: Qu et al.'s "
        "partial setting, which needs a longer run than the demo's to beat the baseline clearly)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch CPU threads (2: both cores of a 2-core machine; 1 is faster on a CPU "
        "shared with other jobs)",
    )
    p.add_argument("--resume", action="store_true", help="keep finished stages of a previous run")
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ..."
    )
    return p.parse_args(argv)


def prepare_data(out, n_images, size, ratio, seed):
    """Synthetic folder dataset + COCO files (partial points on train only), registered."""
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.datasets import register_nuclei_dataset
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    root = out / "data"
    if not (root / "split.json").is_file():
        make_synthetic_dataset(root, n_images=n_images, size=(size, size), seed=seed)
    files = export_coco_splits(
        root,
        out / "coco",
        ratio=ratio,
        seed=seed,
        weak_splits=["train"],
        splits=["train", "val", "test"],
        overwrite=True,
    )
    for name, split in zip(DATASETS, ("train", "val", "test")):
        register_nuclei_dataset(name, files[split], root)
    return root


def table(summaries, dataset):
    """One column per ``(name, summary)``: detection and segmentation metrics of ``dataset``."""
    lines = [f"{'metric':<22}" + "".join(f"{name:>14}" for name, _ in summaries)]
    lines.append("-" * len(lines[0]))
    for key, label in ROWS:
        cells = []
        for _, summary in summaries:
            det = summary.get("detection", {}).get(dataset, {})
            seg = summary.get("segmentation", {}).get(dataset, {}).get("nuclei", {})
            value = det.get(key, seg.get(key))
            cells.append(f"{value:>14.4f}" if value is not None else f"{'n/a':>14}")
        lines.append(f"{label:<22}" + "".join(cells))
    return "\n".join(lines)


def run_classical(out, args):
    """The no-learning baseline on the test split, its split distance and minimum area chosen
    on val (:func:`select_classical_settings`); returns ``(summary, settings)``."""
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.data.io import read_image
    from nucleiweak_d2.methods.classical import (
        NucleiWeakClassicalPipeline,
        NucleiWeakClassicalSegmentor,
        select_classical_settings,
    )

    cfg = setup_cfg(
        CLASSICAL_CONFIG,
        ["OUTPUT_DIR", str(out / "classical"), "NUCLEIWEAK.EVAL_DATASETS", f"['{DATASETS[2]}']"],
    )
    base = NucleiWeakClassicalSegmentor.from_config(cfg)["segment_args"]  # the config's steps
    settings = select_classical_settings(DatasetCatalog.get(DATASETS[1]), read_image, base)
    cfg.defrost()
    c = cfg.NUCLEIWEAK.CLASSICAL
    c.MIN_DISTANCE, c.MIN_AREA = settings["min_distance"], settings["min_area"]
    cfg.freeze()
    return NucleiWeakClassicalPipeline(cfg, resume=args.resume).run(), settings


def write_predictions(out, args, weights):
    """``tools/predict.py`` on the test images: labels, overlays, GeoJSON, CSV."""
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.api import run_tool

    inputs = out / "test_images"
    inputs.mkdir(parents=True, exist_ok=True)
    for record in DatasetCatalog.get(DATASETS[2]):
        link = inputs / Path(record["file_name"]).name
        if not link.exists():
            link.symlink_to(Path(record["file_name"]).resolve())
    folder = out / "predictions"
    argv = ["--config-file", args.config_file, "--input", str(inputs), "--output", str(folder)]
    argv += ["--outputs", "labels,overlay,geojson,csv", "--overwrite"]
    argv += ["--opts", *args.opts, "MODEL.WEIGHTS", str(weights)]
    code = run_tool("predict", argv)
    if code != 0:
        raise RuntimeError(f"tools/predict.py exited with code {code}")
    return folder


def write_overlays(out, eval_dir, dataset):
    """image | GT outlines | prediction outlines, one PNG per test image."""
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.data.io import read_image, read_label, write_image
    from nucleiweak_d2.data.overlay import draw_outlines
    from nucleiweak_d2.data.records import cache_key
    from nucleiweak_d2.evaluation.ground_truth import gt_label_map
    from nucleiweak_d2.methods.qu2020.artifacts import side_by_side

    folder = out / "overlays"
    written = []
    for record in DatasetCatalog.get(dataset):
        pred_file = eval_dir / dataset / "pred" / f"{cache_key(record)}.png"
        if not pred_file.is_file():
            continue
        image = read_image(record["file_name"])
        gt, pred = gt_label_map(record), read_label(pred_file)
        picture = side_by_side(
            image,
            draw_outlines(image, gt, color=(0, 200, 0), mode="thick"),
            draw_outlines(image, pred, color=(230, 0, 230), mode="thick"),
        )
        path = folder / f"{Path(record['file_name']).stem}.png"
        write_image(path, picture)
        written.append(path)
    return written


def main(argv=None):
    args = parse_args(argv)
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine import entry_setup
    from nucleiweak_d2.methods.qu2020 import NucleiWeakQu2020Pipeline

    out = Path(args.out).resolve()
    entry_setup(out, threads=args.threads)
    start = time.time()
    prepare_data(out, args.n_images, args.size, args.ratio, args.seed)
    cfg = setup_cfg(
        args.config_file,
        [
            "DATASETS.TRAIN",
            f"('{DATASETS[0]}',)",
            "DATASETS.TEST",
            f"('{DATASETS[1]}',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            f"['{DATASETS[2]}']",
            "OUTPUT_DIR",
            str(out / "pipeline"),
            "SEED",
            str(args.seed),
            *args.opts,
        ],
    )
    summary = NucleiWeakQu2020Pipeline(cfg, resume=args.resume).run()
    classical, settings = run_classical(out, args)
    overlays = write_overlays(out, out / "pipeline" / "eval", DATASETS[2])
    predictions = write_predictions(out, args, summary["weights"])
    elapsed = time.time() - start
    learned_aji = summary["segmentation"][DATASETS[2]]["nuclei"]["AJI"]
    classical_aji = classical["segmentation"][DATASETS[2]]["nuclei"]["AJI"]
    metrics_file = out / "demo_metrics.json"
    metrics_file.write_text(
        json.dumps(
            {
                "wall_time_s": elapsed,
                "cpu_time_s": time.process_time(),
                "config": args.config_file,
                "ratio": args.ratio,
                "n_images": args.n_images,
                "size": args.size,
                "seed": args.seed,
                **summary,
                "classical": {"settings_chosen_on_val": settings, **classical},
            },
            indent=1,
        )
    )
    print(
        f"\nQu et al. (TMI 2020) on synthetic data, test split ({args.ratio:.0%} training points, "
        f"{elapsed / 60:.1f} min wall, {time.process_time() / 60:.1f} CPU-min), beside the "
        f"no-learning baseline (min_distance {settings['min_distance']}, min_area "
        f"{settings['min_area']}, chosen on val):"
    )
    print(table([("Qu et al.", summary), ("no learning", classical)], DATASETS[2]))
    verdict = "beats" if learned_aji > classical_aji else "does NOT beat"
    print(
        f"\nThe trained model {verdict} the no-learning baseline: AJI {learned_aji:.4f} vs "
        f"{classical_aji:.4f} ({learned_aji - classical_aji:+.4f})."
    )
    print(f"\nmetrics JSON : {metrics_file}")
    print(
        f"overlays     : {out / 'overlays'} ({len(overlays)} PNGs: image | ground truth | prediction)"
    )
    print(
        f"predictions  : {predictions} (instance labels, overlays, QuPath GeoJSON "
        f"*_nuclei.geojson, per-nucleus CSV *_nuclei.csv)"
    )
    print(f"final model  : {summary['weights']}")
    print(f"stage outputs: {out / 'pipeline'}")
    return 0


if __name__ == "__main__":
    from nucleiweak_d2.cli import run_cli

    sys.exit(run_cli(main))
