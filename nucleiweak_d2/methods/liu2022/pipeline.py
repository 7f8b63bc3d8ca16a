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
5. ``select_t0`` (only with ``INFERENCE.T0_CANDIDATES`` or ``BG_RULE_CANDIDATES``): the final
   model on the val split at each candidate ``T_0`` and background rule; the best pair
   replaces ``INFERENCE.T0`` / ``BG_RULE`` for the evaluation.
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
from .grouping import MemoClusterer
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
        """``(cfg, trainer)`` of the IEN stage (the SPN and the initial weights passed in).

        The IEN starts from ``MODEL.WEIGHTS`` (e.g. an ImageNet encoder), or with
        ``IEN.INIT_FROM_SPN`` from the selected SPN: its encoder and decoder have the IEN's
        shapes and are loaded, its prediction layer (2 classes, not ``EMBED_DIM``) is not, and
        the CoordConv stem keeps its identity start. This is our deviation for training from
        scratch on a CPU budget: the paper's IEN starts from ImageNet, and a random encoder
        learns the discriminative loss slowly (``docs/methods/liu2022.md``).
        """
        mapper = {
            "prob_dir": str(self.stage_dir("spn_predict") / "prob"),
            "cache_dir": str(self.stage_dir("spn_predict") / "labels"),
        }
        spn_weights = self.stage_info("spn")["weights"]
        init = spn_weights if self.m.IEN.INIT_FROM_SPN else str(self.cfg.MODEL.WEIGHTS or "")
        model = {"spn_weights": spn_weights, "ien_weights": init}
        return self.stage_cfg("ien", FINAL_ARCH), Trainer.with_overrides(mapper=mapper, model=model)

    def final_model(self):
        """The SPN + IEN model kept on val in the ``ien`` stage, at the ``T_0`` chosen on val
        (``select_t0``) or ``INFERENCE.T0``; it needs no file of an earlier stage."""
        c = self.stage_cfg("ien", FINAL_ARCH)
        c.NUCLEIWEAK.COCO_EVAL = bool(
            self.cfg.NUCLEIWEAK.COCO_EVAL and self.cfg.NUCLEIWEAK.UNET.OUTPUT_INSTANCES
        )
        t0, bg_rule, _ = self.chosen_inference()
        c.NUCLEIWEAK.LIU2022.INFERENCE.T0 = t0
        c.NUCLEIWEAK.LIU2022.INFERENCE.BG_RULE = bg_rule
        return c, Trainer, self.best_weights(self.stage_dir("ien"))

    def _selects(self):
        return bool(self.m.INFERENCE.T0_CANDIDATES or self.m.INFERENCE.BG_RULE_CANDIDATES)

    def chosen_inference(self):
        """``(T_0, background rule, source)``: the pair ``select_t0`` chose on val when this run
        has it, else ``INFERENCE.T0`` and ``INFERENCE.BG_RULE`` (e.g. ``--eval-only`` of a
        weights file from another folder)."""
        inf = self.m.INFERENCE
        if self._selects() and (self.stage_dir("select_t0") / "stage_done.json").is_file():
            info = self.stage_info("select_t0")
            return float(info["t0"]), str(info.get("bg_rule", inf.BG_RULE)), "val (select_t0)"
        return float(inf.T0), str(inf.BG_RULE), "config"

    # ------------------------------------------------------------------ stages
    def stages(self):
        stages = [
            Stage("pseudo_labels", self.pseudo_labels),
            Stage("spn", self.train_spn, seed_offset=0),
            Stage("spn_predict", self.spn_predict),
            Stage("ien", self.train_ien, seed_offset=1),
        ]
        if self._selects():
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

    def prepare_eval_model(self, model):
        """Eval sets may share images (MoNuSeg's testA and testB are parts of test): the final
        model groups each tile's points once (:class:`~.grouping.MemoClusterer`; the same
        result)."""
        model.clusterer = MemoClusterer()
        return model

    def extra_evaluation(self, out_dir):
        """The ``T_0`` the evaluation used and where it came from, and (training runs) the
        scores of the SPN alone (in ``metrics.json``)."""
        t0, bg_rule, source = self.chosen_inference()
        extra = {"inference": {"T0": t0, "BG_RULE": bg_rule, "T0_from": source}}
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
        results = self.evaluate_scored_sets(c, model, out_dir, trainer)
        return {ds: dict(res.get("nuclei", {})) for ds, res in results.items()}

    def select_t0(self):
        """Score the final model on val at every candidate ``T_0`` (``INFERENCE.T0_CANDIDATES``,
        else ``T0``) with every candidate background rule (``BG_RULE_CANDIDATES``, else
        ``BG_RULE``); keep the best pair (the first on ties). Without a val split the config's
        pair is kept. Scores are keyed ``"<T0>"``, or ``"<T0>/<rule>"`` with rule candidates."""
        inf = self.m.INFERENCE
        t0s = [float(t) for t in inf.T0_CANDIDATES] or [float(inf.T0)]
        rules = [str(r) for r in inf.BG_RULE_CANDIDATES] or [str(inf.BG_RULE)]
        if not self.val_set:
            return {"t0": float(inf.T0), "bg_rule": str(inf.BG_RULE), "scores": {}}
        c = self.stage_cfg("ien", FINAL_ARCH)
        model = self.load_model(c, self.stage_info("ien")["weights"], Trainer)
        model.clusterer = MemoClusterer()  # a T_0's tiles are grouped once for all the rules

        def setting(t, rule):
            def apply(m):
                m.fg_threshold, m.bg_rule = t, rule

            return apply

        pairs = {}
        for rule in rules:
            for t in t0s:
                pairs[f"{t:g}" if not inf.BG_RULE_CANDIDATES else f"{t:g}/{rule}"] = (t, rule)
        candidates = {
            name: (self.stage_dir("select_t0") / f"t0_{name.replace('/', '_')}", setting(*pair))
            for name, pair in pairs.items()
        }
        name, scores = self.select_on_val(c, model, candidates, self.m.IEN.SELECT_METRIC)
        best = pairs[name] if name is not None else (float(inf.T0), str(inf.BG_RULE))
        logger.info(
            "select_t0: val %s %s -> T0 = %g, BG_RULE = %s (%d tiles grouped, %d reused)",
            self.m.IEN.SELECT_METRIC,
            scores,
            *best,
            model.clusterer.calls,
            model.clusterer.hits,
        )
        return {"t0": best[0], "bg_rule": best[1], "scores": scores}
