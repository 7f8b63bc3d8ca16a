"""``StagedPipeline``: the machinery every multi-stage method runs on.

A method subclasses :class:`StagedPipeline`, declares its stages (:meth:`StagedPipeline.stages`,
a list of :class:`Stage`) and its final model (:meth:`final_model`), and registers the class in
``NUCLEIWEAK_PIPELINE_REGISTRY``; ``tools/train_net.py`` runs the pipeline that
``cfg.NUCLEIWEAK.PIPELINE`` names as ``pipeline(cfg, resume=..., eval_only=...)``.

Stage contract
--------------
- A stage is a short function ``fn() -> dict`` that works in ``OUTPUT_DIR/<stage name>/``
  (:meth:`StagedPipeline.stage_dir`) and returns a JSON-able ``info`` dict (weights it selected,
  counts, scores).
- Before it runs, the RNGs are seeded with ``SEED + seed_offset`` (when the stage declares one).
- When it returns, the main process writes ``stage_done.json``: the stage's fingerprint (the
  config hash, the training data's fingerprint and the fingerprint of the stage before it), its
  ``info`` and its seed. ``info`` is broadcast to every process.
- A stage whose ``stage_done.json`` carries the current fingerprint is skipped; one whose
  fingerprint differs is never reused (the run stops with the keys that changed).
- Training goes through :meth:`train` (Detectron2 ``Trainer``, best checkpoint on the val
  split ``DATASETS.TEST[0]`` only, ``--resume`` continues an interrupted stage); inference
  through :meth:`infer` (sharded over processes, gathered to the main process, which alone writes
  files derived from several images).
- The last stage, ``eval``, scores the final model on ``NUCLEIWEAK.EVAL_DATASETS``, prints a
  table, writes ``metrics.json`` and ``summary.md``, links the final weights to
  ``OUTPUT_DIR/model_final.pth`` and writes their config, post-processing chosen on val
  included, to ``OUTPUT_DIR/model_final.yaml`` (for ``tools/predict.py --config-file``).

``--eval-only`` skips the training stages: it scores ``MODEL.WEIGHTS`` when that file holds a
whole trained model, else the final model of the run in ``OUTPUT_DIR``, and writes only into its
own folder (see :mod:`nucleiweak_d2.engine.run_dir`).
"""

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.registry import Registry

from ..data.atomic import write_json
from .predictor import load_trained_weights
from .run_dir import (
    FINAL_CONFIG,
    RUN_FILE,
    STAGE_FILE,
    config_diff,
    config_hash,
    dataset_fingerprint,
    flat_config,
    resolve_output_dir,
    short_hash,
)
from .trainer import Trainer, calibrating_trainer

__all__ = [
    "NUCLEIWEAK_PIPELINE_REGISTRY",
    "Stage",
    "StagedPipeline",
    "broadcast_from_main",
    "first_best",
    "summary_table",
]

logger = logging.getLogger(__name__)

NUCLEIWEAK_PIPELINE_REGISTRY = Registry("NUCLEIWEAK_PIPELINE")
NUCLEIWEAK_PIPELINE_REGISTRY.__doc__ = """
Multi-stage pipelines of nucleiweak_d2, called as ``pipeline(cfg, resume=..., eval_only=...)``
and run with ``.run()``; see :class:`StagedPipeline`.
"""

#: Metrics of the final table, in this order, when present.
TABLE_METRICS = ("AJI", "Dice_obj", "pixel_F1", "PQ", "det_P", "det_R", "det_F1")


def broadcast_from_main(obj):
    """``obj`` as the main process holds it, in every process (itself in a single process)."""
    if comm.get_world_size() == 1:
        return obj
    return comm.all_gather(obj)[0]


