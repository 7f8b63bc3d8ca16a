"""``NucleiWeakWang2024Pipeline``: DoNuSeg (Wang et al., MICCAI 2024) from points.

Stages (a :class:`~nucleiweak_d2.engine.pipeline.StagedPipeline`, each in ``OUTPUT_DIR/<stage>/``):

1. ``train`` (seed ``SEED``): the DoNuSeg model (``NucleiWeakWang2024DoNuSeg``) trained end to
   end. The method has a single training stage: its pseudo-labels (initial label M, the
   selected CAM P, the pseudo-boxes) are made inside the model at every iteration from the
   annotated points the ``NucleiDatasetMapper`` puts on the instances, so there is nothing
   for an earlier stage to write.
2. ``select_postprocess`` (only when ``WANG2024.SELECT.SEG_THRESHOLDS`` or
   ``SCORE_THRESHOLDS`` is set): the selected model runs once over val, at the lowest score
   candidate, and every (``SEG.THRESHOLD``, ``MODEL.RETINANET.SCORE_THRESH_TEST``) pair is
   scored by mean per-image AJI (:func:`.calibration.select_postprocess`, which says why).
   A deviation from the paper, which states neither value: at a CPU budget the network is not
   calibrated. With ``WANG2024.SELECT.DURING_TRAINING`` every periodic val evaluation of
   ``train`` makes the same choice first (:func:`select_during_training`), so the checkpoint
   too is chosen at its own best thresholds.
3. ``eval``: the checkpoint selected on val (``model_best.pth``, or ``model_final.pth``
   without periodic evaluation; linked to ``OUTPUT_DIR/model_final.pth``), at the chosen
   thresholds, on ``NUCLEIWEAK.EVAL_DATASETS``.

Model and threshold selection use ``DATASETS.TEST[0]`` (the val split) only; the checkpoint is
chosen with ``NUCLEIWEAK.WANG2024.SELECT_METRIC``, at the config's thresholds unless
``SELECT.DURING_TRAINING``.
"""

import logging

from detectron2.data import DatasetCatalog

from ...engine.pipeline import (
    NUCLEIWEAK_PIPELINE_REGISTRY,
    Stage,
    StagedPipeline,
    broadcast_from_main,
)
from ...engine.trainer import Trainer, unwrap_model, val_choosing_trainer
from ...evaluation.ground_truth import gt_label_map
from .calibration import select_postprocess

__all__ = ["NucleiWeakWang2024Pipeline", "select_on_val", "select_during_training"]

ARCH = "NucleiWeakWang2024DoNuSeg"
SELECT_STAGE = "select_postprocess"
logger = logging.getLogger(__name__)


def _candidates(cfg):
    """``(segmentation thresholds, score thresholds)`` of ``WANG2024.SELECT`` (an empty list
    stands for the config's value)."""
    sel = cfg.NUCLEIWEAK.WANG2024.SELECT
    segs = [float(t) for t in sel.SEG_THRESHOLDS] or [float(cfg.NUCLEIWEAK.WANG2024.SEG.THRESHOLD)]
    scores = [float(t) for t in sel.SCORE_THRESHOLDS] or [
        float(cfg.MODEL.RETINANET.SCORE_THRESH_TEST)
    ]
    return segs, scores


def select_on_val(cfg, model, dataset, trainer=Trainer):
    """The val-best (segmentation, score) threshold pair of ``model`` on ``dataset``.

    One inference at the lowest score candidate, then :func:`.calibration.select_postprocess`
    over ``WANG2024.SELECT``'s grid. The model's thresholds and outputs are left as they were.

    Returns
    -------
    tuple or None
        ``((seg, score), {"<seg>/<score>": val AJI})``, the main process's result on every
        process; None when ``dataset`` has no image.
    """
    net = unwrap_model(model)
    segs, score_c = _candidates(cfg)
    saved = (net.test_score_thresh, net.output_instances)
    net.test_score_thresh = min(score_c)  # every candidate's boxes are a subset
    net.output_instances = False  # dense masks are not needed here

    def keep(inp, out):
        det = out["detections"]
        return (
            out["prob"].float().cpu().numpy(),
            det.pred_boxes.tensor.cpu().numpy(),
            det.scores.cpu().numpy(),
        )

    try:
        collected = StagedPipeline.infer(cfg, net, dataset, keep, trainer=trainer)
    finally:
        net.test_score_thresh, net.output_instances = saved
    result = None
    if collected:  # the main process (the others get its choice below)
        records = DatasetCatalog.get(dataset)
        values = [collected[str(r["image_id"])] for r in records]
        result = select_postprocess(
            [v[0] for v in values],
            [(v[1], v[2]) for v in values],
            [gt_label_map(r) for r in records],
            segs,
            score_c,
            net.split_args,
        )
    return broadcast_from_main(result)


