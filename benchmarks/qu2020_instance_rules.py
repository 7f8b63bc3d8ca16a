"""Other rules for the instances of a trained Qu et al. run, each chosen on val, test scored.

Qu et al. take the connected components of the segmentor's foreground; our calibration adds a
distance-transform watershed (the ``split_distance`` the ``calibrate`` stage chooses). This
script asks whether markers from elsewhere split touching nuclei better, on finished
``qu2020`` runs (``<run>`` = a benchmark run's folder, ``runs/qu2020_r*_seed*``):

- ``distance``: today's rule (threshold x split distance, ``engine/calibration.py``'s grid);
- ``two_level``: the components of ``prob > high`` as markers, a watershed of ``-prob`` inside
  ``prob > low`` (nuclei touch where the network is less sure);
- ``detector``: the run's own point detector (the round the ``detect`` stage used, its members'
  mean map, its val-chosen threshold and minimum area) gives one marker per detected point, a
  watershed of the distance transform (``detector_dist``) or of ``-prob`` (``detector_prob``).

Foreground components without a marker stay whole; objects under 20 px are dropped and holes
filled as in the segmentor. Every parameter is chosen by mean per-image AJI on ``val``; test is
only scored. ``--ensemble`` also scores the mean foreground probability of all the given runs
(a diagnostic: runs of different seeds learnt from different point samples).

    .venv/bin/python benchmarks/qu2020_instance_rules.py RUN [RUN ...] [--data DIR]
        [--cache DIR] [--ensemble] [--rules distance ...]

The probability maps are cached in ``--cache`` (default ``<run>/instance_rules``), so a second
call only post-processes. About 2 CPU-minutes a run for the maps, 5-10 for the rules.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
HIGHS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_AREA = 20
FAMILIES = ("distance", "two_level", "detector_dist", "detector_prob")


def detector_stages(run):
    """Stage folders of the detectors the ``detect`` stage used, and its threshold/min area."""
    info = json.loads((run / "detect" / "stage_done.json").read_text())["info"]
    k = info["round"]
    if k is None:
        raise ValueError(f"{run} trained no detector (NUCLEIWEAK.QU2020.DET.ENABLED False)")
    stages = [run / f"det_round{k}"] + sorted(run.glob(f"det_round{k}_m*"))
    return stages, info.get("point_threshold", 0.35), info.get("point_min_area", 12)


def cache_maps(run, cache, root, splits):
    """Write ``<cache>/<split>_<name>.npz`` (``seg``, ``det`` float16 maps) of every image."""
    import torch
    from recalibrate_run import records

    from nucleiweak_d2.api import load_predictor

    torch.set_num_threads(1)
    todo = [(s, r) for s in splits for r in records(root, s)]
    if all((cache / f"{s}_{r['name']}.npz").is_file() for s, r in todo):
        return
    cache.mkdir(parents=True, exist_ok=True)
    seg = load_predictor(run / "model_final.yaml", run / "model_final.pth", device="cpu")
    stages, _, _ = detector_stages(run)
    dets = [load_predictor(d / "config.yaml", d / "model_best.pth", device="cpu") for d in stages]
    for split, r in todo:
        p = seg.run_model(r["image"])["prob"].float().cpu().numpy()
        q = np.mean([d.run_model(r["image"])["prob"].float().cpu().numpy() for d in dets], 0)
        np.savez_compressed(
            cache / f"{split}_{r['name']}.npz", seg=p.astype(np.float16), det=q.astype(np.float16)
        )


def marker_watershed(fg, markers, landscape):
    """Instances of ``fg`` (components >= MIN_AREA px, holes filled) split by a watershed of
    ``landscape`` from ``markers``; a component without a marker stays one object."""
    from skimage import measure, segmentation

    from nucleiweak_d2.modeling.meta_arch.postprocess import (
        fill_holes_per_object,
        relabel_sequential,
        remove_small_objects,
    )

    label = fill_holes_per_object(remove_small_objects(measure.label(fg, connectivity=2), MIN_AREA))
    mask = label > 0
    out = segmentation.watershed(landscape, np.where(mask, markers, 0), mask=mask)
    unmarked = mask & (out == 0)
    out[unmarked] = label[unmarked] + out.max()
    return relabel_sequential(remove_small_objects(out, MIN_AREA))


def rules(point_threshold, point_min_area):
    """``{family: {name: fn(seg_prob, det_prob) -> instance map}}``."""
    from scipy import ndimage as ndi
    from skimage import measure

    from nucleiweak_d2.engine.calibration import SPLIT_DISTANCES
    from nucleiweak_d2.modeling.meta_arch.postprocess import (
        instances_from_foreground,
        points_from_probability,
        remove_small_objects,
    )

    def distance(p, q, t, d):
        return instances_from_foreground(p > t, MIN_AREA, True, d > 0, d)

    def two_level(p, q, t, h):
        cores = remove_small_objects(measure.label(p > h, connectivity=2), 10)
        return marker_watershed(p > t, cores, -p)

    def detector(p, q, t, land):
        pts = np.round(points_from_probability(q, point_threshold, point_min_area)).astype(int)
        markers = np.zeros(p.shape, np.int32)
        markers[pts[:, 1], pts[:, 0]] = np.arange(1, len(pts) + 1)
        markers = ndi.grey_dilation(markers, size=(5, 5))
        fg = p > t
        landscape = -ndi.distance_transform_edt(fg) if land == "dist" else -p
        return marker_watershed(fg, markers, landscape)

    out = {f: {} for f in FAMILIES}
    for t in THRESHOLDS:
        for d in SPLIT_DISTANCES:
            out["distance"][f"t {t} d {d}"] = lambda p, q, t=t, d=d: distance(p, q, t, d)
        for h in (h for h in HIGHS if h > t):
            out["two_level"][f"t {t} h {h}"] = lambda p, q, t=t, h=h: two_level(p, q, t, h)
        for land in ("dist", "prob"):
            out[f"detector_{land}"][f"t {t}"] = lambda p, q, t=t, land=land: detector(p, q, t, land)
    return out


def score(data, families):
    """Per family: the val-best parameters, their val and test mean AJI."""
    from nucleiweak_d2.evaluation.metrics import aji

    rows = {}
    for family, fns in families.items():
        best = None
        for name, fn in fns.items():  # first best wins ties (grid order)
            v = float(np.mean([aji(g, fn(p, q)) for p, q, g in data["val"]]))
            if best is None or v > best[0]:
                best = (v, name, fn)
        v, name, fn = best
        t = float(np.mean([aji(g, fn(p, q)) for p, q, g in data["test"]]))
        rows[family] = (name, v, t)
    return rows


def load(caches, root, splits):
    """``{split: [(seg, det, gt)]}`` with the maps averaged over ``caches``."""
    from recalibrate_run import records

    from nucleiweak_d2.evaluation.ground_truth import gt_label_map

    data = {}
    for split in splits:
        data[split] = []
        for r in records(root, split):
            z = [np.load(c / f"{split}_{r['name']}.npz") for c in caches]
            seg = np.mean([x["seg"].astype(np.float32) for x in z], 0)
            det = np.mean([x["det"].astype(np.float32) for x in z], 0)
            data[split].append((seg, det, gt_label_map(r)))
    return data


def main(argv=None):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from recalibrate_run import data_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="qu2020 run folders (OUTPUT_DIR)")
    parser.add_argument("--data", default=None, help="folder dataset (default MoNuSeg/MO)")
    parser.add_argument("--val", default="val")
    parser.add_argument("--test", default="test")
    parser.add_argument("--cache", default=None, help="cache folder (default <run>/instance_rules)")
    parser.add_argument("--ensemble", action="store_true", help="also the runs' mean map")
    parser.add_argument(
        "--rules",
        nargs="+",
        default=list(FAMILIES),
        choices=FAMILIES,
        help="rules scored on each run (default: all)",
    )
    args = parser.parse_args(argv)
    root = Path(args.data) if args.data else data_root()
    runs = [Path(r) for r in args.runs]
    for run in runs:
        for f in ("model_final.yaml", "model_final.pth", "detect/stage_done.json"):
            if not (run / f).is_file():
                print(f"error: {run / f} not found (not a finished qu2020 run)", file=sys.stderr)
                return 2
    splits = (args.val, args.test)
    caches = []
    for i, run in enumerate(runs):
        cache = Path(args.cache) / str(i) if args.cache else run / "instance_rules"
        cache_maps(run, cache, root, splits)
        caches.append(cache)
    # (label, run whose detector gives the markers, caches averaged, rules scored)
    groups = [(str(r), r, [c], args.rules) for r, c in zip(runs, caches)]
    if args.ensemble and len(runs) > 1:
        label = "mean of the runs' maps (distance rule only)"
        groups.append((label, runs[0], caches, ["distance"]))
    print(f"{'run':<60} {'rule':<14} {'val choice':<14} {'val AJI':>7} {'test AJI':>8}")
    for label, run, group, keep in groups:
        _, pt, pa = detector_stages(run)
        families = rules(pt, pa)
        families = {f: families[f] for f in keep}
        data = load(group, root, splits)
        for family, (name, v, t) in score(data, families).items():
            print(f"{label[-60:]:<60} {family:<14} {name:<14} {v:>7.4f} {t:>8.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
