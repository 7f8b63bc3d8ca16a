"""A toy two-stage method, written as a user would (one folder, one registration line), run
through ``tools/train_net.py``: training, the refused rerun, ``--resume``, ``--eval-only`` (in
the run's folder and from a new one) and ``--overwrite``.

The method lives in a temporary package ``toy_method`` that ``tools/train_net.py`` imports
through ``$NUCLEIWEAK_PLUGINS``; nothing of it is in the repository.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import make_tiny_coco

pytest.importorskip("detectron2")

REPO = Path(__file__).resolve().parents[1]
PIPELINE = "ToyTwoStagePipeline"
DATASETS = ("toy_train", "toy_val", "toy_test")

# ---------------------------------------------------------------------------- the toy method
TOY_INIT = '''\
"""Toy method: a disc-target segmentor (stage ``train``) and an object count (stage ``count``)."""

from nucleiweak_d2.methods import register_method

from .config import add_toy_config
from .pipeline import ToyDiscMapper, ToyTwoStagePipeline  # noqa: F401  (registers them)

register_method("toy", add_config=add_toy_config, pipelines=("ToyTwoStagePipeline",),
                description="toy two-stage method of the tests")
'''

TOY_CONFIG = """\
from detectron2.config import CfgNode as CN


def add_toy_config(cfg):
    cfg.NUCLEIWEAK.TOY = CN()
    # Iterations of the training stage.
    cfg.NUCLEIWEAK.TOY.MAX_ITER = 2
    # Radius (pixels) of the nucleus disc around each labelled point; ignored up to 3x.
    cfg.NUCLEIWEAK.TOY.RADIUS = 4.0
"""

TOY_PIPELINE = '''\
import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.utils import comm

from nucleiweak_d2.data.atomic import write_json
from nucleiweak_d2.data.io import read_image
from nucleiweak_d2.data.records import record_points
from nucleiweak_d2.data.registry import NUCLEIWEAK_MAPPER_REGISTRY
from nucleiweak_d2.data.transforms import build_nuclei_augmentation
from nucleiweak_d2.engine.pipeline import NUCLEIWEAK_PIPELINE_REGISTRY, Stage, StagedPipeline
from nucleiweak_d2.engine.trainer import Trainer


@NUCLEIWEAK_MAPPER_REGISTRY.register()
class ToyDiscMapper:
    """``sem_seg`` (H, W): 1 within ``radius`` of a labelled point, 2 (ignore) up to 3 radii,
    0 beyond; at test time the image only."""

    @configurable
    def __init__(self, is_train=True, *, augmentations, radius=4.0):
        self.is_train, self.radius = is_train, float(radius)
        self.augmentations = T.AugmentationList(augmentations)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {"is_train": is_train, "augmentations": build_nuclei_augmentation(cfg, is_train),
                "radius": cfg.NUCLEIWEAK.TOY.RADIUS}

    def __call__(self, dataset_dict):
        d = copy.deepcopy(dataset_dict)
        image = np.array(read_image(d["file_name"]))
        if self.is_train:
            yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
            dist = np.full(image.shape[:2], np.inf)
            for x, y in record_points(d):
                dist = np.minimum(dist, np.hypot(xx - x, yy - y))
            target = np.where(dist <= self.radius, 1, np.where(dist <= 3 * self.radius, 2, 0))
            aug = T.AugInput(image, sem_seg=target.astype(np.uint8))
            self.augmentations(aug)
            image = aug.image
            d["sem_seg"] = torch.as_tensor(aug.sem_seg.astype(np.int64))
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return d


@NUCLEIWEAK_PIPELINE_REGISTRY.register()
class ToyTwoStagePipeline(StagedPipeline):
    result_key = "segmentation"

    def model_cfg(self):
        c = self.cfg.clone()
        c.defrost()
        c.OUTPUT_DIR = str(self.stage_dir("train"))
        c.DATASETS.TEST = (self.val_set,) if self.val_set else ()
        c.NUCLEIWEAK.COCO_EVAL = False
        c.MODEL.META_ARCHITECTURE = "NucleiWeakUNetSegmentor"
        c.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
        c.NUCLEIWEAK.MAPPER = "ToyDiscMapper"
        c.SOLVER.MAX_ITER = self.cfg.NUCLEIWEAK.TOY.MAX_ITER
        return c

    def stages(self):
        return [Stage("train", self.train_stage, seed_offset=0), Stage("count", self.count_stage)]

    def train_stage(self):
        return {"weights": self.train(self.model_cfg(), "nuclei/AJI")}

    def count_stage(self):
        c = self.model_cfg()
        model = self.load_model(c, self.stage_info("train")["weights"])
        counts = self.infer(c, model, self.train_set, lambda inp, out: int(out["instance_map"].max()))
        if comm.is_main_process():
            write_json(self.stage_dir("count") / "counts.json", counts)
        return {"images": len(counts), "objects": int(sum(counts.values()))}

    def final_model(self):
        return self.model_cfg(), Trainer, self.best_weights(self.stage_dir("train"))
'''


def _config_yaml(coco_dir, image_root):
    return textwrap.dedent(f"""\
        _BASE_: ["{REPO / "configs" / "Base-Nuclei-UNet.yaml"}"]
        MODEL:
          DEVICE: "cpu"
          RESNETS:
            DEPTH: 18
            STEM_OUT_CHANNELS: 8
            RES2_OUT_CHANNELS: 8
        NUCLEIWEAK:
          PIPELINE: "{PIPELINE}"
          TOY:
            MAX_ITER: 2
          UNET:
            DECODER_CHANNELS: [32, 16, 16, 8, 8]
            OUTPUT_INSTANCES: False
          DATA:
            CROP_SIZE: [64, 64]
          DATASETS:
            COCO_DIR: "{coco_dir}"
            IMAGE_ROOT: "{image_root}"
            PREFIX: "toy"
          EVAL_DATASETS: ["toy_test"]
        DATASETS:
          TRAIN: ["toy_train"]
          TEST: ["toy_val"]
        DATALOADER:
          NUM_WORKERS: 0
        SOLVER:
          IMS_PER_BATCH: 2
          CHECKPOINT_PERIOD: 1000
        TEST:
          EVAL_PERIOD: 2
        """)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy package, its config and a tiny synthetic dataset (2 train / 1 val / 1 test)."""
    tmp = tmp_path_factory.mktemp("toy_method")
    pkg = tmp / "plugins" / "toy_method"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(TOY_INIT)
    (pkg / "config.py").write_text(TOY_CONFIG)
    (pkg / "pipeline.py").write_text(TOY_PIPELINE)
    root, _, _ = make_tiny_coco(tmp, size=(128, 128), ratio=0.5)
    config = tmp / "toy.yaml"
    config.write_text(_config_yaml(tmp / "coco", root))
    return {"tmp": tmp, "plugins": tmp / "plugins", "config": config}


