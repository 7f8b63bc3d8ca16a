"""Detectron2 registration of nuclei COCO files (the only detectron2 glue of the data layer)."""

import json
import logging
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .coco import load_nuclei_coco

__all__ = ["register_nuclei_dataset", "register_nuclei_splits"]

logger = logging.getLogger(__name__)


def _load(json_file, image_root):
    records = load_nuclei_coco(json_file, image_root)
    for record in records:
        for ann in record["annotations"]:
            if "bbox_mode" in ann:
                ann["bbox_mode"] = BoxMode(ann["bbox_mode"])
    return records


def register_nuclei_dataset(name, json_file, image_root):
    """Register a nuclei COCO file in Detectron2's catalogs.

    Parameters
    ----------
    name : str
        Dataset name.
    json_file : str or Path
        COCO JSON (docs/CONTRACTS.md; points-only files included). It is parsed once here for
        its settings and again lazily, by ``DatasetCatalog.get``, for the records.
    image_root : str or Path
        Folder the file names are relative to.

    Notes
    -----
    Idempotent: registering the same name with the same files again does nothing. The same
    name with other files replaces the old entry (with a warning) instead of failing, so test
    sessions can re-register a name in a new temporary folder.

    Metadata: ``thing_classes=["nucleus"]``, ``evaluator_type="nuclei"``, ``json_file``,
    ``image_root`` and ``point_settings`` (the ``info.nucleiweak`` block of the file).
    """
    json_file, image_root = str(Path(json_file).resolve()), str(Path(image_root).resolve())
    if not Path(json_file).is_file():
        raise ValueError(f"register_nuclei_dataset({name!r}): json_file {json_file} does not exist")
    if not Path(image_root).is_dir():
        raise ValueError(
            f"register_nuclei_dataset({name!r}): image_root {image_root} is not a folder"
        )
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return
        logger.warning(
            "Re-registering dataset %s with %s (was %s)", name, json_file, meta.get("json_file")
        )
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    try:
        info = json.loads(Path(json_file).read_text()).get("info", {})
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read COCO file {json_file}: {exc}") from exc
    DatasetCatalog.register(name, lambda: _load(json_file, image_root))
    # COCO category id 1 is Detectron2's contiguous class 0; COCOEvaluator maps predictions
    # back with this (without it every prediction keeps category 0 and every AP is 0).
    MetadataCatalog.get(name).set(
        thing_classes=["nucleus"],
        thing_dataset_id_to_contiguous_id={1: 0},
        evaluator_type="nuclei",
        json_file=json_file,
        image_root=image_root,
        point_settings=dict(info.get("nucleiweak", {})),
    )


def register_nuclei_splits(prefix, coco_dir, image_root):
    """Register every ``<coco_dir>/<split>.json`` as ``<prefix>_<split>``; returns the names."""
    files = sorted(Path(coco_dir).glob("*.json"))
    if not files:
        raise ValueError(f"no COCO JSON files in {coco_dir}")
    names = []
    for path in files:
        names.append(f"{prefix}_{path.stem}")
        register_nuclei_dataset(names[-1], path, image_root)
    return names
