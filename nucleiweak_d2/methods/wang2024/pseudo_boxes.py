"""Pseudo-boxes of annotated points for the FCOS losses of DoNuSeg.

The paper computes them "following dense object detection in natural scenarios" (its ref. 24,
Wang et al., TIP 2021, which sizes a point's initial box by the distance to its nearest
neighbour); the details are in a supplement that is not available, and the authors' other
code uses fixed 50 x 50 squares. Three rules, chosen by ``NUCLEIWEAK.WANG2024.BOXES.RULE``:

- ``"nearest_neighbor"`` (default): a square centred on the point with side
  ``factor * d_nn``, clipped to ``[min_size, max_size]``, where ``d_nn`` is the distance to the
  nearest other annotated point of the image. With factor 1 it is the square around the
  largest disc centred on the point that fits in the point's Voronoi cell (radius
  ``d_nn / 2``): two touching nuclei cannot both be larger. A lone point (no neighbour) gets
  ``max_size``. With partial points the neighbours are sparse and most boxes are
  ``max_size``, which should then be set to the largest nucleus diameter.
- ``"fixed"``: a square of side ``size`` (the authors' other code: 50).
- ``"given"``: the mapper's ``gt_boxes`` unchanged (masks' boxes for ``partial_mask`` data, or
  ``NUCLEIWEAK.DATA.POINT_BOX_SIZE`` squares) -- for comparisons.

Boxes are clipped to the image. Points are continuous coordinates (pixel centre at +0.5).
"""

import torch
from detectron2.structures import Boxes

__all__ = ["BOX_RULES", "point_boxes"]

BOX_RULES = ("nearest_neighbor", "fixed", "given")


def point_boxes(
    points,
    image_size,
    rule="nearest_neighbor",
    size=50.0,
    nn_factor=1.0,
    min_size=8.0,
    max_size=40.0,
    given=None,
):
    """Pseudo-boxes ``(x0, y0, x1, y1)`` of the points of one image.

    Parameters
    ----------
    points : torch.Tensor
        ``(N, 2)`` continuous (x, y).
    image_size : tuple of int
        ``(H, W)``: boxes are clipped to it.
    rule : {"nearest_neighbor", "fixed", "given"}
    size : float
        Side of the ``"fixed"`` squares.
    nn_factor, min_size, max_size : float
        ``"nearest_neighbor"``: side ``clip(nn_factor * d_nn, min_size, max_size)``.
    given : Boxes, optional
        The boxes returned by ``"given"``.

    Returns
    -------
    Boxes
        ``N`` boxes.
    """
    if rule not in BOX_RULES:
        raise ValueError(f"pseudo-box rule must be one of {BOX_RULES}, got {rule!r}")
    if rule == "given":
        if given is None:
            raise ValueError(
                'pseudo-box rule "given" needs gt_boxes from the mapper '
                "(NUCLEIWEAK.DATA.POINT_BOX_SIZE > 0 or masks)"
            )
        boxes = Boxes(given.tensor.clone())
        boxes.clip(image_size)
        return boxes
    points = points.reshape(-1, 2).float()
    n = len(points)
    if rule == "fixed":
        side = torch.full((n,), float(size), device=points.device)
    else:
        if not 0 < min_size <= max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        side = torch.full((n,), float(max_size), device=points.device)
        if n > 1:
            dist = torch.cdist(points, points)
            dist.fill_diagonal_(float("inf"))
            side = (nn_factor * dist.min(dim=1).values).clamp(min_size, max_size)
    half = side[:, None] / 2.0
    boxes = Boxes(torch.cat([points - half, points + half], dim=1))
    boxes.clip(image_size)
    return boxes
