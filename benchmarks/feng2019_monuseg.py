#!/usr/bin/env python
"""Feng et al. 2019 on MoNuSeg (MO): baseline vs partial-annotation Mask R-CNN, equal time budget.

Trains on ``train`` (12 images) where only ``--ratio`` (25 %) of the instances keep their masks
(``annotation="partial_mask"``; the rest of each image is unannotated), and scores on ``test``
(14 images, every instance). Models (``--models``):

- ``baseline``: Mask R-CNN (configs/feng2019/mask_rcnn_R_18_FPN_baseline.yaml) on the partial data;
  unannotated nuclei are background for it;
- ``partial``: the Feng et al. model (mask_rcnn_R_18_FPN_partial.yaml) on the same data;
- ``baseline_full``: the baseline on 100 % of the instances (the paper's reference).

Each model trains for ``--budget-minutes`` of wall time (constant learning rate, as the paper)
on this machine's CPU, from scratch (no pretrained weights can be downloaded here), with the
CPU-sized overrides ``CPU_OPTS`` (R-18, 64-channel FPN, 256x256 crops, batch 2), then is
evaluated on full 1000x1000 test images. Printed per model: precision and recall at IoU 0.5
(NucleiEvaluator's obj_P / obj_R: unique IoU > 0.5 matches, counts summed over images), AJI, Kaggle mAP, NCS (per-image means, from
NucleiEvaluator), COCO segm and bbox AP (COCOEvaluator), and the point-detection P/R of
NucleiEvaluator (radius 11 px). Results go to ``<out>/results.json``.

Example (the budget is stated with every published figure)::

    .venv/bin/python benchmarks/feng2019_monuseg.py --budget-minutes 10 --out /tmp/feng2019_bench
"""

import argparse
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "baseline": REPO / "configs/feng2019/mask_rcnn_R_18_FPN_baseline.yaml",
    "partial": REPO / "configs/feng2019/mask_rcnn_R_18_FPN_partial.yaml",
    "baseline_full": REPO / "configs/feng2019/mask_rcnn_R_18_FPN_baseline.yaml",
}
# CPU-sized overrides applied to every model (same for all, so the comparison stays fair);
# trailing KEY VALUE arguments override them.
CPU_OPTS = [
    "SOLVER.IMS_PER_BATCH", "2", "NUCLEIWEAK.DATA.CROP_SIZE", "[256, 256]", "SOLVER.WARMUP_ITERS", "20",
    "DATALOADER.NUM_WORKERS", "1", "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "256",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "256",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "500", "NUCLEIWEAK.FENG2019.CENTERNESS_CONV_DIM", "64",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared/data/monuseg_mo"), help="MoNuSeg folder")
    p.add_argument("--out", default="/tmp/feng2019_monuseg", help="output folder (outside the repo)")
    p.add_argument("--models", nargs="+", default=["baseline", "partial"], choices=sorted(CONFIGS))
    p.add_argument("--budget-minutes", type=float, default=120.0, help="training wall time per model")
    p.add_argument("--ratio", type=float, default=0.25, help="fraction of train instances annotated")
    p.add_argument("--seed", type=int, default=0, help="seed of the annotation subset and training")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides KEY VALUE ...")
    return p.parse_args(argv)


def prepare_data(data, out, ratio, seed, eval_split):
    """Export train (partial masks) and eval split (all instances); register; return names."""
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.datasets import register_nuclei_dataset

    coco_dir = Path(out) / f"coco_r{ratio:g}_seed{seed}"
    files = export_coco_splits(data, coco_dir, ratio=ratio, seed=seed, annotation="partial_mask",
                               splits=["train", eval_split], weak_splits=["train"], overwrite=True)
    names = {}
    for split, path in files.items():
        names[split] = f"feng2019_mo_r{ratio:g}_s{seed}_{split}"
        register_nuclei_dataset(names[split], path, data)
    return names


def median_box_size(dataset_name):
    """Median (width, height) of the annotated training boxes (the paper's anchor box)."""
    from detectron2.data import DatasetCatalog

    wh = [a["bbox"][2:4] for r in DatasetCatalog.get(dataset_name) for a in r["annotations"]
          if a.get("point_labeled", True)]
    return [float(v) for v in np.median(np.asarray(wh, dtype=np.float64), axis=0)]


