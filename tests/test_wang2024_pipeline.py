"""DoNuSeg model and pipeline: losses and gradients of one training step, inference outputs, and
a two-iteration CPU run of ``NucleiWeakWang2024Pipeline`` on tiny synthetic data with
``--resume`` (nothing retrained) and ``--eval-only``."""

import json

import numpy as np
import pytest
from conftest import make_tiny_coco

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

import nucleiweak_d2.methods.wang2024  # noqa: E402,F401  (registers the method before setup_cfg)
from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.engine import NUCLEIWEAK_PIPELINE_REGISTRY  # noqa: E402
from nucleiweak_d2.methods.wang2024 import NucleiWeakWang2024Pipeline  # noqa: E402

QUICK = "configs/quick/wang2024_instant_test.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _input(h, w, points):
    from detectron2.structures import Instances

    inst = Instances((h, w))
    inst.gt_points = torch.tensor(points, dtype=torch.float32).reshape(-1, 2)
    inst.gt_classes = torch.zeros(len(inst.gt_points), dtype=torch.int64)
    inst.gt_point_labeled = torch.ones(len(inst.gt_points), dtype=torch.bool)
    g = torch.Generator().manual_seed(h + w)
    return {
        "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
        "instances": inst,
        "height": h,
        "width": w,
    }


def test_one_training_step_and_inference_outputs():
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)
    model = build_model(setup_cfg(QUICK))
    model.train()
    batch = [_input(64, 64, [[10.5, 12.5], [30.5, 40.5], [50.5, 20.5]]), _input(60, 50, [])]
    with EventStorage() as storage:
        losses = model(batch)
        assert set(losses) == {
            "loss_seg",
            "loss_loc",
            "loss_dcs",
            "loss_ccl",
            "loss_fcos_cls",
            "loss_fcos_loc",
            "loss_fcos_ctr",
        }
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        alpha = storage.latest()["wang2024/alpha_p"][0]
    assert 0.0 <= alpha <= 1.0
    for name in ("loc_head", "seg_head", "projector", "head", "backbone"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name

    model.eval()
    with torch.no_grad():
        out = model(
            [{"image": torch.zeros(3, 70, 90, dtype=torch.uint8), "height": 140, "width": 180}]
        )[0]
    assert out["instance_map"].shape == (140, 180) and out["instance_map"].dtype == torch.int32
    assert out["prob"].shape == (140, 180) and out["sem_seg"].shape == (1, 140, 180)
    inst = out["instances"]
    assert {"pred_masks", "pred_boxes", "scores", "pred_classes"} <= set(inst.get_fields())
    assert len(inst) == int(out["instance_map"].max()) == len(out["pred_points"])


def test_inference_instances_follow_the_boxes(monkeypatch):
    """Detections and a foreground given by hand: the outputs are the box split of the mask."""
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances

    model = build_model(setup_cfg(QUICK)).eval()
    h, w = 96, 96  # p6 of at least 2 x 2 (GroupNorm needs 2 values per group at batch 1)

    def fake_detections(images, features, predictions):
        det = Instances((h, w))
        det.pred_boxes = Boxes(torch.tensor([[2.0, 2.0, 12.0, 12.0], [16.0, 16.0, 30.0, 30.0]]))
        det.scores = torch.tensor([0.9, 0.6])
        det.pred_classes = torch.zeros(2, dtype=torch.int64)
        return [det]

    def fake_seg(features, size):
        logits = torch.full((1, *size), -10.0)
        logits[0, 4:10, 4:10] = 10.0
        logits[0, 18:28, 18:28] = 10.0
        logits[0, 0:2, 20:30] = 10.0  # foreground in no box: dropped
        return logits

    monkeypatch.setattr(model, "forward_inference", fake_detections)
    monkeypatch.setattr(model.seg_head, "forward", fake_seg)
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, h, w, dtype=torch.uint8)}])[0]
    inst_map = out["instance_map"].numpy()
    assert (inst_map == 1).sum() == 36 and (inst_map == 2).sum() == 100 and inst_map.max() == 2
    torch.testing.assert_close(out["instances"].scores, torch.tensor([0.9, 0.6]))
    torch.testing.assert_close(out["pred_points"], torch.tensor([[6.5, 6.5], [22.5, 22.5]]))
    torch.testing.assert_close(
        out["instances"].pred_boxes.tensor,
        torch.tensor([[4.0, 4.0, 10.0, 10.0], [18.0, 18.0, 28.0, 28.0]]),
    )
    # what the evaluators read: NucleiEvaluator's instance map, COCOEvaluator's json
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    from nucleiweak_d2.evaluation.outputs import output_instance_map, paint_masks

    assert (output_instance_map(out) == inst_map).all()
    assert (paint_masks(out["instances"].pred_masks, out["instances"].scores) == inst_map).all()
    coco = instances_to_coco_json(out["instances"], 7)
    assert [c["score"] for c in coco] == pytest.approx([0.9, 0.6])
    assert all("counts" in c["segmentation"] and c["image_id"] == 7 for c in coco)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """4 synthetic 128x128 images (2 train / 1 val / 1 test), 50 % points on train."""
    tmp = tmp_path_factory.mktemp("wang2024")
    make_tiny_coco(tmp, "wang2024_smoke", size=(128, 128), ratio=0.5)
    return tmp


