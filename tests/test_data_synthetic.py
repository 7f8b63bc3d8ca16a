"""Tests of nucleiweak_d2.data.synthetic: determinism, exact labels, realism checks, layout."""

import json

import numpy as np
import pytest
from scipy import ndimage

from nucleiweak_d2.data.folder import load_folder_dataset
from nucleiweak_d2.data.io import read_image, read_label
from nucleiweak_d2.data.synthetic import make_synthetic_dataset, synthesize_image


@pytest.fixture(scope="module")
def tile():
    return synthesize_image((128, 160), seed=3)


def test_types_shapes_and_determinism(tile):
    image, label = tile
    assert image.dtype == np.uint8 and image.shape == (128, 160, 3)
    assert label.dtype == np.int32 and label.shape == (128, 160)
    image2, label2 = synthesize_image((128, 160), seed=3)
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(label, label2)
    image3, label3 = synthesize_image((128, 160), seed=4)
    assert not np.array_equal(label, label3)


def test_labels_are_exact_instances(tile):
    _, label = tile
    ids = np.unique(label)[1:]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive 1..N
    assert len(ids) >= 8
    areas = np.bincount(label.ravel())[1:]
    assert areas.min() >= 12
    for i in ids:  # every instance is one 4-connected piece
        assert ndimage.label(label == i)[1] == 1


def test_touching_nuclei_exist(tile):
    _, label = tile
    # pairs of different instances that are 4-neighbours
    a, b = label[:, :-1], label[:, 1:]
    touching = (a > 0) & (b > 0) & (a != b)
    assert touching.sum() > 0
    assert ndimage.label(label > 0)[1] < label.max()  # some components hold several nuclei


def test_he_colours(tile):
    image, label = tile
    nuclei = image[label > 0].astype(float).mean(0)
    stroma = image[ndimage.binary_dilation(label > 0, iterations=4) == 0].astype(float).mean(0)
    assert nuclei.sum() < stroma.sum() - 100  # nuclei are much darker
    assert nuclei[2] > nuclei[0] and nuclei[2] > nuclei[1]  # hematoxylin: blue-purple
    assert stroma[0] > stroma[1] and stroma[2] > stroma[1]  # eosin: pink (green absorbed)
    assert image[label > 0].std(0).mean() > 5  # chromatin texture, not flat


def test_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        synthesize_image((8, 8))
    with pytest.raises(ValueError, match="radius_range"):
        synthesize_image((64, 64), radius_range=(5, 2))
    with pytest.raises(ValueError, match="cluster_fraction"):
        synthesize_image((64, 64), cluster_fraction=1.5)


def test_make_dataset_layout_and_overwrite(tmp_path):
    out = make_synthetic_dataset(tmp_path / "s", n_images=5, size=(48, 64), seed=2)
    split = json.loads((out / "split.json").read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [2, 1, 2]
    assert sorted(sum(split.values(), [])) == [f"synth_{i:03d}" for i in range(5)]
    samples = load_folder_dataset(out, "train")
    image, label = synthesize_image((48, 64), (2, 0))
    np.testing.assert_array_equal(read_image(samples[0]["image_path"]), image)
    np.testing.assert_array_equal(read_label(samples[0]["label_path"]), label)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_synthetic_dataset(out, n_images=3, size=(48, 64), seed=2)
    make_synthetic_dataset(out, n_images=3, size=(48, 64), seed=2, overwrite=True)
    assert len(load_folder_dataset(out)) == 3
