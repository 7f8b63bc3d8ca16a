"""Tests of nucleiweak_d2.data.coco and .rle: COCO export, validity, points-only input."""

import json

import numpy as np
import pytest

from nucleiweak_d2.data.coco import (
    build_coco,
    export_coco_splits,
    load_nuclei_coco,
    read_points_csv,
)
from nucleiweak_d2.data.folder import load_folder_dataset
from nucleiweak_d2.data.io import read_label, write_image
from nucleiweak_d2.data.points import points_from_labels
from nucleiweak_d2.data.rle import decode_counts, encode_counts, label_to_rles, paint_rles
from nucleiweak_d2.data.synthetic import make_synthetic_dataset

mask_util = pytest.importorskip("pycocotools.mask")
COCO = pytest.importorskip("pycocotools.coco").COCO

RATIOS = (0.05, 0.1, 0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(root, n_images=4, size=(96, 112), seed=5)


def _load(path):
    return json.loads(path.read_text())


def test_rle_counts_roundtrip_matches_pycocotools():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(17, 23)).astype(np.int32)
    label[:, 5] = 3  # long runs crossing column ends
    rles = label_to_rles(label, [1, 2, 3, 9])
    for inst, rle in zip([1, 2, 3, 9], rles):
        ref = mask_util.encode(np.asfortranarray((label == inst).astype(np.uint8)))
        assert rle["counts"] == ref["counts"].decode()
        assert encode_counts(decode_counts(ref["counts"])) == rle["counts"]  # pure-python path
        np.testing.assert_array_equal(
            mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}), label == inst
        )
    counts = [0, 5, 1000, 3, 70000, 2, 1]
    assert decode_counts(encode_counts(counts)) == counts
    np.testing.assert_array_equal(paint_rles(rles[:3], [1, 2, 3], label.shape), label)


def test_coco_valid_and_masks_reproduce_labels(synth_root, tmp_path):
    written = export_coco_splits(synth_root, tmp_path, ratio=0.5, shift="2-4", seed=1)
    assert set(written) == {"train", "val", "test"}
    for split, path in written.items():
        coco = COCO(str(path))
        assert coco.loadCats(1)[0]["name"] == "nucleus"
        for image in coco.dataset["images"]:
            label = read_label(synth_root / image["label_file_name"])
            ids, points = points_from_labels(label)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            assert len(anns) == len(ids) > 0
            for inst, point, ann in zip(ids, points, anns):
                mask = label == inst
                np.testing.assert_array_equal(coco.annToMask(ann), mask)
                rows, cols = np.nonzero(mask)
                assert ann["bbox"] == [
                    cols.min(),
                    rows.min(),
                    cols.max() - cols.min() + 1,
                    rows.max() - rows.min() + 1,
                ]
                assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
                np.testing.assert_array_equal(np.subtract(ann["point"], ann["point_shift"]), point)
                assert 2 <= np.hypot(*ann["point_shift"]) <= 4
            assert sum(a["point_labeled"] for a in anns) == max(
                1, int(np.floor(0.5 * len(ids) + 0.5))
            )
        info = coco.dataset["info"]["nucleiweak"]
        assert info == {
            "ratio": 0.5,
            "shift": [2.0, 4.0],
            "seed": 1,
            "point_mode": "bbox_center",
            "annotation": "points",
            "split": split,
        }


def test_ratios_nested_deterministic_and_shift_independent(synth_root, tmp_path):
    labeled = {}
    for ratio in RATIOS:
        path = export_coco_splits(
            synth_root, tmp_path / str(ratio), ratio=ratio, shift="4-6", seed=0, splits=["train"]
        )["train"]
        anns = _load(path)["annotations"]
        labeled[ratio] = {a["id"] for a in anns if a["point_labeled"]}
        shifts = [tuple(a["point_shift"]) for a in anns]
        if ratio == RATIOS[0]:
            first_shifts = shifts
        assert shifts == first_shifts  # shifts do not depend on the ratio
    for small, big in zip(RATIOS, RATIOS[1:]):
        assert labeled[small] <= labeled[big]
    again = export_coco_splits(
        synth_root, tmp_path / "again", ratio=0.1, shift="4-6", seed=0, splits=["train"]
    )["train"]
    assert again.read_bytes() == (tmp_path / "0.1" / "train.json").read_bytes()
    other = export_coco_splits(
        synth_root, tmp_path / "seed1", ratio=0.1, shift="4-6", seed=1, splits=["train"]
    )["train"]
    assert other.read_bytes() != again.read_bytes()


def test_image_points_do_not_depend_on_split(synth_root, tmp_path):
    per_split = export_coco_splits(synth_root, tmp_path / "s", ratio=0.25, shift="2-4", seed=3)
    whole = build_coco(load_folder_dataset(synth_root), synth_root, ratio=0.25, shift="2-4", seed=3)
    by_file = {}
    for image in whole["images"]:
        by_file[image["file_name"]] = [
            (a["point"], a["point_labeled"])
            for a in whole["annotations"]
            if a["image_id"] == image["id"]
        ]
    for path in per_split.values():
        content = _load(path)
        for image in content["images"]:
            got = [
                (a["point"], a["point_labeled"])
                for a in content["annotations"]
                if a["image_id"] == image["id"]
            ]
            assert got == by_file[image["file_name"]]


def test_weak_splits_and_partial_mask(synth_root, tmp_path):
    written = export_coco_splits(
        synth_root,
        tmp_path,
        ratio=0.25,
        shift="6-8",
        seed=0,
        annotation="partial_mask",
        weak_splits=["train"],
    )
    train, test = _load(written["train"]), _load(written["test"])
    assert train["info"]["nucleiweak"]["annotation"] == "partial_mask"
    assert train["info"]["nucleiweak"]["ratio"] == 0.25
    assert test["info"]["nucleiweak"]["ratio"] == 1.0 and test["info"]["nucleiweak"]["shift"] == [
        0,
        0,
    ]
    assert all(a["point_labeled"] == 1 and a["point_shift"] == [0, 0] for a in test["annotations"])
    assert all("segmentation" in a for a in train["annotations"])


