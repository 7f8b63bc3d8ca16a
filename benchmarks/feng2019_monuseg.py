#!/usr/bin/env python
"""Feng et al. 2019 on MoNuSeg (MO): baselines vs partial-annotation Mask R-CNN, equal budget.

Trains on ``train`` (12 images), selects thresholds on ``val`` (4), scores on ``test`` (14, every
instance). Only ``--ratio`` (25 %) of the training instances keep their masks
(``annotation="partial_mask"``; the rest of each image is unannotated). Models (``--models``):

- ``baseline``: Mask R-CNN (configs/feng2019/mask_rcnn_R_18_FPN_baseline.yaml) on the partial
  data; unannotated nuclei are background for it (the paper calls this inappropriate, it is
  kept as the naive reference);
- ``baseline_crop``: the baseline on fully annotated crops of ``--ratio`` of each training image's
  area (the paper's "DH25crop" baseline; ``nucleiweak_d2.methods.feng2019.crops``);
- ``partial``: the Feng et al. model (mask_rcnn_R_18_FPN_partial.yaml) on the partial data;
- ``baseline_full``: the baseline on 100 % of the instances (the paper's "DH100" reference).

Budget: every model trains for ``--budget-minutes`` of wall time (equal time, the default), or
for exactly ``--iters`` iterations (equal iterations; then a run is deterministic: Python, NumPy
and torch are seeded with the run's seed, data loading included). Constant learning rate, as
the paper; from scratch (no pretrained weights can be downloaded here), with the CPU-sized
overrides ``CPU_OPTS`` (R-18, 64-channel FPN, 256x256 crops, batch 2). Time spent on the
pseudo-box quality checks and on evaluation is not counted in the budget.

Instance score threshold (issue 17): a Mask R-CNN returns every detection above 0.05
(``SCORE_THRESH_TEST``); painted all together into the label map the metrics score, low-score
fragments and false positives lower AJI, PQ and object precision, by an amount that depends on
each model. So after training each model is run once on ``val`` and its instance map is scored
at each ``--score-thresh-candidates`` value (``NUCLEIWEAK.EVAL.INSTANCE_SCORE_THRESH``, overlap
rule ``--overlap``); the value with the best ``--select-metric`` is the model's threshold on
``test``. The test metrics without threshold (0.0, the evaluator's default) are reported too
(``*_thr0`` columns). Test is never used for a choice.

Pseudo-box quality (``partial`` only): every ``--quality-period`` iterations the model (eval
mode) computes its pseudo-boxes on the full training images, and their number, precision and
recall against the training nuclei nobody annotated (``point_labeled`` 0 in the training COCO
file) are logged and written to ``results.json`` (``quality_curve``). With
``--pseudo-thresh-candidates`` the centerness threshold ``NUCLEIWEAK.FENG2019.SCORE_THRESH`` is
chosen on val at each of these checks and once after training: the candidate whose pseudo-boxes
have the best F1 (IoU 0.5) against every val nucleus becomes the model's threshold from then on
(blocking in training, proposals at test). Without it the config value (0.95) stays.

Printed per model, mean ± std over ``--seeds``: iterations, the chosen instance threshold,
precision and recall at IoU 0.5 (NucleiEvaluator's obj_P / obj_R: unique IoU > 0.5 matches,
counts summed over images), AJI, PQ, Kaggle mAP, NCS (per-image means), COCO segm and bbox AP
(COCOEvaluator, threshold-free), point-detection P/R (radius 11 px), and AJI / PQ at threshold
0. Results go to ``<out>/results.json``.

Example (the budget is stated with every published figure)::

    .venv/bin/python benchmarks/feng2019_monuseg.py --iters 2000 --seeds 0 1 2 --ratio 0.25 \\
        --out /tmp/feng2019_bench
"""

