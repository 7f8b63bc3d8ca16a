"""What an ``OUTPUT_DIR`` holds, and the one rule for reruns into it.

A training run owns its ``OUTPUT_DIR``. It is marked by ``nucleiweak_run.json`` (pipelines) or by
Detectron2's ``last_checkpoint`` / ``model_final.pth`` (single models). Rules, for every method:

- a new run into a folder that holds another run is refused, unless ``--resume`` (continue it;
  a pipeline also checks that the config and data are the ones it was made from) or
  ``--overwrite`` (delete the files the earlier run wrote, and only those, then start afresh);
- ``--eval-only`` never writes into a training run's files: in a folder that holds a run it
  writes into the first ``eval_only[_N]`` sub-folder that holds no finished evaluation.

``config.yaml`` and ``log.txt`` (written by Detectron2's ``default_setup``) do not make a run.
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path

from detectron2.data import MetadataCatalog

__all__ = [
    "FINAL_CONFIG",
    "RUN_FILE",
    "STAGE_FILE",
    "IGNORED_KEYS",
    "holds_run",
    "resolve_output_dir",
    "flat_config",
    "config_hash",
    "dataset_fingerprint",
    "config_diff",
    "short_hash",
    "METHOD_NODES",
]

logger = logging.getLogger(__name__)

RUN_FILE = "nucleiweak_run.json"
STAGE_FILE = "stage_done.json"
#: Config of ``OUTPUT_DIR/model_final.pth`` as the run evaluated it (post-processing chosen on val
#: included), written by a finished pipeline run for ``tools/predict.py --config-file``.
FINAL_CONFIG = "model_final.yaml"
#: Config keys that do not change what a run trains (where it writes, how it is evaluated at the
#: end, the device, loader processes); they are left out of the fingerprints.
IGNORED_KEYS = (
    "OUTPUT_DIR",
    "NUCLEIWEAK.EVAL_DATASETS",
    "NUCLEIWEAK.SAVE_PREDICTIONS",
    "MODEL.DEVICE",
    "DATALOADER.NUM_WORKERS",
)
_SINGLE_MODEL_FILES = ("last_checkpoint", "model_final.pth")
#: ``{"NUCLEIWEAK.<NODE>": names of the pipelines that read it}``, filled when the methods' configs
#: are composed (``nucleiweak_d2.methods.add_methods_config``): a run's fingerprint leaves out the
#: nodes of the methods it does not use, so registering another method keeps it resumable.
METHOD_NODES = {}


def holds_run(folder):
    """True when ``folder`` holds a training run (pipeline or single model)."""
    folder = Path(folder)
    if (folder / RUN_FILE).is_file() or any(folder.glob(f"*/{STAGE_FILE}")):
        return True
    return any((folder / name).is_file() for name in _SINGLE_MODEL_FILES)


def flat_config(cfg):
    """``{"A.B.C": value}`` of a config, without :data:`IGNORED_KEYS` and without the nodes of
    methods other than the one whose pipeline the config runs; values as JSON holds them."""
    out = {}
    pipeline = cfg.get("NUCLEIWEAK", {}).get("PIPELINE", "")
    others = {node for node, pipelines in METHOD_NODES.items() if pipeline not in pipelines}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if name in others or name in IGNORED_KEYS:
                continue
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                out[name] = json.loads(json.dumps(value, default=str))  # nested tuples -> lists

    walk(cfg, "")
    return out


def short_hash(obj):
    """Short, stable hash of a JSON-able object."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg):
    """Short hash of :func:`flat_config`."""
    return short_hash(flat_config(cfg))


def dataset_fingerprint(name):
    """Fingerprint of a registered dataset: its COCO file's content hash and image root.

    Datasets registered without ``json_file`` metadata are fingerprinted by name only.
    """
    meta = MetadataCatalog.get(name)
    json_file = meta.get("json_file", None)
    content = None
    if json_file and Path(json_file).is_file():
        content = hashlib.sha1(Path(json_file).read_bytes()).hexdigest()[:16]
    return {"name": name, "json_sha1": content, "image_root": str(meta.get("image_root", ""))}


def config_diff(recorded, current, limit=5):
    """Keys whose values differ between two flat configs (at most ``limit`` shown)."""
    keys = sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))
    shown = [
        f"{k}: {recorded.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}"
        for k in keys[:limit]
    ]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "; ".join(shown) + more


def _written_by_run(folder):
    """Files and folders an earlier run wrote in ``folder`` (what ``--overwrite`` removes)."""
    folder = Path(folder)
    items = []
    run_file = folder / RUN_FILE
    if run_file.is_file():
        recorded = json.loads(run_file.read_text())
        items += [folder / s for s in recorded.get("stages", [])]
        items += [folder / f for f in recorded.get("outputs", [])]
        items.append(run_file)
    items += [p.parent for p in folder.glob(f"*/{STAGE_FILE}")]
    items += [folder / name for name in _SINGLE_MODEL_FILES]
    items += list(folder.glob("model_*.pth")) + [folder / "metrics.json", folder / "inference"]
    items.append(folder / FINAL_CONFIG)
    return [p for p in dict.fromkeys(items) if p.exists()]


def _eval_only_dir(folder):
    """First ``eval_only[_N]`` sub-folder of ``folder`` without a finished evaluation."""
    n = 1
    while True:
        sub = folder / ("eval_only" if n == 1 else f"eval_only_{n}")
        if not (sub / "metrics.json").is_file():
            return sub
        n += 1


def resolve_output_dir(cfg, *, resume=False, eval_only=False, overwrite=False):
    """Apply the rerun rule to ``cfg.OUTPUT_DIR``; return the folder this call writes into.

    Parameters
    ----------
    cfg : CfgNode
    resume, eval_only, overwrite : bool
        The command-line flags of ``tools/train_net.py``.

    Returns
    -------
    pathlib.Path
        ``cfg.OUTPUT_DIR``, or its ``eval_only[_N]`` sub-folder for an evaluation of a folder
        that holds a training run.

    Raises
    ------
    FileExistsError
        A new run into a folder that holds another one, without ``--resume`` / ``--overwrite``.
    """
    from detectron2.utils import comm

    folder = Path(cfg.OUTPUT_DIR)
    # One view for every process: the main process's, taken before any process goes on.
    has_run = holds_run(folder)
    if comm.get_world_size() > 1:
        has_run = comm.all_gather(has_run)[0]
    if eval_only:
        return _eval_only_dir(folder) if has_run else folder
    if not has_run or resume:
        return folder
    if not overwrite:
        raise FileExistsError(
            f"OUTPUT_DIR {folder} holds another run; pass --resume to continue it, --overwrite to "
            "delete it and start afresh, or choose another OUTPUT_DIR"
        )
    if comm.is_main_process():
        for path in _written_by_run(folder):
            logger.warning("--overwrite: removing %s of the earlier run", path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    comm.synchronize()
    return folder
