"""Instances from the SPN foreground and the IEN embeddings (Liu et al.'s inference).

:func:`group_foreground` clusters the embeddings of the foreground pixels with
:func:`~.grouping.mean_shift` and turns the clusters into an instance map:

1. **Tiles.** The image is cut into a grid of equal tiles no larger than ``tile`` (the
   training crop, 224, by default) and each tile is grouped on its own. The discriminative
   loss only separates nuclei that meet in one training crop; over a whole 1000x1000 image,
   distant nuclei share embeddings and crowd the embedding space, so the authors group per
   224 tile too. ``tile <= 0`` groups the whole image at once.
2. **Fragments.** Within a tile, every connected piece (8-connectivity) of a cluster is a
   fragment: one cluster can hold several nuclei that are apart in the image.
3. **Background cluster**, one of two rules (``bg_rule``):

   - ``"fragments"`` (paper: "the background cluster that typically has the largest number of
     connected components"; authors: when it has at least 5): per tile, the cluster with the
     most fragments is removed when it has at least ``bg_min_fragments``.
   - ``"embedding"`` (ours): per tile, every cluster whose mode lies within ``bandwidth`` of
     the mean embedding of the tile's background pixels (``background``: the SPN's
     probability at most ``IEN.T_BG``, the pixels the IEN learnt as its background cluster)
     is removed; a tile without background pixels keeps every cluster. Deviation, because
     the fragment count cannot tell background from nuclei that share an embedding: an IEN
     trained for a CPU budget (2500 iterations instead of 24 000) gives many nuclei of a
     tile one cluster, which then has the most fragments and is removed with them (the CPU
     config's IEN after 500 iterations, MoNuSeg/MO val, T_0 0.5: mean AJI 0.126 with the
     paper's rule, 0.442 with this one, 0.452 keeping every cluster, 0.460 for the SPN's
     connected components). The pipeline chooses the rule on val.
4. **Stitching.** Two fragments that touch across a tile seam (4-neighbours) are one nucleus
   when their mean embeddings lie within ``bandwidth`` of each other. The embeddings come
   from one network pass over the image, so a nucleus cut by a seam has the same embedding
   on both sides. (The authors group overlapping tiles and keep the nuclei that cross the
   seams; the rule here needs no overlap, so each pixel is grouped once.)
5. **Cleaning**, as the SPN's post-processing: objects smaller than ``min_area`` are removed
   and holes filled per object; ids are 1..N.
"""

import numpy as np
import torch
from skimage import measure

from ...modeling.meta_arch.postprocess import (
    fill_holes_per_object,
    relabel_sequential,
    remove_small_objects,
)
from .grouping import mean_shift

__all__ = ["BG_RULES", "check_bg_rule", "group_foreground", "tile_edges"]

#: Rules that find a tile's background cluster (see the module docstring).
BG_RULES = ("fragments", "embedding")


def check_bg_rule(bg_rule):
    """Return ``bg_rule``, or raise ValueError when it is not one of :data:`BG_RULES`."""
    if bg_rule not in BG_RULES:
        raise ValueError(f"bg_rule must be one of {BG_RULES}, got {bg_rule!r}")
    return bg_rule