def first_best(results, metric):
    """The candidate with the best ``metric`` and every candidate's score.

    Parameters
    ----------
    results : dict
        ``{name: evaluator results}`` in candidate order (empty or None results, e.g. in a
        process other than the main one, score None).
    metric : str
        ``"<task>/<key>"`` of the results, larger is better.

    Returns
    -------
    (str or None, dict)
        The best name (the first on ties; None when no candidate has a score) and
        ``{name: score or None}``.
    """
    task, _, key = metric.partition("/")
    scores = {name: float(res[task][key]) if res else None for name, res in results.items()}
    valid = [(s, -i) for i, s in enumerate(scores.values()) if s is not None]
    return (list(scores)[-max(valid)[1]] if valid else None), scores


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline.

    Attributes
    ----------
    name : str
        Folder name under ``OUTPUT_DIR``.
    run : callable
        ``run() -> dict`` (JSON-able info recorded in ``stage_done.json``).
    seed_offset : int or None
        The RNGs are seeded with ``SEED + seed_offset`` before the stage (None: not seeded).
    """

    name: str
    run: Callable[[], dict]
    seed_offset: Optional[int] = None


class _Collector(DatasetEvaluator):
    """Calls ``fn(input, output)`` per image; with ``gather`` keeps ``{image_key: value}`` and
    gathers it to the main process in ``evaluate``."""

    def __init__(self, fn, gather):
        self._fn, self._gather = fn, gather
        self._items = {}

    def reset(self):
        self._items = {}

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            value = self._fn(inp, out)
            if self._gather:
                self._items[str(inp["image_id"])] = value

    def evaluate(self):
        if not self._gather:
            return {}
        parts = comm.gather(self._items, dst=0)
        merged = {}
        for part in parts:
            merged.update(part)
        return {"collected": merged} if comm.is_main_process() else {}


def summary_table(results, metrics=TABLE_METRICS):
    """Markdown table, a row per dataset, of the ``nuclei`` metrics of ``results``."""
    rows = {ds: res.get("nuclei", res) for ds, res in results.items()}
    cols = [m for m in metrics if any(m in r for r in rows.values())]
    lines = ["| dataset | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for ds, r in rows.items():
        cells = [f"{r[m]:.4f}" if isinstance(r.get(m), (int, float)) else "n/a" for m in cols]
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class StagedPipeline:
    """Base class of the multi-stage methods; see the module docstring for the contract.

    Parameters
    ----------
    cfg : CfgNode
        The full config: ``DATASETS.TRAIN[0]`` the training set, ``DATASETS.TEST[0]`` the val
        set (model selection), ``NUCLEIWEAK.EVAL_DATASETS`` the sets of the final evaluation.
    resume : bool
        Continue the run in ``OUTPUT_DIR`` (same config and data only).
    eval_only : bool
        Score a trained model only.

    Subclasses define :meth:`stages` and :meth:`final_model`; :attr:`result_key` names the
    evaluation results in the returned summary, :meth:`extra_evaluation` adds to it.
    """

    result_key = "evaluation"

    def __init__(self, cfg, *, resume=False, eval_only=False):
        if not eval_only:
            from .stain import fit_stain_target

            cfg = fit_stain_target(cfg)  # an empty stain target is fitted once, on DATASETS.TRAIN
        self.cfg = cfg
        self.root = Path(cfg.OUTPUT_DIR)
        self.resume, self.eval_only = bool(resume), bool(eval_only)
        if not eval_only and not cfg.DATASETS.TRAIN:
            raise ValueError(f"{type(self).__name__} needs DATASETS.TRAIN (the training set)")
        self.train_set = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None
        self.val_set = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None
        self.eval_sets = list(cfg.NUCLEIWEAK.EVAL_DATASETS) or list(cfg.DATASETS.TEST)
        self._fingerprint = None

    # ------------------------------------------------------------------ for subclasses
    def stages(self):
        """The training stages, in order (a list of :class:`Stage`)."""
        raise NotImplementedError

    def final_model(self):
        """``(cfg, trainer_class, weights)`` of the model the ``eval`` stage scores; ``weights``
        is the run's file (selected on val), used unless ``--eval-only`` names another."""
        raise NotImplementedError

    def select_on_val(self, cfg, model, candidates, metric):
        """Score ``model`` on the val split once per candidate setting; the best one.

        Parameters
        ----------
        cfg : CfgNode
            Config of ``model``.
        model : torch.nn.Module
            Model in eval mode; each candidate changes it in place.
        candidates : dict
            ``{name: (folder, apply)}`` in order: ``apply(model)`` sets the candidate, whose
            evaluator files go to ``folder``.
        metric : str
            ``"<task>/<key>"`` of the evaluator's results, larger is better.

        Returns
        -------
        (str or None, dict)
            The best name (the first on ties; None when no candidate was scored, e.g. in a
            process other than the main one) and ``{name: score or None}``.
        """
        results = {}
        for name, (folder, apply) in candidates.items():
            apply(model)
            results[name] = self.evaluate(cfg, model, self.val_set, folder)
        return first_best(results, metric)

    def prepare_eval_model(self, model):
        """The final model as the ``eval`` stage scores it on every eval set; default itself
        (a method may, e.g., let it remember work shared by overlapping eval sets)."""
        return model

    def extra_evaluation(self, out_dir):
        """Entries added to the final results (e.g. a detector's metrics); default none.

        Called in every process after the final model's evaluation, with the eval folder.
        """
        return {}

    # ------------------------------------------------------------------ folders and records
    def stage_dir(self, name):
        """``OUTPUT_DIR/<name>``."""
        return self.root / name

    def stage_info(self, name):
        """The ``info`` a finished stage recorded."""
        return json.loads((self.stage_dir(name) / STAGE_FILE).read_text())["info"]

    def _data_fingerprint(self):
        names = [n for n in (self.train_set, self.val_set) if n]
        return [dataset_fingerprint(n) for n in names]

    def _run_record(self):
        return {
            "pipeline": type(self).__name__,
            "config_hash": config_hash(self.cfg),
            "data": self._data_fingerprint(),
            "config": flat_config(self.cfg),
        }

    def _check_run(self):
        """Write (new run) or check (``--resume``) ``OUTPUT_DIR/nucleiweak_run.json``."""
        current = self._run_record()
        run_file = self.root / RUN_FILE
        recorded = json.loads(run_file.read_text()) if run_file.is_file() else None
        comm.synchronize()  # every process has looked before the main process writes the file
        if recorded is not None:
            if recorded.get("config_hash") != current["config_hash"]:
                raise ValueError(
                    f"OUTPUT_DIR {self.root} holds a run made with another config "
                    f"({config_diff(recorded.get('config', {}), current['config'])}); "
                    "use another OUTPUT_DIR, or --overwrite to start afresh"
                )
            if recorded.get("data") != current["data"]:
                raise ValueError(
                    f"OUTPUT_DIR {self.root} holds a run made from other data "
                    f"(recorded {recorded.get('data')}, now {current['data']}); "
                    "use another OUTPUT_DIR, or --overwrite to start afresh"
                )
            return
        if any(self.root.glob(f"*/{STAGE_FILE}")):
            raise ValueError(
                f"OUTPUT_DIR {self.root} holds stages without {RUN_FILE} (a run of another version "
                "or method); use another OUTPUT_DIR, or --overwrite"
            )
        if comm.is_main_process():
            current["stages"] = [s.name for s in self.stages()] + ["eval"]
            current["outputs"] = ["metrics.json", "summary.md", "model_final.pth", FINAL_CONFIG]
            current["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
            write_json(run_file, current)
        comm.synchronize()

    def _stage_fingerprint(self, name, previous):
        return short_hash([name, config_hash(self.cfg), self._data_fingerprint(), previous])

    def _run_stage(self, stage, previous):
        """Run ``stage`` unless it is done with this fingerprint; return its fingerprint."""
        fingerprint = self._stage_fingerprint(stage.name, previous)
        done = self.stage_dir(stage.name) / STAGE_FILE
        if done.is_file():
            recorded = json.loads(done.read_text())
            if recorded.get("fingerprint") == fingerprint:
                logger.info("stage %s: done, skipped (%s)", stage.name, done)
                return fingerprint
            raise ValueError(
                f"stage {stage.name} in {self.root} was made from another config, data or earlier "
                "stage; use another OUTPUT_DIR, or --overwrite to start afresh"
            )
        logger.info("stage %s: running", stage.name)
        seed = None
        if stage.seed_offset is not None and self.cfg.SEED >= 0:
            seed = int(self.cfg.SEED) + int(stage.seed_offset)
            seed_all_rng(seed)
        start = time.time()
        info = stage.run() or {}
        info = broadcast_from_main(info)  # the main process's info, everywhere
        if comm.is_main_process():
            write_json(
                done,
                {
                    "stage": stage.name,
                    "fingerprint": fingerprint,
                    "seed": seed,
                    "seconds": round(time.time() - start, 1),
                    "info": info,
                },
            )
        comm.synchronize()
        logger.info("stage %s: done in %.1f s", stage.name, time.time() - start)
        return fingerprint

    # ------------------------------------------------------------------ building blocks
    def train(self, cfg, metric, trainer=Trainer):
        """Train one model in ``cfg.OUTPUT_DIR``; return the weights selected on val.

        With an eval period and a val set, ``model_best.pth`` keeps the checkpoint with the
        highest ``metric`` on ``DATASETS.TEST[0]``; else ``model_final.pth`` is used.
        """
        out = Path(cfg.OUTPUT_DIR)
        out.mkdir(parents=True, exist_ok=True)
        if comm.is_main_process():
            (out / "config.yaml").write_text(cfg.dump())
        if cfg.NUCLEIWEAK.UNET.CALIBRATE_EVAL:  # DATASETS.TEST is the val split here
            trainer = calibrating_trainer(trainer)
        t = trainer(cfg)
        if cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
            t.register_hooks(
                [hooks.BestCheckpointer(cfg.TEST.EVAL_PERIOD, t.checkpointer, metric, "max")]
            )
        t.resume_or_load(resume=self.resume)
        t.train()
        comm.synchronize()
        return self.best_weights(out)

    def training_cfg(self, stage, arch, mapper=None):
        """Config of a training stage: its folder, the val split as the only test set (model
        selection), nuclei metrics only during training, the architecture and the mapper."""
        c = self.cfg.clone()
        c.defrost()
        c.OUTPUT_DIR = str(self.stage_dir(stage))
        c.DATASETS.TEST = (self.val_set,) if self.val_set else ()
        c.NUCLEIWEAK.COCO_EVAL = False  # periodic val evaluation: nuclei metrics only
        c.MODEL.META_ARCHITECTURE = arch
        if mapper:
            c.NUCLEIWEAK.MAPPER = mapper
        return c

    @staticmethod
    def best_weights(folder):
        """``model_best.pth`` (selected on val) if present, else ``model_final.pth``."""
        best = Path(folder) / "model_best.pth"
        return str(best if best.is_file() else Path(folder) / "model_final.pth")

    @staticmethod
    def load_model(cfg, weights, trainer=Trainer):
        """Model of ``cfg`` with ``weights`` loaded, in eval mode."""
        model = trainer.build_model(cfg)
        DetectionCheckpointer(model).load(weights)
        model.eval()
        return model

    @staticmethod
    def infer(cfg, model, dataset, fn, trainer=Trainer, gather=True):
        """Run ``model`` over ``dataset`` (test mapper, sharded over processes).

        Parameters
        ----------
        fn : callable
            ``fn(input, output) -> value`` per image; writing a file per image is fine.
        gather : bool
            Keep the values and gather them to the main process.

        Returns
        -------
        dict
            ``{str(image_id): value}`` on the main process (all images); ``{}`` elsewhere
            and when ``gather`` is False.
        """
        res = inference_on_dataset(
            model, trainer.build_test_loader(cfg, dataset), _Collector(fn, gather)
        )
        return res.get("collected", {}) if res else {}

    @staticmethod
    def evaluate(cfg, model, dataset, folder, trainer=Trainer, per_image=None):
        """Scores of ``model`` on ``dataset`` (evaluator files in ``folder``); main process.

        ``per_image(input, output)`` is called for every image as well (e.g. to save maps).
        """
        evaluators = [trainer.build_evaluator(cfg, dataset, output_folder=str(folder))]
        if per_image is not None:
            evaluators.append(_Collector(per_image, gather=False))
        return inference_on_dataset(
            model, trainer.build_test_loader(cfg, dataset), DatasetEvaluators(evaluators)
        )

    @staticmethod
    def shared_outputs(model, datasets):
        """``model`` wrapped to run once per image that several of ``datasets`` (names) share
        (:class:`~nucleiweak_d2.engine.shared_outputs.SharedImageOutputs`, e.g. MoNuSeg's test
        = testA + testB); ``model`` itself when they share none."""
        from detectron2.data import DatasetCatalog

        from .shared_outputs import SharedImageOutputs

        names = list(dict.fromkeys(d for d in datasets if d))
        wrapped = SharedImageOutputs(model, [DatasetCatalog.get(d) for d in names])
        return wrapped if wrapped.uses_left else model

    def evaluate_scored_sets(self, cfg, model, out_dir, trainer=Trainer):
        """:meth:`evaluate` ``model`` on val and every eval set (each once, the outputs of
        images they share computed once, :meth:`shared_outputs`), into ``out_dir/<dataset>``.

        Returns
        -------
        dict
            ``{dataset: evaluation results}`` (main process; empty results are left out).
        """
        sets = [d for d in dict.fromkeys([self.val_set, *self.eval_sets]) if d]
        model = self.shared_outputs(model, sets)
        results = {}
        for ds in sets:
            res = self.evaluate(cfg, model, ds, Path(out_dir) / ds, trainer)
            if res:
                results[ds] = res
        return results

    def calibrate_threshold(self, cfg, weights, stage, trainer=Trainer):
        """Calibrate a segmentor's foreground threshold on the val split (main process).

        Runs the model of ``weights`` over ``self.val_set`` (gathered over processes), chooses
        the threshold with :func:`~nucleiweak_d2.engine.calibration.calibrate_on_dataset` and
        saves the model with it as ``<stage>/model_best.pth``. Without a val split the weights
        are saved with the uncalibrated 0.5.

        Returns
        -------
        dict
            The stage info: ``weights`` and the calibration record.
        """
        from .calibration import calibrate_on_dataset

        model = self.load_model(cfg, weights, trainer)
        probs = {}
        if self.val_set:
            probs = self.infer(
                cfg, model, self.val_set, lambda inp, out: out["prob"].half().cpu(), trainer
            )
        out = self.stage_dir(stage)
        info = {"weights": str(out / "model_best.pth"), "source": str(weights)}
        if comm.is_main_process():
            if probs:
                info.update(calibrate_on_dataset(model, cfg, self.val_set, probs))
            out.mkdir(parents=True, exist_ok=True)
            DetectionCheckpointer(model, save_dir=str(out)).save("model_best")
        comm.synchronize()
        return info

    # ------------------------------------------------------------------ the run
    def _eval_weights(self):
        """Weights ``--eval-only`` scores: ``MODEL.WEIGHTS`` when it is a whole trained model of
        the final architecture, else the final model of the run in ``OUTPUT_DIR``."""
        cfg, trainer, run_weights = self.final_model()
        given = self.cfg.MODEL.WEIGHTS
        have_run = bool(run_weights) and Path(run_weights).is_file()
        if given:
            try:
                load_trained_weights(trainer.build_model(cfg), given)
                return given
            except ValueError as exc:
                if not have_run:
                    raise
                logger.warning(
                    "%s; it initialises training, so the run's final model %s is scored",
                    exc,
                    run_weights,
                )
                return run_weights
        if have_run:
            return run_weights
        raise FileNotFoundError(
            f"--eval-only needs MODEL.WEIGHTS (a trained model, e.g. <run>/model_final.pth) or an "
            f"OUTPUT_DIR holding a finished run; {self.root} holds none"
        )

    def _eval_stage(self, out_dir, weights):
        cfg, trainer, _ = self.final_model()
        cfg = cfg.clone()
        cfg.defrost()
        cfg.OUTPUT_DIR = str(out_dir)
        model = self.prepare_eval_model(self.load_model(cfg, weights, trainer))
        model = self.shared_outputs(model, self.eval_sets)
        results = {}
        for ds in self.eval_sets:
            folder = Path(out_dir) / ds
            per_image = None
            if self.cfg.NUCLEIWEAK.SAVE_PREDICTIONS:
                from ..data.io import write_label
                from ..data.records import cache_key
                from ..evaluation.config import instance_map_options
                from ..evaluation.outputs import output_instance_map

                # the map the evaluator scores (a Mask R-CNN's instances painted by its rules)
                paint = {
                    "mask_threshold": float(cfg.NUCLEIWEAK.EVAL.MASK_THRESHOLD),
                    **instance_map_options(cfg),
                }

                def per_image(inp, out, folder=folder):
                    label = output_instance_map(out, **paint)
                    write_label(folder / "pred" / f"{cache_key(inp)}.png", label)

            res = self.evaluate(cfg, model, ds, folder, trainer, per_image)
            results[ds] = {k: dict(v) for k, v in res.items()}
        return {
            "weights": weights,
            self.result_key: results,
            **self.extra_evaluation(Path(out_dir)),
        }

    def run(self):
        """Run every stage (or only the evaluation with ``eval_only``); return the summary."""
        out_dir = resolve_output_dir(self.cfg, resume=self.resume, eval_only=self.eval_only)
        if self.eval_only:
            weights = self._eval_weights()
            summary = self._eval_stage(
                out_dir / "eval" if out_dir == self.root else out_dir, weights
            )
            self._report(out_dir, summary, link_final=False)
            return summary
        self._check_run()
        previous = None
        for stage in self.stages():
            previous = self._run_stage(stage, previous)
        _, _, weights = self.final_model()
        eval_stage = Stage("eval", lambda: self._eval_stage(self.stage_dir("eval"), weights))
        eval_fp = short_hash(
            [previous, sorted(self.eval_sets), [dataset_fingerprint(d) for d in self.eval_sets]]
        )
        self._run_stage(eval_stage, eval_fp)
        summary = self.stage_info("eval")
        self._report(self.root, summary, link_final=True)
        return summary

    def _report(self, out_dir, summary, link_final):
        """Print and write the final table, ``metrics.json``; link the final model."""
        if not comm.is_main_process():
            return
        out_dir = Path(out_dir)
        write_json(out_dir / "metrics.json", summary)
        table = summary_table(summary[self.result_key])
        final = out_dir / "model_final.pth"
        if link_final:
            _link_or_copy(summary["weights"], final)
            self._write_final_config(out_dir, final)
        where = (
            f"final model: {final} (= {summary['weights']})"
            if link_final
            else f"model: {summary['weights']}"
        )
        text = f"{type(self).__name__} results\n\n{table}\n\n{where}\nmetrics: {out_dir / 'metrics.json'}\n"
        (out_dir / "summary.md").write_text(text)
        logger.info("\n%s", text)

    def _write_final_config(self, out_dir, weights):
        """``OUTPUT_DIR/model_final.yaml``: the final model's config as the ``eval`` stage ran it
        (thresholds, ``T_0``, anchors chosen by the stages), ``MODEL.WEIGHTS`` = ``weights``, so
        that ``tools/predict.py --config-file`` it predicts what was evaluated."""
        cfg = self.final_model()[0].clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = str(Path(weights).resolve())
        cfg.OUTPUT_DIR = str(Path(out_dir).resolve())
        (Path(out_dir) / FINAL_CONFIG).write_text(cfg.dump())


def _link_or_copy(src, dst):
    """``dst`` becomes a hard link to ``src`` (a copy where links are impossible)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
