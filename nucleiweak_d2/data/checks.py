"""Checks of whole datasets, run when a dataset is prepared or registered for training.

Each check raises a one-line ``ValueError`` that names the dataset (and the image) at fault.
No detectron2 needed; the trainer calls :func:`check_training_points` and
:func:`check_disjoint_splits` on its dataset dicts.

Split rule (docs/CONTRACTS.md): the *training split* is the split named ``train``; the
*held-out splits* are those whose names start with ``val`` or ``test`` (case-insensitive).
No image may be in both. Other splits (MoNuSeg's ``kumar_hovernet_*``, ``organ``, ...) are
not part of the train/val/test protocol and may overlap anything, and held-out splits may
overlap each other (``test`` = ``testA`` + ``testB``).
"""

import os

import numpy as np

from .io import check_image_decodes

__all__ = [
    "HINT_OFFSET",
    "split_role",
    "check_training_points",
    "check_split_lists_disjoint",
    "check_disjoint_splits",
    "check_images_decode",
    "check_points_inside",
]

#: Appended to every "point outside the image" message.
HINT_OFFSET = "an offset between slide and tile coordinates is the usual cause"


def split_role(name):
    """``"train"``, ``"heldout"`` or ``None`` for a split name (see the module's rule)."""
    lowered = str(name).lower()
    if lowered == "train":
        return "train"
    if lowered.startswith(("val", "test")):
        return "heldout"
    return None


def _is_labelled(annotation):
    return bool(annotation.get("point_labeled", 1))


def check_training_points(dataset_dicts, name):
    """Refuse a training dataset without any annotated point.

    Parameters
    ----------
    dataset_dicts : list of dict or dict
        Detectron2 dataset dicts (each with ``annotations``; an annotation counts when its
        ``point_labeled`` is true or absent), or a COCO dict with an ``annotations`` list.
    name : str
        Dataset name for the message.

    Returns
    -------
    int
        Number of annotated points.

    Raises
    ------
    ValueError
        ``"dataset <name> has no annotated points ..."`` when the count is 0.
    """
    if isinstance(dataset_dicts, dict):  # a COCO dict
        annotations = dataset_dicts.get("annotations", [])
        n_images = len(dataset_dicts.get("images", []))
    else:
        dataset_dicts = list(dataset_dicts)
        annotations = [a for d in dataset_dicts for a in d.get("annotations", [])]
        n_images = len(dataset_dicts)
    count = sum(1 for a in annotations if _is_labelled(a))
    if count == 0:
        raise ValueError(
            f"dataset {name!r} has no annotated points (point_labeled == 1) in its {n_images} "
            f"images and {len(annotations)} annotations; a point-supervised method cannot "
            f"train on it (check the label maps / points files and --ratio / --weak-splits)"
        )
    return count


def _first_overlap(members, roles, where):
    """Raise for the first (training, held-out) pair of ``members`` sharing an item."""
    train = [n for n in members if roles[n] == "train"]
    heldout = [n for n in members if roles[n] == "heldout"]
    for t in train:
        for h in heldout:
            shared = [item for item in members[t] if item in members[h]]
            if shared:
                raise ValueError(
                    f"{where}: image {shared[0]!r} is in both {t!r} and {h!r} "
                    f"({len(shared)} shared); a training image must not be evaluated"
                )


def check_split_lists_disjoint(splits, where):
    """Refuse a ``split.json`` whose ``train`` split shares an image with a held-out split.

    Parameters
    ----------
    splits : dict
        ``{split: [image names]}`` as read from ``split.json``.
    where : str or Path
        The split file, for the message.
    """
    members = {name: dict.fromkeys(names) for name, names in splits.items()}  # ordered sets
    _first_overlap(members, {name: split_role(name) for name in splits}, where)


def _image_key(record):
    """Absolute real path of a record's image (``file_name`` or ``image_path``)."""
    path = record.get("file_name") or record.get("image_path")
    if not path:
        raise ValueError(f"dataset record has neither file_name nor image_path: {sorted(record)}")
    return os.path.realpath(str(path))


def check_disjoint_splits(dataset_dicts_by_name, train_names=None):
    """Refuse training and held-out datasets that share an image.

    Parameters
    ----------
    dataset_dicts_by_name : dict
        ``{dataset name: list of dataset dicts}`` (Detectron2 dicts with ``file_name`` or
        folder samples with ``image_path``); images are compared by their real path.
    train_names : sequence of str, optional
        The training datasets (the trainer passes ``cfg.DATASETS.TRAIN``); every other given
        dataset is then held out. Default: roles from the names by :func:`split_role`
        (``train`` vs names starting with ``val`` / ``test``; others unchecked).

    Raises
    ------
    ValueError
        ``"datasets: image '<path>' is in both '<train>' and '<test>' (<n> shared); ..."``.
    """
    if train_names is None:
        roles = {name: split_role(name) for name in dataset_dicts_by_name}
    else:
        train_names = set(train_names)
        roles = {n: "train" if n in train_names else "heldout" for n in dataset_dicts_by_name}
    members = {
        name: dict.fromkeys(_image_key(r) for r in dicts)
        for name, dicts in dataset_dicts_by_name.items()
    }
    _first_overlap(members, roles, "datasets")


def check_images_decode(paths):
    """Fully decode every image once (see :func:`~.io.check_image_decodes`).

    Parameters
    ----------
    paths : iterable of str or Path
        Duplicates are decoded once.
    """
    for path in dict.fromkeys(str(p) for p in paths):
        check_image_decodes(path)


def check_points_inside(points, shape, image, source, lines=None):
    """Refuse points outside an image; valid pixel indices are 0 <= x < W, 0 <= y < H.

    Parameters
    ----------
    points : np.ndarray
        ``(N, 2)`` ``(x, y)``.
    shape : tuple
        ``(H, W)``.
    image : str
        Image name for the message.
    source : str
        Where the points come from (file, and annotation/line), for the message.
    lines : sequence, optional
        Per-point location (line number or annotation id) named in the message.
    """
    height, width = int(shape[0]), int(shape[1])
    points = np.asarray(points).reshape(-1, 2)
    x, y = points[:, 0], points[:, 1]
    bad = np.flatnonzero((x < 0) | (x >= width) | (y < 0) | (y >= height))
    if not len(bad):
        return
    k = int(bad[0])
    x, y = points[k]
    at = f" {lines[k]}" if lines is not None else ""
    raise ValueError(
        f"{source}{at}: image {image} ({height}x{width}) has {len(bad)} point"
        f"{'s' if len(bad) > 1 else ''} outside it, first (x, y) = ({x:g}, {y:g}); valid is "
        f"0 <= x < {width}, 0 <= y < {height}; {HINT_OFFSET}"
    )
