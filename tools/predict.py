#!/usr/bin/env python
"""Predict nuclei instance maps of images and whole slides with a trained nucleiweak_d2 model.

Inputs (``--input``): one image, a folder or a glob pattern of images (PNG, JPG, BMP, TIFF),
large TIFFs and pyramidal TIFFs, and whole slides (.svs .ndpi .mrxs .scn .vms .vmu .bif
.svslide through OpenSlide, when installed). Ordinary images are read whole; OpenSlide
formats, pyramidal TIFFs and TIFFs above 4096x4096 px are read tile by tile (``--read``).
``--level`` picks a pyramid level, ``--mpp`` a pixel size in µm (the level, then a resize),
``--region x y w h`` (level-0 pixels, QuPath's coordinates) a part of the image, and
``--tissue-mask auto`` skips tiles without tissue (Otsu on a low-resolution copy).

Prediction runs in overlapping tiles (``--tile``, ``--tile-overlap``; whole images by default,
1024 px tiles for slides), ``--batch`` tiles per forward pass, on ``MODEL.DEVICE`` (or
``--device``). Tiles are stitched seamlessly: each tile keeps the nuclei whose bounding-box
centre lies in its core (the tile minus half the overlap on each inner side), so a nucleus
smaller than half the overlap is kept once, uncut (see :mod:`nucleiweak_d2.engine.predictor`).
The stitched map is held in compressed blocks and every output is streamed, so memory
follows the tile size, not the slide.

Outputs per image ``<stem>`` in ``--output`` (``--outputs``, comma-separated; default
``labels,overlay,points``):

- ``labels``: ``<stem>_instances.png`` (16-bit PNG) for ordinary images with at most 65 535
  nuclei, else ``<stem>_instances.tif`` (tiled zlib TIFF, uint16, or uint32 above 65 535
  ids); ``--label-format`` forces one. 0 = background, ids 1..N in the order nuclei were
  kept. In pixels of the processed view (level, region, ``--mpp``).
- ``overlay``: ``<stem>_overlay.png``: outlines (green) and points (red) on the image;
  downsampled to at most ``--overlay-max-side`` px for large views.
- ``points``: ``<stem>_points.csv``: ``x,y`` of the detected points (integer-pixel convention
  of the view), for models that output points.
- ``geojson``: ``<stem>_nuclei.geojson``: QuPath detections (``FeatureCollection`` of
  ``Polygon`` features, ``objectType: "detection"``, class ``Nucleus``, measurements) in
  level-0 pixel coordinates of the input (origin top-left), ready for File > Import objects.
- ``csv``: ``<stem>_nuclei.csv``: one row per nucleus: id (as in the label map), centroid x/y
  (level-0 pixels, as the GeoJSON), area, perimeter (view pixels), eccentricity, solidity,
  mean hematoxylin and eosin optical density (``skimage.color.rgb2hed``), score, and the
  area/perimeter in µm when the pixel size is known.
- ``coco``: ``<stem>_coco.json``: one image, one annotation per nucleus (RLE mask of the view,
  bbox, area, score, point), readable by pycocotools and ``load_nuclei_coco``.

Every file is written to a temporary file in the output folder and renamed into place when
the image is finished, the label map last, so an interrupted run never leaves a half-written
output. An image is finished when all requested outputs exist (the points file aside).

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

Several GPUs or machines: ``--num-gpus N`` (``--num-machines``, ``--machine-rank``,
``--dist-url``) start processes with Detectron2's ``launch``; the images are sharded between
them (:func:`nucleiweak_d2.engine.predictor.shard_inputs`, balanced by file size), each
image written by exactly one process. With ``--device cpu`` (or a CPU config) the N processes
run on the CPU (gloo), also on a machine with GPUs (:mod:`nucleiweak_d2.engine.launch`).

Examples::

    python tools/predict.py --config-file configs/qu2020/R18_synthetic.yaml \\
        --input data/images --output out/pred --opts MODEL.WEIGHTS out/qu/model_final.pth
    python tools/predict.py --config-file CFG --input "slides/*.svs" --output out/slides \\
        --mpp 0.5 --tissue-mask auto --batch 8 --outputs labels,geojson,csv \\
        --skip-existing --opts MODEL.WEIGHTS model.pth
    python tools/predict.py --config-file CFG --input slide.tif --region 20000 14000 4000 4000 \\
        --outputs geojson,overlay --output out/roi --opts MODEL.WEIGHTS model.pth
"""