import argparse
import json
import logging
import math
import random
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "configs/feng2019/mask_rcnn_R_18_FPN_baseline.yaml"
PARTIAL = REPO / "configs/feng2019/mask_rcnn_R_18_FPN_partial.yaml"
CONFIGS = {
    "baseline": BASELINE,
    "baseline_crop": BASELINE,
    "partial": PARTIAL,
    "baseline_full": BASELINE,
}
# CPU-sized overrides applied to every model (same for all, so the comparison stays fair);
# trailing KEY VALUE arguments override them.
CPU_OPTS = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "NUCLEIWEAK.DATA.CROP_SIZE",
    "[256, 256]",
    "SOLVER.WARMUP_ITERS",
    "20",
    "DATALOADER.NUM_WORKERS",
    "1",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "256",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "256",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "500",
    "NUCLEIWEAK.FENG2019.CENTERNESS_CONV_DIM",
    "64",
]
COLUMNS = [
    "iters",
    "score_thresh",
    "P_iou50",
    "R_iou50",
    "AJI",
    "PQ",
    "mAP_kaggle",
    "NCS",
    "segm_AP",
    "bbox_AP",
    "det_P_r11",
    "det_R_r11",
    "AJI_thr0",
    "PQ_thr0",
]
NUCLEI_KEYS = {
    "P_iou50": "obj_P",
    "R_iou50": "obj_R",
    "AJI": "AJI",
    "PQ": "PQ",
    "mAP_kaggle": "mAP_kaggle",
    "NCS": "NCS",
    "det_P_r11": "det_P",
    "det_R_r11": "det_R",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", default=str(REPO.parent / "shared/data/monuseg_mo"), help="MoNuSeg folder"
    )
    p.add_argument(
        "--out", default="/tmp/feng2019_monuseg", help="output folder (outside the repo)"
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=["baseline", "baseline_crop", "partial", "baseline_full"],
        choices=sorted(CONFIGS),
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=120.0,
        help="training wall time per model (ignored with --iters)",
    )
    p.add_argument(
        "--iters",
        type=int,
        default=None,
        help="train every model for exactly this many iterations (equal iterations, deterministic)",
    )
    p.add_argument(
        "--ratio",
        type=float,
        default=0.25,
        help="fraction of train instances annotated (and crop area of baseline_crop), e.g. 0.25 or 0.5",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds of the annotation subset, crops and training",
    )
    p.add_argument("--val-split", default="val", help="split of every choice (thresholds)")
    p.add_argument("--eval-split", default="test", help="split that is reported")
    p.add_argument(
        "--score-thresh-candidates",
        type=float,
        nargs="+",
        default=[0.0, 0.3, 0.5, 0.7, 0.9],
        help="instance score thresholds tried on val (0.0 = every detection)",
    )
    p.add_argument("--select-metric", default="AJI", help="NucleiEvaluator metric maximised on val")
    p.add_argument(
        "--overlap",
        default="score",
        choices=["score", "mask_nms"],
        help="overlap rule of instance maps",
    )
    p.add_argument(
        "--overlap-thresh",
        type=float,
        default=0.5,
        help="covered fraction that drops a mask (mask_nms)",
    )
    p.add_argument(
        "--quality-period",
        type=int,
        default=200,
        help="iterations between pseudo-box quality checks of 'partial' (0 = never)",
    )
    p.add_argument(
        "--pseudo-thresh-candidates",
        type=float,
        nargs="+",
        default=None,
        help="choose NUCLEIWEAK.FENG2019.SCORE_THRESH among these on val (pseudo-box F1)",
    )
    p.add_argument(
        "--dilate-masks",
        action="store_true",
        help="the paper's 3x3 dilation of output masks, for every model (NUCLEIWEAK.FENG2019.DILATE_MASKS)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides KEY VALUE ...")
    return p.parse_args(argv)


def _register(files, data_root, tag):
    from nucleiweak_d2.data.datasets import register_nuclei_dataset

    names = {}
    for split, path in files.items():
        names[split] = f"feng2019_mo_{tag}_{split}"
        register_nuclei_dataset(names[split], path, data_root)
    return names


def prepare_data(data, out, ratio, seed, splits):
    """Export train (partial masks, ``ratio``) and the held-out splits (all instances); register."""
    from nucleiweak_d2.data.coco import export_coco_splits

    coco_dir = Path(out) / f"coco_r{ratio:g}_seed{seed}"
    files = export_coco_splits(
        data,
        coco_dir,
        ratio=ratio,
        seed=seed,
        annotation="partial_mask",
        splits=["train", *splits],
        weak_splits=["train"],
        overwrite=True,
    )
    return _register(files, data, f"r{ratio:g}_s{seed}")