def train_for(cfg, budget_s, logger):
    """Plain training loop stopped by wall time (or ``SOLVER.MAX_ITER``); returns (model, iters)."""
    from detectron2.utils.events import EventStorage

    from nucleiweak_d2.engine.trainer import Trainer

    torch.manual_seed(cfg.SEED)
    model = Trainer.build_model(cfg)
    model.train()
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    loader = iter(Trainer.build_train_loader(cfg))
    start, it = time.perf_counter(), 0
    with EventStorage(0) as storage:
        while time.perf_counter() - start < budget_s and it < cfg.SOLVER.MAX_ITER:
            losses = model(next(loader))
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            scheduler.step()
            if it % 20 == 0:
                extra = {k: round(v[0], 3) for k, v in storage.latest().items() if k.startswith("feng2019/")}
                logger.info("iter %d  %.1f min  total %.3f  %s %s", it, (time.perf_counter() - start) / 60,
                            total.item(), {k: round(v.item(), 3) for k, v in losses.items()}, extra)
            storage.step()
            it += 1
    return model, it, time.perf_counter() - start


def run_model(kind, args, names_partial, names_full, anchor, logger):
    from detectron2.evaluation import inference_on_dataset

    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.trainer import Trainer

    names = names_full if kind == "baseline_full" else names_partial
    out_dir = Path(args.out) / kind
    opts = ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", f"('{names['train']}',)",
            "DATASETS.TEST", f"('{names[args.eval_split]}',)", "OUTPUT_DIR", str(out_dir),
            "SEED", str(args.seed), "SOLVER.MAX_ITER", "1000000", *CPU_OPTS,
            "NUCLEIWEAK.FENG2019.ANCHOR_SIZE", str(anchor), *args.opts]
    cfg = setup_cfg(str(CONFIGS[kind]), opts)
    model, iters, train_s = train_for(cfg, args.budget_minutes * 60, logger)
    model.eval()
    name = names[args.eval_split]
    evaluator = Trainer.build_evaluator(cfg, name, str(out_dir / "inference"))
    start = time.perf_counter()
    res = inference_on_dataset(model, Trainer.build_test_loader(cfg, name), evaluator)
    nuclei, coco = res.get("nuclei", {}), res
    return {
        "config": str(CONFIGS[kind].relative_to(REPO)), "iters": iters, "train_min": train_s / 60,
        "eval_min": (time.perf_counter() - start) / 60, "P_iou50": nuclei.get("obj_P"), "R_iou50": nuclei.get("obj_R"),
        "AJI": nuclei.get("AJI"), "mAP_kaggle": nuclei.get("mAP_kaggle"), "NCS": nuclei.get("NCS"),
        "segm_AP": coco.get("segm", {}).get("AP"), "bbox_AP": coco.get("bbox", {}).get("AP"),
        "det_P_r11": nuclei.get("det_P"), "det_R_r11": nuclei.get("det_R"),
    }


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logger = logging.getLogger("feng2019_monuseg")
    for noisy in ("detectron2", "fvcore", "d2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import nucleiweak_d2.methods  # noqa: F401  (registration)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    names_partial = prepare_data(args.data, args.out, args.ratio, args.seed, args.eval_split)
    names_full = prepare_data(args.data, args.out, 1.0, args.seed, args.eval_split) if "baseline_full" in args.models else None
    anchor = median_box_size(names_partial["train"])
    logger.info("median annotated training box (w, h): %s", anchor)
    results = OrderedDict()
    for kind in args.models:
        logger.info("=== %s: %.1f min budget", kind, args.budget_minutes)
        results[kind] = run_model(kind, args, names_partial, names_full, anchor, logger)
        (Path(args.out) / "results.json").write_text(json.dumps({"args": vars(args), "anchor": anchor, "results": results}, indent=1))
    cols = ["iters", "P_iou50", "R_iou50", "AJI", "mAP_kaggle", "NCS", "segm_AP", "bbox_AP", "det_P_r11", "det_R_r11"]
    print(f"\nMoNuSeg {args.eval_split}, train ratio {args.ratio:g}, {args.budget_minutes:g} min CPU per model, seed {args.seed}")
    print(f"{'model':<14}" + "".join(f"{c:>11}" for c in cols))
    for kind, r in results.items():
        cells = [r[c] if r[c] is not None else float("nan") for c in cols]
        print(f"{kind:<14}" + "".join(f"{v:>11d}" if isinstance(v, int) else f"{v:>11.4f}" for v in cells))
    print("(COCO AP in percent; the other scores are fractions)")
    return results


if __name__ == "__main__":
    main()
