"""The classical baseline's split distance and minimum area chosen on a val split.

The defaults of ``NUCLEIWEAK.CLASSICAL`` were chosen on MoNuSeg/MO val (nuclei of radius about
11 px). On other data, e.g. the synthetic tiles of ``tools/demo.py`` (radius 4-10 px), a fair
baseline chooses them on that data's val split, as the learned methods choose their threshold
and split (:mod:`nucleiweak_d2.engine.calibration`): the pair of the highest mean per-image
AJI (the evaluator's aggregation) over a grid; the stain channel, smoothing and Otsu threshold
are kept. Val only: the test splits are never read.
"""

import itertools

import numpy as np

from ...evaluation.ground_truth import gt_label_map
from ...evaluation.metrics import aji
from .segment import classical_instances

__all__ = ["MIN_DISTANCES", "MIN_AREAS", "select_classical_settings"]

#: Candidate minimum distances (pixels) between watershed seeds.
MIN_DISTANCES = (3, 4, 5, 6, 8, 10)
#: Candidate minimum object areas (pixels).
MIN_AREAS = (0, 20, 40, 60)


def select_classical_settings(
    records, read_image, base=None, min_distances=MIN_DISTANCES, min_areas=MIN_AREAS
):
    """The ``min_distance`` and ``min_area`` of the best mean AJI on ``records``.

    Parameters
    ----------
    records : list of dict
        Val dataset dicts with ground truth (label files or masks) and ``file_name``.
    read_image : callable
        ``read_image(path) -> (H, W, 3) uint8 RGB``.
    base : dict, optional
        Other keyword arguments of :func:`classical_instances` (channel, sigma, threshold,
        fill_holes, split), kept fixed.
    min_distances, min_areas : sequence of int
        Candidates.

    Returns
    -------
    dict
        ``{"min_distance": d, "min_area": a, "val_aji": {"<d>/<a>": mean AJI}, "images": n}``;
        ties go to the smaller distance, then the smaller area.

    Raises
    ------
    ValueError
        No record, or no candidate.
    """
    if not records:
        raise ValueError("the classical baseline's calibration needs at least one val image")
    if not min_distances or not min_areas:
        raise ValueError("the classical baseline's calibration needs candidate values")
    base = dict(base or {})
    base.pop("min_distance", None)
    base.pop("min_area", None)
    images = [read_image(r["file_name"]) for r in records]
    gts = [gt_label_map(r) for r in records]
    scores = {}
    for d, a in itertools.product(sorted(set(min_distances)), sorted(set(min_areas))):
        scores[(d, a)] = float(
            np.mean(
                [
                    aji(gt, classical_instances(img, min_distance=d, min_area=a, **base))
                    for img, gt in zip(images, gts)
                ]
            )
        )
    best = max(scores, key=lambda k: (scores[k], -k[0], -k[1]))
    return {
        "min_distance": int(best[0]),
        "min_area": int(best[1]),
        "val_aji": {f"{d}/{a}": s for (d, a), s in scores.items()},
        "images": len(records),
    }
