"""Training glue: config setup, the Trainer and the pipeline registry."""

from .defaults import register_datasets_from_cfg, setup_cfg
from .pipelines import NUCLEIWEAK_PIPELINE_REGISTRY
from .predictor import NucleiPredictor
from .trainer import Trainer

__all__ = ["setup_cfg", "register_datasets_from_cfg", "Trainer", "NUCLEIWEAK_PIPELINE_REGISTRY", "NucleiPredictor"]
