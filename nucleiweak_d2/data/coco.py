"""COCO export of folder datasets with point annotations, and the reader for such files.

The JSON layout is fixed by docs/CONTRACTS.md. This module needs neither detectron2 nor
pycocotools (RLE is written by :mod:`nucleiweak_d2.data.rle`); pycocotools reads its output.

Reproducibility: the partial-sampling and the shift streams of an image are seeded with
``(seed, crc32(name), 0)`` and ``(seed, crc32(name), 1)``, so an image gets the same points
whatever split or file it is exported in, the shifts do not depend on the ratio, and the
labelled sets are nested across ratios for one seed.
"""

import json
import math
import zlib
from pathlib import Path

import numpy as np

from .atomic import write_json
from .checks import (
    HINT_OFFSET,
    check_images_decode,
    check_points_inside,
    check_training_points,
)
from .folder import check_split_names, list_splits, load_folder_dataset
from .io import read_label, read_xy_csv
from .points import POINT_MODES, parse_shift, points_and_boxes, sample_partial, shift_points
from .rle import label_to_rles

__all__ = [
    "ANNOTATION_MODES",
    "BOX_MODE_XYWH_ABS",
    "build_coco",
    "export_coco_splits",
    "load_nuclei_coco",
    "read_points_csv",
    "read_points_file",
    "POINTS_EXTENSIONS",
    "image_seeds",
    "find_image_root",
]

ANNOTATION_MODES = ("points", "partial_mask", "points_only")
#: Value of ``detectron2.structures.BoxMode.XYWH_ABS`` (kept as an int so that this module
#: imports without detectron2; :mod:`.datasets` turns it into the enum).
BOX_MODE_XYWH_ABS = 1


def image_seeds(seed, name):
    """Seeds ``(partial, shift)`` of one image: independent streams derived from its name."""
    key = zlib.crc32(str(name).encode("utf-8"))
    return (int(seed), key, 0), (int(seed), key, 1)


def round_half_up(values):
    """Nearest integer pixel of float coordinates, halves rounded up (``2.5 -> 3``)."""
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5).astype(np.int64)


def read_points_csv(path, shape=None, image=None):
    """Read clicked points (columns by header, see :func:`~.io.read_xy_csv`) as int64 pixels.

    Float coordinates (QuPath, ImageJ) are rounded to the nearest pixel, halves up.

    Parameters
    ----------
    path : str or Path
        Points file.
    shape : tuple, optional
        ``(H, W)`` of the image: points must satisfy 0 <= x < W and 0 <= y < H after rounding.
    image : str, optional
        Image name for the messages (default: the points file's stem).

    Returns
    -------
    np.ndarray
        ``(N, 2)`` int64 ``(x, y)``, ``N >= 1``.

    Raises
    ------
    ValueError
        Naming the file (and line) when it is unreadable or ambiguous, holds no point, or a
        point is negative or (with ``shape``) outside the image.
    """
    path = Path(path)
    values, numbers = read_xy_csv(path)
    if not len(values):
        raise ValueError(f"no points in points file {path}")
    points = round_half_up(values)
    if shape is not None:
        check_points_inside(points, shape, image or path.stem, f"points file {path} line", numbers)
    negative = np.flatnonzero((points < 0).any(axis=1))
    if len(negative):
        k = int(negative[0])
        raise ValueError(
            f"points file {path} line {numbers[k]}: negative pixel coordinates "
            f"({values[k, 0]:g}, {values[k, 1]:g}); {HINT_OFFSET}"
        )
    return points


#: Files of clicked points: CSV/TSV by header (:func:`read_points_csv`) or QuPath GeoJSON.
POINTS_EXTENSIONS = (".csv", ".tsv", ".txt", ".geojson", ".json")


