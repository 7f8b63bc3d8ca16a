"""The training recipe's parts wired into the mappers, the models and the pipeline: stain
normalisation (fitted on the training images, kept in the weights), stain jitter, warps with
the right fill per map, crops at points."""

import numpy as np
import pytest
import torch
from conftest import make_tiny_coco

pytest.importorskip("detectron2")

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.data.io import write_image  # noqa: E402
from nucleiweak_d2.data.stain import StainNormalizer, reinhard_stats  # noqa: E402
from nucleiweak_d2.methods.qu2020 import (  # noqa: E402
    NucleiWeakQu2020DetMapper,
    NucleiWeakQu2020SegMapper,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = "configs/quick/qu2020_instant_test.yaml"


def _record(tmp_path, size=(60, 80), points=((20, 20), (60, 40))):
    h, w = size
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(215, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    for x, y in points:
        img[max(y - 4, 0) : y + 5, max(x - 4, 0) : x + 5] = (110, 50, 150)
    path = tmp_path / "img.png"
    write_image(path, img)
    anns = [{"point": [int(x), int(y)], "point_labeled": True} for x, y in points]
    return {
        "file_name": str(path),
        "height": h,
        "width": w,
        "image_id": 3,
        "annotations": anns,
    }, img


def _reinhard_target():
    return [60.0, 20.0, -15.0, 12.0, 6.0, 5.0]


def _cfg(opts=()):
    return setup_cfg(QUICK, list(opts))


# ----------------------------------------------------------------- mappers
def test_training_mapper_normalises_the_whole_image_before_targets_and_crop(tmp_path):
    rec, img = _record(tmp_path)
    normalizer = StainNormalizer("reinhard", _reinhard_target())
    mapper = NucleiWeakQu2020SegMapper(True, augmentations=[], stain_normalizer=normalizer)
    out = mapper(rec)
    want = normalizer(img)
    np.testing.assert_array_equal(out["image"].numpy().transpose(1, 2, 0), want)
    # the targets were made from the normalised image (k-means on normalised colours)
    plain = NucleiWeakQu2020SegMapper(True, augmentations=[])
    np.testing.assert_array_equal(
        mapper.cached_targets(rec, None)["cluster"], plain.cached_targets(rec, want)["cluster"]
    )
    # test mode: the image is left alone (the model normalises its inputs)
    test = NucleiWeakQu2020SegMapper(False, augmentations=[], stain_normalizer=normalizer)
    np.testing.assert_array_equal(test(rec)["image"].numpy().transpose(1, 2, 0), img)


def test_stain_keys_reach_the_mappers_and_an_unfitted_target_is_refused(tmp_path):
    cfg = _cfg(["NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "reinhard"])
    with pytest.raises(ValueError, match="TARGET is empty"):
        NucleiWeakQu2020SegMapper(cfg, True)
    cfg = _cfg(
        [
            "NUCLEIWEAK.DATA.STAIN_NORM.METHOD",
            "reinhard",
            "NUCLEIWEAK.DATA.STAIN_NORM.TARGET",
            str(_reinhard_target()),
            "NUCLEIWEAK.DATA.STAIN_JITTER.SIGMA",
            "0.05",
        ]
    )
    mapper = NucleiWeakQu2020SegMapper(cfg, True)
    assert mapper.stain_normalizer.target_list() == _reinhard_target()
    assert mapper.stain_jitter.sigma == 0.05
    assert NucleiWeakQu2020SegMapper(cfg, False).stain_normalizer is None
    assert NucleiWeakQu2020SegMapper(_cfg(), True).stain_jitter is None


def test_jitter_changes_the_training_image_but_not_the_targets(tmp_path):
    from nucleiweak_d2.data.stain import StainJitter

    rec, img = _record(tmp_path)
    np.random.seed(0)
    mapper = NucleiWeakQu2020SegMapper(True, augmentations=[], stain_jitter=StainJitter(0.2, 0.2))
    out = mapper(rec)
    assert not np.array_equal(out["image"].numpy().transpose(1, 2, 0), img)
    plain = NucleiWeakQu2020SegMapper(True, augmentations=[])
    np.testing.assert_array_equal(out["sem_seg"].numpy(), plain(rec)["sem_seg"].numpy())


def test_warps_fill_each_map_with_its_own_meaning(tmp_path):
    rec, _ = _record(tmp_path)
    cfg = _cfg(["NUCLEIWEAK.DATA.ROTATE_ANY", "True", "NUCLEIWEAK.DATA.CROP_SIZE", "[]"])
    np.random.seed(1)
    seg = NucleiWeakQu2020SegMapper(cfg, True)(rec)["sem_seg"].numpy()
    assert set(np.unique(seg)) <= {0, 1, 2}
    np.random.seed(1)
    det = NucleiWeakQu2020DetMapper(cfg, True)(rec)
    image = det["image"].numpy()
    outside = (image == 0).all(axis=0)  # black corners of the rotation
    assert outside.any()
    # a rotated-in corner is ignored by the detector (weight 0), not background (weight 1)
    assert (det["det_weight"][0].numpy()[outside] == 0).all()


def test_nam2023_takes_warps():
    from nucleiweak_d2.data.transforms import RandomAffine
    from nucleiweak_d2.methods.nam2023.mappers import NucleiWeakNam2023Mapper

    cfg = setup_cfg("configs/quick/nam2023_instant_test.yaml", ["NUCLEIWEAK.DATA.AFFINE", "0.3"])
    augs = NucleiWeakNam2023Mapper(cfg, True).augmentations.augs
    assert any(isinstance(a, RandomAffine) and a.seg_fill == 2 for a in augs)


def test_crop_at_points_centres_on_the_merged_points(tmp_path):
    import json

    rec, _ = _record(tmp_path, size=(200, 200), points=((30, 30),))
    points_file = tmp_path / "merged.json"
    points_file.write_text(json.dumps({"3": [[30, 30], [170, 170]]}))
    cfg = _cfg(["NUCLEIWEAK.DATA.CROP_SIZE", "[24,24]", "NUCLEIWEAK.DATA.CROP_AT_POINTS", "1.0"])
    cfg.defrost()
    cfg.NUCLEIWEAK.DATA.RESIZE_SCALE = [1.0, 1.0]
    cfg.NUCLEIWEAK.DATA.HFLIP_PROB = cfg.NUCLEIWEAK.DATA.VFLIP_PROB = 0.0
    cfg.NUCLEIWEAK.DATA.ROT90 = False
    mapper = NucleiWeakQu2020SegMapper(cfg, True, points_file=str(points_file))
    np.random.seed(0)
    for _ in range(20):
        vor = mapper(rec)["sem_seg"][0].numpy()
        assert vor.shape == (24, 24)
        assert (vor == 1).any()  # the crop holds a point (Voronoi label 1 at the point)


def test_crop_at_points_survives_the_random_scale_and_the_warps(tmp_path):
    """Regression: with a random scale and warps the scale and the cut are one augmentation
    (RandomScaledCrop); the mapper must still hand it the points (it once saw no
    RandomCropAtPoints in the list and cropped uniformly)."""
    rec, _ = _record(tmp_path, size=(300, 300), points=((40, 250),))
    opts = ["NUCLEIWEAK.DATA.CROP_SIZE", "[24,24]", "NUCLEIWEAK.DATA.CROP_AT_POINTS", "1.0"]
    opts += ["NUCLEIWEAK.DATA.AFFINE", "0.3", "NUCLEIWEAK.DATA.ROTATE_ANY", "True"]
    cfg = _cfg(opts + ["NUCLEIWEAK.DATA.RESIZE_SCALE", "[0.8, 1.25]"])
    mapper = NucleiWeakQu2020SegMapper(cfg, True)
    assert mapper._wants_points
    np.random.seed(0)
    hits = sum(bool((mapper(rec)["sem_seg"][0].numpy() == 1).any()) for _ in range(20))
    assert hits >= 15  # a uniform 35 px cut of the 300 px image holds the point ~1 % of the time


# ----------------------------------------------------------------- model
def _segmentor(opts=()):
    from nucleiweak_d2.engine.trainer import Trainer

    cfg = _cfg(
        ["MODEL.META_ARCHITECTURE", "NucleiWeakUNetSegmentor", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 2]
        + list(opts)
    )
    return Trainer.build_model(cfg).eval(), cfg


def test_model_normalises_its_inputs_in_eval_and_keeps_the_target_in_its_weights(tmp_path):
    from nucleiweak_d2.engine.predictor import load_trained_weights

    target = _reinhard_target()
    model, _ = _segmentor(
        ["NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "reinhard"]
        + ["NUCLEIWEAK.DATA.STAIN_NORM.TARGET", str(target)]
    )
    _, img = _record(tmp_path)
    x = {"image": torch.from_numpy(img.transpose(2, 0, 1).copy()), "height": 60, "width": 80}
    raw01 = model.preprocess([x])[1].tensor[0, :, :60, :80]
    want = StainNormalizer("reinhard", target)(img).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(raw01.numpy(), want, atol=1e-6)
    model.train()
    raw01 = model.preprocess([x])[1].tensor[0, :, :60, :80]  # training: the mapper's job
    np.testing.assert_allclose(raw01.numpy(), img.transpose(2, 0, 1) / 255.0, atol=1e-6)

    path = tmp_path / "m.pth"
    torch.save({"model": model.state_dict()}, path)
    plain, _ = _segmentor()  # a config without normalisation: the weights bring it
    load_trained_weights(plain, str(path))
    assert plain.stain_normalizer().target_list() == pytest.approx(target, abs=1e-5)
    # a checkpoint from before the buffers existed loads without normalisation
    old = {k: v for k, v in plain.state_dict().items() if not k.startswith("stain_")}
    torch.save({"model": old}, path)
    fresh, _ = _segmentor()
    load_trained_weights(fresh, str(path))
    assert fresh.stain_normalizer() is None


def test_model_without_a_fitted_target_refuses_to_predict():
    model, _ = _segmentor(["NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "macenko"])
    x = {"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "height": 32, "width": 32}
    with pytest.raises(ValueError, match="no fitted target"):
        model([x])


def test_bgr_and_rgb_inputs_are_normalised_alike(tmp_path):
    target = _reinhard_target()
    opts = ["NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "reinhard"]
    opts += ["NUCLEIWEAK.DATA.STAIN_NORM.TARGET", str(target)]
    rgb_model, _ = _segmentor(opts)
    bgr_model, _ = _segmentor(opts + ["INPUT.FORMAT", "BGR"])
    _, img = _record(tmp_path)
    rgb = rgb_model.preprocess([{"image": torch.from_numpy(img.transpose(2, 0, 1).copy())}])[1]
    bgr_img = img[:, :, ::-1].transpose(2, 0, 1).copy()
    bgr = bgr_model.preprocess([{"image": torch.from_numpy(bgr_img)}])[1]
    np.testing.assert_allclose(rgb.tensor[0].numpy(), bgr.tensor[0].numpy()[::-1], atol=1e-6)


# ----------------------------------------------------------------- pipeline
def test_pipeline_fits_the_target_on_the_training_images_once(tmp_path):
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.data.io import read_image
    from nucleiweak_d2.engine.stain import fit_stain_target

    make_tiny_coco(tmp_path, "stainfit", n_images=4, size=(64, 64))
    cfg = _cfg(
        ["DATASETS.TRAIN", "('stainfit_train',)", "NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "reinhard"]
    )
    fitted = fit_stain_target(cfg)
    assert list(cfg.NUCLEIWEAK.DATA.STAIN_NORM.TARGET) == []  # the input config is untouched
    stats = [
        reinhard_stats(read_image(r["file_name"])) for r in DatasetCatalog.get("stainfit_train")
    ]
    np.testing.assert_allclose(
        fitted.NUCLEIWEAK.DATA.STAIN_NORM.TARGET, np.mean(stats, axis=0), rtol=1e-5
    )
    assert fit_stain_target(fitted) is fitted  # already fitted: nothing to do
    assert fit_stain_target(_cfg()) is not None
    with pytest.raises(ValueError, match="no DATASETS.TRAIN"):
        fit_stain_target(
            _cfg(["DATASETS.TRAIN", "()", "NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "reinhard"])
        )


def test_every_stage_of_a_pipeline_shares_the_fitted_target(tmp_path):
    from nucleiweak_d2.methods.qu2020 import NucleiWeakQu2020Pipeline

    make_tiny_coco(tmp_path, "stainpipe", n_images=4, size=(64, 64))
    opts = ["DATASETS.TRAIN", "('stainpipe_train',)", "DATASETS.TEST", "('stainpipe_val',)"]
    opts += ["NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "reinhard", "OUTPUT_DIR", str(tmp_path / "r")]
    pipeline = NucleiWeakQu2020Pipeline(_cfg(opts))
    target = list(pipeline.cfg.NUCLEIWEAK.DATA.STAIN_NORM.TARGET)
    assert len(target) == 6
    det_cfg, _ = pipeline.det_cfg(0)
    final_cfg, trainer, _ = pipeline.final_model()
    assert list(det_cfg.NUCLEIWEAK.DATA.STAIN_NORM.TARGET) == target
    model = trainer.build_model(final_cfg)
    assert model.stain_normalizer().target_list() == pytest.approx(target, abs=1e-4)
    # --eval-only fits nothing: the weights bring the target
    again = NucleiWeakQu2020Pipeline(_cfg(opts), eval_only=True)
    assert list(again.cfg.NUCLEIWEAK.DATA.STAIN_NORM.TARGET) == []


def _float32_and_fast():
    """The same random segmentor twice: float32, and with FAST_CPU_INFERENCE; an input."""
    torch.manual_seed(0)
    model, _ = _segmentor()
    fast, _ = _segmentor(["NUCLEIWEAK.UNET.FAST_CPU_INFERENCE", "True"])
    fast.load_state_dict(model.state_dict())
    x = {"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), "height": 64, "width": 64}
    return model, fast, x


def test_fast_cpu_inference_matches_float32():
    model, fast, x = _float32_and_fast()
    ref = model([x])[0]["prob"]
    out = fast([x])[0]["prob"]
    assert out.dtype == torch.float32
    backbone, head = fast._folded_networks()
    assert backbone.stem.conv1.norm is None and backbone.stem.conv1.bias is not None
    assert backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.backbone.stem.conv1.norm is not None  # the model itself is not changed
    assert (out - ref).abs().max() < 2e-2  # bf16 rounding only
    fast.train()  # training is unaffected: float32 logits
    assert fast.logits(fast.preprocess([x])[0]).dtype == torch.float32


def test_fast_cpu_inference_follows_weight_changes():
    """The folded copy is rebuilt after an in-place change (an optimizer step, new weights)."""
    model, fast, x = _float32_and_fast()
    before = fast([x])[0]["prob"]
    with torch.no_grad():
        for m in (model, fast):
            m.sem_seg_head.predictor.bias.add_(torch.tensor([2.0, -2.0]))
            m.backbone.stem.conv1.norm.running_mean.add_(0.5)
    after = fast([x])[0]["prob"]
    assert (after - before).abs().max() > 0.1
    folded = fast._folded_networks()[0]
    fast.fg_threshold.fill_(0.3)  # a calibration changes the model's buffers, not the network
    assert fast._folded_networks()[0] is folded
    assert (after - model([x])[0]["prob"]).abs().max() < 2e-2


def test_training_images_are_decoded_and_normalised_once(tmp_path, monkeypatch):
    import nucleiweak_d2.data.mapper as mapper_module

    rec, img = _record(tmp_path)
    reads = []
    real_read = mapper_module.read_image
    monkeypatch.setattr(mapper_module, "read_image", lambda f: reads.append(f) or real_read(f))
    calls = []
    normalizer = StainNormalizer("reinhard", _reinhard_target())

    def counting(image):
        calls.append(1)
        return normalizer(image)

    mapper = NucleiWeakQu2020SegMapper(True, augmentations=[], stain_normalizer=counting)
    first = mapper(rec)["image"]
    second = mapper(rec)["image"]
    assert len(reads) == 1 and len(calls) == 1
    assert torch.equal(first, second)
    np.testing.assert_array_equal(second.numpy().transpose(1, 2, 0), normalizer(img))


def test_points_mapper_decodes_a_normalised_training_image_once(tmp_path, monkeypatch):
    import nucleiweak_d2.data.mapper as mapper_module
    from nucleiweak_d2.data.mapper import NucleiDatasetMapper

    rec, img = _record(tmp_path)
    reads = []
    real_read = mapper_module.read_image
    monkeypatch.setattr(mapper_module, "read_image", lambda f: reads.append(f) or real_read(f))
    normalizer = StainNormalizer("reinhard", _reinhard_target())
    mapper = NucleiDatasetMapper(
        True, augmentations=[], use_masks=False, stain_normalizer=normalizer
    )
    first, second = mapper(rec), mapper(rec)
    assert len(reads) == 1
    assert torch.equal(first["image"], second["image"])
    np.testing.assert_array_equal(second["image"].numpy().transpose(1, 2, 0), normalizer(img))
