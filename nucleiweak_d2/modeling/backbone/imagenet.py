"""ImageNet initialisation of the encoder from a local torchvision ResNet ``.pth``.

Nothing is downloaded: the user gives the path of torchvision's own file (``resnet18-*.pth``,
``resnet34-*.pth``, ``resnet50-*.pth``, ...: a plain state dict with torchvision's names
``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``) in ``NUCLEIWEAK.UNET.IMAGENET_WEIGHTS``.
:func:`convert_torchvision_resnet` renames it into the names of
:class:`~.resnet_encoder.NucleiWeakResNet` (Detectron2's ResNet: ``stem.conv1``,
``stem.conv1.norm``, ``res2.0.conv1``, ``res2.0.conv1.norm``, ``res2.0.shortcut``, ...) and
:func:`load_imagenet_weights` loads it into the encoder only; the UNet decoder keeps its random
initialisation.

What the config must say
------------------------
torchvision's ResNets were trained on RGB images in [0, 1] normalised with the ImageNet mean
``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``. Our models take 0..255 images in
``INPUT.FORMAT`` order and subtract ``MODEL.PIXEL_MEAN`` / divide by ``MODEL.PIXEL_STD``, so:

- ``INPUT.FORMAT: "RGB"``, ``MODEL.PIXEL_MEAN: [123.675, 116.28, 103.53]``,
  ``MODEL.PIXEL_STD: [58.395, 57.12, 57.375]`` (``configs/Base-Nuclei-UNet.yaml`` already says
  this); or
- ``INPUT.FORMAT: "BGR"`` with both lists reversed; the stem's input channels are then reversed
  too, so the pretrained filters still see the colours they were trained on.

:func:`check_imagenet_normalisation` refuses anything else. The encoder must have torchvision's
widths (``MODEL.RESNETS.STEM_OUT_CHANNELS`` 64, ``RES2_OUT_CHANNELS`` 64 for R18/R34 or 256 for
R50/R101/R152, ``NUM_GROUPS`` 1, ``WIDTH_PER_GROUP`` 64), its depth, and for bottleneck ResNets
``STRIDE_IN_1X1: False`` (torchvision strides in the 3x3 convolution); the half-width CPU
configs (``STEM_OUT_CHANNELS: 32``) are refused, not partially loaded.

When the encoder takes more input channels than the checkpoint's three (the hematoxylin
channel, ``NUCLEIWEAK.UNET.HEMATOXYLIN_INPUT``), the stem convolution's weights of the extra
channels are set to zero: at initialisation the network computes exactly the pretrained
features of the RGB channels, and training learns how to use the extra channel.
"""

import logging
import os
import re
from collections.abc import Mapping

import torch

__all__ = [
    "IMAGENET_PIXEL_MEAN_RGB",
    "IMAGENET_PIXEL_STD_RGB",
    "check_imagenet_normalisation",
    "convert_torchvision_resnet",
    "imagenet_weights_from_cfg",
    "imagenet_weights_into_backbone",
    "load_imagenet_weights",
]

logger = logging.getLogger(__name__)

# torchvision's ImageNet normalisation, for images in 0..255 (RGB order).
IMAGENET_PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_PIXEL_STD_RGB = (58.395, 57.12, 57.375)

_ARCHS = {
    ("BasicBlock", (2, 2, 2, 2)): 18,
    ("BasicBlock", (3, 4, 6, 3)): 34,
    ("Bottleneck", (3, 4, 6, 3)): 50,
    ("Bottleneck", (3, 4, 23, 3)): 101,
    ("Bottleneck", (3, 8, 36, 3)): 152,
}
_STEM_RE = re.compile(r"^(conv1|bn1)\.(\w+)$")
_BLOCK_RE = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(\w+)$")


