"""Quality of DoNuSeg's CAM pseudo-labels against the ground-truth masks, for a trained model.

On random crops of training images, with every nucleus clicked at its bounding-box centre (the
100 % setting), the model computes its initial label M, every encoder block's binarised
Grad-CAM (Eq. 3) and the selected pseudo-label P (Eq. 4) exactly as in a training step
(``NucleiWeakWang2024DoNuSeg.weak_losses``; batch norm in eval mode, nothing updated). For
each label, pixel counts summed over the crops give: the precision and recall of its nucleus
pixels, the share of the nucleus pixels it labels *background* (what L_dcs then teaches the
segmentation head), the share of the crop it labels nucleus, and the mean alpha. For each
block, also the area under the ROC curve of its raw (upsampled) CAM against the nucleus pixels,
which no normalisation or threshold changes (0.5: no better than chance).

    .venv/bin/python benchmarks/wang2024_cam_quality.py --run OUTPUT_DIR [--data DIR]
        [--split train] [--images 6] [--crops 2] [--size 192] [--seed 0] [--norm-window W]

``--norm-window`` replaces the model's ``NUCLEIWEAK.WANG2024.CAM.NORM_WINDOW`` (0: min-max
over the crop; odd: local maximum), to compare the scalings on one trained model.

``OUTPUT_DIR`` is a finished DoNuSeg run (its ``model_final.yaml``, or ``train/config.yaml``
with ``model_final.pth``).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

FOREGROUND, BACKGROUND = 1, 0


def data_root():
    """MoNuSeg folder: ``$NUCLEIWEAK_DATA`` or ``../shared/data/monuseg_mo`` next to the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"
    return Path(os.environ.get("NUCLEIWEAK_DATA", default))


def label_counts(label, gt):
    """Pixel counts of one pseudo-label against a ground-truth foreground.

    Parameters
    ----------
    label : numpy.ndarray
        ``(H, W)`` 0 background, 1 nucleus, 2 ignored.
    gt : numpy.ndarray
        ``(H, W)`` bool, ground-truth nucleus pixels.

    Returns
    -------
    numpy.ndarray
        ``[nucleus pixels, of them in gt, gt pixels, gt pixels labelled background, pixels]``.
    """
    fg = label == FOREGROUND
    return np.array(
        [fg.sum(), (fg & gt).sum(), gt.sum(), ((label == BACKGROUND) & gt).sum(), gt.size],
        dtype=np.int64,
    )


def summary(counts):
    """``(nucleus precision, nucleus recall, gt labelled background, crop labelled nucleus)``."""
    fg, tp, gt, gt_bg, total = (float(c) for c in counts)
    return tp / max(fg, 1.0), tp / max(gt, 1.0), gt_bg / max(gt, 1.0), fg / max(total, 1.0)


