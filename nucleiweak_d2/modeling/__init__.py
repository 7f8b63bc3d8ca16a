"""Detectron2 components of nucleiweak_d2; importing this module registers them all."""

from . import feng2019 as _feng2019  # noqa: F401  (registration side effects)
from . import qu2020 as _qu2020  # noqa: F401  (registration side effects)
from ..data import mapper as _mapper  # noqa: F401  (registers NucleiDatasetMapper)
from ..engine import qu2020_pipeline as _qu2020_pipeline  # noqa: F401  (registers the pipeline)
