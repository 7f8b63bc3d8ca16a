"""``Trainer``: Detectron2's DefaultTrainer with nucleiweak's loaders, evaluator and optimiser."""

import logging
import os
import random
import time

import numpy as np
import torch
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, SimpleTrainer
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from torch.nn.parallel import DistributedDataParallel

from .. import modeling as _modeling  # noqa: F401  (registers the shared model parts)
from ..data import mapper as _mapper  # noqa: F401  (registers NucleiDatasetMapper)
from ..data.checks import check_disjoint_splits, check_training_points
from ..data.registry import build_mapper
from ..evaluation.evaluator import build_nuclei_evaluator
from ..modeling.meta_arch.stain_input import model_normalises_stains

__all__ = [
    "Trainer",
    "CPUAutocastTrainer",
    "calibrate_during_training",
    "calibrating_trainer",
    "val_choosing_trainer",
    "calibrate_points_during_training",
    "cpu_bf16_enabled",
    "unwrap_model",
]


class Trainer(DefaultTrainer):
    """DefaultTrainer whose loaders use the mapper named by ``cfg.NUCLEIWEAK.MAPPER``.

    Only the builders are overridden; the training loop, checkpointing, hooks and ``--resume``
    are Detectron2's. A pipeline stage passes values that are not user configuration (files
    written by an earlier stage, a loss switched on for one stage) as constructor arguments of
    the model and the mapper with :meth:`with_overrides`.

    Three additions:

    - the speed options of ``cfg.NUCLEIWEAK.TRAIN`` (off by default): ``CHANNELS_LAST``
      converts the built model to the NHWC memory format; ``CPU_BF16`` runs the forward
      under bfloat16 autocast on CPU (:class:`CPUAutocastTrainer`; on CUDA Detectron2's
      ``SOLVER.AMP.ENABLED`` route is left as is); ``NUM_THREADS`` sets torch's intra-op
      threads;
    - the training data are checked first: at least one annotated point in
      ``DATASETS.TRAIN``, and no image shared between a training and a held-out dataset
      (:mod:`nucleiweak_d2.data.checks`);
    - checkpoints carry the RNG states (Python, NumPy, torch), and ``--resume`` replays the
      data stream to the checkpoint's iteration before restoring them, so an interrupted run
      continues bit for bit as if it had not stopped. Exact with ``DATALOADER.NUM_WORKERS: 0``
      (the augmentation RNG lives in the main process); with worker processes the resumed run
      keeps the weights, optimiser and schedule but sees another (still seeded) data order.
    """

    def __init__(self, cfg):
        check_training_data(cfg)
        self._resumed_rng = None
        threads = int(cfg.NUCLEIWEAK.TRAIN.NUM_THREADS)
        if threads > 0:
            torch.set_num_threads(threads)
        super().__init__(cfg)
        if cfg.NUCLEIWEAK.TRAIN.CPU_BF16 and not cpu_bf16_enabled(cfg):
            logging.getLogger(__name__).warning(
                "NUCLEIWEAK.TRAIN.CPU_BF16 is ignored on MODEL.DEVICE %r (CPU only; on CUDA "
                "SOLVER.AMP.ENABLED selects Detectron2's AMPTrainer)",
                cfg.MODEL.DEVICE,
            )
        if cpu_bf16_enabled(cfg):
            # DefaultTrainer builds a SimpleTrainer; swap it before any step (the loader is not
            # iterated yet, the hooks hold this Trainer, not the inner one)
            plain = self._trainer
            self._trainer = CPUAutocastTrainer(
                plain.model, plain.data_loader, plain.optimizer, dtype=torch.bfloat16
            )
            plain.concurrent_executor.shutdown(wait=False)

    def state_dict(self):
        state = super().state_dict()
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # tensors and plain Python values only: the file stays loadable with torch.load's
        # default weights_only=True
        state["rng"] = {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "numpy": [
                name,
                torch.from_numpy(keys.astype(np.int64)),
                int(pos),
                int(has_gauss),
                float(gauss),
            ],
        }
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._resumed_rng = state.get("rng")

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if not (resume and self.start_iter > 0 and self._resumed_rng):
            return
        if self.cfg.DATALOADER.NUM_WORKERS > 0:
            logging.getLogger(__name__).warning(
                "resumed at iteration %d with DATALOADER.NUM_WORKERS > 0: the data order after "
                "the checkpoint differs from an uninterrupted run",
                self.start_iter,
            )
            return
        logging.getLogger(__name__).info("replaying %d batches of the data stream", self.start_iter)
        for _ in range(self.start_iter):  # one batch per finished iteration
            next(self._trainer._data_loader_iter)
        rng = self._resumed_rng
        random.setstate(rng["python"])
        name, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(rng["torch"])

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
        """Detectron2's model, with :attr:`model_overrides`, in the channels_last memory format
        when ``cfg.NUCLEIWEAK.TRAIN.CHANNELS_LAST``.

        Raises
        ------
        ValueError
            ``NUCLEIWEAK.DATA.STAIN_NORM`` on for a model that does not normalise its inference
            inputs (:func:`~nucleiweak_d2.modeling.meta_arch.stain_input.model_normalises_stains`).
        """
        if not cls.model_overrides:
            model = super().build_model(cfg)
        else:
            arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
            model = arch(cfg, **cls.model_overrides)
            model.to(torch.device(cfg.MODEL.DEVICE))
            logging.getLogger(__name__).info(
                "Model (with %s):\n%s", sorted(cls.model_overrides), model
            )
        stain = cfg.NUCLEIWEAK.DATA.STAIN_NORM.METHOD
        if stain != "none" and not model_normalises_stains(model):
            raise ValueError(
                f"NUCLEIWEAK.DATA.STAIN_NORM.METHOD is {stain!r} but {type(model).__name__} "
                "cannot normalise its test images (it would train on normalised colours and "
                "be tested on raw ones): set it to 'none'"
            )
        if cfg.NUCLEIWEAK.TRAIN.CHANNELS_LAST:
            # 4-D weights become NHWC (the Parameter objects stay); a conv with NHWC weights
            # returns NHWC activations, so the NCHW input needs no conversion
            model.to(memory_format=torch.channels_last)
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


