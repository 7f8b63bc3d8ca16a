"""Python API of nucleiweak_d2: predict nuclei in a few lines, and the console scripts.

Example::

    from nucleiweak_d2.api import load_predictor, predict

    predictor = load_predictor("configs/qu2020/R34_monuseg_p10.yaml", "output/qu/model_final.pth")
    result = predict("tile.png", predictor=predictor)          # or an (H, W, 3) uint8 array
    labels, scores = result["instance_map"], result["scores"]  # scores[k] is nucleus k + 1
    slide = predict("slide.svs", predictor=predictor, mpp=0.5, region=(20000, 14000, 4000, 4000),
                    tile=1024)

:func:`predict` runs the streaming tiled prediction of ``tools/predict.py``
(:func:`nucleiweak_d2.engine.predictor.predict_view`), so a large region is stitched the same
way; the instance map it returns is held in memory (use ``tools/predict.py`` for whole slides:
it streams every output to disk).

Console scripts (``setup.py``): ``nucleiweak-predict``, ``nucleiweak-train``,
``nucleiweak-evaluate``, ``nucleiweak-benchmark`` run ``tools/predict.py``, ``train_net.py``,
``evaluate.py``, ``benchmark.py`` with the command-line arguments. The tools are scripts,
not modules of the package; an installed package finds them without depending on the working
directory: first the copy installed with the package (``nucleiweak_d2/_tools``, which
``setup.py`` maps to ``tools/``), else the ``tools/`` folder of the source checkout the
package was imported from (an editable install), else ``$NUCLEIWEAK_TOOLS``.
"""

import importlib.util
import os
import runpy
import sys
from pathlib import Path

import numpy as np