import argparse
import glob
import json
import math
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from nucleiweak_d2.cli import add_debug_flag, run_cli

OUTPUT_SUFFIXES = {
    "instances": "_instances.png",
    "instances_tif": "_instances.tif",
    "overlay": "_overlay.png",
    "points": "_points.csv",
    "geojson": "_nuclei.geojson",
    "csv": "_nuclei.csv",
    "coco": "_coco.json",
}
OUTPUTS = ("labels", "overlay", "points", "geojson", "csv", "coco")
DEFAULT_OUTPUTS = "labels,overlay,points"
PNG_MAX_ID = 65535  # the largest id of a 16-bit PNG
SLIDE_TILE = 1024  # default tile side of views read tile by tile
WHOLE_MAX_PIXELS = 4096 * 4096  # TIFFs above this are read tile by tile (--read auto)
EPILOG = f"""outputs per image <stem> (in --output), chosen with --outputs:
  labels    <stem>_instances.png  16-bit instance labels (0 = background); with more than
            {PNG_MAX_ID} nuclei, or for slides, <stem>_instances.tif (tiled TIFF, uint16/uint32)
  overlay   <stem>_overlay.png    contours (green) and points (red) on the image
  points    <stem>_points.csv     x,y of the detected points (models that give points)
  geojson   <stem>_nuclei.geojson QuPath detections, level-0 pixel coordinates
  csv       <stem>_nuclei.csv     per-nucleus measurements
  coco      <stem>_coco.json      COCO RLE masks with scores
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

    def to_json(self):
        return {"done": dict(self), "skipped": self.skipped, "failed": self.failed}

    def merge(self, content):
        self.update(content.get("done", {}))
        self.skipped += [p for p in content.get("skipped", []) if p not in self.skipped]
        self.failed += [tuple(f) for f in content.get("failed", [])]


def _input_extensions():
    from nucleiweak_d2.data.io import IMAGE_EXTENSIONS
    from nucleiweak_d2.data.slides import SLIDE_EXTENSIONS

    return tuple(dict.fromkeys(IMAGE_EXTENSIONS + SLIDE_EXTENSIONS))


def list_inputs(spec):
    """Image and slide files named by ``--input``: one file, a folder, or a glob pattern.

    Returns
    -------
    list of Path
        Sorted; only files with an image or slide extension are taken from a folder or a
        pattern.

    Raises
    ------
    ValueError
        Missing input, no image found, a named file that is not an image, or two inputs of
        the same stem (their outputs would collide).
    """
    extensions = _input_extensions()

    def is_image(path):
        return path.is_file() and path.suffix.lower() in extensions

    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if is_image(p) and not p.name.startswith("."))
        where = f"folder {path}"
    elif path.is_file():
        if path.suffix.lower() not in extensions:
            raise ValueError(f"input {path} is not an image file ({', '.join(extensions)})")
        files = [path]
        where = str(path)
    elif glob.has_magic(spec):
        files = sorted(p for p in map(Path, glob.glob(spec)) if is_image(p))
        where = f"pattern {spec!r}"
    else:
        raise ValueError(f"input not found: {spec}")
    if not files:
        raise ValueError(f"no image file ({', '.join(extensions)}) in {where}")
    stems = {}
    for f in files:
        stems.setdefault(f.stem, []).append(str(f))
    clashes = [v for v in stems.values() if len(v) > 1]
    if clashes:
        raise ValueError(f"inputs with the same name would write the same outputs: {clashes[0]}")
    return files


def parse_outputs(text):
    """The set of output names of ``--outputs`` (comma-separated names of :data:`OUTPUTS`)."""
    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or not names:
        raise ValueError(
            f"--outputs takes comma-separated names of {', '.join(OUTPUTS)}; got {text!r}"
        )
    return set(names)


def output_paths(out_dir, stem, outputs=None):
    """Paths of the outputs of image ``stem``: keys of :data:`OUTPUT_SUFFIXES`, those of the
    requested ``outputs`` (``labels`` gives both ``instances`` and ``instances_tif``)."""
    outputs = set(OUTPUTS) if outputs is None else set(outputs)
    keys = [
        k
        for k in OUTPUT_SUFFIXES
        if (k in ("instances", "instances_tif") and "labels" in outputs) or k in outputs
    ]
    return {key: Path(out_dir) / f"{stem}{OUTPUT_SUFFIXES[key]}" for key in keys}


def output_state(paths):
    """``"new"`` (no output), ``"done"`` (every requested output but the points file
    exists; the label map in either format) or ``"partial"``."""
    existing = {key for key, path in paths.items() if path.exists()}
    if not existing:
        return "new"
    for key in paths:
        if key == "points":
            continue
        if key in ("instances", "instances_tif"):
            if not existing & {"instances", "instances_tif"}:
                return "partial"
        elif key not in existing:
            return "partial"
    return "done"


def _listing(paths, limit=3):
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(str(p) for p in paths[:limit]) + more


def plan_outputs(files, out_dir, overwrite=False, skip_existing=False, outputs=None):
    """Decide, before any work, which images to predict; refuse to replace outputs silently.

    Parameters
    ----------
    files : list of Path
        Inputs (:func:`list_inputs`).
    out_dir : Path
        ``--output``.
    overwrite, skip_existing : bool
        The options of the same name.
    outputs : set of str, optional
        Requested outputs (default: all).

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
        paths = output_paths(out_dir, f.stem, outputs)
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
        raise ValueError(
            f"incomplete outputs of an earlier run: {_listing(partial)} (the "
            f"instance map or another requested output is missing); pass "
            f"--overwrite too to redo these images"
        )
    if existing:
        raise ValueError(
            f"outputs already exist: {_listing(existing)}; pass --overwrite to "
            f"replace them or --skip-existing to keep finished images"
        )
    return todo, skipped