def train_net(toy, *args, plugins="toy_method"):
    """``tools/train_net.py --config-file <toy.yaml> *args`` in a subprocess with the plug-in."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUCLEIWEAK_PLUGINS=plugins)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(toy["plugins"]), env.get("PYTHONPATH")]))
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "train_net.py"),
            "--config-file",
            str(toy["config"]),
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )


def _ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


def _snapshot(folder):
    """``{relative path: (mtime_ns, bytes)}`` of every file under ``folder``."""
    return {
        p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _seg_metrics(metrics_file):
    seg = json.loads(Path(metrics_file).read_text())["segmentation"]
    assert set(seg) == {"toy_test"}
    return seg["toy_test"]["nuclei"]


@pytest.fixture(scope="module")
def trained(toy):
    """One training run of the toy method; ``(run folder, its metrics, train_net output)``."""
    run = toy["tmp"] / "run"
    proc = _ok(train_net(toy, "OUTPUT_DIR", run))
    return run, _seg_metrics(run / "metrics.json"), proc


def test_toy_method_trains_through_train_net(toy, trained):
    run, seg, proc = trained
    for stage in ("train", "count", "eval"):
        assert (run / stage / "stage_done.json").is_file(), stage
    assert (run / "train" / "model_final.pth").is_file()
    assert (run / "train" / "model_best.pth").is_file()  # selected on val (EVAL_PERIOD 2)
    recorded = json.loads((run / "nucleiweak_run.json").read_text())
    assert recorded["pipeline"] == PIPELINE
    assert recorded["stages"] == ["train", "count", "eval"]
    assert recorded["config"]["NUCLEIWEAK.TOY.MAX_ITER"] == 2  # the plug-in's config node
    # the non-training stage: counts of the main process, gathered over the training images
    counts = json.loads((run / "count" / "counts.json").read_text())
    assert len(counts) == 2 and all(isinstance(v, int) and v >= 0 for v in counts.values())
    info = json.loads((run / "count" / "stage_done.json").read_text())["info"]
    assert info == {"images": 2, "objects": sum(counts.values())}
    # the final model, table and metrics at the top of the run
    assert (run / "model_final.pth").read_bytes() == (run / "train" / "model_best.pth").read_bytes()
    assert 0.0 <= seg["AJI"] <= 1.0 and 0.0 <= seg["pixel_F1"] <= 1.0
    summary = (run / "summary.md").read_text()
    assert PIPELINE in summary and "| toy_test |" in summary and "AJI" in summary
    # the pipeline's own log lines reach the console and OUTPUT_DIR/log.txt through train_net
    for text in (proc.stdout + proc.stderr, (run / "log.txt").read_text()):
        assert "stage train: running" in text and "stage count: done" in text
        assert "final model: " in text and "model_final.pth" in text


def test_rerun_refused_resume_reuses_everything(toy, trained):
    run, seg, _ = trained
    before = _snapshot(run)

    # a new run into the same folder: one error line naming --resume, exit 2, no file changed
    refused = train_net(toy, "OUTPUT_DIR", run)
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--resume" in errors[0], refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    assert _snapshot(run) == before

    # --resume of the finished run: every stage skipped, nothing retrained, same metrics
    models = {p: p.stat().st_mtime_ns for p in run.rglob("*.pth")}
    stages = {p: p.read_bytes() for p in run.glob("*/stage_done.json")}
    _ok(train_net(toy, "--resume", "OUTPUT_DIR", run))
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.pth")} == models
    assert {p: p.read_bytes() for p in run.glob("*/stage_done.json")} == stages
    assert _seg_metrics(run / "metrics.json") == seg


def test_eval_only_in_the_run_folder_and_elsewhere(toy, trained):
    run, seg, _ = trained
    metrics_before = (run / "metrics.json").read_bytes()
    models = {p: p.stat().st_mtime_ns for p in run.rglob("*.pth")}

    # in the run's folder: written into eval_only/, the run's own files untouched
    _ok(train_net(toy, "--eval-only", "OUTPUT_DIR", run))
    assert _seg_metrics(run / "eval_only" / "metrics.json") == pytest.approx(seg)
    assert (run / "metrics.json").read_bytes() == metrics_before
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.pth")} == models

    # from a new folder with the run's final model: the same scores, no training stage there
    fresh = toy["tmp"] / "eval_elsewhere"
    _ok(
        train_net(toy, "--eval-only", "MODEL.WEIGHTS", run / "model_final.pth", "OUTPUT_DIR", fresh)
    )
    assert _seg_metrics(fresh / "metrics.json") == pytest.approx(seg)
    assert not (fresh / "train").exists() and not (fresh / "count").exists()
    assert not (fresh / "nucleiweak_run.json").exists()


def test_overwrite_retrains(toy, trained):
    run, _, _ = trained
    old = {p: p.stat().st_mtime_ns for p in (run / "train").glob("*.pth")}
    old_done = (run / "train" / "stage_done.json").stat().st_mtime_ns
    _ok(train_net(toy, "--overwrite", "OUTPUT_DIR", run))
    new = {p: p.stat().st_mtime_ns for p in (run / "train").glob("*.pth")}
    assert set(new) == set(old) and all(new[p] > old[p] for p in old)
    assert (run / "train" / "stage_done.json").stat().st_mtime_ns > old_done  # a new record
    for stage in ("train", "count", "eval"):
        assert (run / stage / "stage_done.json").is_file(), stage
    assert (run / "metrics.json").is_file() and (run / "model_final.pth").is_file()


def test_refused_resume_names_only_the_changed_key(tmp_path):
    """The refusal of ``--resume`` after a config change names the key that changed, alone."""
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.pipeline import Stage, StagedPipeline

    class OneStage(StagedPipeline):
        def stages(self):
            return [Stage("noop", dict)]

    def cfg(max_iter):
        return setup_cfg(
            str(REPO / "configs" / "Base-Nuclei-UNet.yaml"),
            [
                "MODEL.DEVICE",
                "cpu",
                "DATASETS.TRAIN",
                "('unregistered_toy_train',)",
                "SOLVER.MAX_ITER",
                str(max_iter),
                "OUTPUT_DIR",
                str(tmp_path),
            ],
        )

    OneStage(cfg(2))._check_run()  # writes nucleiweak_run.json, as a new run does
    OneStage(cfg(2), resume=True)._check_run()  # same config: accepted
    with pytest.raises(ValueError, match="another config") as refused:
        OneStage(cfg(3), resume=True)._check_run()
    named = str(refused.value).split("another config (", 1)[1].rsplit("); use another", 1)[0]
    assert named == "SOLVER.MAX_ITER: 2 -> 3"


def test_another_plugin_keeps_the_run_resumable(toy, trained):
    run, seg, _ = trained
    extra = toy["plugins"] / "toy_extra"
    extra.mkdir(exist_ok=True)
    (extra / "__init__.py").write_text(
        textwrap.dedent("""\
        from detectron2.config import CfgNode as CN

        from nucleiweak_d2.methods import register_method


        def add_extra_config(cfg):
            cfg.NUCLEIWEAK.TOY_EXTRA = CN()
            cfg.NUCLEIWEAK.TOY_EXTRA.SIZE = 1


        register_method("toy_extra", add_config=add_extra_config)
        """)
    )
    models = {p: p.stat().st_mtime_ns for p in run.rglob("*.pth")}
    proc = train_net(toy, "--resume", "OUTPUT_DIR", run, plugins="toy_method,toy_extra")
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.pth")} == models
