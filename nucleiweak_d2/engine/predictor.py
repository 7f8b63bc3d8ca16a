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

Streaming (:func:`predict_view`, used by ``tools/predict.py`` and :mod:`nucleiweak_d2.api`)
reads, predicts and stitches a large image or slide tile by tile, so memory follows the tile
size, not the image. Its rule needs no other tile: the tiles' *cores* partition the image
(each core ends half-way through the overlap with the next tile, :func:`tile_cores`), and a
tile keeps exactly the nuclei whose anchor (the centre of their bounding box, the point
convention of docs/CONTRACTS.md) lies in its core. A nucleus whose half-extent is below half
the overlap lies whole in the tile that owns it, so with a consistent model every nucleus is
kept once and uncut; where two kept nuclei of neighbouring tiles claim the same pixels, the
one kept first keeps them (the later one takes the free pixels, and is dropped when more
than ``max_overlap`` of it is taken). Kept nuclei touching a cut edge of their tile are
counted (``ViewPrediction.seam_cut``): the overlap is then too small for those nuclei.
Points are kept by the tile whose core holds their nearest pixel. The stitched map lives in
a :class:`~nucleiweak_d2.data.label_store.BlockLabelCanvas` (compressed blocks).
"""

import logging
import os

import numpy as np
import torch
from scipy import ndimage

from ..evaluation.outputs import output_instance_map, output_points
from ..modeling.backbone.tiling import tile_starts

__all__ = [
    "NucleiPredictor",
    "load_trained_weights",
    "check_incompatible_keys",
    "tile_boxes",
    "stitch_instance_maps",
    "stitch_points",
    "tile_cores",
    "TileStitcher",
    "NucleiTile",
    "instance_scores",
    "predict_view",
    "ViewPrediction",
    "shard_inputs",
]

# Keys a checkpoint may lack or add without making its model untrained: BatchNorm counters, the
# segmentor's calibrated post-processing and the stain normalisation buffers (checkpoints
# written before they existed load with 0.5, the configured split and no normalisation, their
# old behaviour).
_IGNORABLE_KEY_SUFFIXES = (
    "num_batches_tracked",
    "fg_threshold",
    "split_distance",
    "stain_code",
    "stain_target",
)
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
        raise ValueError(
            f"MODEL.WEIGHTS {path} does not fit the model of this config: "
            f"{'; '.join(problems)}. Is it a checkpoint of another architecture "
            f"or config?"
        )


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
            raise ValueError(
                "MODEL.WEIGHTS is empty: the model would predict with random "
                "weights; set MODEL.WEIGHTS to a trained checkpoint (or pass "
                "--allow-random-weights to accept an untrained model)"
            )
        logging.getLogger(__name__).warning(
            "MODEL.WEIGHTS is empty: the model keeps its random initialisation"
        )
        return
    if "://" not in path and not os.path.isfile(path):
        raise ValueError(f"MODEL.WEIGHTS file not found: {path}")
    checkpointer = _Recording(model)
    try:
        checkpointer.load(path)
    except Exception as exc:  # noqa: BLE001  (any reader error of the file becomes one line)
        raise ValueError(f"cannot load MODEL.WEIGHTS {path}: {type(exc).__name__}: {exc}") from exc
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
    return [
        (x, y, min(x + tile, width), min(y + tile, height))
        for y in tile_starts(height, tile, step)
        for x in tile_starts(width, tile, step)
    ]


def _cut_gaps(box, shape):
    """Which edges of ``box`` are cuts (inside the image): left, right, top, bottom."""
    x0, y0, x1, y1 = box
    return x0 > 0, x1 < shape[1], y0 > 0, y1 < shape[0]


def _sequential(label):
    """Label map with ids 1..N (order of the original ids), 0 kept as background."""
    top = int(label.max()) if label.size else 0
    if 0 < top < 4 * label.size + 1024 and label.min() >= 0:  # linear time: a lookup table
        present = np.bincount(label.ravel(), minlength=top + 1) > 0
        present[0] = False
        if present[1:].all():
            return label.astype(np.int32)
        lut = np.cumsum(present).astype(np.int32)
        lut[~present] = 0
        return lut[label]
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
            raise ValueError(
                f"tile {t} at {box}: instance map is {label.shape[0]}x"
                f"{label.shape[1]}, expected {y1 - y0}x{x1 - x0}"
            )
        label = _sequential(label)
        labels.append(label)
        left, right, top, bottom = _cut_gaps(box, shape)
        for i, sl in enumerate(ndimage.find_objects(label), 1):
            if sl is None:
                continue
            gaps = [
                sl[1].start if left else np.inf,
                (x1 - x0) - sl[1].stop if right else np.inf,
                sl[0].start if top else np.inf,
                (y1 - y0) - sl[0].stop if bottom else np.inf,
            ]
            candidates.append((-min(gaps), t, i, sl))
    candidates.sort(key=lambda c: c[:3])
    out = np.zeros(tuple(shape), dtype=np.int32)
    next_id = 1
    for _, t, i, sl in candidates:
        x0, y0 = boxes[t][:2]
        mask = labels[t][sl] == i
        region = out[sl[0].start + y0 : sl[0].stop + y0, sl[1].start + x0 : sl[1].stop + x0]
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
    return np.minimum.reduce(
        [
            x - x0 if left else inf,
            (x1 - 1) - x if right else inf,
            y - y0 if top else inf,
            (y1 - 1) - y if bottom else inf,
        ]
    )


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
            inside = (
                (pts[:, 0] >= ox0 - 0.5)
                & (pts[:, 0] < ox1 - 0.5)
                & (pts[:, 1] >= oy0 - 0.5)
                & (pts[:, 1] < oy1 - 0.5)
            )
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

    def __init__(
        self,
        cfg,
        *,
        tile=0,
        tile_overlap=64,
        max_overlap=0.5,
        keep_raw=True,
        allow_random_weights=True,
    ):
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
        self._output_args = {
            "foreground_classes": tuple(ev.SEM_SEG_FOREGROUND_CLASSES),
            "connectivity": int(ev.CONNECTIVITY),
            "mask_threshold": float(ev.MASK_THRESHOLD),
        }
        try:  # score threshold and overlap rule of "instances" outputs, as the evaluator's
            from ..evaluation.config import instance_map_options
        except ImportError:
            instance_map_options = None
        if instance_map_options is not None and hasattr(ev, "INSTANCE_SCORE_THRESH"):
            self._output_args.update(instance_map_options(cfg))
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

    def run_batch(self, images):
        """Model outputs of a list of ``(H, W, 3)`` uint8 RGB images in one forward pass."""
        from detectron2.data import transforms as T

        inputs = []
        for image in images:
            height, width = image.shape[:2]
            aug_input = T.AugInput(np.ascontiguousarray(image))
            self.augmentations(aug_input)
            array = aug_input.image
            if self.input_format == "BGR":
                array = array[:, :, ::-1]
            tensor = torch.as_tensor(np.ascontiguousarray(array.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": height, "width": width})
        with torch.no_grad():
            return self.model(inputs)

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
            raise ValueError(
                f"NucleiPredictor takes an (H, W, 3) uint8 RGB image, got "
                f"{image.dtype} {image.shape}"
            )
        height, width = image.shape[:2]
        if self.tile <= 0 or (height <= self.tile and width <= self.tile):
            output = self.run_model(image)
            label, points = self._convert(output)
            if label.shape != (height, width):
                raise ValueError(
                    f"the model output is {label.shape[0]}x{label.shape[1]} for a "
                    f"{height}x{width} image"
                )
            return {
                "instance_map": label,
                "points": points,
                "raw": output if self.keep_raw else None,
            }
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
        return {
            "instance_map": stitch_instance_maps((height, width), boxes, maps, self.max_overlap),
            "points": stitch_points((height, width), boxes, points),
            "raw": raw if self.keep_raw else None,
        }


# ----------------------------------------------------------------------------- streaming


def shard_inputs(inputs, rank, world_size, sizes=None):
    """The inputs that process ``rank`` of ``world_size`` handles.

    Deterministic (the same arguments give the same shards on every machine), disjoint and
    covering: every input goes to exactly one rank. Without ``sizes`` the inputs, sorted by
    their text, are dealt round-robin; with ``sizes`` (e.g. file sizes, one per input) the
    largest go first, each to the rank with the least total so far (ties: the lower rank),
    so that slides of very different sizes spread evenly.

    Parameters
    ----------
    inputs : sequence
        Inputs (paths); compared by ``str``, which must be unique.
    rank, world_size : int
        ``0 <= rank < world_size``.
    sizes : sequence of float, optional
        Cost of each input.

    Returns
    -------
    list
        The inputs of ``rank``, in the order of ``inputs``.
    """
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard rank must be in [0, {world_size}), got {rank}")
    inputs = list(inputs)
    keys = [str(x) for x in inputs]
    if len(set(keys)) != len(keys):
        raise ValueError("shard_inputs needs distinct inputs")
    if sizes is None:
        order = sorted(range(len(inputs)), key=lambda i: keys[i])
        mine = {i for k, i in enumerate(order) if k % world_size == rank}
    else:
        sizes = [float(v) for v in sizes]
        if len(sizes) != len(inputs):
            raise ValueError(f"{len(sizes)} sizes for {len(inputs)} inputs")
        order = sorted(range(len(inputs)), key=lambda i: (-sizes[i], keys[i]))
        loads = [0.0] * world_size
        mine = set()
        for i in order:
            target = min(range(world_size), key=lambda r: (loads[r], r))
            loads[target] += sizes[i]
            if target == rank:
                mine.add(i)
    return [x for i, x in enumerate(inputs) if i in mine]


def _axis_cores(length, tile, overlap):
    """``[(start, end, core_start, core_end)]`` of the tiles along one axis."""
    starts = tile_starts(length, tile, tile - overlap)
    ends = [min(s + tile, length) for s in starts]
    cuts = [0] + [(starts[i] + ends[i - 1]) // 2 for i in range(1, len(starts))] + [length]
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(zip(starts, ends))]


def tile_cores(height, width, tile, overlap):
    """Tiles of an image and their cores, in row-major order.

    Parameters
    ----------
    height, width : int
    tile : int
        Tile side; 0 (or a side at least the image's) gives one tile, the whole image.
    overlap : int
        ``0 <= overlap < tile``.

    Returns
    -------
    list of tuple
        ``(box, core)``, both ``(x0, y0, x1, y1)``; the boxes are those of :func:`tile_boxes`
        and the cores partition the image: a core runs from half-way through the overlap
        with the previous tile to half-way through the overlap with the next one.
    """
    if tile <= 0 or (height <= tile and width <= tile):
        return [((0, 0, width, height), (0, 0, width, height))]
    tile_boxes(1, 1, tile, overlap)  # validates
    xs, ys = _axis_cores(width, tile, overlap), _axis_cores(height, tile, overlap)
    return [
        ((x0, y0, x1, y1), (cx0, cy0, cx1, cy1))
        for y0, y1, cy0, cy1 in ys
        for x0, x1, cx0, cx1 in xs
    ]


def instance_scores(output, label, foreground_classes=(1,)):
    """A function ``ids -> scores`` of the nuclei of one tile's label map.

    The score of a nucleus is the mean foreground probability over its pixels (``"prob"``,
    else the foreground classes of ``"sem_seg"``), or the score of its instance
    (``"instances"`` with ``scores``: label ``k + 1`` is instance ``k``, as
    :func:`~nucleiweak_d2.evaluation.outputs.paint_masks` paints them); NaN when the output
    has none of these.
    """

    def as_numpy(x):
        return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

    prob = None
    if "prob" in output:
        prob = as_numpy(output["prob"]).astype(np.float32)
        prob = prob[0] if prob.ndim == 3 else prob
    elif "sem_seg" in output:
        sem = as_numpy(output["sem_seg"]).astype(np.float32)
        if sem.ndim == 3 and sem.shape[0] == 1:
            prob = sem[0]
        elif sem.ndim == 3 and sem.shape[0] > max(foreground_classes):
            prob = sem[list(foreground_classes)].sum(axis=0)
    if prob is not None and prob.shape == label.shape:
        return lambda ids: np.asarray(ndimage.mean(prob, label, ids), dtype=np.float64)
    if "instances" in output and "instance_map" not in output and output["instances"].has("scores"):
        scores = as_numpy(output["instances"].scores).astype(np.float64).reshape(-1)
        return lambda ids: scores[np.asarray(ids, dtype=np.int64) - 1]
    return lambda ids: np.full(len(ids), np.nan)


class NucleiTile:
    """The nuclei one tile contributed, for the writers (GeoJSON, CSV, COCO, overlays).

    Attributes
    ----------
    box : tuple
        ``(x0, y0, x1, y1)`` of the tile in view pixels.
    labels : numpy.ndarray
        ``(y1 - y0, x1 - x0)`` uint32 ids of the stitched map over the tile (nuclei of
        neighbouring tiles included); a kept nucleus' final mask is ``labels[sl] == id``.
    ids : numpy.ndarray
        Ids kept from this tile, increasing.
    slices : list of tuple
        Bounding box of each kept nucleus in the tile, ``(row slice, column slice)``.
    scores : numpy.ndarray
        Score of each kept nucleus (NaN when the model gives none).
    image : numpy.ndarray
        ``(y1 - y0, x1 - x0, 3)`` uint8 RGB of the tile.
    core : tuple
        ``(x0, y0, x1, y1)`` of the tile's core.
    """

    def __init__(self, box, core, labels, ids, slices, scores, image):
        self.box, self.core, self.labels = box, core, labels
        self.ids = np.asarray(ids, dtype=np.int64)
        self.slices, self.scores, self.image = slices, np.asarray(scores, np.float64), image

    def mask(self, k):
        """Final mask of the ``k``-th kept nucleus in its bounding box."""
        return self.labels[self.slices[k]] == self.ids[k]


class TileStitcher:
    """Keep each tile's nuclei whose anchor lies in its core, into a label canvas.

    Parameters
    ----------
    canvas : nucleiweak_d2.data.label_store.BlockLabelCanvas
        The stitched map (its box reads and writes).
    max_overlap : float
        A kept candidate is dropped when more than this fraction of its pixels is already
        taken (by a nucleus of another tile).
    """

    def __init__(self, canvas, max_overlap=0.5):
        if not 0.0 <= max_overlap < 1.0:
            raise ValueError(f"max_overlap must be in [0, 1), got {max_overlap}")
        self.canvas, self.max_overlap = canvas, float(max_overlap)
        self.next_id = 1
        self.seam_cut = 0  # kept nuclei touching a cut edge of their tile
        self.dropped = 0  # candidates dropped because their pixels were taken
        self.shape = (canvas.height, canvas.width)

    def add(self, box, core, label, score_fn=None, image=None):
        """Stitch one tile; returns its :class:`NucleiTile`."""
        x0, y0, x1, y1 = box
        cx0, cy0, cx1, cy1 = core
        label = np.asarray(label)
        if label.shape != (y1 - y0, x1 - x0):
            raise ValueError(
                f"tile at {box}: the model output is {label.shape[0]}x"
                f"{label.shape[1]}, expected {y1 - y0}x{x1 - x0}"
            )
        label = _sequential(label)
        region = self.canvas.read(box)
        left, right, top, bottom = _cut_gaps(box, self.shape)
        kept, local, slices = [], [], []
        floor = 1.0 - self.max_overlap
        for i, sl in enumerate(ndimage.find_objects(label), 1):
            if sl is None:
                continue
            gx = x0 + (sl[1].start + sl[1].stop - 1) // 2
            gy = y0 + (sl[0].start + sl[0].stop - 1) // 2
            if not (cx0 <= gx < cx1 and cy0 <= gy < cy1):
                continue
            mask = label[sl] == i
            part = region[sl]
            free = mask & (part == 0)
            n_free = int(free.sum())
            if n_free == 0 or n_free < floor * int(mask.sum()):
                self.dropped += 1
                continue
            part[free] = self.next_id
            kept.append(self.next_id)
            local.append(i)
            slices.append(sl)
            self.next_id += 1
            if (
                (left and sl[1].start == 0)
                or (right and sl[1].stop == x1 - x0)
                or (top and sl[0].start == 0)
                or (bottom and sl[0].stop == y1 - y0)
            ):
                self.seam_cut += 1
        if kept:
            self.canvas.write(box, region)
        scores = (
            score_fn(local) if (score_fn is not None and local) else np.full(len(local), np.nan)
        )
        return NucleiTile(box, core, region, kept, slices, scores, image)


class ViewPrediction:
    """What :func:`predict_view` found.

    Attributes
    ----------
    n_nuclei : int
        Ids ``1..n_nuclei`` of the stitched map.
    points : numpy.ndarray or None
        ``(K, 2)`` stitched points in view pixels (None: the model gives none).
    scores : numpy.ndarray
        ``(n_nuclei,)`` score of id ``k + 1`` at ``k`` (NaN: none).
    n_tiles, n_skipped : int
        Tiles predicted, and skipped for lack of tissue.
    seam_cut, dropped : int
        See :class:`TileStitcher`.
    """

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _batches(items, size):
    for k in range(0, len(items), size):
        yield items[k : k + size]


def predict_view(
    predictor,
    view,
    canvas,
    *,
    tile=0,
    overlap=64,
    batch=1,
    tissue=None,
    on_tile=(),
    progress=None,
    max_overlap=0.5,
):
    """Predict a whole view (image, region or slide level) tile by tile into ``canvas``.

    Parameters
    ----------
    predictor : NucleiPredictor
    view : object
        ``height``, ``width`` and ``read(x0, y0, x1, y1) -> (h, w, 3) uint8 RGB`` (a
        :class:`~nucleiweak_d2.data.slides.SlideView`).
    canvas : nucleiweak_d2.data.label_store.BlockLabelCanvas
        ``(view.height, view.width)``; finished (every block final) on return.
    tile, overlap : int
        Tile side (0: the whole view in one tile) and overlap.
    batch : int
        Tiles per forward pass.
    tissue : object, optional
        ``any_in(box) -> bool``; tiles without tissue are skipped (their pixels stay 0).
    on_tile : sequence of callable
        Called with each :class:`NucleiTile`, in tile order, before the tile's blocks can
        become final.
    progress : object, optional
        A tqdm-like bar (``reset(total=n_tiles)`` at the start, ``update(n)`` after each
        batch) or a callable ``f(n)``.
    max_overlap : float
        See :class:`TileStitcher`.

    Returns
    -------
    ViewPrediction
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if (canvas.height, canvas.width) != (view.height, view.width):
        raise ValueError(
            f"canvas {canvas.height}x{canvas.width} for a view of {view.height}x{view.width}"
        )
    tiles = tile_cores(view.height, view.width, tile, overlap)
    todo = [(box, core) for box, core in tiles if tissue is None or tissue.any_in(box)]
    canvas.plan([box for box, _ in todo])
    stitcher = TileStitcher(canvas, max_overlap)
    points, scores, has_points = [], [], False
    if progress is not None and hasattr(progress, "update"):
        progress.reset(total=len(todo))
        progress = progress.update
    fg = predictor._output_args["foreground_classes"]
    for chunk in _batches(todo, int(batch)):
        images = [view.read(*box) for box, _ in chunk]
        outputs = predictor.run_batch(images)
        for (box, core), image, output in zip(chunk, images, outputs):
            label, pts = predictor._convert(output)
            nuclei = stitcher.add(box, core, label, instance_scores(output, label, fg), image)
            scores.append(nuclei.scores)
            if pts is not None:
                has_points = True
                pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2) + np.asarray(box[:2])
                px, py = np.floor(pts[:, 0] + 0.5), np.floor(pts[:, 1] + 0.5)
                inside = (px >= core[0]) & (px < core[2]) & (py >= core[1]) & (py < core[3])
                points.append(pts[inside])
            for callback in on_tile:
                callback(nuclei)
            canvas.done(box)
        if progress is not None:
            progress(len(chunk))
    canvas.finish()
    return ViewPrediction(
        n_nuclei=stitcher.next_id - 1,
        points=(np.concatenate(points) if points else np.zeros((0, 2))) if has_points else None,
        scores=np.concatenate(scores) if scores else np.zeros(0),
        n_tiles=len(todo),
        n_skipped=len(tiles) - len(todo),
        seam_cut=stitcher.seam_cut,
        dropped=stitcher.dropped,
    )
