"""``NucleiWeakClassicalPipeline``: the classical baseline as a run like every method's.

Stages (a :class:`~nucleiweak_d2.engine.pipeline.StagedPipeline`; nothing is trained):

1. ``model``: writes the checkpoint of the parameter-free
   :class:`~nucleiweak_d2.methods.classical.segmentor.NucleiWeakClassicalSegmentor`
   (``model/model_final.pth``, an empty state dict), so the run ends with
   ``OUTPUT_DIR/model_final.pth`` like every method and ``--eval-only`` / ``tools/predict.py``
   take it as they take a trained model.
2. ``eval``: the baseline on ``NUCLEIWEAK.EVAL_DATASETS``.

The annotated points of ``DATASETS.TRAIN`` are not used; its settings
(``NUCLEIWEAK.CLASSICAL``) are fixed or chosen on the val split, never on test.
"""

from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils import comm

from ...engine.pipeline import NUCLEIWEAK_PIPELINE_REGISTRY, Stage, StagedPipeline
from ...engine.trainer import Trainer

__all__ = ["NucleiWeakClassicalPipeline"]

ARCH = "NucleiWeakClassicalSegmentor"


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
class NucleiWeakClassicalPipeline(StagedPipeline):
    """The classical baseline; see the module docstring. Configured by ``cfg.NUCLEIWEAK.CLASSICAL``."""

    result_key = "segmentation"

    def model_cfg(self):
        """Config of the baseline's model (its architecture, ``OUTPUT_DIR/model``)."""
        c = self.cfg.clone()
        c.defrost()
        c.OUTPUT_DIR = str(self.stage_dir("model"))
        c.MODEL.META_ARCHITECTURE = ARCH
        c.NUCLEIWEAK.COCO_EVAL = bool(
            c.NUCLEIWEAK.COCO_EVAL and c.NUCLEIWEAK.CLASSICAL.OUTPUT_INSTANCES
        )
        return c

    def final_model(self):
        return self.model_cfg(), Trainer, str(self.stage_dir("model") / "model_final.pth")

    def stages(self):
        return [Stage("model", self.write_model)]

    def write_model(self):
        """Save the (empty) checkpoint of the baseline's model."""
        c, trainer, weights = self.final_model()
        if comm.is_main_process():
            Path(c.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
            DetectionCheckpointer(trainer.build_model(c), save_dir=c.OUTPUT_DIR).save("model_final")
        comm.synchronize()
        return {"weights": weights}
