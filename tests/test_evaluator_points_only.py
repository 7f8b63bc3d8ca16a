"""NucleiEvaluator on points-only ground truth: detection metrics only, mixed datasets."""

import csv
import json
import logging

import numpy as np
import pytest

pytest.importorskip("detectron2")
import torch  # noqa: E402

from nucleiweak_d2.data.coco import load_nuclei_coco  # noqa: E402
from nucleiweak_d2.data.io import write_label  # noqa: E402
from nucleiweak_d2.evaluation.evaluator import NucleiEvaluator, per_image_csv_path  # noqa: E402
from nucleiweak_d2.evaluation.ground_truth import annotation_points, is_points_only  # noqa: E402

SIZE = 16
SEGMENTATION_KEYS = (
    "AJI",
    "AJI_plus",
    "Dice_obj",
    "PQ",
    "DQ",
    "SQ",
    "pixel_F1",
    "pixel_acc",
    "pixel_IoU",
    "mAP_kaggle",
    "NCS",
    "AJI_std",
    "PQ_std",
)


def _two_nuclei():
    label = np.zeros((SIZE, SIZE), np.int32)
    label[2:6, 2:6] = 4  # bbox centre (x, y) = (3, 3)
    label[2:6, 6:10] = 9  # bbox centre (7, 3)
    return label


def _merged():
    return (_two_nuclei() > 0).astype(np.int64) * 3  # one nucleus, bbox centre (5, 3)


def _points_only_file(tmp_path):
    """Points-only COCO file (docs/CONTRACTS.md): images p (3 points, 2 unlabelled), q (1)."""
    content = {
        "info": {"nucleiweak": {"annotation": "points_only", "ratio": 1.0, "seed": 0}},
        "images": [
            {"id": 1, "file_name": "p.png", "height": SIZE, "width": SIZE},
            {"id": 2, "file_name": "q.png", "height": SIZE, "width": SIZE},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "point": [3, 3], "point_labeled": 1},
            {"id": 2, "image_id": 1, "category_id": 1, "point": [7, 3], "point_labeled": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "point": [12, 12], "point_labeled": 0},
            {"id": 4, "image_id": 2, "category_id": 1, "point": [3, 3], "point_labeled": 1},
        ],
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    path = tmp_path / "points_only.json"
    path.write_text(json.dumps(content))
    return load_nuclei_coco(path, tmp_path)


def _inputs(records):
    return [{k: r[k] for k in ("file_name", "image_id", "height", "width")} for r in records]


def _map(label):
    return {"instance_map": torch.from_numpy(np.asarray(label, dtype=np.int64))}


