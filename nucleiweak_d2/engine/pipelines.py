"""Registry of multi-stage training pipelines (e.g. Qu et al.: detection, self-training,
pseudo-labels, segmentation, CRF fine-tuning).

A pipeline is a callable ``pipeline(cfg, args) -> dict`` that runs its stages under
``cfg.OUTPUT_DIR`` and returns the final evaluation results. ``tools/train_net.py`` runs the
pipeline named by ``cfg.NUCLEIWEAK.PIPELINE`` instead of a single ``Trainer``.
"""

from detectron2.utils.registry import Registry

NUCLEIWEAK_PIPELINE_REGISTRY = Registry("NUCLEIWEAK_PIPELINE")
NUCLEIWEAK_PIPELINE_REGISTRY.__doc__ = """
Multi-stage pipelines of nucleiweak_d2, called as ``pipeline(cfg, args)``.
"""
