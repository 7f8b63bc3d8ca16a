"""Issue 11, tools/evaluate.py: image root of COCO files, default patterns, refused
overwrites, unknown splits and the one-line error reporting (items 3, 7, 8, 9)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script  # noqa: E402

from nucleiweak_d2.data.coco import export_coco_splits
from nucleiweak_d2.data.io import write_image, write_label

TOOL = Path(__file__).resolve().parents[1] / "tools" / "evaluate.py"
SIZE = 16


def _tool():
    return load_script("nucleiweak_evaluate_tool_bad", TOOL)


def _label():
    label = np.zeros((SIZE, SIZE), np.int32)
    label[2:6, 2:6] = 4
    label[9:13, 6:10] = 9
    return label


@pytest.fixture
def dataset(tmp_path):
    """Folder dataset (a, b; split test/val) and predictions as tools/predict.py names them."""
    root, pred = tmp_path / "data", tmp_path / "pred"
    for name in ("a", "b"):
        write_image(root / "images" / f"{name}.png", np.zeros((SIZE, SIZE, 3), np.uint8))
        write_label(root / "labels" / f"{name}.png", _label())
        write_label(pred / f"{name}_instances.png", _label())
    (root / "split.json").write_text(json.dumps({"test": ["a", "b"], "val": ["a"]}))
    return root, pred


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


PATTERN = ["--pattern", "{name}_instances.png"]


def test_predict_output_names_are_found_by_default(dataset, tmp_path):
    root, pred = dataset
    summary = _tool().main(
        ["--gt", str(root), "--pred", str(pred), "--output", str(tmp_path / "out")]
    )
    assert summary["num_images"] == 2 and summary["AJI"] == 1.0


def test_coco_from_prepare_dataset_finds_its_root(dataset, tmp_path):
    root, pred = dataset
    written = export_coco_splits(root, root / "coco_r1", splits=["test"])
    summary = _tool().main(
        [
            "--gt",
            str(written["test"]),
            "--pred",
            str(pred),
            "--output",
            str(tmp_path / "out"),
            *PATTERN,
        ]
    )
    assert summary["num_images"] == 2 and summary["AJI"] == 1.0


def test_coco_root_from_parent_with_images_folder(dataset, tmp_path):
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
    (root / "sub").mkdir()
    (root / "sub" / "test.json").write_text(json.dumps(coco))
    summary = _tool().main(
        [
            "--gt",
            str(root / "sub" / "test.json"),
            "--pred",
            str(pred),
            "--output",
            str(tmp_path / "out"),
            *PATTERN,
        ]
    )
    assert summary["num_images"] == 1


def test_coco_without_image_root_names_the_option(dataset, tmp_path):
    _, pred = dataset
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
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "test.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"test\.json.*--image-root"):
        _tool().main(["--gt", str(lone / "test.json"), "--pred", str(pred), *PATTERN])
    with pytest.raises(ValueError, match=r"b\.png.*--image-root"):
        _tool().main(
            [
                "--gt",
                str(lone / "test.json"),
                "--pred",
                str(pred),
                "--image-root",
                str(lone),
                *PATTERN,
            ]
        )
    assert not any(p.name.startswith("nuclei_") for p in pred.iterdir())


def test_existing_results_are_not_overwritten(dataset, capsys):
    root, pred = dataset
    args = ["--gt", str(root), "--split", "test", "--pred", str(pred), *PATTERN]
    _tool().main(args)
    before = _snapshot(pred)
    with pytest.raises(FileExistsError, match=r"nuclei_per_image_data_test\.csv.*--overwrite"):
        _tool().main(args)
    assert _snapshot(pred) == before
    (pred / "nuclei_per_image_data_test.csv").write_text("stale\n")
    _tool().main(args + ["--overwrite"])
    assert (pred / "nuclei_per_image_data_test.csv").read_text() != "stale\n"


def _run(*args):
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True
    )


def test_command_line_bad_split_one_line_exit_2(dataset):
    root, pred = dataset
    proc = _run("--gt", root, "--split", "trian", "--pred", pred)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "'trian'" in proc.stderr and "test, val" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _run("--gt", root, "--split", "trian", "--pred", pred, "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert not any(p.name.startswith("nuclei_") for p in pred.iterdir())
