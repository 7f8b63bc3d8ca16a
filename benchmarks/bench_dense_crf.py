"""Speed (and accuracy) of the dense-CRF loss on a training-sized batch.

Target: forward + backward on 8 x 224 x 224 in at most 1 s on the CPU.

    .venv/bin/python benchmarks/bench_dense_crf.py [--repeats 7] [--device cpu] [--check-size 96]

Images are random 224 crops of the MoNuSeg tiles in ``--data`` when that folder exists (their
label maps give the probability map), otherwise synthetic H&E-like images. ``--check-size``
crops are also compared with a brute-force O(N^2) evaluation (loss and gradient).
"""

import argparse
import glob
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from nucleiweak_d2.modeling.losses import BilateralGrid, dense_crf_loss

# MoNuSeg images: $NUCLEIWEAK_DATA/images, else ../shared/data/monuseg_mo/images next to the repo
DATA = os.path.join(
    os.environ.get("NUCLEIWEAK_DATA")
    or os.path.normpath(
        os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "monuseg_mo"
        )
    ),
    "images",
)


def load_batch(n, size, data, seed):
    """(image (n, 3, size, size) in [0, 1], foreground probability (n, size, size))."""
    rng = np.random.default_rng(seed)
    files = sorted(glob.glob(os.path.join(data, "*.png"))) if os.path.isdir(data) else []
    images, probs = [], []
    if files:
        from PIL import Image

        for i in range(n):
            path = files[i % len(files)]
            img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
            lab = np.asarray(Image.open(path.replace("images", "labels"))) > 0
            y, x = rng.integers(0, np.array(img.shape[:2]) - size + 1)
            images.append(torch.from_numpy(img[y : y + size, x : x + size].copy()).permute(2, 0, 1))
            probs.append(torch.from_numpy(lab[y : y + size, x : x + size].astype(np.float32)))
        source = f"MoNuSeg crops from {data}"
    else:
        gen = torch.Generator().manual_seed(seed)
        for _ in range(n):
            blobs = F.avg_pool2d(torch.rand(1, 1, size, size, generator=gen), 9, 1, 4)[0, 0]
            fg = (blobs > blobs.quantile(0.7)).float()
            pink, purple = torch.tensor([0.9, 0.6, 0.8]), torch.tensor([0.4, 0.2, 0.6])
            img = pink.view(3, 1, 1) * (1 - fg) + purple.view(3, 1, 1) * fg
            images.append((img + 0.05 * torch.randn(3, size, size, generator=gen)).clamp(0, 1))
            probs.append(fg)
        source = "synthetic H&E-like images"
    prob = torch.stack(probs)
    prob = F.avg_pool2d(prob[:, None], 5, 1, 2)[:, 0] * 0.9 + 0.05  # soft, like a network output
    return torch.stack(images), prob, source


def brute_force(image, prob, sigma_xy, sigma_rgb, chunk=2048):
    """Exact loss and gradient (float64, chunked) with the authors' normalisation, mask = all."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    losses, grads = [], []
    for img, s in zip(image.double(), prob.double()):
        feat = torch.cat([torch.stack([xs, ys]) / sigma_xy, img / sigma_rgb]).reshape(5, -1).T
        s = s.reshape(-1)
        ws, w1 = torch.empty_like(s), torch.empty_like(s)
        for i in range(0, s.numel(), chunk):
            k = torch.exp(-0.5 * torch.cdist(feat[i : i + chunk], feat) ** 2)
            ws[i : i + chunk], w1[i : i + chunk] = k @ s, k.sum(1)
        losses.append(((1 - s) * ws).sum() / s.numel())
        grads.append(((w1 - 2 * ws) / s.numel() / n).view(h, w))
    return torch.stack(losses).mean(), torch.stack(grads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--sigma-xy", type=float, default=9.0)
    parser.add_argument("--sigma-rgb", type=float, default=0.1)
    parser.add_argument("--check-size", type=int, default=96, help="0 disables the accuracy check")
    args = parser.parse_args()
    kw = {"sigma_xy": args.sigma_xy, "sigma_rgb": args.sigma_rgb}

    image, prob, source = load_batch(args.batch, args.size, args.data, seed=0)
    image, prob = image.to(args.device), prob.to(args.device)
    sync = torch.cuda.synchronize if image.is_cuda else (lambda: None)
    print(
        f"{args.batch} x {args.size} x {args.size}, {source}, device {args.device}, "
        f"threads {torch.get_num_threads()}"
    )
    grid = BilateralGrid(image, args.sigma_xy, args.sigma_rgb)
    print(
        f"grid: {grid.num_nodes} colour nodes (per image {min(grid.node_counts)}-"
        f"{max(grid.node_counts)}) x {grid.hs} x {grid.ws} spatial cells"
    )

    times = {"forward": [], "forward+backward": [], "forward+backward CPU time": []}
    for _ in range(args.repeats):
        fg = prob.clone().requires_grad_(True)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = dense_crf_loss(fg, image, **kw)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        times["forward"].append(t1 - t0)
        times["forward+backward"].append(t2 - t0)
        times["forward+backward CPU time"].append(time.process_time() - c0)
    for name, ts in times.items():
        print(
            f"{name:>26}: best {min(ts):.3f} s, median {statistics.median(ts):.3f} s "
            f"({args.repeats} runs)"
        )

    if args.check_size:
        img_c, prob_c, _ = load_batch(2, args.check_size, args.data, seed=1)
        fg = prob_c.clone().requires_grad_(True)
        loss = dense_crf_loss(fg, img_c, **kw)
        loss.backward()
        ref_loss, ref_grad = brute_force(img_c, prob_c, **kw)
        err_l = abs(loss.item() - ref_loss.item()) / ref_loss.item()
        err_g = ((fg.grad.double() - ref_grad).norm() / ref_grad.norm()).item()
        print(
            f"accuracy vs brute force on 2 x {args.check_size}^2 crops: loss {100 * err_l:.2f} %, "
            f"gradient {100 * err_g:.2f} % (relative L2)"
        )


if __name__ == "__main__":
    main()
