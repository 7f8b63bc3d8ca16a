"""Benchmark runs: export, config, run (resuming), one row each in ``results.jsonl``.

A run exports the folder dataset (``images/``, ``labels/``, ``split.json``) to COCO files with
the run's ratio, shift and seed on the ``train`` split (``val`` and the test splits keep every
point, unshifted), registers them, builds the method's config, runs its pipeline in
``<out>/runs/<method>_r<ratio>_s<shift>_seed<seed>/`` (models selected on ``val`` only, by the
pipeline) and appends one row to ``<out>/results.jsonl``: the run's key, the git commit, the
config hash, wall and CPU minutes and every metric of NucleiEvaluator on each test split.

:meth:`Benchmark.decompose` (``tools/benchmark.py --decompose``) adds, for a finished run of a
UNet method, a row to ``<out>/decomposition.jsonl``: its final model scored on ``val``
(``--eval-only`` into the run's ``eval_only*/`` folder) beside the method's pseudo-labels,
built from the same ratio of val's points, scored as the prediction
(:mod:`.label_bound`): where the accuracy goes between the labels and the network.
"""

import importlib
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import time
from pathlib import Path

from .table import DECOMPOSITION, MARKER, METHODS, RESULTS, RunSpec, shift_label

__all__ = ["Benchmark", "read_results", "cpu_seconds", "git_commit", "hardware"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def cpu_seconds():
    """User + system CPU seconds of this process and its finished children."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def git_commit():
    """``HEAD``'s sha (``-dirty`` with uncommitted changes to tracked files), or "unknown"."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: no index refresh
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def hardware(device):
    """One line: CPU, core count and, on CUDA, the GPU."""
    text = (
        f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} cores"
    )
    if str(device).startswith("cuda"):
        import torch

        text += f", {torch.cuda.get_device_name(0)}"
    return text


def read_results(path):
    """Rows of a ``results.jsonl`` (``[]`` when absent); a malformed line is skipped with a warning."""
    path = Path(path)
    rows = []
    if not path.is_file():
        return rows
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s line %d is not JSON (an interrupted write?); skipped", path, n)
    return rows


