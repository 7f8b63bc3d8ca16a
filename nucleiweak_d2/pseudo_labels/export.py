"""Batch export of pseudo-labels to PNG files (the worker of ``tools/make_pseudo_labels.py``).

Lives in the package so that worker processes can import it.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from ..data.records import record_points
from . import (
    BACKGROUND,
    IGNORE,
    NUCLEUS,
    adaptive_cluster_label,
    cluster_label,
    donuseg_initial_label,
    extended_gaussian_target,
    geodesic_labels,
    voronoi_label,
)

__all__ = ["KINDS", "make_labels", "overlay", "output_paths", "process"]

KINDS = ("voronoi", "cluster", "adaptive", "geo_voronoi", "geo_cluster", "donuseg", "ext_gaussian")
_COLOURS = {NUCLEUS: (0, 255, 0), BACKGROUND: (255, 0, 0)}


def make_labels(image, points, kinds):
    """Compute the requested label kinds for one image: ``{kind: uint8 (H, W) 0/1/2}``."""
    shape = image.shape[:2]
    if len(points) == 0:
        return {k: np.full(shape, IGNORE, dtype=np.uint8) for k in kinds}
    out = {}
    if "geo_voronoi" in kinds or "geo_cluster" in kinds:
        vor, clu = geodesic_labels(
            image, points, voronoi="geo_voronoi" in kinds, cluster="geo_cluster" in kinds
        )
        out.update({"geo_voronoi": vor, "geo_cluster": clu})
    for kind in kinds:
        if kind == "voronoi":
            out[kind] = voronoi_label(points, shape)
        elif kind == "cluster":
            out[kind] = cluster_label(image, points)
        elif kind == "adaptive":
            out[kind] = adaptive_cluster_label(image, points)
        elif kind == "donuseg":
            out[kind] = donuseg_initial_label(points, shape)
        elif kind == "ext_gaussian":
            target, weight = extended_gaussian_target(points, shape)
            lab = np.full(shape, IGNORE, dtype=np.uint8)
            lab[weight > 0] = BACKGROUND
            lab[target > 0] = NUCLEUS
            out[kind] = lab
    return {k: out[k] for k in kinds}


def overlay(image, label, alpha=0.5):
    """Blend nucleus pixels with green and background pixels with red; ignore untouched."""
    out = image.astype(np.float32)
    for value, colour in _COLOURS.items():
        m = label == value
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(colour, dtype=np.float32)
    return np.round(out).astype(np.uint8)


def output_paths(record, kinds, out_dir):
    """``{kind: (label_png, overlay_png)}`` paths of one dataset record."""
    stem = Path(record["file_name"]).stem
    return {
        k: (out_dir / k / f"{stem}.png", out_dir / f"{k}_overlay" / f"{stem}.png") for k in kinds
    }


def process(job):
    """Worker: read one image, compute its labels, write the PNGs; return the point count.

    ``job`` is ``(record, kinds, out_dir, all_points, alpha, write_overlay)``.
    """
    from nucleiweak_d2.data.io import read_image

    record, kinds, out_dir, all_points, alpha, write_overlay = job
    image = read_image(record["file_name"])
    points = record_points(record, all_points=all_points)
    labels = make_labels(image, points, kinds)
    for kind, (lab_path, ov_path) in output_paths(record, kinds, Path(out_dir)).items():
        Image.fromarray(labels[kind], mode="L").save(lab_path)
        if write_overlay:
            Image.fromarray(overlay(image, labels[kind], alpha)).save(ov_path)
    return len(points)
