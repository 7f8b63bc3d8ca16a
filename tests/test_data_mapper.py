"""Tests of the detectron2 glue: NucleiDatasetMapper, CachedTargetsMapper, Rot90Transform,
register_nuclei_dataset."""

import copy

import numpy as np
import pytest

pytest.importorskip("detectron2")
import torch  # noqa: E402
from detectron2.config import CfgNode as CN  # noqa: E402
from detectron2.config import configurable, get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402
from scipy.ndimage import binary_erosion  # noqa: E402
from skimage.draw import disk  # noqa: E402

from nucleiweak_d2.data.coco import export_coco_splits, load_nuclei_coco  # noqa: E402
from nucleiweak_d2.data.config import add_data_config  # noqa: E402
from nucleiweak_d2.data.datasets import (
    register_nuclei_dataset,
    register_nuclei_splits,
)  # noqa: E402
from nucleiweak_d2.data.io import write_image, write_label  # noqa: E402
from nucleiweak_d2.data.mapper import CachedTargetsMapper, NucleiDatasetMapper  # noqa: E402
from nucleiweak_d2.data.registry import NUCLEIWEAK_MAPPER_REGISTRY, build_mapper  # noqa: E402
from nucleiweak_d2.data.transforms import RandomRot90, RandomScale, Rot90Transform  # noqa: E402

H, W = 60, 80
CENTRES = [(10, 12), (15, 45), (40, 20), (45, 65), (30, 70), (50, 40)]  # (row, col)


def _write_dataset(root):
    """Disks of radius 6 (ids 1..6); image channel 0 = 30 * id so moved pixels are traceable."""
    label = np.zeros((H, W), dtype=np.int32)
    for i, (r, c) in enumerate(CENTRES, start=1):
        rr, cc = disk((r, c), 6, shape=(H, W))
        label[rr, cc] = i
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[..., 0] = 30 * label
    image[..., 1] = np.arange(W)[None, :] * 3
    image[..., 2] = np.arange(H)[:, None] * 4
    write_image(root / "images" / "a.png", image)
    write_label(root / "labels" / "a.png", label)
    return label


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("disks")
    _write_dataset(root)
    out = {}
    for annotation in ("points", "partial_mask"):
        path = export_coco_splits(root, root / annotation, annotation=annotation)["all"]
        out[annotation] = load_nuclei_coco(path, root)
    half = export_coco_splits(root, root / "half", ratio=0.5, seed=0)["all"]
    out["half"] = load_nuclei_coco(half, root)
    (root / "clicks" / "images").mkdir(parents=True)
    (root / "clicks" / "images" / "a.png").write_bytes((root / "images" / "a.png").read_bytes())
    (root / "clicks" / "points").mkdir()
    (root / "clicks" / "points" / "a.csv").write_text(
        "\n".join(f"{c},{r}" for r, c in CENTRES) + "\n"
    )
    po = export_coco_splits(root / "clicks", root / "po", annotation="points_only")["all"]
    out["points_only"] = load_nuclei_coco(po, root / "clicks")
    out["root"] = root
    return out


TRANSFORMS = {
    "hflip": [T.RandomFlip(prob=1.0, horizontal=True, vertical=False)],
    "vflip": [T.RandomFlip(prob=1.0, horizontal=False, vertical=True)],
    "rot90": [Rot90Transform(H, W, 1)],
    "rot180": [Rot90Transform(H, W, 2)],
    "rot270": [Rot90Transform(H, W, 3)],
    "resize": [T.ResizeTransform(H, W, 90, 100)],
    "crop": [T.CropTransform(30, 5, 45, 50)],
    "all": [
        T.ResizeTransform(H, W, 72, 96),
        T.RandomFlip(prob=1.0, horizontal=True, vertical=False),
        Rot90Transform(72, 96, 1),
        T.CropTransform(10, 10, 50, 60),
    ],
}
EXPECTED_SIZE = {
    "rot90": (W, H),
    "rot270": (W, H),
    "resize": (90, 100),
    "crop": (50, 45),
    "all": (60, 50),
}