def _cfg(out, opts=()):
    return setup_cfg(
        QUICK,
        [
            "DATASETS.TRAIN",
            "('wang2024_smoke_train',)",
            "DATASETS.TEST",
            "('wang2024_smoke_val',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            "['wang2024_smoke_test']",
            "OUTPUT_DIR",
            str(out),
            *opts,
        ],
    )


def test_pipeline_two_iterations_resume_and_eval_only(tiny_dataset):
    out = tiny_dataset / "run"
    cfg = _cfg(out)
    assert NUCLEIWEAK_PIPELINE_REGISTRY.get(cfg.NUCLEIWEAK.PIPELINE) is NucleiWeakWang2024Pipeline
    result = NucleiWeakWang2024Pipeline(cfg).run()
    assert (out / "train" / "model_final.pth").is_file()
    assert (out / "train" / "model_best.pth").is_file()  # selected on val
    assert result["weights"] == str(out / "train" / "model_best.pth")
    seg = result["segmentation"]["wang2024_smoke_test"]["nuclei"]
    assert 0.0 <= seg["AJI"] <= 1.0 and "det_F1" in seg
    assert (out / "model_final.pth").read_bytes() == (out / "train" / "model_best.pth").read_bytes()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["segmentation"]["wang2024_smoke_test"]["nuclei"]["AJI"] == pytest.approx(
        seg["AJI"]
    )
    assert (out / "eval" / "wang2024_smoke_test" / "pred").is_dir()
    # the thresholds chosen on val (2 x 2 grid of the quick config) are the ones evaluated
    chosen = json.loads((out / "select_postprocess" / "stage_done.json").read_text())["info"]
    assert set(chosen["scores"]) == {"0.5/0.2", "0.5/0.05", "0.3/0.2", "0.3/0.05"}
    best = max(chosen["scores"].values())
    first = next(k for k, v in chosen["scores"].items() if v == best)
    assert first == f"{chosen['seg_threshold']:g}/{chosen['score_threshold']:g}"
    assert result["postprocess"] == {
        "SEG.THRESHOLD": chosen["seg_threshold"],
        "SCORE_THRESH_TEST": chosen["score_threshold"],
        "from": "val (select_postprocess)",
    }
    # model_final.yaml: what tools/predict.py needs to predict as the run evaluated
    final = setup_cfg(str(out / "model_final.yaml"))
    assert final.NUCLEIWEAK.WANG2024.SEG.THRESHOLD == chosen["seg_threshold"]
    assert final.MODEL.RETINANET.SCORE_THRESH_TEST == chosen["score_threshold"]
    assert final.MODEL.WEIGHTS == str((out / "model_final.pth").resolve())
    from detectron2.data import DatasetCatalog
    from PIL import Image

    from nucleiweak_d2.api import load_predictor
    from nucleiweak_d2.data.io import read_label
    from nucleiweak_d2.data.records import cache_key

    predictor = load_predictor(out / "model_final.yaml")
    for record in DatasetCatalog.get("wang2024_smoke_test"):
        image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
        saved = read_label(
            out / "eval" / "wang2024_smoke_test" / "pred" / f"{cache_key(record)}.png"
        )
        assert (predictor(image)["instance_map"] == saved).all()  # as evaluated
    # the quick grid lists non-default values first, so ties (an untrained model) choose them
    assert (chosen["seg_threshold"], chosen["score_threshold"]) == (0.3, 0.05)
    assert predictor.model.seg_threshold == 0.3 and predictor.model.test_score_thresh == 0.05

    # --resume of a finished run: nothing retrained or re-evaluated, the same summary
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.pth")}
    again = NucleiWeakWang2024Pipeline(cfg, resume=True).run()
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.pth")} == stamps
    assert again["segmentation"] == result["segmentation"]

    # --eval-only in the run's folder, and from a new folder with MODEL.WEIGHTS
    metrics_before = (out / "metrics.json").read_bytes()
    ev = NucleiWeakWang2024Pipeline(cfg, eval_only=True).run()
    assert ev["segmentation"]["wang2024_smoke_test"]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])
    assert (out / "eval_only" / "metrics.json").is_file()
    assert (out / "metrics.json").read_bytes() == metrics_before
    fresh = tiny_dataset / "eval_elsewhere"
    ev2 = NucleiWeakWang2024Pipeline(
        _cfg(fresh, ["MODEL.WEIGHTS", str(out / "model_final.pth")]), eval_only=True
    ).run()
    assert ev2["segmentation"]["wang2024_smoke_test"]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])
    assert (fresh / "metrics.json").is_file() and not (fresh / "train").exists()


