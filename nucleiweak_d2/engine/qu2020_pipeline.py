"""``Qu2020Pipeline``: the whole method of Qu et al. (TMI 2020) from a dataset of partial points.

Stages, each in ``OUTPUT_DIR/<stage>/`` and skipped when its ``stage_done.json`` exists:

1. ``det_round0`` .. ``det_round<R>``: detector trained on the extended Gaussian mask of the
   annotated points; after round k < R its probability maps on the training images give the
   propagated background (``background/<image_id>.png``) of round k + 1. Every round trains
   from ``MODEL.WEIGHTS`` again, as the authors' code does.
2. ``detect``: the last round's detector (or, with ``DET.SELECT_ROUND: best_val``, the round
   best on val) finds points on the training images; they are merged
   with the annotated points (annotated kept, a detection added only beyond r1 of all of them)
   into ``points_merged.json``; detection metrics of that detector on val and the eval sets.
3. ``pseudo_labels``: Voronoi and cluster labels of every training image (cache + previews).
4. ``seg``: segmentation training on both labels (``alpha L_vor + (1 - alpha) L_cluster``).
5. ``crf``: fine-tuning from the selected ``seg`` model with the dense-CRF loss, lr x factor.
6. ``eval``: the final model on the eval datasets; metrics JSON, table, predicted maps.

Model selection (``model_best.pth``) uses ``DATASETS.TEST[0]`` (the val split) only; without an
eval period the last checkpoint is used. Inside an unfinished stage ``--resume`` continues from
its last checkpoint. Seeds: ``cfg.SEED + stage index`` at the start of every stage.
"""

import json
import logging
from pathlib import Path

import numpy as np
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from detectron2.utils.env import seed_all_rng

from .pipelines import NUCLEIWEAK_PIPELINE_REGISTRY
from .trainer import Trainer

__all__ = ["Qu2020Pipeline", "Qu2020Runner"]

logger = logging.getLogger(__name__)

DET_ARCH, SEG_ARCH = "NucleiPointDetector", "NucleiSemanticSegmentor"
DET_MAPPER, SEG_MAPPER = "NucleiWeakQu2020DetMapper", "NucleiWeakQu2020SegMapper"


class _OutputCollector(DatasetEvaluator):
    """Calls ``fn(input, output)`` for every image (side effects: files, dicts)."""

    def __init__(self, fn):
        self._fn = fn

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            self._fn(inp, out)

    def evaluate(self):
        return {}