def _instance_of_point(out):
    """Original id of each output instance whose point is inside the image, read from the
    transformed image (channel 0 / 30)."""
    image = out["image"].numpy()
    inst = out["instances"]
    pts = inst.gt_points.numpy()[inst.gt_point_inside.numpy()]
    px, py = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
    return image[0, py, px] // 30, px, py


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_points_stay_on_their_masks(records, name):
    mapper = NucleiDatasetMapper(is_train=True, augmentations=TRANSFORMS[name])
    out = mapper(records["partial_mask"][0])
    inst = out["instances"]
    assert tuple(out["image"].shape[1:]) == EXPECTED_SIZE.get(name, (H, W)) == inst.image_size
    ids, px, py = _instance_of_point(out)
    inside = inst.gt_point_inside.numpy()
    assert (inst.gt_points.numpy()[~inside] == -1).all()
    masks = inst.gt_masks.tensor.numpy()
    boxes = inst.gt_boxes.tensor.numpy()
    for k in range(len(masks)):  # every instance, cut ones too: its box is its mask's box
        rows, cols = np.nonzero(masks[k])
        np.testing.assert_allclose(
            boxes[k], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        )
    masks = masks[inside]
    assert len(ids) == len(masks) and len(ids) > 0
    for k in range(len(ids)):
        assert masks[k, py[k], px[k]], f"point {k} is off its mask after {name}"
        # the mask is the one of the instance drawn in the (equally transformed) image; after a
        # resize the bilinear image and the nearest-neighbour mask may differ on the border
        inner = binary_erosion(masks[k], iterations=2) if name in ("resize", "all") else masks[k]
        assert inner.any() and np.all(out["image"].numpy()[0][inner] == 30 * ids[k])
    assert len(set(ids.tolist())) == len(ids)


def test_crop_drops_points_that_leave(records):
    # crop x in [30, 75), y in [5, 55): keeps centres (15,45), (45,65), (30,70), (50,40)
    mapper = NucleiDatasetMapper(is_train=True, augmentations=TRANSFORMS["crop"])
    out = mapper(records["partial_mask"][0])
    ids, _, _ = _instance_of_point(out)
    assert sorted(ids.tolist()) == [2, 4, 5, 6]
    np.testing.assert_allclose(
        out["instances"].gt_points.numpy()[ids.argsort()],
        [
            [45.5 - 30, 15.5 - 5],
            [65.5 - 30, 45.5 - 5],
            [70.5 - 30, 30.5 - 5],
            [40.5 - 30, 50.5 - 5],
        ],
    )


def test_crop_keeps_the_visible_part_of_a_cut_mask(records):
    # crop x in [15, 80): nucleus 1 (centre row 10, col 12, radius 6: cols 7-17) loses its
    # point but keeps cols 15-17; nucleus 3 (centre col 20) keeps its point
    crop = [T.CropTransform(15, 0, 65, 60)]
    out = NucleiDatasetMapper(is_train=True, augmentations=crop)(records["partial_mask"][0])
    inst = out["instances"]
    assert len(inst) == len(CENTRES)  # nothing dropped: every nucleus is partly visible
    inside = inst.gt_point_inside.numpy()
    masks = inst.gt_masks.tensor.numpy()
    image_ids = out["image"].numpy()[0] // 30
    cut = np.flatnonzero(~inside)
    assert len(cut) == 1
    (k,) = cut
    assert set(image_ids[masks[k]].tolist()) == {1}  # it is nucleus 1, all its visible pixels
    assert masks[k].sum() == (image_ids == 1).sum() > 0
    rows, cols = np.nonzero(masks[k])
    np.testing.assert_allclose(
        inst.gt_boxes.tensor[k].numpy(), [0, rows.min(), cols.max() + 1, rows.max() + 1]
    )
    np.testing.assert_allclose(inst.gt_points[k].numpy(), [-1, -1])
    # the union of the masks is every nucleus pixel of the crop: no annotated pixel turns
    # into background
    assert np.array_equal(masks.any(axis=0), image_ids > 0)
    # old behaviour, kept as an option: the cut nucleus is dropped
    old = NucleiDatasetMapper(is_train=True, augmentations=crop, keep_cut_masks=False)(
        records["partial_mask"][0]
    )["instances"]
    assert len(old) == len(CENTRES) - 1 and old.gt_point_inside.all()
    # without masks an instance is its point: one that leaves is still dropped
    pts = NucleiDatasetMapper(is_train=True, augmentations=crop, use_masks=False)(
        records["points"][0]
    )["instances"]
    assert len(pts) == len(CENTRES) - 1 and pts.gt_point_inside.all()


