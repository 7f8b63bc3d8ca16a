"""Folder datasets: ``images/`` + ``labels/`` (or ``points/``) + optional ``split.json``.

Layout (see ``datasets/README.md``)::

    root/
      images/<name>.<png|tif|tiff|jpg|jpeg|bmp>
      labels/<name>.<png|tif|tiff|npy>      integer instance map, 0 = background
                                            (``<name>_label.<ext>`` is accepted too)
      points/<name>.csv                     optional; clicked points "x,y" per line, for
                                            users without masks (used when labels/ is absent)
      split.json                            optional; {"train": [names], "val": [...], ...}

Validation happens here, with errors that name the file: unreadable image, image/label size
mismatch, float label map, empty dataset, missing label (or points file) for an image, and
unknown split names. Sizes are read from file headers, so listing a dataset is fast; a file
whose header is fine but whose pixel data is corrupt fails later in :func:`read_image`.
"""

import json
from pathlib import Path

from .io import IMAGE_EXTENSIONS, LABEL_EXTENSIONS, image_size

__all__ = ["load_folder_dataset", "read_split_file", "list_splits"]


def _index_by_stem(folder, extensions, what):
    """Map file stem -> path for files of ``folder`` with one of ``extensions``."""
    found = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in extensions or path.name.startswith("."):
            continue
        if path.stem in found:
            raise ValueError(
                f"two {what} files share the name {path.stem!r}: {found[path.stem]} " f"and {path}"
            )
        found[path.stem] = path
    return found


def read_split_file(root):
    """Return the splits of ``root/split.json`` as ``{split: [names]}`` (list values only).

    Keys whose value is not a list of strings (such as ``"organ"``) are metadata and skipped.
    Returns an empty dict when the file does not exist.
    """
    path = Path(root) / "split.json"
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot parse split file {path}: {exc}") from exc
    if not isinstance(content, dict):
        raise ValueError(
            f"split file {path} must hold a JSON object of split name -> list of names"
        )
    return {
        k: list(v)
        for k, v in content.items()
        if isinstance(v, list) and all(isinstance(n, str) for n in v)
    }


def list_splits(root):
    """Names of the splits of a folder dataset (``["all"]`` when it has no ``split.json``)."""
    splits = read_split_file(root)
    return list(splits) if splits else ["all"]


def load_folder_dataset(root, split=None):
    """List and validate the samples of a folder dataset.

    Parameters
    ----------
    root : str or Path
        Dataset folder with ``images/`` and ``labels/`` (or ``points/``).
    split : str, optional
        Name of a split in ``split.json``; ``None`` or ``"all"`` takes every image.

    Returns
    -------
    list of dict
        One dict per image, in split order (sorted by name without split), with keys ``name``,
        ``image_path`` (Path), ``label_path`` (Path, or None in a points-only folder),
        ``points_path`` (Path or None), ``height`` and ``width``.

    Raises
    ------
    ValueError
        Missing folders, empty dataset, unreadable image, float label map, size mismatch,
        missing label or points file, unknown split or unknown name in a split.
    """
    root = Path(root)
    image_dir, label_dir, point_dir = root / "images", root / "labels", root / "points"
    if not image_dir.is_dir():
        raise ValueError(f"dataset folder {root} has no images/ folder")
    if not label_dir.is_dir() and not point_dir.is_dir():
        raise ValueError(f"dataset folder {root} has neither labels/ nor points/")
    images = _index_by_stem(image_dir, IMAGE_EXTENSIONS, "image")
    if not images:
        raise ValueError(f"empty dataset: no image files in {image_dir}")
    labels = _index_by_stem(label_dir, LABEL_EXTENSIONS, "label") if label_dir.is_dir() else None
    points = _index_by_stem(point_dir, (".csv",), "points") if point_dir.is_dir() else {}

    if split is None or split == "all":
        names = sorted(images)
    else:
        splits = read_split_file(root)
        if not splits:
            raise ValueError(f"split {split!r} requested but {root / 'split.json'} is missing")
        if split not in splits:
            raise ValueError(
                f"unknown split {split!r} in {root / 'split.json'}; " f"available: {sorted(splits)}"
            )
        names = splits[split]
        if not names:
            raise ValueError(
                f"empty dataset: split {split!r} of {root / 'split.json'} lists no image"
            )
        missing = [n for n in names if n not in images]
        if missing:
            raise ValueError(
                f"split {split!r} of {root / 'split.json'} names images missing from "
                f"{image_dir}: {missing[:5]}"
            )

    samples = []
    for name in names:
        image_path = images[name]
        height, width, _ = image_size(image_path)
        label_path = None
        if labels is not None:
            label_path = labels.get(name, labels.get(name + "_label"))
            if label_path is None:
                raise ValueError(
                    f"missing label for image {image_path} (looked for "
                    f"{label_dir / name}.<png|tif|npy>)"
                )
            lh, lw, kind = image_size(label_path)
            if kind == "f":
                raise ValueError(
                    f"label map {label_path} holds floats; expected an integer " f"instance map"
                )
            if (lh, lw) != (height, width):
                raise ValueError(
                    f"size mismatch: image {image_path} is {height}x{width} but label "
                    f"{label_path} is {lh}x{lw}"
                )
        points_path = points.get(name)
        if labels is None and points_path is None:
            raise ValueError(
                f"missing points file for image {image_path} (looked for "
                f"{point_dir / name}.csv)"
            )
        samples.append(
            {
                "name": name,
                "image_path": image_path,
                "label_path": label_path,
                "points_path": points_path,
                "height": height,
                "width": width,
            }
        )
    return samples
