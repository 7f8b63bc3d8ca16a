"""QuPath GeoJSON: nucleus outlines out (``tools/predict.py``), clicked points in.

Coordinates follow QuPath (and the GeoJSON spec's ``[x, y]`` order): continuous pixel
coordinates of the full-resolution image, origin at the top-left corner of the top-left
pixel, so pixel ``(column c, row r)`` covers ``[c, c + 1) x [r, r + 1)`` and its centre is
``(c + 0.5, r + 0.5)``.

Out: :func:`mask_outline` traces a binary mask as a polygon whose edges run half-way between
inside and outside pixel centres (marching squares at level 0.5, 8-connected foreground),
so the pixels whose centres lie inside the polygon are exactly the mask's pixels
(:func:`rasterize_polygon` gives the mask back). Rings are closed (first vertex = last) and
follow the GeoJSON right-hand rule (positive shoelace area of the ``[x, y]`` numbers);
collinear vertices are dropped. :func:`nucleus_feature` wraps one outline as a QuPath
detection (``objectType: "detection"``, ``classification: {name, color}``, ``measurements``
as a name -> value object, the form QuPath 0.4+ reads and writes);
:class:`FeatureCollectionWriter` streams features to a file, so a slide's millions of nuclei
never sit in memory together.

In: :func:`read_geojson` accepts what QuPath exports (a ``FeatureCollection``, a plain JSON
list of features, one ``Feature``, or a bare geometry) and :func:`read_geojson_points` takes
the ``Point`` / ``MultiPoint`` geometries (annotations or detections, also inside a
``GeometryCollection``) as clicked points; polygons are ignored unless asked for (then a
detection's polygon, or a cell's ``nucleusGeometry``, gives its centroid).

numpy + scikit-image only (no shapely).
"""

import json
import math
from pathlib import Path

import numpy as np

__all__ = [
    "NUCLEUS_CLASS",
    "NUCLEUS_COLOR",
    "GEOJSON_EXTENSIONS",
    "mask_outline",
    "ring_area",
    "rasterize_polygon",
    "nucleus_feature",
    "points_feature",
    "FeatureCollectionWriter",
    "write_feature_collection",
    "read_geojson",
    "read_geojson_points",
    "read_geojson_polygons",
]

NUCLEUS_CLASS = "Nucleus"
NUCLEUS_COLOR = (0, 200, 0)  # the green of the prediction overlays, as QuPath's packed RGB list
GEOJSON_EXTENSIONS = (".geojson", ".json")
_DECIMALS = 3  # coordinates written with at most this many decimals


def ring_area(ring):
    """Signed shoelace area of a ring ``(K, 2)`` ``[x, y]`` (positive: counter-clockwise in
    the numbers, the GeoJSON right-hand rule; closed or not)."""
    ring = np.asarray(ring, dtype=np.float64)
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _drop_collinear(ring):
    """Remove the vertices of an open ring that lie on the line through their neighbours
    (one pass removes every interior vertex of a straight run)."""
    if len(ring) <= 3:
        return ring
    steps = np.diff(np.concatenate([ring[-1:], ring, ring[:1]]), axis=0)
    d_in, d_out = steps[:-1], steps[1:]
    cross = d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0]
    keep = np.abs(cross) > 1e-9
    return ring[keep] if keep.sum() >= 3 else ring


def mask_outline(mask, offset=(0.0, 0.0), scale=1.0):
    """Outline of a binary mask as one closed polygon ring in QuPath coordinates.

    Parameters
    ----------
    mask : array_like
        ``(h, w)`` bool. 8-connected foreground; when it has several pieces, the largest
        one's outline is returned; holes are not traced (the ring is the outer boundary).
    offset : tuple of float
        ``(x, y)`` added after scaling: the position of the mask's top-left pixel corner in
        the output frame (e.g. a crop's origin).
    scale : float
        Output units per mask pixel (the downsample of the mask to the full-resolution image).

    Returns
    -------
    numpy.ndarray or None
        ``(K + 1, 2)`` float64 ``[x, y]`` vertices, first = last, positive shoelace area;
        None for an empty mask.
    """
    from skimage.measure import find_contours

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (h, w), got shape {mask.shape}")
    if not mask.any():
        return None
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = mask
    contours = find_contours(padded, 0.5, fully_connected="high")
    best, best_area = None, 0.0
    for contour in contours:
        if len(contour) < 4:
            continue
        y, x = contour[:, 0], contour[:, 1]
        area = 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]))  # closed contour
        if abs(area) > abs(best_area):
            best, best_area = contour, area
    if best is None:
        return None
    ring = best[:-1, ::-1] - 0.5  # open ring; (row, col) of the padded array -> [x, y] corners
    if best_area < 0:
        ring = ring[::-1]
    ring = _drop_collinear(ring)
    if scale != 1.0:
        ring = ring * float(scale)
    ring = ring + np.asarray(offset, dtype=np.float64)
    return np.vstack([ring, ring[:1]])


