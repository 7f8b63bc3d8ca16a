"""``NucleiWeakWang2024Pipeline``: DoNuSeg (Wang et al., MICCAI 2024) from points.

Stages (a :class:`~nucleiweak_d2.engine.pipeline.StagedPipeline`, each in ``OUTPUT_DIR/<stage>/``):

1. ``train`` (seed ``SEED``): the DoNuSeg model (``NucleiWeakWang2024DoNuSeg``) trained end to
   end. The method has a single training stage: its pseudo-labels (initial label M, the
   selected CAM P, the pseudo-boxes) are made inside the model at every iteration from the
   annotated points the ``NucleiDatasetMapper`` puts on the instances, so there is nothing
   for an earlier stage to write.
2. ``eval``: the checkpoint selected on val (``model_best.pth``, or ``model_final.pth``
   without periodic evaluation; linked to ``OUTPUT_DIR/model_final.pth``) on
   ``NUCLEIWEAK.EVAL_DATASETS``.

Model selection uses ``DATASETS.TEST[0]`` (the val split) only, with
``NUCLEIWEAK.WANG2024.SELECT_METRIC``.
"""

from ...engine.pipeline import NUCLEIWEAK_PIPELINE_REGISTRY, Stage, StagedPipeline
from ...engine.trainer import Trainer

__all__ = ["NucleiWeakWang2024Pipeline"]

ARCH = "NucleiWeakWang2024DoNuSeg"


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
class NucleiWeakWang2024Pipeline(StagedPipeline):
    """DoNuSeg; see the module docstring. Configured by ``cfg.NUCLEIWEAK.WANG2024``."""

    result_key = "segmentation"

    def stage_cfg(self, stage="train"):
        """Config of the training stage: architecture, output folder, val-only periodic eval."""
        return self.training_cfg(stage, ARCH)

    def stages(self):
        return [Stage("train", self.training, seed_offset=0)]

    def training(self):
        return {"weights": self.train(self.stage_cfg(), self.cfg.NUCLEIWEAK.WANG2024.SELECT_METRIC)}

    def final_model(self):
        """The trained model; at test time it needs nothing a stage wrote but its weights."""
        c = self.stage_cfg()
        c.NUCLEIWEAK.COCO_EVAL = bool(
            self.cfg.NUCLEIWEAK.COCO_EVAL
            and self.cfg.NUCLEIWEAK.WANG2024.INSTANCES.OUTPUT_INSTANCES
        )
        return c, Trainer, self.best_weights(self.stage_dir("train"))
