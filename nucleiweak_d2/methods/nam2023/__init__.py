"""Nam et al. (MICCAI 2023), PROnet: point refinement with a shape-guided offset map.

Importing this package registers (side effects only):

- the head ``NucleiWeakNam2023Head`` (``SEM_SEG_HEADS_REGISTRY``) and the meta-architecture
  ``NucleiWeakNam2023Net`` (``META_ARCH_REGISTRY``): binary, offset and centre modules;
- the mapper ``NucleiWeakNam2023Mapper``;
- the pipeline ``NucleiWeakNam2023Pipeline``;
- the method ``nam2023`` (config node ``NUCLEIWEAK.NAM2023``).

No PROnet code was published; every choice the paper leaves open is stated in the module that
makes it and collected in ``docs/methods/nam2023.md``.
"""

from .. import register_method
from .config import add_nam2023_config
from .head import NucleiWeakNam2023Head
from .labels import binary_labels, point_cells
from .losses import center_focal_loss, offset_l1_loss
from .mappers import NucleiWeakNam2023Mapper
from .meta_arch import NucleiWeakNam2023Net
from .pipeline import NucleiWeakNam2023Pipeline
from .points import point_error, read_points_json, true_centres
from .postprocess import heatmap_peaks, instances_from_centres
from .refinement import refine_points, weighted_geometric_median
from .targets import center_target, offset_target, shape_guided_targets

__all__ = [
    "add_nam2023_config",
    "NucleiWeakNam2023Head",
    "NucleiWeakNam2023Mapper",
    "NucleiWeakNam2023Net",
    "NucleiWeakNam2023Pipeline",
    "binary_labels",
    "point_cells",
    "center_focal_loss",
    "offset_l1_loss",
    "point_error",
    "read_points_json",
    "true_centres",
    "heatmap_peaks",
    "instances_from_centres",
    "refine_points",
    "weighted_geometric_median",
    "center_target",
    "offset_target",
    "shape_guided_targets",
]

register_method(
    "nam2023",
    add_config=add_nam2023_config,
    pipelines=("NucleiWeakNam2023Pipeline",),
    description="Nam et al., MICCAI 2023 (PROnet): geodesic Voronoi + cluster labels, binary, "
    "shape-guided offset and centre heads, EM refinement of shifted points",
)
