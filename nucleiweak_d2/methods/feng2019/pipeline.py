"""``NucleiWeakFeng2019Pipeline``: a Mask R-CNN of Feng et al. 2019 (or a baseline) as a run.

Stages (a :class:`~nucleiweak_d2.engine.pipeline.StagedPipeline`, each in ``OUTPUT_DIR/<stage>/``):

1. ``train`` (seed ``SEED``): the model of ``MODEL.META_ARCHITECTURE`` (the partial-annotation
   model ``NucleiWeakFeng2019RCNN`` or the baseline ``NucleiWeakFeng2019BaselineRCNN``) trained
   on ``DATASETS.TRAIN``; the checkpoint with the best ``FENG2019.SELECT_METRIC`` on val is kept.
   With ``FENG2019.ANCHOR_FROM_DATA`` the centerness anchor (``FENG2019.ANCHOR_SIZE``) is the
   median (width, height) of the annotated training boxes, as the paper sets it; the value is
   recorded in the stage's info and used again at evaluation. With ``FENG2019.QUALITY_PERIOD``
   the partial model's pseudo-boxes on the training images are scored against the unannotated
   training nuclei during training (:class:`.quality_hook.PseudoBoxQualityHook`); the curve is
   in the stage's info and in ``metrics.json`` (``pseudo_box_quality``).
2. ``average`` (with ``FENG2019.AVERAGE_CHECKPOINTS`` = N > 1; not in the paper): the mean
   weights of the last N periodic checkpoints of ``train``
   (:mod:`~nucleiweak_d2.engine.checkpoint_average`) and the selected checkpoint are scored on
   val; the better one is the model of the next stages. On a 4-image val split the checkpoint
   choice is close to chance (the val AJI swings 0.03-0.06 between evaluations), and the mean
   of the late weights is steadier.
3. ``select_score`` (with ``FENG2019.INSTANCE_SCORE_CANDIDATES`` or
   ``FENG2019.INSTANCE_OVERLAP_CANDIDATES``): the selected model is run once on val and its
   instance map scored at every candidate instance score threshold
   (``NUCLEIWEAK.EVAL.INSTANCE_SCORE_THRESH``: masks scored below it are left out of the map)
   and, with overlap candidates, every overlap fraction of the ``mask_nms`` rule (a mask more
   than that fraction covered by higher-scored ones is dropped); the best pair (first on ties)
   is used on the eval sets. A Mask R-CNN returns every detection above ``SCORE_THRESH_TEST``
   (0.05) after a box NMS; painted all together, low-score fragments, false positives and
   second masks of one nucleus lower AJI, PQ and object precision by an amount that depends on
   each model's calibration, so each model gets its own choice, from val only (issue 17). The
   overlap choice is not in the paper (which does not say how its masks become one map).
4. ``eval``: the final model with that post-processing on ``NUCLEIWEAK.EVAL_DATASETS``
   (nuclei metrics, and COCO segm/bbox AP with ``NUCLEIWEAK.COCO_EVAL``).

The same recipe as ``benchmarks/feng2019_monuseg.py`` (which adds equal-time budgets and a
centerness threshold chosen on val), in the form ``tools/benchmark.py`` and
``tools/train_net.py`` run.
"""

import logging
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.utils import comm

from ...engine.pipeline import (
    NUCLEIWEAK_PIPELINE_REGISTRY,
    Stage,
    StagedPipeline,
    broadcast_from_main,
    first_best,
)
from ...engine.trainer import Trainer
from .quality_hook import PseudoBoxQualityHook, read_quality_curve

__all__ = ["NucleiWeakFeng2019Pipeline", "NucleiWeakFeng2019Trainer", "median_box_size"]

#: File of the train stage's pseudo-box quality checks (JSON lines).
QUALITY_FILE = "pseudo_box_quality.jsonl"

logger = logging.getLogger(__name__)


def median_box_size(records):
    """Median ``[width, height]`` of the annotated boxes (``point_labeled`` not 0) of ``records``.

    Raises
    ------
    ValueError
        When no record has an annotated box.
    """
    wh = [
        a["bbox"][2:4]
        for r in records
        for a in r.get("annotations", [])
        if a.get("point_labeled", 1) and "bbox" in a
    ]
    if not wh:
        raise ValueError("no annotated box in the training set: cannot set the anchor size")
    return [float(v) for v in np.median(np.asarray(wh, dtype=np.float64), axis=0)]


class _ManyEvaluators(DatasetEvaluator):
    """Several evaluators fed by one inference; ``evaluate`` returns ``{name: results}``."""

    def __init__(self, evaluators):
        self.evaluators = dict(evaluators)

    def reset(self):
        for e in self.evaluators.values():
            e.reset()

    def process(self, inputs, outputs):
        for e in self.evaluators.values():
            e.process(inputs, outputs)

    def evaluate(self):
        results = {name: e.evaluate() for name, e in self.evaluators.items()}
        return results if comm.is_main_process() else None