def test_exact_point_coordinates_after_flip_and_rot(records):
    x, y = CENTRES[0][1] + 0.5, CENTRES[0][0] + 0.5
    cases = {
        "hflip": (W - x, y),
        "vflip": (x, H - y),
        "rot90": (y, W - x),
        "rot180": (W - x, H - y),
        "rot270": (H - y, x),
        "resize": (x * 100 / W, y * 90 / H),
    }
    for name, expected in cases.items():
        out = NucleiDatasetMapper(is_train=True, augmentations=TRANSFORMS[name])(
            records["points"][0]
        )
        np.testing.assert_allclose(out["instances"].gt_points[0].numpy(), expected, rtol=1e-6)


def test_points_mode_has_no_masks_and_point_boxes(records):
    out = NucleiDatasetMapper(is_train=True, augmentations=[], point_box_size=10)(
        records["points"][0]
    )
    inst = out["instances"]
    assert not inst.has("gt_masks") and len(inst) == len(CENTRES)
    np.testing.assert_allclose(inst.gt_boxes.tensor[0].numpy(), [7.5, 5.5, 17.5, 15.5])
    assert inst.gt_classes.tolist() == [0] * len(CENTRES)
    assert inst.gt_point_labeled.dtype == torch.bool and inst.gt_point_labeled.all()
    out = NucleiDatasetMapper(is_train=True, augmentations=[], point_box_size=0)(
        records["points"][0]
    )
    assert not out["instances"].has("gt_boxes")


def test_points_only_records(records):
    out = NucleiDatasetMapper(is_train=True, augmentations=TRANSFORMS["all"])(
        records["points_only"][0]
    )
    ids, _, _ = _instance_of_point(out)
    assert len(ids) > 0 and not out["instances"].has("gt_masks")
    with pytest.raises(ValueError, match="segmentation"):
        NucleiDatasetMapper(is_train=True, augmentations=[], use_masks=True)(
            records["points_only"][0]
        )


def test_labeled_only(records):
    record = records["half"][0]
    n_labeled = sum(a["point_labeled"] for a in record["annotations"])
    assert n_labeled == 3
    out = NucleiDatasetMapper(is_train=True, augmentations=[])(record)
    assert len(out["instances"]) == 3 and out["instances"].gt_point_labeled.all()
    out = NucleiDatasetMapper(is_train=True, augmentations=[], labeled_only=False)(record)
    assert len(out["instances"]) == 6 and out["instances"].gt_point_labeled.sum() == 3


def test_test_mode_keeps_annotations_and_bgr(records):
    record = records["points"][0]
    out = NucleiDatasetMapper(is_train=False, augmentations=[], image_format="BGR")(record)
    assert "instances" not in out and out["annotations"] == record["annotations"]
    assert out["image"].shape == (3, H, W) and out["image"].dtype == torch.uint8
    assert out["image"][2, CENTRES[0][0], CENTRES[0][1]] == 30  # red channel is last in BGR


def test_mapper_size_mismatch_error(records):
    record = dict(records["points"][0], height=H + 1)
    with pytest.raises(ValueError, match="a.png"):
        NucleiDatasetMapper(is_train=True, augmentations=[])(record)


