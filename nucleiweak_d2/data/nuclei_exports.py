"""Streaming writers of predicted nuclei: QuPath GeoJSON, per-nucleus CSV, COCO JSON, and a
downsampled overlay for slides.

They consume, tile by tile, what the stitcher kept (any object with the attributes of
:class:`nucleiweak_d2.engine.predictor.NucleiTile`: ``box``, ``core``, ``labels``, ``ids``,
``slices``, ``scores``, ``image``), so a slide is exported without its label map or its list
of nuclei in memory. Files are written to open text streams; the caller makes them atomic
(:func:`nucleiweak_d2.data.atomic.atomic_path`).

Frames: the label map (TIFF, COCO RLE) is in pixels of the processing view; GeoJSON polygons
and CSV centroids are in level-0 pixels of the slide (QuPath's frame, origin at the top-left
corner), obtained with the view's ``downsample`` and ``origin``. For an ordinary image the
two frames are the same.
"""

import csv
import json
import math

import numpy as np

from .geojson import FeatureCollectionWriter, mask_outline, nucleus_feature
from .measurements import MEASUREMENT_COLUMNS, crop_rle, hed_image, measure_nuclei
from .overlay import outline_pixels

__all__ = ["Frame", "NucleiExporter", "SlideOverlay", "COCO_CATEGORY"]

COCO_CATEGORY = {"id": 1, "name": "nucleus"}


class Frame:
    """Mapping of view pixels to slide level-0 pixels: ``slide = view * downsample + origin``.

    Attributes
    ----------
    height, width : int
        Size of the view (the label map).
    downsample : float
    origin : tuple of float
    mpp : float or None
        µm per view pixel.
    """

    def __init__(self, height, width, downsample=1.0, origin=(0.0, 0.0), mpp=None):
        self.height, self.width = int(height), int(width)
        self.downsample, self.origin = float(downsample), (float(origin[0]), float(origin[1]))
        self.mpp = mpp

    @classmethod
    def of_view(cls, view):
        return cls(view.height, view.width, view.downsample, view.origin, view.mpp)


