"""The mean of a training run's last periodic checkpoints (weight averaging).

Izmailov et al. (UAI 2018, "Averaging weights leads to wider optima and better generalization")
average the weights a run passes through late in training. A short CPU schedule with a noisy
4-image val split picks one checkpoint almost by chance (docs/methods/feng2019.md); the mean of
the last few is a steadier model. Deviation from their SWA: the batch-norm running statistics
are averaged like the weights instead of recomputed with a pass over the training data
(integer buffers, e.g. ``num_batches_tracked``, come from the last checkpoint).
"""

import re
from pathlib import Path

import torch

__all__ = [
    "periodic_checkpoints",
    "last_periodic_checkpoints",
    "average_state_dicts",
    "load_average",
    "write_average",
]

_PERIODIC = re.compile(r"^model_(\d{7})\.pth$")


def periodic_checkpoints(folder):
    """Detectron2's periodic checkpoints ``model_<iter>.pth`` in ``folder``, by iteration.

    ``model_best.pth`` and ``model_final.pth`` are not periodic and are left out.
    """
    found = []
    for p in Path(folder).glob("model_*.pth"):
        m = _PERIODIC.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def last_periodic_checkpoints(folder, n):
    """The last ``n`` of :func:`periodic_checkpoints`; ValueError when ``folder`` holds fewer."""
    found = periodic_checkpoints(folder)
    if len(found) < n:
        raise ValueError(f"{folder} holds {len(found)} periodic checkpoints, fewer than {n}")
    return found[len(found) - n :]


def average_state_dicts(state_dicts):
    """The element-wise mean of floating-point tensors; other entries from the last dict.

    Parameters
    ----------
    state_dicts : list of dict
        Model state dicts of one architecture (same keys and shapes).

    Returns
    -------
    dict
        A new state dict; floating tensors keep their dtype (the mean is taken in float64).

    Raises
    ------
    ValueError
        No dict, different keys, or a tensor of different shape.
    """
    if not state_dicts:
        raise ValueError("no checkpoint to average")
    keys = list(state_dicts[-1])
    for i, sd in enumerate(state_dicts):
        if set(sd) != set(keys):
            diff = sorted(set(sd) ^ set(keys))[:3]
            raise ValueError(f"checkpoint {i} has other weights than the last one (e.g. {diff})")
    out = {}
    for k in keys:
        last = state_dicts[-1][k]
        if not (torch.is_tensor(last) and last.is_floating_point()):
            out[k] = last
            continue
        for i, sd in enumerate(state_dicts):
            if tuple(sd[k].shape) != tuple(last.shape):
                raise ValueError(
                    f"checkpoint {i}: {k} has shape {tuple(sd[k].shape)}, the last one "
                    f"{tuple(last.shape)}"
                )
        mean = torch.stack([sd[k].detach().to(torch.float64) for sd in state_dicts]).mean(0)
        out[k] = mean.to(last.dtype)
    return out


def load_average(paths):
    """The mean (:func:`average_state_dicts`) of the ``"model"`` weights of the Detectron2
    checkpoints ``paths`` (str or Path; dicts with ``"model"``, as Detectron2's ``Checkpointer``
    writes them).

    Raises
    ------
    ValueError
        A file without a ``"model"`` entry, or weights that do not match.
    """
    state_dicts = []
    for p in paths:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict) or "model" not in ckpt:
            raise ValueError(f"{p} is not a Detectron2 checkpoint (no 'model' entry)")
        state_dicts.append(ckpt["model"])
    return average_state_dicts(state_dicts)


def write_average(paths, out):
    """Write the mean of the checkpoints ``paths`` (:func:`load_average`) to ``out``.

    Parameters
    ----------
    paths : list of str or Path
        Checkpoints written by Detectron2's ``Checkpointer``.
    out : str or Path
        The file written (``{"model": mean, "averaged_from": [file names]}``), loadable by
        ``DetectionCheckpointer`` and ``MODEL.WEIGHTS``.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    paths = [Path(p) for p in paths]
    mean = load_average(paths)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"model": mean, "averaged_from": [p.name for p in paths]}, tmp)
    tmp.replace(out)
    return out