def test_centroid_mode(synth_root, tmp_path):
    path = export_coco_splits(synth_root, tmp_path, point_mode="centroid", splits=["val"])["val"]
    content = _load(path)
    image = content["images"][0]
    _, points = points_from_labels(read_label(synth_root / image["label_file_name"]), "centroid")
    got = [a["point"] for a in content["annotations"] if a["image_id"] == image["id"]]
    np.testing.assert_array_equal(got, points)


def test_overwrite_refused(synth_root, tmp_path):
    export_coco_splits(synth_root, tmp_path, splits=["val"])
    before = (tmp_path / "val.json").read_bytes()
    with pytest.raises(FileExistsError, match="val.json"):
        export_coco_splits(synth_root, tmp_path, ratio=0.1, splits=["val"])
    assert (tmp_path / "val.json").read_bytes() == before
    export_coco_splits(synth_root, tmp_path, ratio=0.1, splits=["val"], overwrite=True)
    assert (tmp_path / "val.json").read_bytes() != before


def test_points_only_roundtrip(tmp_path):
    write_image(tmp_path / "images" / "a.png", np.zeros((20, 30, 3), dtype=np.uint8))
    (tmp_path / "points").mkdir()
    (tmp_path / "points" / "a.csv").write_text("x,y\n3,4\n29,19\n0,0\n")
    path = export_coco_splits(
        tmp_path, tmp_path / "coco", annotation="points_only", ratio=0.5, seed=2
    )["all"]
    content = _load(path)
    assert [a["point"] for a in content["annotations"]] == [[3, 4], [29, 19], [0, 0]]
    assert sum(a["point_labeled"] for a in content["annotations"]) == 2  # round(1.5) = 2
    assert all("segmentation" not in a and "bbox" not in a for a in content["annotations"])
    COCO(str(path))  # pycocotools accepts a points-only file
    records = load_nuclei_coco(path, tmp_path)
    assert records[0]["file_name"] == str(tmp_path / "images" / "a.png")
    assert "label_file_name" not in records[0]
    assert records[0]["nucleiweak"]["annotation"] == "points_only"
    ann = records[0]["annotations"][0]
    assert ann["point"] == [3, 4] and ann["category_id"] == 0 and "bbox" not in ann
    assert isinstance(ann["point_labeled"], bool)


def test_points_csv_errors(tmp_path):
    (tmp_path / "e.csv").write_text("x,y\n")
    with pytest.raises(ValueError, match="no points.*e.csv"):
        read_points_csv(tmp_path / "e.csv")
    (tmp_path / "f.csv").write_text(
        "-1,2\n"
    )  # float coordinates are rounded, a negative one is outside
    with pytest.raises(ValueError, match="f.csv line 1"):
        read_points_csv(tmp_path / "f.csv")
    (tmp_path / "n.csv").write_text("x,y\n3,4\nnan,2\n")
    with pytest.raises(ValueError, match="n.csv line 3"):
        read_points_csv(tmp_path / "n.csv")
    (tmp_path / "g.csv").write_text("3,4\nabc\n")
    with pytest.raises(ValueError, match="g.csv line 2"):
        read_points_csv(tmp_path / "g.csv")
    (tmp_path / "o.csv").write_text("1,20\n")
    with pytest.raises(ValueError, match="o.csv.*outside"):
        read_points_csv(tmp_path / "o.csv", shape=(20, 30))


def test_load_nuclei_coco_records(synth_root, tmp_path):
    path = export_coco_splits(synth_root, tmp_path, ratio=0.1, seed=0, splits=["train"])["train"]
    records = load_nuclei_coco(path, synth_root)
    content = _load(path)
    assert len(records) == len(content["images"])
    rec = records[0]
    assert rec["file_name"].startswith(str(synth_root)) and rec["label_file_name"].endswith(".png")
    assert rec["nucleiweak"]["ratio"] == 0.1
    ann = rec["annotations"][0]
    assert ann["bbox_mode"] == 1 and ann["category_id"] == 0 and ann["iscrowd"] == 0
    assert set(ann) >= {"bbox", "segmentation", "point", "point_labeled", "point_shift", "area"}


def test_plain_coco_without_points_gets_bbox_centres(tmp_path):
    content = {
        "images": [{"id": 7, "file_name": "x.png", "height": 10, "width": 10}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [2, 3, 4, 5], "iscrowd": 0}
        ],
        "categories": [{"id": 3, "name": "cell"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(content))
    ann = load_nuclei_coco(tmp_path / "c.json", tmp_path)[0]["annotations"][0]
    assert ann["point"] == [3, 5] and ann["point_labeled"] is True and ann["point_shift"] == [0, 0]


def test_bad_inputs(synth_root, tmp_path):
    with pytest.raises(ValueError, match="ratio"):
        export_coco_splits(synth_root, tmp_path, ratio=0.0)
    with pytest.raises(ValueError, match="annotation"):
        export_coco_splits(synth_root, tmp_path, annotation="boxes")
    with pytest.raises(ValueError, match="point_mode"):
        export_coco_splits(synth_root, tmp_path, point_mode="middle")
    with pytest.raises(ValueError, match="points_only export needs points"):
        export_coco_splits(synth_root, tmp_path, annotation="points_only")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_nuclei_coco(tmp_path / "bad.json", tmp_path)
    with pytest.raises(ValueError, match="no samples"):
        build_coco([], tmp_path)
