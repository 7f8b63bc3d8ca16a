"""The classical baseline: the numpy segmentation on hand-made images, the parameter-free
meta-architecture, and its pipeline on tiny synthetic data."""

import json

import numpy as np
import pytest
from conftest import make_tiny_coco

pytest.importorskip("detectron2")

import torch  # noqa: E402
from skimage.draw import disk  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.methods.classical import (  # noqa: E402  (registers the method and its config)
    NucleiWeakClassicalPipeline,
    NucleiWeakClassicalSegmentor,
    classical_instances,
    nuclei_foreground,
    stain_channel,
)

BACKGROUND, NUCLEUS = (
    (235, 205, 225),
    (70, 50, 135),
)  # eosin-pink stroma, hematoxylin-purple nucleus
CONFIG = "configs/classical/synthetic.yaml"


def _image(centres, radius=9, shape=(64, 96)):
    """H&E-like image: dark purple discs on pink; returns ``(image, list of disc masks)``."""
    img = np.empty(shape + (3,), np.uint8)
    img[:] = BACKGROUND
    masks = []
    for c in centres:
        m = np.zeros(shape, bool)
        m[disk(c, radius, shape=shape)] = True
        img[m] = NUCLEUS
        masks.append(m)
    return img, masks


def _majority(label, mask):
    ids, counts = np.unique(label[mask], return_counts=True)
    return ids[np.argmax(counts)], counts.max() / mask.sum()


def test_hematoxylin_channel_is_higher_on_nuclei():
    img, (m,) = _image([(32, 48)])
    h = stain_channel(img)
    assert h.shape == img.shape[:2] and h[m].min() > h[~m].max()
    assert stain_channel(img, "grey")[m].min() > stain_channel(img, "grey")[~m].max()


def test_two_separated_discs_give_two_instances():
    img, masks = _image([(32, 24), (32, 72)])
    label = classical_instances(img)
    assert label.dtype == np.int32 and label.shape == img.shape[:2]
    assert label.max() == 2
    ids = [_majority(label, m) for m in masks]
    assert {i for i, _ in ids} == {1, 2}
    assert all(frac > 0.95 for _, frac in ids)  # each disc is (nearly) one whole object
    assert (label[~(masks[0] | masks[1])] == 0).mean() > 0.98


def test_touching_discs_are_split_by_the_watershed():
    img, masks = _image([(32, 38), (32, 56)], radius=10)  # centres 18 px apart: one blob
    assert classical_instances(img, split=False).max() == 1
    label = classical_instances(img)
    assert label.max() == 2
    (a, fa), (b, fb) = (
        _majority(label, masks[0] & ~masks[1]),
        _majority(label, masks[1] & ~masks[0]),
    )
    assert a != b and a > 0 and b > 0 and min(fa, fb) > 0.9


@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_image_gives_no_instance(value):
    img = np.full((40, 50, 3), value, np.uint8)
    label = classical_instances(img)
    assert label.shape == (40, 50) and label.dtype == np.int32 and label.max() == 0


def test_holes_filled_and_small_objects_removed():
    img, (m,) = _image([(32, 48)], radius=12)
    img[30:35, 46:51] = BACKGROUND  # a hole inside the nucleus
    img[4:9, 4:9] = NUCLEUS  # a 25-pixel speck
    assert classical_instances(img, split=False)[30:35, 46:51].all()
    assert classical_instances(img, fill_holes=False, split=False)[32, 48] == 0
    assert classical_instances(img, min_area=40, split=False).max() == 1
    assert classical_instances(img, min_area=0, split=False).max() == 2


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="RGB"):
        classical_instances(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="threshold"):
        nuclei_foreground(np.random.rand(8, 8), threshold="median")
    with pytest.raises(ValueError, match="channel"):
        stain_channel(np.zeros((8, 8, 3), np.uint8), "eosin")