def read_points_file(
    path, shape=None, image=None, *, classes=None, polygons=False, offset=(0.0, 0.0)
):
    """Read clicked points from a CSV/TSV (by header) or a QuPath GeoJSON file, as int64
    pixel indices.

    CSV coordinates are rounded to the nearest pixel, halves up (:func:`read_points_csv`).
    GeoJSON coordinates are QuPath's continuous coordinates (pixel ``c`` covers
    ``[c, c + 1)``), so a point lies in pixel ``floor(x), floor(y)``; ``Point`` and
    ``MultiPoint`` geometries of annotations and detections are read
    (:func:`~.geojson.read_geojson_points`).

    Parameters
    ----------
    path : str or Path
        ``.geojson`` / ``.json``: GeoJSON; anything else: CSV/TSV.
    shape : tuple, optional
        ``(H, W)``: points must lie inside.
    image : str, optional
        Image name for the messages.
    classes : sequence of str, optional
        GeoJSON only: keep the features of these classification names.
    polygons : bool
        GeoJSON only: also take the centroid of detection polygons.
    offset : tuple of float
        ``(dx, dy)`` subtracted before rounding: the image's top-left corner in the file's
        coordinates (e.g. a region's position in its slide).

    Returns
    -------
    np.ndarray
        ``(N, 2)`` int64 ``(x, y)``, ``N >= 1``.

    Raises
    ------
    ValueError
        Naming the file: unreadable, no point, or a point outside the image.
    """
    path = Path(path)
    dx, dy = float(offset[0]), float(offset[1])
    if path.suffix.lower() not in (".geojson", ".json"):
        if (dx, dy) == (0.0, 0.0):
            return read_points_csv(path, shape, image)
        values, numbers = read_xy_csv(path)
        values = values - [dx, dy]
        where = f"points file {path} line"
        points = round_half_up(values)
    else:
        from .geojson import read_geojson_points

        values = read_geojson_points(path, classes=classes, polygons=polygons) - [dx, dy]
        numbers = None
        where = f"GeoJSON points file {path}"
        points = np.floor(values).astype(np.int64).reshape(-1, 2)
    if not len(points):
        raise ValueError(
            f"no points in points file {path}" + (f" (classes {list(classes)})" if classes else "")
        )
    if shape is not None:
        check_points_inside(points, shape, image or path.stem, where, numbers)
    negative = np.flatnonzero((points < 0).any(axis=1))
    if len(negative):
        k = int(negative[0])
        raise ValueError(
            f"{where}: negative pixel coordinates ({values[k, 0]:g}, "
            f"{values[k, 1]:g}); {HINT_OFFSET}"
        )
    return points