def tile_edges(length, tile):
    """Edges of ``ceil(length / tile)`` nearly equal tiles covering ``[0, length)``."""
    n = 1 if tile <= 0 else max(1, -(-int(length) // int(tile)))
    return np.round(np.linspace(0, length, n + 1)).astype(int)


def _group_tile(emb, fg, bg, bandwidth, bg_rule, bg_min_fragments, clusterer, ms_kwargs):
    """Fragment map (int32, 0 = none) of one tile, and the number of fragments."""
    frag = np.zeros(fg.shape, dtype=np.int32)
    if not fg.any():
        return frag, 0
    labels, centres = clusterer(
        emb[:, torch.as_tensor(fg, device=emb.device)].T, bandwidth, **ms_kwargs
    )
    labels = np.asarray(labels, dtype=np.int64)
    clusters = np.zeros(fg.shape, dtype=np.int32)
    clusters[fg] = labels + 1
    frag = measure.label(clusters, background=0, connectivity=2).astype(np.int32)
    n = int(frag.max())
    if n == 0:
        return frag, 0
    if bg_rule == "embedding":
        if bg is not None and bg.any():
            ref = emb[:, torch.as_tensor(bg, device=emb.device)].double().mean(1).cpu().numpy()
            modes = np.asarray(torch.as_tensor(centres).double().cpu(), dtype=np.float64)
            near = np.linalg.norm(modes - ref[None, :], axis=1) <= bandwidth
            if near.any():
                frag[np.isin(clusters, np.flatnonzero(near) + 1)] = 0
                frag = relabel_sequential(frag)
        return frag, int(frag.max())
    owner = np.zeros(n + 1, dtype=np.int64)
    owner[frag.ravel()] = clusters.ravel()
    per_cluster = np.bincount(owner[1:], minlength=int(clusters.max()) + 1)
    per_cluster[0] = 0
    bg_cluster = int(per_cluster.argmax())
    if bg_min_fragments > 0 and per_cluster[bg_cluster] >= bg_min_fragments:
        frag[clusters == bg_cluster] = 0
        frag = relabel_sequential(frag)
    return frag, int(frag.max())


def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _stitch(frag, means, ys, xs, bandwidth):
    """Merge fragments that touch across the seams at rows ``ys`` / columns ``xs``."""
    pairs = []
    for y in ys:
        pairs.append(np.stack([frag[y - 1, :], frag[y, :]], 1))
    for x in xs:
        pairs.append(np.stack([frag[:, x - 1], frag[:, x]], 1))
    if not pairs:
        return frag
    pairs = np.concatenate(pairs)
    pairs = np.unique(
        pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0) & (pairs[:, 0] != pairs[:, 1])], axis=0
    )
    parent = np.arange(len(means))
    for a, b in pairs:
        if np.linalg.norm(means[a] - means[b]) <= bandwidth:
            ra, rb = _find(parent, a), _find(parent, b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([_find(parent, i) for i in range(len(parent))])
    return roots[frag]


def _clean(label, min_area, fill_holes):
    """Remove objects smaller than ``min_area``, fill holes per object, relabel 1..N."""
    label = relabel_sequential(label)
    if label.max() == 0:
        return label
    label = remove_small_objects(label, min_area)
    if fill_holes:
        label = fill_holes_per_object(label, keep_enclosed=True)
    return relabel_sequential(label)


def group_foreground(
    embedding,
    foreground,
    *,
    bandwidth=1.5,
    tile=224,
    bg_rule="fragments",
    bg_min_fragments=5,
    background=None,
    min_area=20,
    fill_holes=True,
    clusterer=mean_shift,
    **mean_shift_kwargs,
):
    """Instance map from IEN embeddings and a foreground mask (see the module docstring).

    Parameters
    ----------
    embedding : torch.Tensor or numpy.ndarray
        ``(D, H, W)`` embeddings.
    foreground : numpy.ndarray
        bool ``(H, W)`` foreground (the SPN probability above ``T_0``, cleaned).
    bandwidth : float
        Mean-shift bandwidth, also the stitching distance (Liu et al.: 1.5).
    tile : int
        Largest grouping tile side; ``<= 0`` groups the whole image.
    bg_rule : {"fragments", "embedding"}
        How a tile's background cluster is found (see the module docstring).
    bg_min_fragments : int
        ``"fragments"``: a tile's cluster with the most fragments is background when it has at
        least this many (authors: 5); 0 never removes a cluster.
    background : numpy.ndarray, optional
        ``"embedding"``: bool ``(H, W)`` pixels known to be background (the SPN's probability
        at most ``T_bg``); without it no cluster is removed.
    min_area : int
        Objects smaller than this (pixels) are removed at the end.
    fill_holes : bool
        Fill holes per object at the end.
    clusterer : callable
        ``clusterer(points (N, D), bandwidth, **mean_shift_kwargs) -> (labels (N,), centres)``
        with labels ``0 .. K-1``; default :func:`~.grouping.mean_shift`. Another mean-shift
        (e.g. scikit-learn's, as ``benchmarks/bench_grouping.py`` compares) can be passed.
    **mean_shift_kwargs
        Passed to ``clusterer`` (``sample_size``, ``random_state``, ... of
        :func:`~.grouping.mean_shift`).

    Returns
    -------
    numpy.ndarray
        int32 ``(H, W)`` instance map, 0 = background.
    """
    emb = torch.as_tensor(embedding)
    fg = np.asarray(foreground, dtype=bool)
    if emb.ndim != 3 or tuple(emb.shape[1:]) != fg.shape:
        raise ValueError(
            f"embedding must be (D, H, W) with (H, W) = foreground {fg.shape}, "
            f"got {tuple(emb.shape)}"
        )
    check_bg_rule(bg_rule)
    bg = None if background is None else np.asarray(background, dtype=bool)
    if bg is not None and bg.shape != fg.shape:
        raise ValueError(f"background must be (H, W) = foreground {fg.shape}, got {bg.shape}")
    h, w = fg.shape
    ye, xe = tile_edges(h, tile), tile_edges(w, tile)
    frag = np.zeros((h, w), dtype=np.int64)
    offset = 0
    for y0, y1 in zip(ye[:-1], ye[1:]):
        for x0, x1 in zip(xe[:-1], xe[1:]):
            f, n = _group_tile(
                emb[:, y0:y1, x0:x1],
                fg[y0:y1, x0:x1],
                None if bg is None else bg[y0:y1, x0:x1],
                bandwidth,
                bg_rule,
                int(bg_min_fragments),
                clusterer,
                mean_shift_kwargs,
            )
            frag[y0:y1, x0:x1] = np.where(f > 0, f + offset, 0)
            offset += n
    if offset == 0:
        return np.zeros((h, w), dtype=np.int32)
    if len(ye) > 2 or len(xe) > 2:
        inside = frag > 0
        ids = frag[inside]
        vals = emb[:, torch.as_tensor(inside, device=emb.device)].double().cpu().numpy()
        counts = np.maximum(np.bincount(ids, minlength=offset + 1), 1).astype(np.float64)
        means = np.stack([np.bincount(ids, weights=v, minlength=offset + 1) for v in vals], 1)
        means /= counts[:, None]
        frag = _stitch(frag, means, ye[1:-1], xe[1:-1], bandwidth)
    return _clean(frag, min_area, fill_holes)
