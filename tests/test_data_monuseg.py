"""Data layer on the real MoNuSeg folder (conftest ``shared_monuseg``: skipped when absent)."""

import numpy as np
import pytest

from nucleiweak_d2.data.coco import build_coco
from nucleiweak_d2.data.folder import list_splits, load_folder_dataset
from nucleiweak_d2.data.io import read_image, read_label
from nucleiweak_d2.data.points import points_from_labels


def test_splits_and_sizes(shared_monuseg):
    assert {"train", "val", "test", "testA", "testB"} <= set(list_splits(shared_monuseg))
    assert "organ" not in list_splits(shared_monuseg)
    sizes = {
        k: len(load_folder_dataset(shared_monuseg, k))
        for k in ("train", "val", "test", "testA", "testB")
    }
    assert sizes == {"train": 12, "val": 4, "test": 14, "testA": 8, "testB": 6}
    sample = load_folder_dataset(shared_monuseg, "val")[0]
    assert (sample["height"], sample["width"]) == (1000, 1000)


def test_coco_on_two_images(shared_monuseg):
    mask_util = pytest.importorskip("pycocotools.mask")
    samples = load_folder_dataset(shared_monuseg, "train")[:2]
    coco = build_coco(samples, shared_monuseg, ratio=0.1, shift="6-8", seed=0)
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
