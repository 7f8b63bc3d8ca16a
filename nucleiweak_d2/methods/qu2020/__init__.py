"""Qu et al. (IEEE TMI 2020): nuclei detection and segmentation from partial points.

Importing this package registers (side effects only):

- mappers ``NucleiWeakQu2020SegMapper`` and ``NucleiWeakQu2020DetMapper``;
- the pipeline ``NucleiWeakQu2020Pipeline`` (alias ``Qu2020Pipeline``);
- the method ``qu2020`` (config node ``NUCLEIWEAK.QU2020``).

Its networks are the shared UNet meta-architectures of :mod:`nucleiweak_d2.modeling.meta_arch`.
"""

from .. import register_method
from . import mappers as _mappers  # noqa: F401  (registration side effects)
from .config import add_qu2020_config
from .mappers import NucleiWeakQu2020DetMapper, NucleiWeakQu2020SegMapper
from .pipeline import NucleiWeakQu2020Pipeline
from .postprocess import merge_points

__all__ = [
    "add_qu2020_config",
    "NucleiWeakQu2020DetMapper",
    "NucleiWeakQu2020Pipeline",
    "NucleiWeakQu2020SegMapper",
    "merge_points",
]

register_method(
    "qu2020",
    add_config=add_qu2020_config,
    pipelines=("NucleiWeakQu2020Pipeline",),
    description="Qu et al., TMI 2020: partial points, detection self-training, Voronoi + cluster "
    "labels, dense-CRF fine-tuning",
)
