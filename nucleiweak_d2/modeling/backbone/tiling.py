"""Sliding-window inference for fully convolutional models (Qu et al.: 224 tiles, overlap 80)."""

import torch
import torch.nn.functional as F

__all__ = ["sliding_window_apply", "tile_starts"]


def tile_starts(length, tile, step):
    """Start offsets of tiles of side ``tile`` covering ``[0, length)``, ``step`` apart.

    The last tile is flush with the end (it may overlap its neighbour by more than
    ``tile - step``); a length no longer than ``tile`` gets the one start 0. Used by
    :func:`sliding_window_apply` and by the tiled predictor
    (:func:`nucleiweak_d2.engine.predictor.tile_boxes`).

    >>> tile_starts(500, 224, 144)
    [0, 144, 276]
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def sliding_window_apply(fn, image, tile, overlap, size_divisibility=1):
    """Apply ``fn`` to overlapping tiles of ``image`` and average the outputs.

    Parameters
    ----------
    fn : callable
        Maps a ``(1, C, h, w)`` tensor (h, w multiples of ``size_divisibility``) to a
        ``(1, K, h, w)`` tensor.
    image : torch.Tensor
        ``(1, C, H, W)`` normalised image.
    tile : int
        Tile size; ``<= 0`` applies ``fn`` once to the whole image.
    overlap : int
        Overlap of neighbouring tiles, ``0 <= overlap < tile``.
    size_divisibility : int
        Each tile (and a whole image) is zero-padded to a multiple of it, then cropped back.

    Returns
    -------
    torch.Tensor
        ``(1, K, H, W)``; where tiles overlap, their outputs are averaged.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(
            f"sliding_window_apply takes a (1, C, H, W) image, got {tuple(image.shape)}"
        )
    div = max(int(size_divisibility), 1)

    def run(x):
        h, w = x.shape[-2:]
        ph, pw = (-h) % div, (-w) % div
        out = fn(F.pad(x, (0, pw, 0, ph)) if ph or pw else x)
        return out[..., :h, :w]

    H, W = image.shape[-2:]
    if tile <= 0 or (H <= tile and W <= tile):
        return run(image)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    step = tile - overlap
    total, count = None, torch.zeros((1, 1, H, W), device=image.device)
    for y in tile_starts(H, tile, step):
        for x in tile_starts(W, tile, step):
            out = run(image[..., y : y + tile, x : x + tile])
            if total is None:
                total = torch.zeros((1, out.shape[1], H, W), dtype=out.dtype, device=image.device)
            total[..., y : y + out.shape[-2], x : x + out.shape[-1]] += out
            count[..., y : y + out.shape[-2], x : x + out.shape[-1]] += 1
    return total / count