def roc_auc(score, gt):
    """Area under the ROC curve of ``score`` separating ``gt`` pixels from the others.

    The Mann-Whitney statistic with ties counted half (as ``sklearn.metrics.roc_auc_score``).
    """
    from scipy.stats import rankdata

    ranks = rankdata(np.asarray(score, dtype=np.float64).ravel())
    pos = np.asarray(gt, dtype=bool).ravel()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both nucleus and other pixels")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def cam_labels(model, image, points):
    """M, every block's binarised CAM, P and alpha of one crop, as a training step makes them.

    Parameters
    ----------
    model : NucleiWeakWang2024DoNuSeg
    image : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB crop.
    points : numpy.ndarray
        ``(N, 2)`` (x, y) pixel indices of the clicks.

    Returns
    -------
    dict
        ``"M"``, ``"P"`` ``(H, W)``, ``"binary"`` ``(K, H, W)`` uint8, ``"alpha"`` ``(K,)`` and
        ``"cams"`` ``(K, H, W)`` float, the raw CAMs upsampled bilinearly to the crop.
    """
    import torch
    from detectron2.structures import Instances
    from detectron2.utils.events import EventStorage

    h, w = image.shape[:2]
    inst = Instances((h, w))
    inst.gt_points = torch.as_tensor(np.asarray(points, dtype=np.float32) + 0.5).reshape(-1, 2)
    inst.gt_classes = torch.zeros(len(inst.gt_points), dtype=torch.int64)
    fmt = model.input_format if hasattr(model, "input_format") else "RGB"
    pixels = image if fmt == "RGB" else image[..., ::-1]
    batch = [{"image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))}]
    was_training = model.training
    model.train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.eval()  # statistics of the trained model, none updated
    try:
        images = model.preprocess_image(batch)
        feats, encoder = model._features(images.tensor)
        seg = model.seg_head([feats[f] for f in model.seg_in_features], images.tensor.shape[-2:])
        with EventStorage():
            _, labels = model.weak_losses(
                images, {**feats, **encoder}, seg, [inst.to(model.device)]
            )
    finally:
        model.train(was_training)
    size = tuple(images.tensor.shape[-2:])
    cams = [
        torch.nn.functional.interpolate(c[:1, None].float(), size=size, mode="bilinear")[0, 0]
        for c in labels["cams"]
    ]
    return {
        "cams": torch.stack(cams)[:, :h, :w].cpu().numpy(),
        "M": labels["initial_label"][0, :h, :w].cpu().numpy(),
        "P": labels["pseudo_label"][0, :h, :w].cpu().numpy(),
        "binary": labels["binary_cams"][0, :, :h, :w].cpu().numpy(),
        "alpha": labels["alpha"][0].cpu().numpy(),
    }


def load_model(run):
    """The DoNuSeg model of a finished run, on the CPU."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    import nucleiweak_d2.methods.wang2024  # noqa: F401  (registers the method)
    from nucleiweak_d2.config import setup_cfg

    run = Path(run)
    final = run / "model_final.yaml"
    cfg_file = final if final.is_file() else run / "train" / "config.yaml"
    if not cfg_file.is_file() or not (run / "model_final.pth").is_file():
        raise ValueError(f"{run} holds no finished DoNuSeg run (model_final.pth and its config)")
    cfg = setup_cfg(str(cfg_file), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(run / "model_final.pth"))
    return model, list(cfg.NUCLEIWEAK.WANG2024.CAM.BLOCKS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="OUTPUT_DIR of a finished DoNuSeg run")
    parser.add_argument("--data", default=str(data_root()))
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=6, help="first N images of the split")
    parser.add_argument("--crops", type=int, default=2, help="random crops per image")
    parser.add_argument("--size", type=int, default=192, help="crop side (the training crop)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--norm-window", type=int, default=None, help="CAM scaling window (default: the model's)"
    )
    args = parser.parse_args(argv)
    import torch

    from nucleiweak_d2.data.io import read_image, read_label
    from nucleiweak_d2.data.points import points_from_labels

    root = Path(args.data)
    if not (root / "split.json").is_file():
        print(f"no dataset at {root}; nothing to do")
        return 0
    torch.set_num_threads(1)
    model, blocks = load_model(args.run)
    if args.norm_window is not None:
        model.cam_norm_window = int(args.norm_window)
    names = json.loads((root / "split.json").read_text())[args.split][: args.images]
    rng = np.random.default_rng(args.seed)
    kinds = ["M", "P", *blocks]
    counts = {k: np.zeros(5, dtype=np.int64) for k in kinds}
    alphas, t0 = {k: [] for k in ["P", *blocks]}, time.perf_counter()
    aucs = {k: [] for k in blocks}
    for name in names:
        image = read_image(root / "images" / f"{name}.png")
        inst = read_label(root / "labels" / f"{name}.png")
        h, w = inst.shape
        for _ in range(args.crops):
            y, x = rng.integers(0, h - args.size + 1), rng.integers(0, w - args.size + 1)
            crop = inst[y : y + args.size, x : x + args.size]
            points = points_from_labels(crop, mode="bbox_center")[1]
            out = cam_labels(model, image[y : y + args.size, x : x + args.size], points)
            gt = crop > 0
            counts["M"] += label_counts(out["M"], gt)
            counts["P"] += label_counts(out["P"], gt)
            alphas["P"].append(float(out["alpha"].max()))
            for k, block in enumerate(blocks):
                counts[block] += label_counts(out["binary"][k], gt)
                alphas[block].append(float(out["alpha"][k]))
                if gt.any() and not gt.all():
                    aucs[block].append(roc_auc(out["cams"][k], gt))
    n = len(names) * args.crops
    print(
        f"{root.name} {args.split}: {n} crops of {args.size}² from {len(names)} images, 100 % "
        f"bbox-centre points, run {args.run}, CAM scaling window "
        f"{model.cam_norm_window or 'none (min-max)'}, {time.perf_counter() - t0:.1f} s"
    )
    print(
        f"{'label':<8}{'nucleus prec':>13}{'nucleus rec':>12}{'gt as bg':>10}"
        f"{'crop fg':>9}{'alpha':>8}{'CAM AUC':>9}"
    )
    for kind in kinds:
        prec, rec, as_bg, fg = summary(counts[kind])
        alpha = f"{np.mean(alphas[kind]):>8.3f}" if kind in alphas else f"{'':>8}"
        auc = f"{np.mean(aucs[kind]):>9.3f}" if aucs.get(kind) else ""
        print(f"{kind:<8}{prec:>13.3f}{rec:>12.3f}{as_bg:>10.3f}{fg:>9.3f}{alpha}{auc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