class _RowColumnMapper(CachedTargetsMapper):
    """Targets: the row and column index of every full-image pixel; counts its computations."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.computed, self.put_args = 0, []

    def _targets(self, record, image):
        self.computed += 1
        rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
        return {"row": rows.astype(np.float32), "col": cols.astype(np.float32)}

    def _put(self, d, maps, transforms, shape):
        self.put_args.append((transforms, shape))
        d["rc"] = np.stack([transforms.apply_segmentation(maps[k]) for k in ("row", "col")])


def test_cached_targets_mapper_moves_targets_with_the_image(records):
    record = records["points"][0]
    moves = [T.HFlipTransform(W), Rot90Transform(H, W, 1), T.CropTransform(10, 10, 40, 50)]
    mapper = _RowColumnMapper(True, augmentations=moves)
    out = mapper(record)
    transforms, shape = mapper.put_args[0]
    assert isinstance(transforms, T.TransformList) and len(transforms.transforms) == 3
    assert shape == (50, 40) == tuple(out["image"].shape[1:])
    assert out["rc"].shape == (2, *shape)
    # every output pixel's targets name the full-image pixel it came from; the image says so
    # too (channel 1 = 3 * column, channel 2 = 4 * row)
    rows, cols = np.rint(out["rc"]).astype(int)
    image = out["image"].numpy().astype(int)
    np.testing.assert_array_equal(image[1], 3 * cols)
    np.testing.assert_array_equal(image[2], 4 * rows)
    assert len(np.unique(rows)) > 1 and len(np.unique(cols)) > 1


def test_cached_targets_mapper_leaves_the_record_unchanged(records):
    """The output is a shallow copy of the record (no deep copy of its annotations, which
    cost ~30 % of a MoNuSeg sample): the record is never changed, and a training sample
    carries its targets without the full image's annotations."""
    record = records["points"][0]
    before = copy.deepcopy(record)
    moves = [T.HFlipTransform(W), T.CropTransform(10, 10, 40, 50)]
    out = _RowColumnMapper(True, augmentations=moves)(record)
    assert "annotations" not in out and "rc" in out and "image" in out
    assert record == before and "image" not in record and "rc" not in record
    test_out = _RowColumnMapper(False, augmentations=[])(record)
    assert test_out["annotations"] is record["annotations"]  # read by the evaluator
    assert record == before


def test_cached_targets_mapper_caches_in_memory_and_on_disk(records, tmp_path):
    record = dict(records["points"][0], image_id="a/1")
    mapper = _RowColumnMapper(True, augmentations=[], cache_dir=str(tmp_path))
    first = mapper(record)
    second = mapper(record)
    assert mapper.computed == 1
    np.testing.assert_array_equal(first["rc"], second["rc"])
    assert (tmp_path / "a_1.npz").is_file()  # the cache key is file-system safe
    again = _RowColumnMapper(True, augmentations=[], cache_dir=str(tmp_path))
    maps = again.cached_targets(record, None)  # read back, not recomputed
    assert again.computed == 0 and sorted(maps) == ["col", "row"]
    np.testing.assert_array_equal(again(record)["rc"], first["rc"])
    assert again.cached_targets(record, None) is again.cached_targets(record, None)
    memory = _RowColumnMapper(True, augmentations=[])
    memory(record), memory(record)
    assert memory.computed == 1 and list(tmp_path.iterdir()) == [tmp_path / "a_1.npz"]


def test_cached_targets_mapper_test_mode_bgr_and_errors(records):
    record = records["points"][0]
    mapper = _RowColumnMapper(False, augmentations=[], image_format="BGR")
    out = mapper(record)
    assert mapper.computed == 0 and not mapper.put_args and "rc" not in out
    assert out["annotations"] == record["annotations"]
    assert out["image"].shape == (3, H, W) and out["image"].dtype == torch.uint8
    assert out["image"][2, CENTRES[0][0], CENTRES[0][1]] == 30  # red channel is last in BGR
    with pytest.raises(ValueError, match="a.png"):
        _RowColumnMapper(True, augmentations=[])(dict(record, width=W + 1))
    with pytest.raises(ValueError, match="image_format"):
        _RowColumnMapper(True, augmentations=[], image_format="L")
    with pytest.raises(TypeError):
        CachedTargetsMapper(True, augmentations=[])  # abstract


def test_cached_targets_mapper_from_config():
    cfg = _cfg()
    cfg.INPUT.FORMAT = "BGR"
    cfg.NUCLEIWEAK.DATA.CROP_SIZE = [32, 32]

    class _Configured(_RowColumnMapper):
        @configurable
        def __init__(self, is_train=True, *, augmentations, image_format="RGB", cache_dir=""):
            super().__init__(
                is_train,
                augmentations=augmentations,
                image_format=image_format,
                cache_dir=cache_dir,
            )

    train, test = _Configured(cfg, True), _Configured(cfg, is_train=False)
    assert train.is_train and train.image_format == "BGR" and train.cache_dir == ""
    assert isinstance(train.augmentations.augs[-1], T.RandomCrop)
    assert not test.is_train and test.augmentations.augs == []


