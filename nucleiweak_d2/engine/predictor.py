"""``NucleiPredictor``: run a nucleiweak_d2 model on one RGB image, whole or in tiles.

The model input is built as the test mapper builds it (test augmentations of
:func:`~nucleiweak_d2.data.transforms.build_nuclei_augmentation`, CHW uint8 tensor in
``cfg.INPUT.FORMAT``, ``height``/``width`` of the image) and the output becomes an instance
label map with :func:`~nucleiweak_d2.evaluation.outputs.output_instance_map`, the conversion
that :class:`~nucleiweak_d2.evaluation.evaluator.NucleiEvaluator` uses (same
``cfg.NUCLEIWEAK.EVAL`` settings), so a prediction scores as it does in evaluation.

Large images run in overlapping tiles whose results are stitched (:func:`stitch_instance_maps`,
:func:`stitch_points`). Rule: every nucleus is kept from the tile where it is farthest from
the tile border. Only *cut* edges count (tile edges inside the image; an edge on the image
border cuts nothing). A nucleus' distance to the border is the gap between its bounding box
and the nearest cut edge (0 when it touches one, so a nucleus cut by a tile loses to its
whole copy in a neighbouring tile). Candidates from all tiles are visited by decreasing
distance (ties: earlier tile in row-major order, then smaller id); a candidate is kept unless
more than ``max_overlap`` of its pixels already belong to kept nuclei, and it takes only the
free pixels. Points are kept from the tile where the point itself is farthest from the cut
edges (ties: earlier tile). The overlap should exceed the largest nucleus diameter, so that
every nucleus lies whole in at least one tile.
"""

import logging
import os

import numpy as np
import torch
from scipy import ndimage

from ..evaluation.outputs import output_instance_map, output_points
from ..modeling.backbone.tiling import tile_starts

__all__ = ["NucleiPredictor", "load_trained_weights", "check_incompatible_keys", "tile_boxes",
           "stitch_instance_maps", "stitch_points"]

# Keys that may differ between a checkpoint and its model without changing predictions.
_IGNORABLE_KEY_SUFFIXES = ("num_batches_tracked",)
_SHOWN_KEYS = 3  # keys named in an error message


def _some(keys):
    """``"a, b, c and 4 more"``: the first few of a list of keys."""
    keys = [str(k) for k in keys]
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


def _significant(keys):
    return [k for k in keys if not str(k).endswith(_IGNORABLE_KEY_SUFFIXES)]


def check_incompatible_keys(incompatible, path):
    """Raise ValueError when a loaded checkpoint does not fit its model.

    Parameters
    ----------
    incompatible : fvcore.common.checkpoint._IncompatibleKeys
        What ``DetectionCheckpointer._load_model`` returns: ``missing_keys`` (model keys the
        checkpoint lacks), ``unexpected_keys`` (checkpoint keys the model lacks) and
        ``incorrect_shapes`` (``(key, checkpoint shape, model shape)``).
    path : str
        The checkpoint, for the message.

    Raises
    ------
    ValueError
        When any key other than ``*num_batches_tracked`` is missing or unexpected, or any
        shape differs; one line naming the first keys and the counts.
    """
    shapes = list(incompatible.incorrect_shapes)
    shape_keys = {k for k, _, _ in shapes}
    missing = [k for k in _significant(incompatible.missing_keys) if k not in shape_keys]
    unexpected = _significant(incompatible.unexpected_keys)
    problems = []
    if missing:
        problems.append(f"{len(missing)} model key(s) missing from it ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) unknown to the model ({_some(unexpected)})")
    if shapes:
        shown = [f"{k} {tuple(c)} vs model {tuple(m)}" for k, c, m in shapes]
        problems.append(f"{len(shapes)} tensor(s) of another shape ({_some(shown)})")
    if problems:
        raise ValueError(f"MODEL.WEIGHTS {path} does not fit the model of this config: "
                         f"{'; '.join(problems)}. Is it a checkpoint of another architecture "
                         f"or config?")