def _remove_stale(path, why):
    """Remove an output of an earlier run (only reachable with --overwrite)."""
    if path.exists():
        path.unlink()
        print(f"removed {path} (from an earlier run; {why})")


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, help="model config (YAML)")
    parser.add_argument(
        "--input", required=True, help="image or slide file, folder, or glob pattern (quoted)"
    )
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument(
        "--outputs",
        default=DEFAULT_OUTPUTS,
        help=f"comma-separated outputs: {', '.join(OUTPUTS)} (default {DEFAULT_OUTPUTS})",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=0,
        help=f"tile side in px (default 0: whole image for ordinary images, "
        f"{SLIDE_TILE} for slides)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=int,
        default=64,
        help="overlap of tiles in px; more than the largest nucleus diameter",
    )
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    parser.add_argument(
        "--device", default=None, help="cpu or cuda (default: MODEL.DEVICE of the config)"
    )
    parser.add_argument(
        "--read",
        choices=("auto", "whole", "tiles"),
        default="auto",
        help="read images whole or tile by tile (auto: tile by tile for "
        "slides, pyramidal TIFFs and TIFFs above 4096x4096 px)",
    )
    parser.add_argument(
        "--level", type=int, default=None, help="pyramid level to predict (0 = full resolution)"
    )
    parser.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="pixel size to predict at, in µm per pixel (chooses the level "
        "and resizes; e.g. the training data's)",
    )
    parser.add_argument(
        "--slide-mpp",
        type=float,
        default=None,
        help="µm per level-0 pixel when the file does not record it",
    )
    parser.add_argument(
        "--region",
        type=int,
        nargs=4,
        metavar=("X", "Y", "W", "H"),
        default=None,
        help="predict only this box, in level-0 pixels",
    )
    parser.add_argument(
        "--tissue-mask",
        choices=("none", "auto"),
        default="none",
        help="auto: skip tiles without tissue (Otsu on a low-resolution copy)",
    )
    parser.add_argument(
        "--label-format",
        choices=("auto", "png", "tif"),
        default="auto",
        help="label map file (auto: PNG for ordinary images with at most "
        f"{PNG_MAX_ID} nuclei, else TIFF)",
    )
    parser.add_argument(
        "--overlay-max-side",
        type=int,
        default=4096,
        help="longest side of the overlay PNG (larger views are downsampled)",
    )
    parser.add_argument(
        "--cache-mb",
        type=float,
        default=256,
        help="memory for uncompressed label blocks (the rest is compressed)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip images whose outputs exist (resume an interrupted run)",
    )
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="accept an empty MODEL.WEIGHTS (untrained model, seed SEED)",
    )
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes per machine (one per GPU); inputs are sharded",
    )
    parser.add_argument("--num-machines", type=int, default=1, help="machines in the job")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine")
    parser.add_argument(
        "--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 (auto: a free local port)"
    )
    add_debug_flag(parser)
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides KEY VALUE ..., e.g. MODEL.WEIGHTS model.pth",
    )
    return parser


