"""Streaming tiled prediction: seamless stitching, batches, the label canvas, tool outputs.

A deterministic fake model (red channel < 180, 8-connected components; the foreground
probability as ``prob``) makes the tests about tiling and stitching, not about a model.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("detectron2")
import tifffile  # noqa: E402
import torch  # noqa: E402
from conftest import load_script  # noqa: E402
from detectron2.modeling import META_ARCH_REGISTRY  # noqa: E402
from scipy import ndimage  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.data.label_store import BlockLabelCanvas  # noqa: E402
from nucleiweak_d2.data.slides import ArraySource, make_view  # noqa: E402
from nucleiweak_d2.engine.predictor import NucleiPredictor, predict_view, tile_cores  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / "tools" / "predict.py"
ARCH = "PredictTilesThreshold"


class _Threshold(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.tensor(180.0))

    @property
    def device(self):
        return self.threshold.device

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            red = x["image"][0].numpy().astype(np.float32)
            label, _ = ndimage.label(red < float(self.threshold), structure=np.ones((3, 3)))
            outputs.append(
                {
                    "instance_map": torch.from_numpy(label.astype(np.int32)),
                    "prob": torch.from_numpy(1.0 - red / 255.0),
                }
            )
        return outputs


if ARCH not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(type(ARCH, (_Threshold,), {}))


def disks_image(shape, n, seed, radius=(4, 10), gap=3):
    """White-pink background with ``n`` separated purple disks (no two closer than ``gap``)."""
    rng = np.random.default_rng(seed)
    height, width = shape
    image = np.empty(shape + (3,), np.uint8)
    image[...] = (235, 200, 220)
    image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    rows, cols = np.mgrid[:height, :width]
    placed = []
    for _ in range(20 * n):
        if len(placed) == n:
            break
        r = rng.uniform(*radius)
        x, y = rng.uniform(r, width - r), rng.uniform(r, height - r)
        if all((x - px) ** 2 + (y - py) ** 2 > (r + pr + gap) ** 2 for px, py, pr in placed):
            placed.append((x, y, r))
            image[(cols - x) ** 2 + (rows - y) ** 2 <= r * r] = (90, 50, 150)
    return image, placed


def _predictor(**opts):
    cfg = setup_cfg(
        None, ["MODEL.META_ARCHITECTURE", ARCH, "MODEL.DEVICE", "cpu", "INPUT.FORMAT", "RGB"]
    )
    return NucleiPredictor(cfg, keep_raw=False, **opts)


def _run(predictor, image, tile, overlap, batch=1, region=None):
    view = make_view(ArraySource(image), region=region)
    with BlockLabelCanvas(view.height, view.width, block=64) as canvas:
        result = predict_view(predictor, view, canvas, tile=tile, overlap=overlap, batch=batch)
        return canvas.to_array(), result


def _match(a, b):
    """For each nucleus of ``a``: the ids of ``b`` it overlaps and its best IoU."""
    out = []
    for i, sl in enumerate(ndimage.find_objects(a), 1):
        if sl is None:
            continue
        mask = a == i
        hit = np.unique(b[mask])
        hit = hit[hit > 0]
        best = max(
            (np.logical_and(mask, b == j).sum() / np.logical_or(mask, b == j).sum() for j in hit),
            default=0.0,
        )
        out.append((len(hit), best))
    return out


def test_tile_cores_partition_the_image():
    for height, width, tile, overlap in ((500, 700, 128, 48), (130, 129, 128, 0), (64, 64, 0, 0)):
        cores = tile_cores(height, width, tile, overlap)
        cover = np.zeros((height, width), np.int32)
        for (x0, y0, x1, y1), (cx0, cy0, cx1, cy1) in cores:
            assert x0 <= cx0 < cx1 <= x1 and y0 <= cy0 < cy1 <= y1
            cover[cy0:cy1, cx0:cx1] += 1
        assert (cover == 1).all()
    ((box, core),) = tile_cores(40, 50, 0, 16)
    assert box == core == (0, 0, 50, 40)


def test_every_nucleus_once_across_seams():
    image, placed = disks_image((450, 560), 260, seed=1)
    predictor = _predictor()
    whole, whole_result = _run(predictor, image, tile=0, overlap=0)
    assert whole.max() == len(placed) >= 200
    tiled, result = _run(predictor, image, tile=128, overlap=48, batch=3)
    assert result.n_tiles == len(tile_cores(450, 560, 128, 48)) > 20
    assert result.seam_cut == 0 and result.dropped == 0
    assert tiled.max() == whole.max()  # no nucleus lost or doubled
    # every untiled nucleus is one tiled nucleus, and the other way round
    for pieces, iou in _match(whole, tiled) + _match(tiled, whole):
        assert pieces == 1 and iou >= 0.99
    assert np.array_equal(tiled > 0, whole > 0)
    # scores: mean foreground probability of each nucleus, in id order
    red = image[..., 0].astype(np.float64)
    expected = ndimage.mean(1 - red / 255.0, tiled, np.arange(1, tiled.max() + 1))
    np.testing.assert_allclose(result.scores, expected, rtol=1e-5)
    # batch size does not change anything
    again, _ = _run(predictor, image, tile=128, overlap=48, batch=1)
    np.testing.assert_array_equal(again, tiled)


def test_a_too_small_overlap_is_reported():
    image, _ = disks_image((200, 200), 60, seed=2, radius=(9, 12))
    tiled, result = _run(_predictor(), image, tile=64, overlap=8)
    assert result.seam_cut > 0  # nuclei wider than the overlap are cut at seams


def test_block_canvas_bounded_cache_and_final_blocks(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.integers(0, 5, (300, 260)).astype(np.uint32)
    canvas = BlockLabelCanvas(300, 260, block=32, cache_mb=0.01, scratch_dir=str(tmp_path))
    finished = []
    canvas.on_final.append(lambda r, c, a: finished.append((r, c)))
    boxes = [
        (x, y, min(x + 100, 260), min(y + 100, 300))
        for y in range(0, 300, 80)
        for x in range(0, 260, 80)
    ]
    canvas.plan(boxes)
    for box in boxes:
        x0, y0, x1, y1 = box
        part = canvas.read(box)
        part[part == 0] = full[y0:y1, x0:x1][part == 0]
        canvas.write(box, part)
        canvas.done(box)
    canvas.finish()
    assert canvas.peak_live <= 25  # a few blocks beyond one box's, however large the image
    assert sorted(finished) == [(r, c) for r in range(10) for c in range(9)]
    np.testing.assert_array_equal(canvas.to_array(np.uint32), full)
    with pytest.raises(ValueError, match="final"):
        canvas.read((0, 0, 10, 10))
    assert list(tmp_path.iterdir()) == []  # the scratch file has no name
    canvas.close()


def _tool():
    return load_script("predict_tool_tiles", TOOL)


def test_tool_streams_every_output_of_a_tiff(tmp_path):
    from pycocotools import mask as mask_util

    from nucleiweak_d2.data.geojson import rasterize_polygon, read_geojson_polygons

    image, placed = disks_image((300, 340), 110, seed=3)
    tifffile.imwrite(
        tmp_path / "big.tif", image, tile=(64, 64), compression="zlib", photometric="rgb"
    )
    config = tmp_path / "fake.yaml"
    config.write_text(
        f"MODEL:\n  META_ARCHITECTURE: {ARCH}\n  DEVICE: cpu\nINPUT:\n  FORMAT: RGB\n"
    )
    out = tmp_path / "pred"
    run = _tool().main(
        [
            "--config-file",
            str(config),
            "--input",
            str(tmp_path / "big.tif"),
            "--output",
            str(out),
            "--read",
            "tiles",
            "--tile",
            "96",
            "--tile-overlap",
            "40",
            "--batch",
            "2",
            "--overlay-max-side",
            "100",
            "--outputs",
            "labels,overlay,geojson,csv,coco",
            "--allow-random-weights",
        ]
    )
    assert run.exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "big_coco.json",
        "big_instances.tif",
        "big_nuclei.csv",
        "big_nuclei.geojson",
        "big_overlay.png",
    ]
    with tifffile.TiffFile(out / "big_instances.tif") as tif:
        assert tif.pages[0].is_tiled and tif.pages[0].dtype == np.uint16
        label = tif.asarray().astype(np.int32)
    whole, _ = _run(_predictor(), image, tile=0, overlap=0)
    assert label.max() == whole.max() == len(placed)
    for pieces, iou in _match(whole, label):
        assert pieces == 1 and iou >= 0.99
    # CSV: one row per id, centroids inside their nucleus
    with open(out / "big_nuclei.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["id"]) for r in rows] == list(range(1, label.max() + 1))
    for r in rows:
        x, y = float(r["centroid_x"]), float(r["centroid_y"])
        assert label[int(y), int(x)] == int(r["id"])
        assert float(r["area"]) == (label == int(r["id"])).sum()
        assert float(r["hematoxylin_od"]) > 0 and 0.99 < float(r["score"]) * 255 / 165 < 1.01
    # GeoJSON: each polygon rasterizes to its nucleus
    polygons = read_geojson_polygons(out / "big_nuclei.geojson")
    assert len(polygons) == label.max()
    for rings, props in polygons[::10]:
        gid = props["measurements"]["Label"]
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] == "Nucleus"
        np.testing.assert_array_equal(rasterize_polygon(rings[0], label.shape), label == gid)
    # COCO: RLE decodes to the same masks
    coco = json.loads((out / "big_coco.json").read_text())
    assert coco["images"][0]["height"] == 300 and len(coco["annotations"]) == label.max()
    for ann in coco["annotations"][::7]:
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        np.testing.assert_array_equal(mask, label == ann["nucleus_id"])
        x, y, w, h = ann["bbox"]
        assert mask[:, x].any() and mask[y, :].any() and not mask[:, x + w :].any()
    # overlay: downsampled (factor 4 for a 340 px side and --overlay-max-side 100)
    from nucleiweak_d2.data.io import read_image

    assert read_image(out / "big_overlay.png").shape == (75, 85, 3)


def test_tool_slide_level_region_and_tissue(tmp_path, capsys):
    """A pyramid level and a region: polygons and centroids come back in level-0 pixels;
    tiles on glass are skipped."""
    from nucleiweak_d2.data.geojson import read_geojson_polygons, ring_area

    image, _ = disks_image((400, 480), 90, seed=4, radius=(6, 11))
    image[:, :200] = 244  # glass on the left
    with tifffile.TiffWriter(tmp_path / "slide.tif") as tw:
        tw.write(image, tile=(64, 64), subifds=1, photometric="rgb", compression="zlib")
        tw.write(
            image[::2, ::2], tile=(64, 64), subfiletype=1, photometric="rgb", compression="zlib"
        )
    config = tmp_path / "fake.yaml"
    config.write_text(
        f"MODEL:\n  META_ARCHITECTURE: {ARCH}\n  DEVICE: cpu\nINPUT:\n  FORMAT: RGB\n"
    )
    out = tmp_path / "pred"
    x0, y0 = 40, 60
    run = _tool().main(
        [
            "--config-file",
            str(config),
            "--input",
            str(tmp_path / "slide.tif"),
            "--output",
            str(out),
            "--level",
            "1",
            "--region",
            str(x0),
            str(y0),
            "400",
            "320",
            "--tissue-mask",
            "auto",
            "--tile",
            "48",
            "--tile-overlap",
            "16",
            "--outputs",
            "labels,geojson,csv,overlay",
            "--allow-random-weights",
        ]
    )
    assert run.exit_code == 0
    printed = capsys.readouterr().out
    assert "level 1, region at (40, 60): 200x160 px" in printed
    assert "without tissue skipped" in printed
    with tifffile.TiffFile(out / "slide_instances.tif") as tif:
        label = tif.asarray()
    assert label.shape == (160, 200) and label.max() > 10
    assert not label[:, :70].any()  # glass: x < (200 - 40) / 2 = 80 at level 1
    with open(out / "slide_nuclei.csv") as f:
        rows = {int(r["id"]): r for r in csv.DictReader(f)}
    for rings, props in read_geojson_polygons(out / "slide_nuclei.geojson"):
        ring = rings[0]
        assert ring_area(ring) > 0
        # level-0 frame: inside the region, on a nucleus of the full-resolution image
        assert (ring[:, 0] >= x0).all() and (ring[:, 0] <= x0 + 400).all()
        assert (ring[:, 1] >= y0).all() and (ring[:, 1] <= y0 + 320).all()
        row = rows[props["measurements"]["Label"]]
        cx, cy = float(row["centroid_x"]), float(row["centroid_y"])
        assert ring[:, 0].min() < cx < ring[:, 0].max() and ring[:, 1].min() < cy < ring[:, 1].max()
        assert image[int(cy), int(cx), 0] == 90  # the nucleus colour
