#!/usr/bin/env python
"""Convert a folder dataset (images/ + labels/ or points/ + split.json) to COCO JSON per split.

Examples
--------
10 % of the points, shifted by 2-4 px, seed 0::

    python tools/prepare_dataset.py datasets/monuseg --out datasets/monuseg/coco_r0.1_s2-4 \\
        --ratio 0.1 --shift 2-4 --seed 0

Partial masks (25 % of the instances keep their masks)::

    python tools/prepare_dataset.py ROOT --out OUT --ratio 0.25 --annotation partial_mask

Clicked points only (points/<name>.csv, no labels)::

    python tools/prepare_dataset.py ROOT --out OUT --annotation points_only

Clicked points from QuPath or any CSV, straight into a points-only dataset: ``--points`` names
a points file (CSV/TSV with x/y columns by header, or a QuPath GeoJSON export: ``Point`` /
``MultiPoint`` annotations or detections, a FeatureCollection or a plain list of features)
or a folder of them, named after the images (``<name>.geojson``, ``<name>.csv``; an image
extension before the suffix, ``<name>.tif.geojson``, is allowed). ROOT holds the images
(``ROOT/images/`` or ROOT itself; ``split.json`` optional); images without a points file are
left out (and listed)::

    python tools/prepare_dataset.py ROOT --points qupath_exports/ --out OUT --weak-splits train
    python tools/prepare_dataset.py ROOT --points slide_roi.geojson --points-offset 20000 14000 \
        --points-class Nucleus --out OUT

GeoJSON coordinates are QuPath's (pixel ``c`` covers ``[c, c + 1)``: a point is in pixel
``floor(x)``); CSV coordinates are rounded to the nearest pixel. ``--points-offset DX DY``
subtracts the image's position in the file's frame (a region exported from a slide).

Existing files are never replaced unless ``--overwrite`` is given (a refused run changes no
file). Every split named by ``--splits`` / ``--weak-splits`` must exist in split.json.

Errors in the input (ValueError, FileNotFoundError, FileExistsError) print one line
``error: <message>`` on stderr and exit with code 2; ``--debug`` shows the traceback instead
(:mod:`nucleiweak_d2.cli`). ``run(argv)`` does the work and raises; ``main(argv)`` is the
guarded command-line entry and returns the exit code.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from nucleiweak_d2.cli import add_debug_flag, cli_guard
from nucleiweak_d2.data.coco import ANNOTATION_MODES, export_coco_splits
from nucleiweak_d2.data.points import POINT_MODES, SHIFT_PRESETS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "root",
        help="folder dataset (images/, labels/ or points/, split.json); "
        "with --points, a folder of images (or with images/)",
    )
    parser.add_argument("--out", required=True, help="output folder for <split>.json")
    parser.add_argument(
        "--ratio", type=float, default=1.0, help="fraction of points labelled, (0, 1]"
    )
    parser.add_argument(
        "--shift",
        default="0",
        help=f"shift range 'min-max' in px or a preset {sorted(SHIFT_PRESETS)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and shifts")
    parser.add_argument("--point-mode", default="bbox_center", choices=POINT_MODES)
    parser.add_argument(
        "--annotation",
        default=None,
        choices=ANNOTATION_MODES,
        help="default: points (points_only with --points)",
    )
    parser.add_argument(
        "--points",
        default=None,
        help="clicked points: a CSV/TSV or QuPath GeoJSON file, or a folder of "
        "<image name>.<csv|geojson> files; writes a points-only dataset",
    )
    parser.add_argument(
        "--points-class",
        action="append",
        default=None,
        metavar="NAME",
        help="GeoJSON: keep only features of this class (repeatable)",
    )
    parser.add_argument(
        "--points-from-polygons",
        action="store_true",
        help="GeoJSON: also take the centroid of each detection polygon "
        "(e.g. predicted nuclei kept after correction in QuPath)",
    )
    parser.add_argument(
        "--points-offset",
        nargs=2,
        type=float,
        default=(0.0, 0.0),
        metavar=("DX", "DY"),
        help="subtract this from the points (the image's top-left corner in "
        "the file's coordinates, e.g. a region of a slide)",
    )
    parser.add_argument("--splits", nargs="+", help="splits to export (default: all in split.json)")
    parser.add_argument(
        "--weak-splits", nargs="+", help="apply --ratio/--shift only to these splits (default: all)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing JSON files")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def _points_name(path, image_names):
    """The image name a points file refers to: its stem, or the stem without an image
    extension (``a.tif.geojson`` -> ``a``)."""
    from nucleiweak_d2.data.io import IMAGE_EXTENSIONS

    stem = Path(path).stem
    if stem not in image_names and Path(stem).suffix.lower() in IMAGE_EXTENSIONS:
        return Path(stem).stem
    return stem


def points_samples(root, points):
    """Samples of the images of ``root`` that have a points file in ``points``.

    Returns
    -------
    samples : dict
        ``{name: sample}`` (``name``, ``image_path``, ``points_path``, ``height``, ``width``).
    left_out : list of str
        Images without a points file.
    """
    from nucleiweak_d2.data.coco import POINTS_EXTENSIONS
    from nucleiweak_d2.data.io import IMAGE_EXTENSIONS, image_size

    root, points = Path(root), Path(points)
    image_dir = root / "images" if (root / "images").is_dir() else root
    if not image_dir.is_dir():
        raise ValueError(f"image folder {image_dir} does not exist")
    images = {}
    for path in sorted(image_dir.iterdir()):
        if (
            path.is_file()
            and path.suffix.lower() in IMAGE_EXTENSIONS
            and not path.name.startswith(".")
        ):
            if path.stem in images:
                raise ValueError(
                    f"two images share the name {path.stem!r}: {images[path.stem]} and {path}"
                )
            images[path.stem] = path
    if not images:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
    if points.is_file():
        name = _points_name(points, images)
        if name not in images:
            if len(images) != 1:
                raise ValueError(
                    f"points file {points} names no image of {image_dir} (expected "
                    f"<image name>{points.suffix}); images: {sorted(images)[:5]}"
                )
            name = next(iter(images))
        files = {name: points}
    elif points.is_dir():
        files = {}
        for path in sorted(points.iterdir()):
            if not (path.is_file() and path.suffix.lower() in POINTS_EXTENSIONS) or (
                path.name.startswith(".")
            ):
                continue
            name = _points_name(path, images)
            if name in files:
                raise ValueError(f"two points files for image {name!r}: {files[name]} and {path}")
            files[name] = path
        if not files:
            raise ValueError(f"no points files ({', '.join(POINTS_EXTENSIONS)}) in {points}")
        unknown = [str(p) for n, p in files.items() if n not in images]
        if unknown:
            raise ValueError(f"points files without an image in {image_dir}: {unknown[:5]}")
    else:
        raise ValueError(f"--points {points} does not exist")
    samples = {}
    for name, path in files.items():
        height, width, _ = image_size(images[name])
        samples[name] = {
            "name": name,
            "image_path": images[name],
            "points_path": path,
            "label_path": None,
            "height": height,
            "width": width,
        }
    return samples, sorted(set(images) - set(files))


def export_points_dataset(args):
    """Write ``<out>/<split>.json`` points-only files from ``--points``; returns
    ``{split: path}``."""
    from nucleiweak_d2.data.atomic import write_json
    from nucleiweak_d2.data.checks import check_images_decode, check_training_points
    from nucleiweak_d2.data.coco import _recorded_root, build_coco
    from nucleiweak_d2.data.folder import read_split_file

    if args.annotation not in (None, "points_only"):
        raise ValueError(
            f"--points writes a points-only dataset; --annotation "
            f"{args.annotation} needs label maps"
        )
    root, out_dir = Path(args.root), Path(args.out)
    samples, left_out = points_samples(root, args.points)
    options = {
        "classes": args.points_class,
        "polygons": args.points_from_polygons,
        "offset": tuple(args.points_offset),
    }
    for sample in samples.values():
        sample["points_options"] = options
    split_lists = read_split_file(root)
    if split_lists:
        names = args.splits or list(split_lists)
        unknown = [
            n for n in names + list(args.weak_splits or []) if n not in split_lists and n != "all"
        ]
        if unknown:
            raise ValueError(
                f"unknown split {unknown[0]!r}; valid names: "
                f"{', '.join(list(split_lists) + ['all'])} (from {root / 'split.json'})"
            )
        splits = {
            n: (sorted(samples) if n == "all" else [m for m in split_lists[n] if m in samples])
            for n in names
        }
    else:
        unknown = [n for n in list(args.splits or []) + list(args.weak_splits or []) if n != "all"]
        if unknown:
            raise ValueError(
                f"unknown split {unknown[0]!r}; {root} has no split.json, the only split is 'all'"
            )
        splits = {"all": sorted(samples)}
    empty = [n for n, members in splits.items() if not members]
    if empty:
        raise ValueError(f"split {empty[0]!r} has no image with a points file")
    targets = {s: out_dir / f"{s}.json" for s in splits}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"refusing to overwrite {existing} (pass --overwrite)")
    ids = {name: k + 1 for k, name in enumerate(sorted(samples))}
    check_images_decode(samples[n]["image_path"] for members in splits.values() for n in members)
    payloads = {}
    for split, members in splits.items():
        chosen = [dict(samples[n], image_id=ids[n]) for n in members]
        weak = args.weak_splits is None or split in args.weak_splits
        payloads[split] = build_coco(
            chosen,
            root,
            ratio=args.ratio if weak else 1.0,
            shift=args.shift if weak else (0.0, 0.0),
            seed=args.seed,
            annotation="points_only",
            split=split,
        )
        if weak:
            check_training_points(payloads[split], split)
        payloads[split]["info"]["image_root"] = _recorded_root(root, out_dir)
        payloads[split]["info"]["points_source"] = str(Path(args.points).resolve())
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, payload in payloads.items():
        write_json(targets[split], payload, indent=None)
    if left_out:
        more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        print(
            f"{len(left_out)} image(s) without a points file left out: "
            f"{', '.join(left_out[:5])}{more}"
        )
    return targets


def run(argv=None):
    """Export the COCO files and print a summary; raises on bad input. Returns 0."""
    args = parse_args(argv)
    start = time.perf_counter()
    if args.points is not None:
        written = export_points_dataset(args)
    else:
        written = export_coco_splits(
            args.root,
            args.out,
            ratio=args.ratio,
            shift=args.shift,
            seed=args.seed,
            point_mode=args.point_mode,
            annotation=args.annotation or "points",
            splits=args.splits,
            weak_splits=args.weak_splits,
            overwrite=args.overwrite,
        )
    for split, path in written.items():
        content = json.loads(path.read_text())
        labeled = sum(a["point_labeled"] for a in content["annotations"])
        print(
            f"{split}: {len(content['images'])} images, {len(content['annotations'])} instances, "
            f"{labeled} labelled points -> {path}"
        )
    print(f"done in {time.perf_counter() - start:.2f} s")
    return 0


#: Command-line entry: 0, or 2 with a one-line ``error: ...`` on stderr for bad input.
main = cli_guard(run)


if __name__ == "__main__":
    sys.exit(main())
