"""``NucleiWeakLiu2022Pipeline``: SPN + IEN of Liu, He and He (ISBI 2022) from points.

Stages (a :class:`~nucleiweak_d2.engine.pipeline.StagedPipeline`; each in ``OUTPUT_DIR/<stage>/``):

1. ``pseudo_labels``: Voronoi and adaptive k-means labels of every training image
   (``labels/<image_id>.npz``, the SPN mapper's cache) and previews.
2. ``spn`` (seed ``SEED``): the semantic proposal network, the shared
   ``NucleiWeakUNetSegmentor`` trained on both labels (cross-entropy on the labelled pixels,
   weights ``NUCLEIWEAK.UNET.TARGET_WEIGHTS``, 1 and 1 as the authors).
3. ``spn_predict``: the selected SPN's foreground probability on every training image
   (``prob/<image_id>.npz``, array ``prob``; computed sharded, gathered, written once by the
   main process), and from it the IEN's instance pseudo-labels (``labels/<image_id>.npz``,
   the IEN mapper's cache) and previews.
4. ``ien`` (seed ``SEED + 1``): ``NucleiWeakLiu2022Model`` with the trained SPN frozen inside;
   the IEN learns from the instance labels with the discriminative loss, and the val
   evaluation scores the full inference (SPN foreground + grouped embeddings), so
   ``model_best.pth`` is the final model (``spn.*`` and ``ien.*`` weights in one file).
5. ``select_t0`` (only with ``INFERENCE.T0_CANDIDATES``): the final model on the val split at
   each candidate ``T_0``; the best replaces ``INFERENCE.T0`` for the evaluation.
6. ``eval``: the final model on ``NUCLEIWEAK.EVAL_DATASETS`` (weights linked to
   ``OUTPUT_DIR/model_final.pth``); training runs also score the SPN alone (the paper's
   Table 2 ablation "SPN", key ``spn_alone`` of ``metrics.json``).

Model selection (``model_best.pth``, ``T_0``) uses ``DATASETS.TEST[0]`` (the val split) only.
"""

import logging
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.utils import comm

from ...data.atomic import savez_compressed
from ...data.io import read_image, write_image
from ...data.records import cache_key, record_points
from ...engine.pipeline import NUCLEIWEAK_PIPELINE_REGISTRY, Stage, StagedPipeline
from ...engine.trainer import Trainer
from .pseudo_labels import BACKGROUND_ID, FIRST_INSTANCE_ID

__all__ = ["NucleiWeakLiu2022Pipeline"]

logger = logging.getLogger(__name__)

SPN_ARCH, FINAL_ARCH = "NucleiWeakUNetSegmentor", "NucleiWeakLiu2022Model"
SPN_MAPPER, IEN_MAPPER = "NucleiWeakLiu2022SPNMapper", "NucleiWeakLiu2022IENMapper"


