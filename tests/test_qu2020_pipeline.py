"""Two-iteration CPU smoke tests of every stage of the Qu et al. pipeline on tiny synthetic data."""

import json

import pytest
import torch
from conftest import make_tiny_coco

pytest.importorskip("detectron2")

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.engine import NUCLEIWEAK_PIPELINE_REGISTRY  # noqa: E402
from nucleiweak_d2.methods.qu2020 import NucleiWeakQu2020Pipeline  # noqa: E402

QUICK = "configs/quick/qu2020_instant_test.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """4 synthetic 128x128 images (2 train / 1 val / 1 test), 50 % points on train."""
    tmp = tmp_path_factory.mktemp("qu2020")
    make_tiny_coco(tmp, "qu2020_smoke", size=(128, 128), ratio=0.5)
    return tmp


def _cfg(out, opts=()):
    return setup_cfg(
        QUICK,
        [
            "DATASETS.TRAIN",
            "('qu2020_smoke_train',)",
            "DATASETS.TEST",
            "('qu2020_smoke_val',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            "['qu2020_smoke_test']",
            "OUTPUT_DIR",
            str(out),
            *opts,
        ],
    )


def test_full_pipeline_two_iterations_per_stage(tiny_dataset):
    pytest.importorskip("nucleiweak_d2.modeling.losses.dense_crf")
    out = tiny_dataset / "run"
    cfg = _cfg(out)
    pipeline = NUCLEIWEAK_PIPELINE_REGISTRY.get("NucleiWeakQu2020Pipeline")
    assert NUCLEIWEAK_PIPELINE_REGISTRY.get("Qu2020Pipeline") is pipeline  # old name, old configs
    result = pipeline(cfg, resume=False, eval_only=False).run()
    for stage in ("det_round0", "det_round1", "seg", "crf"):
        assert (out / stage / "model_final.pth").is_file(), stage
        assert (out / stage / "model_best.pth").is_file(), stage  # selected on val
        assert (out / stage / "stage_done.json").is_file(), stage
    # round 0 wrote the propagated background used by round 1
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
    # the final model is the CRF stage's selected checkpoint with its foreground threshold
    # chosen on val (stage "calibrate"), linked at the top of the run
    assert result["weights"] == str(out / "calibrate" / "model_best.pth")
    final = out / "calibrate" / "model_best.pth"
    assert (out / "model_final.pth").read_bytes() == final.read_bytes()
    calib = json.loads((out / "calibrate" / "stage_done.json").read_text())["info"]
    assert calib["source"] == str(out / "crf" / "model_best.pth")
    chosen = torch.load(final, map_location="cpu", weights_only=False)["model"]["fg_threshold"]
    assert float(chosen) == pytest.approx(calib["fg_threshold"])
    chosen_key = f"{calib['fg_threshold']}/{calib['split_distance']}"
    assert max(calib["val_aji"].values()) == calib["val_aji"][chosen_key]
    assert "AJI" in (out / "summary.md").read_text()

    # --resume of a finished run: nothing retrained or re-evaluated, the same summary
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.pth")}
    again = pipeline(cfg, resume=True, eval_only=False).run()
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.pth")} == stamps
    assert again["segmentation"] == result["segmentation"]

    # --eval-only in the training folder: same scores, written into eval_only/, run untouched
    metrics_before = (out / "metrics.json").read_bytes()
    ev = pipeline(cfg, resume=False, eval_only=True).run()
    assert ev["segmentation"]["qu2020_smoke_test"]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])
    assert (out / "eval_only" / "metrics.json").is_file()
    assert (out / "metrics.json").read_bytes() == metrics_before

    # --eval-only from a new folder with MODEL.WEIGHTS = the trained model (the README's command)
    fresh = tiny_dataset / "eval_elsewhere"
    ev2 = pipeline(
        _cfg(fresh, ["MODEL.WEIGHTS", str(out / "model_final.pth")]), resume=False, eval_only=True
    ).run()
    assert ev2["segmentation"]["qu2020_smoke_test"]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])
    assert (fresh / "metrics.json").is_file() and not (fresh / "detect").exists()

    # eval sets sharing images (MoNuSeg's test = testA + testB): each image runs once
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from nucleiweak_d2.engine import shared_outputs

    copy = "qu2020_smoke_test_copy"
    if copy not in DatasetCatalog.list():
        DatasetCatalog.register(copy, lambda: DatasetCatalog.get("qu2020_smoke_test"))
        meta = dict(MetadataCatalog.get("qu2020_smoke_test").as_dict())
        meta.pop("name")
        MetadataCatalog.get(copy).set(**meta)
    wrappers = []
    real_init = shared_outputs.SharedImageOutputs.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        wrappers.append(self)

    shared_outputs.SharedImageOutputs.__init__ = spy
    try:
        both = ["NUCLEIWEAK.EVAL_DATASETS", f"['qu2020_smoke_test', '{copy}']"]
        ev3 = pipeline(_cfg(out, both), resume=False, eval_only=True).run()
    finally:
        shared_outputs.SharedImageOutputs.__init__ = real_init
    scores = ev3["segmentation"]
    assert scores[copy]["nuclei"] == scores["qu2020_smoke_test"]["nuclei"]
    assert scores[copy]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])
    assert len(wrappers) == 1 and wrappers[0].calls == 1  # one test image, run once
    assert wrappers[0].store == {}

    # --eval-only whose MODEL.WEIGHTS only initialises (lacks the head): refused, not scored

    state = torch.load(out / "model_final.pth", map_location="cpu")["model"]
    partial = {k: v for k, v in state.items() if k.startswith("backbone.")}
    torch.save({"model": partial}, tiny_dataset / "init.pth")
    with pytest.raises(ValueError, match="does not fit the model.*missing"):
        pipeline(
            _cfg(tiny_dataset / "eval_init", ["MODEL.WEIGHTS", str(tiny_dataset / "init.pth")]),
            resume=False,
            eval_only=True,
        ).run()


def test_rerun_without_resume_is_refused_and_changed_config_is_never_reused(tiny_dataset):
    out = tiny_dataset / "run_rules"
    cfg = _cfg(out, ["NUCLEIWEAK.QU2020.CRF.MAX_ITER", "0", "NUCLEIWEAK.QU2020.DET.ROUNDS", "0"])
    NucleiWeakQu2020Pipeline(cfg).run()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="holds another run.*--resume.*--overwrite"):
        NucleiWeakQu2020Pipeline(cfg).run()
    changed = _cfg(
        out,
        [
            "NUCLEIWEAK.QU2020.CRF.MAX_ITER",
            "0",
            "NUCLEIWEAK.QU2020.DET.ROUNDS",
            "0",
            "NUCLEIWEAK.QU2020.SEG.MAX_ITER",
            "3",
        ],
    )
    with pytest.raises(ValueError, match="another config.*NUCLEIWEAK.QU2020.SEG.MAX_ITER: 2 -> 3"):
        NucleiWeakQu2020Pipeline(changed, resume=True).run()
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written


def test_resume_reruns_only_the_unfinished_stage(tiny_dataset):
    """Train, stop after ``seg`` (simulated by removing its record), resume: only ``seg`` and the
    stages after it change; the detector and pseudo-labels are reused byte for byte."""
    out = tiny_dataset / "run_resume"
    cfg = _cfg(out, ["NUCLEIWEAK.QU2020.CRF.MAX_ITER", "0", "NUCLEIWEAK.QU2020.DET.ROUNDS", "0"])
    first = NucleiWeakQu2020Pipeline(cfg).run()
    kept = {
        p: (p.stat().st_mtime_ns, p.read_bytes())
        for p in [out / "det_round0" / "model_final.pth", out / "detect" / "points_merged.json"]
        + sorted((out / "pseudo_labels" / "labels").glob("*.npz"))
    }
    (out / "seg" / "stage_done.json").unlink()  # the seg stage was interrupted
    (out / "eval" / "stage_done.json").unlink()
    seg_stamp = (out / "seg" / "model_final.pth").stat().st_mtime_ns
    second = NucleiWeakQu2020Pipeline(cfg, resume=True).run()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == kept
    assert (out / "seg" / "stage_done.json").is_file()
    # the interrupted stage resumed from its last checkpoint (at MAX_ITER already): same weights
    assert (out / "seg" / "model_final.pth").stat().st_mtime_ns >= seg_stamp
    assert second["segmentation"]["qu2020_smoke_test"]["nuclei"]["AJI"] == pytest.approx(
        first["segmentation"]["qu2020_smoke_test"]["nuclei"]["AJI"]
    )


def test_detection_round_selection(tiny_dataset, tmp_path):
    """ "last" takes the last round (the paper); "best_val" the best val score, earliest on ties."""
    for k, score in enumerate([0.8, 0.5, 0.8]):
        (tmp_path / f"det_round{k}").mkdir()
        (tmp_path / f"det_round{k}" / "stage_done.json").write_text(
            json.dumps({"info": {"weights": "w", "val_score": score}})
        )
    common = ["NUCLEIWEAK.QU2020.DET.ROUNDS", "2"]
    assert NucleiWeakQu2020Pipeline(_cfg(tmp_path, common)).selected_round() == 2
    best = _cfg(tmp_path, common + ["NUCLEIWEAK.QU2020.DET.SELECT_ROUND", "best_val"])
    assert NucleiWeakQu2020Pipeline(best).selected_round() == 0
    (tmp_path / "det_round1" / "stage_done.json").write_text(
        json.dumps({"info": {"weights": "w", "val_score": 0.9}})
    )
    assert NucleiWeakQu2020Pipeline(best).selected_round() == 1
    bad = _cfg(tmp_path, common + ["NUCLEIWEAK.QU2020.DET.SELECT_ROUND", "first"])
    with pytest.raises(ValueError, match="SELECT_ROUND"):
        NucleiWeakQu2020Pipeline(bad)


def test_best_val_round_is_scored_on_val(tiny_dataset):
    out = tiny_dataset / "run_best_val"
    cfg = _cfg(
        out,
        ["NUCLEIWEAK.QU2020.DET.SELECT_ROUND", "best_val", "NUCLEIWEAK.QU2020.CRF.MAX_ITER", "0"],
    )
    NucleiWeakQu2020Pipeline(cfg).run()
    scores = [
        json.loads((out / f"det_round{k}" / "stage_done.json").read_text())["info"]["val_score"]
        for k in (0, 1)
    ]
    assert all(0.0 <= s <= 1.0 for s in scores)
    chosen = json.loads((out / "detect" / "stage_done.json").read_text())["info"]["round"]
    assert chosen == (0 if scores[0] >= scores[1] else 1)


def test_detector_ensemble_trains_every_member_and_detects_with_their_mean(tiny_dataset):
    """DET.ENSEMBLE 2: two detectors a round (seeds SEED + k and SEED + k + 1000); the round's
    last member writes the background and val score; ``detect`` uses their mean map."""
    from nucleiweak_d2.modeling.meta_arch import NucleiWeakPointDetectorEnsemble

    out = tiny_dataset / "run_ensemble"
    cfg = _cfg(
        out,
        [
            "NUCLEIWEAK.QU2020.DET.ENSEMBLE",
            "2",
            "NUCLEIWEAK.QU2020.DET.CALIBRATE_EVAL",  # each member's checkpoints, calibrated
            "True",
            "NUCLEIWEAK.QU2020.DET.SELECT_ROUND",
            "best_val",
            "NUCLEIWEAK.QU2020.CRF.MAX_ITER",
            "0",
        ],
    )
    pipe = NucleiWeakQu2020Pipeline(cfg)
    assert [s.name for s in pipe.stages()][:4] == [
        "det_round0",
        "det_round0_m1",
        "det_round1",
        "det_round1_m1",
    ]
    assert [s.seed_offset for s in pipe.stages()][:4] == [0, 1000, 1, 1001]
    pipe.run()

    def info(stage):
        return json.loads((out / stage / "stage_done.json").read_text())

    assert info("det_round0")["seed"] != info("det_round0_m1")["seed"]
    a = torch.load(out / "det_round0" / "model_best.pth", weights_only=False)["model"]
    b = torch.load(out / "det_round0_m1" / "model_best.pth", weights_only=False)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert len(list((out / "det_round0_m1" / "background").glob("*.png"))) == 2
    assert not (out / "det_round0" / "background").exists()
    assert "val_score" in info("det_round1_m1")["info"]
    assert "val_score" not in info("det_round1")["info"]
    # round 1 reads round 0's ensemble background
    assert pipe.det_cfg(1)[1].mapper_overrides["background_dir"] == str(
        out / "det_round0_m1" / "background"
    )
    _, _, model = pipe.detector(info("detect")["info"]["round"])
    assert isinstance(model, NucleiWeakPointDetectorEnsemble) and len(model.members) == 2
    assert model.threshold == info("detect")["info"]["point_threshold"]
    bad = _cfg(tiny_dataset / "bad", ["NUCLEIWEAK.QU2020.DET.ENSEMBLE", "0"])
    with pytest.raises(ValueError, match="ENSEMBLE must be >= 1"):
        NucleiWeakQu2020Pipeline(bad)


def test_old_pipeline_keys_say_where_they_went():
    with pytest.raises(KeyError, match="NUCLEIWEAK.UNET.POINT_THRESHOLD"):
        setup_cfg(QUICK, ["NUCLEIWEAK.QU2020.DET.THRESHOLD", "0.5"])
    with pytest.raises(KeyError, match="constructor argument"):
        setup_cfg(QUICK, ["NUCLEIWEAK.QU2020.POINTS_FILE", "x.json"])


def test_final_test_flips_reach_the_final_segmentor_alone(tiny_dataset, tmp_path, monkeypatch):
    """SEG.FINAL_TEST_FLIPS: the calibrate stage and the scored model average over the flips;
    the detectors and the training stages (their val evaluations) do not."""
    flips = ["NUCLEIWEAK.QU2020.SEG.FINAL_TEST_FLIPS", "8"]
    pipe = NucleiWeakQu2020Pipeline(_cfg(tmp_path, flips))
    assert pipe.final_model()[0].NUCLEIWEAK.UNET.TEST_FLIPS == 8
    assert pipe.seg_cfg()[0].NUCLEIWEAK.UNET.TEST_FLIPS == 1
    assert pipe.crf_cfg()[0].NUCLEIWEAK.UNET.TEST_FLIPS == 1
    assert pipe.det_cfg(0)[0].NUCLEIWEAK.UNET.TEST_FLIPS == 1
    seen = {}
    monkeypatch.setattr(pipe, "best_weights", lambda folder: str(folder / "model_best.pth"))
    monkeypatch.setattr(
        pipe,
        "calibrate_threshold",
        lambda c, weights, stage, trainer: seen.update(flips=c.NUCLEIWEAK.UNET.TEST_FLIPS),
    )
    pipe.calibrate()
    assert seen == {"flips": 8}
    plain = NucleiWeakQu2020Pipeline(_cfg(tmp_path))
    assert plain.final_model()[0].NUCLEIWEAK.UNET.TEST_FLIPS == 1


def test_segmentation_model_opts_reach_the_segmentation_stages_alone(tmp_path):
    """SEG.MODEL_OPTS: the seg, crf and final configs get the overrides, the detectors keep the
    base model; odd lists and the pipeline's own keys are refused."""
    wide = ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.STEM_OUT_CHANNELS", "64"]
    base = NucleiWeakQu2020Pipeline(_cfg(tmp_path)).det_cfg(0)[0].MODEL.RESNETS
    pipe = NucleiWeakQu2020Pipeline(_cfg(tmp_path, ["NUCLEIWEAK.QU2020.SEG.MODEL_OPTS", str(wide)]))
    for c in (pipe.seg_cfg()[0], pipe.crf_cfg()[0], pipe.final_model()[0]):
        assert (c.MODEL.RESNETS.RES2_OUT_CHANNELS, c.MODEL.RESNETS.STEM_OUT_CHANNELS) == (64, 64)
        assert c.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2
    det = pipe.det_cfg(0)[0].MODEL.RESNETS
    assert (det.RES2_OUT_CHANNELS, det.STEM_OUT_CHANNELS) == (
        base.RES2_OUT_CHANNELS,
        base.STEM_OUT_CHANNELS,
    )
    assert base.RES2_OUT_CHANNELS != 64
    for bad in (["MODEL.RESNETS.DEPTH"], ["NUCLEIWEAK.QU2020.SEG.MAX_ITER", "5"]):
        opts = ["NUCLEIWEAK.QU2020.SEG.MODEL_OPTS", str(bad)]
        with pytest.raises(ValueError, match="MODEL_OPTS"):
            NucleiWeakQu2020Pipeline(_cfg(tmp_path, opts)).seg_cfg()


