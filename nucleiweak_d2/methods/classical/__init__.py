"""The classical no-learning baseline: hematoxylin channel, Otsu threshold, watershed.

Importing this package registers (side effects only):

- the meta-architecture ``NucleiWeakClassicalSegmentor`` (no parameters, no training);
- the pipeline ``NucleiWeakClassicalPipeline`` (no training stage; its ``eval`` stage scores
  the baseline);
- the method ``classical`` (config node ``NUCLEIWEAK.CLASSICAL``).

The segmentation itself is the numpy function :func:`classical_instances` (``segment.py``);
:func:`select_classical_settings` (``calibrate.py``) chooses its split distance and minimum area
on a val split.
"""

from .. import register_method
from .calibrate import select_classical_settings
from .config import add_classical_config
from .pipeline import NucleiWeakClassicalPipeline
from .segment import classical_instances, nuclei_foreground, stain_channel
from .segmentor import NucleiWeakClassicalSegmentor

__all__ = [
    "add_classical_config",
    "classical_instances",
    "select_classical_settings",
    "nuclei_foreground",
    "stain_channel",
    "NucleiWeakClassicalPipeline",
    "NucleiWeakClassicalSegmentor",
]

register_method(
    "classical",
    add_config=add_classical_config,
    pipelines=("NucleiWeakClassicalPipeline",),
    description="No-learning baseline: hematoxylin by colour deconvolution, Gaussian, Otsu, "
    "holes filled, distance-transform watershed",
)
