"""NucleiEvaluator on a tiny hand-made dataset with fake model outputs (no training)."""

import csv
import json
import os
from collections import OrderedDict

import numpy as np
import pytest

pytest.importorskip("detectron2")
import torch  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, print_csv_format  # noqa: E402
from detectron2.structures import Boxes, BoxMode, Instances  # noqa: E402
from pycocotools import mask as mask_util  # noqa: E402

from nucleiweak_d2.data.io import write_label  # noqa: E402
from nucleiweak_d2.evaluation.evaluator import NucleiEvaluator, per_image_csv_path  # noqa: E402

SIZE = 16


def _two_nuclei():
    label = np.zeros((SIZE, SIZE), np.int32)
    label[2:6, 2:6] = 4  # 16 px, bbox centre (x, y) = (3, 3)
    label[2:6, 6:10] = 9  # 16 px, bbox centre (7, 3)
    return label


def _annotations(label):
    anns = []
    for i in np.unique(label)[1:]:
        m = np.asfortranarray((label == i).astype(np.uint8))
        rle = mask_util.encode(m)
        rle["counts"] = rle["counts"].decode("ascii")
        rows, cols = np.nonzero(m)
        anns.append(
            {
                "bbox": [
                    int(cols.min()),
                    int(rows.min()),
                    int(np.ptp(cols)) + 1,
                    int(np.ptp(rows)) + 1,
                ],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "iscrowd": 0,
                "segmentation": rle,
            }
        )
    return anns


@pytest.fixture
def tiny_dataset(tmp_path):
    """Two 16x16 images: 'a' with a label file, 'b' with RLE annotations only."""
    label = _two_nuclei()
    write_label(tmp_path / "a_label.png", label)
    records = [
        {
            "file_name": str(tmp_path / "a.png"),
            "image_id": 0,
            "height": SIZE,
            "width": SIZE,
            "label_file_name": str(tmp_path / "a_label.png"),
            "annotations": _annotations(label),
        },
        {
            "file_name": str(tmp_path / "b.png"),
            "image_id": 1,
            "height": SIZE,
            "width": SIZE,
            "annotations": _annotations(label),
        },
    ]
    name = f"nucleiweak_test_eval_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["nucleus"], evaluator_type="nuclei")
    yield name, records, label
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _instances(label, scores=None):
    ids = np.unique(label)[1:]
    inst = Instances((SIZE, SIZE))
    masks = torch.from_numpy(np.stack([label == i for i in ids]))
    inst.pred_masks = masks
    inst.scores = torch.tensor(scores if scores is not None else [0.9] * len(ids))
    inst.pred_classes = torch.zeros(len(ids), dtype=torch.int64)
    boxes = [
        [
            np.nonzero(m.any(0))[0].min(),
            np.nonzero(m.any(1))[0].min(),
            np.nonzero(m.any(0))[0].max() + 1,
            np.nonzero(m.any(1))[0].max() + 1,
        ]
        for m in masks.numpy()
    ]
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    return inst


def _inputs(records):
    return [{k: r[k] for k in ("file_name", "image_id", "height", "width")} for r in records]


def _merged(label):
    return torch.from_numpy((label > 0).astype(np.int64) * 3)


def test_evaluator_values_csv_and_print(tiny_dataset, tmp_path):
    name, records, label = tiny_dataset
    out_dir = tmp_path / "inference"
    ev = NucleiEvaluator(name, str(out_dir))
    ev.reset()
    # Image a: perfect instance masks. Image b: the two nuclei merged into one instance map.
    ev.process(_inputs(records[:1]), [{"instances": _instances(label)}])
    ev.process(_inputs(records[1:]), [{"instance_map": _merged(label)}])
    res = ev.evaluate()
    assert isinstance(res, OrderedDict) and list(res) == ["nuclei"]
    r = res["nuclei"]
    assert r["AJI"] == pytest.approx((1 + 0.5) / 2)
    assert r["AJI_plus"] == pytest.approx((1 + 1 / 3) / 2)
    assert r["AJI_std"] == pytest.approx(0.25)
    assert r["Dice_obj"] == pytest.approx((1 + 2 / 3) / 2)
    assert r["PQ"] == pytest.approx(0.5)
    assert r["pixel_F1"] == 1.0 and r["pixel_acc"] == 1.0
    assert r["mAP_kaggle"] == pytest.approx(0.5)
    # Detection (radius 11): a: 2 TP at 0 px; b: GT (3,3) takes the merged object's centre
    # (5,3) at 2 px, GT (7,3) is missed. Summed: TP 3, FP 0, FN 1.
    assert (r["det_TP"], r["det_FP"], r["det_FN"]) == (3, 0, 1)
    assert (r["det_P"], r["det_R"]) == (1.0, 0.75)
    assert r["det_F1"] == pytest.approx(6 / 7)
    assert r["det_R_img"] == pytest.approx(0.75)
    assert r["det_dist_mean"] == pytest.approx(2 / 3)
    assert r["num_images"] == 2.0
    assert all(isinstance(v, float) for v in r.values())
    print_csv_format(res)
    csv_path = per_image_csv_path(str(out_dir), name)
    assert os.path.basename(csv_path) == f"nuclei_per_image_{name}.csv"
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [row["name"] for row in rows] == ["a", "b"]
    assert float(rows[1]["aji"]) == pytest.approx(0.5)
    assert int(rows[1]["det_fn"]) == 1
    summary = json.loads((out_dir / f"nuclei_results_{name}.json").read_text())
    assert summary["metrics"]["AJI"] == pytest.approx(0.75)
    assert summary["settings"]["radius"] == 11.0