def test_points_only_file_gives_detection_metrics_only(tmp_path, caplog):
    records = _points_only_file(tmp_path)
    assert all(is_points_only(r) for r in records)
    out_dir = tmp_path / "inference"
    ev = NucleiEvaluator("points_only_test", str(out_dir), distributed=False, dataset_dicts=records)
    ev.reset()
    # p: both nuclei found at 0 px, the unlabelled point (12, 12) is missed (labelled or not,
    # every point is ground truth). q: the merged nucleus' centre (5, 3) is 2 px from (3, 3).
    ev.process(_inputs(records), [_map(_two_nuclei()), _map(_merged())])
    with caplog.at_level(logging.WARNING, logger="nucleiweak_d2.evaluation.evaluator"):
        r = ev.evaluate()["nuclei"]
        ev.evaluate()  # the warning is logged once per evaluator
    assert (r["det_TP"], r["det_FP"], r["det_FN"]) == (3, 0, 1)
    assert (r["det_P"], r["det_R"]) == (1.0, 0.75)
    assert r["det_F1"] == pytest.approx(6 / 7)
    assert r["det_R_img"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert r["det_dist_mean"] == pytest.approx(2 / 3)
    assert r["num_images"] == 2.0
    assert not [k for k in SEGMENTATION_KEYS if k in r]  # left out, not reported as zeros
    assert "num_images_seg" not in r
    warnings = [m for m in caplog.messages if "points-only" in m]
    assert len(warnings) == 1 and "segmentation metrics need masks" in warnings[0]
    with open(per_image_csv_path(str(out_dir), "points_only_test")) as f:
        rows = list(csv.DictReader(f))
    assert [row["name"] for row in rows] == ["p", "q"]
    assert "aji" not in rows[0] and int(rows[0]["det_fn"]) == 1
    saved = json.loads((out_dir / "nuclei_results_points_only_test.json").read_text())
    assert "AJI" not in saved["metrics"] and saved["metrics"]["det_TP"] == 3


def test_pred_points_without_instance_map_and_offset(tmp_path):
    records = _points_only_file(tmp_path)
    ev = NucleiEvaluator(
        "points_only_test",
        distributed=False,
        radius=2.0,
        pred_points_offset=0.5,
        dataset_dicts=records,
    )
    # A pure point detector in continuous coordinates: (3.5, 3.5) is pixel (3, 3) exactly;
    # (9.5, 3.5) is pixel (9, 3), 2 px from (7, 3): not a hit at radius 2 (strict).
    ev.process(_inputs(records[:1]), [{"pred_points": torch.tensor([[3.5, 3.5], [9.5, 3.5]])}])
    r = ev.evaluate()["nuclei"]
    assert (r["det_TP"], r["det_FP"], r["det_FN"]) == (1, 1, 2)
    assert r["det_dist_mean"] == 0.0


def test_mixed_dataset_segmentation_over_masked_images_only(tmp_path, caplog):
    write_label(tmp_path / "m_label.png", _two_nuclei())
    masked = {
        "file_name": str(tmp_path / "m.png"),
        "image_id": 10,
        "height": SIZE,
        "width": SIZE,
        "label_file_name": str(tmp_path / "m_label.png"),
        "annotations": [],
    }
    points = {
        "file_name": str(tmp_path / "n.png"),
        "image_id": 11,
        "height": SIZE,
        "width": SIZE,
        "annotations": [{"point": [3, 3], "category_id": 0}, {"point": [7, 3], "category_id": 0}],
    }
    assert not is_points_only(masked) and is_points_only(points)
    ev = NucleiEvaluator(
        "mixed_test", str(tmp_path / "out"), distributed=False, dataset_dicts=[masked, points]
    )
    merged = _map(_merged())
    with caplog.at_level(logging.WARNING, logger="nucleiweak_d2.evaluation.evaluator"):
        ev.process(_inputs([masked, points]), [merged, merged])
        r = ev.evaluate()["nuclei"]
    # Segmentation: image m alone (merged prediction of two nuclei: AJI 0.5, std 0).
    assert r["AJI"] == pytest.approx(0.5) and r["AJI_std"] == 0.0
    assert r["pixel_F1"] == 1.0
    assert r["num_images_seg"] == 1.0 and r["num_images"] == 2.0
    # Detection over both: each image 1 TP at 2 px and 1 FN.
    assert (r["det_TP"], r["det_FP"], r["det_FN"]) == (2, 0, 2)
    assert r["det_dist_mean"] == pytest.approx(2.0)
    assert any(
        "1 of 2 images" in m and "cover the 1 images with masks" in m for m in caplog.messages
    )
    with open(per_image_csv_path(str(tmp_path / "out"), "mixed_test")) as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert float(rows["m"]["aji"]) == pytest.approx(0.5) and rows["n"]["aji"] == ""
    assert int(rows["n"]["det_tp"]) == 1


def test_image_without_points_in_points_only_file(tmp_path):
    # No annotation at all, but the file says points_only: not an empty instance map.
    record = {
        "file_name": "e.png",
        "image_id": 3,
        "height": SIZE,
        "width": SIZE,
        "annotations": [],
        "nucleiweak": {"annotation": "points_only"},
    }
    assert is_points_only(record)
    assert not is_points_only({**record, "nucleiweak": {"annotation": "points"}})
    ev = NucleiEvaluator("empty_test", distributed=False, dataset_dicts=[record])
    ev.process(_inputs([record]), [_map(_two_nuclei())])
    r = ev.evaluate()["nuclei"]
    assert (r["det_TP"], r["det_FP"], r["det_FN"]) == (0, 2, 0)
    assert r["det_P"] == 0.0 and "AJI" not in r


def test_label_file_wins_and_points_checks(tmp_path):
    record = {
        "file_name": "/d/x.png",
        "height": 8,
        "width": 8,
        "label_file_name": "x.png",
        "annotations": [{"point": [1, 2]}],
    }
    assert not is_points_only(record)
    assert annotation_points(record).tolist() == [[1.0, 2.0]]
    assert annotation_points({"file_name": "y.png", "annotations": []}).shape == (0, 2)
    with pytest.raises(ValueError, match="x.png: annotation 1 has no valid 'point'"):
        annotation_points({"file_name": "/d/x.png", "annotations": [{"point": [1, 2]}, {}]})
    with pytest.raises(ValueError, match="x.png: annotation 0 has point .* outside the 8x8"):
        annotation_points(
            {"file_name": "/d/x.png", "height": 8, "width": 8, "annotations": [{"point": [8, 2]}]}
        )


def test_errors_name_the_file(tmp_path):
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray((_two_nuclei() == 4).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    half = {
        "file_name": "h.png",
        "image_id": 1,
        "height": SIZE,
        "width": SIZE,
        "annotations": [{"segmentation": rle, "point": [3, 3]}, {"point": [7, 3]}],
    }
    assert not is_points_only(half)  # partly masked: an error, not a silent detection-only
    bad_point = {
        "file_name": "b.png",
        "image_id": 2,
        "height": SIZE,
        "width": SIZE,
        "annotations": [{"point": [3, 40]}],
    }
    ev = NucleiEvaluator("errors_test", distributed=False, dataset_dicts=[half, bad_point])
    with pytest.raises(ValueError, match="h.png: annotation 1 has no segmentation"):
        ev.process(_inputs([half]), [_map(_two_nuclei())])
    with pytest.raises(ValueError, match="b.png: annotation 0 has point"):
        ev.process(_inputs([bad_point]), [_map(_two_nuclei())])
    bad_point["annotations"] = [{"point": [3, 3]}]
    with pytest.raises(ValueError, match="b.png: prediction is 12x16 but the image is 16x16"):
        ev.process(_inputs([bad_point]), [_map(np.zeros((12, SIZE), np.int64))])
    assert ev.evaluate() == {}
