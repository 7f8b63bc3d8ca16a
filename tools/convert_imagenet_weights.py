"""Convert a local torchvision ImageNet ResNet ``.pth`` into a Detectron2 ``.pkl`` for
``MODEL.WEIGHTS`` of the Detectron2-backbone methods (Feng et al.'s Mask R-CNN with FPN).

The UNet methods read the torchvision file directly (``NUCLEIWEAK.UNET.IMAGENET_WEIGHTS``).
Detectron2's FPN backbone names the same tensors ``backbone.bottom_up.res2.0.conv1.weight`` etc.;
this tool writes the encoder under Detectron2's ResNet names (``stem.conv1``, ``res2.0.conv1``,
``<conv>.norm``), flagged ``matching_heuristics`` so that ``DetectionCheckpointer`` matches them
to ``backbone.bottom_up.*`` by suffix, as it does for its own ImageNet models. Set
``MODEL.PIXEL_MEAN [123.675, 116.28, 103.53]``, ``MODEL.PIXEL_STD [58.395, 57.12, 57.375]`` and
``INPUT.FORMAT RGB`` (or ``--format BGR`` with both lists reversed), the torchvision widths
(``MODEL.RESNETS.RES2_OUT_CHANNELS`` 64 for R18/R34, 256 for R50) and, for R50 and deeper,
``MODEL.RESNETS.STRIDE_IN_1X1 False``.

    .venv/bin/python tools/convert_imagenet_weights.py resnet18-f37072fd.pth r18_d2.pkl
"""

import argparse
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nucleiweak_d2.cli import run_cli  # noqa: E402


def convert(src, dst, input_format="RGB"):
    """Write the Detectron2 ``.pkl`` of torchvision file ``src`` to ``dst``; return its keys.

    Raises
    ------
    ValueError
        Missing or unreadable ``src``, not a torchvision ResNet, or ``dst`` already exists.
    """
    import torch

    from nucleiweak_d2.modeling.backbone.imagenet import convert_torchvision_resnet

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ValueError(f"torchvision weights not found: {src}")
    if dst.exists():
        raise ValueError(f"{dst} exists; choose another output file (nothing is overwritten)")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any reader error becomes one line)
        raise ValueError(f"cannot read {src}: {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    converted = convert_torchvision_resnet(state, input_format=input_format)
    model = {k: v.detach().cpu().numpy() for k, v in converted.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as f:
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, f)
    return sorted(model)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="torchvision resnet*.pth (a state dict)")
    parser.add_argument("dst", help="output .pkl for MODEL.WEIGHTS")
    parser.add_argument("--format", default="RGB", choices=("RGB", "BGR"), help="INPUT.FORMAT")
    args = parser.parse_args(argv)
    keys = convert(args.src, args.dst, args.format)
    print(f"wrote {args.dst}: {len(keys)} encoder tensors (Detectron2 ResNet names)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
