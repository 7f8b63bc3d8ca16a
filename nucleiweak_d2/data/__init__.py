"""Data layer: folder datasets, point annotations, COCO export and synthetic H&E.

Only numpy-level modules are re-exported here; this package imports without detectron2.
The detectron2 glue lives in :mod:`.datasets` (``register_nuclei_dataset``), :mod:`.mapper`
(``NucleiDatasetMapper``, registered in ``NUCLEIWEAK_MAPPER_REGISTRY`` on import),
:mod:`.transforms` and :mod:`.config`; import those modules explicitly.
"""

from .checks import check_disjoint_splits, check_training_points
from .coco import build_coco, export_coco_splits, load_nuclei_coco, read_points_csv
from .folder import list_splits, load_folder_dataset
from .io import read_image, read_label, write_image, write_label
from .points import SHIFT_PRESETS, parse_shift, points_from_labels, sample_partial, shift_points
from .synthetic import make_synthetic_dataset, synthesize_image

__all__ = [
    "read_image",
    "read_label",
    "write_label",
    "write_image",
    "load_folder_dataset",
    "list_splits",
    "points_from_labels",
    "sample_partial",
    "shift_points",
    "parse_shift",
    "SHIFT_PRESETS",
    "build_coco",
    "export_coco_splits",
    "load_nuclei_coco",
    "read_points_csv",
    "check_training_points",
    "check_disjoint_splits",
    "synthesize_image",
    "make_synthetic_dataset",
]
