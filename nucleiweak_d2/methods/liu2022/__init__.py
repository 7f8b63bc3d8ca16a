"""Liu, He and He (ISBI 2022): weakly supervised nuclei segmentation via instance learning.

A semantic proposal network (SPN) trained on Voronoi + adaptive k-means labels gives the
foreground; an instance encoding network (IEN, CoordConv stem, 16-D embeddings) trained with
a discriminative loss on SPN-derived instance labels separates the nuclei; mean-shift groups
the foreground embeddings. See ``docs/methods/liu2022.md``.

Importing this package registers (side effects only):

- mappers ``NucleiWeakLiu2022SPNMapper`` and ``NucleiWeakLiu2022IENMapper``;
- meta-architectures ``NucleiWeakLiu2022EmbeddingNet`` (the IEN) and ``NucleiWeakLiu2022Model``
  (SPN + IEN, the final model);
- the pipeline ``NucleiWeakLiu2022Pipeline``;
- the method ``liu2022`` (config node ``NUCLEIWEAK.LIU2022``).

The SPN is the shared ``NucleiWeakUNetSegmentor``.
"""

from .. import register_method
from .config import add_liu2022_config
from .coords import coordinate_grid
from .embedding import NucleiWeakLiu2022EmbeddingNet
from .grouping import mean_shift
from .instances import group_foreground
from .losses import discriminative_loss
from .mappers import NucleiWeakLiu2022IENMapper, NucleiWeakLiu2022SPNMapper
from .model import NucleiWeakLiu2022Model
from .pipeline import NucleiWeakLiu2022Pipeline
from .pseudo_labels import instance_pseudo_label

__all__ = [
    "add_liu2022_config",
    "coordinate_grid",
    "discriminative_loss",
    "group_foreground",
    "instance_pseudo_label",
    "mean_shift",
    "NucleiWeakLiu2022EmbeddingNet",
    "NucleiWeakLiu2022IENMapper",
    "NucleiWeakLiu2022Model",
    "NucleiWeakLiu2022Pipeline",
    "NucleiWeakLiu2022SPNMapper",
]

register_method(
    "liu2022",
    add_config=add_liu2022_config,
    pipelines=("NucleiWeakLiu2022Pipeline",),
    description="Liu et al., ISBI 2022: SPN on Voronoi + adaptive k-means labels, IEN with a "
    "discriminative loss on SPN-split instances, mean-shift grouping",
)
