"""Two-iteration CPU smoke tests of every stage of the PROnet pipeline on tiny synthetic data
with shifted points, and of the model's training and inference outputs."""

import json

import numpy as np
import pytest
from conftest import make_tiny_coco

pytest.importorskip("detectron2")

import nucleiweak_d2.methods.nam2023  # noqa: E402,F401  (registers the method before setup_cfg)
from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.engine import NUCLEIWEAK_PIPELINE_REGISTRY  # noqa: E402
from nucleiweak_d2.methods.nam2023 import NucleiWeakNam2023Pipeline  # noqa: E402

QUICK = "configs/quick/nam2023_instant_test.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """4 synthetic 96x96 images (2 train / 1 val / 1 test), every point shifted by 2-4 px."""
    tmp = tmp_path_factory.mktemp("nam2023")
    make_tiny_coco(tmp, "nam2023_smoke", size=(96, 96), ratio=1.0, shift=(2, 4), weak_splits=None)
    return tmp


def _cfg(out, opts=()):
    return setup_cfg(
        QUICK,
        [
            "DATASETS.TRAIN",
            "('nam2023_smoke_train',)",
            "DATASETS.TEST",
            "('nam2023_smoke_val',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            "['nam2023_smoke_test']",
            "OUTPUT_DIR",
            str(out),
            *opts,
        ],
    )


def test_model_losses_and_outputs(tiny_dataset):
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.utils.events import EventStorage

    from nucleiweak_d2.engine.trainer import Trainer

    cfg = _cfg(tiny_dataset / "model")
    model = Trainer.build_model(cfg)
    mapper = Trainer.build_mapper(cfg, True)
    batch = [mapper(r) for r in DatasetCatalog.get("nam2023_smoke_train")]
    assert batch[0]["sem_seg"].shape == (2, 64, 64) and batch[0]["center_target"].shape == (
        1,
        64,
        64,
    )
    assert "offset_target" not in batch[0]  # warm-up: no offset targets
    ones = torch.ones(1, 64, 64)
    for x in batch:
        x["offset_target"], x["offset_weight"] = torch.zeros(2, 64, 64), ones
    model.train()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_sem_seg_t0", "loss_sem_seg_t1", "loss_center", "loss_offset"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    test = Trainer.build_mapper(cfg, False)(DatasetCatalog.get("nam2023_smoke_test")[0])
    out = model([test])[0]
    assert out["sem_seg"].shape == (2, 96, 96) and out["offsets"].shape == (2, 96, 96)
    assert out["center_heatmap"].shape == (96, 96) and out["instance_map"].dtype == torch.int32
    assert out["pred_points"].shape[1] == 2
    with torch.no_grad():  # a constant heatmap above the threshold, foreground everywhere:
        model.sem_seg_head.center_predictor.weight.zero_()  # one plateau -> one peak, one nucleus
        model.sem_seg_head.center_predictor.bias.fill_(3.0)
        model.sem_seg_head.binary_predictor.weight.zero_()
        model.sem_seg_head.binary_predictor.bias.copy_(torch.tensor([-3.0, 3.0]))
    out = model([test])[0]
    assert len(out["pred_points"]) == 1 and int(out["instance_map"].max()) == 1
    assert bool((out["instance_map"] == 1).all())


def test_offset_ablation_has_no_offset_loss_zero_offsets_and_never_refines(
    tiny_dataset, monkeypatch
):
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.utils.events import EventStorage

    from nucleiweak_d2.engine.trainer import Trainer

    cfg = _cfg(tiny_dataset / "no_offset", ["NUCLEIWEAK.NAM2023.HEAD.OFFSET", "False"])
    model = Trainer.build_model(cfg)
    head = model.sem_seg_head
    assert head.offset_predictor is None and not head.attention_units
    mapper = Trainer.build_mapper(cfg, True)
    batch = [mapper(r) for r in DatasetCatalog.get("nam2023_smoke_train")]
    for x in batch:
        x["offset_target"], x["offset_weight"] = torch.ones(2, 64, 64), torch.ones(1, 64, 64)
    model.train()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_sem_seg_t0", "loss_sem_seg_t1", "loss_center"}
    model.eval()
    test = Trainer.build_mapper(cfg, False)(DatasetCatalog.get("nam2023_smoke_test")[0])
    out = model([test])[0]
    assert out["offsets"].shape == (2, 96, 96) and bool((out["offsets"] == 0).all())
    from nucleiweak_d2.methods.nam2023 import pipeline as module

    def no_refinement(*args, **kwargs):
        raise AssertionError("the offset ablation refined points")

    def no_targets(*args, **kwargs):
        raise AssertionError("the offset ablation made offset targets (no loss reads them)")

    monkeypatch.setattr(module, "refine_points", no_refinement)
    monkeypatch.setattr(module, "shape_guided_targets", no_targets)
    p = NucleiWeakNam2023Pipeline(cfg, resume=False, eval_only=False)
    assert "targets_dir" not in p.trainer(1).mapper_overrides  # no offset tensors to build
    p.run()
    for k in (0, 1):
        assert not list((tiny_dataset / "no_offset" / f"round{k}" / "targets").glob("*.npz"))
    info = json.loads((tiny_dataset / "no_offset" / "round1" / "stage_done.json").read_text())
    assert info["info"]["moved"] == {"train": 0, "val": 0}
    for split in ("train", "val"):
        assert json.loads(p.points_file(split, 1).read_text()) == json.loads(
            p.points_file(split, 0).read_text()
        )


def test_full_pipeline_two_iterations_per_stage_with_shifted_points(tiny_dataset):
    out = tiny_dataset / "run"
    cfg = _cfg(out, ["NUCLEIWEAK.NAM2023.CENTER.THRESHOLD_CANDIDATES", "[0.1, 0.3]"])
    pipeline = NUCLEIWEAK_PIPELINE_REGISTRY.get("NucleiWeakNam2023Pipeline")
    result = pipeline(cfg, resume=False, eval_only=False).run()
    # the centre threshold chosen on val among the candidates, used by the evaluation
    chosen = json.loads((out / "select_center" / "stage_done.json").read_text())["info"]
    assert set(chosen["scores"]) == {"0.1", "0.3"}
    assert chosen["threshold"] in (0.1, 0.3)
    assert chosen["scores"][f"{chosen['threshold']:g}"] == max(chosen["scores"].values())
    assert result["inference"] == {
        "CENTER_THRESHOLD": chosen["threshold"],
        "from": "val (select_center)",
    }
    final_cfg = pipeline(cfg).final_model()[0]
    assert final_cfg.NUCLEIWEAK.NAM2023.CENTER.THRESHOLD == chosen["threshold"]
    for stage in ("warmup", "round0", "round1"):
        assert (out / stage / "model_final.pth").is_file(), stage
        assert (out / stage / "stage_done.json").is_file(), stage
    assert (out / "round1" / "model_best.pth").is_file()  # only the last stage is selected on val
    assert not (out / "warmup" / "model_best.pth").exists()
    assert len(list((out / "pseudo_labels" / "labels").glob("*.npz"))) == 2
    assert len(list((out / "pseudo_labels" / "val_cells").glob("*.npz"))) == 1
    for k in (0, 1):
        assert len(list((out / f"round{k}" / "targets").glob("*.npz"))) == 2
    # the refined points of round 1, per image, as many as the annotations
    from detectron2.data import DatasetCatalog

    for split, ds in (("train", "nam2023_smoke_train"), ("val", "nam2023_smoke_val")):
        refined = json.loads((out / "round1" / f"points_{split}.json").read_text())
        for record in DatasetCatalog.get(ds):
            pts = np.asarray(refined[str(record["image_id"])])
            assert pts.shape == (len(record["annotations"]), 2)
    # distance to the true centres (point - point_shift): 2-4 px before any refinement
    start = json.loads((out / "pseudo_labels" / "stage_done.json").read_text())["info"][
        "point_error"
    ]
    assert 2.0 <= start["train"]["mean"] <= 4.0 and 2.0 <= start["val"]["mean"] <= 4.0
    info = json.loads((out / "round1" / "stage_done.json").read_text())["info"]
    assert set(info["point_error"]) == {"train", "val"} and set(info["moved"]) == {"train", "val"}
    assert info["point_error"]["train"]["n"] == start["train"]["n"]
    seg = result["segmentation"]["nam2023_smoke_test"]["nuclei"]
    assert 0.0 <= seg["AJI"] <= 1.0 and "det_F1" in seg
    assert result["weights"] == str(out / "round1" / "model_best.pth")
    assert (out / "model_final.pth").read_bytes() == (
        out / "round1" / "model_best.pth"
    ).read_bytes()
    assert (out / "eval" / "nam2023_smoke_test" / "pred").is_dir()

    # --resume of a finished run: nothing retrained, rewritten or re-evaluated
    watched = sorted(
        p for p in out.rglob("*") if p.is_file() and p.suffix in (".pth", ".npz", ".json")
    )
    stamps = {p: p.stat().st_mtime_ns for p in watched}
    again = pipeline(cfg, resume=True, eval_only=False).run()
    assert {p: p.stat().st_mtime_ns for p in watched if p.name != "metrics.json"} == {
        p: s for p, s in stamps.items() if p.name != "metrics.json"
    }
    assert again["segmentation"] == result["segmentation"]

    # --eval-only in the training folder: the same scores, written into eval_only/
    ev = pipeline(cfg, resume=False, eval_only=True).run()
    assert ev["segmentation"]["nam2023_smoke_test"]["nuclei"]["AJI"] == pytest.approx(seg["AJI"])
    assert (out / "eval_only" / "metrics.json").is_file()


def test_schedule_checks_and_no_refinement_rounds(tiny_dataset):
    with pytest.raises(ValueError, match="WARMUP_ITER and OFFSET_ITER"):
        NucleiWeakNam2023Pipeline(
            _cfg(tiny_dataset / "bad", ["NUCLEIWEAK.NAM2023.OFFSET_ITER", "0"])
        )
    p = NucleiWeakNam2023Pipeline(_cfg(tiny_dataset / "r0", ["NUCLEIWEAK.NAM2023.EM.ROUNDS", "0"]))
    assert [s.name for s in p.stages()] == ["pseudo_labels", "warmup", "round0"]
    c = p.stage_cfg("round0")
    assert c.MODEL.WEIGHTS.endswith("warmup/model_final.pth") and c.SOLVER.MAX_ITER == 2
    assert c.TEST.EVAL_PERIOD == 2 and p.stage_cfg("warmup").TEST.EVAL_PERIOD == 0


def _file_points(tiny_dataset):
    """``{image_id: points}`` of the training images: the annotated points minus the last one
    (a partial annotation) plus one made-up point each (a detection), and the records."""
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.data.records import record_points

    records = DatasetCatalog.get("nam2023_smoke_train")
    points = {}
    for k, r in enumerate(records):
        pts = record_points(r)[:-1].tolist()
        points[str(r["image_id"])] = pts + [[5.4 + k, 7.6]]  # rounded to (5 + k, 8)
    return points, records


def test_points_file_replaces_the_annotated_points(tiny_dataset):
    from nucleiweak_d2.data.records import cache_key

    points, records = _file_points(tiny_dataset)
    path = tiny_dataset / "completed.json"
    path.write_text(json.dumps(points))
    out = tiny_dataset / "completed_run"
    cfg = _cfg(
        out, ["NUCLEIWEAK.NAM2023.POINTS_FILE", str(path), "NUCLEIWEAK.NAM2023.EM.ROUNDS", "1"]
    )
    NucleiWeakNam2023Pipeline(cfg, resume=False, eval_only=False).run()
    start = json.loads((out / "pseudo_labels" / "points_train.json").read_text())
    for k, r in enumerate(records):
        key = str(r["image_id"])
        assert start[key][-1] == [5 + k, 8] and len(start[key]) == len(r["annotations"])
        with np.load(out / "pseudo_labels" / "labels" / f"{cache_key(r)}.npz") as z:
            cells = z["cells"]  # one Voronoi cell per starting point, made from the file's points
        assert cells.max() == len(start[key]) - 1 and cells[8, 5 + k] == len(start[key]) - 1
        refined = json.loads((out / "round1" / "points_train.json").read_text())[key]
        assert len(refined) == len(start[key])  # the E-step moves the file's points
    info = json.loads((out / "pseudo_labels" / "stage_done.json").read_text())["info"]
    assert info["point_error"]["train"] is None  # not the annotations' points
    assert info["point_error"]["val"]["n"] > 0


def test_points_file_bad_input_is_one_clear_error(tiny_dataset):
    points, records = _file_points(tiny_dataset)

    def start(name, content):
        path = tiny_dataset / name
        if content is not None:
            path.write_text(json.dumps(content))
        cfg = _cfg(tiny_dataset / "bad_points", ["NUCLEIWEAK.NAM2023.POINTS_FILE", str(path)])
        return NucleiWeakNam2023Pipeline(cfg).start_points(records)

    with pytest.raises(FileNotFoundError, match="POINTS_FILE not found"):
        start("absent.json", None)
    first = str(records[0]["image_id"])
    with pytest.raises(ValueError, match="no entry for 1 training image"):
        start("missing.json", {k: v for k, v in points.items() if k != first})
    with pytest.raises(ValueError, match=r"\(96x96\) has 1 point outside it"):
        start("outside.json", {**points, first: [[96, 3]]})
    with pytest.raises(ValueError, match="holds no point"):
        start("empty.json", {k: [] for k in points})
    assert start("good.json", points)[first][-1] == [5, 8]
