"""``Trainer``: Detectron2's DefaultTrainer with nucleiweak's loaders, evaluator and optimiser."""

import os

import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping


class Trainer(DefaultTrainer):
    """DefaultTrainer whose loaders use the mapper named by ``cfg.NUCLEIWEAK.MAPPER``.

    Only the four builders are overridden; the training loop, checkpointing, hooks and
    ``--resume`` are Detectron2's.
    """

    @classmethod
    def build_train_loader(cls, cfg):
        from ..data.registry import build_mapper

        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        from ..data.registry import build_mapper

        return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """NucleiEvaluator, plus COCOEvaluator (bbox/segm AP) when the dataset has masks
        and ``cfg.NUCLEIWEAK.COCO_EVAL`` is set."""
        from ..evaluation.evaluator import build_nuclei_evaluator

        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluators = [build_nuclei_evaluator(cfg, dataset_name, output_folder)]
        meta = MetadataCatalog.get(dataset_name)
        has_masks = meta.get("point_settings", {}).get("annotation", "points") != "points_only"
        if cfg.NUCLEIWEAK.COCO_EVAL and has_masks:
            evaluators.append(
                COCOEvaluator(
                    dataset_name,
                    tasks=("bbox", "segm"),
                    distributed=True,
                    output_dir=output_folder,
                    max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                )
            )
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """SGD as Detectron2 does, or Adam (``SOLVER.OPTIMIZER: ADAM``) as the UNet papers do."""
        if cfg.SOLVER.OPTIMIZER.upper() == "SGD":
            return super().build_optimizer(cfg, model)
        if cfg.SOLVER.OPTIMIZER.upper() != "ADAM":
            raise ValueError(f"SOLVER.OPTIMIZER must be SGD or ADAM, got {cfg.SOLVER.OPTIMIZER!r}")
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        optimizer = torch.optim.Adam(
            params,
            lr=cfg.SOLVER.BASE_LR,
            betas=tuple(cfg.SOLVER.BETAS),
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
        return maybe_add_gradient_clipping(cfg, optimizer)
