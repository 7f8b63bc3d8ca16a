"""Voronoi point-edge labels of Qu et al. (MIDL 2019, TMI 2020), computed on the pixel grid.

Qu et al. assign the edges of the Voronoi diagram of the points to background and the points
dilated by a disk of radius 2 to nucleus; every other pixel is ignored.

Deviation from the authors' code (``code_seg/prepare_data.py``): they build the diagram with
``scipy.spatial.Voronoi`` and clip polygons with shapely, then take the inner boundary of every
rasterised cell (``mask & ~erosion(mask, disk(1))``) and close it with ``disk(1)`` (TMI). Here
the cells come from the exact Euclidean nearest-point map (one EDT), and a pixel is an edge
pixel when one of its 4-neighbours belongs to another cell. This is the same "inner boundary
of each cell" definition applied to pixel-exact cells, so the edges are two pixels wide
(one on each side) like the authors', and it cannot fail on degenerate point sets
(collinear or duplicate points, which break ``scipy.spatial.Voronoi``/shapely).
"""

import numpy as np
from scipy import ndimage as ndi

from ._common import BACKGROUND, IGNORE, NUCLEUS, check_points, check_shape, nearest_point

__all__ = ["voronoi_cells", "voronoi_edges", "voronoi_label", "label_from_cells"]


def voronoi_cells(points, shape):
    """Nearest-point (Euclidean Voronoi) cell map on the pixel grid.

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` integer (x, y) points, ``N >= 1``, inside the image.
    shape : tuple of int
        ``(H, W)`` of the image.

    Returns
    -------
    numpy.ndarray
        int32 ``(H, W)``: index into ``points`` of the nearest point of every pixel.

    Raises
    ------
    ValueError
        On an empty shape, no points, or points outside the image.
    """
    shape = check_shape(shape)
    pts = check_points(points, shape)
    return nearest_point(pts, shape)[1]


def voronoi_edges(cells, closing=True):
    """Boolean edge map of a cell map: pixels with a 4-neighbour in another cell.

    Parameters
    ----------
    cells : numpy.ndarray
        ``(H, W)`` integer cell map (e.g. from :func:`voronoi_cells`).
    closing : bool
        Apply a binary closing with the 3x3 cross (``disk(1)``), as Qu's TMI code does, which
        fills one-pixel gaps where edges meet diagonally. The image border is not an edge.

    Returns
    -------
    numpy.ndarray
        bool ``(H, W)`` edge map.
    """
    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.size == 0:
        raise ValueError(f"cells must be a non-empty (H, W) array, got shape {cells.shape}")
    edges = np.zeros(cells.shape, dtype=bool)
    dy = cells[1:, :] != cells[:-1, :]
    edges[1:, :] |= dy
    edges[:-1, :] |= dy
    dx = cells[:, 1:] != cells[:, :-1]
    edges[:, 1:] |= dx
    edges[:, :-1] |= dx
    if closing and edges.any():
        cross = ndi.generate_binary_structure(2, 1)
        # Pad so that the closing does not erode edges that touch the image border.
        padded = np.pad(edges, 1, mode="edge")
        edges = ndi.binary_closing(padded, structure=cross)[1:-1, 1:-1]
    return edges


def label_from_cells(cells, near_point, closing=True):
    """Voronoi label from a cell map and a nucleus mask around the points.

    Parameters
    ----------
    cells : numpy.ndarray
        ``(H, W)`` integer cell map.
    near_point : numpy.ndarray
        bool ``(H, W)``: pixels labelled nucleus (the dilated points). They win over edges.
    closing : bool
        See :func:`voronoi_edges`.

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W)``: 0 background (edges), 1 nucleus, 2 ignore.
    """
    label = np.full(cells.shape, IGNORE, dtype=np.uint8)
    label[voronoi_edges(cells, closing=closing)] = BACKGROUND
    label[near_point] = NUCLEUS
    return label


def voronoi_label(points, shape, point_radius=2, closing=True):
    """Voronoi point-edge label of Qu et al.

    Parameters
    ----------
    points : array_like
        ``(N, 2)`` integer (x, y) points, ``N >= 1``, inside the image.
    shape : tuple of int
        ``(H, W)`` (an image shape ``(H, W, 3)`` is accepted too).
    point_radius : int
        Radius of the disk that dilates each point into nucleus pixels (Qu: 2).
    closing : bool
        Close the edges with ``disk(1)`` (Qu's TMI code; the MIDL code does not).

    Returns
    -------
    numpy.ndarray
        uint8 ``(H, W)``: 0 background on the Voronoi edges, 1 nucleus within ``point_radius``
        of a point (these win over edges), 2 ignore elsewhere. With a single point there is no
        edge, so the label is nucleus around the point and ignore elsewhere.

    Raises
    ------
    ValueError
        On an empty shape, no points (there is no Voronoi diagram without sites) or points
        outside the image.
    """
    shape = check_shape(shape)
    pts = check_points(points, shape)
    dist, cells = nearest_point(pts, shape)
    return label_from_cells(cells, dist <= point_radius, closing=closing)
