#!/usr/bin/env python
"""Convert the official MoNuSeg download (TIF tiles + Aperio XML polygons) to a folder dataset.

Usage::

    python datasets/prepare_monuseg.py "MoNuSeg 2018 Training Data" datasets/monuseg

Every ``<name>.xml`` found under the source folder is paired with ``<name>.tif`` (or
``.tiff``/``.png``) found anywhere under it. The output is the folder layout of
``datasets/README.md``: ``images/<name>.png`` (RGB), ``labels/<name>.png`` (16-bit instance map)
and, when all 30 images of Kumar et al. are present, ``split.json`` with the split of Qu et
al. (TMI 2020) and Liu et al. (ISBI 2022).

Rasterisation: each ``<Region>`` becomes one instance, in file order, ids 1, 2, ...; a pixel is
inside a polygon when its centre is (``skimage.draw.polygon``), and it keeps the *first* region
that claims it, as the official MATLAB code does. Vertex coordinates are read as 0-based
pixel coordinates (Aperio's convention); ``--one-based`` subtracts 1 first, which reproduces
MATLAB's ``poly2mask`` on the raw coordinates. Regions that cover no pixel are skipped; an
instance partly claimed by an earlier region may end up in several pieces, as in the
official masks. Existing outputs are kept unless ``--overwrite`` is given.
"""

import argparse
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from skimage.draw import polygon as draw_polygon

from nucleiweak_d2.data.io import read_image, write_image, write_label

QU_SPLIT = {
    "train": [
        "TCGA-A7-A13E-01Z-00-DX1",
        "TCGA-A7-A13F-01Z-00-DX1",
        "TCGA-AR-A1AK-01Z-00-DX1",
        "TCGA-B0-5711-01Z-00-DX1",
        "TCGA-HE-7128-01Z-00-DX1",
        "TCGA-HE-7129-01Z-00-DX1",
        "TCGA-18-5592-01Z-00-DX1",
        "TCGA-38-6178-01Z-00-DX1",
        "TCGA-49-4488-01Z-00-DX1",
        "TCGA-G9-6336-01Z-00-DX1",
        "TCGA-G9-6348-01Z-00-DX1",
        "TCGA-G9-6356-01Z-00-DX1",
    ],
    "val": [
        "TCGA-AR-A1AS-01Z-00-DX1",
        "TCGA-HE-7130-01Z-00-DX1",
        "TCGA-50-5931-01Z-00-DX1",
        "TCGA-G9-6363-01Z-00-DX1",
    ],
    "testA": [
        "TCGA-E2-A1B5-01Z-00-DX1",
        "TCGA-E2-A14V-01Z-00-DX1",
        "TCGA-B0-5698-01Z-00-DX1",
        "TCGA-B0-5710-01Z-00-DX1",
        "TCGA-21-5784-01Z-00-DX1",
        "TCGA-21-5786-01Z-00-DX1",
        "TCGA-CH-5767-01Z-00-DX1",
        "TCGA-G9-6362-01Z-00-DX1",
    ],
    "testB": [
        "TCGA-DK-A2I6-01A-01-TS1",
        "TCGA-G2-A2EK-01A-02-TSB",
        "TCGA-AY-A8YK-01A-01-TS1",
        "TCGA-NH-A8F7-01A-01-TS1",
        "TCGA-KB-A93J-01A-01-TS1",
        "TCGA-RD-A8N9-01A-01-TS1",
    ],
}
QU_SPLIT["test"] = QU_SPLIT["testA"] + QU_SPLIT["testB"]


def read_regions(xml_path, one_based=False):
    """Polygons of an Aperio XML file as a list of ``(rows, cols)`` float arrays, in file order."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"cannot parse annotation file {xml_path}: {exc}") from exc
    offset = 1.0 if one_based else 0.0
    regions = []
    for region in root.iter("Region"):
        vertices = region.findall("./Vertices/Vertex")
        try:
            xy = np.array([[float(v.get("X")), float(v.get("Y"))] for v in vertices])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{xml_path}: region {region.get('Id')} has a bad vertex") from exc
        if len(xy) >= 3:
            regions.append((xy[:, 1] - offset, xy[:, 0] - offset))
    return regions


def rasterize(regions, shape):
    """Instance map of polygons: ids 1.. in order, the first region claiming a pixel keeps it."""
    label = np.zeros(shape, dtype=np.int32)
    next_id = 1
    for rows, cols in regions:
        rr, cc = draw_polygon(rows, cols, shape)
        free = label[rr, cc] == 0
        if not free.any():
            continue
        label[rr[free], cc[free]] = next_id
        next_id += 1
    return label


def find_pairs(src):
    """``{name: (image_path, xml_path)}`` for every XML under ``src`` that has an image."""
    src = Path(src)
    images = {}
    for ext in ("*.tif", "*.tiff", "*.png"):
        for path in src.rglob(ext):
            images.setdefault(path.stem, path)
    pairs = {}
    for xml_path in sorted(src.rglob("*.xml")):
        if xml_path.stem not in images:
            raise ValueError(f"annotation {xml_path} has no image {xml_path.stem}.tif under {src}")
        pairs[xml_path.stem] = (images[xml_path.stem], xml_path)
    if not pairs:
        raise ValueError(f"no Aperio XML annotation files under {src}")
    return pairs


def convert(src, out, one_based=False, overwrite=False):
    """Convert every image/XML pair under ``src`` into the folder layout at ``out``.

    Returns ``{name: number_of_instances}``.
    """
    out = Path(out)
    pairs = find_pairs(src)
    targets = [out / "split.json"] + [
        out / sub / f"{n}.png" for n in pairs for sub in ("images", "labels")
    ]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"refusing to overwrite {existing[:3]} ... (pass --overwrite)")
    counts = {}
    for name, (image_path, xml_path) in sorted(pairs.items()):
        image = read_image(image_path)
        label = rasterize(read_regions(xml_path, one_based), image.shape[:2])
        write_image(out / "images" / f"{name}.png", image)
        write_label(out / "labels" / f"{name}.png", label)
        counts[name] = int(label.max())
    if all(n in pairs for names in QU_SPLIT.values() for n in names):
        (out / "split.json").write_text(json.dumps(QU_SPLIT, indent=1))
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", help="extracted MoNuSeg download (searched recursively)")
    parser.add_argument("out", help="output folder dataset")
    parser.add_argument("--one-based", action="store_true", help="vertices are 1-based (MATLAB)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        counts = convert(args.src, args.out, args.one_based, args.overwrite)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split_note = "with" if (Path(args.out) / "split.json").exists() else "without"
    print(
        f"{len(counts)} images, {sum(counts.values())} nuclei -> {args.out} ({split_note} "
        f"split.json) in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
