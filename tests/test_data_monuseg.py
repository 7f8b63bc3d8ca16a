"""Data layer on the real MoNuSeg folder (skipped when ../shared/data/monuseg_mo is absent)."""

import os
from pathlib import Path

import numpy as np
import pytest

from nucleiweak_d2.data.coco import build_coco
from nucleiweak_d2.data.folder import list_splits, load_folder_dataset
from nucleiweak_d2.data.io import read_image, read_label
from nucleiweak_d2.data.points import points_from_labels

DATA = Path(
    os.environ.get(
        "NUCLEIWEAK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"
    )
)
pytestmark = pytest.mark.skipif(not (DATA / "images").is_dir(), reason=f"{DATA} not available")


def test_splits_and_sizes():
    assert {"train", "val", "test", "testA", "testB"} <= set(list_splits(DATA))
    assert "organ" not in list_splits(DATA)
    sizes = {
        k: len(load_folder_dataset(DATA, k)) for k in ("train", "val", "test", "testA", "testB")
    }
    assert sizes == {"train": 12, "val": 4, "test": 14, "testA": 8, "testB": 6}
    sample = load_folder_dataset(DATA, "val")[0]
    assert (sample["height"], sample["width"]) == (1000, 1000)


def test_coco_on_two_images():
    mask_util = pytest.importorskip("pycocotools.mask")
    samples = load_folder_dataset(DATA, "train")[:2]
    coco = build_coco(samples, DATA, ratio=0.1, shift="6-8", seed=0)
    assert read_image(samples[0]["image_path"]).shape == (1000, 1000, 3)
    for image, sample in zip(coco["images"], samples):
        label = read_label(sample["label_path"])
        ids, points = points_from_labels(label)
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(anns) == len(ids) > 100
        assert sum(a["point_labeled"] for a in anns) == int(np.floor(0.1 * len(ids) + 0.5))
        for k in range(0, len(anns), 37):
            rle = dict(anns[k]["segmentation"], counts=anns[k]["segmentation"]["counts"].encode())
            np.testing.assert_array_equal(mask_util.decode(rle), label == ids[k])
            np.testing.assert_array_equal(
                np.subtract(anns[k]["point"], anns[k]["point_shift"]), points[k]
            )
            assert 6 <= np.hypot(*anns[k]["point_shift"]) <= 8
