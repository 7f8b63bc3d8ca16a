"""The "DH25crop" training set as a folder dataset on disk (the glue around :mod:`.crops`)."""

import json
from pathlib import Path

from ...data.folder import load_folder_dataset
from ...data.io import read_image, read_label, write_image, write_label
from .crops import crop_fully_annotated, crop_seed

__all__ = ["write_crop_dataset"]


def write_crop_dataset(data, root, ratio, seed, split="train"):
    """Write the fully annotated crops of ``data``'s ``split`` as a folder dataset ``root``.

    Each image of the split is cut to one window of ``ratio`` of its area at a position seeded
    by ``(seed, image name)`` (:func:`~.crops.crop_fully_annotated`); every nucleus in the window
    keeps its label. ``root`` gets ``images/``, ``labels/`` and a ``split.json`` holding
    ``split`` only.

    Parameters
    ----------
    data : str or Path
        Folder dataset (``images/``, ``labels/``, ``split.json``).
    root : str or Path
        Output folder.
    ratio : float
        Area fraction of each window, in (0, 1].
    seed : int
        Seed of the windows.
    split : str
        Split of ``data`` to crop.

    Returns
    -------
    (Path, int)
        ``root`` and the number of nuclei in the crops.
    """
    root = Path(root)
    names, n_nuclei = [], 0
    for sample in load_folder_dataset(data, split):
        image, label = read_image(sample["image_path"]), read_label(sample["label_path"])
        image, label, _ = crop_fully_annotated(image, label, ratio, crop_seed(seed, sample["name"]))
        write_image(root / "images" / f"{sample['name']}.png", image)
        write_label(root / "labels" / f"{sample['name']}.png", label)
        names.append(sample["name"])
        n_nuclei += int(label.max())
    (root / "split.json").write_text(json.dumps({split: names}))
    return root, n_nuclei
