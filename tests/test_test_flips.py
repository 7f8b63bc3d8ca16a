"""Test-time flips (``NUCLEIWEAK.UNET.TEST_FLIPS``): the averaging itself on hand-made
functions, its wiring into the UNet segmentor and detector, and the refusals."""

import pytest
import torch

pytest.importorskip("detectron2")

from detectron2.structures import ImageList  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.modeling.meta_arch.unet import flip_averaged  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = "configs/quick/qu2020_instant_test.yaml"


def _ramp(x):
    """Not flip-equivariant: adds the column index to every pixel."""
    return x + torch.arange(x.shape[-1], dtype=x.dtype)


@pytest.mark.parametrize("flips", [1, 2, 4, 8])
def test_an_equivariant_function_is_unchanged(flips):
    x = torch.randn(2, 3, 5, 7)
    assert torch.allclose(flip_averaged(lambda t: 2 * t + 1, x, flips), 2 * x + 1, atol=1e-6)


def test_the_average_maps_each_output_back_to_the_input_frame():
    x = torch.zeros(1, 1, 3, 5)  # H 3, W 5
    assert torch.equal(flip_averaged(_ramp, x, 1), _ramp(x))
    # left-right: (j + (4 - j)) / 2 = 2 everywhere; up-down changes nothing of a column ramp
    assert torch.allclose(flip_averaged(_ramp, x, 2), torch.full_like(x, 2.0))
    assert torch.allclose(flip_averaged(_ramp, x, 4), torch.full_like(x, 2.0))
    # the 4 transposed runs add the row index instead: mean (4 / 2 + 2 / 2) / 2 = 1.5
    out = flip_averaged(_ramp, x, 8)
    assert out.shape == x.shape
    assert torch.allclose(out, torch.full_like(x, 1.5))


def test_a_bad_count_is_refused():
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        flip_averaged(_ramp, torch.zeros(1, 1, 2, 2), 3)


def _model(arch, flips, classes=2):
    from nucleiweak_d2.engine.trainer import Trainer

    cfg = setup_cfg(
        QUICK,
        [
            "MODEL.META_ARCHITECTURE",
            arch,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            classes,
            "NUCLEIWEAK.UNET.TEST_FLIPS",
            flips,
        ],
    )
    torch.manual_seed(0)
    return Trainer.build_model(cfg).eval()


def test_the_segmentor_averages_its_logits_over_the_dihedral_group():
    plain, tta = _model("NucleiWeakUNetSegmentor", 1), _model("NucleiWeakUNetSegmentor", 8)
    tta.load_state_dict(plain.state_dict())
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    images = plain.preprocess([{"image": image}])[0]
    with torch.no_grad():

        def run(t):
            return plain.logits(ImageList(t, [tuple(t.shape[-2:])]))

        expected = flip_averaged(run, images.tensor, 8)  # by hand: plain's 8 runs
        got = tta.logits(images)
        assert torch.allclose(got, expected, atol=1e-5)
        assert not torch.allclose(got, plain.logits(images), atol=1e-3)  # random net: not symmetric
        # the averaged model is equivariant: rotating the image rotates the probabilities
        prob = tta([{"image": image}])[0]["prob"]
        rotated = tta([{"image": image.rot90(1, (1, 2)).contiguous()}])[0]["prob"]
    assert torch.allclose(rotated, prob.rot90(1, (-2, -1)), atol=1e-5)


def test_training_runs_the_image_once():
    plain, tta = _model("NucleiWeakUNetSegmentor", 1), _model("NucleiWeakUNetSegmentor", 4)
    tta.load_state_dict(plain.state_dict())
    plain.train(), tta.train()
    batch = [{"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)} for _ in range(2)]
    images = plain.preprocess(batch)
    with torch.no_grad():
        torch.manual_seed(1)  # the same dropout masks
        once = plain.logits(images[0])
        torch.manual_seed(1)
        assert torch.equal(tta.logits(images[0]), once)


def test_the_point_detector_takes_flips():
    assert _model("NucleiWeakUNetPointDetector", 2, classes=1).test_flips == 2


@pytest.mark.parametrize(
    "quick, arch",
    [
        ("configs/quick/nam2023_instant_test.yaml", "NucleiWeakNam2023Net"),
        ("configs/quick/liu2022_instant_test.yaml", "NucleiWeakLiu2022EmbeddingNet"),
    ],
)
def test_models_whose_outputs_flips_change_refuse_them(quick, arch):
    from nucleiweak_d2.engine.trainer import Trainer

    cfg = setup_cfg(quick, ["MODEL.META_ARCHITECTURE", arch, "NUCLEIWEAK.UNET.TEST_FLIPS", 2])
    with pytest.raises(ValueError, match="does not support NUCLEIWEAK.UNET.TEST_FLIPS"):
        Trainer.build_model(cfg)


def test_a_bad_setting_is_refused():
    with pytest.raises(ValueError, match="TEST_FLIPS must be one of"):
        _model("NucleiWeakUNetSegmentor", 3)


def test_tiled_inference_flips_each_tile():
    """With a sliding window the flips run per tile: a tile as large as the image gives the
    whole-image result, smaller tiles a map of the same size."""
    from detectron2.structures import ImageList

    whole = _model("NucleiWeakUNetSegmentor", 8)
    image = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)
    images = whole.preprocess([{"image": image}])[0]
    with torch.no_grad():
        ref = whole.logits(images)
        whole.tile, whole.tile_overlap = 96, 0
        assert torch.allclose(whole.logits(images), ref, atol=1e-5)
        whole.tile, whole.tile_overlap = 64, 32
        tiled = whole.logits(ImageList(images.tensor, images.image_sizes))
    assert tiled.shape == ref.shape and torch.isfinite(tiled).all()