def load_trained_weights(model, path, *, allow_random=False):
    """Load a trained checkpoint into ``model``, refusing anything that would run untrained.

    Uses Detectron2's ``DetectionCheckpointer`` (``.pth`` of Detectron2/fvcore or a plain
    state dict, Detectron2/Caffe2 ``.pkl``, URLs it can fetch) and checks what it reports with
    :func:`check_incompatible_keys`.

    Parameters
    ----------
    model : torch.nn.Module
        Built from the config the checkpoint was trained with.
    path : str
        ``cfg.MODEL.WEIGHTS``; empty means no checkpoint.
    allow_random : bool
        Accept an empty ``path`` (the model keeps its random initialisation; a warning is
        logged). A mismatching checkpoint is refused regardless.

    Raises
    ------
    ValueError
        Empty ``path`` without ``allow_random``; a missing or unreadable file; a checkpoint
        whose keys or shapes differ from the model's (see :func:`check_incompatible_keys`).
    """
    from detectron2.checkpoint import DetectionCheckpointer

    class _Recording(DetectionCheckpointer):
        incompatible = None

        def _load_model(self, checkpoint):
            self.incompatible = super()._load_model(checkpoint)
            return self.incompatible

        def _log_checkpoint_info(self, incompatible):
            pass  # check_incompatible_keys reports them in one line instead of a long log

    path = str(path or "")
    if not path:
        if not allow_random:
            raise ValueError("MODEL.WEIGHTS is empty: the model would predict with random "
                             "weights; set MODEL.WEIGHTS to a trained checkpoint (or pass "
                             "--allow-random-weights to accept an untrained model)")
        logging.getLogger(__name__).warning("MODEL.WEIGHTS is empty: the model keeps its "
                                            "random initialisation")
        return
    if "://" not in path and not os.path.isfile(path):
        raise ValueError(f"MODEL.WEIGHTS file not found: {path}")
    checkpointer = _Recording(model)
    try:
        checkpointer.load(path)
    except Exception as exc:  # noqa: BLE001  (any reader error of the file becomes one line)
        raise ValueError(f"cannot load MODEL.WEIGHTS {path}: {type(exc).__name__}: "
                         f"{exc}") from exc
    if checkpointer.incompatible is not None:
        check_incompatible_keys(checkpointer.incompatible, path)


def tile_boxes(height, width, tile, overlap):
    """Overlapping square tiles covering an image, in row-major order.

    Parameters
    ----------
    height, width : int
        Image size.
    tile : int
        Tile side (> 0); a side of the image shorter than ``tile`` gets one tile of its length.
    overlap : int
        Overlap of neighbouring tiles, ``0 <= overlap < tile``.

    Returns
    -------
    list of tuple
        ``(x0, y0, x1, y1)`` boxes (end exclusive).
    """
    tile, overlap = int(tile), int(overlap)
    if tile <= 0:
        raise ValueError(f"tile must be > 0, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    step = tile - overlap
    return [(x, y, min(x + tile, width), min(y + tile, height))
            for y in tile_starts(height, tile, step) for x in tile_starts(width, tile, step)]


def _cut_gaps(box, shape):
    """Which edges of ``box`` are cuts (inside the image): left, right, top, bottom."""
    x0, y0, x1, y1 = box
    return x0 > 0, x1 < shape[1], y0 > 0, y1 < shape[0]


def _sequential(label):
    """Label map with ids 1..N (order of the original ids), 0 kept as background."""
    ids = np.unique(label)
    if ids.size and ids[-1] == ids.size - (ids[0] == 0):
        return label.astype(np.int32)
    ids = np.union1d([0], ids)
    return np.searchsorted(ids, label).astype(np.int32)


def stitch_instance_maps(shape, boxes, maps, max_overlap=0.5):
    """Stitch tile instance maps: each nucleus from the tile where it is farthest from the border.

    See the module docstring for the rule.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image.
    boxes : sequence of tuple
        ``(x0, y0, x1, y1)`` of each tile (as :func:`tile_boxes`).
    maps : sequence of numpy.ndarray
        Instance map of each tile, ``(y1 - y0, x1 - x0)`` integers, 0 = background.
    max_overlap : float
        A candidate nucleus is dropped when more than this fraction of its pixels already
        belongs to kept nuclei.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` int32, ids 1..N in the order the nuclei were kept.
    """
    if len(boxes) != len(maps):
        raise ValueError(f"{len(boxes)} tile boxes but {len(maps)} tile maps")
    candidates, labels = [], []
    for t, (box, label) in enumerate(zip(boxes, maps)):
        x0, y0, x1, y1 = box
        label = np.asarray(label)
        if label.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"tile {t} at {box}: instance map is {label.shape[0]}x"
                             f"{label.shape[1]}, expected {y1 - y0}x{x1 - x0}")
        label = _sequential(label)
        labels.append(label)
        left, right, top, bottom = _cut_gaps(box, shape)
        for i, sl in enumerate(ndimage.find_objects(label), 1):
            if sl is None:
                continue
            gaps = [sl[1].start if left else np.inf, (x1 - x0) - sl[1].stop if right else np.inf,
                    sl[0].start if top else np.inf, (y1 - y0) - sl[0].stop if bottom else np.inf]
            candidates.append((-min(gaps), t, i, sl))
    candidates.sort(key=lambda c: c[:3])
    out = np.zeros(tuple(shape), dtype=np.int32)
    next_id = 1
    for _, t, i, sl in candidates:
        x0, y0 = boxes[t][:2]
        mask = labels[t][sl] == i
        region = out[sl[0].start + y0:sl[0].stop + y0, sl[1].start + x0:sl[1].stop + x0]
        free = mask & (region == 0)
        if free.sum() < (1.0 - max_overlap) * mask.sum() or not free.any():
            continue
        region[free] = next_id
        next_id += 1
    return out