def _check_args(args):
    """Options that are wrong whatever the files: ValueError naming the option."""
    if args.tile < 0:
        raise ValueError(f"--tile must be >= 0, got {args.tile}")
    if args.tile > 0 and not 0 <= args.tile_overlap < args.tile:
        raise ValueError(
            f"tile overlap must be in [0, tile), got overlap={args.tile_overlap}, tile={args.tile}"
        )
    if args.tile_overlap < 0:
        raise ValueError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.mpp is not None and not args.mpp > 0:
        raise ValueError(f"--mpp must be > 0, got {args.mpp}")
    if args.slide_mpp is not None and not args.slide_mpp > 0:
        raise ValueError(f"--slide-mpp must be > 0, got {args.slide_mpp}")
    if args.level is not None and args.level < 0:
        raise ValueError(f"--level must be >= 0, got {args.level}")
    if args.overlay_max_side < 16:
        raise ValueError(f"--overlay-max-side must be >= 16, got {args.overlay_max_side}")
    if args.num_gpus < 1 or args.num_machines < 1:
        raise ValueError("--num-gpus and --num-machines must be >= 1")
    if not 0 <= args.machine_rank < args.num_machines:
        raise ValueError(f"--machine-rank must be in [0, {args.num_machines})")
    if args.device is not None and not (args.device == "cpu" or args.device.startswith("cuda")):
        raise ValueError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if len(args.opts) % 2:
        raise ValueError(f"--opts needs KEY VALUE pairs, got {args.opts}")
    if not os.path.isfile(args.config_file):
        raise ValueError(f"config file not found: {args.config_file}")
    args.output_set = parse_outputs(args.outputs)
    if args.label_format != "auto" and "labels" not in args.output_set:
        raise ValueError("--label-format needs 'labels' in --outputs")


def read_tile_by_tile(path, args):
    """Whether ``--read`` (auto) reads this input tile by tile rather than whole."""
    from nucleiweak_d2.data.slides import OPENSLIDE_EXTENSIONS, TIFF_EXTENSIONS

    suffix = Path(path).suffix.lower()
    if suffix in OPENSLIDE_EXTENSIONS:
        return True
    if suffix not in TIFF_EXTENSIONS or args.read == "whole":
        return False
    if args.read == "tiles":
        return True
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0]
            page = tif.pages[0]
            if len(series.levels) > 1:
                return True
            return int(page.imagelength) * int(page.imagewidth) > WHOLE_MAX_PIXELS
    except Exception as exc:  # noqa: BLE001  (reported as a failed image by the reader)
        raise ValueError(f"cannot read {path}: {exc}") from exc


