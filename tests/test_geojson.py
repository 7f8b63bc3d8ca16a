"""QuPath GeoJSON: outlines out, points in; round trips, GeoJSON validity, CSV by header."""

import json

import numpy as np
import pytest
from scipy import ndimage

from nucleiweak_d2.data.coco import read_points_file
from nucleiweak_d2.data.geojson import (
    mask_outline,
    nucleus_feature,
    points_feature,
    rasterize_polygon,
    read_geojson,
    read_geojson_points,
    read_geojson_polygons,
    ring_area,
    write_feature_collection,
)
from nucleiweak_d2.data.measurements import crop_rle, measure_nuclei


def _blobs(seed, shape=(60, 80), n=12):
    """A label map of ``n`` random filled blobs (one 8-connected piece each, no holes)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        blob = ndimage.binary_opening(rng.random((14, 14)) < 0.65)
        parts, count = ndimage.label(blob, structure=np.ones((3, 3)))
        if not count:
            continue
        sizes = ndimage.sum(blob, parts, range(1, count + 1))
        blob = ndimage.binary_fill_holes(parts == np.argmax(sizes) + 1)
        y, x = rng.integers(0, shape[0] - 14), rng.integers(0, shape[1] - 14)
        region = label[y : y + 14, x : x + 14]
        region[blob & (region == 0)] = i
    # keep the largest piece of each id (overlaps may have split some)
    out = np.zeros_like(label)
    for i in range(1, n + 1):
        parts, count = ndimage.label(label == i, structure=np.ones((3, 3)))
        if count:
            sizes = ndimage.sum(label == i, parts, range(1, count + 1))
            out[ndimage.binary_fill_holes(parts == np.argmax(sizes) + 1) & (out == 0)] = i
    return out


def _check_valid_polygon(geometry):
    """GeoJSON spec (RFC 7946): [x, y] numbers, closed rings of >= 4 positions, right-hand
    rule for exterior rings."""
    assert geometry["type"] == "Polygon"
    for ring in geometry["coordinates"]:
        assert len(ring) >= 4 and ring[0] == ring[-1]
        assert all(len(p) == 2 and all(isinstance(v, (int, float)) for v in p) for p in ring)
    assert ring_area(geometry["coordinates"][0]) > 0


def test_polygons_round_trip(tmp_path):
    label = _blobs(0)
    offset = (1000.0, 2000.0)  # e.g. a region's position in its slide
    features = []
    for i in range(1, label.max() + 1):
        ring = mask_outline(label == i, offset=offset)
        if ring is not None:
            features.append(nucleus_feature(ring, {"Label": i, "Area px^2": (label == i).sum()}))
    path = write_feature_collection(tmp_path / "nuclei.geojson", features)
    content = json.loads(path.read_text())
    assert content["type"] == "FeatureCollection"
    for feature in content["features"]:
        assert feature["type"] == "Feature"
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["classification"] == {"name": "Nucleus", "color": [0, 200, 0]}
        _check_valid_polygon(feature["geometry"])
    back = read_geojson_polygons(path)
    assert len(back) == len(features)
    for (rings, props), feature in zip(back, features):
        np.testing.assert_array_equal(rings[0], feature["geometry"]["coordinates"][0])
        mask = rasterize_polygon(rings[0], label.shape, offset=offset)
        np.testing.assert_array_equal(mask, label == props["measurements"]["Label"])
    # x is the column: a blob in the right half has its polygon on the right
    i = int(label[:, 60:].max())
    ring = mask_outline(label == i)
    assert ring[:, 0].min() >= np.nonzero(label == i)[1].min()


def test_polygons_valid_for_shapely():
    shapely = pytest.importorskip("shapely")
    from shapely.geometry import shape

    label = _blobs(1, n=20)
    for i in range(1, label.max() + 1):
        ring = mask_outline(label == i)
        if ring is None:
            continue
        polygon = shape(nucleus_feature(ring)["geometry"])
        assert polygon.is_valid, shapely.validation.explain_validity(polygon)
        assert polygon.area == pytest.approx(ring_area(ring))
        assert polygon.exterior.is_ccw  # right-hand rule in the numbers


def test_diagonal_and_tiny_masks():
    one = np.zeros((3, 3), bool)
    one[1, 1] = True
    ring = mask_outline(one)
    np.testing.assert_array_equal(rasterize_polygon(ring, (3, 3)), one)
    diag = np.eye(4, dtype=bool)  # 8-connected: one piece
    np.testing.assert_array_equal(rasterize_polygon(mask_outline(diag), (4, 4)), diag)
    assert mask_outline(np.zeros((3, 3), bool)) is None
    assert mask_outline(np.ones((2, 3), bool), scale=2.0).max(axis=0).tolist() == [6.0, 4.0]


def test_points_round_trip_and_qupath_forms(tmp_path):
    points = np.array([[10.5, 20.5], [0.25, 3.75], [99.0, 1.0]])
    write_feature_collection(tmp_path / "a.geojson", [points_feature(points)])
    np.testing.assert_array_equal(read_geojson_points(tmp_path / "a.geojson"), points)
    # QuPath exports: a plain list of features, Point detections, classes, a cell's nucleus,
    # a GeometryCollection, and polygons that are ignored unless asked for
    square = [[[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]]
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [5.5, 6.5]},
            "properties": {"objectType": "annotation", "classification": {"name": "Nucleus"}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
            "properties": {"objectType": "annotation", "classification": {"name": "Other"}},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [7, 8, 0]},
            "properties": {"objectType": "detection"},
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "GeometryCollection",
                "geometries": [{"type": "Point", "coordinates": [9, 9]}],
            },
            "properties": {},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": square},
            "properties": {"objectType": "detection"},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": square},
            "properties": {"objectType": "annotation"},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": square},
            "properties": {
                "objectType": "cell",
                "nucleusGeometry": {
                    "type": "Polygon",
                    "coordinates": [[[10, 10], [12, 10], [12, 12], [10, 12], [10, 10]]],
                },
            },
        },
    ]
    (tmp_path / "list.geojson").write_text(json.dumps(features))
    pts, ignored = read_geojson_points(tmp_path / "list.geojson", return_ignored=True)
    np.testing.assert_array_equal(pts, [[5.5, 6.5], [1, 2], [3, 4], [7, 8], [9, 9]])
    assert ignored == 3
    np.testing.assert_array_equal(
        read_geojson_points(tmp_path / "list.geojson", classes=["Nucleus"]), [[5.5, 6.5]]
    )
    with_polygons = read_geojson_points(tmp_path / "list.geojson", polygons=True)
    np.testing.assert_allclose(with_polygons[-2:], [[2, 2], [11, 11]])  # not the annotation
    assert len(read_geojson(tmp_path / "list.geojson")) == len(features)
    (tmp_path / "bad.geojson").write_text(
        '{"type": "Feature", "geometry": {"type": "Point", "coordinates": ["a", 1]}}'
    )
    with pytest.raises(ValueError, match="bad.geojson: feature 0 has position"):
        read_geojson_points(tmp_path / "bad.geojson")
    (tmp_path / "notjson.geojson").write_text("{")
    with pytest.raises(ValueError, match="cannot read GeoJSON file"):
        read_geojson(tmp_path / "notjson.geojson")


def test_points_files_geojson_and_csv_by_header(tmp_path):
    # QuPath points are continuous (pixel c covers [c, c + 1)): a point is in pixel floor(x)
    write_feature_collection(
        tmp_path / "q.geojson", [points_feature([[10.5, 20.5], [0.2, 3.9], [49.99, 1.0]])]
    )
    np.testing.assert_array_equal(
        read_points_file(tmp_path / "q.geojson", (30, 50)), [[10, 20], [0, 3], [49, 1]]
    )
    np.testing.assert_array_equal(
        read_points_file(tmp_path / "q.geojson", (30, 50), offset=(0, 1)),
        [[10, 19], [0, 2], [49, 0]],
    )
    with pytest.raises(ValueError, match=r"q.geojson: image q \(30x40\) has 1 point outside"):
        read_points_file(tmp_path / "q.geojson", (30, 40))
    # CSV as QuPath's measurement export writes it: tab-separated, columns by header
    (tmp_path / "q.tsv").write_text(
        "Image\tName\tClass\tCentroid X px\tCentroid Y px\n"
        "a.tif\tPoint\tNucleus\t10.4\t20.6\n"
        "a.tif\tPoint\tNucleus\t3\t4\n"
    )
    np.testing.assert_array_equal(
        read_points_file(tmp_path / "q.tsv", (30, 50)), [[10, 21], [3, 4]]
    )
    np.testing.assert_array_equal(
        read_points_file(tmp_path / "q.tsv", offset=(2, 4)), [[8, 17], [1, 0]]
    )
    (tmp_path / "um.csv").write_text("Centroid X µm,Centroid Y µm\n1,2\n")
    with pytest.raises(ValueError, match="physical units"):
        read_points_file(tmp_path / "um.csv")
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(ValueError, match="no points in points file"):
        read_points_file(tmp_path / "empty.geojson")


def test_crop_rle_equals_pycocotools_and_measurements():
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        crop = rng.random((h, w)) < rng.random()
        full = np.zeros((height, width), np.uint8)
        full[y0 : y0 + h, x0 : x0 + w] = crop
        expected = mask_util.encode(np.asfortranarray(full))["counts"].decode()
        assert crop_rle(crop, x0, y0, height, width)["counts"] == expected
    label = np.zeros((20, 30), np.int32)
    label[2:8, 3:13] = 4  # a 6x10 rectangle
    image = np.full((20, 30, 3), 255, np.uint8)
    image[label > 0] = (80, 40, 140)
    m = measure_nuclei(label, image)
    assert m["id"].tolist() == [4] and m["area"][0] == 60
    # continuous coordinates: columns 3..12 span [3, 13), rows 2..7 span [2, 8)
    assert (m["centroid_x"][0], m["centroid_y"][0]) == (8.0, 5.0)
    assert m["solidity"][0] == 1.0 and 0.7 < m["eccentricity"][0] < 0.9
    assert m["hematoxylin_od"][0] > 0.05