__all__ = [
    "load_predictor",
    "predict",
    "tool_path",
    "run_tool",
    "predict_cli",
    "train_cli",
    "evaluate_cli",
    "benchmark_cli",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


def load_predictor(config, weights=None, *, device=None, opts=(), allow_random_weights=False):
    """Build a model from a config and load its trained weights.

    Parameters
    ----------
    config : str or Path
        YAML config of the model: a run's ``OUTPUT_DIR/model_final.yaml`` (the config it was
        evaluated with, post-processing chosen on val included, weights named) or the one it
        was trained with.
    weights : str or Path, optional
        Checkpoint (``model_final.pth``); default: the config's ``MODEL.WEIGHTS``.
    device : str, optional
        ``"cpu"`` or ``"cuda"`` (default: the config's ``MODEL.DEVICE``; CUDA falls back to
        the CPU when absent).
    opts : sequence of str
        More config overrides ``KEY VALUE ...``.
    allow_random_weights : bool
        Accept no weights at all (an untrained model, for tests and benchmarks).

    Returns
    -------
    nucleiweak_d2.engine.predictor.NucleiPredictor

    Raises
    ------
    ValueError
        Missing config, missing or mismatching weights.
    """
    from .config import setup_cfg
    from .engine.predictor import NucleiPredictor

    opts = list(opts)
    if weights is not None:
        opts += ["MODEL.WEIGHTS", str(weights)]
    if device is not None:
        opts += ["MODEL.DEVICE", str(device)]
    if config is not None and not os.path.isfile(str(config)):
        raise ValueError(f"config file not found: {config}")
    cfg = setup_cfg(None if config is None else str(config), opts)
    return NucleiPredictor(cfg, keep_raw=False, allow_random_weights=allow_random_weights)


def predict(
    image,
    weights=None,
    config=None,
    *,
    predictor=None,
    tile=0,
    tile_overlap=64,
    batch=1,
    device=None,
    level=None,
    mpp=None,
    slide_mpp=None,
    region=None,
    tissue_mask=False,
    cache_mb=256,
):
    """Predict the nuclei of an image, a region of a large image, or a slide level.

    Parameters
    ----------
    image : str, Path or numpy.ndarray
        An image or slide file (anything ``tools/predict.py`` reads), or an ``(H, W, 3)``
        uint8 RGB array.
    weights, config : str or Path
        Checkpoint and config (see :func:`load_predictor`), unless ``predictor`` is given.
    predictor : NucleiPredictor, optional
        A predictor from :func:`load_predictor`, reused across calls.
    tile, tile_overlap, batch : int
        Tiled inference (``tile`` 0: one tile, the whole view).
    device : str, optional
        With ``config``: where the model runs.
    level, mpp, slide_mpp, region
        The view of a file, as ``tools/predict.py``'s ``--level``, ``--mpp``,
        ``--slide-mpp``, ``--region (x, y, w, h)`` (level-0 pixels).
    tissue_mask : bool
        Skip tiles without tissue (Otsu on a low-resolution copy).
    cache_mb : float
        Memory of uncompressed label blocks while stitching.

    Returns
    -------
    dict
        ``instance_map``: ``(h, w)`` int32 ids 1..N (0 = background) in view pixels;
        ``points``: ``(K, 2)`` float64 ``(x, y)`` view pixels, or None for models without
        points; ``scores``: ``(N,)`` float64, the score of nucleus ``k + 1`` at ``k`` (mean
        foreground probability or instance score; NaN when the model gives none);
        ``downsample`` and ``origin``: view pixel ``(x, y)`` is level-0 pixel
        ``origin + (x, y) * downsample``; ``seam_cut``: nuclei touching a tile seam.
    """
    from .data.label_store import BlockLabelCanvas
    from .data.slides import ArraySource, make_view, open_source
    from .data.slides import tissue_mask as find_tissue
    from .engine.predictor import predict_view

    if predictor is None:
        if config is None:
            raise ValueError("predict needs config= (and weights=) or predictor=")
        predictor = load_predictor(config, weights, device=device)
    if isinstance(image, np.ndarray):
        source = ArraySource(image, mpp=slide_mpp)
    else:
        source = open_source(image, mpp=slide_mpp)
    try:
        view = make_view(source, level=level, mpp=mpp, region=region)
        tissue = find_tissue(view, margin=tile_overlap) if tissue_mask else None
        with BlockLabelCanvas(view.height, view.width, cache_mb=cache_mb) as canvas:
            result = predict_view(
                predictor, view, canvas, tile=tile, overlap=tile_overlap, batch=batch, tissue=tissue
            )
            label = canvas.to_array(np.int32)
    finally:
        source.close()
    return {
        "instance_map": label,
        "points": result.points,
        "scores": result.scores,
        "downsample": view.downsample,
        "origin": view.origin,
        "seam_cut": result.seam_cut,
    }


# ------------------------------------------------------------------------- console scripts


def tool_path(name):
    """Path of ``tools/<name>.py``: the copy installed with the package, else the source
    checkout's, else ``$NUCLEIWEAK_TOOLS``.

    Raises
    ------
    FileNotFoundError
        No copy found (the message says where it looked).
    """
    candidates = []
    spec = importlib.util.find_spec(f"{__package__}._tools")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / f"{name}.py" for p in spec.submodule_search_locations]
    candidates.append(_PACKAGE_DIR.parent / "tools" / f"{name}.py")
    if os.environ.get("NUCLEIWEAK_TOOLS"):
        candidates.append(Path(os.environ["NUCLEIWEAK_TOOLS"]) / f"{name}.py")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"cannot find tools/{name}.py of nucleiweak_d2 (looked in "
        f"{', '.join(str(p.parent) for p in candidates)}); reinstall the "
        f"package or set NUCLEIWEAK_TOOLS to the repository's tools/ folder"
    )


def run_tool(name, argv=None):
    """Run ``tools/<name>.py`` as ``python tools/<name>.py ARGV`` would; returns its exit
    code (a tool that ends with ``sys.exit(code)`` gives ``code``)."""
    try:
        path = tool_path(name)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv[:]
    sys.argv = [str(path)] + argv
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


def predict_cli():
    """``nucleiweak-predict``: ``tools/predict.py``."""
    sys.exit(run_tool("predict"))


def train_cli():
    """``nucleiweak-train``: ``tools/train_net.py``."""
    sys.exit(run_tool("train_net"))


def evaluate_cli():
    """``nucleiweak-evaluate``: ``tools/evaluate.py``."""
    sys.exit(run_tool("evaluate"))


def benchmark_cli():
    """``nucleiweak-benchmark``: ``tools/benchmark.py``."""
    sys.exit(run_tool("benchmark"))


def _predict_launch_worker(tool_file, argv, todo):
    """One process of ``tools/predict.py --num-gpus N``: loads the tool from its file (a
    picklable entry for ``launch``, whether the tool runs as a script, through runpy or from
    a test) and predicts this rank's shard."""
    spec = importlib.util.spec_from_file_location("_nucleiweak_predict_tool", tool_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.launch_worker(argv, todo)
