#!/usr/bin/env python
"""Train or evaluate any nucleiweak_d2 model, Detectron2-style.

Examples
--------
Train (one model, or the multi-stage pipeline the config names in NUCLEIWEAK.PIPELINE)::

    python tools/train_net.py --config-file configs/qu2020/R18_synthetic.yaml OUTPUT_DIR out/qu

Evaluate a checkpoint::

    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS out/model_final.pth

Several GPUs or machines: ``--num-gpus 4`` / ``--num-machines 2 --machine-rank 0 --dist-url ...``
(Detectron2's ``launch``).
"""

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results

from nucleiweak_d2.engine import (
    NUCLEIWEAK_PIPELINE_REGISTRY,
    Trainer,
    register_datasets_from_cfg,
    setup_cfg,
)


def setup(args):
    cfg = setup_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    register_datasets_from_cfg(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if cfg.NUCLEIWEAK.PIPELINE:
        return NUCLEIWEAK_PIPELINE_REGISTRY.get(cfg.NUCLEIWEAK.PIPELINE)(cfg, args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
