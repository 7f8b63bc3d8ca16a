"""``NucleiWeakQu2020Pipeline``: the whole method of Qu et al. (TMI 2020) from partial points.

Stages (a :class:`~nucleiweak_d2.engine.pipeline.StagedPipeline`; each in ``OUTPUT_DIR/<stage>/``):

1. ``det_round0`` .. ``det_round<R>`` (seed ``SEED + k``): the point detector trained on the
   extended Gaussian mask of the annotated points; after round k < R its probability maps on the
   training images give the propagated background (``background/<image_id>.png``) of round
   k + 1. Every round trains from ``MODEL.WEIGHTS`` again, as the authors' code does.
   With ``DET.ENSEMBLE`` = E > 1 (a deviation: the paper trains one detector a round), each round
   trains E detectors, ``det_round<k>`` and ``det_round<k>_m<m>`` (seed ``SEED + k + 1000 m``),
   and their mean probability map (:class:`~nucleiweak_d2.modeling.meta_arch.
   NucleiWeakPointDetectorEnsemble`) gives the background, the val score and the points; the
   last member's stage writes the round's background and val score. With
   ``DET.CALIBRATE_EVAL`` each periodic val evaluation first chooses the detector's threshold
   and minimum area on val (a deviation), so a round keeps its checkpoint by the F1 it will be
   used at rather than at the fixed threshold.
2. ``detect``: the last round's detector (or, with ``DET.SELECT_ROUND: best_val``, the round best
   on val) finds points on the training images; they are merged with the annotated points
   (annotated kept, a detection added only beyond r1 of all of them) into
   ``points_merged.json``. With ``DET.ENABLED`` False (every nucleus clicked: Qu et al.'s
   100 % results are "without the detection") no detection round runs and this stage writes
   the annotated points alone.
3. ``pseudo_labels``: Voronoi and cluster labels of every training image (cache + previews).
4. ``seg`` (seed ``SEED + 100``): segmentation training on both labels
   (``alpha L_vor + (1 - alpha) L_cluster``).
5. ``crf`` (seed ``SEED + 101``): fine-tuning from the selected ``seg`` model with the dense-CRF
   loss, lr x ``CRF.LR_FACTOR``; skipped when ``CRF.MAX_ITER`` is 0.
6. ``calibrate`` (with ``SEG.CALIBRATE_THRESHOLD``, a deviation: Qu et al. take the argmax):
   the foreground threshold of the last model chosen on val
   (:meth:`~nucleiweak_d2.engine.pipeline.StagedPipeline.calibrate_threshold`), saved in its
   weights as ``calibrate/model_best.pth``.
7. ``eval``: the final model (``calibrate/``, else ``crf/model_best.pth``, or ``seg``'s without
   CRF; linked to ``OUTPUT_DIR/model_final.pth``) on ``NUCLEIWEAK.EVAL_DATASETS``; the
   selected detector's detection metrics on val and the same sets.

Model selection (``model_best.pth``) uses ``DATASETS.TEST[0]`` (the val split) only.
"""

import logging

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.utils import comm

from ...data.atomic import write_json
from ...data.io import read_image, write_image
from ...data.records import cache_key, record_points
from ...engine.pipeline import (
    NUCLEIWEAK_PIPELINE_REGISTRY,
    Stage,
    StagedPipeline,
    broadcast_from_main,
)
from ...engine.trainer import (
    Trainer,
    calibrate_points_during_training,
    val_choosing_trainer,
)
from ...pseudo_labels.detection import propagated_background
from .artifacts import write_mask_png
from .postprocess import merge_points

__all__ = ["NucleiWeakQu2020Pipeline"]


logger = logging.getLogger(__name__)

