"""Speed and agreement of our mean-shift (``methods/liu2022/grouping.py``) with scikit-learn's.

Target: the same grouping as ``sklearn.cluster.MeanShift(bandwidth=1.5)`` (adjusted Rand index
>= 0.98 on the same points) at least 10x faster, on one CPU thread each (scikit-learn's
MeanShift runs on one core by default).

    .venv/bin/python benchmarks/bench_grouping.py                      # tiny IEN trained here
    .venv/bin/python benchmarks/bench_grouping.py --config configs/liu2022/R18_monuseg_cpu.yaml \
        --weights output/liu2022/model_final.pth --image datasets/monuseg_mo/images/<name>.png
    .venv/bin/python benchmarks/bench_grouping.py --config configs/liu2022/R18_monuseg_cpu.yaml \
        --weights output/liu2022/model_final.pth --data datasets/monuseg_mo --split val

With ``--data``, every image of the split goes through the whole inference and is grouped both
ways: the grouping times, the AJI of each and their adjusted Rand index on the foreground
(target: equal val AJI within 0.005).

Two kinds of points:

- **Trained IEN embeddings.** With ``--weights`` (a final SPN + IEN model) and ``--image``, the
  foreground (SPN probability > T_0, cleaned) of the first ``--tiles`` grouping tiles of the
  image, as the inference groups them. Without, a small IEN (narrow ResNet-18, D = 16) is
  trained here for ``--train-iters`` iterations on synthetic H&E tiles with their true
  instances (discriminative loss, CoordConv), and the foreground of a held-out tile is
  grouped in ``--tile``-sized tiles.
- **Synthetic points**: what a well-trained IEN aims at on a synthetic tile (one embedding
  centre per true nucleus, noise, a rim of pixels between nucleus and background), and
  Gaussian blobs in 16-D (clusters of 10-500 points, spreads 0.15 and 0.3 around centres drawn
  with std 3).
"""

import argparse
import statistics
import time

import numpy as np
import torch

from nucleiweak_d2.methods.liu2022.grouping import mean_shift


def compare(name, x, bandwidth, repeats):
    """Time scikit-learn once and ours ``repeats`` times (median); print one row."""
    from sklearn.cluster import MeanShift
    from sklearn.metrics import adjusted_rand_score

    t = time.perf_counter()
    ref = MeanShift(bandwidth=bandwidth).fit(x)
    t_ref = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        labels, centres = mean_shift(x, bandwidth)
        times.append(time.perf_counter() - t)
    t_ours = statistics.median(times)
    ari = adjusted_rand_score(ref.labels_, labels)
    print(
        f"| {name} | {len(x)} | {len(ref.cluster_centers_)} / {len(centres)} | {t_ref:.2f} | "
        f"{t_ours:.3f} | {t_ref / t_ours:.0f}x | {ari:.4f} |",
        flush=True,
    )
    return t_ref, t_ours, ari


def blob_sets(seed=0, n=4000, dim=16):
    rng = np.random.default_rng(seed)
    for n_clusters, std in ((30, 0.15), (30, 0.3)):
        centres = rng.normal(size=(n_clusters, dim)) * 3
        sizes = rng.integers(10, 500, n_clusters)
        sizes = np.maximum((sizes / sizes.sum() * n).astype(int), 3)
        x = np.concatenate([c + rng.normal(size=(s, dim)) * std for c, s in zip(centres, sizes)])
        yield f"blobs K={n_clusters} std={std}", x.astype(np.float32)


def ideal_embeddings(size=160, seed=0, dim=16):
    """What a well-trained IEN aims at, on a synthetic tile's true instances: one centre per
    nucleus (std 2 per dimension), noise 0.15, and a 2-pixel rim outside every nucleus (pixels
    a low T_0 adds to the foreground) whose embeddings lie between the nucleus' centre and a
    background centre."""
    from scipy import ndimage as ndi

    from nucleiweak_d2.data.synthetic import synthesize_image

    rng = np.random.default_rng(seed)
    _, lab = synthesize_image((size, size), seed=(seed, 7))
    centres = rng.normal(size=(lab.max() + 1, dim)) * 2.0
    centres[0] = rng.normal(size=dim) * 2.0  # background
    near = ndi.grey_dilation(lab, size=5)
    rim = (lab == 0) & (near > 0)
    t = rng.uniform(0, 1, size=lab.shape)[..., None]
    emb = np.where(rim[..., None], t * centres[near] + (1 - t) * centres[0], centres[lab])
    emb = emb + rng.normal(size=emb.shape) * 0.15
    fg = (lab > 0) | rim
    return [
        (f"ideal IEN-like {size}x{size} ({lab.max()} nuclei + rim)", emb[fg].astype(np.float32))
    ]


