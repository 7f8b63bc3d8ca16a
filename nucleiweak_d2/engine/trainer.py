"""``Trainer``: Detectron2's DefaultTrainer with nucleiweak's loaders, evaluator and optimiser."""

import logging
import os

import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

from .. import modeling as _modeling  # noqa: F401  (registers the shared model parts)
from ..data import mapper as _mapper  # noqa: F401  (registers NucleiDatasetMapper)
from ..data.registry import build_mapper
from ..evaluation.evaluator import build_nuclei_evaluator

__all__ = ["Trainer"]


class Trainer(DefaultTrainer):
    """DefaultTrainer whose loaders use the mapper named by ``cfg.NUCLEIWEAK.MAPPER``.

    Only the builders are overridden; the training loop, checkpointing, hooks and ``--resume``
    are Detectron2's. A pipeline stage passes values that are not user configuration (files
    written by an earlier stage, a loss switched on for one stage) as constructor arguments of
    the model and the mapper with :meth:`with_overrides`.
    """

    #: Keyword arguments added to the model's ``from_config`` values (see :meth:`with_overrides`).
    model_overrides = {}
    #: Keyword arguments added to the mapper's ``from_config`` values.
    mapper_overrides = {}

    @classmethod
    def with_overrides(cls, *, model=None, mapper=None):
        """A subclass that builds the model and the mappers with extra constructor arguments.

        Parameters
        ----------
        model, mapper : dict or None
            Keyword arguments of the ``@configurable`` model / mapper constructors; they
            replace the values ``from_config`` reads from the config.

        Returns
        -------
        type
            A subclass of ``cls``.
        """
        attrs = {"model_overrides": dict(model or {}), "mapper_overrides": dict(mapper or {})}
        return type(cls.__name__, (cls,), attrs)

    @classmethod
    def build_model(cls, cfg):
        if not cls.model_overrides:
            return super().build_model(cfg)
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg, **cls.model_overrides)
        model.to(torch.device(cfg.MODEL.DEVICE))
        logging.getLogger(__name__).info("Model (with %s):\n%s", sorted(cls.model_overrides), model)
        return model

    @classmethod
    def build_mapper(cls, cfg, is_train):
        """The mapper named by ``cfg.NUCLEIWEAK.MAPPER``, with :attr:`mapper_overrides`."""
        return build_mapper(cfg, is_train, **cls.mapper_overrides)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=cls.build_mapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=cls.build_mapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """NucleiEvaluator, plus COCOEvaluator (bbox/segm AP) when the dataset has masks
        and ``cfg.NUCLEIWEAK.COCO_EVAL`` is set."""
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
        """SGD as Detectron2 does, or Adam (``NUCLEIWEAK.SOLVER.OPTIMIZER: ADAM``) as the UNet
        papers do."""
        name = cfg.NUCLEIWEAK.SOLVER.OPTIMIZER.upper()
        if name == "SGD":
            return super().build_optimizer(cfg, model)
        if name != "ADAM":
            raise ValueError(
                f"NUCLEIWEAK.SOLVER.OPTIMIZER must be SGD or ADAM, got {cfg.NUCLEIWEAK.SOLVER.OPTIMIZER!r}"
            )
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
            betas=tuple(cfg.NUCLEIWEAK.SOLVER.BETAS),
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        )
        return maybe_add_gradient_clipping(cfg, optimizer)