class NucleiWeakFeng2019Trainer(Trainer):
    """The project's trainer plus, with ``FENG2019.QUALITY_PERIOD`` > 0 and a model that makes
    pseudo-boxes (``NucleiWeakFeng2019RCNN``), a :class:`PseudoBoxQualityHook` on the records of
    ``DATASETS.TRAIN[0]`` writing ``OUTPUT_DIR/pseudo_box_quality.jsonl``."""

    def build_hooks(self):
        out = super().build_hooks()
        f = self.cfg.NUCLEIWEAK.FENG2019
        model = getattr(self.model, "module", self.model)
        if int(f.QUALITY_PERIOD) > 0 and hasattr(model, "pseudo_boxes") and self.cfg.DATASETS.TRAIN:
            out.append(
                PseudoBoxQualityHook(
                    DatasetCatalog.get(self.cfg.DATASETS.TRAIN[0]),
                    self.build_mapper(self.cfg, False),
                    int(f.QUALITY_PERIOD),
                    Path(self.cfg.OUTPUT_DIR) / QUALITY_FILE,
                    f.QUALITY_THRESHOLDS,
                )
            )
        return out


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
class NucleiWeakFeng2019Pipeline(StagedPipeline):
    """Train, choose the instance post-processing on val, evaluate; see the module docstring.

    Configured by ``cfg.NUCLEIWEAK.FENG2019`` (``SELECT_METRIC``, ``ANCHOR_FROM_DATA``,
    ``INSTANCE_SCORE_CANDIDATES``, ``INSTANCE_OVERLAP_CANDIDATES``) and
    ``cfg.NUCLEIWEAK.EVAL.INSTANCE_*``.
    """

    result_key = "segmentation"

    @property
    def f(self):
        return self.cfg.NUCLEIWEAK.FENG2019

    def anchor_size(self):
        """``(anchor [w, h], source)``: the one the ``train`` stage used when it has run, else
        the median annotated training box (``ANCHOR_FROM_DATA``) or ``ANCHOR_SIZE``."""
        if not self.f.ANCHOR_FROM_DATA:
            return [float(v) for v in self.f.ANCHOR_SIZE], "config"
        done = self.stage_dir("train") / "stage_done.json"
        if done.is_file() and "anchor_size" in self.stage_info("train"):
            return self.stage_info("train")["anchor_size"], "train stage"
        if not self.train_set:
            raise ValueError(
                "FENG2019.ANCHOR_FROM_DATA needs DATASETS.TRAIN (or a finished train stage in "
                "OUTPUT_DIR) to know the median training box; set ANCHOR_SIZE instead"
            )
        return median_box_size(DatasetCatalog.get(self.train_set)), "median training box"

    def stage_cfg(self):
        """Config of the training stage (its folder, val-only selection, the anchor size)."""
        c = self.training_cfg("train", self.cfg.MODEL.META_ARCHITECTURE)
        c.NUCLEIWEAK.FENG2019.ANCHOR_SIZE = self.anchor_size()[0]
        return c

    def stages(self):
        stages = [Stage("train", self.training, seed_offset=0)]
        if int(self.f.AVERAGE_CHECKPOINTS) > 1:
            stages.append(Stage("average", self.average))
        if self.selects_postprocess():
            stages.append(Stage("select_score", self.select_score))
        return stages

    def training(self):
        c = self.stage_cfg()
        anchor = [float(v) for v in c.NUCLEIWEAK.FENG2019.ANCHOR_SIZE]
        weights = self.train(c, self.f.SELECT_METRIC, trainer=NucleiWeakFeng2019Trainer)
        info = {"weights": weights, "anchor_size": anchor}
        curve = read_quality_curve(self.stage_dir("train") / QUALITY_FILE)
        if curve:
            info["pseudo_box_quality"] = curve
        return info

    def average(self):
        """The mean of the last ``AVERAGE_CHECKPOINTS`` periodic checkpoints of ``train``
        (:mod:`~nucleiweak_d2.engine.checkpoint_average`, a deviation) scored on val against
        the checkpoint ``train`` selected, at the configured post-processing; the better one
        (the selected checkpoint on ties, and without val) is the model from here on."""
        from ...engine.checkpoint_average import last_periodic_checkpoints, write_average

        n = int(self.f.AVERAGE_CHECKPOINTS)
        try:
            found = last_periodic_checkpoints(self.stage_dir("train"), n)
        except ValueError as exc:
            raise ValueError(
                f"FENG2019.AVERAGE_CHECKPOINTS is {n} but {exc}: lower it or "
                "SOLVER.CHECKPOINT_PERIOD"
            ) from None
        selected = self.best_weights(self.stage_dir("train"))
        averaged = str(self.stage_dir("average") / "model_average.pth")
        if comm.is_main_process():
            write_average(found, averaged)
        comm.synchronize()
        info = {"averaged_from": [p.name for p in found], "weights": selected}
        if not self.val_set:
            return {**info, "scores": {}}
        c = self.stage_cfg()
        candidates = {"selected": selected, "average": averaged}
        results = {
            name: self.evaluate(
                c, self.load_model(c, w), self.val_set, self.stage_dir("average") / name
            )
            for name, w in candidates.items()
        }
        name, scores = broadcast_from_main(first_best(results, self.f.SELECT_METRIC))
        logger.info("average: val %s %s -> %s", self.f.SELECT_METRIC, scores, name)
        return {**info, "weights": candidates[name or "selected"], "scores": scores}

    def model_weights(self):
        """The trained model: the ``average`` stage's choice when this run has it, else the
        checkpoint ``train`` selected on val."""
        done = self.stage_dir("average") / "stage_done.json"
        if int(self.f.AVERAGE_CHECKPOINTS) > 1 and done.is_file():
            return self.stage_info("average")["weights"]
        return self.best_weights(self.stage_dir("train"))

    def select_score(self):
        """Val score of the selected model at every candidate post-processing (one inference):
        each ``INSTANCE_SCORE_CANDIDATES`` value (else the config's threshold) with each
        ``INSTANCE_OVERLAP_CANDIDATES`` fraction of the ``mask_nms`` rule (else the config's
        rule), and the best (the first on ties; without val, the config's)."""
        ev = self.cfg.NUCLEIWEAK.EVAL
        fixed = self.configured_postprocess()
        if not self.val_set:
            return {**fixed, "scores": {}}
        c = self.stage_cfg()
        model = self.load_model(c, self.model_weights())
        evaluators, choices = {}, {}
        for t in self.f.INSTANCE_SCORE_CANDIDATES or [ev.INSTANCE_SCORE_THRESH]:
            for o in self.f.INSTANCE_OVERLAP_CANDIDATES or [None]:
                ct = c.clone()
                ct.NUCLEIWEAK.EVAL.INSTANCE_SCORE_THRESH = float(t)
                name = f"{float(t):g}"
                choice = {"threshold": float(t)}
                if o is not None:
                    ct.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP = "mask_nms"
                    ct.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP_THRESH = float(o)
                    name += f"/mask_nms{float(o):g}"
                    choice.update(overlap="mask_nms", overlap_thresh=float(o))
                folder = self.stage_dir("select_score") / name.replace("/", "_")
                evaluators[name] = Trainer.build_evaluator(ct, self.val_set, str(folder))
                choices[name] = {**fixed, **choice}
        results = inference_on_dataset(
            model, Trainer.build_test_loader(c, self.val_set), _ManyEvaluators(evaluators)
        )
        name, scores = first_best(results or {}, self.f.SELECT_METRIC)
        best = choices[name] if name is not None else fixed
        logger.info("select_score: val %s %s -> %s", self.f.SELECT_METRIC, scores, best)
        return {**best, "scores": scores}

    def configured_postprocess(self):
        """The instance score threshold and overlap rule of ``NUCLEIWEAK.EVAL``."""
        ev = self.cfg.NUCLEIWEAK.EVAL
        return {
            "threshold": float(ev.INSTANCE_SCORE_THRESH),
            "overlap": str(ev.INSTANCE_OVERLAP),
            "overlap_thresh": float(ev.INSTANCE_OVERLAP_THRESH),
        }

    def selects_postprocess(self):
        """Whether the ``select_score`` stage runs (any candidate list set)."""
        return bool(self.f.INSTANCE_SCORE_CANDIDATES or self.f.INSTANCE_OVERLAP_CANDIDATES)

    def chosen_postprocess(self):
        """``(post-processing, source)``: ``select_score``'s choice (``threshold``, ``overlap``,
        ``overlap_thresh``) when this run has it, else ``NUCLEIWEAK.EVAL``'s."""
        done = self.stage_dir("select_score") / "stage_done.json"
        if self.selects_postprocess() and done.is_file():
            info = self.stage_info("select_score")
            # a stage of a run before the overlap candidates recorded the threshold alone
            return {**self.configured_postprocess(), **info}, "val (select_score)"
        return self.configured_postprocess(), "config"

    def final_model(self):
        """The trained model at the chosen post-processing; COCO AP as ``NUCLEIWEAK.COCO_EVAL``
        says."""
        c = self.stage_cfg()
        c.NUCLEIWEAK.COCO_EVAL = bool(self.cfg.NUCLEIWEAK.COCO_EVAL)
        chosen = self.chosen_postprocess()[0]
        c.NUCLEIWEAK.EVAL.INSTANCE_SCORE_THRESH = float(chosen["threshold"])
        c.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP = str(chosen["overlap"])
        c.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP_THRESH = float(chosen["overlap_thresh"])
        return c, Trainer, self.model_weights()

    def extra_evaluation(self, out_dir):
        """The instance score threshold and the anchor the evaluation used, and their source."""
        chosen, source = self.chosen_postprocess()
        anchor, anchor_source = self.anchor_size()
        out = {
            "inference": {
                "INSTANCE_SCORE_THRESH": chosen["threshold"],
                "INSTANCE_OVERLAP": chosen["overlap"],
                "INSTANCE_OVERLAP_THRESH": chosen["overlap_thresh"],
                "from": source,
                "ANCHOR_SIZE": anchor,
                "anchor_from": anchor_source,
            }
        }
        curve = read_quality_curve(self.stage_dir("train") / QUALITY_FILE)
        if curve:
            out["pseudo_box_quality"] = curve
        return out