DET_ARCH, SEG_ARCH = "NucleiWeakUNetPointDetector", "NucleiWeakUNetSegmentor"
DET_MAPPER, SEG_MAPPER = "NucleiWeakQu2020DetMapper", "NucleiWeakQu2020SegMapper"


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
class NucleiWeakQu2020Pipeline(StagedPipeline):
    """Qu et al. (TMI 2020); see the module docstring. Configured by ``cfg.NUCLEIWEAK.QU2020``."""

    result_key = "segmentation"

    def __init__(self, cfg, *, resume=False, eval_only=False):
        super().__init__(cfg, resume=resume, eval_only=eval_only)
        self.q = cfg.NUCLEIWEAK.QU2020
        self.detection = bool(self.q.DET.ENABLED)
        self.rounds = int(self.q.DET.ROUNDS)
        self.members = int(self.q.DET.ENSEMBLE)
        if self.members < 1:
            raise ValueError(
                f"NUCLEIWEAK.QU2020.DET.ENSEMBLE must be >= 1, got {self.q.DET.ENSEMBLE}"
            )
        if self.q.DET.SELECT_ROUND not in ("last", "best_val"):
            raise ValueError(
                "NUCLEIWEAK.QU2020.DET.SELECT_ROUND must be 'last' or 'best_val', "
                f"got {self.q.DET.SELECT_ROUND!r}"
            )
        opts = list(self.q.SEG.MODEL_OPTS)
        if len(opts) % 2 or any(k.startswith("NUCLEIWEAK.QU2020.") for k in opts[::2]):
            raise ValueError(
                "NUCLEIWEAK.QU2020.SEG.MODEL_OPTS must be KEY VALUE pairs outside "
                f"NUCLEIWEAK.QU2020, got {opts}"
            )
        cfg.clone().merge_from_list(opts)  # an unknown key fails here, before any training

    # ------------------------------------------------------------------ stage configs
    def stage_cfg(self, stage, arch):
        """Config of one stage: architecture, mapper, schedule and output folder."""
        c = self.training_cfg(stage, arch)
        if arch == DET_ARCH:
            c.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1
            c.NUCLEIWEAK.MAPPER = DET_MAPPER
            c.SOLVER.MAX_ITER, c.SOLVER.BASE_LR = self.q.DET.MAX_ITER, self.q.DET.BASE_LR
        else:
            c.merge_from_list(list(self.q.SEG.MODEL_OPTS))
            c.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
            c.NUCLEIWEAK.MAPPER = SEG_MAPPER
            c.SOLVER.MAX_ITER, c.SOLVER.BASE_LR = self.q.SEG.MAX_ITER, self.q.SEG.BASE_LR
        return c

    def member_stage(self, k, m=0):
        """Stage name of detector ``m`` of round ``k`` (``det_round<k>`` for the first)."""
        return f"det_round{k}" if m == 0 else f"det_round{k}_m{m}"

    def round_stage(self, k):
        """The stage that writes round ``k``'s background and val score: its last member's."""
        return self.member_stage(k, self.members - 1)

    def det_cfg(self, k, m=0):
        """``(cfg, trainer)`` of detector ``m`` of round ``k`` (round k > 0 reads round k - 1's
        background)."""
        bg = str(self.stage_dir(self.round_stage(k - 1)) / "background") if k > 0 else ""
        return self.stage_cfg(self.member_stage(k, m), DET_ARCH), Trainer.with_overrides(
            mapper={"background_dir": bg}
        )

    def round_detector(self, k):
        """``(cfg, trainer, model)`` of round ``k``: its detector, or the ensemble of its
        ``DET.ENSEMBLE`` detectors, with the configured post-processing."""
        from ...modeling.meta_arch import NucleiWeakPointDetectorEnsemble

        models = []
        for m in range(self.members):
            c, trainer = self.det_cfg(k, m)
            weights = self.best_weights(self.stage_dir(self.member_stage(k, m)))
            models.append(self.load_model(c, weights, trainer))
        c, trainer = self.det_cfg(k)
        if len(models) == 1:
            return c, trainer, models[0]
        return c, trainer, NucleiWeakPointDetectorEnsemble(models).eval()

    def _seg_trainer(self, **model):
        mapper = {
            "points_file": str(self.stage_dir("detect") / "points_merged.json"),
            "cache_dir": str(self.stage_dir("pseudo_labels") / "labels"),
        }
        return Trainer.with_overrides(mapper=mapper, model=model)

    def seg_cfg(self):
        return self.stage_cfg("seg", SEG_ARCH), self._seg_trainer()

    def crf_cfg(self):
        c = self.stage_cfg("crf", SEG_ARCH)
        c.SOLVER.MAX_ITER = self.q.CRF.MAX_ITER
        c.SOLVER.BASE_LR = self.q.SEG.BASE_LR * self.q.CRF.LR_FACTOR
        c.MODEL.WEIGHTS = self.best_weights(self.stage_dir("seg"))
        return c, self._seg_trainer(crf_weight=self.cfg.NUCLEIWEAK.LOSSES.CRF.WEIGHT)

    def trained_stage(self):
        """The last training stage: ``crf``, or ``seg`` when the CRF stage is skipped."""
        return "crf" if self.q.CRF.MAX_ITER > 0 else "seg"

    def final_cfg(self):
        """Config of the final segmentor (the last training stage's) with the test-time flips
        of ``NUCLEIWEAK.QU2020.SEG.FINAL_TEST_FLIPS`` when set."""
        c = self.stage_cfg(self.trained_stage(), SEG_ARCH)
        if self.q.SEG.FINAL_TEST_FLIPS:
            c.NUCLEIWEAK.UNET.TEST_FLIPS = int(self.q.SEG.FINAL_TEST_FLIPS)
        return c

    def final_model(self):
        """The segmentor of the last stage; at test time it needs nothing an earlier stage wrote."""
        stage = self.trained_stage()
        c = self.final_cfg()
        c.NUCLEIWEAK.COCO_EVAL = bool(
            self.cfg.NUCLEIWEAK.COCO_EVAL and self.cfg.NUCLEIWEAK.UNET.OUTPUT_INSTANCES
        )
        if self.q.SEG.CALIBRATE_THRESHOLD:
            stage = "calibrate"
        return c, Trainer, self.best_weights(self.stage_dir(stage))

    # ------------------------------------------------------------------ stages
    def stages(self):
        stages = [
            Stage(
                self.member_stage(k, m),
                lambda k=k, m=m: self.detection_round(k, m),
                seed_offset=k + 1000 * m,
            )
            for k in range(self.rounds + 1 if self.detection else 0)
            for m in range(self.members)
        ]
        stages += [
            Stage("detect", self.detect_and_merge),
            Stage("pseudo_labels", self.pseudo_labels),
            Stage("seg", self.segmentation, seed_offset=100),
        ]
        if self.q.CRF.MAX_ITER > 0:
            stages.append(Stage("crf", self.crf_finetuning, seed_offset=101))
        if self.q.SEG.CALIBRATE_THRESHOLD:
            stages.append(Stage("calibrate", self.calibrate))
        return stages

    def detection_round(self, k, m=0):
        """Train detector ``m`` of round ``k``; the round's last detector then scores the round
        on val (``best_val``) and writes its propagated background (before the last round)."""
        c, trainer = self.det_cfg(k, m)
        if self.q.DET.CALIBRATE_EVAL:
            trainer = val_choosing_trainer(trainer, calibrate_points_during_training, "Calibrating")
        weights = self.train(c, self.q.DET.SELECT_METRIC, trainer)
        info = {"weights": weights}
        if m < self.members - 1:
            return info
        c, trainer, model = self.round_detector(k)
        if self.q.DET.SELECT_ROUND == "best_val" and self.val_set:
            res = self.evaluate(
                c,
                model,
                self.val_set,
                self.stage_dir(self.round_stage(k)) / "inference" / self.val_set,
                trainer,
            )
            task, _, key = self.q.DET.SELECT_METRIC.partition("/")
            info["val_score"] = float(res[task][key]) if res else None
        if k < self.rounds:
            bg_dir = self.stage_dir(self.round_stage(k)) / "background"
            min_area = self.q.DET.BG_MIN_AREA or None

            def save_background(inp, out):
                prob = out["prob"].cpu().numpy().clip(0, 1)
                bg = propagated_background(
                    prob,
                    r1=self.q.DET.R1,
                    low=self.q.DET.BG_LOW,
                    high=self.q.DET.BG_HIGH,
                    min_area=min_area,
                )
                write_mask_png(bg_dir / f"{cache_key(inp)}.png", bg)

            self.infer(
                c,
                model,
                self.train_set,
                save_background,
                trainer,
                gather=False,
            )
        return info

    def selected_round(self):
        """Index of the detection round whose detector finds the points.

        ``DET.SELECT_ROUND == "last"`` (the paper): the last round. ``"best_val"``: the round
        with the highest ``DET.SELECT_METRIC`` on the val split (the earliest on ties), a
        deviation for short schedules where a self-training round can end worse than the one
        before it; val only, never test.
        """
        if self.q.DET.SELECT_ROUND == "last" or not self.val_set:
            return self.rounds
        scores = [
            self.stage_info(self.round_stage(k)).get("val_score") for k in range(self.rounds + 1)
        ]
        best = int(np.argmax([float("-inf") if s is None else s for s in scores]))
        logger.info(
            "detection rounds' val %s: %s -> round %d", self.q.DET.SELECT_METRIC, scores, best
        )
        return best

    def detector(self, k, info=None):
        """``(cfg, trainer, model)`` of detection round ``k`` (:meth:`round_detector`) with the
        post-processing the ``detect`` stage chose on val (``info``, when given, or its
        record)."""
        c, trainer, model = self.round_detector(k)
        if info is None:
            info = self.stage_info("detect")
        if "point_threshold" in info:
            model.threshold, model.min_area = info["point_threshold"], info["point_min_area"]
        return c, trainer, model

    def calibrate_detector(self, c, model, trainer):
        """Threshold and minimum blob area of the detector chosen on val by detection F1
        (``DET.CALIBRATE``; a deviation: Qu et al. fix 0.35 and 12 px for their schedule)."""
        from ...engine.calibration import calibrate_point_detector

        if not (self.q.DET.CALIBRATE and self.val_set):
            return {}
        probs = self.infer(
            c, model, self.val_set, lambda inp, out: out["prob"].half().cpu(), trainer
        )
        if not probs:  # not the main process
            return {}
        return calibrate_point_detector(model, self.cfg, self.val_set, probs)

    def detect_and_merge(self):
        if not self.detection:
            return self._merge({}, {"round": None})
        k = self.selected_round()
        c, trainer, model = self.round_detector(k)
        calib = broadcast_from_main(self.calibrate_detector(c, model, trainer))
        if calib:
            model.threshold, model.min_area = calib["point_threshold"], calib["point_min_area"]
        detected = self.infer(
            c, model, self.train_set, lambda inp, out: out["pred_points"].cpu().numpy(), trainer
        )
        if comm.is_main_process():  # ``infer`` gathers every image's points there
            write_json(
                self.stage_dir("detect") / "points_detected.json",
                {k: v.tolist() for k, v in detected.items()},
            )
        return self._merge(detected, {"round": k, **calib})

    def _merge(self, detected, info):
        """Write ``points_merged.json`` (on the main process): each training image's annotated
        points, then its ``detected`` points beyond r1 of all of them; ``info`` plus counts."""
        if comm.is_main_process():
            merged, n_ann, n_det = {}, 0, 0
            for record in DatasetCatalog.get(self.train_set):
                key = str(record["image_id"])
                ann = record_points(record)
                pts = merge_points(ann, detected.get(key, np.zeros((0, 2))), self.q.DET.R1)
                pts[:, 0] = pts[:, 0].clip(0, record["width"] - 1)
                pts[:, 1] = pts[:, 1].clip(0, record["height"] - 1)
                merged[key] = pts.tolist()
                n_ann, n_det = n_ann + len(ann), n_det + len(pts) - len(ann)
            write_json(self.stage_dir("detect") / "points_merged.json", merged)
            info.update(annotated_points=n_ann, added_detections=n_det)
            logger.info(
                "detect: %d annotated points, %d detections added (round %s)",
                n_ann,
                n_det,
                info["round"],
            )
        return info

    def pseudo_labels(self):
        c, trainer = self.seg_cfg()
        if comm.is_main_process():
            mapper = trainer.build_mapper(c, True)  # computes and caches the labels of each image
            preview = self.stage_dir("pseudo_labels") / "preview"
            palette = np.array([[0, 0, 0], [0, 255, 0], [255, 128, 0]], dtype=np.uint8)
            for record in DatasetCatalog.get(self.train_set):
                maps = mapper.cached_targets(record, read_image(record["file_name"]))
                for name, m in maps.items():
                    write_image(preview / f"{record['image_id']}_{name}.png", palette[m])
        return {"labels": str(self.stage_dir("pseudo_labels") / "labels")}

    def segmentation(self):
        c, trainer = self.seg_cfg()
        return {"weights": self.train(c, self.q.SEG.SELECT_METRIC, trainer)}

    def crf_finetuning(self):
        c, trainer = self.crf_cfg()
        return {"weights": self.train(c, self.q.SEG.SELECT_METRIC, trainer)}

    def calibrate(self):
        weights = self.best_weights(self.stage_dir(self.trained_stage()))
        return self.calibrate_threshold(self.final_cfg(), weights, "calibrate", Trainer)

    # ------------------------------------------------------------------ extra results
    def extra_evaluation(self, out_dir):
        """Detection P/R/F1 of the selected detector on val and the eval sets (training runs)."""
        if (
            self.eval_only
            or not self.detection
            or not (self.stage_dir("detect") / "stage_done.json").is_file()
        ):
            return {}
        c, trainer, model = self.detector(self.stage_info("detect")["round"])
        results = self.evaluate_scored_sets(c, model, out_dir / "detection", trainer)
        metrics = {
            ds: {m: v for m, v in res.get("nuclei", {}).items() if m.startswith("det_")}
            for ds, res in results.items()
        }
        return {"detection": metrics}


# Name used by configs written before the methods/ layout.
from ...data.registry import register_alias  # noqa: E402

register_alias(NUCLEIWEAK_PIPELINE_REGISTRY, "Qu2020Pipeline", NucleiWeakQu2020Pipeline)
