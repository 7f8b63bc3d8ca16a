"""Pseudo-box quality over training, as a Detectron2 hook (issue 17's curve in every run).

:class:`PseudoBoxQualityHook` measures, every ``period`` iterations and after the last one, the
pseudo-boxes the model being trained gives on the full training images against the training
nuclei nobody annotated (``point_labeled`` 0 in the training records: known for this analysis
only, the model never sees them), at one or several centerness thresholds (one forward pass
for all of them). Each check is logged and appended as one JSON line to ``path``; a resumed
run appends again, and :func:`read_quality_curve` keeps the last line of each iteration.

The model is put in eval mode for the check (batch-norm statistics as at inference) and back
in training mode afterwards; the training loop, its random streams and its data are untouched
(the check draws no random number).
"""

import json
import logging
from pathlib import Path

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from .quality import evaluate_pseudo_boxes

__all__ = ["PseudoBoxQualityHook", "read_quality_curve"]

logger = logging.getLogger(__name__)


class PseudoBoxQualityHook(HookBase):
    """Pseudo-box number / precision / recall on the unannotated training nuclei, periodically.

    Parameters
    ----------
    records : list of dict
        Training dataset dicts with every nucleus (``bbox``, ``point_labeled``).
    mapper : callable
        Test-mode mapper giving the model inputs of a record.
    period : int
        Iterations between checks (> 0); a check also follows the last iteration.
    path : str or Path
        JSON-lines file the checks are appended to (main process only).
    thresholds : sequence of float, optional
        Centerness thresholds measured (default: the model's ``SCORE_THRESH`` only; the model's
        own is always added).
    """

    def __init__(self, records, mapper, period, path, thresholds=()):
        if int(period) <= 0:
            raise ValueError(f"period must be a positive number of iterations, got {period}")
        if not any(
            int(a.get("point_labeled", 1)) == 0 for r in records for a in r.get("annotations", [])
        ):
            logger.warning(
                "pseudo-box quality: no unannotated nucleus in the training records; recall "
                "will be NaN (fully annotated training data)"
            )
        self.records = list(records)
        self.mapper = mapper
        self.period = int(period)
        self.path = Path(path)
        self.thresholds = [float(t) for t in thresholds]

    def _model(self):
        model = self.trainer.model
        return getattr(model, "module", model)  # DistributedDataParallel wraps it

    def measure(self, iteration):
        """One check at ``iteration``; returns (and on the main process writes) its entry."""
        model = self._model()
        own = float(model.centerness_head.score_thresh)
        threshs = sorted({own, *self.thresholds})
        with torch.no_grad():
            quality = evaluate_pseudo_boxes(
                model, self.records, self.mapper, threshs, target="unannotated"
            )
        entry = {
            "iter": int(iteration),
            "score_thresh": own,
            "train": {f"{t:g}": q for t, q in quality.items()},
        }
        q = quality[own]
        logger.info(
            "iter %d  pseudo-boxes (thresh %.2f) on the training images: %d, on unannotated "
            "nuclei P %.3f R %.3f (%d of %d)",
            iteration,
            own,
            q["num_pseudo"],
            q["precision"],
            q["recall"],
            q["tp"],
            q["num_unannotated"],
        )
        if comm.is_main_process():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(entry, allow_nan=True) + "\n")
        return entry

    def after_step(self):
        it = self.trainer.iter + 1  # iterations done
        if it % self.period == 0 or it == self.trainer.max_iter:
            self.measure(it)


def read_quality_curve(path):
    """Entries of a :class:`PseudoBoxQualityHook` file, one per iteration (the last written
    wins: a resumed run repeats iterations after its checkpoint), sorted by iteration; ``[]``
    when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    by_iter = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            by_iter[int(entry["iter"])] = entry
    return [by_iter[k] for k in sorted(by_iter)]