def _rename(key):
    """Our encoder's name of torchvision key ``key``; ``None`` for the classifier (``fc``)."""
    if key.startswith("fc."):
        return None
    m = _STEM_RE.match(key)
    if m:
        layer, param = m.groups()
        return "stem.conv1." + param if layer == "conv1" else "stem.conv1.norm." + param
    m = _BLOCK_RE.match(key)
    if not m:
        raise ValueError(
            f"not a torchvision ResNet state dict: unexpected key {key!r} (expected conv1, bn1, "
            "layer1..4.<i>.conv*/bn*/downsample.*, fc)"
        )
    stage, block, layer, param = m.groups()
    prefix = f"res{int(stage) + 1}.{block}."
    if layer == "downsample.0":
        return prefix + "shortcut." + param
    if layer == "downsample.1":
        return prefix + "shortcut.norm." + param
    if layer.startswith("conv"):
        return prefix + layer + "." + param
    return prefix + "conv" + layer[2:] + ".norm." + param


def _architecture(state_dict):
    """``"ResNet-<depth>"`` of a torchvision state dict (or a description of an unknown one)."""
    block = "Bottleneck" if "layer1.0.conv3.weight" in state_dict else "BasicBlock"
    counts = []
    for stage in range(1, 5):
        ids = {int(k.split(".")[1]) for k in state_dict if k.startswith(f"layer{stage}.")}
        counts.append(len(ids))
    depth = _ARCHS.get((block, tuple(counts)))
    return f"ResNet-{depth}" if depth else f"ResNet of {block}s {counts}"


def convert_torchvision_resnet(state_dict, target_state_dict=None, *, input_format="RGB"):
    """Rename a torchvision ResNet state dict into :class:`NucleiWeakResNet` names.

    ``fc.*`` (the ImageNet classifier) is dropped; batch-norm ``weight``, ``bias``,
    ``running_mean``, ``running_var`` (and ``num_batches_tracked`` where the target has it) are
    mapped to ``<conv>.norm.*``; ``layerK`` becomes ``res{K+1}`` and ``downsample.0/1`` becomes
    ``shortcut`` / ``shortcut.norm``.

    Parameters
    ----------
    state_dict : Mapping[str, torch.Tensor]
        torchvision ``resnet{18,34,50,101,152}`` state dict (``torch.load`` of its ``.pth``).
    target_state_dict : Mapping[str, torch.Tensor], optional
        The encoder's ``state_dict()``. When given, the result is checked against it and has
        exactly its keys: stages the encoder does not build (e.g. ``res5`` when
        ``OUT_FEATURES`` stops at ``res4``) are dropped, every encoder key must be provided
        with its shape, and extra input channels of ``stem.conv1.weight`` (beyond the
        checkpoint's three) are zero-initialised.
    input_format : str
        ``"RGB"`` or ``"BGR"``: the channel order of the model's input. With ``"BGR"`` the
        stem convolution's three colour input channels are reversed.

    Returns
    -------
    dict[str, torch.Tensor]

    Raises
    ------
    ValueError
        (one line) not a torchvision ResNet state dict; a depth, width or key set that does not
        match ``target_state_dict`` (the first mismatching key, with both shapes).
    """
    if input_format not in ("RGB", "BGR"):
        raise ValueError(f"ImageNet weights need INPUT.FORMAT 'RGB' or 'BGR', got {input_format!r}")
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise ValueError("not a torchvision ResNet state dict: expected a dict of tensors")
    for needed in ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight"):
        if needed not in state_dict:
            first = ", ".join(list(state_dict)[:3]) or "none"
            raise ValueError(
                f"not a torchvision ResNet state dict: no {needed!r} (first keys: {first})"
            )
    arch = _architecture(state_dict)

    converted, source = {}, {}
    for key, value in state_dict.items():
        name = _rename(key)
        if name is not None:
            converted[name], source[name] = value, key
    stem = converted["stem.conv1.weight"]
    if stem.dim() != 4 or stem.shape[1] != 3:
        raise ValueError(
            f"not an RGB torchvision ResNet: conv1.weight has shape {tuple(stem.shape)}"
        )
    if input_format == "BGR":
        converted["stem.conv1.weight"] = stem.flip(1)
    if target_state_dict is None:
        return converted

    built_stages = {k.split(".")[0] for k in target_state_dict}
    result = {}
    for name, value in converted.items():
        if name.split(".")[0] not in built_stages and name.startswith("res"):
            continue  # a stage the encoder does not build
        if name.endswith("num_batches_tracked") and name not in target_state_dict:
            continue  # FrozenBN keeps no counter
        if name not in target_state_dict:
            hint = (
                " (MODEL.RESNETS.NORM has no running statistics: use BN, SyncBN or FrozenBN)"
                if name.endswith(("running_mean", "running_var"))
                else " (MODEL.RESNETS.DEPTH does not match?)"
            )
            raise ValueError(
                f"ImageNet weights ({arch}) do not fit the encoder: checkpoint key "
                f"{source[name]!r} -> {name!r} is not in the encoder{hint}"
            )
        result[name] = value
    for name, target in target_state_dict.items():
        if name not in result:
            raise ValueError(
                f"ImageNet weights ({arch}) do not fit the encoder: encoder key {name!r} is not "
                "in the checkpoint (MODEL.RESNETS.DEPTH does not match?)"
            )
        value = result[name]
        if tuple(value.shape) == tuple(target.shape):
            continue
        if (
            name == "stem.conv1.weight"
            and target.dim() == 4
            and target.shape[1] > value.shape[1]
            and (target.shape[0], *target.shape[2:]) == (value.shape[0], *value.shape[2:])
        ):
            padded = value.new_zeros(target.shape)
            padded[:, : value.shape[1]] = value
            result[name] = padded
            continue
        raise ValueError(
            f"ImageNet weights ({arch}) do not fit the encoder: {name!r} (checkpoint "
            f"{source[name]!r}) has shape {tuple(value.shape)} in the checkpoint and "
            f"{tuple(target.shape)} in the encoder; torchvision ResNets need "
            "MODEL.RESNETS.STEM_OUT_CHANNELS 64, RES2_OUT_CHANNELS 64 (R18/R34) or 256 "
            "(R50+), NUM_GROUPS 1, WIDTH_PER_GROUP 64 and the checkpoint's DEPTH"
        )
    return {name: result[name] for name in target_state_dict}