def _fmt(value):
    """A CSV cell: ints as they are, floats with at most 4 decimals, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return ""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


class NucleiExporter:
    """Write the nuclei of each tile to any of a GeoJSON, a CSV and a COCO JSON stream.

    Parameters
    ----------
    frame : Frame
    geojson, csv_file, coco : text stream, optional
        Open files to write (None: that output is not made).
    image_info : dict, optional
        The COCO ``images`` entry (``file_name`` ...; ``id``, ``height``, ``width`` are set).
    info : dict, optional
        The COCO ``info`` entry.

    Call it with every tile, then :meth:`close` (which writes the files' ends).
    """

    def __init__(
        self, frame, *, geojson=None, csv_file=None, coco=None, image_info=None, info=None
    ):
        self.frame = frame
        self.count = 0
        self._geo = FeatureCollectionWriter(geojson) if geojson is not None else None
        self._csv = None
        if csv_file is not None:
            self._csv = csv.writer(csv_file, lineterminator="\n")
            self._csv.writerow(MEASUREMENT_COLUMNS)
        self._coco = coco
        self._n_ann = 0
        if coco is not None:
            image = dict(image_info or {})
            image.update({"id": 1, "height": frame.height, "width": frame.width})
            head = {
                "info": info or {"description": "nucleiweak_d2 predictions"},
                "images": [image],
                "categories": [COCO_CATEGORY],
            }
            text = json.dumps(head, separators=(",", ":"))
            coco.write(text[:-1] + ',"annotations":[')

    @property
    def wants_measurements(self):
        return self._geo is not None or self._csv is not None

    def __call__(self, tile):
        if not len(tile.ids):
            return
        frame = self.frame
        x0, y0 = tile.box[:2]
        meas = None
        if self.wants_measurements:
            meas = measure_nuclei(tile.labels, None, tile.ids, hed=hed_image(tile.image))
        ds, (ox, oy) = frame.downsample, frame.origin
        mpp = frame.mpp
        for k, gid in enumerate(tile.ids):
            sl = tile.slices[k]
            mask = tile.labels[sl] == gid
            r0, c0 = sl[0].start, sl[1].start
            score = float(tile.scores[k]) if k < len(tile.scores) else float("nan")
            if meas is not None:
                cx = (x0 + meas["centroid_x"][k]) * ds + ox
                cy = (y0 + meas["centroid_y"][k]) * ds + oy
                area, perimeter = float(meas["area"][k]), float(meas["perimeter"][k])
                values = {
                    "id": int(gid),
                    "centroid_x": cx,
                    "centroid_y": cy,
                    "area": area,
                    "perimeter": perimeter,
                    "eccentricity": float(meas["eccentricity"][k]),
                    "solidity": float(meas["solidity"][k]),
                    "hematoxylin_od": float(meas["hematoxylin_od"][k]),
                    "eosin_od": float(meas["eosin_od"][k]),
                    "score": score,
                    "area_um2": area * mpp * mpp if mpp else None,
                    "perimeter_um": perimeter * mpp if mpp else None,
                }
                if self._csv is not None:
                    self._csv.writerow([_fmt(values[c]) for c in MEASUREMENT_COLUMNS])
                if self._geo is not None:
                    ring = mask_outline(
                        mask, offset=((x0 + c0) * ds + ox, (y0 + r0) * ds + oy), scale=ds
                    )
                    if ring is not None:
                        measurements = {
                            "Label": int(gid),
                            "Area px^2": area,
                            "Perimeter px": perimeter,
                            "Eccentricity": values["eccentricity"],
                            "Solidity": values["solidity"],
                            "Hematoxylin OD mean": values["hematoxylin_od"],
                            "Eosin OD mean": values["eosin_od"],
                            "Score": score,
                        }
                        if mpp:
                            measurements["Area µm^2"] = values["area_um2"]
                            measurements["Perimeter µm"] = values["perimeter_um"]
                        self._geo.write(nucleus_feature(ring, measurements))
            if self._coco is not None:
                rows, cols = np.nonzero(mask)
                bx, by = x0 + c0 + int(cols.min()), y0 + r0 + int(rows.min())
                bw, bh = int(cols.max() - cols.min()) + 1, int(rows.max() - rows.min()) + 1
                ann = {
                    "id": self._n_ann + 1,
                    "image_id": 1,
                    "category_id": 1,
                    "segmentation": crop_rle(mask, x0 + c0, y0 + r0, frame.height, frame.width),
                    "bbox": [bx, by, bw, bh],
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                    "point": [bx + (bw - 1) // 2, by + (bh - 1) // 2],
                    "score": score if math.isfinite(score) else None,
                    "nucleus_id": int(gid),
                }
                self._coco.write(
                    ("," if self._n_ann else "") + "\n" + json.dumps(ann, separators=(",", ":"))
                )
                self._n_ann += 1
            self.count += 1

    def close(self):
        """Write the ends of the files (the streams stay open)."""
        if self._geo is not None:
            self._geo.close()
        if self._coco is not None:
            self._coco.write("\n]}\n")


class SlideOverlay:
    """A downsampled overlay built while a large view is predicted.

    ``factor`` view pixels per overlay pixel (nearest sampling of the image: view pixel
    ``(c * factor, r * factor)``); an overlay pixel is an outline when any view pixel of its
    cell is an outline pixel of its block (:func:`~nucleiweak_d2.data.overlay.outline_pixels`
    inside each label block, so a nucleus crossing a block edge has no outline along it).
    Register :meth:`on_tile` with :func:`~nucleiweak_d2.engine.predictor.predict_view` and
    :meth:`on_block` with the canvas' ``on_final``.

    Parameters
    ----------
    height, width : int
        Size of the view.
    factor : int
    block : int
        Block side of the label canvas.
    background : numpy.ndarray, optional
        ``(ceil(height / factor), ceil(width / factor), 3)`` uint8 image shown where no tile
        was predicted (e.g. the tissue-mask thumbnail); default white.
    color : tuple of int
    """

    def __init__(self, height, width, factor, block, background=None, color=(0, 255, 0)):
        self.factor, self.block, self.color = int(factor), int(block), color
        self.height, self.width = int(height), int(width)
        th, tw = -(-self.height // self.factor), -(-self.width // self.factor)
        if background is not None and background.shape[:2] == (th, tw):
            self.image = np.array(background, dtype=np.uint8)
        else:
            self.image = np.full((th, tw, 3), 255, dtype=np.uint8)
        self.outline = np.zeros((th, tw), dtype=bool)

    def on_tile(self, tile):
        """Copy the sampled pixels of the tile's core into the overlay image."""
        f = self.factor
        x0, y0 = tile.box[:2]
        cx0, cy0, cx1, cy1 = tile.core
        sx, sy = -(-cx0 // f) * f, -(-cy0 // f) * f
        if sx >= cx1 or sy >= cy1:
            return
        part = tile.image[sy - y0 : cy1 - y0 : f, sx - x0 : cx1 - x0 : f]
        self.image[sy // f : sy // f + part.shape[0], sx // f : sx // f + part.shape[1]] = part

    def on_block(self, row, col, block):
        if not block.any():
            return
        rows, cols = np.nonzero(outline_pixels(block))
        rows, cols = rows + row * self.block, cols + col * self.block
        ok = (rows < self.height) & (cols < self.width)
        self.outline[rows[ok] // self.factor, cols[ok] // self.factor] = True

    def render(self):
        out = self.image.copy()
        out[self.outline] = self.color
        return out