def prepare_crop_data(data, out, ratio, seed):
    """Fully annotated crops of ``ratio`` of each training image's area (the paper's DH25crop).

    Writes a folder dataset ``<out>/crop_r<ratio>_seed<seed>`` (``images/``, ``labels/``,
    ``split.json`` with ``train``), exports it with every instance annotated and registers it.
    Returns ``(name of the train dataset, number of crop nuclei)``.
    """
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.methods.feng2019.crop_dataset import write_crop_dataset

    root, n_nuclei = write_crop_dataset(
        data, Path(out) / f"crop_r{ratio:g}_seed{seed}", ratio, seed
    )
    files = export_coco_splits(
        root,
        root / "coco",
        ratio=1.0,
        seed=seed,
        annotation="partial_mask",
        splits=["train"],
        overwrite=True,
    )
    return _register(files, root, f"crop_r{ratio:g}_s{seed}")["train"], n_nuclei


def median_box_size(dataset_name):
    """Median (width, height) of the annotated training boxes (the paper's anchor box)."""
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.methods.feng2019 import median_box_size as median_of_records

    return median_of_records(DatasetCatalog.get(dataset_name))


def seed_everything(seed):
    """Seed Python, NumPy and torch (Detectron2's training sampler draws its seed from NumPy)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_for(cfg, budget_s, max_iter, logger, check=None, period=0):
    """Plain training loop stopped by wall time or after ``max_iter`` iterations.

    ``check(model, it)`` runs every ``period`` iterations (and after the last one); its time
    is not counted in the budget. Returns ``(model, iterations, training seconds)``.
    """
    from detectron2.utils.events import EventStorage

    from nucleiweak_d2.engine.trainer import Trainer

    seed_everything(cfg.SEED)
    model = Trainer.build_model(cfg)
    model.train()
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    loader = iter(Trainer.build_train_loader(cfg))
    start, paused, it = time.perf_counter(), 0.0, 0
    with EventStorage(0) as storage:
        while time.perf_counter() - start - paused < budget_s and it < max_iter:
            losses = model(next(loader))
            total = sum(losses.values())
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            scheduler.step()
            if it % 20 == 0:
                extra = {
                    k: round(v[0], 3)
                    for k, v in storage.latest().items()
                    if k.startswith("feng2019/")
                }
                logger.info(
                    "iter %d  %.1f min  total %.3f  %s %s",
                    it,
                    (time.perf_counter() - start - paused) / 60,
                    total.item(),
                    {k: round(v.item(), 3) for k, v in losses.items()},
                    extra,
                )
            storage.step()
            it += 1
            if check is not None and period > 0 and it % period == 0:
                t0 = time.perf_counter()
                check(model, it)
                paused += time.perf_counter() - t0
    if check is not None and (period <= 0 or it % period != 0):
        check(model, it)  # the final state, for the curve and the last threshold choice
    return model, it, time.perf_counter() - start - paused


def _best(scores):
    """Key of ``scores`` ({candidate: value}) with the largest finite value; ties (and no finite
    value at all): the first candidate."""
    best, best_value = None, -math.inf
    for key, value in scores.items():
        if value is not None and math.isfinite(value) and value > best_value:
            best, best_value = key, value
    return best if best is not None else next(iter(scores))


class PseudoBoxMonitor:
    """Pseudo-box quality on the training images (and the val choice of SCORE_THRESH)."""

    def __init__(self, cfg, train_name, val_name, candidates, logger):
        from detectron2.data import DatasetCatalog

        from nucleiweak_d2.engine.trainer import Trainer

        self.mapper = Trainer.build_mapper(cfg, False)
        self.train_records = DatasetCatalog.get(train_name)
        self.val_records = DatasetCatalog.get(val_name)
        self.candidates = candidates
        self.logger = logger
        self.curve = []

    def __call__(self, model, it):
        from nucleiweak_d2.methods.feng2019.quality import evaluate_pseudo_boxes

        head = model.centerness_head
        entry = {"iter": it}
        if self.candidates:
            val = evaluate_pseudo_boxes(
                model, self.val_records, self.mapper, self.candidates, target="all"
            )
            head.score_thresh = _best({t: q["f1"] for t, q in val.items()})
            entry["val"] = {f"{t:g}": q for t, q in val.items()}
        threshs = sorted({float(head.score_thresh), *(self.candidates or [])})
        train = evaluate_pseudo_boxes(
            model, self.train_records, self.mapper, threshs, target="unannotated"
        )
        entry["score_thresh"] = float(head.score_thresh)
        entry["train"] = {f"{t:g}": q for t, q in train.items()}
        q = train[float(head.score_thresh)]
        self.logger.info(
            "iter %d  pseudo-boxes (thresh %.2f) on the training images: %d, on unannotated "
            "nuclei P %.3f R %.3f (%d of %d)",
            it,
            head.score_thresh,
            q["num_pseudo"],
            q["precision"],
            q["recall"],
            q["tp"],
            q["num_unannotated"],
        )
        self.curve.append(entry)


def score_dataset(model, cfg, name, threshs, overlap, overlap_thresh, coco_dir=None):
    """Nuclei metrics of ``model`` on ``name`` at each instance score threshold (one inference).

    Each output is turned into an instance map per threshold
    (:func:`~nucleiweak_d2.evaluation.outputs.output_instance_map`) and scored by a
    ``NucleiEvaluator`` configured by ``cfg.NUCLEIWEAK.EVAL``; with threshold 0.0 and overlap
    "score" this is exactly the evaluator's default. With ``coco_dir``, COCOEvaluator scores
    the raw outputs. Returns ``({threshold: nuclei summary}, coco results)``.
    """
    from detectron2.evaluation import COCOEvaluator

    from nucleiweak_d2.engine.trainer import Trainer
    from nucleiweak_d2.evaluation.evaluator import NucleiEvaluator
    from nucleiweak_d2.evaluation.outputs import output_instance_map

    ev = cfg.NUCLEIWEAK.EVAL
    evaluators = {
        t: NucleiEvaluator(
            name,
            None,
            distributed=False,
            radius=ev.DET_RADIUS,
            det_method=ev.DET_MATCHING,
            hausdorff=ev.HAUSDORFF,
            gt_point_mode=ev.POINT_MODE,
        )
        for t in threshs
    }
    coco = None
    if coco_dir is not None and cfg.NUCLEIWEAK.COCO_EVAL:
        coco = COCOEvaluator(
            name,
            tasks=("bbox", "segm"),
            distributed=False,
            output_dir=str(coco_dir),
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
    for e in [*evaluators.values(), *([coco] if coco else [])]:
        e.reset()
    model.eval()
    with torch.no_grad():
        for inputs in Trainer.build_test_loader(cfg, name):
            outputs = model(inputs)
            for t, e in evaluators.items():
                maps = [
                    {
                        "instance_map": output_instance_map(
                            o,
                            mask_threshold=ev.MASK_THRESHOLD,
                            score_thresh=t,
                            overlap=overlap,
                            overlap_thresh=overlap_thresh,
                        )
                    }
                    for o in outputs
                ]
                e.process(inputs, maps)
            if coco:
                coco.process(inputs, [{"instances": o["instances"].to("cpu")} for o in outputs])
    return {t: e.evaluate().get("nuclei", {}) for t, e in evaluators.items()}, (
        coco.evaluate() if coco else {}
    )


def run_model(kind, seed, args, names, anchor, logger):
    from nucleiweak_d2.config import setup_cfg

    out_dir = Path(args.out) / f"seed{seed}" / kind
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "DATASETS.TRAIN",
        f"('{names['train']}',)",
        "DATASETS.TEST",
        f"('{names[args.val_split]}',)",
        "OUTPUT_DIR",
        str(out_dir),
        "SEED",
        str(seed),
        "SOLVER.MAX_ITER",
        str(args.iters or 1000000),
        *CPU_OPTS,
        "NUCLEIWEAK.FENG2019.ANCHOR_SIZE",
        str(anchor),
    ]
    if args.dilate_masks:
        opts += ["NUCLEIWEAK.FENG2019.DILATE_MASKS", "True"]
        if kind != "partial":
            opts += ["MODEL.META_ARCHITECTURE", "NucleiWeakFeng2019BaselineRCNN"]
    cfg = setup_cfg(str(CONFIGS[kind]), [*opts, *args.opts])
    monitor = None
    if kind == "partial" and (args.quality_period > 0 or args.pseudo_thresh_candidates):
        monitor = PseudoBoxMonitor(
            cfg, names["train"], names[args.val_split], args.pseudo_thresh_candidates, logger
        )
    budget_s = math.inf if args.iters else args.budget_minutes * 60
    model, iters, train_s = train_for(
        cfg, budget_s, cfg.SOLVER.MAX_ITER, logger, monitor, args.quality_period
    )
    start = time.perf_counter()
    candidates = sorted(set(args.score_thresh_candidates))
    val, _ = score_dataset(
        model, cfg, names[args.val_split], candidates, args.overlap, args.overlap_thresh
    )
    val_scores = {t: val[t].get(args.select_metric) for t in candidates}
    chosen = _best(val_scores)
    logger.info(
        "%s: val %s per instance score threshold %s -> %g",
        kind,
        args.select_metric,
        {f"{t:g}": None if v is None else round(v, 4) for t, v in val_scores.items()},
        chosen,
    )
    test, coco = score_dataset(
        model,
        cfg,
        names[args.eval_split],
        sorted({chosen, 0.0}),
        args.overlap,
        args.overlap_thresh,
        coco_dir=out_dir / "inference",
    )
    nuclei, raw = test[chosen], test[0.0]
    result = {
        "config": str(CONFIGS[kind].relative_to(REPO)),
        "iters": iters,
        "train_min": train_s / 60,
        "eval_min": (time.perf_counter() - start) / 60,
        "score_thresh": chosen,
        "val_select": {f"{t:g}": v for t, v in val_scores.items()},
        **{col: nuclei.get(key) for col, key in NUCLEI_KEYS.items()},
        "segm_AP": coco.get("segm", {}).get("AP"),
        "bbox_AP": coco.get("bbox", {}).get("AP"),
        "AJI_thr0": raw.get("AJI"),
        "PQ_thr0": raw.get("PQ"),
        "test_nuclei": nuclei,
    }
    if kind == "partial":
        result["pseudo_score_thresh"] = float(model.centerness_head.score_thresh)
        result["quality_curve"] = monitor.curve if monitor else []
    return result


def _finite(value):
    """JSON-safe number: NaN / inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def summarise(runs, models):
    """``{model: {column: {"mean", "std", "n"}}}`` over seeds (population std, ddof 0)."""
    summary = OrderedDict()
    for kind in models:
        cols = {}
        for col in COLUMNS:
            values = [
                r[kind][col] for r in runs.values() if kind in r and r[kind].get(col) is not None
            ]
            values = [float(v) for v in values if math.isfinite(float(v))]
            if values:
                cols[col] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values)),
                    "n": len(values),
                }
        summary[kind] = cols
    return summary


