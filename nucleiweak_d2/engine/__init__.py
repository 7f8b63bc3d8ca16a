"""Training glue: the Trainer, the staged pipeline machinery, the rerun rule, the predictor."""

from .defaults import entry_setup, register_datasets_from_cfg, setup_loggers
from .pipeline import NUCLEIWEAK_PIPELINE_REGISTRY, Stage, StagedPipeline
from .predictor import NucleiPredictor
from .run_dir import resolve_output_dir
from .trainer import Trainer

__all__ = [
    "entry_setup",
    "register_datasets_from_cfg",
    "setup_loggers",
    "NUCLEIWEAK_PIPELINE_REGISTRY",
    "Stage",
    "StagedPipeline",
    "NucleiPredictor",
    "resolve_output_dir",
    "Trainer",
]