def unwrap_model(model):
    """The model inside a ``DistributedDataParallel`` wrapper (multi-process training), else
    ``model`` itself: where its own attributes and buffers are read or set."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def val_choosing_trainer(trainer, choose, prefix):
    """A subclass of ``trainer`` whose evaluations first make a val-only choice on the model.

    Each periodic evaluation (and :meth:`test`) calls ``choose(trainer_class, cfg, model,
    DATASETS.TEST[0])``, which sets the model's post-processing in place, then evaluates as
    ``trainer`` does; so the evaluation, and the checkpoint selected by it, is scored at the
    model's own best post-processing instead of the config's. Only for training stages whose
    ``DATASETS.TEST[0]`` is the val split (a pipeline applies it there); the plain
    :class:`Trainer`, which ``tools/train_net.py --eval-only`` uses on any split, never chooses.

    Parameters
    ----------
    trainer : type
        A :class:`Trainer` (sub)class.
    choose : callable
        ``choose(trainer_class, cfg, model, dataset_name)``; its return value is ignored.
    prefix : str
        Prepended to ``trainer``'s name to name the subclass.
    """

    class ValChoosingTrainer(trainer):
        @classmethod
        def test(cls, cfg, model, evaluators=None):
            if cfg.DATASETS.TEST:
                choose(cls, cfg, model, cfg.DATASETS.TEST[0])
            return super().test(cfg, model, evaluators)

    ValChoosingTrainer.__name__ = ValChoosingTrainer.__qualname__ = prefix + trainer.__name__
    return ValChoosingTrainer


def calibrating_trainer(trainer):
    """A subclass of ``trainer`` whose evaluations first calibrate a segmentor on val
    (:func:`calibrate_during_training`; ``NUCLEIWEAK.UNET.CALIBRATE_EVAL``), see
    :func:`val_choosing_trainer`."""
    return val_choosing_trainer(trainer, calibrate_during_training, "Calibrating")


def calibrate_during_training(trainer, cfg, model, dataset_name):
    """Set a segmentor's ``fg_threshold`` / ``split_distance`` buffers from val, in place.

    A short weakly supervised schedule leaves the network under-confident: on the synthetic
    demo every evaluation at Qu et al.'s 0.5 scored AJI 0 (nothing above 0.5), so the first
    checkpoint was kept whatever came later. Runs the model over ``dataset_name`` and calls
    :func:`~nucleiweak_d2.engine.calibration.calibrate_on_dataset` (the same choice as the
    pipelines' ``calibrate`` stage). Models without these buffers, a
    threshold forced by ``NUCLEIWEAK.UNET.FG_THRESHOLD``, and multi-process runs (the val
    outputs would have to be gathered) are left unchanged.
    """
    from .calibration import calibrate_on_dataset

    net = unwrap_model(model)
    if not hasattr(net, "fg_threshold") or float(getattr(net, "fg_threshold_override", -1)) > 0:
        return None
    if not _one_process("NUCLEIWEAK.UNET.CALIBRATE_EVAL"):
        return None
    return calibrate_on_dataset(
        net, cfg, dataset_name, _val_probabilities(trainer, cfg, net, dataset_name)
    )


def _one_process(what):
    """Whether the run has one process; else a warning that ``what`` (a val choice during
    training, whose val outputs would have to be gathered) is ignored."""
    from detectron2.utils import comm

    if comm.get_world_size() == 1:
        return True
    logging.getLogger(__name__).warning(
        "%s is ignored with %d processes", what, comm.get_world_size()
    )
    return False


def _val_probabilities(trainer, cfg, net, dataset_name):
    """``{str(image_id): output "prob"}`` of ``net`` (in eval mode, restored after) over
    ``dataset_name`` (one process)."""
    was_training = net.training
    net.eval()
    probs = {}
    with torch.no_grad():
        for inputs in trainer.build_test_loader(cfg, dataset_name):
            for x, out in zip(inputs, net(inputs)):
                probs[str(x["image_id"])] = out["prob"].float().cpu()
    net.train(was_training)
    return probs


def calibrate_points_during_training(trainer, cfg, model, dataset_name):
    """Set a point detector's ``threshold`` / ``min_area`` from val, in place, before a periodic
    evaluation (see :func:`val_choosing_trainer`), so that the checkpoint kept is the one of the
    best detection F1 at its own best post-processing, as the pipeline later calibrates it
    (:func:`~nucleiweak_d2.engine.calibration.calibrate_point_detector`).

    At Qu et al.'s fixed 0.35, a self-training round with propagated background (which lowers
    every probability) scored val F1 from 0.01 to 0.72 between evaluations (MoNuSeg, 10 %
    points, CPU config), so its kept checkpoint was close to chance. Models without a
    ``min_area`` attribute (not point detectors) and multi-process runs are left unchanged.
    """
    from .calibration import calibrate_point_detector

    net = unwrap_model(model)
    if not (hasattr(net, "min_area") and hasattr(net, "threshold")):
        return None
    if not _one_process("NUCLEIWEAK.QU2020.DET.CALIBRATE_EVAL"):
        return None
    probs = _val_probabilities(trainer, cfg, net, dataset_name)
    return calibrate_point_detector(net, cfg, dataset_name, probs)


def cpu_bf16_enabled(cfg):
    """Whether ``cfg`` trains with bfloat16 autocast on CPU: ``NUCLEIWEAK.TRAIN.CPU_BF16`` and
    a CPU ``MODEL.DEVICE`` (on CUDA Detectron2's ``SOLVER.AMP.ENABLED`` applies instead)."""
    return bool(cfg.NUCLEIWEAK.TRAIN.CPU_BF16) and torch.device(cfg.MODEL.DEVICE).type == "cpu"


class CPUAutocastTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` whose forward runs under ``torch.autocast("cpu", dtype)``.

    Only the model call (which returns the loss dict) is autocast; the sum of the losses is
    taken in float32, and the backward pass and the optimiser step run outside autocast on the
    float32 parameters. bfloat16 has float32's exponent range, so no gradient scaling is needed
    (unlike CUDA float16, Detectron2's :class:`~detectron2.engine.AMPTrainer`).
    The step mirrors ``SimpleTrainer.run_step`` (Detectron2 0.6/0.7).
    """

    def __init__(self, model, data_loader, optimizer, dtype=torch.bfloat16, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.dtype = dtype

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=self.dtype):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        loss_dict = {k: v.float() for k, v in loss_dict.items()}
        losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()

        self.after_backward()

        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def check_training_data(cfg):
    """Refuse training data that would train or score the wrong thing, in one line.

    ``DATASETS.TRAIN`` must hold at least one annotated point, and no image may be both in a
    training dataset and in a held-out one (``DATASETS.TEST``, ``NUCLEIWEAK.EVAL_DATASETS``).
    """
    from detectron2.data import DatasetCatalog

    train = list(cfg.DATASETS.TRAIN)
    held_out = [
        d
        for d in dict.fromkeys([*cfg.DATASETS.TEST, *cfg.NUCLEIWEAK.EVAL_DATASETS])
        if d not in train
    ]
    dicts = {name: DatasetCatalog.get(name) for name in [*train, *held_out]}
    for name in train:
        check_training_points(dicts[name], name)
    check_disjoint_splits(dicts, train_names=train)
