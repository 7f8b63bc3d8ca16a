"""Issue 11, data layer: every bad input gets a clear, one-line answer and changes no file.

One test (or a few) per item: clicked-point CSV read by header (1), points outside the image
(2), unknown split names (3), training splits without points / overlapping train and test /
split label ids (4), 12-bit images (5), truncated images (6), and the error reporting of
``tools/prepare_dataset.py`` (9).
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nucleiweak_d2.data.coco import export_coco_splits, load_nuclei_coco, read_points_csv
from nucleiweak_d2.data.folder import list_splits, load_folder_dataset
from nucleiweak_d2.data.io import read_image, read_xy_csv, write_image, write_label
from nucleiweak_d2.data.points import points_from_labels

tifffile = pytest.importorskip("tifffile")
from conftest import load_script  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HINT = "an offset between slide and tile coordinates is the usual cause"


def _prepare_tool():
    return load_script("prepare_dataset_tool", REPO / "tools" / "prepare_dataset.py")


def _snapshot(folder):
    """{relative path: bytes} of every file under ``folder`` (empty when it does not exist)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _label(size=(20, 30)):
    label = np.zeros(size, dtype=np.int32)
    label[2:6, 3:8] = 1
    label[10:15, 12:18] = 2
    return label


def _folder(root, names=("a", "b", "c"), split=None, labels=None, size=(20, 30)):
    """Folder dataset with one image + label per name and an optional split.json."""
    for name in names:
        write_image(root / "images" / f"{name}.png", np.full(size + (3,), 90, np.uint8))
        label = _label(size) if labels is None else labels[name]
        write_label(root / "labels" / f"{name}.png", label)
    if split is not None:
        (root / "split.json").write_text(json.dumps(split))
    return root


def _points_folder(root, csv_text, size=(20, 30)):
    """Points-only folder dataset: images/a.png + points/a.csv."""
    write_image(root / "images" / "a.png", np.zeros(size + (3,), np.uint8))
    (root / "points").mkdir(parents=True, exist_ok=True)
    (root / "points" / "a.csv").write_text(csv_text, encoding="utf-8")
    return root


# ---------------------------------------------------------------- 1. CSV columns by header


def test_csv_imagej_index_column_is_not_a_coordinate(tmp_path):
    path = tmp_path / "imagej.csv"
    path.write_text(" ,X,Y\n1,10.5,20\n2,30,4\n")
    points, lines = read_xy_csv(path)
    np.testing.assert_array_equal(points, [[10.5, 20], [30, 4]])
    np.testing.assert_array_equal(lines, [2, 3])


def test_csv_y_x_header_is_not_swapped(tmp_path):
    path = tmp_path / "yx.csv"
    path.write_text("y,x\n5,7\n1,2\n")
    np.testing.assert_array_equal(read_xy_csv(path)[0], [[7, 5], [2, 1]])


def test_csv_qupath_tab_separated_pixel_centroids(tmp_path):
    path = tmp_path / "qupath.tsv"
    path.write_text(
        "Image\tName\tClass\tCentroid X px\tCentroid Y px\n"
        "slide.svs\tNucleus\tTumor\t12.4\t8.6\n"
        "slide.svs\tNucleus\tStroma\t1\t2\n",
        encoding="utf-8",
    )
    np.testing.assert_array_equal(read_xy_csv(path)[0], [[12.4, 8.6], [1, 2]])


