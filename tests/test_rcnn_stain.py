"""Inference-time stain normalisation of the Mask R-CNN meta-architectures (NucleiWeakStainRCNN,
the base of Feng et al.'s model and its baselines), and the trainer's refusal of a model that
cannot normalise its test images."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("detectron2")

from detectron2.modeling import build_model  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.data.stain import StainNormalizer  # noqa: E402
from nucleiweak_d2.modeling.meta_arch import model_normalises_stains  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PARTIAL = CONFIGS / "quick" / "feng2019_partial_instant_test.yaml"
BASELINE = CONFIGS / "quick" / "feng2019_baseline_instant_test.yaml"
TARGET = [60.0, 20.0, -15.0, 12.0, 6.0, 5.0]  # Reinhard: L, a, b means and stds
REINHARD = ["NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "reinhard"]
REINHARD += ["NUCLEIWEAK.DATA.STAIN_NORM.TARGET", str(TARGET)]
BASELINE_ARCH = ["MODEL.META_ARCHITECTURE", "NucleiWeakFeng2019BaselineRCNN"]


def _model(config, opts=()):
    arch = BASELINE_ARCH if config == BASELINE else []
    cfg = setup_cfg(str(config), ["MODEL.DEVICE", "cpu", *arch, *opts])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _image(h=48, w=64):
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(200, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img[10:20, 12:24] = (110, 50, 150)
    return img


def _chw(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def test_eval_inputs_are_normalised_and_training_inputs_are_not():
    model = _model(BASELINE, REINHARD)
    img = _image()
    inputs = [{"image": _chw(img), "height": 48, "width": 64}]
    want = StainNormalizer("reinhard", TARGET)(img).transpose(2, 0, 1).astype(np.float32)
    mean, std = model.pixel_mean.numpy(), model.pixel_std.numpy()
    got = model.preprocess_image(inputs).tensor[0, :, :48, :64].numpy()
    np.testing.assert_allclose(got, (want - mean) / std, atol=1e-5)
    model.train()  # training: the mapper normalised the whole image already
    got = model.preprocess_image(inputs).tensor[0, :, :48, :64].numpy()
    np.testing.assert_allclose(got, (img.transpose(2, 0, 1) - mean) / std, atol=1e-5)


def test_bgr_inputs_are_normalised_like_rgb():
    rgb_model = _model(BASELINE, REINHARD)
    bgr_model = _model(BASELINE, REINHARD + ["INPUT.FORMAT", "BGR"])
    img = _image()
    rgb = rgb_model.preprocess_image([{"image": _chw(img)}]).tensor[0, :, :48, :64].numpy()
    bgr = bgr_model.preprocess_image([{"image": _chw(img[:, :, ::-1])}])
    bgr = bgr.tensor[0, :, :48, :64].numpy()
    # each model subtracts its own PIXEL_MEAN order: compare the de-standardised images
    rgb = rgb * rgb_model.pixel_std.numpy() + rgb_model.pixel_mean.numpy()
    bgr = bgr * bgr_model.pixel_std.numpy() + bgr_model.pixel_mean.numpy()
    np.testing.assert_allclose(rgb, bgr[::-1], atol=1e-4)


def test_feng_model_on_raw_images_equals_the_plain_model_on_normalised_ones(tmp_path):
    """The whole inference (proposals, pseudo-box proposals, masks) sees normalised colours,
    and the checkpoint brings the target to a model built without normalisation."""
    from nucleiweak_d2.engine.predictor import load_trained_weights

    model = _model(PARTIAL, REINHARD)
    plain = _model(PARTIAL)
    weights = {k: v for k, v in model.state_dict().items() if "stain" not in k}
    plain.load_state_dict(weights, strict=False)
    assert plain.stain_normalizer() is None and model.stain_normalizer() is not None
    img = _image()
    normalised = StainNormalizer("reinhard", TARGET)(img)
    with torch.no_grad():
        (out,) = model([{"image": _chw(img), "height": 48, "width": 64}])
        (want,) = plain([{"image": _chw(normalised), "height": 48, "width": 64}])
        boxes = model.pseudo_boxes([{"image": _chw(img)}], [0.0])[0.0][0]
        want_boxes = plain.pseudo_boxes([{"image": _chw(normalised)}], [0.0])[0.0][0]
    out, want = out["instances"], want["instances"]
    assert len(out) == len(want)
    torch.testing.assert_close(out.scores, want.scores)
    torch.testing.assert_close(out.pred_boxes.tensor, want.pred_boxes.tensor)
    torch.testing.assert_close(boxes.pred_boxes.tensor, want_boxes.pred_boxes.tensor)
    with torch.no_grad():
        (raw,) = plain([{"image": _chw(img), "height": 48, "width": 64}])
    assert not torch.equal(raw["instances"].scores, want.scores)  # the colours matter

    path = tmp_path / "m.pth"
    torch.save({"model": model.state_dict()}, path)
    load_trained_weights(plain, str(path))
    assert plain.stain_normalizer().target_list() == pytest.approx(TARGET, abs=1e-5)


def test_unfitted_target_is_refused_at_inference():
    model = _model(BASELINE, ["NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "macenko"])
    with pytest.raises(ValueError, match="no fitted target"):
        model([{"image": _chw(_image()), "height": 48, "width": 64}])


def test_trainer_refuses_stain_normalisation_for_a_model_that_cannot_apply_it():
    from nucleiweak_d2.engine.trainer import Trainer

    opts = ["MODEL.DEVICE", "cpu", "MODEL.META_ARCHITECTURE", "GeneralizedRCNN"]
    cfg = setup_cfg(str(BASELINE), opts + REINHARD)
    with pytest.raises(ValueError, match="cannot normalise its test images"):
        Trainer.build_model(cfg)
    cfg = setup_cfg(str(BASELINE), ["MODEL.DEVICE", "cpu", *BASELINE_ARCH, *REINHARD])
    model = Trainer.build_model(cfg)
    assert model_normalises_stains(model)
    plain = Trainer.build_model(setup_cfg(str(BASELINE), opts))  # no normalisation: fine
    assert not model_normalises_stains(plain)