def test_segmentor_from_config_outputs_and_no_training():
    cfg = setup_cfg(
        CONFIG,
        ["NUCLEIWEAK.CLASSICAL.SPLIT", "False", "NUCLEIWEAK.CLASSICAL.OUTPUT_INSTANCES", "True"],
    )
    model = NucleiWeakClassicalSegmentor(cfg)
    assert model.segment_args["split"] is False and not list(model.parameters())
    assert model.state_dict() == {}
    img, masks = _image([(32, 38), (32, 56)], radius=10)
    model.eval()
    (out,) = model(
        [{"image": torch.from_numpy(img.transpose(2, 0, 1).copy()), "height": 64, "width": 96}]
    )
    assert out["instance_map"].shape == (64, 96) and int(out["instance_map"].max()) == 1
    assert len(out["instances"]) == 1 and out["instances"].pred_masks.shape == (1, 64, 96)
    # BGR input gives the same map; a record of another size gets the map resized to it
    bgr = NucleiWeakClassicalSegmentor(segment_args={}, input_format="BGR").eval()
    rgb = NucleiWeakClassicalSegmentor(segment_args={}).eval()
    chw = torch.from_numpy(img.transpose(2, 0, 1).copy())
    a = rgb([{"image": chw}])[0]["instance_map"]
    assert torch.equal(a, bgr([{"image": chw.flip(0)}])[0]["instance_map"])
    big = rgb([{"image": chw, "height": 128, "width": 192}])[0]["instance_map"]
    assert big.shape == (128, 192) and int(big.max()) == int(a.max())
    model.train()
    with pytest.raises(ValueError, match="nothing to train"):
        model([{"image": torch.from_numpy(img.transpose(2, 0, 1).copy())}])


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """4 synthetic 128x128 images (2 train / 1 val / 1 test)."""
    tmp = tmp_path_factory.mktemp("classical")
    make_tiny_coco(tmp, "classical_smoke", size=(128, 128), ratio=0.5)
    return tmp


def test_pipeline_scores_the_baseline_without_training(tiny_dataset):
    from nucleiweak_d2.data.io import read_image, read_label
    from nucleiweak_d2.engine import NUCLEIWEAK_PIPELINE_REGISTRY

    out = tiny_dataset / "run"
    cfg = setup_cfg(
        CONFIG,
        [
            "DATASETS.TRAIN",
            "('classical_smoke_train',)",
            "DATASETS.TEST",
            "('classical_smoke_val',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            "['classical_smoke_test']",
            "OUTPUT_DIR",
            str(out),
        ],
    )
    assert NUCLEIWEAK_PIPELINE_REGISTRY.get(cfg.NUCLEIWEAK.PIPELINE) is NucleiWeakClassicalPipeline
    summary = NucleiWeakClassicalPipeline(cfg).run()
    res = summary["segmentation"]["classical_smoke_test"]["nuclei"]
    assert 0.0 < res["AJI"] <= 1.0 and 0.0 < res["pixel_F1"] <= 1.0
    saved = json.loads((out / "metrics.json").read_text())["segmentation"]["classical_smoke_test"]
    assert saved["nuclei"]["AJI"] == pytest.approx(res["AJI"])
    assert (out / "model_final.pth").is_file() and "AJI" in (out / "summary.md").read_text()
    assert sorted(p.name for p in out.iterdir() if (p / "stage_done.json").is_file()) == [
        "eval",
        "model",
    ]
    # the saved prediction is the numpy function's map of the test image
    (pred,) = list((out / "eval" / "classical_smoke_test" / "pred").glob("*.png"))
    test_image = sorted((tiny_dataset / "data" / "images").glob("*.png"))[-1]
    expected = classical_instances(
        read_image(test_image), min_area=cfg.NUCLEIWEAK.CLASSICAL.MIN_AREA
    )
    np.testing.assert_array_equal(read_label(pred), expected)
    # --eval-only of the finished run scores the same
    again = NucleiWeakClassicalPipeline(cfg, eval_only=True).run()
    assert again["segmentation"]["classical_smoke_test"]["nuclei"]["AJI"] == pytest.approx(
        res["AJI"]
    )


def test_settings_chosen_on_val_split_touching_discs_and_drop_specks(monkeypatch):
    """Two touching discs of radius 9 and a 3x3 speck: the split needs seeds closer than the
    disc centres' 16 px; the speck (a false positive) is removed by min_area 20, not by 0."""
    import nucleiweak_d2.methods.classical.calibrate as calibrate
    from nucleiweak_d2.methods.classical import select_classical_settings

    img, masks = _image([(32, 40), (32, 56)])
    img[5:8, 5:8] = NUCLEUS
    gt = np.zeros(img.shape[:2], np.int32)
    for i, m in enumerate(masks, start=1):
        gt[m & (gt == 0)] = i
    monkeypatch.setattr(calibrate, "gt_label_map", lambda record: gt)
    info = select_classical_settings(
        [{"file_name": "val.png"}], lambda path: img, min_distances=(3, 20), min_areas=(0, 20)
    )
    assert set(info["val_aji"]) == {"3/0", "3/20", "20/0", "20/20"}
    assert (info["min_distance"], info["min_area"]) == (3, 20)
    assert info["val_aji"]["3/20"] > max(info["val_aji"]["3/0"], info["val_aji"]["20/20"])
    assert info["images"] == 1
    with pytest.raises(ValueError, match="at least one val image"):
        select_classical_settings([], lambda path: img)
