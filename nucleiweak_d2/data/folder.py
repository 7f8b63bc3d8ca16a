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
mismatch, float label map, empty dataset, missing label (or points file) for an image,
unknown split names, a name listed twice in a split, and an image in both the ``train`` split
and a split whose name starts with ``val`` or ``test`` (:mod:`.checks`). Sizes are read from
file headers, so listing a dataset is fast; ``decode=True`` also decodes every image once,
so that a truncated file (intact header, cut pixel data) fails here and not in training.
"""

import json
from pathlib import Path

from .checks import check_images_decode, check_split_lists_disjoint
from .io import IMAGE_EXTENSIONS, LABEL_EXTENSIONS, image_size

__all__ = ["load_folder_dataset", "read_split_file", "list_splits", "check_split_names"]


def _index_by_stem(folder, extensions, what):
    """Map file stem -> path for files of ``folder`` with one of ``extensions``."""
    found = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in extensions or path.name.startswith("."):
            continue
        if path.stem in found:
            raise ValueError(
                f"two {what} files share the name {path.stem!r}: {found[path.stem]} and {path}"
            )
        found[path.stem] = path
    return found


def read_split_file(root):
    """Return the splits of ``root/split.json`` as ``{split: [names]}`` (list values only).

    Keys whose value is not a list of strings (such as ``"organ"``) are metadata and skipped.
    Returns an empty dict when the file does not exist.

    Raises
    ------
    ValueError
        Unparsable file, a name listed twice in one split, or an image in both ``train`` and
        a split whose name starts with ``val`` or ``test`` (other splits, such as MoNuSeg's
        ``kumar_hovernet_*``, may overlap anything; see :mod:`.checks`).
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
    splits = {
        k: list(v)
        for k, v in content.items()
        if isinstance(v, list) and all(isinstance(n, str) for n in v)
    }
    for split, names in splits.items():
        if len(set(names)) != len(names):
            twice = next(n for i, n in enumerate(names) if n in names[:i])
            raise ValueError(f"split {split!r} of {path} lists {twice!r} twice")
    check_split_lists_disjoint(splits, path)
    return splits


def list_splits(root):
    """Names of the splits of a folder dataset (``["all"]`` when it has no ``split.json``)."""
    splits = read_split_file(root)
    return list(splits) if splits else ["all"]


def _valid_names(root):
    """Split names accepted for ``root``: those of ``split.json`` plus ``"all"``."""
    return [s for s in list_splits(root) if s != "all"] + ["all"]


def check_split_names(root, names, what):
    """Refuse split names that ``root`` does not have (``"all"`` is always valid).

    Parameters
    ----------
    root : str or Path
        Folder dataset.
    names : sequence of str or None
        Names given by the user; ``None`` or empty checks nothing.
    what : str
        The option or argument that named them, e.g. ``"--weak-splits"``.

    Raises
    ------
    ValueError
        ``"unknown split 'trian' in --weak-splits; valid names: train, val, test, all (...)"``.
    """
    if not names:
        return
    valid = _valid_names(root)
    for name in names:
        if name not in valid:
            source = Path(root) / "split.json"
            raise ValueError(
                f"unknown split {name!r} in {what}; valid names: {', '.join(valid)} (from "
                f"{source if source.is_file() else str(root) + ', which has no split.json'})"
            )


def load_folder_dataset(root, split=None, *, decode=False):
    """List and validate the samples of a folder dataset.

    Parameters
    ----------
    root : str or Path
        Dataset folder with ``images/`` and ``labels/`` (or ``points/``).
    split : str, optional
        Name of a split in ``split.json``; ``None`` or ``"all"`` takes every image.
    decode : bool
        Also decode every listed image fully once (slower; catches truncated files).

    Returns
    -------
    list of dict
        One dict per image, in split order (sorted by name without split), with keys ``name``,
        ``image_path`` (Path), ``label_path`` (Path, or None in a points-only folder),
        ``points_path`` (Path or None), ``height`` and ``width``.

    Raises
    ------
    ValueError
        Missing folders, empty dataset, unreadable (or, with ``decode``, undecodable) image,
        float label map, size mismatch, missing label or points file, unknown split, unknown
        or repeated name in a split, image in both ``train`` and a val/test split.
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
            raise ValueError(
                f"split {split!r} requested but {root / 'split.json'} is missing; valid names: all"
            )
        if split not in splits:
            raise ValueError(
                f"unknown split {split!r} in {root / 'split.json'}; valid names: "
                f"{', '.join(_valid_names(root))}"
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
                    f"label map {label_path} holds floats; expected an integer instance map"
                )
            if (lh, lw) != (height, width):
                raise ValueError(
                    f"size mismatch: image {image_path} is {height}x{width} but label "
                    f"{label_path} is {lh}x{lw}"
                )
        points_path = points.get(name)
        if labels is None and points_path is None:
            raise ValueError(
                f"missing points file for image {image_path} (looked for {point_dir / name}.csv)"
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
    if decode:
        check_images_decode(s["image_path"] for s in samples)
    return samples