def select_during_training(trainer, cfg, model, dataset):
    """Set the model's ``seg_threshold`` / ``test_score_thresh`` to its val-best pair, in place
    (``WANG2024.SELECT.DURING_TRAINING``: before each periodic val evaluation).

    Without it a short schedule's under-confident network is scored at the config's 0.5, and
    the checkpoint kept is the one most confident at 0.5, not the best one: on TNBC (100 %
    points, seed 0, commit bec696f) the checkpoint of iteration 100 was kept, at val AJI 0.192
    with its thresholds chosen afterwards, where the final one (iteration 600) reaches 0.293.

    Returns
    -------
    tuple or None
        What :func:`select_on_val` returned.
    """
    net = unwrap_model(model)
    result = select_on_val(cfg, net, dataset, trainer)
    if result is not None:
        (seg, score), scores = result
        net.seg_threshold, net.test_score_thresh = float(seg), float(score)
        logger.info(
            "%s during training: SEG.THRESHOLD %g, SCORE_THRESH_TEST %g", SELECT_STAGE, seg, score
        )
    return result


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
class NucleiWeakWang2024Pipeline(StagedPipeline):
    """DoNuSeg; see the module docstring. Configured by ``cfg.NUCLEIWEAK.WANG2024``."""

    result_key = "segmentation"

    def stage_cfg(self, stage="train"):
        """Config of the training stage: architecture, output folder, val-only periodic eval."""
        return self.training_cfg(stage, ARCH)

    def _selects(self):
        sel = self.cfg.NUCLEIWEAK.WANG2024.SELECT
        return bool(sel.SEG_THRESHOLDS or sel.SCORE_THRESHOLDS)

    def _config_thresholds(self):
        return (
            float(self.cfg.NUCLEIWEAK.WANG2024.SEG.THRESHOLD),
            float(self.cfg.MODEL.RETINANET.SCORE_THRESH_TEST),
        )

    def stages(self):
        if self.cfg.NUCLEIWEAK.WANG2024.SELECT.DURING_TRAINING and not self._selects():
            raise ValueError(
                "NUCLEIWEAK.WANG2024.SELECT.DURING_TRAINING needs a grid: set "
                "SELECT.SEG_THRESHOLDS and/or SELECT.SCORE_THRESHOLDS"
            )
        stages = [Stage("train", self.training, seed_offset=0)]
        if self._selects():
            stages.append(Stage(SELECT_STAGE, self.select_thresholds))
        return stages

    def training(self):
        trainer = Trainer
        if self.cfg.NUCLEIWEAK.WANG2024.SELECT.DURING_TRAINING:
            trainer = val_choosing_trainer(Trainer, select_during_training, "Selecting")
        metric = self.cfg.NUCLEIWEAK.WANG2024.SELECT_METRIC
        return {"weights": self.train(self.stage_cfg(), metric, trainer=trainer)}

    def select_thresholds(self):
        """Val AJI of every (segmentation, score) threshold pair from one inference of the
        selected model; the best pair (the first on ties; without val, the config's)."""
        seg_fixed, score_fixed = self._config_thresholds()
        if not self.val_set:
            return {"seg_threshold": seg_fixed, "score_threshold": score_fixed, "scores": {}}
        c = self.stage_cfg()
        model = self.load_model(c, self.best_weights(self.stage_dir("train")))
        result = select_on_val(c, model, self.val_set)
        if result is None:
            return {"seg_threshold": seg_fixed, "score_threshold": score_fixed, "scores": {}}
        best, scores = result
        logger.info(
            "%s: val AJI %s -> SEG.THRESHOLD %g, SCORE_THRESH_TEST %g", SELECT_STAGE, scores, *best
        )
        return {"seg_threshold": best[0], "score_threshold": best[1], "scores": scores}

    def chosen_thresholds(self):
        """``(seg threshold, score threshold, source)``: ``select_postprocess``'s choice when this
        run has it, else the config's."""
        done = self.stage_dir(SELECT_STAGE) / "stage_done.json"
        if self._selects() and done.is_file():
            info = self.stage_info(SELECT_STAGE)
            return info["seg_threshold"], info["score_threshold"], f"val ({SELECT_STAGE})"
        return (*self._config_thresholds(), "config")

    def final_model(self):
        """The trained model at the chosen thresholds; at test time it needs nothing a stage
        wrote but its weights and those two numbers."""
        c = self.stage_cfg()
        c.NUCLEIWEAK.COCO_EVAL = bool(
            self.cfg.NUCLEIWEAK.COCO_EVAL
            and self.cfg.NUCLEIWEAK.WANG2024.INSTANCES.OUTPUT_INSTANCES
        )
        seg, score, _ = self.chosen_thresholds()
        c.NUCLEIWEAK.WANG2024.SEG.THRESHOLD = float(seg)
        c.MODEL.RETINANET.SCORE_THRESH_TEST = float(score)
        return c, Trainer, self.best_weights(self.stage_dir("train"))

    def extra_evaluation(self, out_dir):
        """The thresholds the evaluation used and where they come from."""
        seg, score, source = self.chosen_thresholds()
        return {"postprocess": {"SEG.THRESHOLD": seg, "SCORE_THRESH_TEST": score, "from": source}}
