"""Tests of nucleiweak_d2.data.folder: folder dataset listing and validation."""

import json

import numpy as np
import pytest
from PIL import Image

from nucleiweak_d2.data.folder import list_splits, load_folder_dataset
from nucleiweak_d2.data.io import write_image, write_label


def _make(root, names=("a", "b", "c"), size=(6, 8)):
    for name in names:
        write_image(root / "images" / f"{name}.png", np.zeros(size + (3,), dtype=np.uint8))
        label = np.zeros(size, dtype=np.int32)
        label[1:3, 1:3] = 1
        write_label(root / "labels" / f"{name}.png", label)
    return root


def test_lists_sorted_with_sizes(tmp_path):
    samples = load_folder_dataset(_make(tmp_path, names=("b", "a")))
    assert [s["name"] for s in samples] == ["a", "b"]
    assert samples[0]["image_path"] == tmp_path / "images" / "a.png"
    assert samples[0]["label_path"] == tmp_path / "labels" / "a.png"
    assert (samples[0]["height"], samples[0]["width"]) == (6, 8)
    assert samples[0]["points_path"] is None
    assert list_splits(tmp_path) == ["all"]


def test_split_order_and_errors(tmp_path):
    _make(tmp_path)
    (tmp_path / "split.json").write_text(
        json.dumps({"train": ["c", "a"], "test": ["b"], "organ": {"a": "x"}, "empty": []})
    )
    assert [s["name"] for s in load_folder_dataset(tmp_path, "train")] == ["c", "a"]
    assert list_splits(tmp_path) == ["train", "test", "empty"]
    with pytest.raises(ValueError, match="unknown split 'val'.*split.json"):
        load_folder_dataset(tmp_path, "val")
    with pytest.raises(ValueError, match="empty dataset.*'empty'"):
        load_folder_dataset(tmp_path, "empty")
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a", "zz"]}))
    with pytest.raises(ValueError, match="zz"):
        load_folder_dataset(tmp_path, "train")


def test_split_requested_without_file(tmp_path):
    with pytest.raises(ValueError, match="split.json"):
        load_folder_dataset(_make(tmp_path), "train")


def test_label_suffix_variant(tmp_path):
    _make(tmp_path, names=("a",))
    (tmp_path / "labels" / "a.png").rename(tmp_path / "labels" / "a_label.png")
    assert load_folder_dataset(tmp_path)[0]["label_path"].name == "a_label.png"


def test_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(ValueError, match="empty dataset.*images"):
        load_folder_dataset(tmp_path)


def test_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="no images/"):
        load_folder_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="neither labels/ nor points/"):
        load_folder_dataset(tmp_path)


def test_missing_label(tmp_path):
    _make(tmp_path)
    (tmp_path / "labels" / "b.png").unlink()
    with pytest.raises(ValueError, match="missing label for image .*b.png"):
        load_folder_dataset(tmp_path)


def test_unreadable_image(tmp_path):
    _make(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="cannot read .*b.png"):
        load_folder_dataset(tmp_path)


def test_size_mismatch(tmp_path):
    _make(tmp_path)
    write_label(tmp_path / "labels" / "c.png", np.zeros((6, 9), dtype=np.int32))
    with pytest.raises(ValueError, match="size mismatch.*c.png.*6x8.*6x9"):
        load_folder_dataset(tmp_path)


def test_float_label(tmp_path):
    _make(tmp_path)
    (tmp_path / "labels" / "a.png").unlink()
    Image.fromarray(np.zeros((6, 8), dtype=np.float32)).save(tmp_path / "labels" / "a.tif")
    with pytest.raises(ValueError, match="a.tif.*float"):
        load_folder_dataset(tmp_path)


def test_duplicate_stems(tmp_path):
    _make(tmp_path)
    write_image(tmp_path / "images" / "a.jpg", np.zeros((6, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="share the name 'a'"):
        load_folder_dataset(tmp_path)


def test_points_only_folder(tmp_path):
    write_image(tmp_path / "images" / "a.png", np.zeros((6, 8, 3), dtype=np.uint8))
    (tmp_path / "points").mkdir()
    with pytest.raises(ValueError, match="missing points file.*a.png"):
        load_folder_dataset(tmp_path)
    (tmp_path / "points" / "a.csv").write_text("x,y\n1,2\n")
    sample = load_folder_dataset(tmp_path)[0]
    assert sample["label_path"] is None and sample["points_path"].name == "a.csv"
