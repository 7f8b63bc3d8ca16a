"""tools/evaluate.py: score folders of predicted label maps (folder and COCO datasets)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import load_script  # noqa: E402

from nucleiweak_d2.data.io import write_image, write_label

TOOL = Path(__file__).resolve().parents[1] / "tools" / "evaluate.py"
SIZE = 16


def _tool():
    return load_script("nucleiweak_evaluate_tool", TOOL)


def _label():
    label = np.zeros((SIZE, SIZE), np.int32)
    label[2:6, 2:6] = 4
    label[2:6, 6:10] = 9
    return label


@pytest.fixture
def dataset(tmp_path):
    """Folder dataset with images a, b; predictions: a perfect (PNG), b merged (Cellpose TIF)."""
    root, pred = tmp_path / "data", tmp_path / "pred"
    for name in ("a", "b"):
        write_image(root / "images" / f"{name}.png", np.zeros((SIZE, SIZE, 3), np.uint8))
        write_label(root / "labels" / f"{name}.png", _label())
    (root / "split.json").write_text(json.dumps({"test": ["a", "b"], "val": ["a"]}))
    write_label(pred / "a.png", _label() * 3)  # other ids, same nuclei
    pred.mkdir(exist_ok=True)
    tifffile.imwrite(pred / "b_cp_masks.tif", ((_label() > 0) * 7).astype(np.uint16))
    return root, pred


def test_folder_dataset_table_csv_json(dataset, tmp_path, capsys):
    root, pred = dataset
    out = tmp_path / "out"
    summary = _tool().main(
        [
            "--gt",
            str(root),
            "--split",
            "test",
            "--pred",
            str(pred),
            "--output",
            str(out),
            "--hausdorff",
        ]
    )
    assert summary["AJI"] == pytest.approx((1 + 0.5) / 2)
    assert summary["AJI_plus"] == pytest.approx((1 + 1 / 3) / 2)
    # b: the merged object spans columns 2-9, each 4-px-wide nucleus is 4 px from its far end.
    assert summary["Hausdorff_obj"] == pytest.approx((0 + 4) / 2)
    assert (summary["det_TP"], summary["det_FP"], summary["det_FN"]) == (3, 0, 1)
    printed = capsys.readouterr().out
    assert "AJI_plus" in printed and "0.6667" in printed
    with open(out / "nuclei_per_image_data_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a", "b"]
    assert float(rows[0]["aji"]) == 1.0 and float(rows[1]["aji"]) == pytest.approx(0.5)
    saved = json.loads((out / "nuclei_results_data_test.json").read_text())
    assert saved["metrics"]["AJI"] == pytest.approx(0.75)
    assert saved["settings"]["split"] == "test"


def test_coco_json_dataset_and_points_folder(dataset, tmp_path):
    root, pred = dataset
    coco = {
        "images": [
            {
                "id": 1,
                "file_name": "images/b.png",
                "height": SIZE,
                "width": SIZE,
                "label_file_name": "labels/b.png",
            }
        ],
        "annotations": [],
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    (root / "test.json").write_text(json.dumps(coco))
    points = tmp_path / "points"
    points.mkdir()
    (points / "b.csv").write_text("x,y\n3.0,3.0\n7.4,3.0\n")
    summary = _tool().main(
        [
            "--gt",
            str(root / "test.json"),
            "--pred",
            str(pred),
            "--points",
            str(points),
            "--radius",
            "3",
        ]
    )
    assert summary["AJI"] == pytest.approx(0.5)
    assert (summary["det_TP"], summary["det_FP"], summary["det_FN"]) == (2, 0, 0)
    assert (pred / "nuclei_per_image_test.csv").is_file()


def test_bad_predictions_name_the_file(dataset, tmp_path):
    root, pred = dataset
    tool = _tool()
    (pred / "b_cp_masks.tif").unlink()
    with pytest.raises(ValueError, match="missing prediction for image 'b'"):
        tool.main(["--gt", str(root), "--pred", str(pred)])
    write_label(pred / "b.png", np.zeros((SIZE, SIZE + 1), np.int32))
    with pytest.raises(ValueError, match=r"b\.png is 16x17"):
        tool.main(["--gt", str(root), "--pred", str(pred)])
    (pred / "b.png").unlink()
    tifffile.imwrite(pred / "b.tif", np.full((SIZE, SIZE), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"b\.tif.*float32"):
        tool.main(["--gt", str(root), "--pred", str(pred)])
    tifffile.imwrite(pred / "b_labels.tif", np.zeros((SIZE, SIZE), np.uint16))
    with pytest.raises(ValueError, match="b.tif"):  # first matching pattern wins
        tool.main(["--gt", str(root), "--pred", str(pred)])
    with pytest.raises(ValueError, match="neither a dataset folder"):
        tool.main(["--gt", str(tmp_path / "nothing"), "--pred", str(pred)])


def test_command_line_reports_errors(dataset, tmp_path):
    root, pred = dataset
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--gt", str(root), "--pred", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "prediction folder" in proc.stderr and "does not exist" in proc.stderr


def test_real_ground_truth_against_itself(shared_monuseg, tmp_path):
    summary = _tool().main(
        [
            "--gt",
            str(shared_monuseg),
            "--split",
            "val",
            "--pred",
            str(shared_monuseg / "labels"),
            "--output",
            str(tmp_path),
        ]
    )
    assert summary["num_images"] == 4
    for key in ("AJI", "AJI_plus", "Dice_obj", "PQ", "pixel_F1", "mAP_kaggle", "NCS", "det_F1"):
        assert summary[key] == 1.0, key
    assert summary["det_dist_mean"] == 0.0