def test_without_detection_the_segmentation_learns_from_the_annotated_points(tiny_dataset):
    """DET.ENABLED False (every nucleus clicked; Qu et al.'s 100 % results): no detection round,
    ``points_merged.json`` holds each training image's annotated points, no detector metrics."""
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.data.records import record_points

    out = tiny_dataset / "no_detection"
    opts = ["NUCLEIWEAK.QU2020.DET.ENABLED", "False", "NUCLEIWEAK.QU2020.CRF.MAX_ITER", "0"]
    pipe = NucleiWeakQu2020Pipeline(_cfg(out, opts))
    assert [s.name for s in pipe.stages()][0] == "detect"
    result = pipe.run()
    assert not list(out.glob("det_round*"))
    merged = json.loads((out / "detect" / "points_merged.json").read_text())
    expected = {
        str(r["image_id"]): record_points(r).astype(int).tolist()
        for r in DatasetCatalog.get("qu2020_smoke_train")
    }
    assert merged == expected and all(expected.values())
    info = json.loads((out / "detect" / "stage_done.json").read_text())["info"]
    assert info["round"] is None and info["added_detections"] == 0
    assert info["annotated_points"] == sum(len(v) for v in expected.values())
    assert "detection" not in result
    assert 0.0 <= result["segmentation"]["qu2020_smoke_test"]["nuclei"]["AJI"] <= 1.0