def build_predictor(args):
    """The :class:`NucleiPredictor` of the config, weights and ``--device``."""
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.engine.predictor import NucleiPredictor

    opts = list(args.opts)
    if args.device:
        opts += ["MODEL.DEVICE", args.device]
    cfg = setup_cfg(args.config_file, opts)
    note = final_config_note(args.config_file, cfg.MODEL.WEIGHTS)
    if note:
        print(note, file=sys.stderr)
    return NucleiPredictor(cfg, keep_raw=False, allow_random_weights=args.allow_random_weights)


def final_config_note(config_file, weights):
    """A note when ``weights`` sits beside the ``model_final.yaml`` of a finished run and another
    config is used: that file holds the post-processing the run chose on val and evaluated with
    (thresholds, ``T_0``), which another config does not know. None otherwise."""
    from nucleiweak_d2.engine.run_dir import FINAL_CONFIG

    if not weights:
        return None
    final = Path(weights).resolve().parent / FINAL_CONFIG
    if not final.is_file() or final == Path(config_file).resolve():
        return None
    return (
        f"note: {final} is the config {weights} was evaluated with (post-processing chosen "
        "on val); pass it as --config-file to predict as evaluated"
    )


def _progress(desc, position, total=None, leave=False):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        position=position,
        leave=leave,
        unit="tile",
        dynamic_ncols=True,
        disable=None,
        file=sys.stderr,
    )


