"""``NucleiWeakNam2023Pipeline``: PROnet (Nam et al., MICCAI 2023) from (shifted) points.

The paper trains one network for 150 epochs: the offset loss joins after 20 epochs, the EM point
refinement starts after 30 and alternates E- and M-steps until the end (how often is not said).
As stages (a :class:`~nucleiweak_d2.engine.pipeline.StagedPipeline`, each in
``OUTPUT_DIR/<stage>/``; every training stage continues from the previous stage's last weights,
with a fresh optimiser):

1. ``pseudo_labels``: Voronoi and cluster labels and the Voronoi cells of the annotated points of
   every training image (``labels/<image_id>.npz``, previews), the cells of the val images
   (``val_cells/``) when val has points; the starting points (``points_train.json``,
   ``points_val.json``) and their distance to the true centres.
2. ``warmup`` (seed ``SEED``): ``NAM2023.WARMUP_ITER`` iterations of the binary and centre losses
   (paper: epochs 0-20).
3. ``round0`` (seed ``SEED + 1``): the last model predicts B^ on the training images; the
   shape-guided offset targets (``targets/<image_id>.npz``) are made from it; then
   ``NAM2023.OFFSET_ITER`` iterations with the offset loss on, points unchanged (epochs 20-30).
4. ``round1`` .. ``round<R>`` (seed ``SEED + 1 + k``, ``R = NAM2023.EM.ROUNDS``): the E-step
   moves every training point to its offset-voted centre (when closer than delta, inside its
   cell) and writes ``points_train.json`` (and ``points_val.json``, refined the same way, for
   the record only); the offset targets are remade from the same prediction; the M-step trains
   ``NAM2023.EM.MAX_ITER`` iterations with the centre map of the refined points (epochs 30-150).
5. ``select_center`` (only with ``NAM2023.CENTER.THRESHOLD_CANDIDATES``): the final model scored
   on val at every candidate centre threshold; the best (the first on ties) replaces
   ``CENTER.THRESHOLD`` for the evaluation. The paper sets 0.2; a centre head trained for a CPU
   budget may never reach it (every peak below 0.2: no centre, the instances fall back to
   the foreground's connected components), and the best threshold differs from run to run.
6. ``eval``: the last round's checkpoint selected on val (``model_best.pth``; only the last
   training stage is evaluated periodically) on ``NUCLEIWEAK.EVAL_DATASETS``.

Each stage's ``info`` records the mean distance of the points to the true centres (``point -
point_shift`` of the annotations) on train and val, and how many points moved.

With ``NAM2023.POINTS_FILE`` (not in the paper) the training images start from the points of
that file instead of their annotations: labels, centre map and E-steps all follow them. It lets
PROnet, which the paper trains on a click per nucleus, learn from a partial annotation completed
by a detector (Qu et al.'s ``detect/points_merged.json``: the annotated points plus the detected
ones; the benchmark's ``nam2023_qu``). The train distances to the true centres are then not
recorded (the points are not the annotations').
"""

import logging
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.utils import comm

from ...data.atomic import savez_compressed, write_json
from ...data.checks import check_points_inside
from ...data.io import read_image, write_image
from ...data.records import cache_key, record_points
from ...engine.pipeline import NUCLEIWEAK_PIPELINE_REGISTRY, Stage, StagedPipeline
from ...engine.trainer import Trainer
from .labels import point_cells
from .points import point_error, read_points_json
from .refinement import refine_points
from .targets import shape_guided_targets

__all__ = ["NucleiWeakNam2023Pipeline"]

logger = logging.getLogger(__name__)