def print_table(summary, args):
    budget = f"{args.iters} iterations" if args.iters else f"{args.budget_minutes:g} min CPU"
    print(
        f"\nMoNuSeg {args.eval_split}, train ratio {args.ratio:g}, {budget} per model, seeds {args.seeds} "
        f"(mean ± std), instance threshold chosen on {args.val_split} by {args.select_metric}"
    )
    print(f"{'model':<14}" + "".join(f"{c:>17}" for c in COLUMNS))
    for kind, cols in summary.items():
        cells = []
        for c in COLUMNS:
            s = cols.get(c)
            cells.append(
                f"{'nan':>17}" if s is None else f"{s['mean']:.4g} ± {s['std']:.2g}".rjust(17)
            )
        print(f"{kind:<14}" + "".join(cells))
    print("(COCO AP in percent; the other scores are fractions)")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logger = logging.getLogger("feng2019_monuseg")
    for noisy in ("detectron2", "fvcore", "d2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import nucleiweak_d2.methods  # noqa: F401  (registration)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    held_out = list(dict.fromkeys([args.val_split, args.eval_split]))
    runs, info = OrderedDict(), OrderedDict()
    for seed in args.seeds:
        partial = prepare_data(args.data, args.out, args.ratio, seed, held_out)
        names = {"baseline": partial, "partial": partial}
        if "baseline_full" in args.models:
            names["baseline_full"] = dict(
                partial, train=prepare_data(args.data, args.out, 1.0, seed, held_out)["train"]
            )
        info[seed] = {"anchor": median_box_size(partial["train"])}
        if "baseline_crop" in args.models:
            crop_train, n_crop = prepare_crop_data(args.data, args.out, args.ratio, seed)
            names["baseline_crop"] = dict(partial, train=crop_train)
            info[seed]["crop_nuclei"] = n_crop
        logger.info("seed %d: median annotated training box (w, h) %s", seed, info[seed]["anchor"])
        runs[seed] = OrderedDict()
        for kind in args.models:
            logger.info(
                "=== seed %d, %s: %s",
                seed,
                kind,
                f"{args.iters} iterations" if args.iters else f"{args.budget_minutes:g} min",
            )
            runs[seed][kind] = run_model(
                kind, seed, args, names[kind], info[seed]["anchor"], logger
            )
            summary = summarise(runs, args.models)
            content = {"args": vars(args), "seeds": info, "runs": runs, "summary": summary}
            (Path(args.out) / "results.json").write_text(json.dumps(_finite(content), indent=1))
    print_table(summary, args)
    return {"runs": runs, "summary": summary}


if __name__ == "__main__":
    main()
