"""Two-iteration CPU smoke tests of every stage of the Qu et al. pipeline on tiny synthetic data."""

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("detectron2")

from nucleiweak_d2.engine import NUCLEIWEAK_PIPELINE_REGISTRY, setup_cfg  # noqa: E402

QUICK = "configs/quick/qu2020_instant_test.yaml"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One thread: several-fold faster on a shared CPU (no OpenMP spin-waiting); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """4 synthetic 128x128 images (2 train / 1 val / 1 test), 50 % points on train."""
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.datasets import register_nuclei_splits
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    tmp = tmp_path_factory.mktemp("qu2020")
    root = make_synthetic_dataset(tmp / "data", n_images=4, size=(128, 128), seed=0)
    export_coco_splits(root, tmp / "coco", ratio=0.5, seed=0, weak_splits=["train"])
    names = register_nuclei_splits("qu2020_smoke", tmp / "coco", root)
    assert {"qu2020_smoke_train", "qu2020_smoke_val", "qu2020_smoke_test"} <= set(names)
    return tmp


def _cfg(out, opts=()):
    return setup_cfg(QUICK, ["DATASETS.TRAIN", "('qu2020_smoke_train',)",
                             "DATASETS.TEST", "('qu2020_smoke_val',)",
                             "NUCLEIWEAK.QU2020.EVAL_DATASETS", "['qu2020_smoke_test']",
                             "OUTPUT_DIR", str(out), *opts])


def test_full_pipeline_two_iterations_per_stage(tiny_dataset):
    pytest.importorskip("nucleiweak_d2.modeling.losses.dense_crf")
    out = tiny_dataset / "run"
    cfg = _cfg(out)
    result = NUCLEIWEAK_PIPELINE_REGISTRY.get("Qu2020Pipeline")(cfg, SimpleNamespace(resume=False,
                                                                                     eval_only=False))
    for stage in ("det_round0", "det_round1", "seg", "crf"):
        assert (out / stage / "model_final.pth").is_file(), stage
        assert (out / stage / "model_best.pth").is_file(), stage  # selected on val
        assert (out / stage / "stage_done.json").is_file(), stage
    # round 0 wrote the propagated background used by round 1
    from nucleiweak_d2.engine.qu2020_pipeline import Qu2020Runner

    bg_dir = Qu2020Runner(cfg).det_cfg(1).NUCLEIWEAK.QU2020.DET.BACKGROUND_DIR
    assert bg_dir == str(out / "det_round0" / "background")
    assert len(list((out / "det_round0" / "background").glob("*.png"))) == 2
    merged = json.loads((out / "detect" / "points_merged.json").read_text())
    assert len(merged) == 2 and all(len(v) > 0 for v in merged.values())
    assert len(list((out / "pseudo_labels" / "labels").glob("*.npz"))) == 2
    seg = result["segmentation"]["qu2020_smoke_test"]["nuclei"]
    assert 0.0 <= seg["AJI"] <= 1.0 and 0.0 <= seg["pixel_F1"] <= 1.0
    det = result["detection"]["qu2020_smoke_test"]
    assert {"det_P", "det_R", "det_F1"} <= set(det)
    assert (out / "eval" / "qu2020_smoke_test" / "pred").is_dir()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["segmentation"]["qu2020_smoke_test"]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])

    # Second run: every finished stage is skipped (no checkpoint rewritten), eval re-runs.
    stamp = (out / "seg" / "model_final.pth").stat().st_mtime_ns
    again = NUCLEIWEAK_PIPELINE_REGISTRY.get("Qu2020Pipeline")(cfg, SimpleNamespace(resume=True,
                                                                                    eval_only=True))
    assert (out / "seg" / "model_final.pth").stat().st_mtime_ns == stamp
    assert again["segmentation"]["qu2020_smoke_test"]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])


def test_segmentation_stage_alone_without_crf(tiny_dataset):
    """The segmentation stage trains from annotated points only when there is no detection."""
    from nucleiweak_d2.engine.qu2020_pipeline import Qu2020Runner
    from nucleiweak_d2.engine.trainer import Trainer

    cfg = _cfg(tiny_dataset / "seg_only", ["NUCLEIWEAK.QU2020.CRF.MAX_ITER", "0"])
    runner = Qu2020Runner(cfg)
    c = runner.seg_cfg()
    c.NUCLEIWEAK.QU2020.POINTS_FILE = ""  # annotated points
    weights = runner.train(c, cfg.NUCLEIWEAK.QU2020.SEG_SELECT_METRIC)
    model = runner.load_model(c, weights)
    assert isinstance(model, Trainer.build_model(c).__class__)
    res = runner.run(c, model, "qu2020_smoke_val", runner.evaluators(c, "qu2020_smoke_val",
                                                                      tiny_dataset / "ev"))
    assert 0.0 <= res["nuclei"]["AJI"] <= 1.0


def test_detection_round_selection(tiny_dataset, tmp_path):
    """"last" takes the last round (the paper); "best_val" the best val score, earliest on ties."""
    from nucleiweak_d2.engine.qu2020_pipeline import Qu2020Runner

    for k, score in enumerate([0.8, 0.5, 0.8]):
        (tmp_path / f"det_round{k}").mkdir()
        (tmp_path / f"det_round{k}" / "stage_done.json").write_text(
            json.dumps({"weights": "w", "val_score": score}))
    common = ["NUCLEIWEAK.QU2020.DET.ROUNDS", "2"]
    assert Qu2020Runner(_cfg(tmp_path, common)).selected_round() == 2
    best = _cfg(tmp_path, common + ["NUCLEIWEAK.QU2020.DET.SELECT_ROUND", "best_val"])
    assert Qu2020Runner(best).selected_round() == 0
    bad = _cfg(tmp_path, common + ["NUCLEIWEAK.QU2020.DET.SELECT_ROUND", "first"])
    with pytest.raises(ValueError, match="SELECT_ROUND"):
        Qu2020Runner(bad).selected_round()


def test_best_val_round_is_scored_on_val(tiny_dataset):
    out = tiny_dataset / "run_best_val"
    cfg = _cfg(out, ["NUCLEIWEAK.QU2020.DET.SELECT_ROUND", "best_val",
                     "NUCLEIWEAK.QU2020.CRF.ENABLED", "False"])
    from nucleiweak_d2.engine.qu2020_pipeline import Qu2020Runner

    runner = Qu2020Runner(cfg)
    runner.detection_rounds()
    for k in (0, 1):
        info = json.loads((out / f"det_round{k}" / "stage_done.json").read_text())
        assert 0.0 <= info["val_score"] <= 1.0
    assert runner.selected_round() in (0, 1)