def _relative(path, image_root):
    path = Path(path).resolve()
    try:
        return path.relative_to(Path(image_root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _settings(ratio, shift, seed, point_mode, annotation, split):
    return {
        "ratio": float(ratio),
        "shift": [float(shift[0]), float(shift[1])],
        "seed": int(seed),
        "point_mode": point_mode,
        "annotation": annotation,
        "split": split,
    }


def build_coco(
    samples,
    image_root,
    *,
    ratio=1.0,
    shift=(0.0, 0.0),
    seed=0,
    point_mode="bbox_center",
    annotation="points",
    split=None,
):
    """Build a COCO dict with point annotations for folder samples.

    Parameters
    ----------
    samples : list of dict
        From :func:`load_folder_dataset` (``name``, ``image_path``, ``label_path``,
        ``points_path``, ``height``, ``width``; optional ``image_id``).
    image_root : str or Path
        ``file_name`` and ``label_file_name`` are written relative to it (absolute when the
        file lies outside).
    ratio : float
        Fraction of points labelled per image, in (0, 1]; see :func:`sample_partial`.
    shift : tuple or str
        Shift range ``(min, max)`` px or a preset name; see :func:`shift_points`.
    seed : int
        Seed of sampling and shifts.
    point_mode : {"bbox_center", "centroid"}
        How points are placed on masks (ignored for ``points_only``).
    annotation : {"points", "partial_mask", "points_only"}
        ``points``: every instance keeps its mask (for evaluation), ``point_labeled`` marks the
        points given to the method. ``partial_mask``: same file, but ``point_labeled`` marks the
        instances whose *masks* are annotated (Feng et al.'s DH25 setting). ``points_only``:
        points from the samples' ``points_path`` files (CSV or QuPath GeoJSON, see
        :func:`read_points_file`; a sample's optional ``points_options`` dict is passed to
        it), no masks, boxes or areas.
    split : str, optional
        Split name, stored with the settings.

    Returns
    -------
    dict
        COCO dict as in docs/CONTRACTS.md.
    """
    if annotation not in ANNOTATION_MODES:
        raise ValueError(f"annotation must be one of {ANNOTATION_MODES}, got {annotation!r}")
    if point_mode not in POINT_MODES:
        raise ValueError(f"point_mode must be one of {POINT_MODES}, got {point_mode!r}")
    shift = parse_shift(shift)
    sample_partial(1, ratio, 0)  # validates ratio before any file is read
    if not samples:
        raise ValueError("build_coco got no samples (empty dataset)")
    images, annotations = [], []
    for index, sample in enumerate(samples):
        image_id = int(sample.get("image_id", index + 1))
        height, width = int(sample["height"]), int(sample["width"])
        record = {
            "id": image_id,
            "file_name": _relative(sample["image_path"], image_root),
            "height": height,
            "width": width,
        }
        partial_seed, shift_seed = image_seeds(seed, sample["name"])
        if annotation == "points_only":
            if sample.get("points_path") is None:
                raise ValueError(
                    f"points_only export needs points/{sample['name']}.csv for image "
                    f"{sample['image_path']}"
                )
            points = read_points_file(
                sample["points_path"],
                (height, width),
                Path(sample["image_path"]).name,
                **sample.get("points_options", {}),
            )
            rles = boxes = areas = None
        else:
            if sample.get("label_path") is None:
                raise ValueError(
                    f"annotation={annotation!r} needs a label map for image "
                    f"{sample['image_path']} (use 'points_only' for clicked points)"
                )
            label = read_label(sample["label_path"])
            if label.shape != (height, width):
                raise ValueError(
                    f"size mismatch: image {sample['image_path']} is {height}x{width} "
                    f"but label {sample['label_path']} is {label.shape[0]}x{label.shape[1]}"
                )
            record["label_file_name"] = _relative(sample["label_path"], image_root)
            ids, points, slices, areas = points_and_boxes(
                label, point_mode, where=sample["label_path"]
            )
            rles = label_to_rles(label, ids)
            boxes = [
                [s[1].start, s[0].start, s[1].stop - s[1].start, s[0].stop - s[0].start]
                for s in slices
            ]
        labeled = sample_partial(len(points), ratio, partial_seed)
        new_points, shifts = shift_points(points, (height, width), shift, shift_seed)
        images.append(record)
        for k in range(len(points)):
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1}
            if rles is not None:
                ann.update(
                    {
                        "segmentation": rles[k],
                        "bbox": [int(v) for v in boxes[k]],
                        "area": float(areas[k]),
                        "iscrowd": 0,
                    }
                )
            ann.update(
                {
                    "point": [int(new_points[k, 0]), int(new_points[k, 1])],
                    "point_labeled": int(labeled[k]),
                    "point_shift": [int(shifts[k, 0]), int(shifts[k, 1])],
                }
            )
            annotations.append(ann)
    info = {
        "description": "nucleiweak_d2 point annotations",
        "nucleiweak": _settings(ratio, shift, seed, point_mode, annotation, split),
    }
    return {
        "info": info,
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "nucleus"}],
    }


