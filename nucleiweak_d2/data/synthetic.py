"""Seeded synthetic H&E tiles with exact instance labels (numpy, scipy, scikit-image).

Each tile is rendered with a Beer-Lambert stain model: per-pixel hematoxylin and eosin
concentrations times stain optical-density vectors (Ruifrok & Johnston's H&E vectors,
jittered per image), then ``I0 * exp(-OD)``. Content:

* eosin-pink stroma with low-frequency density changes, fibre streaks, fine texture and a few
  pale lumen/fat spaces;
* hematoxylin nuclei of two kinds: small, round, dark "lymphocytes" and larger, elliptical,
  paler "epithelial/stromal" nuclei with chromatin texture and a darker rim; irregular
  outlines (low-order Fourier perturbation of an ellipse);
* clusters grown by placing each new nucleus at 0.75-1.05 times the sum of radii from a
  nucleus of its cluster, so nuclei touch and overlap (later nuclei occlude earlier ones);
* soft concentration edges, optical blur and sensor noise, and global stain and intensity
  variation.

Labels are exact: each instance is the visible (unoccluded) part of its nucleus, restricted to
its largest 4-connected component; fragments and instances under ``min_area`` become
stroma in both the label and the image, since the image is rendered from the final label.

:func:`make_synthetic_dataset` records every file it writes, with its SHA-256, in
``<out>/.nucleiweak_synthetic.json`` (the manifest). It only ever deletes files listed there
and unchanged since, and refuses to write into a folder whose ``images/``, ``labels/`` or
``split.json`` hold anything else, so pointing it at a real dataset loses nothing.
"""

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from .io import write_image, write_label

__all__ = ["synthesize_image", "make_synthetic_dataset", "read_manifest", "MANIFEST_NAME"]

MANIFEST_NAME = ".nucleiweak_synthetic.json"
_LAYOUT = re.compile(r"^(split\.json|(images|labels)/[^/\\]+)$")  # what the manifest may list

_H_VECTOR = np.array([0.65, 0.70, 0.29])
_E_VECTOR = np.array([0.07, 0.99, 0.11])


def _smooth_noise(rng, shape, sigma):
    """Gaussian-filtered white noise scaled to zero mean and unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _nucleus_polygon(rng, cy, cx, a, b, theta):
    """Vertices (rows, cols) of an irregular ellipse with semi-axes a, b rotated by theta."""
    phi = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    wobble = np.ones_like(phi)
    for k in (2, 3, 4):
        wobble += rng.uniform(0.0, 0.06) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    x, y = a * np.cos(phi) * wobble, b * np.sin(phi) * wobble
    cols = cx + x * np.cos(theta) - y * np.sin(theta)
    rows = cy + x * np.sin(theta) + y * np.cos(theta)
    return rows, cols


def _layout(rng, shape, n_nuclei, radius_range, cluster_fraction):
    """Place nuclei; returns the raw label map (ids 1..n) and each nucleus' kind and density."""
    height, width = shape
    lo, hi = radius_range
    n_clusters = max(1, int(round(n_nuclei * cluster_fraction / 3.5)))
    centres = np.stack([rng.uniform(0, height, n_clusters), rng.uniform(0, width, n_clusters)], 1)
    members = [[] for _ in range(n_clusters)]
    label = np.zeros(shape, dtype=np.int32)
    density = np.zeros(n_nuclei + 1)
    lymph = np.zeros(n_nuclei + 1, dtype=bool)
    for i in range(1, n_nuclei + 1):
        if rng.random() < 0.35:  # lymphocyte: small, round, dark
            lymph[i] = True
            a = rng.uniform(lo, lo + 0.3 * (hi - lo))
            b = a * rng.uniform(0.85, 1.0)
            density[i] = rng.uniform(1.3, 1.9)
        else:  # epithelial / stromal: larger, elliptical, paler
            a = rng.uniform(lo + 0.25 * (hi - lo), hi)
            b = a * (rng.uniform(0.3, 0.5) if rng.random() < 0.15 else rng.uniform(0.55, 0.95))
            density[i] = rng.uniform(0.7, 1.3)
        radius = 0.5 * (a + b)
        if rng.random() < cluster_fraction:
            c = int(rng.integers(n_clusters))
            if members[c]:
                py, px, pr = members[c][int(rng.integers(len(members[c])))]
                angle = rng.uniform(0, 2 * np.pi)
                dist = (pr + radius) * rng.uniform(0.75, 1.05)
                cy, cx = py + dist * np.sin(angle), px + dist * np.cos(angle)
            else:
                cy, cx = centres[c]
            members[c].append((cy, cx, radius))
            rows, cols = _nucleus_polygon(rng, cy, cx, a, b, rng.uniform(0, np.pi))
            rr, cc = draw_polygon(rows, cols, shape)
        else:  # isolated nucleus: a few tries at a free spot (1 px clear of others)
            for _ in range(10):
                cy, cx = rng.uniform(0, height), rng.uniform(0, width)
                rows, cols = _nucleus_polygon(rng, cy, cx, a, b, rng.uniform(0, np.pi))
                rr, cc = draw_polygon(rows, cols, shape)
                r0, r1 = max(rr.min(initial=0) - 1, 0), rr.max(initial=0) + 2
                c0, c1 = max(cc.min(initial=0) - 1, 0), cc.max(initial=0) + 2
                if not label[r0:r1, c0:c1].any():
                    break
        label[rr, cc] = i
    return label, density, lymph