def predict_image(predictor, path, out_dir, args, position=0):
    """Predict one input and write its outputs; returns ``(written paths, message)``.

    Raises
    ------
    ValueError
        The input cannot be read or predicted (nothing is written).
    """
    import numpy as np

    from nucleiweak_d2.data import io
    from nucleiweak_d2.data.atomic import atomic_path
    from nucleiweak_d2.data.label_store import BlockLabelCanvas, write_label_tiff
    from nucleiweak_d2.data.nuclei_exports import Frame, NucleiExporter, SlideOverlay
    from nucleiweak_d2.data.overlay import draw_outlines
    from nucleiweak_d2.data.slides import make_view, open_source, thumbnail, tissue_mask
    from nucleiweak_d2.engine.predictor import predict_view

    outputs = args.output_set
    paths = output_paths(out_dir, path.stem)
    tiled_read = read_tile_by_tile(path, args)
    source = open_source(path, mpp=args.slide_mpp, prefer_array=not tiled_read)
    with ExitStack() as resources:
        resources.callback(source.close)
        view = make_view(source, level=args.level, mpp=args.mpp, region=args.region)
        slide = source.kind != "array"
        tile = args.tile or (SLIDE_TILE if slide else 0)
        if tile and tile <= args.tile_overlap:
            raise ValueError(
                f"tile overlap must be in [0, tile), got overlap={args.tile_overlap}, tile={tile}"
            )
        tissue = tissue_mask(view, margin=args.tile_overlap) if args.tissue_mask == "auto" else None
        factor = max(1, math.ceil(max(view.height, view.width) / args.overlay_max_side))
        out_dir.mkdir(parents=True, exist_ok=True)
        canvas = resources.enter_context(
            BlockLabelCanvas(
                view.height, view.width, cache_mb=args.cache_mb, scratch_dir=str(out_dir)
            )
        )
        written = []
        with ExitStack() as last, ExitStack() as files:  # `last`: the label map, renamed last
            streams = {}
            for key in ("geojson", "csv", "coco"):
                if key in outputs:
                    tmp = files.enter_context(atomic_path(paths[key]))
                    streams[key] = files.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
                    written.append(paths[key])
            frame = Frame.of_view(view)
            exporter = NucleiExporter(
                frame,
                geojson=streams.get("geojson"),
                csv_file=streams.get("csv"),
                coco=streams.get("coco"),
                image_info={"file_name": str(Path(path).resolve())},
                info={
                    "description": "nucleiweak_d2 predictions",
                    "source": str(Path(path).resolve()),
                    "level": view.level,
                    "downsample": view.downsample,
                    "origin": list(view.origin),
                    "mpp": view.mpp,
                },
            )
            on_tile = [exporter] if streams else []
            overlay = None
            if "overlay" in outputs and factor > 1:
                background = thumbnail(view, factor) if tissue is not None else None
                overlay = SlideOverlay(view.height, view.width, factor, canvas.block, background)
                canvas.on_final.append(overlay.on_block)
                on_tile.append(overlay.on_tile)
            bar = _progress(path.name, position + 1)
            try:
                result = predict_view(
                    predictor,
                    view,
                    canvas,
                    tile=tile,
                    overlap=args.tile_overlap,
                    batch=args.batch,
                    tissue=tissue,
                    on_tile=on_tile,
                    progress=bar,
                )
            finally:
                bar.close()
            exporter.close()
            # points, overlay, then the label map (renamed last)
            points = result.points
            if "points" in outputs:
                if points is not None:
                    lines = ["x,y"] + [f"{x:.3f},{y:.3f}" for x, y in points]
                    tmp = files.enter_context(atomic_path(paths["points"]))
                    tmp.write_text("\n".join(lines) + "\n")
                    written.append(paths["points"])
                else:
                    _remove_stale(paths["points"], "this model gives no points")
            label = None
            if factor == 1 and (
                "overlay" in outputs
                or args.label_format == "png"
                or (args.label_format == "auto" and not slide)
            ):
                label = canvas.to_array(np.int32)
            if "overlay" in outputs:
                if overlay is not None:
                    picture = overlay.render()
                else:
                    image = (
                        source.image
                        if getattr(source, "image", None) is not None and view.is_whole_image
                        else view.read(0, 0, view.width, view.height)
                    )
                    picture = draw_outlines(image, label, points)
                tmp = files.enter_context(atomic_path(paths["overlay"]))
                io.write_image(tmp, picture)
                written.insert(0, paths["overlay"])
            if "labels" in outputs:
                png = args.label_format == "png" or (
                    args.label_format == "auto" and not slide and result.n_nuclei <= PNG_MAX_ID
                )
                if png and result.n_nuclei > PNG_MAX_ID:
                    raise ValueError(
                        f"{result.n_nuclei} nuclei do not fit a 16-bit PNG "
                        f"(--label-format png); use tif or auto"
                    )
                key = "instances" if png else "instances_tif"
                other = "instances_tif" if png else "instances"
                _remove_stale(
                    paths[other],
                    f"this image now gets a {'PNG' if png else 'TIFF'}"
                    f" label map ({result.n_nuclei} nuclei)",
                )
                tmp = last.enter_context(atomic_path(paths[key]))
                if png:
                    if label is None:
                        label = canvas.to_array(np.int32)
                    io.write_label(tmp, label)
                else:
                    write_label_tiff(tmp, canvas, result.n_nuclei, mpp=view.mpp)
                written.insert(0, paths[key])
    n_points = "" if points is None else f", {len(points)} points"
    where = "" if view.is_whole_image else f" [{view.describe()}]"
    tiles = (
        f", {result.n_tiles} tiles"
        + (f" ({result.n_skipped} without tissue skipped)" if result.n_skipped else "")
        if result.n_tiles + result.n_skipped > 1
        else ""
    )
    message = (
        f"{path}{where}: {result.n_nuclei} nuclei{n_points}{tiles} -> "
        f"{written[0] if written else out_dir}"
    )
    if result.seam_cut:
        message += (
            f"\nwarning: {path}: {result.seam_cut} nuclei touch a tile seam (cut); "
            f"raise --tile-overlap above the largest nucleus diameter "
            f"({args.tile_overlap} now)"
        )
    return written, message