def instance_preview(label, seed=0):
    """RGB picture of an instance pseudo-label: black ignore, grey background, random colours."""
    rng = np.random.default_rng(seed)
    n = int(label.max()) + 1
    palette = rng.integers(64, 256, size=(max(n, FIRST_INSTANCE_ID), 3), dtype=np.uint8)
    palette[0] = 0
    palette[BACKGROUND_ID] = 110
    return palette[label]


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
class NucleiWeakLiu2022Pipeline(StagedPipeline):
    """Liu et al. (ISBI 2022); see the module docstring. Configured by ``cfg.NUCLEIWEAK.LIU2022``."""

    result_key = "segmentation"

    def __init__(self, cfg, *, resume=False, eval_only=False):
        super().__init__(cfg, resume=resume, eval_only=eval_only)
        self.m = cfg.NUCLEIWEAK.LIU2022

    # ------------------------------------------------------------------ stage configs
    def stage_cfg(self, stage, arch):
        """Config of one stage: architecture, mapper, schedule and output folder."""
        c = self.training_cfg(stage, arch)
        if arch == SPN_ARCH:
            c.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
            c.NUCLEIWEAK.MAPPER = SPN_MAPPER
            c.SOLVER.MAX_ITER, c.SOLVER.BASE_LR = self.m.SPN.MAX_ITER, self.m.SPN.BASE_LR
        else:
            c.NUCLEIWEAK.MAPPER = IEN_MAPPER
            c.SOLVER.MAX_ITER, c.SOLVER.BASE_LR = self.m.IEN.MAX_ITER, self.m.IEN.BASE_LR
            c.SOLVER.WEIGHT_DECAY = c.SOLVER.WEIGHT_DECAY_NORM = self.m.IEN.WEIGHT_DECAY
            if self.m.IEN.EVAL_PERIOD > 0:
                c.TEST.EVAL_PERIOD = self.m.IEN.EVAL_PERIOD
            c.MODEL.WEIGHTS = ""  # the IEN's initial weights go to the IEN only (ien_weights)
        return c

    def spn_cfg(self):
        """``(cfg, trainer)`` of the SPN stage."""
        mapper = {"cache_dir": str(self.stage_dir("pseudo_labels") / "labels")}
        return self.stage_cfg("spn", SPN_ARCH), Trainer.with_overrides(mapper=mapper)

    def ien_cfg(self):
        """``(cfg, trainer)`` of the IEN stage (the SPN and the initial weights passed in)."""
        mapper = {
            "prob_dir": str(self.stage_dir("spn_predict") / "prob"),
            "cache_dir": str(self.stage_dir("spn_predict") / "labels"),
        }
        model = {
            "spn_weights": self.stage_info("spn")["weights"],
            "ien_weights": str(self.cfg.MODEL.WEIGHTS or ""),
        }
        return self.stage_cfg("ien", FINAL_ARCH), Trainer.with_overrides(mapper=mapper, model=model)

    def final_model(self):
        """The SPN + IEN model kept on val in the ``ien`` stage, at the ``T_0`` chosen on val
        (``select_t0``) or ``INFERENCE.T0``; it needs no file of an earlier stage."""
        c = self.stage_cfg("ien", FINAL_ARCH)
        c.NUCLEIWEAK.COCO_EVAL = bool(
            self.cfg.NUCLEIWEAK.COCO_EVAL and self.cfg.NUCLEIWEAK.UNET.OUTPUT_INSTANCES
        )
        c.NUCLEIWEAK.LIU2022.INFERENCE.T0 = self.chosen_t0()[0]
        return c, Trainer, self.best_weights(self.stage_dir("ien"))

    def chosen_t0(self):
        """``(T_0, source)``: the value ``select_t0`` chose on val when this run has it, else
        ``INFERENCE.T0`` (e.g. ``--eval-only`` of a weights file from another folder)."""
        if (
            self.m.INFERENCE.T0_CANDIDATES
            and (self.stage_dir("select_t0") / "stage_done.json").is_file()
        ):
            return float(self.stage_info("select_t0")["t0"]), "val (select_t0)"
        return float(self.m.INFERENCE.T0), "config"

    # ------------------------------------------------------------------ stages
    def stages(self):
        stages = [
            Stage("pseudo_labels", self.pseudo_labels),
            Stage("spn", self.train_spn, seed_offset=0),
            Stage("spn_predict", self.spn_predict),
            Stage("ien", self.train_ien, seed_offset=1),
        ]
        if self.m.INFERENCE.T0_CANDIDATES:
            stages.append(Stage("select_t0", self.select_t0))
        return stages

    def _records(self):
        return DatasetCatalog.get(self.train_set)

    def pseudo_labels(self):
        c, trainer = self.spn_cfg()
        if comm.is_main_process():
            mapper = trainer.build_mapper(c, True)  # computes and caches the labels of each image
            preview = self.stage_dir("pseudo_labels") / "preview"
            palette = np.array([[0, 0, 0], [0, 255, 0], [255, 128, 0]], dtype=np.uint8)
            for record in self._records():
                maps = mapper.cached_targets(record, read_image(record["file_name"]))
                for name, m in maps.items():
                    write_image(preview / f"{cache_key(record)}_{name}.png", palette[m])
        comm.synchronize()
        return {"labels": str(self.stage_dir("pseudo_labels") / "labels")}

    def train_spn(self):
        c, trainer = self.spn_cfg()
        return {"weights": self.train(c, self.m.SPN.SELECT_METRIC, trainer)}

    def spn_predict(self):
        c, trainer = self.spn_cfg()
        model = self.load_model(c, self.stage_info("spn")["weights"], trainer)
        probs = self.infer(
            c, model, self.train_set, lambda inp, out: out["prob"].float().cpu().numpy(), trainer
        )
        out = self.stage_dir("spn_predict")
        info = {"prob": str(out / "prob"), "labels": str(out / "labels")}
        if comm.is_main_process():
            records = self._records()
            for record in records:
                savez_compressed(
                    out / "prob" / f"{cache_key(record)}.npz",
                    prob=probs[str(record["image_id"])].astype(np.float32),
                )
            ien_c, ien_trainer = self.ien_cfg()
            mapper = ien_trainer.build_mapper(ien_c, True)  # computes and caches the labels
            n_inst = n_pts = 0
            for record in records:
                label = mapper.cached_targets(record, read_image(record["file_name"]))["instances"]
                write_image(
                    out / "preview" / f"{cache_key(record)}_instances.png", instance_preview(label)
                )
                n_inst += len(np.unique(label[label >= FIRST_INSTANCE_ID]))
                n_pts += len(record_points(record))
            info.update(instances=int(n_inst), points=int(n_pts))
            logger.info("spn_predict: %d instance pseudo-labels from %d points", n_inst, n_pts)
            if n_inst == 0:
                logger.warning(
                    "spn_predict: the SPN finds no foreground above T_FG = %g at any "
                    "training point, so the IEN has no instance to learn; train the "
                    "SPN longer (LIU2022.SPN.MAX_ITER) or check its val scores",
                    self.m.IEN.T_FG,
                )
        comm.synchronize()
        return info

    def train_ien(self):
        c, trainer = self.ien_cfg()
        return {"weights": self.train(c, self.m.IEN.SELECT_METRIC, trainer)}

    def extra_evaluation(self, out_dir):
        """The ``T_0`` the evaluation used and where it came from, and (training runs) the
        scores of the SPN alone (in ``metrics.json``)."""
        t0, source = self.chosen_t0()
        extra = {"inference": {"T0": t0, "T0_from": source}}
        if not self.eval_only and (self.stage_dir("spn") / "stage_done.json").is_file():
            extra["spn_alone"] = self.spn_alone(Path(out_dir) / "spn_alone")
        return extra

    def spn_alone(self, out_dir):
        """The ablation row "SPN" of the paper's Table 2: the selected SPN with its own
        post-processing (foreground where its probability exceeds 0.5, the paper's argmax,
        cleaned by ``UNET.MIN_AREA`` / ``FILL_HOLES``, one instance per connected component),
        scored on val and the eval sets.

        Returns
        -------
        dict
            ``{dataset: nuclei metrics}`` (main process; ``{}`` elsewhere).
        """
        c, trainer = self.spn_cfg()
        model = self.load_model(c, self.stage_info("spn")["weights"], trainer)
        metrics = {}
        for ds in dict.fromkeys([self.val_set, *self.eval_sets]):
            if ds:
                res = self.evaluate(c, model, ds, out_dir / ds, trainer)
                if res:
                    metrics[ds] = dict(res.get("nuclei", {}))
        return metrics

    def select_t0(self):
        """Score the final model on val at every candidate ``T_0``; keep the best (the first
        on ties). Without a val split, ``INFERENCE.T0`` is kept."""
        candidates = [float(t) for t in self.m.INFERENCE.T0_CANDIDATES]
        if not self.val_set:
            return {"t0": float(self.m.INFERENCE.T0), "scores": {}}
        c = self.stage_cfg("ien", FINAL_ARCH)
        model = self.load_model(c, self.stage_info("ien")["weights"], Trainer)
        task, _, key = self.m.IEN.SELECT_METRIC.partition("/")
        scores = {}
        for t in candidates:
            model.fg_threshold = t
            res = self.evaluate(c, model, self.val_set, self.stage_dir("select_t0") / f"t0_{t:g}")
            scores[f"{t:g}"] = float(res[task][key]) if res else None
        valid = [(s, -i) for i, s in enumerate(scores.values()) if s is not None]
        best = candidates[-max(valid)[1]] if valid else float(self.m.INFERENCE.T0)
        logger.info("select_t0: val %s %s -> T0 = %g", self.m.IEN.SELECT_METRIC, scores, best)
        return {"t0": best, "scores": scores}