def _point_margins(points, box, shape):
    """Distance of each point (pixel indices) to the nearest cut edge of ``box``."""
    x0, y0, x1, y1 = box
    left, right, top, bottom = _cut_gaps(box, shape)
    x, y = points[:, 0], points[:, 1]
    inf = np.full(len(points), np.inf)
    return np.minimum.reduce([x - x0 if left else inf, (x1 - 1) - x if right else inf,
                              y - y0 if top else inf, (y1 - 1) - y if bottom else inf])


def stitch_points(shape, boxes, points):
    """Stitch tile points: each point from the tile where it is farthest from the border.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the image.
    boxes : sequence of tuple
        ``(x0, y0, x1, y1)`` of each tile.
    points : sequence of numpy.ndarray or None
        ``(K, 2)`` (x, y) points of each tile in tile pixel indices, or None (no points).

    Returns
    -------
    numpy.ndarray or None
        ``(K, 2)`` float64 points in image pixel indices; a point of tile ``t`` is kept when
        no other tile containing it has it farther from its cut edges (ties: the earlier
        tile). None when every tile gave None.
    """
    if all(p is None for p in points):
        return None
    kept = []
    for t, (box, pts) in enumerate(zip(boxes, points)):
        if pts is None or len(pts) == 0:
            continue
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2) + np.asarray(box[:2], float)
        margin = _point_margins(pts, box, shape)
        keep = np.ones(len(pts), dtype=bool)
        for s, other in enumerate(boxes):
            if s == t:
                continue
            ox0, oy0, ox1, oy1 = other
            inside = ((pts[:, 0] >= ox0 - 0.5) & (pts[:, 0] < ox1 - 0.5)
                      & (pts[:, 1] >= oy0 - 0.5) & (pts[:, 1] < oy1 - 0.5))
            other_margin = _point_margins(pts, other, shape)
            keep &= ~(inside & ((other_margin > margin) | ((other_margin == margin) & (s < t))))
        kept.append(pts[keep])
    return np.concatenate(kept) if kept else np.zeros((0, 2))


