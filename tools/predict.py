#!/usr/bin/env python
"""Predict nuclei instance maps of images with a trained nucleiweak_d2 model.

For each image ``<stem>.<ext>`` writes, in ``--output``:

- ``<stem>_instances.png``: 16-bit instance label map (0 = background, one id per nucleus),
  converted from the model output exactly as the evaluator converts it;
- ``<stem>_overlay.png``: the image with the nucleus contours (green) and points (red);
- ``<stem>_points.csv``: detected points ``x,y`` (integer-pixel convention, column and row)
  when the model outputs ``pred_points``.

Existing outputs are never replaced without ``--overwrite`` (which also removes a
``<stem>_points.csv`` left by an earlier run when the model gives no points). Images larger
than ``--tile`` run in overlapping tiles stitched by keeping each nucleus from the tile where
it is farthest from the tile border (see :mod:`nucleiweak_d2.engine.predictor`).

Examples::

    python tools/predict.py --config-file configs/qu2020/R18_synthetic.yaml \\
        --input data/images --output out/pred --opts MODEL.WEIGHTS out/qu/model_final.pth
    python tools/predict.py --config-file CFG --input "slides/*.tif" --output out/slides \\
        --tile 512 --tile-overlap 64 --opts MODEL.WEIGHTS model.pth MODEL.DEVICE cuda
"""

import argparse
import glob
import os
import sys
from pathlib import Path

OUTPUT_SUFFIXES = {"instances": "_instances.png", "overlay": "_overlay.png",
                   "points": "_points.csv"}


def list_inputs(spec):
    """Image files named by ``--input``: one file, the images of a folder, or a glob pattern.

    Returns
    -------
    list of Path
        Sorted; only files with an image extension of :mod:`nucleiweak_d2.data.io` are taken
        from a folder or a pattern.

    Raises
    ------
    ValueError
        Missing input, no image found, a named file that is not an image, or two inputs of
        the same stem (their outputs would collide).
    """
    from nucleiweak_d2.data.io import IMAGE_EXTENSIONS

    def is_image(path):
        return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS

    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if is_image(p))
        where = f"folder {path}"
    elif path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"input {path} is not an image file "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        files = [path]
        where = str(path)
    elif glob.has_magic(spec):
        files = sorted(p for p in map(Path, glob.glob(spec)) if is_image(p))
        where = f"pattern {spec!r}"
    else:
        raise ValueError(f"input not found: {spec}")
    if not files:
        raise ValueError(f"no image file ({', '.join(IMAGE_EXTENSIONS)}) in {where}")
    stems = {}
    for f in files:
        stems.setdefault(f.stem, []).append(str(f))
    clashes = [v for v in stems.values() if len(v) > 1]
    if clashes:
        raise ValueError(f"inputs with the same name would write the same outputs: {clashes[0]}")
    return files


def output_paths(out_dir, stem):
    """Paths of the outputs of image ``stem`` (keys ``instances``, ``overlay``, ``points``)."""
    return {key: Path(out_dir) / f"{stem}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items()}


def check_outputs(files, out_dir, overwrite):
    """Refuse, before any work, to replace existing outputs without ``--overwrite``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--output {out_dir} exists and is not a folder")
    existing = [str(p) for f in files for p in output_paths(out_dir, f.stem).values()
                if p.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise ValueError(f"outputs already exist: {', '.join(existing[:3])}{more}; pass "
                         f"--overwrite to replace them")


def _replace(path, write):
    """Write through a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_outputs(image, result, paths):
    """Write the instance map, overlay and (when any) points of one prediction.

    Returns
    -------
    list of Path
        The files written.
    """
    from nucleiweak_d2.data.io import write_image, write_label
    from nucleiweak_d2.engine.predictor import draw_overlay

    label, points = result["instance_map"], result["points"]
    if label.size and label.max() > 65535:  # ids of the model: renumber 1..N for 16 bits
        from skimage.segmentation import relabel_sequential

        label = relabel_sequential(label)[0]
    paths["instances"].parent.mkdir(parents=True, exist_ok=True)
    _replace(paths["instances"], lambda p: write_label(p, label))
    _replace(paths["overlay"], lambda p: write_image(p, draw_overlay(image, label, points)))
    written = [paths["instances"], paths["overlay"]]
    if points is not None:
        lines = ["x,y"] + [f"{x:.3f},{y:.3f}" for x, y in points]
        _replace(paths["points"], lambda p: p.write_text("\n".join(lines) + "\n"))
        written.append(paths["points"])
    elif paths["points"].exists():  # only reachable with --overwrite: a stale earlier output
        paths["points"].unlink()
        print(f"removed {paths['points']} (from an earlier run; this model gives no points)")
    return written


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="model config (YAML)")
    parser.add_argument("--input", required=True,
                        help="image file, folder of images, or glob pattern (quoted)")
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument("--tile", type=int, default=0,
                        help="tile side in px for large images (default 0: whole image)")
    parser.add_argument("--tile-overlap", type=int, default=64,
                        help="overlap of tiles in px; more than the largest nucleus diameter")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides KEY VALUE ..., e.g. MODEL.WEIGHTS model.pth")
    return parser


def main(argv=None):
    """Run the CLI; returns ``{input path: [written paths]}``. Bad input raises ValueError."""
    args = build_parser().parse_args(argv)
    if args.tile < 0:
        raise ValueError(f"--tile must be >= 0, got {args.tile}")
    files = list_inputs(args.input)
    out_dir = Path(args.output)
    if Path(args.input).is_dir() and out_dir.resolve() == Path(args.input).resolve():
        raise ValueError(f"--output {out_dir} is the input folder; choose another folder (the "
                         f"outputs would be read as inputs by the next run)")
    check_outputs(files, out_dir, args.overwrite)
    if len(args.opts) % 2:
        raise ValueError(f"--opts needs KEY VALUE pairs, got {args.opts}")
    if not os.path.isfile(args.config_file):
        raise ValueError(f"config file not found: {args.config_file}")

    import numpy as np

    from nucleiweak_d2.data.io import read_image
    from nucleiweak_d2.engine import setup_cfg
    from nucleiweak_d2.engine.predictor import NucleiPredictor

    cfg = setup_cfg(args.config_file, args.opts)
    predictor = NucleiPredictor(cfg, tile=args.tile, tile_overlap=args.tile_overlap,
                                keep_raw=False)
    written = {}
    for path in files:
        image = read_image(path)
        try:
            result = predictor(image)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        written[str(path)] = write_outputs(image, result, output_paths(out_dir, path.stem))
        n_nuclei = len(np.unique(result["instance_map"])) - int((result["instance_map"] == 0).any())
        n_points = "" if result["points"] is None else f", {len(result['points'])} points"
        print(f"{path}: {n_nuclei} nuclei{n_points} -> "
              f"{written[str(path)][0]}")
    return written


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:
        sys.exit(f"error: {exc}")