def test_select_during_training_scores_each_evaluation_at_the_val_best_thresholds(
    tiny_dataset, monkeypatch
):
    """``SELECT.DURING_TRAINING``: the training stage's evaluations first set the model's
    thresholds to the pair the select stage would choose; the plain Trainer never does."""
    from nucleiweak_d2.engine.trainer import Trainer, val_choosing_trainer
    from nucleiweak_d2.methods.wang2024 import pipeline as wp

    cfg = _cfg(tiny_dataset / "select_eval", ["NUCLEIWEAK.WANG2024.SELECT.DURING_TRAINING", "True"])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    model.train()
    config_pair = (0.5, 0.2)
    Trainer.test(cfg, model)  # tools/train_net.py --eval-only: the config's thresholds
    assert (model.seg_threshold, model.test_score_thresh) == config_pair
    best, scores = wp.select_on_val(cfg, model, "wang2024_smoke_val")
    assert set(scores) == {"0.5/0.2", "0.5/0.05", "0.3/0.2", "0.3/0.05"}
    assert scores[f"{best[0]:g}/{best[1]:g}"] == max(scores.values())
    assert best != config_pair  # (ties go to the grid's first pair) so the checks below can fail
    assert (model.seg_threshold, model.test_score_thresh) == config_pair  # left as it was
    assert model.output_instances and model.training
    selecting = val_choosing_trainer(Trainer, wp.select_during_training, "Selecting")
    assert selecting.__name__ == "SelectingTrainer"
    results = selecting.test(cfg, model)
    assert (model.seg_threshold, model.test_score_thresh) == best
    assert results["nuclei"]["AJI"] == pytest.approx(max(scores.values()), abs=1e-9)
    assert model.training

    # the pipeline's training stage uses it before its periodic evaluation (EVAL_PERIOD 2)
    calls = []

    def spy(trainer, c, m, dataset):
        calls.append((trainer.__name__, dataset))
        return wp.select_on_val(c, m, dataset, trainer)

    monkeypatch.setattr(wp, "select_during_training", spy)
    NucleiWeakWang2024Pipeline(cfg).run()
    assert calls == [("SelectingTrainer", "wang2024_smoke_val")]
    calls.clear()
    NucleiWeakWang2024Pipeline(_cfg(tiny_dataset / "select_after")).run()
    assert calls == []  # off by default
    no_grid = [
        "NUCLEIWEAK.WANG2024.SELECT.DURING_TRAINING",
        "True",
        "NUCLEIWEAK.WANG2024.SELECT.SEG_THRESHOLDS",
        "[]",
        "NUCLEIWEAK.WANG2024.SELECT.SCORE_THRESHOLDS",
        "[]",
    ]
    with pytest.raises(ValueError, match="DURING_TRAINING needs a grid"):
        NucleiWeakWang2024Pipeline(_cfg(tiny_dataset / "no_grid", no_grid)).run()
