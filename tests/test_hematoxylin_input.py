"""Optional hematoxylin input channel (NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT)."""

import numpy as np
import pytest
from conftest import TINY_UNET_OPTS

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from skimage.color import rgb2hed  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.modeling.backbone.hematoxylin import (  # noqa: E402
    H_MEAN,
    H_STD,
    hematoxylin_channel,
    hematoxylin_density,
)

BASE = "configs/Base-Nuclei-UNet.yaml"
TINY = TINY_UNET_OPTS + [
    "NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT",
    "True",
]
ARCHS = {
    "NucleiWeakUNetSegmentor": ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"],
    "NucleiWeakUNetPointDetector": ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1"],
}
BGR = [
    "INPUT.FORMAT",
    "BGR",
    "MODEL.PIXEL_MEAN",
    "[103.53, 116.28, 123.675]",
    "MODEL.PIXEL_STD",
    "[57.375, 57.12, 58.395]",
]


def _image(seed=0, size=(48, 64)):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    img[0, 0] = (0, 0, 0)
    img[0, 1] = (255, 255, 255)
    img[0, 2] = (90, 40, 140)  # a hematoxylin-like purple
    return img


def test_density_equals_skimage_rgb2hed():
    img = _image()
    want = rgb2hed(img)[..., 0]
    rgb01 = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    got = hematoxylin_density(rgb01)[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert want[0, 2] > 0.05 and got[0, 2] == pytest.approx(want[0, 2], abs=1e-4)
    # batched, standardised, and BGR input give the same values
    chan = hematoxylin_channel(rgb01[None])[0, 0].numpy()
    np.testing.assert_allclose(chan * H_STD + H_MEAN, want, atol=1e-4, rtol=0)
    bgr = hematoxylin_channel(rgb01.flip(0), "BGR")[0].numpy()
    np.testing.assert_array_equal(bgr, chan)
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        hematoxylin_channel(rgb01, "L")


def _targets(arch, h, w):
    if arch == "NucleiWeakUNetSegmentor":
        return {"sem_seg": torch.randint(0, 3, (1, h, w))}
    weight = torch.zeros(1, h, w)
    weight[..., : w // 2] = 1.0
    return {"det_target": torch.rand(1, h, w), "det_weight": weight}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_model_trains_and_predicts_with_hematoxylin(arch):
    cfg = setup_cfg(BASE, TINY + ["MODEL.META_ARCHITECTURE", arch] + ARCHS[arch])
    model = build_model(cfg)
    assert model.backbone.stem.conv1.weight.shape[1] == 4
    img = torch.from_numpy(_image()).permute(2, 0, 1).contiguous()
    h, w = img.shape[1:]
    images, raw01 = model.preprocess([{"image": img}])
    assert images.tensor.shape[1] == 4 and raw01.tensor.shape[1] == 3
    want = hematoxylin_channel(img.float() / 255.0)
    torch.testing.assert_close(images.tensor[0, 3:, :h, :w], want)

    losses = model([{"image": img, **_targets(arch, h, w)}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.stem.conv1.weight.grad[:, 3].abs().sum() > 0

    model.eval()
    out = model([{"image": img, "height": h, "width": w}])[0]
    assert out["prob"].shape == (h, w) and out["instance_map"].shape == (h, w)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_rgb_and_bgr_inputs_give_the_same_output(arch):
    opts = TINY + ["MODEL.META_ARCHITECTURE", arch] + ARCHS[arch]
    rgb_model = build_model(setup_cfg(BASE, opts)).eval()
    bgr_model = build_model(setup_cfg(BASE, opts + BGR)).eval()
    state = rgb_model.state_dict()
    stem = state["backbone.stem.conv1.weight"].clone()
    stem[:, :3] = stem[:, [2, 1, 0]]  # the same network on BGR-ordered colour channels
    state["backbone.stem.conv1.weight"] = stem
    bgr_model.load_state_dict(state)

    img = torch.from_numpy(_image(1)).permute(2, 0, 1).contiguous()
    h, w = img.shape[1:]
    with torch.no_grad():
        a = rgb_model([{"image": img, "height": h, "width": w}])[0]
        b = bgr_model([{"image": img.flip(0), "height": h, "width": w}])[0]
    torch.testing.assert_close(a["prob"], b["prob"], atol=1e-5, rtol=1e-5)


def test_imagenet_weights_with_hematoxylin_zero_init_and_bgr(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.RESNETS.DEPTH",
        "18",
        "NUCLEIWEAK.UNET.DECODER_CHANNELS",
        "[16,16,8,8,8]",
        "NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT",
        "True",
        "NUCLEIWEAK.UNET.IMAGENET_WEIGHTS",
        str(path),
    ]
    torch.manual_seed(1)
    rgb_model = build_model(setup_cfg(BASE, opts)).eval()
    torch.manual_seed(1)
    bgr_model = build_model(setup_cfg(BASE, opts + BGR)).eval()
    stem = rgb_model.backbone.stem.conv1.weight
    assert stem.shape == (64, 4, 7, 7)
    assert torch.equal(stem[:, :3], net.conv1.weight) and not stem[:, 3].any()
    bgr_stem = bgr_model.backbone.stem.conv1.weight
    assert torch.equal(bgr_stem[:, :3], net.conv1.weight.flip(1)) and not bgr_stem[:, 3].any()

    img = torch.from_numpy(_image(2)).permute(2, 0, 1).contiguous()
    with torch.no_grad():
        a = rgb_model([{"image": img}])[0]["sem_seg"]
        b = bgr_model([{"image": img.flip(0)}])[0]["sem_seg"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