def _cfg():
    cfg = get_cfg()
    cfg.NUCLEIWEAK = CN()
    cfg.NUCLEIWEAK.MAPPER = "NucleiDatasetMapper"
    add_data_config(cfg)
    return cfg


def test_from_config_random_augmentations(records):
    assert "NucleiDatasetMapper" in NUCLEIWEAK_MAPPER_REGISTRY
    cfg = _cfg()
    cfg.NUCLEIWEAK.DATA.CROP_SIZE = [40, 40]
    cfg.NUCLEIWEAK.DATA.USE_MASKS = "always"
    mapper = build_mapper(cfg, True)
    np.random.seed(0)
    checked = 0
    for _ in range(12):
        out = mapper(records["points"][0])
        assert tuple(out["image"].shape) == (3, 40, 40)
        ids, px, py = _instance_of_point(out)
        inside = out["instances"].gt_point_inside.numpy()
        masks = out["instances"].gt_masks.tensor.numpy()[inside]
        pts = out["instances"].gt_points.numpy()[inside]
        assert (pts >= 0).all() and (pts < 40).all()
        for k in range(len(ids)):
            assert masks[k, py[k], px[k]] and ids[k] > 0
        checked += len(ids)
    assert checked > 12  # the crops do hold nuclei: the point checks above ran
    assert build_mapper(cfg, False).augmentations.augs == []
    cfg.NUCLEIWEAK.DATA.USE_MASKS = "sometimes"
    with pytest.raises(ValueError, match="USE_MASKS"):
        build_mapper(cfg, True)


def test_rot90_inverse_and_random_augs():
    img = np.arange(H * W).reshape(H, W)
    for k in range(4):
        t = Rot90Transform(H, W, k)
        np.testing.assert_array_equal(t.inverse().apply_image(t.apply_image(img)), img)
        pts = np.array([[0.5, 0.5], [79.5, 10.5], [3.0, 59.0]])
        np.testing.assert_allclose(t.inverse().apply_coords(t.apply_coords(pts)), pts)
    np.random.seed(1)
    shapes = {
        T.AugmentationList([RandomRot90()])(T.AugInput(np.zeros((H, W, 3), np.uint8)))
        .apply_image(np.zeros((H, W, 3), np.uint8))
        .shape
        for _ in range(20)
    }
    assert shapes == {(H, W, 3), (W, H, 3)}
    with pytest.raises(ValueError, match="min_scale"):
        RandomScale(1.2, 0.8)


def test_register_idempotent_and_metadata(records, tmp_path):
    root = records["root"]
    json_file = root / "half" / "all.json"
    name = "nucleiweak_test_half"
    register_nuclei_dataset(name, json_file, root)
    register_nuclei_dataset(name, json_file, root)  # no error
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["nucleus"] and meta.evaluator_type == "nuclei"
    assert meta.point_settings["ratio"] == 0.5 and meta.json_file == str(json_file.resolve())
    dicts = DatasetCatalog.get(name)
    assert dicts[0]["annotations"][0]["bbox_mode"] is BoxMode.XYWH_ABS
    register_nuclei_dataset(name, root / "points" / "all.json", root)  # replaced, not an error
    assert MetadataCatalog.get(name).point_settings["ratio"] == 1.0
    with pytest.raises(ValueError, match="does not exist"):
        register_nuclei_dataset("nucleiweak_test_missing", tmp_path / "none.json", root)
    names = register_nuclei_splits("nucleiweak_test_po", root / "po", root / "clicks")
    assert names == ["nucleiweak_test_po_all"]
    assert "bbox" not in DatasetCatalog.get(names[0])[0]["annotations"][0]


def test_detectron2_train_loader_batch(records):
    from detectron2.data import build_detection_train_loader

    root = records["root"]
    register_nuclei_dataset("nucleiweak_test_loader", root / "points" / "all.json", root)
    cfg = _cfg()
    cfg.DATASETS.TRAIN = ("nucleiweak_test_loader",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.NUCLEIWEAK.DATA.CROP_SIZE = [32, 32]
    loader = build_detection_train_loader(cfg, mapper=build_mapper(cfg, True))
    batch = next(iter(loader))
    assert len(batch) == 2
    for item in batch:
        assert item["image"].shape == (3, 32, 32)
        assert item["instances"].gt_points.shape[1] == 2