ARCH, MAPPER = "NucleiWeakNam2023Net", "NucleiWeakNam2023Mapper"


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
class NucleiWeakNam2023Pipeline(StagedPipeline):
    """PROnet; see the module docstring. Configured by ``cfg.NUCLEIWEAK.NAM2023``."""

    result_key = "segmentation"

    def __init__(self, cfg, *, resume=False, eval_only=False):
        super().__init__(cfg, resume=resume, eval_only=eval_only)
        self.n = cfg.NUCLEIWEAK.NAM2023
        if int(self.n.WARMUP_ITER) < 1 or int(self.n.OFFSET_ITER) < 1:
            raise ValueError(
                "NUCLEIWEAK.NAM2023.WARMUP_ITER and OFFSET_ITER must be >= 1, got "
                f"{self.n.WARMUP_ITER} and {self.n.OFFSET_ITER}"
            )
        if int(self.n.EM.ROUNDS) < 0 or (self.n.EM.ROUNDS and int(self.n.EM.MAX_ITER) < 1):
            raise ValueError("NUCLEIWEAK.NAM2023.EM.ROUNDS must be >= 0 and EM.MAX_ITER >= 1")
        self.train_stages = ["warmup"] + [f"round{k}" for k in range(int(self.n.EM.ROUNDS) + 1)]

    # ------------------------------------------------------------------ configs and files
    def stage_cfg(self, stage):
        """Config of a training stage: architecture, mapper, schedule, start weights, folder."""
        c = self.training_cfg(stage, ARCH, MAPPER)
        i = self.train_stages.index(stage)
        if i > 0:
            c.MODEL.WEIGHTS = str(self.stage_dir(self.train_stages[i - 1]) / "model_final.pth")
        c.SOLVER.MAX_ITER = {0: self.n.WARMUP_ITER, 1: self.n.OFFSET_ITER}.get(
            i, self.n.EM.MAX_ITER
        )
        if stage != self.train_stages[-1]:
            c.TEST.EVAL_PERIOD = 0  # only the final stage's checkpoint is selected on val
        return c

    def points_file(self, split, k):
        """Points of ``split`` ("train"/"val") after round ``k`` (round 0 keeps the annotated)."""
        folder = self.stage_dir("pseudo_labels") if k == 0 else self.stage_dir(f"round{k}")
        return folder / f"points_{split}.json"

    def trainer(self, k=None):
        """Trainer of the warm-up (``k`` None) or of round ``k`` (its points and offset targets)."""
        mapper = {"cache_dir": str(self.stage_dir("pseudo_labels") / "labels")}
        if self.n.POINTS_FILE:  # labels and warm-up centre map from the starting points
            start = str(self.points_file("train", 0))
            mapper.update(label_points_file=start, points_file=start)
        if k is not None:
            mapper["points_file"] = str(self.points_file("train", k))
            if self.n.HEAD.OFFSET:  # the offset ablation has no offset loss to feed
                mapper["targets_dir"] = str(self.stage_dir(f"round{k}") / "targets")
        return Trainer.with_overrides(mapper=mapper)

    def final_model(self):
        """The last round's model; at test time it needs nothing an earlier stage wrote."""
        last = self.train_stages[-1]
        c = self.stage_cfg(last)
        c.NUCLEIWEAK.COCO_EVAL = bool(
            self.cfg.NUCLEIWEAK.COCO_EVAL and self.cfg.NUCLEIWEAK.UNET.OUTPUT_INSTANCES
        )
        c.NUCLEIWEAK.NAM2023.CENTER.THRESHOLD = self.chosen_threshold()[0]
        return c, Trainer, self.best_weights(self.stage_dir(last))

    def chosen_threshold(self):
        """``(centre threshold, source)``: the one ``select_center`` chose on val when this run
        has it, else ``CENTER.THRESHOLD`` (e.g. ``--eval-only`` of a weights file)."""
        done = self.stage_dir("select_center") / "stage_done.json"
        if self.n.CENTER.THRESHOLD_CANDIDATES and done.is_file():
            return float(self.stage_info("select_center")["threshold"]), "val (select_center)"
        return float(self.n.CENTER.THRESHOLD), "config"

    def extra_evaluation(self, out_dir):
        """The centre threshold the evaluation used and where it came from."""
        threshold, source = self.chosen_threshold()
        return {"inference": {"CENTER_THRESHOLD": threshold, "from": source}}

    def _val_records(self):
        """Val records when val has annotated points (refined for the record), else []."""
        if not self.val_set:
            return []
        records = DatasetCatalog.get(self.val_set)
        return records if any(len(record_points(r)) for r in records) else []

    # ------------------------------------------------------------------ stages
    def stages(self):
        stages = [
            Stage("pseudo_labels", self.pseudo_labels),
            Stage("warmup", self.warmup, seed_offset=0),
        ]
        stages += [
            Stage(f"round{k}", lambda k=k: self.em_round(k), seed_offset=1 + k)
            for k in range(int(self.n.EM.ROUNDS) + 1)
        ]
        if self.n.CENTER.THRESHOLD_CANDIDATES:
            stages.append(Stage("select_center", self.select_center))
        return stages

    def select_center(self):
        """Score the final model on val at every ``CENTER.THRESHOLD_CANDIDATES`` value and keep
        the best (the first on ties; without a val split, ``CENTER.THRESHOLD``)."""
        fixed = float(self.n.CENTER.THRESHOLD)
        if not self.val_set:
            return {"threshold": fixed, "scores": {}}
        last = self.train_stages[-1]
        c = self.stage_cfg(last)
        model = self.load_model(c, self.best_weights(self.stage_dir(last)))
        candidates = {
            f"{t:g}": (
                self.stage_dir("select_center") / f"t{t:g}",
                lambda m, t=float(t): setattr(m, "center_threshold", t),
            )
            for t in self.n.CENTER.THRESHOLD_CANDIDATES
        }
        name, scores = self.select_on_val(c, model, candidates, self.n.SELECT_METRIC)
        best = float(name) if name is not None else fixed
        logger.info("select_center: val %s %s -> %g", self.n.SELECT_METRIC, scores, best)
        return {"threshold": best, "scores": scores}

    def start_points(self, records):
        """``{str(image_id): [[x, y], ...]}``: the starting points of the training ``records``,
        their annotated points or those of ``NAM2023.POINTS_FILE`` (checked: every image
        present, every point inside its image, at least one point)."""
        if not self.n.POINTS_FILE:
            return {str(r["image_id"]): record_points(r).tolist() for r in records}
        path = Path(self.n.POINTS_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"NUCLEIWEAK.NAM2023.POINTS_FILE not found: {path}")
        given = read_points_json(path)
        missing = [str(r["image_id"]) for r in records if str(r["image_id"]) not in given]
        if missing:
            raise ValueError(
                f"NUCLEIWEAK.NAM2023.POINTS_FILE {path} has no entry for {len(missing)} training "
                f"image(s), e.g. {missing[:3]}"
            )
        points = {}
        for r in records:
            pts = given[str(r["image_id"])]
            check_points_inside(
                pts,
                (r["height"], r["width"]),
                r["image_id"],
                f"NUCLEIWEAK.NAM2023.POINTS_FILE {path}",
            )
            points[str(r["image_id"])] = pts.tolist()
        if not any(points.values()):
            raise ValueError(f"NUCLEIWEAK.NAM2023.POINTS_FILE {path} holds no point")
        return points

    def _point_error(self, split, points, records):
        """:func:`~.points.point_error`; None for training points of ``POINTS_FILE`` (not the
        annotations' points, so without a true centre each)."""
        if split == "train" and self.n.POINTS_FILE:
            return None
        return point_error(points, records)

    def pseudo_labels(self):
        info = {"labels": str(self.stage_dir("pseudo_labels") / "labels"), "point_error": {}}
        if not comm.is_main_process():
            return info
        out = self.stage_dir("pseudo_labels")
        palette = np.array([[0, 0, 0], [0, 255, 0], [255, 128, 0]], dtype=np.uint8)
        splits = {"train": DatasetCatalog.get(self.train_set), "val": self._val_records()}
        start = {
            "train": self.start_points(splits["train"]),
            "val": {str(r["image_id"]): record_points(r).tolist() for r in splits["val"]},
        }
        for split, points in start.items():  # before the mapper, which reads the train file
            write_json(self.points_file(split, 0), points)
        mapper = self.trainer().build_mapper(self.stage_cfg("warmup"), True)
        for split, records in splits.items():
            points = start[split]
            for record in records:
                image = read_image(record["file_name"])
                if split == "train":  # computes and caches the labels and cells
                    maps = mapper.binary_labels(record, image)
                    for name in ("voronoi", "cluster"):
                        write_image(
                            out / "preview" / f"{cache_key(record)}_{name}.png", palette[maps[name]]
                        )
                else:
                    cells = point_cells(
                        image,
                        record_points(record),
                        geodesic=mapper.label_args["geodesic"],
                        beta=mapper.label_args["beta"],
                    )
                    savez_compressed(out / "val_cells" / f"{cache_key(record)}.npz", cells=cells)
            if records:
                info["point_error"][split] = self._point_error(split, points, records)
        logger.info(
            "pseudo_labels: distance of the annotated points to the true centres %s",
            info["point_error"],
        )
        return info

    def warmup(self):
        c = self.stage_cfg("warmup")
        return {"weights": self.train(c, self.n.SELECT_METRIC, self.trainer())}

    def _cells(self, split, record):
        folder = "labels" if split == "train" else "val_cells"
        with np.load(self.stage_dir("pseudo_labels") / folder / f"{cache_key(record)}.npz") as z:
            return z["cells"]

    def e_step(self, k, split, model, cfg, make_targets):
        """Refine the points of ``split`` with ``model`` (round ``k`` >= 1; round 0 keeps them);
        with ``make_targets`` also write the shape-guided offset targets. Main process: the new
        ``{image_id: points}`` and the number of moved points."""
        dataset = self.train_set if split == "train" else self.val_set
        current = read_points_json(self.points_file(split, max(k - 1, 0)))
        refine = k > 0 and bool(self.n.EM.REFINE_POINTS) and bool(self.n.HEAD.OFFSET)
        if not (refine or make_targets):  # nothing to infer: the points stay as they are
            return {key: np.asarray(pts).tolist() for key, pts in current.items()}, 0
        targets = self.stage_dir(f"round{k}") / "targets"
        min_area = int(self.cfg.NUCLEIWEAK.UNET.MIN_AREA)

        def step(inp, out):
            key = str(inp["image_id"])
            cells = self._cells(split, inp)
            fg = (out["sem_seg"].argmax(dim=0) == 1).cpu().numpy()
            pts, moved = current[key], np.zeros(len(current[key]), dtype=bool)
            if refine:
                pts, moved, _ = refine_points(
                    pts,
                    cells,
                    fg,
                    out["offsets"].cpu().numpy(),
                    out["prob"].cpu().numpy(),
                    delta=self.n.EM.DELTA,
                )
            if make_targets:
                nuclei, centres = shape_guided_targets(fg, pts, cells, min_area)
                savez_compressed(targets / f"{cache_key(inp)}.npz", nuclei=nuclei, centres=centres)
            return pts.tolist(), int(moved.sum())

        results = self.infer(cfg, model, dataset, step, self.trainer())
        points = {key: pts for key, (pts, _) in results.items()}
        return points, sum(m for _, m in results.values())

    def em_round(self, k):
        """Round ``k``: E-step (points and offset targets from the previous model), M-step."""
        stage = f"round{k}"
        prev = self.train_stages[self.train_stages.index(stage) - 1]
        c = self.stage_cfg(stage)
        infer_cfg = c.clone()
        infer_cfg.defrost()
        infer_cfg.NUCLEIWEAK.UNET.OUTPUT_INSTANCES = False
        model = self.load_model(infer_cfg, str(self.stage_dir(prev) / "model_final.pth"))
        info = {"point_error": {}, "moved": {}}
        # offset targets only for a model with an offset loss (not the HEAD.OFFSET ablation)
        splits = [("train", bool(self.n.HEAD.OFFSET))]
        splits += [("val", False)] if k > 0 and self._val_records() else []
        for split, make_targets in splits:
            points, moved = self.e_step(k, split, model, infer_cfg, make_targets)
            if comm.is_main_process():
                records = DatasetCatalog.get(self.train_set if split == "train" else self.val_set)
                if k > 0:
                    write_json(self.points_file(split, k), points)
                info["point_error"][split] = self._point_error(split, points, records)
                info["moved"][split] = moved
        logger.info(
            "%s: points moved %s; distance to the true centres %s",
            stage,
            info["moved"],
            info["point_error"],
        )
        comm.synchronize()
        del model
        info["weights"] = self.train(c, self.n.SELECT_METRIC, self.trainer(k))
        return info
