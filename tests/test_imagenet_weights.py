"""ImageNet encoders from a local torchvision ResNet .pth (NUCLEIWEAK.UNET.IMAGENET_WEIGHTS).

The checkpoints are torchvision ResNets built here with random weights (and random batch-norm
statistics), so every mapped tensor is known; the encoder's features must then equal
torchvision's on the same input.
"""

import logging

import pytest

pytest.importorskip("detectron2")
torchvision = pytest.importorskip("torchvision")

import torch  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.modeling.backbone import (  # noqa: E402
    build_nucleiweak_resnet_backbone,
    convert_torchvision_resnet,
    imagenet_weights_from_cfg,
    load_imagenet_weights,
)

BASE = "configs/Base-Nuclei-UNet.yaml"
SMALL_DECODER = ["MODEL.DEVICE", "cpu", "NUCLEIWEAK.UNET.DECODER_CHANNELS", "[16,16,8,8,8]"]


def _torchvision_resnet(depth, seed=0):
    """A torchvision ResNet with random weights and random batch-norm statistics (eval mode)."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _save(net, tmp_path, name="resnet.pth"):
    path = tmp_path / name
    torch.save(net.state_dict(), path)
    return str(path)


def _encoder(opts):
    cfg = setup_cfg(BASE, SMALL_DECODER + opts)
    return build_nucleiweak_resnet_backbone(cfg, ShapeSpec(channels=3))


def _torchvision_features(net, x):
    stem = net.relu(net.bn1(net.conv1(x)))
    out, y = {"stem": stem}, net.maxpool(stem)
    for i in range(1, 5):
        y = getattr(net, f"layer{i}")(y)
        out[f"res{i + 1}"] = y
    return out


@pytest.mark.parametrize(
    "depth, opts",
    [
        (18, ["MODEL.RESNETS.DEPTH", "18"]),
        (34, ["MODEL.RESNETS.DEPTH", "34"]),
        (
            50,
            [
                "MODEL.RESNETS.DEPTH",
                "50",
                "MODEL.RESNETS.RES2_OUT_CHANNELS",
                "256",
                "MODEL.RESNETS.STRIDE_IN_1X1",
                "False",
            ],
        ),
    ],
)
def test_mapping_gives_torchvision_features(tmp_path, depth, opts):
    net = _torchvision_resnet(depth)
    encoder = _encoder(opts)
    loaded = load_imagenet_weights(encoder, _save(net, tmp_path))
    assert set(loaded) == set(encoder.state_dict())
    ours, theirs = encoder.state_dict(), net.state_dict()
    assert torch.equal(ours["stem.conv1.weight"], theirs["conv1.weight"])
    assert torch.equal(ours["stem.conv1.norm.running_var"], theirs["bn1.running_var"])
    assert torch.equal(ours["res3.1.conv2.weight"], theirs["layer2.1.conv2.weight"])
    assert torch.equal(ours["res3.1.conv2.norm.bias"], theirs["layer2.1.bn2.bias"])
    assert torch.equal(ours["res4.0.shortcut.weight"], theirs["layer3.0.downsample.0.weight"])
    assert torch.equal(
        ours["res4.0.shortcut.norm.running_mean"], theirs["layer3.0.downsample.1.running_mean"]
    )
    encoder.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, want = encoder(x), _torchvision_features(net, x)
    for name in ("stem", "res2", "res3", "res4", "res5"):
        assert got[name].shape == want[name].shape
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)


def test_converter_renames_drops_fc_and_flips_bgr():
    sd = _torchvision_resnet(18).state_dict()
    rgb = convert_torchvision_resnet(sd)
    assert not any(k.startswith("fc") for k in rgb)
    assert torch.equal(rgb["res5.1.conv1.norm.weight"], sd["layer4.1.bn1.weight"])
    bgr = convert_torchvision_resnet(sd, input_format="BGR")
    assert torch.equal(bgr["stem.conv1.weight"], sd["conv1.weight"][:, [2, 1, 0]])


def test_full_model_loads_encoder_only(tmp_path, caplog):
    net = _torchvision_resnet(18)
    path = _save(net, tmp_path)
    cfg = setup_cfg(
        BASE,
        SMALL_DECODER + ["MODEL.RESNETS.DEPTH", "18", "NUCLEIWEAK.UNET.IMAGENET_WEIGHTS", path],
    )
    with caplog.at_level(logging.INFO, logger="nucleiweak_d2"):
        model = build_model(cfg)
    assert torch.equal(model.backbone.stem.conv1.weight, net.conv1.weight)
    assert torch.equal(model.backbone.res5[1].conv2.weight, net.layer4[1].conv2.weight)
    assert "random initialisation kept by the decoder (sem_seg_head" in caplog.text
    model.eval()
    out = model([{"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)}])[0]
    assert out["sem_seg"].shape == (2, 64, 64)

    # MODEL.WEIGHTS replaces the model later: the ImageNet file is not read (nor needed).
    cfg = setup_cfg(
        BASE,
        SMALL_DECODER
        + ["MODEL.RESNETS.DEPTH", "18", "MODEL.WEIGHTS", "trained.pth"]
        + ["NUCLEIWEAK.UNET.IMAGENET_WEIGHTS", str(tmp_path / "absent.pth")],
    )
    assert not torch.equal(build_model(cfg).backbone.stem.conv1.weight, net.conv1.weight)


def test_default_is_unchanged():
    opts = SMALL_DECODER + ["MODEL.RESNETS.DEPTH", "18"]
    cfg = setup_cfg(BASE, opts)
    assert cfg.NUCLEIWEAK.UNET.IMAGENET_WEIGHTS == ""
    assert imagenet_weights_from_cfg(cfg, None) is None


def test_refuses_wrong_depth(tmp_path):
    path = _save(_torchvision_resnet(18), tmp_path)
    with pytest.raises(ValueError, match=r"ResNet-18.*res2\.2\..*DEPTH"):
        load_imagenet_weights(_encoder(["MODEL.RESNETS.DEPTH", "34"]), path)


def test_refuses_half_width_stem(tmp_path):
    path = _save(_torchvision_resnet(18), tmp_path)
    encoder = _encoder(
        [
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "32",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "32",
        ]
    )
    before = encoder.stem.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"stem\.conv1\.weight.*\(64, 3, 7, 7\).*\(32, 3, 7, 7\)"):
        load_imagenet_weights(encoder, path)
    assert torch.equal(encoder.stem.conv1.weight, before)  # nothing partially loaded


def test_refuses_not_a_resnet_and_missing_file(tmp_path):
    squeeze = torchvision.models.squeezenet1_1(weights=None)
    path = _save(squeeze, tmp_path, "squeezenet.pth")
    encoder = _encoder(["MODEL.RESNETS.DEPTH", "18"])
    with pytest.raises(ValueError, match="not a torchvision ResNet"):
        load_imagenet_weights(encoder, path)
    sd = _torchvision_resnet(18).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="not a torchvision ResNet.*extra.weight"):
        convert_torchvision_resnet(sd)
    with pytest.raises(ValueError, match="not found"):
        load_imagenet_weights(encoder, tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_text("no checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_imagenet_weights(encoder, tmp_path / "junk.pth")


def test_refuses_wrong_normalisation_and_stride(tmp_path):
    path = _save(_torchvision_resnet(18), tmp_path)
    opts = SMALL_DECODER + ["MODEL.RESNETS.DEPTH", "18", "NUCLEIWEAK.UNET.IMAGENET_WEIGHTS", path]
    cfg = setup_cfg(BASE, opts + ["MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"])
    with pytest.raises(ValueError, match="MODEL.PIXEL_STD"):
        build_model(cfg)
    cfg = setup_cfg(BASE, opts + ["INPUT.FORMAT", "BGR"])  # RGB mean with BGR images
    with pytest.raises(ValueError, match="INPUT.FORMAT BGR"):
        build_model(cfg)
    cfg = setup_cfg(
        BASE, opts + ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.STRIDE_IN_1X1", "True"]
    )
    with pytest.raises(ValueError, match="STRIDE_IN_1X1 False"):
        imagenet_weights_from_cfg(cfg, None)


def test_convert_tool_gives_detectron2_fpn_models_the_imagenet_encoder(tmp_path):
    """tools/convert_imagenet_weights.py: a torchvision ResNet-18 file becomes a .pkl that
    Detectron2's checkpointer matches into Feng et al.'s FPN backbone (``bottom_up``)."""
    import torchvision
    from conftest import load_script
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from nucleiweak_d2.config import setup_cfg

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    src = tmp_path / "resnet18.pth"
    torch.save(reference, src)
    tool = load_script("convert_imagenet_weights", "tools/convert_imagenet_weights.py")
    dst = tmp_path / "r18.pkl"
    assert tool.main([str(src), str(dst)]) == 0
    cfg = setup_cfg(
        "configs/quick/feng2019_partial_instant_test.yaml",
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(dst)],
    )
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(dst))
    bottom_up = model.backbone.bottom_up
    assert torch.equal(bottom_up.stem.conv1.weight, reference["conv1.weight"])
    assert torch.equal(bottom_up.res3[0].conv1.weight, reference["layer2.0.conv1.weight"])
    assert torch.equal(
        bottom_up.res2[1].conv2.norm.running_var, reference["layer1.1.bn2.running_var"]
    )
    # nothing is overwritten; a missing file is one clear error
    with pytest.raises(ValueError, match="exists"):
        tool.convert(src, dst)
    with pytest.raises(ValueError, match="not found"):
        tool.convert(tmp_path / "missing.pth", tmp_path / "x.pkl")


@pytest.mark.parametrize(
    "config, opts",
    [
        ("configs/quick/feng2019_partial_instant_test.yaml", []),
        (
            "configs/quick/feng2019_baseline_instant_test.yaml",
            ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.BACKBONE.FREEZE_AT", "2"],
        ),
        ("configs/quick/wang2024_instant_test.yaml", ["MODEL.RESNETS.STEM_OUT_CHANNELS", "64"]),
    ],
)
def test_detectors_load_imagenet_weights_into_the_fpn_resnet(tmp_path, caplog, config, opts):
    import nucleiweak_d2.methods.feng2019  # noqa: F401  (registers the methods)
    import nucleiweak_d2.methods.wang2024  # noqa: F401

    net = _torchvision_resnet(18)
    path = _save(net, tmp_path)
    opts = ["MODEL.DEVICE", "cpu", *opts]
    with caplog.at_level(logging.INFO, logger="nucleiweak_d2"):
        model = build_model(setup_cfg(config, opts + ["NUCLEIWEAK.UNET.IMAGENET_WEIGHTS", path]))
    resnet = model.backbone.bottom_up
    assert torch.equal(resnet.stem.conv1.weight, net.conv1.weight)
    assert torch.equal(resnet.res5[1].conv2.weight, net.layer4[1].conv2.weight)
    assert torch.equal(
        resnet.res3[0].shortcut.norm.running_var, net.layer2[0].downsample[1].running_var
    )
    assert "ResNet tensors loaded" in caplog.text
    # without the key the ResNet is random, as before
    plain = build_model(setup_cfg(config, opts)).backbone.bottom_up
    assert not torch.equal(plain.stem.conv1.weight, net.conv1.weight)


def test_resnet_fpn_builder_is_detectron2s_without_the_key():
    from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

    from nucleiweak_d2.modeling.backbone import build_nucleiweak_resnet_fpn_backbone

    cfg = setup_cfg("configs/quick/feng2019_baseline_instant_test.yaml", ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.BACKBONE.NAME == "build_nucleiweak_resnet_fpn_backbone"
    torch.manual_seed(3)
    ours = build_nucleiweak_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).state_dict()
    torch.manual_seed(3)
    theirs = build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