def _clean(label, min_area):
    """Keep each instance's largest 4-connected part if >= min_area; relabel 1..N (order kept)."""
    out = np.zeros_like(label)
    objects = ndimage.find_objects(label)
    old_ids = []
    for i, slc in enumerate(objects, start=1):
        if slc is None:
            continue
        comp, n = ndimage.label(label[slc] == i)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        if sizes.max() < min_area:
            continue
        old_ids.append(i)
        out[slc][comp == np.argmax(sizes) + 1] = len(old_ids)
    return out, np.asarray(old_ids, dtype=np.int64)


def _render(rng, label, density, lymph, blur_sigma, noise_std, stain_jitter):
    shape = label.shape
    fg = label > 0
    low = _smooth_noise(rng, shape, max(shape) / 12.0)
    fibres = _smooth_noise(rng, shape, (1.0, 5.0) if rng.random() < 0.5 else (5.0, 1.0))
    fine = _smooth_noise(rng, shape, 0.8)
    lumen = _smooth_noise(rng, shape, max(shape) / 10.0) > rng.uniform(1.3, 2.0)
    eosin = rng.uniform(0.2, 0.4) * (1.0 + 0.25 * low) + 0.05 * fibres + 0.03 * fine
    eosin = np.clip(eosin, 0.02, None)
    eosin[lumen] *= 0.15
    hema = np.clip(0.06 + 0.02 * fine + 0.02 * low, 0.0, None)

    chromatin = _smooth_noise(rng, shape, 1.0)
    inner = ndimage.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
    # distance to the boundary between two touching nuclei, so each nucleus gets its own rim
    edges = np.zeros(shape, dtype=bool)
    edges[:-1] |= label[:-1] != label[1:]
    edges[1:] |= label[:-1] != label[1:]
    edges[:, :-1] |= label[:, :-1] != label[:, 1:]
    edges[:, 1:] |= label[:, :-1] != label[:, 1:]
    inner = np.minimum(inner, ndimage.distance_transform_edt(~edges) + 1)
    nuc_density = density[label]
    texture = np.where(lymph[label], 0.15, 0.35) * chromatin
    rim = np.where(inner <= 1.5, np.where(lymph[label], 1.0, 1.25), 1.0)
    hema = np.where(fg, nuc_density * (1.0 + texture) * rim, hema)
    eosin = np.where(fg, 0.35 * eosin, eosin)
    hema = ndimage.gaussian_filter(hema, 0.7)
    eosin = ndimage.gaussian_filter(eosin, 0.7)

    def jitter(vec):
        vec = np.abs(vec + rng.normal(0.0, stain_jitter, 3))
        return vec / np.linalg.norm(vec)

    strength = rng.uniform(0.85, 1.2)
    od = strength * (hema[..., None] * jitter(_H_VECTOR) + eosin[..., None] * jitter(_E_VECTOR))
    rgb = rng.uniform(235.0, 252.0) * np.exp(-od)
    if blur_sigma > 0:
        rgb = ndimage.gaussian_filter(rgb, (blur_sigma, blur_sigma, 0))
    rgb = rgb + rng.normal(0.0, noise_std, rgb.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def synthesize_image(
    size=(256, 256),
    seed=0,
    *,
    n_nuclei=None,
    radius_range=(4.0, 10.0),
    cluster_fraction=0.4,
    blur_sigma=0.8,
    noise_std=4.0,
    stain_jitter=0.05,
    min_area=12,
):
    """Generate one synthetic H&E tile and its instance label map.

    Parameters
    ----------
    size : tuple of int
        ``(H, W)``.
    seed : int or sequence of int
        Seed; the same seed gives the same tile.
    n_nuclei : int, optional
        Nuclei placed before occlusion clean-up (default: one per 1200 px²; MoNuSeg has about
        one per 1800 px² of larger nuclei).
    radius_range : tuple of float
        Smallest and largest semi-axis in pixels.
    cluster_fraction : float
        Fraction of nuclei grown into touching clusters.
    blur_sigma, noise_std : float
        Optical blur (px) and Gaussian noise (grey levels).
    stain_jitter : float
        Std of the per-image perturbation of the stain vectors.
    min_area : int
        Instances smaller than this after occlusion are removed.

    Returns
    -------
    image : np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    label : np.ndarray
        ``(H, W)`` int32, ids 1..N, 0 = background.
    """
    _check_size(size)
    if not (0 < radius_range[0] <= radius_range[1]):
        raise ValueError(f"radius_range must satisfy 0 < min <= max, got {radius_range}")
    if not (0.0 <= cluster_fraction <= 1.0):
        raise ValueError(f"cluster_fraction must be in [0, 1], got {cluster_fraction}")
    shape = (int(size[0]), int(size[1]))
    rng = np.random.default_rng(seed)
    n = int(round(shape[0] * shape[1] / 1200.0)) if n_nuclei is None else int(n_nuclei)
    if n < 0:
        raise ValueError(f"n_nuclei must be >= 0, got {n_nuclei}")
    raw, density, lymph = _layout(rng, shape, n, radius_range, cluster_fraction)
    label, old_ids = _clean(raw, min_area)
    density = np.concatenate([[0.0], density[old_ids]])
    lymph = np.concatenate([[False], lymph[old_ids]])
    image = _render(rng, label, density, lymph, blur_sigma, noise_std, stain_jitter)
    return image, label


def _check_size(size):
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (H, W) with both >= 16, got {size}")


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _dataset_files(out_dir):
    """Relative paths of the files in ``images/``, ``labels/`` and ``split.json``."""
    found = []
    for sub in ("images", "labels"):
        if (out_dir / sub).is_dir():
            found += sorted(
                p.relative_to(out_dir).as_posix()
                for p in (out_dir / sub).rglob("*")
                if not p.is_dir()
            )
    return found + (["split.json"] if (out_dir / "split.json").exists() else [])


def read_manifest(out_dir):
    """Files recorded by an earlier :func:`make_synthetic_dataset` in ``out_dir``.

    Returns
    -------
    dict
        ``{relative path: sha256 or None}`` (None: being written when the run stopped);
        empty when there is no manifest.

    Raises
    ------
    ValueError
        Naming the manifest when it is unreadable or lists a path outside ``split.json``,
        ``images/`` and ``labels/``.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"cannot read the synthetic-dataset manifest {path}: {exc}; not deleting anything"
        ) from exc
    bad = [f for f in files if not _LAYOUT.match(str(f)) or ".." in str(f)]
    if bad:
        raise ValueError(
            f"manifest {path} lists {bad[0]!r}, outside split.json, images/ and "
            f"labels/; not deleting anything"
        )
    return files


def _write_manifest(out_dir, files, settings):
    """Write the manifest atomically (temporary file, then rename)."""
    path = out_dir / MANIFEST_NAME
    tmp = out_dir / f"{MANIFEST_NAME}.partial"
    doc = {
        "written_by": "nucleiweak_d2.data.synthetic.make_synthetic_dataset",
        "note": "files of this synthetic dataset; make_synthetic --overwrite deletes only these",
        "settings": settings,
        "files": files,
    }
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _check_target(out_dir, manifest, overwrite):
    """Refuse, before any change, a folder holding files this function did not write.

    Raises
    ------
    ValueError
        ``out_dir`` is a file.
    FileExistsError
        A file of the dataset layout is not in the manifest, or changed since it was written
        (naming it); or a dataset exists and ``overwrite`` is False.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    present = _dataset_files(out_dir)
    foreign = [f for f in present if f not in manifest]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise FileExistsError(
            f"{out_dir / foreign[0]}{more} not written by make_synthetic (not in "
            f"{out_dir / MANIFEST_NAME}); refusing to replace or delete it: choose an empty or "
            f"new folder"
        )
    changed = [
        f for f in present if manifest[f] is not None and _sha256(out_dir / f) != manifest[f]
    ]
    if changed:
        raise FileExistsError(
            f"{out_dir / changed[0]} changed after make_synthetic wrote it; "
            f"refusing to delete it: move it away or choose another folder"
        )
    if present and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a synthetic dataset ({len(present)} "
            f"files); pass overwrite=True / --overwrite to replace it"
        )


def _split_sizes(n_images, split_fractions):
    """Numbers of train and val images (test takes the rest)."""
    fractions = np.asarray(split_fractions, dtype=float) / np.sum(split_fractions)
    n_train = int(round(fractions[0] * n_images))
    n_val = int(round(fractions[1] * n_images))
    if n_images >= 3:
        n_train, n_val = max(1, n_train), max(1, n_val)
        n_train = min(n_train, n_images - 2)
        n_val = min(n_val, n_images - n_train - 1)
    return n_train, max(0, min(n_val, n_images - n_train))


def make_synthetic_dataset(
    out_dir,
    n_images=8,
    size=(256, 256),
    seed=0,
    split_fractions=(0.5, 0.25, 0.25),
    overwrite=False,
    **kwargs,
):
    """Write a synthetic folder dataset (``images/``, ``labels/``, ``split.json``).

    Parameters
    ----------
    out_dir : str or Path
        Destination folder. Its ``images/``, ``labels/`` and ``split.json`` must be absent or
        hold only files of an earlier run, as listed in its manifest
        ``.nucleiweak_synthetic.json``; other files elsewhere in it are left alone.
    n_images : int
        Number of tiles, named ``synth_000`` ... ; tile ``i`` uses seed ``(seed, i)``.
    size : tuple of int
        ``(H, W)`` of each tile.
    seed : int
        Dataset seed; the same arguments give byte-identical files.
    split_fractions : tuple of float
        Fractions of train, val, test (rounded; each split gets at least one image when
        ``n_images >= 3``; test takes the rest).
    overwrite : bool
        Replace a dataset written earlier by this function: the files of its manifest are
        deleted (only those). Without it, an existing dataset raises FileExistsError.
    **kwargs
        Passed to :func:`synthesize_image`.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    ValueError
        Bad arguments or an unreadable manifest (nothing changed).
    FileExistsError
        A dataset exists without ``overwrite``, or files not written by this function (or
        changed since) are in the way, named in the message (nothing changed).
    """
    out_dir = Path(out_dir)
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if len(split_fractions) != 3 or min(split_fractions) < 0 or sum(split_fractions) <= 0:
        raise ValueError(f"split_fractions must be 3 non-negative numbers, got {split_fractions}")
    _check_size(size)
    old = read_manifest(out_dir)
    _check_target(out_dir, old, overwrite)
    first = synthesize_image(size, (int(seed), 0), **kwargs)  # bad kwargs fail before changes
    names = [f"synth_{i:03d}" for i in range(n_images)]
    new = [f"{sub}/{name}.png" for name in names for sub in ("images", "labels")] + ["split.json"]
    settings = {
        "n_images": int(n_images),
        "size": [int(v) for v in size],
        "seed": int(seed),
        "split_fractions": [float(v) for v in split_fractions],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_manifest(out_dir, {**old, **dict.fromkeys(new)}, settings)  # new files: pending
    for rel in old:  # checked by _check_target: this function wrote them, unchanged since
        if (out_dir / rel).is_file():
            (out_dir / rel).unlink()
    for i, name in enumerate(names):
        image, label = first if i == 0 else synthesize_image(size, (int(seed), i), **kwargs)
        write_image(out_dir / "images" / f"{name}.png", image)
        write_label(out_dir / "labels" / f"{name}.png", label)
    n_train, n_val = _split_sizes(n_images, split_fractions)
    split = {
        "train": names[:n_train],
        "val": names[n_train : n_train + n_val],
        "test": names[n_train + n_val :],
    }
    (out_dir / "split.json").write_text(json.dumps(split, indent=1))
    _write_manifest(out_dir, {rel: _sha256(out_dir / rel) for rel in new}, settings)
    return out_dir
