"""Pseudo-labels and dense targets from point annotations (numpy/scipy/scikit-image/sklearn).

Conventions (``docs/CONTRACTS.md``): points are ``(N, 2)`` integer (x, y) = (column, row)
arrays; images ``(H, W, 3)`` uint8 RGB. Segmentation pseudo-labels are uint8 ``(H, W)`` with
0 background, 1 nucleus, 2 ignore (:data:`BACKGROUND`, :data:`NUCLEUS`, :data:`IGNORE`).

Segmentation labels raise ``ValueError`` when given no point; dense training targets
(extended Gaussian, centerness, heatmap, offsets) accept none and return all-ignored or zero
targets. Every generator is deterministic (k-means and subsamples are seeded).

==============================  ===================================  =====================
function                        paper                                MoNuSeg defaults
==============================  ===================================  =====================
:func:`voronoi_label`           Qu et al. MIDL 2019 / TMI 2020       point radius 2
:func:`cluster_label`           Qu et al.                            k=3, d clip 20, RGB/10
:func:`adaptive_cluster_label`  Liu et al. ISBI 2022                 lambda 0.2, L 60, d* 20
:func:`geodesic_voronoi_label`  Nam et al. (PROnet) MICCAI 2023      beta 40 (ours)
:func:`geodesic_cluster_label`  Nam et al. (PROnet)                  d* 70
:func:`extended_gaussian_target` Qu et al. TMI 2020 Eq. (1)-(2)      r1 11, r2 22, sigma 2.75
:func:`background_propagation`  Qu et al. TMI 2020 Eq. (3)           p<0.1, p>0.7 & >pi r1^2
:func:`centerness_targets`      Feng et al. 2019                     stride 4, centre 30 %
:func:`donuseg_initial_label`   Wang et al. (DoNuSeg) MICCAI 2024    r 4, d 20
:func:`center_heatmap`          Nam et al. (PROnet)                  r 8
:func:`offset_targets`          Nam et al. (PROnet)                  vector to the point
==============================  ===================================  =====================
"""

from ._common import BACKGROUND, IGNORE, NUCLEUS
from .adaptive import adaptive_cluster_label, adaptive_color_scale
from .centers import center_heatmap, centerness_targets, donuseg_initial_label, offset_targets
from .cluster import cluster_label, cluster_label_from_features, kmeans_assign
from .detection import background_propagation, extended_gaussian_target, propagated_background
from .geodesic import (
    geodesic_cluster_label,
    geodesic_labels,
    geodesic_nearest,
    geodesic_voronoi_label,
)
from .voronoi import voronoi_cells, voronoi_edges, voronoi_label

__all__ = [
    "BACKGROUND",
    "NUCLEUS",
    "IGNORE",
    "voronoi_label",
    "voronoi_cells",
    "voronoi_edges",
    "cluster_label",
    "cluster_label_from_features",
    "kmeans_assign",
    "adaptive_cluster_label",
    "adaptive_color_scale",
    "geodesic_nearest",
    "geodesic_voronoi_label",
    "geodesic_cluster_label",
    "geodesic_labels",
    "extended_gaussian_target",
    "propagated_background",
    "background_propagation",
    "centerness_targets",
    "donuseg_initial_label",
    "center_heatmap",
    "offset_targets",
]