def test_csv_micrometre_columns_are_refused(tmp_path):
    path = tmp_path / "um.tsv"
    path.write_text("Image\tCentroid X µm\tCentroid Y µm\nslide\t3.2\t4.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"um\.tsv.*µm.*pixel columns are needed"):
        read_xy_csv(path)


def test_csv_ambiguous_files_are_refused(tmp_path):
    three = tmp_path / "three.csv"
    three.write_text("1,10,20\n2,30,40\n")
    with pytest.raises(ValueError, match=r"three\.csv.*3 columns and no header.*x.*y"):
        read_xy_csv(three)
    two_x = tmp_path / "two_x.csv"
    two_x.write_text("x,Centroid X px,y\n1,1,2\n")
    with pytest.raises(ValueError, match=r"two_x\.csv.*several x columns"):
        read_xy_csv(two_x)
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("row,col\n1,2\n")
    with pytest.raises(ValueError, match=r"unnamed\.csv.*no x column"):
        read_xy_csv(unnamed)


def test_csv_headerless_two_columns_still_x_y(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("3,4\n5,6\n")
    np.testing.assert_array_equal(read_xy_csv(path)[0], [[3, 4], [5, 6]])


def test_clicked_float_points_are_rounded_to_the_nearest_pixel(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("X,Y\n1.4,2.6\n3.5,0.49\n")
    np.testing.assert_array_equal(read_points_csv(path, shape=(20, 30)), [[1, 3], [4, 0]])
    root = _points_folder(tmp_path / "d", "Centroid X px,Centroid Y px\n3.7,4.2\n29.4,19.2\n")
    path = export_coco_splits(root, tmp_path / "coco", annotation="points_only")["all"]
    assert [a["point"] for a in json.loads(path.read_text())["annotations"]] == [[4, 4], [29, 19]]


# ---------------------------------------------------------------- 2. points outside the image


def test_coco_point_outside_image_refused_at_load(tmp_path):
    content = {
        "images": [{"id": 1, "file_name": "images/a.png", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "point": [3, 4], "point_labeled": 1},
            {"id": 2, "image_id": 1, "category_id": 1, "point": [30, 5], "point_labeled": 1},
            {"id": 3, "image_id": 1, "category_id": 1, "point": [2, -1], "point_labeled": 1},
        ],
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=rf"a\.png.*2 points outside.*\(30, 5\).*{HINT}"):
        load_nuclei_coco(path, tmp_path)


def test_clicked_points_outside_image_refused_with_hint(tmp_path):
    root = _points_folder(tmp_path / "d", "x,y\n3,4\n30,19\n")
    out = tmp_path / "coco"
    with pytest.raises(ValueError, match=rf"a\.csv.*a\.png \(20x30\).*\(30, 19\).*{HINT}"):
        export_coco_splits(root, out, annotation="points_only")
    with pytest.raises(ValueError, match=rf"a\.csv line 3.*\(30, 19\).*{HINT}"):
        read_points_csv(root / "points" / "a.csv", shape=(20, 30), image="a.png")
    assert _snapshot(out) == {}


# ---------------------------------------------------------------- 3. unknown split names


def test_weak_splits_typo_refused(tmp_path):
    root = _folder(tmp_path / "d", split={"train": ["a"], "val": ["b"], "test": ["c"]})
    out = tmp_path / "coco"
    with pytest.raises(ValueError, match=r"unknown split 'trian'.*train, val, test"):
        export_coco_splits(root, out, ratio=0.1, weak_splits=["trian"])
    with pytest.raises(ValueError, match=r"unknown split 'tset'.*train, val, test"):
        export_coco_splits(root, out, splits=["tset"])
    assert _snapshot(out) == {}


def test_prepare_dataset_cli_weak_splits_typo(tmp_path, capsys):
    root = _folder(tmp_path / "d", split={"train": ["a"], "val": ["b"], "test": ["c"]})
    out = tmp_path / "coco"
    code = _prepare_tool().main(
        [str(root), "--out", str(out), "--ratio", "0.1", "--weak-splits", "trian"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "'trian'" in err
    assert "Traceback" not in err
    assert _snapshot(out) == {}


# ---------------------------------------------------------------- 4. training-split checks


def test_training_split_without_points_refused(tmp_path):
    empty = {n: np.zeros((20, 30), np.int32) for n in "abc"}
    empty["c"] = _label()
    root = _folder(tmp_path / "d", split={"train": ["a", "b"], "test": ["c"]}, labels=empty)
    out = tmp_path / "coco"
    with pytest.raises(ValueError, match=r"'train'.*no annotated points"):
        export_coco_splits(root, out, ratio=0.1, weak_splits=["train"])
    assert _snapshot(out) == {}


def test_points_only_file_without_labelled_points_refused_for_training(tmp_path):
    from nucleiweak_d2.data.checks import check_training_points

    content = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}],
        "annotations": [
            {"id": k, "image_id": 1, "category_id": 1, "point": [k, k], "point_labeled": 0}
            for k in (1, 2)
        ],
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    (tmp_path / "p.json").write_text(json.dumps(content))
    records = load_nuclei_coco(tmp_path / "p.json", tmp_path)
    with pytest.raises(ValueError, match=r"dataset 'clicks_train' has no annotated points"):
        check_training_points(records, "clicks_train")
    records[0]["annotations"][1]["point_labeled"] = True
    assert check_training_points(records, "clicks_train") == 1


def test_image_in_train_and_test_refused(tmp_path):
    root = _folder(tmp_path / "d", split={"train": ["a", "b"], "test": ["b", "c"]})
    out = tmp_path / "coco"
    with pytest.raises(ValueError, match=r"split\.json.*'b'.*'train'.*'test'"):
        load_folder_dataset(root, "train")
    with pytest.raises(ValueError, match=r"split\.json.*'b'.*'train'.*'test'"):
        export_coco_splits(root, out)
    assert _snapshot(out) == {}


def test_superset_splits_allowed(tmp_path):
    split = {
        "train": ["a"],
        "val": ["b"],
        "test": ["b", "c"],
        "testA": ["c"],
        "kumar_hovernet_train": ["a", "b"],
        "kumar_hovernet_test_x": ["a", "c"],
        "organ": {"a": "liver"},
    }
    root = _folder(tmp_path / "d", split=split)
    written = export_coco_splits(root, tmp_path / "coco", ratio=0.5, weak_splits=["train"])
    assert sorted(written) == sorted(k for k in split if k != "organ")


def test_check_disjoint_splits_on_coco_records(tmp_path):
    from nucleiweak_d2.data.checks import check_disjoint_splits

    def coco(names):
        return {
            "images": [
                {"id": i, "file_name": f"images/{n}.png", "height": 20, "width": 30}
                for i, n in enumerate(names)
            ],
            "annotations": [],
            "categories": [{"id": 1, "name": "nucleus"}],
        }

    (tmp_path / "train.json").write_text(json.dumps(coco(["a", "b"])))
    (tmp_path / "test.json").write_text(json.dumps(coco(["b", "c"])))
    dicts = {
        name: load_nuclei_coco(tmp_path / f"{name}.json", tmp_path) for name in ("train", "test")
    }
    with pytest.raises(ValueError, match=r"b\.png.*'train'.*'test'"):
        check_disjoint_splits(dicts)
    renamed = {"mo_train": dicts["train"], "mo_test": dicts["test"]}
    with pytest.raises(ValueError, match=r"b\.png.*'mo_train'.*'mo_test'"):
        check_disjoint_splits(renamed, train_names=["mo_train"])
    check_disjoint_splits(
        {"mo_train": dicts["train"], "mo_test": dicts["test"][1:]}, train_names=["mo_train"]
    )


def test_real_monuseg_splits_still_load(shared_monuseg):
    for split in list_splits(shared_monuseg):
        assert load_folder_dataset(shared_monuseg, split)


def test_disconnected_label_id_point_on_largest_piece(caplog):
    label = np.zeros((20, 40), np.int32)
    label[5:12, 2:9] = 7  # large piece: bbox centre (5, 8)
    label[0:2, 35:38] = 7  # small far piece: union bbox centre (19, 5) is background
    label[15:18, 15:18] = 3
    with caplog.at_level(logging.WARNING):
        ids, points = points_from_labels(label, where="lab.png")
    np.testing.assert_array_equal(ids, [3, 7])
    np.testing.assert_array_equal(points, [[16, 16], [5, 8]])
    assert "lab.png" in caplog.text and "1 label id" in caplog.text
    _, centroids = points_from_labels(label, mode="centroid")
    np.testing.assert_array_equal(centroids[1], [5, 8])


# ---------------------------------------------------------------- 5. bit depth


def test_12_bit_tiff_uses_its_real_range(tmp_path):
    image = np.zeros((4, 5), np.uint16)
    image[0, 0], image[1, 1] = 4095, 2048
    tifffile.imwrite(tmp_path / "12bit.tif", image)
    out = read_image(tmp_path / "12bit.tif")
    assert out.max() == 255 and out[1, 1, 0] == 128
    eight = np.full((3, 3), 200, np.uint16)
    tifffile.imwrite(tmp_path / "8in16.tif", eight)
    assert (read_image(tmp_path / "8in16.tif") == 200).all()


# ---------------------------------------------------------------- 6. truncated images


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_png_refused_when_prepared(tmp_path, capsys):
    root = _folder(tmp_path / "d", size=(64, 64))
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images" / "b.png")
    _truncate(root / "images" / "b.png")
    out = tmp_path / "coco"
    with pytest.raises(ValueError, match=r"images[/\\]b\.png"):
        export_coco_splits(root, out)
    with pytest.raises(ValueError, match=r"images[/\\]b\.png"):
        load_folder_dataset(root, decode=True)
    assert _prepare_tool().main([str(root), "--out", str(out)]) == 2
    assert "b.png" in capsys.readouterr().err
    assert _snapshot(out) == {}


# ---------------------------------------------------------------- 9. CLI error reporting


def test_prepare_dataset_debug_shows_the_exception(tmp_path):
    root = _folder(tmp_path / "d", split={"train": ["a"], "test": ["c"]})
    with pytest.raises(ValueError, match="trian"):
        _prepare_tool().main(
            [str(root), "--out", str(tmp_path / "o"), "--weak-splits", "trian", "--debug"]
        )


def test_name_listed_twice_in_a_split_refused(tmp_path):
    root = _folder(tmp_path / "d", split={"train": ["a", "b", "a"], "test": ["c"]})
    with pytest.raises(ValueError, match=r"split 'train' of .*split\.json lists 'a' twice"):
        load_folder_dataset(root, "test")
