"""Identical arguments and seeds give byte-identical outputs for every data-writing CLI.

Each tool runs twice into two folders; every file (names and bytes) must match.
"""

from pathlib import Path

import pytest
from conftest import load_script  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _tool(name):
    return load_script(f"determinism_{name}", REPO / "tools" / f"{name}.py")


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()
    }


def _assert_same_files(a, b):
    files_a, files_b = _files(a), _files(b)
    assert files_a, f"nothing written in {a}"
    assert sorted(files_a) == sorted(files_b)
    differ = [name for name in files_a if files_a[name] != files_b[name]]
    assert not differ, f"files differ between two runs with the same seed: {differ}"


def test_make_synthetic_is_deterministic(tmp_path):
    tool = _tool("make_synthetic")
    args = ["--n-images", "3", "--size", "64", "64", "--seed", "7"]
    assert tool.main([str(tmp_path / "a")] + args) == 0
    assert tool.main([str(tmp_path / "b")] + args) == 0
    _assert_same_files(tmp_path / "a", tmp_path / "b")
    assert tool.main([str(tmp_path / "c")] + args[:-1] + ["8"]) == 0
    assert (
        _files(tmp_path / "c")["images/synth_000.png"]
        != _files(tmp_path / "a")["images/synth_000.png"]
    )


def test_make_pseudo_labels_is_deterministic(tmp_path):
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "data", n_images=3, size=(64, 64), seed=3)
    coco = export_coco_splits(root, tmp_path / "coco", ratio=0.5, seed=3, splits=["train"])
    tool = _tool("make_pseudo_labels")
    for out in ("a", "b"):
        assert (
            tool.main(
                [
                    str(coco["train"]),
                    "--image-root",
                    str(root),
                    "--out",
                    str(tmp_path / out),
                    "--kinds",
                    "voronoi",
                    "cluster",
                ]
            )
            == 0
        )
    _assert_same_files(tmp_path / "a", tmp_path / "b")


def test_predict_with_random_weights_is_deterministic(tmp_path):
    pytest.importorskip("detectron2")
    from nucleiweak_d2.data.io import write_image
    from nucleiweak_d2.data.synthetic import synthesize_image

    for seed in (1, 2):
        write_image(tmp_path / "images" / f"t{seed}.png", synthesize_image((64, 64), seed)[0])
    tool = _tool("predict")
    outputs = []
    for out in ("a", "b"):
        run = tool.main(
            [
                "--config-file",
                str(REPO / "configs/quick/qu2020_instant_test.yaml"),
                "--input",
                str(tmp_path / "images"),
                "--output",
                str(tmp_path / out),
                "--allow-random-weights",
                "--opts",
                "MODEL.DEVICE",
                "cpu",
            ]
        )
        assert len(run) == 2 and run.exit_code == 0
        outputs.append(tmp_path / out)
    _assert_same_files(*outputs)
    from nucleiweak_d2.data.io import read_image

    # the compared files are real predictions: decodable pictures of the input's size
    assert read_image(outputs[0] / "t1_overlay.png").shape == (64, 64, 3)
    assert set(_files(outputs[0])) >= {
        "t1_overlay.png",
        "t1_instances.png",
        "t2_overlay.png",
        "t2_instances.png",
    }