class Qu2020Runner:
    """Runs the stages of the pipeline; see the module docstring.

    Parameters
    ----------
    cfg : CfgNode
        Full config (``DATASETS.TRAIN[0]`` the partial-point training set, ``DATASETS.TEST[0]``
        the val set, ``NUCLEIWEAK.QU2020.EVAL_DATASETS`` the final test sets).
    resume : bool
        Continue unfinished stages from their last checkpoint.
    eval_only : bool
        Run only the evaluation stage, with ``MODEL.WEIGHTS`` when given, else the
        pipeline's final model.
    """

    def __init__(self, cfg, resume=False, eval_only=False):
        self.cfg = cfg
        self.q = cfg.NUCLEIWEAK.QU2020
        self.root = Path(cfg.OUTPUT_DIR)
        self.resume = resume
        self.eval_only = eval_only
        if not cfg.DATASETS.TRAIN:
            raise ValueError("Qu2020Pipeline needs DATASETS.TRAIN")
        self.train_set = cfg.DATASETS.TRAIN[0]
        self.val_set = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
        self.eval_sets = list(self.q.EVAL_DATASETS) or list(cfg.DATASETS.TEST)

    # ------------------------------------------------------------------ configs
    def stage_cfg(self, stage, arch):
        """Config of one stage: architecture, mapper, schedule and output folder."""
        c = self.cfg.clone()
        c.defrost()
        c.OUTPUT_DIR = str(self.root / stage)
        c.DATASETS.TEST = (self.val_set,) if self.val_set else ()
        c.NUCLEIWEAK.COCO_EVAL = False  # periodic val evaluation: nuclei metrics only
        c.MODEL.META_ARCHITECTURE = arch
        if arch == DET_ARCH:
            c.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1
            c.NUCLEIWEAK.MAPPER = DET_MAPPER
            c.NUCLEIWEAK.QU2020.LABEL_CACHE_DIR = ""
            c.SOLVER.MAX_ITER, c.SOLVER.BASE_LR = self.q.DET.MAX_ITER, self.q.DET.BASE_LR
        else:
            c.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
            c.NUCLEIWEAK.MAPPER = SEG_MAPPER
            c.NUCLEIWEAK.QU2020.POINTS_FILE = str(self.root / "detect" / "points_merged.json")
            c.NUCLEIWEAK.QU2020.LABEL_CACHE_DIR = str(self.root / "pseudo_labels" / "labels")
            c.SOLVER.MAX_ITER, c.SOLVER.BASE_LR = self.q.SEG.MAX_ITER, self.q.SEG.BASE_LR
            c.NUCLEIWEAK.QU2020.CRF.ENABLED = False
        return c

    def det_cfg(self, k):
        c = self.stage_cfg(f"det_round{k}", DET_ARCH)
        c.NUCLEIWEAK.QU2020.DET.BACKGROUND_DIR = (
            str(self.root / f"det_round{k - 1}" / "background") if k > 0 else "")
        return c

    def seg_cfg(self):
        return self.stage_cfg("seg", SEG_ARCH)

    def crf_cfg(self):
        c = self.stage_cfg("crf", SEG_ARCH)
        c.NUCLEIWEAK.QU2020.CRF.ENABLED = True
        c.SOLVER.MAX_ITER = self.q.CRF.MAX_ITER
        c.SOLVER.BASE_LR = self.q.SEG.BASE_LR * self.q.CRF.LR_FACTOR
        c.MODEL.WEIGHTS = self.best_weights(self.seg_cfg())
        return c

    def final_cfg(self):
        """Config (and weights) of the model that the eval stage scores."""
        c = self.crf_cfg() if self.q.CRF.MAX_ITER > 0 else self.seg_cfg()
        c.MODEL.WEIGHTS = (self.cfg.MODEL.WEIGHTS if self.eval_only and self.cfg.MODEL.WEIGHTS
                           else self.best_weights(c))
        c.OUTPUT_DIR = str(self.root / "eval")
        return c

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def best_weights(stage_cfg):
        """``model_best.pth`` (selected on val) if present, else ``model_final.pth``."""
        out = Path(stage_cfg.OUTPUT_DIR)
        best = out / "model_best.pth"
        return str(best if best.is_file() else out / "model_final.pth")

    def _done(self, stage):
        return (self.root / stage / "stage_done.json").is_file()

    def _mark(self, stage, info):
        from ..modeling.qu2020.artifacts import write_json

        write_json(self.root / stage / "stage_done.json", info)

    def _seed(self, offset):
        if self.cfg.SEED >= 0:
            seed_all_rng(self.cfg.SEED + offset)

    def train(self, c, metric):
        """Train one model (Detectron2 Trainer), keeping the best val checkpoint by ``metric``."""
        out = Path(c.OUTPUT_DIR)
        if (out / "model_final.pth").is_file():
            logger.info("%s: model_final.pth exists, training skipped", out)
            return self.best_weights(c)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(c.dump())
        trainer = Trainer(c)
        if c.TEST.EVAL_PERIOD > 0 and c.DATASETS.TEST:
            trainer.register_hooks([hooks.BestCheckpointer(c.TEST.EVAL_PERIOD,
                                                           trainer.checkpointer, metric, "max")])
        trainer.resume_or_load(resume=self.resume)
        trainer.train()
        return self.best_weights(c)

    @staticmethod
    def load_model(c, weights):
        model = Trainer.build_model(c)
        DetectionCheckpointer(model).load(weights)
        model.eval()
        return model

    @staticmethod
    def run(c, model, dataset, evaluators):
        """Inference over ``dataset`` with the stage's test mapper; returns the results."""
        loader = Trainer.build_test_loader(c, dataset)
        return inference_on_dataset(model, loader, DatasetEvaluators(evaluators))

    def evaluators(self, c, dataset, folder, extra=()):
        c = c.clone()
        c.defrost()
        c.NUCLEIWEAK.COCO_EVAL = bool(self.cfg.NUCLEIWEAK.COCO_EVAL and self.q.OUTPUT_INSTANCES
                                      and c.MODEL.META_ARCHITECTURE == SEG_ARCH)
        ev = Trainer.build_evaluator(c, dataset, output_folder=str(folder))
        return [ev, *extra]

    # ------------------------------------------------------------------ stages
    def detection_rounds(self):
        from ..modeling.qu2020.artifacts import write_mask_png
        from ..modeling.qu2020.mappers import cache_key
        from ..pseudo_labels.detection import propagated_background

        rounds = int(self.q.DET.ROUNDS)
        for k in range(rounds + 1):
            stage = f"det_round{k}"
            if self._done(stage):
                logger.info("%s done, skipped", stage)
                continue
            self._seed(k)
            c = self.det_cfg(k)
            weights = self.train(c, self.q.DET_SELECT_METRIC)
            info = {"weights": weights}
            if self.q.DET.SELECT_ROUND == "best_val" and self.val_set:
                res = self.run(c, self.load_model(c, weights), self.val_set,
                               self.evaluators(c, self.val_set,
                                               Path(c.OUTPUT_DIR) / "inference" / self.val_set))
                task, _, key = self.q.DET_SELECT_METRIC.partition("/")
                info["val_score"] = float(res[task][key])
            if k < rounds:
                bg_dir = Path(c.OUTPUT_DIR) / "background"
                min_area = self.q.DET.BG_MIN_AREA or None

                def save_bg(inp, out, bg_dir=bg_dir, min_area=min_area):
                    prob = out["prob"].cpu().numpy().clip(0, 1)
                    bg = propagated_background(prob, r1=self.q.DET.R1, low=self.q.DET.BG_LOW,
                                               high=self.q.DET.BG_HIGH, min_area=min_area)
                    write_mask_png(bg_dir / f"{cache_key(inp)}.png", bg)

                self.run(c, self.load_model(c, weights), self.train_set,
                         [_OutputCollector(save_bg)])
            self._mark(stage, info)

    def selected_round(self):
        """Index of the detection round whose detector finds the points.

        ``DET.SELECT_ROUND == "last"`` (the paper): the last round. ``"best_val"``: the round
        with the highest ``DET_SELECT_METRIC`` on the val split (the earliest on ties), a
        deviation for short schedules where a self-training round can end worse than the one
        before it; val only, never test.
        """
        rounds = int(self.q.DET.ROUNDS)
        if self.q.DET.SELECT_ROUND == "last" or not self.val_set:
            return rounds
        if self.q.DET.SELECT_ROUND != "best_val":
            raise ValueError("NUCLEIWEAK.QU2020.DET.SELECT_ROUND must be 'last' or 'best_val', "
                             f"got {self.q.DET.SELECT_ROUND!r}")
        scores = []
        for k in range(rounds + 1):
            info = json.loads((self.root / f"det_round{k}" / "stage_done.json").read_text())
            scores.append(info.get("val_score", float("-inf")))
        best = int(np.argmax(scores))
        logger.info("detection rounds' val %s: %s -> round %d", self.q.DET_SELECT_METRIC,
                    scores, best)
        return best

    def detect_and_merge(self):
        from ..modeling.qu2020.artifacts import write_json
        from ..modeling.qu2020.mappers import record_points
        from ..modeling.qu2020.postprocess import merge_points
        from detectron2.data import DatasetCatalog

        stage = "detect"
        if self._done(stage):
            return json.loads((self.root / stage / "stage_done.json").read_text())["metrics"]
        c = self.det_cfg(self.selected_round())
        model = self.load_model(c, self.best_weights(c))
        detected = {}

        def keep(inp, out):
            detected[str(inp["image_id"])] = out["pred_points"].cpu().numpy()

        self.run(c, model, self.train_set, [_OutputCollector(keep)])
        merged, n_ann, n_det = {}, 0, 0
        for record in DatasetCatalog.get(self.train_set):
            key = str(record["image_id"])
            ann = record_points(record)
            pts = merge_points(ann, detected.get(key, np.zeros((0, 2))), self.q.DET.R1)
            pts[:, 0] = pts[:, 0].clip(0, record["width"] - 1)
            pts[:, 1] = pts[:, 1].clip(0, record["height"] - 1)
            merged[key] = pts.tolist()
            n_ann, n_det = n_ann + len(ann), n_det + len(pts) - len(ann)
        out = self.root / stage
        write_json(out / "points_detected.json", {k: v.tolist() for k, v in detected.items()})
        write_json(out / "points_merged.json", merged)
        metrics = {}
        for ds in dict.fromkeys([self.val_set, *self.eval_sets]):
            if ds:
                res = self.run(c, model, ds, self.evaluators(c, ds, out / "inference" / ds))
                metrics[ds] = {k: v for k, v in res.get("nuclei", {}).items()
                               if k.startswith("det_")}
        self._mark(stage, {"annotated_points": n_ann, "added_detections": n_det,
                           "metrics": metrics})
        return metrics

    def pseudo_labels(self):
        from detectron2.data import DatasetCatalog

        from ..data.io import read_image, write_image
        from ..data.registry import build_mapper

        stage = "pseudo_labels"
        if self._done(stage):
            return
        c = self.seg_cfg()
        mapper = build_mapper(c, True)  # computes and caches the labels of each image
        preview = self.root / stage / "preview"
        palette = np.array([[0, 0, 0], [0, 255, 0], [255, 128, 0]], dtype=np.uint8)
        for record in DatasetCatalog.get(self.train_set):
            image = read_image(record["file_name"])
            maps = mapper.cached_targets(record, image)
            for name, m in maps.items():
                write_image(preview / f"{record['image_id']}_{name}.png", palette[m])
        self._mark(stage, {"labels": c.NUCLEIWEAK.QU2020.LABEL_CACHE_DIR})

    def segmentation(self):
        if not self._done("seg"):
            self._seed(100)
            self._mark("seg", {"weights": self.train(self.seg_cfg(), self.q.SEG_SELECT_METRIC)})
        if self.q.CRF.MAX_ITER > 0 and not self._done("crf"):
            self._seed(101)
            self._mark("crf", {"weights": self.train(self.crf_cfg(), self.q.SEG_SELECT_METRIC)})

    def evaluate(self):
        """Score the final model on every eval dataset; write predictions and metrics."""
        from ..data.io import write_label
        from ..modeling.qu2020.artifacts import write_json
        from ..modeling.qu2020.mappers import cache_key

        c = self.final_cfg()
        model = self.load_model(c, c.MODEL.WEIGHTS)
        results = {}
        for ds in self.eval_sets:
            folder = Path(c.OUTPUT_DIR) / ds
            extra = []
            if self.q.SAVE_PREDICTIONS:
                def save(inp, out, folder=folder):
                    write_label(folder / "pred" / f"{cache_key(inp)}.png",
                                out["instance_map"].cpu().numpy())
                extra.append(_OutputCollector(save))
            res = self.run(c, model, ds, self.evaluators(c, ds, folder, extra))
            results[ds] = {k: dict(v) for k, v in res.items()}
        write_json(Path(c.OUTPUT_DIR) / "metrics.json",
                   {"weights": c.MODEL.WEIGHTS, "segmentation": results})
        return results

    def run_all(self):
        """Run every stage (or only the evaluation with ``eval_only``); returns the metrics."""
        from ..modeling.qu2020.artifacts import write_json

        if not self.eval_only:
            self.detection_rounds()
            det = self.detect_and_merge()
            self.pseudo_labels()
            self.segmentation()
        else:
            done = self.root / "detect" / "stage_done.json"
            det = json.loads(done.read_text())["metrics"] if done.is_file() else {}
        seg = self.evaluate()
        summary = {"detection": det, "segmentation": seg}
        write_json(self.root / "metrics.json", summary)
        logger.info("Qu2020 pipeline metrics written to %s", self.root / "metrics.json")
        return summary


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
def Qu2020Pipeline(cfg, args):
    """Pipeline entry point for ``tools/train_net.py`` (honours ``--resume``, ``--eval-only``)."""
    return Qu2020Runner(cfg, resume=getattr(args, "resume", False),
                        eval_only=getattr(args, "eval_only", False)).run_all()
