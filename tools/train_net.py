#!/usr/bin/env python
"""Train or evaluate any nucleiweak_d2 method, Detectron2-style.

Examples
--------
Train (one model, or the multi-stage pipeline the config names in NUCLEIWEAK.PIPELINE)::

    python tools/train_net.py --config-file configs/qu2020/R18_synthetic.yaml OUTPUT_DIR out/qu

Continue an interrupted run (same config and data), or start afresh in the same folder::

    python tools/train_net.py --config-file CONFIG --resume OUTPUT_DIR out/qu
    python tools/train_net.py --config-file CONFIG --overwrite OUTPUT_DIR out/qu

Evaluate a trained model (any folder; nothing of a training run is overwritten)::

    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS out/qu/model_final.pth

Several GPUs or machines: ``--num-gpus 4`` / ``--num-machines 2 --machine-rank 0 --dist-url ...``
(Detectron2's ``launch``); with ``MODEL.DEVICE cpu``, ``--num-gpus N`` starts N CPU processes
(gloo), also on a machine with GPUs (:mod:`nucleiweak_d2.engine.launch`).
"""

import sys

from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from nucleiweak_d2.cli import add_debug_flag, run_cli
from nucleiweak_d2.config import setup_cfg
from nucleiweak_d2.engine import (
    NUCLEIWEAK_PIPELINE_REGISTRY,
    Trainer,
    register_datasets_from_cfg,
    resolve_output_dir,
    setup_loggers,
)
from nucleiweak_d2.engine.launch import launch
from nucleiweak_d2.engine.predictor import load_trained_weights

EPILOG = """\
nucleiweak_d2: the config's NUCLEIWEAK.PIPELINE names a multi-stage method (e.g.
NucleiWeakQu2020Pipeline); each stage writes OUTPUT_DIR/<stage>/, the final model is linked to
OUTPUT_DIR/model_final.pth and the final table is in OUTPUT_DIR/summary.md. A rerun into a folder
that holds a run is refused unless --resume (continue; same config and data only) or --overwrite
(delete that run's files, start afresh). --eval-only scores MODEL.WEIGHTS (a trained model) or
the run in OUTPUT_DIR, writing into OUTPUT_DIR/eval_only*/ when OUTPUT_DIR holds a run. Datasets:
NUCLEIWEAK.DATASETS.COCO_DIR / IMAGE_ROOT / PREFIX register <COCO_DIR>/<split>.json as
<PREFIX>_<split> (files from tools/prepare_dataset.py). Bad input gives one 'error:' line and exit
code 2 (--debug: traceback)."""


def build_parser():
    parser = default_argument_parser(epilog=EPILOG)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run in OUTPUT_DIR (only the files it wrote) and start afresh",
    )
    return add_debug_flag(parser)


def setup(args):
    """Config, the rerun rule, loggers and datasets; returns ``(cfg, folder written to)``."""
    cfg = setup_cfg(args.config_file, args.opts)
    name = cfg.NUCLEIWEAK.PIPELINE
    if name and name not in NUCLEIWEAK_PIPELINE_REGISTRY:
        known = sorted(n for n, _ in NUCLEIWEAK_PIPELINE_REGISTRY)
        raise ValueError(
            f"NUCLEIWEAK.PIPELINE {name!r} is not registered; known: {', '.join(known)}"
        )
    out = resolve_output_dir(
        cfg, resume=args.resume, eval_only=args.eval_only, overwrite=args.overwrite
    )
    logged = cfg.clone()
    logged.defrost()
    logged.OUTPUT_DIR = str(out)
    logged.freeze()
    default_setup(logged, args)  # log.txt and config.yaml go where this call writes
    setup_loggers(out)
    register_datasets_from_cfg(cfg)
    return cfg, logged


def main(args):
    cfg, logged = setup(args)
    if cfg.NUCLEIWEAK.PIPELINE:
        pipeline = NUCLEIWEAK_PIPELINE_REGISTRY.get(cfg.NUCLEIWEAK.PIPELINE)
        return pipeline(cfg, resume=args.resume, eval_only=args.eval_only).run()
    if args.eval_only:
        model = Trainer.build_model(logged)
        load_trained_weights(
            model, logged.MODEL.WEIGHTS
        )  # refuses none, or weights of another model
        res = Trainer.test(logged, model)
        if comm.is_main_process():
            verify_results(logged, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv):
    args = build_parser().parse_args(argv)
    print("Command Line Args:", args)
    # bad config or option: one line before any process starts
    cfg = setup_cfg(args.config_file, args.opts)
    launch(
        main,
        args.num_gpus,
        device=cfg.MODEL.DEVICE,  # a CPU run's processes see no GPU (gloo)
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(cli))