def _append_row(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


class Benchmark:
    """Runs of several methods on one folder dataset, written under ``out``.

    Parameters
    ----------
    data : str or Path
        Folder dataset with ``train``, ``val`` and the test splits in ``split.json``.
    out : str or Path
        Output folder (``results.jsonl``, ``LEADERBOARD.md``, plots, ``coco/``, ``runs/``).
    configs : dict
        ``{method: config file}`` of the methods to run (keys of :data:`METHODS`).
    test_splits : list of str
        Splits every run is scored on.
    opts : list of str
        ``KEY VALUE`` overrides of every method; a key written ``method:KEY`` applies to that
        method only.
    overwrite : bool
        Replace a run folder that holds a run of another config (else ValueError).
    """

    def __init__(self, data, out, configs, test_splits, opts=(), overwrite=False):
        from ..data.folder import check_split_names

        self.data, self.out = Path(data).resolve(), Path(out).resolve()
        self.skipped_shifts = []  # methods whose shifted runs plan() left out
        if not (self.data / "split.json").is_file():
            raise ValueError(
                f"dataset folder {self.data} has no split.json (train/val/test splits)"
            )
        check_split_names(self.data, ["train", "val", *test_splits], "train/val/--test-splits")
        unknown = sorted(set(configs) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(sorted(METHODS))}")
        for method, config in configs.items():
            if not Path(config).is_file():
                raise FileNotFoundError(f"config file of {method} not found: {config}")
            importlib.import_module(METHODS[method].module)
        for method in configs:
            source = METHODS[method].points_from
            if source and source[0] not in configs:
                raise ValueError(
                    f"{method} trains on the points of {source[0]}'s runs: add {source[0]} to "
                    "the benchmarked methods"
                )
        self.configs, self.test_splits = dict(configs), list(test_splits)
        self.opts = {m: self._method_opts(opts, m) for m in configs}
        self.overwrite = bool(overwrite)
        self._exported = {}

    @staticmethod
    def _method_opts(opts, method):
        if len(opts) % 2:
            raise ValueError(f"--opts needs KEY VALUE pairs, got {len(opts)} items")
        out = []
        for key, value in zip(opts[::2], opts[1::2]):
            prefix, sep, name = key.rpartition(":")
            if sep and prefix not in METHODS:
                raise ValueError(f"--opts key {key!r}: {prefix!r} is not a method")
            if not sep or prefix == method:
                out += [name, value]
        return out

    def plan(self, ratios, shifts, seeds):
        """The runs, in order: per method, every (ratio, shift, seed), or one without points.

        A method trained on masks (``point_shifts`` False) gets no shifted run: its training
        would repeat the unshifted run's; the methods whose shifted runs were left out are
        in :attr:`skipped_shifts`. A method that trains on another's points
        (``points_from``) comes after the methods it reads.
        """
        specs = []
        self.skipped_shifts = []
        labels = list(dict.fromkeys(shift_label(s) for s in shifts))
        for method in sorted(self.configs, key=lambda m: METHODS[m].points_from is not None):
            if not METHODS[method].uses_points:
                specs.append(RunSpec(method))
                continue
            method_shifts = labels
            if not METHODS[method].point_shifts and labels != ["0"]:
                self._check_reads_no_point(method)
                method_shifts = [s for s in labels if s == "0"]
                self.skipped_shifts.append(method)
            fixed = METHODS[method].fixed_ratio
            specs += [
                RunSpec(method, float(r), s, int(seed))
                for r in ([fixed] if fixed is not None else ratios)
                for s in method_shifts
                for seed in seeds
            ]
        return specs

    def _check_reads_no_point(self, method):
        """Refuse to skip the shifted runs of a mask-trained method whose config crops at the
        annotated points (``NUCLEIWEAK.DATA.CROP_AT_POINTS`` > 0): a shift moves its crops."""
        from ..config import setup_cfg

        at_points = float(
            setup_cfg(self.configs[method], self.opts[method]).NUCLEIWEAK.DATA.CROP_AT_POINTS
        )
        if at_points > 0:
            raise ValueError(
                f"{method} is benchmarked as trained on masks (no shifted runs), but its config "
                f"crops at the annotated points (NUCLEIWEAK.DATA.CROP_AT_POINTS {at_points:g}), "
                "so a point shift changes its training: set it to 0 or ask for shift 0 only"
            )

    # ------------------------------------------------------------------ one run
    def _export_settings(self, spec):
        """``(annotation, ratio, shift, seed, tag)`` of the run's export; a method without points
        gets every point, unshifted (it reads none of them)."""
        annotation = METHODS[spec.method].annotation
        ratio, shift, seed = (
            (1.0, "0", 0) if spec.ratio is None else (spec.ratio, spec.shift, spec.seed)
        )
        return annotation, ratio, shift, seed, f"{annotation}_r{ratio:g}_s{shift}_seed{seed}"

    def _datasets(self, spec):
        """``{split: registered name}`` of the run's COCO export (made once per process)."""
        from ..data.coco import export_coco_splits
        from ..data.datasets import register_nuclei_dataset

        annotation, ratio, shift, seed, tag = self._export_settings(spec)
        prefix = f"bench_{self.data.name}_{tag}"
        splits = list(dict.fromkeys(["train", "val", *self.test_splits]))
        if tag not in self._exported:
            roots = {s: self.data for s in splits}
            if annotation == "crop_mask":  # train: fully annotated crops; the rest as they are
                from ..methods.feng2019.crop_dataset import write_crop_dataset

                roots["train"], _ = write_crop_dataset(
                    self.data, self.out / "coco" / tag / "crops", ratio, seed
                )
                ratio, annotation = 1.0, "partial_mask"
            files = {}
            for root in dict.fromkeys(roots.values()):
                files.update(
                    export_coco_splits(
                        root,
                        self.out / "coco" / tag / ("crops" if root != self.data else ""),
                        ratio=ratio,
                        shift=shift,
                        seed=seed,
                        annotation=annotation,
                        splits=[s for s in splits if roots[s] == root],
                        weak_splits=["train"],
                        overwrite=True,
                    )
                )
            for split, path in files.items():
                register_nuclei_dataset(f"{prefix}_{split}", path, roots[split])
            self._exported[tag] = True
        return {s: f"{prefix}_{s}" for s in splits}

    def run_cfg(self, spec):
        """``(cfg, run hash)`` of a run; the hash covers the config, data folder and test splits
        (and the hash of the run whose points it reads, ``points_from``). A run at ratio 1 also
        takes the method's ``all_points_opts`` (before ``--opts``, which may override them)."""
        from ..config import setup_cfg
        from ..engine.run_dir import config_hash, short_hash

        source, source_hash = METHODS[spec.method].points_from, []
        extra = []
        if source:
            method, file, key = source
            src_cfg, src_hash = self.run_cfg(RunSpec(method, spec.ratio, spec.shift, spec.seed))
            extra, source_hash = [key, str(Path(src_cfg.OUTPUT_DIR) / file)], [src_hash]
        if spec.ratio == 1.0:
            extra += list(METHODS[spec.method].all_points_opts)
        *_, seed, tag = self._export_settings(spec)
        prefix = f"bench_{self.data.name}_{tag}"
        opts = [
            "DATASETS.TRAIN",
            f"('{prefix}_train',)",
            "DATASETS.TEST",
            f"('{prefix}_val',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            str([f"{prefix}_{s}" for s in self.test_splits]),
            "OUTPUT_DIR",
            str(self.out / "runs" / spec.name),
            "SEED",
            str(seed),
        ]
        cfg = setup_cfg(self.configs[spec.method], opts + extra + self.opts[spec.method])
        return cfg, short_hash([config_hash(cfg), str(self.data), self.test_splits, *source_hash])

    def done(self, spec, run_hash, rows):
        """The row of ``spec`` with this hash in ``rows``, or None."""
        for row in reversed(rows):
            if row.get("key") == spec.key() and row.get("config_hash") == run_hash:
                return row
        return None

    def check_folder(self, spec, run_hash):
        """Refuse (or, with ``overwrite``, delete) a run folder made with another config."""
        folder = self.out / "runs" / spec.name
        marker = folder / MARKER
        if not folder.exists() or not any(folder.iterdir()):
            return
        recorded = json.loads(marker.read_text()).get("config_hash") if marker.is_file() else None
        if recorded == run_hash:
            return
        if not self.overwrite:
            raise ValueError(
                f"{folder} holds a run of another config or data (hash {recorded}, now "
                f"{run_hash}); pass --overwrite to replace it, or use another --out"
            )
        logger.warning("--overwrite: removing %s (run of another config)", folder)
        shutil.rmtree(folder)

    def run(self, spec, cfg, run_hash, command=""):
        """Run one spec (resuming its folder), append and return its row.

        Wall and CPU minutes are those of this call (CPU: this process and its finished
        children, e.g. data-loader workers); a resumed run counts only what it ran again.
        """
        folder = Path(cfg.OUTPUT_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text(json.dumps({"key": spec.key(), "config_hash": run_hash}))
        names = self._datasets(spec)
        wall0, cpu0 = time.time(), cpu_seconds()
        results, extra = self._execute(spec, cfg)
        wall, cpu = time.time() - wall0, cpu_seconds() - cpu0
        by_name = {v: k for k, v in names.items()}
        row = {
            **self._identity(spec, run_hash),
            "command": command,
            "hardware": hardware(cfg.MODEL.DEVICE),
            "device": cfg.MODEL.DEVICE,
            "wall_min": round(wall / 60, 3),
            "cpu_min": round(cpu / 60, 3),
            "run_dir": str(folder.relative_to(self.out)),
            "metrics": {by_name[ds]: _flat_metrics(res) for ds, res in results.items()},
            "extra": {
                k: {by_name.get(ds, ds): v for ds, v in val.items()}
                if isinstance(val, dict)
                else val
                for k, val in extra.items()
            },
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        _append_row(self.out / RESULTS, row)
        return row

    def _identity(self, spec, run_hash):
        """The fields naming a run in its rows: key, settings, data, config, hash, commit."""
        return {
            "key": spec.key(),
            "method": spec.method,
            "ratio": spec.ratio,
            "shift": spec.shift,
            "seed": spec.seed,
            "data": str(self.data),
            "dataset": self.data.name,
            "config_file": _relative(self.configs[spec.method]),
            "opts": self.opts[spec.method],
            "config_hash": run_hash,
            "commit": git_commit(),
        }

    def decomposable(self, spec):
        """Whether ``--decompose`` applies: a UNet method's run on unshifted points."""
        return METHODS[spec.method].label_kind is not None and spec.shift == "0"

    def decompose(self, spec, cfg, run_hash):
        """Score a finished run's final model and its method's labels on val; append the row.

        The model is scored by its pipeline's ``--eval-only`` (into ``<run>/eval_only*/``). The
        labels are built from the run's ratio of val's points (the seeded subset of
        :func:`.label_bound.load`) with the run's label settings and stain normalisation
        (:func:`.label_bound.settings_from_cfg`) and post-processed as the network's output:
        with a ratio below 1 most nuclei fall in the Voronoi cells of their annotated
        neighbours, whereas Qu et al.'s network learns from labels of its detected points too.

        Raises
        ------
        ValueError
            The method has no label rule, the points are shifted, or the run left no final
            model.
        """
        from ..engine.pipeline import NUCLEIWEAK_PIPELINE_REGISTRY
        from .label_bound import evaluate, settings_from_cfg

        if not self.decomposable(spec):
            raise ValueError(f"{spec.name}: --decompose needs a UNet method on unshifted points")
        if not (Path(cfg.OUTPUT_DIR) / "model_final.pth").is_file():
            raise ValueError(f"{spec.name}: no model_final.pth in {cfg.OUTPUT_DIR} to decompose")
        kind = METHODS[spec.method].label_kind
        val = self._datasets(spec)["val"]
        wall0, cpu0 = time.time(), cpu_seconds()
        c = cfg.clone()
        c.defrost()
        c.NUCLEIWEAK.EVAL_DATASETS = [val]
        c.freeze()
        pipeline = NUCLEIWEAK_PIPELINE_REGISTRY.get(c.NUCLEIWEAK.PIPELINE)(c, eval_only=True)
        trained = _flat_metrics(pipeline.run()[pipeline.result_key][val])
        labels, _ = evaluate(
            self.data,
            ["val"],
            [kind, f"{kind}_free"],
            spec.ratio,
            spec.seed,
            **settings_from_cfg(cfg),
        )
        row = {
            **self._identity(spec, run_hash),
            "label_rule": kind,
            "metrics": {"val": trained},
            "labels": {"val": labels["val"][kind]},
            "labels_free": {"val": labels["val"][f"{kind}_free"]},
            "wall_min": round((time.time() - wall0) / 60, 3),
            "cpu_min": round((cpu_seconds() - cpu0) / 60, 3),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        _append_row(self.out / DECOMPOSITION, row)
        return row

    def _execute(self, spec, cfg):
        """``(results {dataset: {"nuclei": metrics}}, extra summary entries)`` of one run."""
        from ..engine.pipeline import NUCLEIWEAK_PIPELINE_REGISTRY

        if cfg.NUCLEIWEAK.PIPELINE:
            pipeline = NUCLEIWEAK_PIPELINE_REGISTRY.get(cfg.NUCLEIWEAK.PIPELINE)(cfg, resume=True)
            summary = pipeline.run()
            extra = {k: v for k, v in summary.items() if k not in (pipeline.result_key, "weights")}
            return summary[pipeline.result_key], extra
        return _train_single_model(cfg, METHODS[spec.method].select_metric), {}


def _train_single_model(cfg, select_metric):
    """Train one Detectron2 model (resuming), pick the checkpoint on val, score the eval sets."""
    from detectron2.engine import hooks

    from ..engine.pipeline import StagedPipeline
    from ..engine.trainer import Trainer

    out = Path(cfg.OUTPUT_DIR)
    trainer = Trainer(cfg)
    if cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
        trainer.register_hooks(
            [
                hooks.BestCheckpointer(
                    cfg.TEST.EVAL_PERIOD, trainer.checkpointer, select_metric, "max"
                )
            ]
        )
    trainer.resume_or_load(resume=True)
    trainer.train()
    model = StagedPipeline.load_model(cfg, StagedPipeline.best_weights(out))
    return {
        ds: {
            k: dict(v)
            for k, v in StagedPipeline.evaluate(cfg, model, ds, out / "eval" / ds).items()
        }
        for ds in cfg.NUCLEIWEAK.EVAL_DATASETS
    }


def _flat_metrics(result):
    """NucleiEvaluator's metrics of one dataset, plus other evaluators' as ``"<task>/<name>"``."""
    flat = dict(result.get("nuclei", {}))
    for task, values in result.items():
        if task != "nuclei" and isinstance(values, dict):
            flat.update({f"{task}/{k}": v for k, v in values.items()})
    return flat


def _relative(path):
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)
