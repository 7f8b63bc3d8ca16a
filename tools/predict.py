#!/usr/bin/env python
"""Predict nuclei instance maps of images with a trained nucleiweak_d2 model.

For each image ``<stem>.<ext>`` writes, in ``--output``:

- ``<stem>_instances.png``: 16-bit instance label map (0 = background, one id per nucleus),
  converted from the model output exactly as the evaluator converts it. Ids above 65 535 are
  renumbered 1..N; an image with more than 65 535 nuclei gets ``<stem>_instances.tif``
  instead (32-bit unsigned TIFF, zlib), since a PNG holds at most 16 bits;
- ``<stem>_overlay.png``: the image with the nucleus contours (green) and points (red);
- ``<stem>_points.csv``: detected points ``x,y`` (integer-pixel convention, column and row)
  when the model outputs ``pred_points``.

Every file is written to a temporary file in the output folder and renamed into place, so an
interrupted run never leaves a half-written output. The instance map is written last: an
image whose ``_instances`` file and ``_overlay.png`` exist is finished.

Weights: ``MODEL.WEIGHTS`` must name a checkpoint that fits the config's model (every model
parameter present, no foreign key, no other shape); an empty ``MODEL.WEIGHTS`` is refused
unless ``--allow-random-weights`` (the untrained model is then built with seed ``SEED``).

Reruns: existing outputs are never replaced without ``--overwrite`` (which also removes a
``<stem>_points.csv`` or ``<stem>_instances.*`` of the other format left by an earlier run).
``--skip-existing`` skips finished images (and lists them), so an interrupted run resumes;
an image with only some of its outputs is refused unless ``--overwrite`` is given too. An
image that cannot be read or predicted is skipped and reported; the run goes on with the
other images, lists the failed ones at the end and exits with code 1. Bad input (options,
files, weights) exits with code 2 and one ``error:`` line (``--debug``: the traceback).

Images larger than ``--tile`` run in overlapping tiles stitched by keeping each nucleus from
the tile where it is farthest from the tile border (see :mod:`nucleiweak_d2.engine.predictor`).

Examples::

    python tools/predict.py --config-file configs/qu2020/R18_synthetic.yaml \\
        --input data/images --output out/pred --opts MODEL.WEIGHTS out/qu/model_final.pth
    python tools/predict.py --config-file CFG --input "slides/*.tif" --output out/slides \\
        --tile 512 --tile-overlap 64 --skip-existing --opts MODEL.WEIGHTS model.pth
"""

import argparse
import glob
import os
import sys
from pathlib import Path

from nucleiweak_d2.cli import add_debug_flag, run_cli

OUTPUT_SUFFIXES = {"instances": "_instances.png", "instances_tif": "_instances.tif",
                   "overlay": "_overlay.png", "points": "_points.csv"}
PNG_MAX_ID = 65535  # the largest id of a 16-bit PNG
EPILOG = f"""outputs per image <stem> (in --output):
  <stem>_instances.png  16-bit instance labels (0 = background); with more than {PNG_MAX_ID}
                        nuclei <stem>_instances.tif (32-bit unsigned TIFF) instead
  <stem>_overlay.png    contours (green) and points (red) on the image
  <stem>_points.csv     x,y of the detected points (models that give points)
Files are written atomically; the instance map last. Existing outputs need --overwrite;
--skip-existing skips finished images. Images that cannot be read or predicted are skipped
and listed at the end (exit code 1); bad input exits with code 2."""