class NucleiPredictor:
    """Build a model from a config, load its weights and predict instance maps of RGB images.

    ``predictor(image)`` returns ``{"instance_map": (H, W) int32, "points": (K, 2) float64 or
    None, "raw": ...}``. ``points`` are the model's ``pred_points`` minus
    ``cfg.NUCLEIWEAK.EVAL.PRED_POINTS_OFFSET``, i.e. integer-pixel (column, row) coordinates
    as the ground truth of docs/CONTRACTS.md (None when the model outputs no points).
    ``raw`` is the model output dict of a whole-image run; of a tiled run, the list of
    ``{"box": (x0, y0, x1, y1), "output": dict}`` per tile (None with ``keep_raw=False``).
    """

    def __init__(self, cfg, *, tile=0, tile_overlap=64, max_overlap=0.5, keep_raw=True,
                 allow_random_weights=True):
        """
        Parameters
        ----------
        cfg : detectron2.config.CfgNode
            From :func:`nucleiweak_d2.config.setup_cfg` (which registers our components).
            ``MODEL.WEIGHTS`` is loaded by :func:`load_trained_weights` (a checkpoint that
            does not fit the model raises ValueError); ``MODEL.DEVICE`` is where the model
            runs. The model is built under ``torch.manual_seed(max(cfg.SEED, 0))`` (the
            global RNG is left untouched), so an untrained model is the same on every run.
        tile : int
            Tile side in pixels; 0 runs the whole image at once. Images no larger than
            ``tile`` on both sides run whole.
        tile_overlap : int
            Overlap of neighbouring tiles (more than the largest nucleus diameter).
        max_overlap : float
            See :func:`stitch_instance_maps`.
        keep_raw : bool
            Return the model outputs of every tile (memory grows with the image).
        allow_random_weights : bool
            Accept an empty ``MODEL.WEIGHTS`` (random weights, with a logged warning);
            ``tools/predict.py`` passes False unless ``--allow-random-weights``.
        """
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        from ..data.transforms import build_nuclei_augmentation

        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"cfg.INPUT.FORMAT must be 'RGB' or 'BGR', got {cfg.INPUT.FORMAT!r}")
        self.tile, self.tile_overlap = int(tile), int(tile_overlap)
        if self.tile < 0:
            raise ValueError(f"tile must be >= 0 (0 = whole image), got {tile}")
        if self.tile > 0:
            tile_boxes(1, 1, self.tile, self.tile_overlap)  # validates the overlap
        if not 0.0 <= max_overlap < 1.0:
            raise ValueError(f"max_overlap must be in [0, 1), got {max_overlap}")
        self.max_overlap, self.keep_raw = float(max_overlap), bool(keep_raw)
        self.cfg = cfg.clone()
        self.input_format = cfg.INPUT.FORMAT
        self.augmentations = T.AugmentationList(build_nuclei_augmentation(cfg, False))
        ev = cfg.NUCLEIWEAK.EVAL
        self._output_args = {"foreground_classes": tuple(ev.SEM_SEG_FOREGROUND_CLASSES),
                             "connectivity": int(ev.CONNECTIVITY),
                             "mask_threshold": float(ev.MASK_THRESHOLD)}
        self.points_offset = float(ev.PRED_POINTS_OFFSET)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(max(int(cfg.SEED), 0))
            self.model = build_model(self.cfg)
        self.model.eval()
        load_trained_weights(self.model, cfg.MODEL.WEIGHTS, allow_random=allow_random_weights)

    def run_model(self, image):
        """Model output dict of one ``(H, W, 3)`` uint8 RGB image (no tiling)."""
        from detectron2.data import transforms as T

        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        array = aug_input.image
        if self.input_format == "BGR":
            array = array[:, :, ::-1]
        tensor = torch.as_tensor(np.ascontiguousarray(array.transpose(2, 0, 1)))
        with torch.no_grad():
            return self.model([{"image": tensor, "height": height, "width": width}])[0]

    def _convert(self, output):
        label = output_instance_map(output, **self._output_args)
        points = output_points(output)
        if points is not None:
            points = points - self.points_offset
        return label, points

    def __call__(self, image):
        """Predict one image.

        Parameters
        ----------
        image : numpy.ndarray
            ``(H, W, 3)`` uint8 RGB (as :func:`nucleiweak_d2.data.io.read_image` returns).

        Returns
        -------
        dict
            ``instance_map``, ``points`` and ``raw`` (see the class docstring).
        """
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise ValueError(f"NucleiPredictor takes an (H, W, 3) uint8 RGB image, got "
                             f"{image.dtype} {image.shape}")
        height, width = image.shape[:2]
        if self.tile <= 0 or (height <= self.tile and width <= self.tile):
            output = self.run_model(image)
            label, points = self._convert(output)
            if label.shape != (height, width):
                raise ValueError(f"the model output is {label.shape[0]}x{label.shape[1]} for a "
                                 f"{height}x{width} image")
            return {"instance_map": label, "points": points,
                    "raw": output if self.keep_raw else None}
        boxes = tile_boxes(height, width, self.tile, self.tile_overlap)
        maps, points, raw = [], [], []
        for box in boxes:
            x0, y0, x1, y1 = box
            output = self.run_model(np.ascontiguousarray(image[y0:y1, x0:x1]))
            label, pts = self._convert(output)
            maps.append(label)
            points.append(pts)
            if self.keep_raw:
                raw.append({"box": box, "output": output})
        return {"instance_map": stitch_instance_maps((height, width), boxes, maps,
                                                     self.max_overlap),
                "points": stitch_points((height, width), boxes, points),
                "raw": raw if self.keep_raw else None}