def _tiny_ien(embed_dim):
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.methods.liu2022 import NucleiWeakLiu2022EmbeddingNet

    cfg = setup_cfg(
        "configs/liu2022/Base-Liu2022.yaml",
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "16",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "16",
            "NUCLEIWEAK.UNET.DECODER_CHANNELS",
            "[64, 32, 32, 16, 16]",
            "NUCLEIWEAK.LIU2022.IEN.EMBED_DIM",
            str(embed_dim),
        ],
    )
    return NucleiWeakLiu2022EmbeddingNet(cfg)


def trained_synthetic_embeddings(iters, tile, size=224, crop=96, batch=4, seed=0):
    """Train a small IEN on synthetic tiles (true instances); foreground embeddings of the
    grouping tiles of a held-out tile, as a list of ``(name, points)``."""
    from nucleiweak_d2.data.synthetic import synthesize_image
    from nucleiweak_d2.methods.liu2022.coords import coordinate_grid
    from nucleiweak_d2.methods.liu2022.instances import tile_edges

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = [synthesize_image((size, size), seed=(seed, i)) for i in range(8)]
    grid = coordinate_grid(size, size)
    model = _tiny_ien(16)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    t = time.perf_counter()
    for it in range(iters):
        inputs = []
        for _ in range(batch):
            img, lab = train[rng.integers(len(train))]
            y, x = rng.integers(0, size - crop + 1, 2)
            sl = (slice(y, y + crop), slice(x, x + crop))
            ins = np.where(lab[sl] > 0, lab[sl] + 1, 1)  # 1 background, 2.. instances
            inputs.append(
                {
                    "image": torch.as_tensor(img[sl].transpose(2, 0, 1).copy()),
                    "ins_seg": torch.as_tensor(ins.astype(np.int64)),
                    "coords": torch.as_tensor(grid[sl].transpose(2, 0, 1).copy()),
                }
            )
        loss = sum(model(inputs).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (it + 1) % max(iters // 5, 1) == 0:
            print(f"  IEN iteration {it + 1}/{iters}: loss {loss.item():.3f}", flush=True)
    print(f"  trained in {time.perf_counter() - t:.0f} s", flush=True)
    model.eval()
    img, lab = synthesize_image((size, size), seed=(seed, 99))
    with torch.no_grad():
        emb = model([{"image": torch.as_tensor(img.transpose(2, 0, 1).copy())}])[0]["embedding"]
    sets = []
    ye, xe = tile_edges(size, tile), tile_edges(size, tile)
    for y0, y1 in zip(ye[:-1], ye[1:]):
        for x0, x1 in zip(xe[:-1], xe[1:]):
            fg = torch.as_tensor(lab[y0:y1, x0:x1] > 0)
            sets.append((f"IEN synthetic tile ({y0},{x0})", emb[:, y0:y1, x0:x1][:, fg].T.numpy()))
    return sets


def load_trained_model(config, weights, t0=None, bg_rule=None):
    """The trained SPN + IEN model of ``weights`` (CPU, eval mode), at ``T_0 = t0`` with the
    background rule ``bg_rule`` (defaults: the config's ``INFERENCE.T0`` / ``BG_RULE``)."""
    from detectron2.checkpoint import DetectionCheckpointer

    import nucleiweak_d2.methods.liu2022  # noqa: F401  (registration)
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.trainer import Trainer

    opts = ["MODEL.META_ARCHITECTURE", "NucleiWeakLiu2022Model", "MODEL.DEVICE", "cpu"]
    if t0 is not None:
        opts += ["NUCLEIWEAK.LIU2022.INFERENCE.T0", str(t0)]
    if bg_rule is not None:
        opts += ["NUCLEIWEAK.LIU2022.INFERENCE.BG_RULE", str(bg_rule)]
    model = Trainer.build_model(setup_cfg(config, opts))
    DetectionCheckpointer(model).load(weights)
    return model.eval()


def foreground_and_embeddings(model, image_path):
    """``(foreground (H, W) bool, embeddings (D, H, W), background (H, W) bool)`` of one
    image, as the inference makes them (SPN probability above ``T_0``, cleaned; background:
    at most ``IEN.T_BG``)."""
    import torch.nn.functional as F

    from nucleiweak_d2.data.io import read_image
    from nucleiweak_d2.modeling.meta_arch.postprocess import instances_from_foreground

    image = read_image(image_path)
    x = [{"image": torch.as_tensor(image.transpose(2, 0, 1).copy())}]
    with torch.no_grad():
        images, _ = model.spn.preprocess(x)
        size = images.image_sizes[0]
        prob = F.softmax(model.spn.resize_output(model.spn.logits(images)[0], size, x[0]), 0)[1]
        emb = model.ien.resize_output(model.ien.embed(x, images)[0], size, x[0]).float()
    fg = (
        instances_from_foreground(
            (prob.float() > model.fg_threshold).numpy(), model.min_area, model.fill_holes
        )
        > 0
    )
    return fg, emb, (prob.float() <= model.t_bg).numpy()


def trained_model_embeddings(config, weights, image_path, tiles, t0=None):
    """Foreground embeddings of the first ``tiles`` grouping tiles of ``image_path`` under a
    trained SPN + IEN model."""
    from nucleiweak_d2.methods.liu2022.instances import tile_edges

    model = load_trained_model(config, weights, t0)
    fg, emb, _ = foreground_and_embeddings(model, image_path)
    ye, xe = tile_edges(fg.shape[0], model.group_tile), tile_edges(fg.shape[1], model.group_tile)
    sets = []
    for y0, y1 in zip(ye[:-1], ye[1:]):
        for x0, x1 in zip(xe[:-1], xe[1:]):
            if len(sets) < tiles:
                m = torch.as_tensor(fg[y0:y1, x0:x1])
                sets.append(
                    (
                        f"IEN {image_path.split('/')[-1]} tile ({y0},{x0})",
                        emb[:, y0:y1, x0:x1][:, m].T.numpy(),
                    )
                )
    return sets


def sklearn_mean_shift(points, bandwidth, **_):
    """``MeanShift(bandwidth)`` of scikit-learn as a ``group_foreground`` clusterer (the
    options of our mean-shift do not apply to it)."""
    from sklearn.cluster import MeanShift

    ms = MeanShift(bandwidth=bandwidth).fit(np.asarray(torch.as_tensor(points).cpu()))
    return ms.labels_, ms.cluster_centers_


def split_aji(config, weights, data, split, t0=None, max_images=0, bg_rule=None):
    """Whole inference of every image of ``split`` of the folder dataset ``data``, grouped by
    our mean-shift and by scikit-learn's: per image the grouping times, AJI of each against
    the ground truth, and the adjusted Rand index of the two instance maps on the foreground."""
    from sklearn.metrics import adjusted_rand_score

    from nucleiweak_d2.data.folder import load_folder_dataset
    from nucleiweak_d2.data.io import read_label
    from nucleiweak_d2.evaluation.metrics import aji
    from nucleiweak_d2.methods.liu2022.instances import group_foreground

    model = load_trained_model(config, weights, t0, bg_rule)
    kwargs = {
        "bandwidth": model.bandwidth,
        "tile": model.group_tile,
        "bg_rule": model.bg_rule,
        "bg_min_fragments": model.bg_min_fragments,
        "min_area": model.min_area,
        "fill_holes": model.fill_holes,
    }
    print(
        f"\n{split} of {data}: T_0 {model.fg_threshold:g}, background rule {model.bg_rule}, "
        f"bandwidth {model.bandwidth:g}\n"
    )
    print("| image | sklearn s | ours s | speed-up | AJI sklearn | AJI ours | ARI |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    samples = load_folder_dataset(data, split)
    for sample in samples[:max_images] if max_images > 0 else samples:
        fg, emb, background = foreground_and_embeddings(model, str(sample["image_path"]))
        kwargs["background"] = background if model.bg_rule == "embedding" else None
        gt = read_label(sample["label_path"])
        t = time.perf_counter()
        ref = group_foreground(emb, fg, clusterer=sklearn_mean_shift, **kwargs)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        ours = group_foreground(emb, fg, sample_size=model.sample_size, **kwargs)
        t_ours = time.perf_counter() - t
        both = (ref > 0) | (ours > 0)
        row = (
            t_ref,
            t_ours,
            aji(gt, ref),
            aji(gt, ours),
            adjusted_rand_score(ref[both], ours[both]),
        )
        rows.append(row)
        print(
            f"| {sample['name']} | {row[0]:.1f} | {row[1]:.2f} | {row[0] / row[1]:.0f}x | "
            f"{row[2]:.4f} | {row[3]:.4f} | {row[4]:.4f} |",
            flush=True,
        )
    mean = np.mean(np.asarray(rows), axis=0)
    print(
        f"\nmean AJI: sklearn {mean[2]:.4f}, ours {mean[3]:.4f} (difference {mean[3] - mean[2]:+.4f}); "
        f"grouping time: sklearn {sum(r[0] for r in rows):.1f} s, ours {sum(r[1] for r in rows):.1f} s "
        f"({sum(r[0] for r in rows) / sum(r[1] for r in rows):.0f}x); min ARI {min(r[4] for r in rows):.4f}"
    )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", help="config of the trained model (with --weights)")
    p.add_argument("--weights", help="final SPN + IEN weights (model_final.pth of a run)")
    p.add_argument("--image", help="image whose embeddings are grouped (with --weights)")
    p.add_argument("--tiles", type=int, default=3, help="grouping tiles of --image to compare")
    p.add_argument("--train-iters", type=int, default=300, help="iterations of the tiny IEN")
    p.add_argument("--tile", type=int, default=112, help="grouping tile of the synthetic tile")
    p.add_argument("--bandwidth", type=float, default=1.5)
    p.add_argument("--repeats", type=int, default=3, help="timings of ours (median)")
    p.add_argument("--no-blobs", action="store_true")
    p.add_argument(
        "--data", help="folder dataset: with --weights, also score a whole split grouped both ways"
    )
    p.add_argument("--split", default="val", help="split of --data (default val)")
    p.add_argument("--t0", type=float, help="T_0 of the model (the run's select_t0 choice)")
    p.add_argument("--max-images", type=int, default=0, help="first images of --split only")
    p.add_argument("--bg-rule", choices=["fragments", "embedding"], help="background rule")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.data:
        if not (args.config and args.weights):
            p.error("--data needs --config and --weights")
        split_aji(
            args.config, args.weights, args.data, args.split, args.t0, args.max_images, args.bg_rule
        )
        if not args.image:
            return

    if args.weights:
        if not (args.config and args.image):
            p.error("--weights needs --config and --image")
        sets = trained_model_embeddings(args.config, args.weights, args.image, args.tiles, args.t0)
    else:
        print(
            f"training a tiny IEN on synthetic tiles ({args.train_iters} iterations) ...",
            flush=True,
        )
        sets = trained_synthetic_embeddings(args.train_iters, args.tile)
    if not args.no_blobs:
        sets += ideal_embeddings() + list(blob_sets())
    print(f"\nbandwidth {args.bandwidth}, one CPU thread each\n")
    print("| points | N | modes sklearn / ours | sklearn s | ours s | speed-up | ARI |")
    print("|---|---|---|---|---|---|---|")
    rows = [compare(name, x, args.bandwidth, args.repeats) for name, x in sets if len(x)]
    t_ref, t_ours = sum(r[0] for r in rows), sum(r[1] for r in rows)
    print(
        f"\ntotal: sklearn {t_ref:.1f} s, ours {t_ours:.2f} s ({t_ref / t_ours:.0f}x); "
        f"min ARI {min(r[2] for r in rows):.4f}"
    )


if __name__ == "__main__":
    main()
