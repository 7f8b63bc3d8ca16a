"""nucleiweak_d2: point-supervised nuclei instance segmentation for Detectron2.

Importing the top-level package does not import Detectron2, so the numpy-only
modules (``nucleiweak_d2.data.points``, ``nucleiweak_d2.pseudo_labels``,
``nucleiweak_d2.evaluation.metrics``) work without it.
"""

__version__ = "0.1.0"