def export_coco_splits(
    root,
    out_dir,
    ratio=1.0,
    shift=(0.0, 0.0),
    seed=0,
    point_mode="bbox_center",
    annotation="points",
    *,
    splits=None,
    weak_splits=None,
    overwrite=False,
):
    """Write one COCO JSON per split of a folder dataset.

    Parameters
    ----------
    root : str or Path
        Folder dataset (see :mod:`.folder`); it is the ``image_root`` of the written files.
    out_dir : str or Path
        Output folder; files are ``<out_dir>/<split>.json``.
    ratio, shift, seed, point_mode, annotation
        See :func:`build_coco`.
    splits : list of str, optional
        Splits to export (default: every split of ``split.json``, or ``"all"`` without one).
    weak_splits : list of str, optional
        When given, ``ratio`` and ``shift`` apply only to these splits; the others get every
        point, unshifted (e.g. ``["train"]`` keeps val/test points exact for detection
        metrics). Default: they apply to every split. Each file records its own settings.
    overwrite : bool
        Replace existing files; without it, an existing output raises FileExistsError.

    Returns
    -------
    dict
        ``{split: Path}`` of the written files. Each records the dataset root in
        ``info.image_root`` (relative to ``out_dir`` when ``out_dir`` lies inside the root,
        e.g. ``".."``, else absolute), so tools given only the JSON find the images.

    Raises
    ------
    ValueError
        A name in ``splits`` / ``weak_splits`` that the dataset does not have (the message
        lists the valid ones); any :func:`load_folder_dataset` error (including an image in
        both ``train`` and a val/test split); an image that does not decode fully; a weak
        split without any labelled point (:func:`~.checks.check_training_points`).
    FileExistsError
        An output exists and ``overwrite`` is False.

    Every check runs before the first file is written: a refused export changes no file.
    """
    root, out_dir = Path(root), Path(out_dir)
    check_split_names(root, splits, "splits (--splits)")
    check_split_names(root, weak_splits, "weak_splits (--weak-splits)")
    splits = list(splits) if splits else list_splits(root)
    targets = {s: out_dir / f"{s}.json" for s in splits}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"refusing to overwrite {existing} (pass overwrite=True / --overwrite)"
        )
    all_names = {s["name"]: i + 1 for i, s in enumerate(load_folder_dataset(root))}
    samples = {split: load_folder_dataset(root, split) for split in splits}
    check_images_decode(s["image_path"] for split in splits for s in samples[split])
    payloads = {}
    for split in splits:
        for sample in samples[split]:
            sample["image_id"] = all_names[sample["name"]]
        weak = weak_splits is None or split in weak_splits
        payloads[split] = build_coco(
            samples[split],
            root,
            ratio=ratio if weak else 1.0,
            shift=shift if weak else (0.0, 0.0),
            seed=seed,
            point_mode=point_mode,
            annotation=annotation,
            split=split,
        )
        if weak:
            check_training_points(payloads[split], split)
        payloads[split]["info"]["image_root"] = _recorded_root(root, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, payload in payloads.items():
        write_json(targets[split], payload, indent=None)
    return targets


def _recorded_root(root, out_dir):
    """The dataset root as stored in ``info.image_root``: relative to ``out_dir`` when that
    lies inside the root (so the tree can move), else absolute."""
    root, out_dir = Path(root).resolve(), Path(out_dir).resolve()
    try:
        depth = len(out_dir.relative_to(root).parts)
    except ValueError:
        return str(root)
    return "/".join([".."] * depth) or "."


def find_image_root(json_file, content=None):
    """Default image root of a nuclei COCO file, for tools given only the JSON.

    The first that exists of: ``info.image_root`` (written by :func:`export_coco_splits`;
    relative to the JSON's folder, or absolute); the nearest folder, from the JSON's own
    folder upwards, that contains ``images/``.

    Parameters
    ----------
    json_file : str or Path
    content : dict, optional
        The parsed file, when already read.

    Returns
    -------
    tuple
        ``(Path, how)``: the folder and a few words on how it was found, for messages.

    Raises
    ------
    ValueError
        When neither exists; the message says to pass ``--image-root``.
    """
    json_file = Path(json_file).resolve()
    if content is None:
        try:
            content = json.loads(json_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read COCO file {json_file}: {exc}") from exc
    info = content.get("info") if isinstance(content, dict) else None
    recorded = info.get("image_root") if isinstance(info, dict) else None
    if isinstance(recorded, str) and (json_file.parent / recorded).is_dir():
        return (json_file.parent / recorded).resolve(), "info.image_root of the file"
    for folder in json_file.parents:
        if (folder / "images").is_dir():
            return folder, "nearest folder above the file with images/"
    raise ValueError(
        f"cannot find the image root of {json_file}: it records no existing info.image_root "
        f"and no folder above it contains images/; pass --image-root"
    )


def load_nuclei_coco(json_file, image_root):
    """Read a nuclei COCO JSON into Detectron2-style dataset dicts (docs/CONTRACTS.md).

    Parameters
    ----------
    json_file : str or Path
        File written by :func:`export_coco_splits`, a points-only file, or any COCO instance
        file. Annotations without ``point`` get the centre of their bbox
        (``x + (w - 1) // 2, y + (h - 1) // 2``), ``point_labeled`` defaults to 1 and
        ``point_shift`` to ``[0, 0]``. Every category is mapped to class 0 (nucleus).
        Float points are rounded to the nearest pixel (halves up).
    image_root : str or Path
        Folder that relative ``file_name`` / ``label_file_name`` are joined to.

    Returns
    -------
    list of dict
        Records with ``file_name`` (absolute), ``height``, ``width``, ``image_id``,
        ``label_file_name`` (when known), ``nucleiweak`` (settings) and ``annotations``
        (``bbox`` + ``bbox_mode`` = XYWH_ABS as int 1, ``segmentation``, ``area`` when present;
        ``category_id`` 0, ``iscrowd``, ``point``, ``point_labeled`` (bool), ``point_shift``).

    Raises
    ------
    ValueError
        Unreadable file, image entry without ``file_name``/``height``/``width``/``id``,
        annotation without a usable point, or a point outside its image (valid pixel
        indices: 0 <= x < width, 0 <= y < height), naming the image and the first bad point.
    """
    json_file, image_root = Path(json_file), Path(image_root)
    try:
        content = json.loads(json_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read COCO file {json_file}: {exc}") from exc
    if not isinstance(content, dict) or "images" not in content:
        raise ValueError(f"COCO file {json_file} has no 'images' list")
    settings = dict(content.get("info", {}).get("nucleiweak", {}))
    settings.setdefault(
        "annotation",
        (
            "points"
            if any("segmentation" in a for a in content.get("annotations", []))
            else "points_only"
        ),
    )
    by_image = {}
    for ann in content.get("annotations", []):
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    records = []
    for image in content["images"]:
        try:
            record = {
                "file_name": str(image_root / image["file_name"]),
                "height": int(image["height"]),
                "width": int(image["width"]),
                "image_id": image["id"],
                "nucleiweak": settings,
            }
        except KeyError as exc:
            raise ValueError(f"COCO file {json_file}: image entry {image} lacks {exc}") from None
        if image.get("label_file_name"):
            record["label_file_name"] = str(image_root / image["label_file_name"])
        raw = by_image.get(image["id"], [])
        record["annotations"] = [_convert_annotation(a, json_file) for a in raw]
        _check_record_points(record, image["file_name"], json_file, [a.get("id") for a in raw])
        records.append(record)
    return records


def _check_record_points(record, image_name, json_file, annotation_ids):
    """Refuse annotation points outside the record's image (naming image and annotation)."""
    annotations = record["annotations"]
    if not annotations:
        return
    points = np.array([a["point"] for a in annotations], dtype=np.int64)
    check_points_inside(
        points,
        (record["height"], record["width"]),
        image_name,
        f"COCO file {json_file} annotation",
        annotation_ids,
    )


def _convert_annotation(ann, json_file):
    out = {"category_id": 0, "iscrowd": int(ann.get("iscrowd", 0))}
    if "bbox" in ann:
        out["bbox"] = [float(v) for v in ann["bbox"]]
        out["bbox_mode"] = BOX_MODE_XYWH_ABS
    if "segmentation" in ann:
        out["segmentation"] = ann["segmentation"]
    if "area" in ann:
        out["area"] = float(ann["area"])
    point = ann.get("point")
    if point is None:
        if "bbox" not in ann:
            raise ValueError(
                f"COCO file {json_file}: annotation {ann.get('id')} has neither 'point' nor 'bbox'"
            )
        x, y, w, h = ann["bbox"]
        point = [
            int(x) + (max(int(round(w)), 1) - 1) // 2,
            int(y) + (max(int(round(h)), 1) - 1) // 2,
        ]
    try:
        x, y = (float(v) for v in point)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(
            f"COCO file {json_file}: annotation {ann.get('id')} has point {point!r}; "
            f"expected [x, y] numbers"
        ) from None
    out["point"] = [int(v) for v in round_half_up([x, y])]
    out["point_labeled"] = bool(ann.get("point_labeled", 1))
    out["point_shift"] = [int(v) for v in ann.get("point_shift", (0, 0))]
    return out