def rasterize_polygon(ring, shape, offset=(0.0, 0.0)):
    """Pixels of a ``(h, w)`` grid whose centres lie inside a ring (QuPath coordinates).

    The inverse of :func:`mask_outline`: ``rasterize_polygon(mask_outline(m), m.shape)``
    is ``m`` for a mask of one piece without holes.

    Parameters
    ----------
    ring : array_like
        ``(K, 2)`` ``[x, y]`` vertices (closed or not).
    shape : tuple of int
        ``(h, w)`` of the grid.
    offset : tuple of float
        ``(x, y)`` of the grid's top-left corner in the ring's frame.
    """
    from skimage.draw import polygon

    ring = np.asarray(ring, dtype=np.float64)
    rows, cols = polygon(ring[:, 1] - offset[1] - 0.5, ring[:, 0] - offset[0] - 0.5, shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def _number(value):
    """A JSON-friendly float (NaN/inf become None, which QuPath shows as missing)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _coords(ring):
    return np.round(np.asarray(ring, dtype=np.float64), _DECIMALS).tolist()


def nucleus_feature(
    ring,
    measurements=None,
    *,
    name=NUCLEUS_CLASS,
    color=NUCLEUS_COLOR,
    object_type="detection",
    properties=None,
):
    """A QuPath GeoJSON ``Feature`` of one nucleus outline.

    Parameters
    ----------
    ring : array_like
        Closed ``[x, y]`` ring (:func:`mask_outline`).
    measurements : dict, optional
        ``{name: number}``, written as ``properties.measurements`` (non-finite -> null).
    name, color : str, tuple of int
        ``properties.classification`` (QuPath class and its RGB colour).
    object_type : str
        ``"detection"`` (QuPath's objects for nuclei) or ``"annotation"``.
    properties : dict, optional
        More entries of ``properties``.
    """
    props = {
        "objectType": object_type,
        "classification": {"name": name, "color": [int(c) for c in color]},
    }
    if measurements:
        props["measurements"] = {str(k): _number(v) for k, v in measurements.items()}
    if properties:
        props.update(properties)
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [_coords(ring)]},
        "properties": props,
    }


def points_feature(points, *, name=NUCLEUS_CLASS, color=NUCLEUS_COLOR, object_type="annotation"):
    """One QuPath points annotation: a ``MultiPoint`` feature of ``(K, 2)`` ``[x, y]``
    QuPath coordinates (the form of QuPath's "Points" annotations)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return {
        "type": "Feature",
        "geometry": {"type": "MultiPoint", "coordinates": _coords(points)},
        "properties": {
            "objectType": object_type,
            "classification": {"name": name, "color": [int(c) for c in color]},
        },
    }


class FeatureCollectionWriter:
    """Write a GeoJSON ``FeatureCollection`` one feature at a time to an open text file.

    ``writer = FeatureCollectionWriter(f); writer.write(feature); ...; writer.close()``
    (``close`` writes the end of the collection, not closing ``f``). Make the file atomic
    with :func:`nucleiweak_d2.data.atomic.atomic_path`.
    """

    def __init__(self, stream):
        self.stream = stream
        self.count = 0
        stream.write('{"type": "FeatureCollection", "features": [')

    def write(self, feature):
        self.stream.write(
            ("\n" if self.count == 0 else ",\n")
            + json.dumps(feature, separators=(",", ":"), allow_nan=False)
        )
        self.count += 1

    def close(self):
        self.stream.write("\n]}\n")


def write_feature_collection(path, features):
    """Write ``features`` as a ``FeatureCollection`` to ``path`` atomically; returns the path."""
    from .atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        writer = FeatureCollectionWriter(f)
        for feature in features:
            writer.write(feature)
        writer.close()
    return path


# --------------------------------------------------------------------------------- reading


def read_geojson(path):
    """The features of a GeoJSON file, as QuPath exports it.

    Accepted: a ``FeatureCollection``; a JSON list of features (QuPath's "Export objects"
    without "Export as FeatureCollection"); one ``Feature``; a bare geometry (becomes a
    feature without properties).

    Returns
    -------
    list of dict
        Features, each with a ``geometry`` dict (or None) and a ``properties`` dict.

    Raises
    ------
    ValueError
        Naming the file: unreadable, not JSON, or no features in any of the accepted forms.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read GeoJSON file {path}: {exc}") from exc
    if isinstance(content, dict) and content.get("type") == "FeatureCollection":
        features = content.get("features")
    elif isinstance(content, list):
        features = content
    elif isinstance(content, dict) and content.get("type") == "Feature":
        features = [content]
    elif (
        isinstance(content, dict)
        and "coordinates" in content
        or (isinstance(content, dict) and content.get("type") == "GeometryCollection")
    ):
        features = [{"type": "Feature", "geometry": content, "properties": {}}]
    else:
        raise ValueError(
            f"GeoJSON file {path} holds no FeatureCollection, list of features, Feature or geometry"
        )
    if not isinstance(features, list):
        raise ValueError(f"GeoJSON file {path}: 'features' is not a list")
    out = []
    for k, feature in enumerate(features):
        if not isinstance(feature, dict) or not (
            feature.get("type") == "Feature" or "geometry" in feature
        ):
            raise ValueError(f"GeoJSON file {path}: feature {k} is not a GeoJSON Feature")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise ValueError(
                f"GeoJSON file {path}: feature {k} has properties that are not an object"
            )
        out.append({"type": "Feature", "geometry": feature.get("geometry"), "properties": props})
    return out


def _class_name(props):
    cls = props.get("classification")
    if isinstance(cls, dict):
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def _xy(position, path, k):
    """``(x, y)`` of one GeoJSON position (a third coordinate, z, is ignored)."""
    try:
        x, y = float(position[0]), float(position[1])
    except (TypeError, ValueError, IndexError, KeyError):
        raise ValueError(
            f"GeoJSON file {path}: feature {k} has position {position!r}; expected [x, y] numbers"
        ) from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"GeoJSON file {path}: feature {k} has a non-finite position {position!r}")
    return x, y


def _polygon_centroid(rings, path, k):
    """Area centroid of a polygon's outer ring (vertex mean for a degenerate ring)."""
    ring = np.array([_xy(p, path, k) for p in rings[0]], dtype=np.float64)
    area = ring_area(ring)
    if abs(area) < 1e-12:
        return tuple(ring.mean(axis=0))
    x, y = ring[:, 0], ring[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    return (
        float(((x + xn) * cross).sum() / (6 * area)),
        float(((y + yn) * cross).sum() / (6 * area)),
    )


def _geometry_points(geometry, path, k, polygons):
    """``(points, n_ignored)`` of one geometry (recursing into collections)."""
    if geometry is None:
        return [], 0
    if not isinstance(geometry, dict):
        raise ValueError(f"GeoJSON file {path}: feature {k} has a geometry that is not an object")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        return [_xy(coords, path, k)], 0
    if kind == "MultiPoint":
        return [_xy(p, path, k) for p in (coords or [])], 0
    if kind == "GeometryCollection":
        points, ignored = [], 0
        for sub in geometry.get("geometries") or []:
            p, i = _geometry_points(sub, path, k, polygons)
            points += p
            ignored += i
        return points, ignored
    if polygons and kind == "Polygon" and coords:
        return [_polygon_centroid(coords, path, k)], 0
    if polygons and kind == "MultiPolygon" and coords:
        return [_polygon_centroid(poly, path, k) for poly in coords if poly], 0
    return [], 1


def read_geojson_points(path, *, classes=None, polygons=False, return_ignored=False):
    """Clicked points of a QuPath GeoJSON export, in QuPath coordinates.

    Parameters
    ----------
    path : str or Path
    classes : sequence of str, optional
        Keep only features of these classification names (None: every feature, classified
        or not).
    polygons : bool
        Also take the centroid of each *detection* or *cell* polygon (a cell's
        ``nucleusGeometry`` when present), e.g. predicted nuclei kept after a correction in
        QuPath. Annotation polygons (regions of interest) are never taken.
    return_ignored : bool
        Also return how many geometries were ignored (polygons, lines).

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` float64 ``[x, y]`` in file order (``N`` may be 0); with
        ``return_ignored``, ``(points, n_ignored)``.
    """
    points, ignored = [], 0
    wanted = None if classes is None else set(classes)
    for k, feature in enumerate(read_geojson(path)):
        props = feature["properties"]
        if wanted is not None and _class_name(props) not in wanted:
            continue
        object_type = str(props.get("objectType", "annotation")).lower()
        geometry = feature["geometry"]
        take_polygons = polygons and object_type in ("detection", "cell", "tile")
        if (
            take_polygons
            and object_type == "cell"
            and isinstance(props.get("nucleusGeometry"), dict)
        ):
            geometry = props["nucleusGeometry"]
        p, i = _geometry_points(geometry, Path(path), k, take_polygons)
        points += p
        ignored += i
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return (points, ignored) if return_ignored else points


def read_geojson_polygons(path):
    """``[(rings, properties)]`` of the ``Polygon`` features of a file (rings as ``(K, 2)``
    float64 arrays, outer ring first); other geometries are skipped."""
    out = []
    for k, feature in enumerate(read_geojson(path)):
        geometry = feature["geometry"] or {}
        if geometry.get("type") != "Polygon":
            continue
        rings = [
            np.array([_xy(p, Path(path), k) for p in ring], dtype=np.float64).reshape(-1, 2)
            for ring in geometry.get("coordinates") or []
        ]
        out.append((rings, feature["properties"]))
    return out