def _read_state_dict(path):
    if not os.path.isfile(path):
        raise ValueError(f"NUCLEIWEAK.UNET.IMAGENET_WEIGHTS file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - reported in one line
        raise ValueError(
            f"cannot read NUCLEIWEAK.UNET.IMAGENET_WEIGHTS {path}: {type(exc).__name__}: {exc}"
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    return obj


def load_imagenet_weights(encoder, path, *, input_format="RGB"):
    """Load a torchvision ResNet ``.pth`` into ``encoder`` (every encoder key, strictly).

    Parameters
    ----------
    encoder : torch.nn.Module
        A :class:`~.resnet_encoder.NucleiWeakResNet` (or Detectron2 ``ResNet``).
    path : str
        Local torchvision ResNet ``.pth`` (a plain state dict; ``{"state_dict": ...}`` is
        unwrapped).
    input_format : str
        ``"RGB"`` or ``"BGR"``, see :func:`convert_torchvision_resnet`.

    Returns
    -------
    list[str]
        The encoder keys loaded (all of them).

    Raises
    ------
    ValueError
        Missing or unreadable file, or a checkpoint that does not fit (see
        :func:`convert_torchvision_resnet`).
    """
    path = str(path)
    state_dict = _read_state_dict(path)
    converted = convert_torchvision_resnet(
        state_dict, encoder.state_dict(), input_format=input_format
    )
    encoder.load_state_dict(converted, strict=True)
    return list(converted)


def check_imagenet_normalisation(pixel_mean, pixel_std, input_format):
    """Refuse a normalisation other than torchvision's ImageNet one (in ``input_format`` order).

    Raises
    ------
    ValueError
        ``input_format`` not RGB/BGR, or ``pixel_mean`` / ``pixel_std`` not the ImageNet
        statistics in 0..255 in that order (the message gives the values to set).
    """
    if input_format not in ("RGB", "BGR"):
        raise ValueError(f"ImageNet weights need INPUT.FORMAT 'RGB' or 'BGR', got {input_format!r}")
    order = slice(None) if input_format == "RGB" else slice(None, None, -1)
    mean = list(IMAGENET_PIXEL_MEAN_RGB[order])
    std = list(IMAGENET_PIXEL_STD_RGB[order])
    given_mean, given_std = [float(v) for v in pixel_mean], [float(v) for v in pixel_std]
    ok = (
        len(given_mean) == 3
        and len(given_std) == 3
        and all(abs(a - b) < 0.01 for a, b in zip(given_mean + given_std, mean + std))
    )
    if not ok:
        raise ValueError(
            f"ImageNet weights expect, for INPUT.FORMAT {input_format}, MODEL.PIXEL_MEAN {mean} "
            f"and MODEL.PIXEL_STD {std}; got {given_mean} and {given_std}"
        )


def imagenet_weights_from_cfg(cfg, encoder):
    """Apply ``cfg.NUCLEIWEAK.UNET.IMAGENET_WEIGHTS`` to a freshly built ``encoder``.

    Nothing happens when the key is empty, or when ``MODEL.WEIGHTS`` is set (that checkpoint
    replaces the whole model after building, e.g. in the predictor or a later pipeline stage,
    so the ImageNet file need not exist there). Otherwise the normalisation
    (:func:`check_imagenet_normalisation`) and, for bottleneck ResNets,
    ``MODEL.RESNETS.STRIDE_IN_1X1 = False`` are checked and the file is loaded with
    :func:`load_imagenet_weights`.

    Returns
    -------
    list[str] or None
        The encoder keys loaded; ``None`` when nothing was loaded.
    """
    path = str(cfg.NUCLEIWEAK.UNET.IMAGENET_WEIGHTS or "")
    if not path:
        return None
    if str(cfg.MODEL.WEIGHTS or ""):
        logger.info(
            "NUCLEIWEAK.UNET.IMAGENET_WEIGHTS not loaded: MODEL.WEIGHTS (%s) replaces the model",
            cfg.MODEL.WEIGHTS,
        )
        return None
    check_imagenet_normalisation(cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.FORMAT)
    if cfg.MODEL.RESNETS.DEPTH >= 50 and cfg.MODEL.RESNETS.STRIDE_IN_1X1:
        raise ValueError(
            "ImageNet weights of a torchvision bottleneck ResNet stride in the 3x3 convolution: "
            "set MODEL.RESNETS.STRIDE_IN_1X1 False"
        )
    return load_imagenet_weights(encoder, path, input_format=cfg.INPUT.FORMAT)


def imagenet_weights_into_backbone(cfg, backbone):
    """:func:`imagenet_weights_from_cfg` for a Detectron2 detector's backbone.

    The ResNet of an FPN backbone is its ``bottom_up``; any other backbone is taken as the
    ResNet itself. Used by the detectors' backbone builders (Mask R-CNN, FCOS), whose FPN and
    heads keep their random initialisation.

    Returns
    -------
    list[str] or None
        The ResNet keys loaded; ``None`` when nothing was loaded.
    """
    encoder = getattr(backbone, "bottom_up", backbone)
    loaded = imagenet_weights_from_cfg(cfg, encoder)
    if loaded is not None:
        logger.info(
            "ImageNet weights %s: %d ResNet tensors loaded into %s; the FPN and the heads keep "
            "their random initialisation",
            cfg.NUCLEIWEAK.UNET.IMAGENET_WEIGHTS,
            len(loaded),
            type(encoder).__name__,
        )
    return loaded