def test_sem_seg_output_and_pred_points(tiny_dataset):
    name, records, label = tiny_dataset
    # Two separate blobs in the foreground channel -> two components = the two nuclei.
    sem = np.zeros((2, SIZE, SIZE), np.float32)
    sem[0] = 1.0
    sem[1][label == 4] = 2.0
    sem[1][2:6, 7:10] = 2.0  # nucleus 9 minus its first column: 4-/8-connected apart
    ev = NucleiEvaluator(name, distributed=False, radius=3.0, pred_points_offset=0.5)
    ev.process(
        _inputs(records[:1]),
        [
            {
                "sem_seg": torch.from_numpy(sem),
                "pred_points": torch.tensor([[3.5, 3.5], [12.0, 12.0]]),
            }
        ],
    )
    r = ev.evaluate()["nuclei"]
    # Nucleus 9 (16 px) vs its 12-px prediction: IoU 0.75; AJI = (16 + 12) / (16 + 16).
    assert r["AJI"] == pytest.approx(28 / 32)
    assert r["PQ"] == pytest.approx((1 + 0.75) / 2)  # DQ 1, SQ (1 + 0.75) / 2
    # pred_points (here continuous, pixel centre +0.5) are used instead of the nuclei centres:
    # (3.5, 3.5) is pixel (3, 3) exactly; one hit, one false positive, one miss.
    assert (r["det_TP"], r["det_FP"], r["det_FN"]) == (1, 1, 1)
    assert r["det_dist_mean"] == 0.0


def test_highest_score_wins_overlapping_masks(tiny_dataset):
    name, records, label = tiny_dataset
    inst = _instances(label, scores=[0.2, 0.9])
    big = inst.pred_masks.clone()
    big[0, 2:6, 2:10] = True  # low-score mask covers both nuclei
    inst.pred_masks = big
    ev = NucleiEvaluator(name, distributed=False)
    ev.process(_inputs(records[:1]), [{"instances": inst}])
    r = ev.evaluate()["nuclei"]
    assert r["AJI"] == 1.0  # the high-score mask keeps nucleus 9, the other keeps nucleus 4


def test_combines_with_coco_evaluator(tiny_dataset, tmp_path):
    name, records, label = tiny_dataset
    evaluators = DatasetEvaluators(
        [
            COCOEvaluator(
                name,
                tasks=("segm",),
                distributed=False,
                output_dir=str(tmp_path / "coco"),
                use_fast_impl=False,
            ),
            NucleiEvaluator(name, str(tmp_path / "coco"), distributed=False),
        ]
    )
    evaluators.reset()
    evaluators.process(_inputs(records), [{"instances": _instances(label)}] * 2)
    res = evaluators.evaluate()
    assert set(res) == {"segm", "nuclei"}
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["nuclei"]["AJI"] == 1.0
    print_csv_format(res)


def test_bad_inputs_name_the_file(tiny_dataset, tmp_path):
    name, records, label = tiny_dataset
    ev = NucleiEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match="a.png.*12x16"):
        ev.process(
            _inputs(records[:1]), [{"instance_map": torch.zeros(12, SIZE, dtype=torch.int64)}]
        )
    with pytest.raises(ValueError, match="not in dataset"):
        ev.process([{"file_name": "other.png", "image_id": 99}], [{"instance_map": _merged(label)}])
    with pytest.raises(ValueError, match="none of instance_map"):
        ev.process(_inputs(records[:1]), [{"proposals": None}])
    with pytest.raises(ValueError, match="integer"):
        ev.process(_inputs(records[:1]), [{"instance_map": torch.zeros(SIZE, SIZE)}])
    points_only = [
        {
            "file_name": "c.png",
            "image_id": 5,
            "height": SIZE,
            "width": SIZE,
            "annotations": _annotations(label)[:1] + [{"point": [3, 3], "category_id": 0}],
        }
    ]
    ev2 = NucleiEvaluator("unregistered", distributed=False, dataset_dicts=points_only)
    with pytest.raises(ValueError, match="c.png.*no segmentation"):
        ev2.process(_inputs(points_only), [{"instance_map": _merged(label)}])
    assert ev.evaluate() == {}  # nothing valid processed


def test_build_from_config(tmp_path):
    from detectron2.config import get_cfg

    from nucleiweak_d2.config import add_nucleiweak_config
    from nucleiweak_d2.evaluation.evaluator import build_nuclei_evaluator

    cfg = get_cfg()
    add_nucleiweak_config(cfg)
    cfg.NUCLEIWEAK.EVAL.DET_RADIUS = 8.0
    cfg.NUCLEIWEAK.EVAL.DET_MATCHING = "hungarian"
    cfg.OUTPUT_DIR = str(tmp_path)
    records = [{"file_name": "z.png", "image_id": 0, "height": 4, "width": 4, "annotations": []}]
    DatasetCatalog.register("nucleiweak_test_cfg_eval", lambda: records)
    try:
        ev = build_nuclei_evaluator(cfg, "nucleiweak_test_cfg_eval")
    finally:
        DatasetCatalog.remove("nucleiweak_test_cfg_eval")
    assert ev._metric_args == {"radius": 8.0, "method": "hungarian", "hausdorff": False}
    assert ev._output_dir == os.path.join(str(tmp_path), "inference")
    ev.process(_inputs(records), [{"instance_map": torch.zeros(4, 4, dtype=torch.int32)}])
    r = ev.evaluate()["nuclei"]  # empty ground truth and empty prediction: perfect
    assert r["AJI"] == 1.0 and r["det_F1"] == 1.0