class PredictionRun(dict):
    """``{input path: [written paths]}`` of a run, with what was skipped and what failed.

    Attributes
    ----------
    skipped : list of str
        Inputs skipped by ``--skip-existing`` (their outputs exist).
    failed : list of tuple
        ``(input path, message)`` of the images that could not be read or predicted.
    """

    def __init__(self):
        super().__init__()
        self.skipped, self.failed = [], []

    @property
    def exit_code(self):
        """1 when an image failed, else 0."""
        return 1 if self.failed else 0


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
    """Paths of the outputs of image ``stem`` (keys of :data:`OUTPUT_SUFFIXES`)."""
    return {key: Path(out_dir) / f"{stem}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items()}


def output_state(paths):
    """``"new"`` (no output), ``"done"`` (instance map and overlay exist) or ``"partial"``."""
    existing = [key for key, path in paths.items() if path.exists()]
    if not existing:
        return "new"
    has_map = "instances" in existing or "instances_tif" in existing
    return "done" if has_map and "overlay" in existing else "partial"


def _listing(paths, limit=3):
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(str(p) for p in paths[:limit]) + more


def plan_outputs(files, out_dir, overwrite=False, skip_existing=False):
    """Decide, before any work, which images to predict; refuse to replace outputs silently.

    Parameters
    ----------
    files : list of Path
        Inputs (:func:`list_inputs`).
    out_dir : Path
        ``--output``.
    overwrite, skip_existing : bool
        The options of the same name.

    Returns
    -------
    todo : list of Path
        Images to predict.
    skipped : list of Path
        Finished images kept by ``skip_existing``.

    Raises
    ------
    ValueError
        ``out_dir`` is a file; outputs exist and neither option allows it (naming them).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--output {out_dir} exists and is not a folder")
    todo, skipped, existing, partial = [], [], [], []
    for f in files:
        paths = output_paths(out_dir, f.stem)
        state = output_state(paths)
        if state == "done" and skip_existing:
            skipped.append(f)
            continue
        if state != "new" and not overwrite:
            found = [p for p in paths.values() if p.exists()]
            existing += found
            if state == "partial":
                partial.append(found[0])
        todo.append(f)
    if skip_existing and partial:
        raise ValueError(f"incomplete outputs of an earlier run: {_listing(partial)} (the "
                         f"instance map or overlay is missing); pass --overwrite too to "
                         f"redo these images")
    if existing:
        raise ValueError(f"outputs already exist: {_listing(existing)}; pass --overwrite to "
                         f"replace them or --skip-existing to keep finished images")
    return todo, skipped


def _replace(path, write):
    """``write(tmp)`` to a temporary file in the same folder, then rename it over ``path``."""
    from nucleiweak_d2.data.atomic import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)


def label_for_file(label):
    """The instance map as saved, and its output key (PNG up to 65 535 ids, else TIFF).

    Parameters
    ----------
    label : numpy.ndarray
        ``(H, W)`` non-negative integer ids, 0 = background.

    Returns
    -------
    array : numpy.ndarray
        The ids as they are (when the largest fits 16 bits) or renumbered 1..N in the order of
        the ids: uint16 for ``"instances"``, uint32 for ``"instances_tif"``.
    key : str
        ``"instances"`` (16-bit PNG) when the ids fit 16 bits, else ``"instances_tif"``.
    """
    import numpy as np

    if label.size and label.max() > PNG_MAX_ID:  # ids of the model: renumber 1..N
        from skimage.segmentation import relabel_sequential

        label = relabel_sequential(label)[0]
    if not label.size or label.max() <= PNG_MAX_ID:
        return label.astype(np.uint16), "instances"
    return label.astype(np.uint32), "instances_tif"


def _write_tif(path, label):
    import tifffile

    tifffile.imwrite(str(path), label, compression="zlib")


def _remove_stale(path, why):
    """Remove an output of an earlier run (only reachable with --overwrite)."""
    if path.exists():
        path.unlink()
        print(f"removed {path} (from an earlier run; {why})")


def write_outputs(image, result, paths):
    """Write the points (when any), overlay and instance map of one prediction, in this order.

    Returns
    -------
    list of Path
        The files written, the instance map first.
    """
    from nucleiweak_d2.data.io import write_image, write_label
    from nucleiweak_d2.data.overlay import draw_outlines

    label, key = label_for_file(result["instance_map"])
    points = result["points"]
    paths["instances"].parent.mkdir(parents=True, exist_ok=True)
    written = []
    if points is not None:
        lines = ["x,y"] + [f"{x:.3f},{y:.3f}" for x, y in points]
        _replace(paths["points"], lambda p: p.write_text("\n".join(lines) + "\n"))
        written.append(paths["points"])
    else:
        _remove_stale(paths["points"], "this model gives no points")
    _replace(paths["overlay"], lambda p: write_image(p, draw_outlines(image, label, points)))
    written.insert(0, paths["overlay"])
    other = "instances_tif" if key == "instances" else "instances"
    _remove_stale(paths[other], f"this image has {'at most' if key == 'instances' else 'more than'}"
                                f" {PNG_MAX_ID} nuclei")
    write = write_label if key == "instances" else _write_tif
    _replace(paths[key], lambda p: write(p, label))
    written.insert(0, paths[key])
    return written


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="model config (YAML)")
    parser.add_argument("--input", required=True,
                        help="image file, folder of images, or glob pattern (quoted)")
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument("--tile", type=int, default=0,
                        help="tile side in px for large images (default 0: whole image)")
    parser.add_argument("--tile-overlap", type=int, default=64,
                        help="overlap of tiles in px; more than the largest nucleus diameter")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip images whose outputs exist (resume an interrupted run)")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="accept an empty MODEL.WEIGHTS (untrained model, seed SEED)")
    add_debug_flag(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides KEY VALUE ..., e.g. MODEL.WEIGHTS model.pth")
    return parser


def _check_args(args):
    """Options that are wrong whatever the files: ValueError naming the option."""
    if args.tile < 0:
        raise ValueError(f"--tile must be >= 0, got {args.tile}")
    if len(args.opts) % 2:
        raise ValueError(f"--opts needs KEY VALUE pairs, got {args.opts}")
    if not os.path.isfile(args.config_file):
        raise ValueError(f"config file not found: {args.config_file}")


def predict_one(predictor, path):
    """``(image, result)`` of one input; ValueError naming the file when it cannot be done."""
    from nucleiweak_d2.data.io import read_image

    image = read_image(path)  # its errors name the file
    try:
        return image, predictor(image)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _report(run, n_inputs):
    """Print what was skipped and which images failed (stderr), one line each."""
    for path in run.skipped:
        print(f"skipped {path}: its outputs exist (--skip-existing)")
    print(f"{len(run)} of {n_inputs} image(s) predicted, {len(run.skipped)} skipped, "
          f"{len(run.failed)} failed")
    if run.failed:
        print(f"error: {len(run.failed)} image(s) failed and have no outputs:", file=sys.stderr)
        for _, message in run.failed:
            print(f"  {' '.join(message.split())}", file=sys.stderr)


def main(argv=None):
    """Run the CLI.

    Returns
    -------
    PredictionRun
        ``{input path: [written paths]}`` with ``skipped``, ``failed`` and ``exit_code``.

    Raises
    ------
    ValueError
        Bad input (options, files, weights), before any output is written.
    """
    args = build_parser().parse_args(argv)
    _check_args(args)
    files = list_inputs(args.input)
    out_dir = Path(args.output)
    if Path(args.input).is_dir() and out_dir.resolve() == Path(args.input).resolve():
        raise ValueError(f"--output {out_dir} is the input folder; choose another folder (the "
                         f"outputs would be read as inputs by the next run)")
    todo, skipped = plan_outputs(files, out_dir, args.overwrite, args.skip_existing)

    import numpy as np

    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.predictor import NucleiPredictor

    cfg = setup_cfg(args.config_file, args.opts)
    predictor = NucleiPredictor(cfg, tile=args.tile, tile_overlap=args.tile_overlap,
                                keep_raw=False, allow_random_weights=args.allow_random_weights)
    run = PredictionRun()
    run.skipped = [str(p) for p in skipped]
    for path in todo:
        try:
            image, result = predict_one(predictor, path)
        except ValueError as exc:
            run.failed.append((str(path), str(exc)))
            print(f"failed {path}: {' '.join(str(exc).split())}", file=sys.stderr)
            continue
        run[str(path)] = write_outputs(image, result, output_paths(out_dir, path.stem))
        n_nuclei = len(np.unique(result["instance_map"])) - int((result["instance_map"] == 0).any())
        n_points = "" if result["points"] is None else f", {len(result['points'])} points"
        print(f"{path}: {n_nuclei} nuclei{n_points} -> {run[str(path)][0]}")
    _report(run, len(files))
    return run


if __name__ == "__main__":
    sys.exit(run_cli(main))
