"""Score one model on several datasets that share images, running it once per shared image.

MoNuSeg's ``test`` split is the union of ``testA`` and ``testB``: scoring the three ran the
model twice over every test image. :class:`SharedImageOutputs` wraps the model for such a
sequence of datasets: the outputs of an image that a later dataset also holds are kept (on the
CPU) until its last use, every other image is run as before. The store has a byte budget: a
Mask R-CNN keeps up to 1000 full-size masks an image (about 1 GB at 1000 x 1000), and keeping
those of MoNuSeg's 14 test images ran a training machine out of memory; an output over the
budget is not kept, and its image runs again when the next dataset needs it.
"""

from collections import Counter

import numpy as np
import torch
from torch import nn

__all__ = ["DEFAULT_MAX_BYTES", "SharedImageOutputs", "image_key", "output_bytes"]

#: Default byte budget of the kept outputs (2 GiB).
DEFAULT_MAX_BYTES = 2 << 30


def image_key(record):
    """What makes two dataset records the same model input: the image file and its size
    (``None`` for a record without a file, which is never shared)."""
    if not record.get("file_name"):
        return None
    return (str(record["file_name"]), record.get("height"), record.get("width"))


def _to_cpu(value):
    """``value`` with every tensor (and Detectron2 ``Instances``) moved to the CPU."""
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if hasattr(value, "to") and (isinstance(value, torch.Tensor) or hasattr(value, "get_fields")):
        return value.to("cpu")
    return value


def output_bytes(value):
    """Bytes held by the tensors and arrays of a model output (dicts, lists, Detectron2
    ``Instances`` and structures with a ``tensor``, such as ``Boxes`` and ``BitMasks``)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(output_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(output_bytes(v) for v in value)
    if hasattr(value, "get_fields"):
        return output_bytes(value.get_fields())
    if isinstance(getattr(value, "tensor", None), torch.Tensor):
        return output_bytes(value.tensor)
    return 0


class SharedImageOutputs(nn.Module):
    """``model``, with the outputs of the images that several datasets share kept for reuse.

    Parameters
    ----------
    model : torch.nn.Module
        The model (eval mode); called as Detectron2 calls it, ``model(list of inputs)``.
    datasets : list of list of dict
        The records of the datasets it will score, in any order; an image (same file and size,
        :func:`image_key`) found in k > 1 of them is run once and served k - 1 times more.
    max_bytes : int
        Budget of the kept outputs (:func:`output_bytes`); an output that would pass it is not
        kept, and its image runs again at its next use.

    Notes
    -----
    Only whole batches are served from the store (every image of the batch seen before);
    otherwise the batch runs and its shared images are (re)stored. An output is dropped after
    its last expected use, so the store never holds more than the shared images, nor more
    than ``max_bytes``.
    """

    def __init__(self, model, datasets, max_bytes=DEFAULT_MAX_BYTES):
        super().__init__()
        self.model = model
        self.max_bytes = int(max_bytes)
        self.stored_bytes = 0
        counts = Counter(
            k for records in datasets for k in {image_key(r) for r in records} - {None}
        )
        self.uses_left = {k: n for k, n in counts.items() if n > 1}
        self.store = {}
        self.calls = 0  # model runs (batches), for tests and logs

    def forward(self, batched_inputs):
        keys = [image_key(x) for x in batched_inputs]
        if all(k in self.store for k in keys):
            outputs = [self.store[k][0] for k in keys]
        else:
            self.calls += 1
            outputs = self.model(batched_inputs)
            for k, out in zip(keys, outputs):
                if k in self.uses_left:
                    self._drop(k)
                    size = output_bytes(out)
                    if self.stored_bytes + size <= self.max_bytes:
                        self.store[k] = (_to_cpu(out), size)
                        self.stored_bytes += size
        for k in keys:
            if k in self.uses_left:
                self.uses_left[k] -= 1
                if self.uses_left[k] <= 0:
                    self.uses_left.pop(k)
                    self._drop(k)
        return outputs

    def _drop(self, key):
        kept = self.store.pop(key, None)
        if kept is not None:
            self.stored_bytes -= kept[1]