def run_shard(args, todo, rank=0, world_size=1, local_rank=0, predictor=None):
    """Predict this process's share of ``todo``; returns its :class:`PredictionRun`."""
    from nucleiweak_d2.engine.predictor import shard_inputs

    todo = [Path(p) for p in todo]
    sizes = [p.stat().st_size if p.exists() else 0 for p in todo]
    mine = shard_inputs(todo, rank, world_size, sizes) if world_size > 1 else todo
    run = PredictionRun()
    if not mine:
        return run
    if predictor is None:
        predictor = build_predictor(args)
    out_dir = Path(args.output)
    bar = _progress(
        f"images (rank {rank})" if world_size > 1 else "images",
        2 * local_rank,
        total=len(mine),
        leave=True,
    )
    bar.unit = "image"
    try:
        for path in mine:
            try:
                written, message = predict_image(
                    predictor, path, out_dir, args, position=2 * local_rank
                )
            except ValueError as exc:
                run.failed.append((str(path), str(exc)))
                print(f"failed {path}: {' '.join(str(exc).split())}", file=sys.stderr)
            else:
                run[str(path)] = [str(p) for p in written]
                if bar.disable:
                    print(message)
                else:
                    bar.write(message)
            bar.update(1)
    finally:
        bar.close()
    return run


def _report(run, n_inputs):
    """Print what was skipped and which images failed (stderr), one line each."""
    for path in run.skipped:
        print(f"skipped {path}: its outputs exist (--skip-existing)")
    print(
        f"{len(run)} of {n_inputs} image(s) predicted, {len(run.skipped)} skipped, "
        f"{len(run.failed)} failed"
    )
    if run.failed:
        print(f"error: {len(run.failed)} image(s) failed and have no outputs:", file=sys.stderr)
        for _, message in run.failed:
            print(f"  {' '.join(message.split())}", file=sys.stderr)


def _report_path(out_dir, rank):
    return Path(out_dir) / f".nucleiweak_predict_rank{rank}.json"


def launch_worker(argv, todo):
    """Body of one process of a ``--num-gpus`` / ``--num-machines`` run (after ``launch``):
    predicts its shard and leaves its report in the output folder."""
    from detectron2.utils import comm

    from nucleiweak_d2.data.atomic import write_json

    args = build_parser().parse_args(argv)
    _check_args(args)
    rank = comm.get_rank()
    run = run_shard(args, todo, rank, comm.get_world_size(), comm.get_local_rank())
    write_json(_report_path(args.output, rank), run.to_json())


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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _check_args(args)
    files = list_inputs(args.input)
    out_dir = Path(args.output)
    if Path(args.input).is_dir() and out_dir.resolve() == Path(args.input).resolve():
        raise ValueError(
            f"--output {out_dir} is the input folder; choose another folder (the "
            f"outputs would be read as inputs by the next run)"
        )
    todo, skipped = plan_outputs(
        files, out_dir, args.overwrite, args.skip_existing, args.output_set
    )
    world_size = args.num_gpus * args.num_machines
    if world_size == 1 or not todo:
        # bad weights or config are refused here, before any output
        run = run_shard(args, todo, predictor=build_predictor(args) if todo else None)
    else:
        from nucleiweak_d2.api import _predict_launch_worker
        from nucleiweak_d2.config import setup_cfg
        from nucleiweak_d2.engine.launch import launch

        # refuse bad weights once, before starting processes (on the CPU: the GPUs are theirs)
        build_predictor(argparse.Namespace(**{**vars(args), "device": "cpu"}))
        out_dir.mkdir(parents=True, exist_ok=True)
        launch(
            _predict_launch_worker,
            args.num_gpus,
            device=args.device or setup_cfg(args.config_file, args.opts).MODEL.DEVICE,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(str(Path(__file__).resolve()), argv, [str(p) for p in todo]),
        )
        run = PredictionRun()
        for local in range(args.num_gpus):
            report = _report_path(out_dir, args.machine_rank * args.num_gpus + local)
            if report.is_file():
                run.merge(json.loads(report.read_text()))
                report.unlink()
    run.skipped = [str(p) for p in skipped]
    _report(run, len(files))
    return run


if __name__ == "__main__":
    sys.exit(run_cli(main))
