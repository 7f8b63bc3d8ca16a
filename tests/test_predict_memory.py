"""Memory of tools/predict.py on a large TIFF follows the tile size, not the image size.

A 3072 x 3072 RGB TIFF (27 MiB of pixels; its int32 label map would be 36 MiB more) is
predicted in 256 px tiles in a subprocess; the peak RSS above the RSS after start-up (model
built, before the first tile) must stay well below what holding the image or the label map
would cost. The peak is the child's own ``VmHWM``: its ``ru_maxrss`` would include the
peak of the pytest process it was forked from (Linux keeps it across exec).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("detectron2")
import tifffile  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIDE = 3072

PROBE = REPO / "benchmarks" / "predict_probe.py"  # runs tools/predict.py, prints RESULT


def _write_big_tiff(path):
    """A tiled TIFF of purple disks on a pale background, written tile by tile."""
    tile = 256
    yy, xx = np.mgrid[:tile, :tile]
    base = np.full((tile, tile, 3), 236, np.uint8)
    disk = ((yy % 48 - 24) ** 2 + (xx % 48 - 24) ** 2) <= 81
    base[disk] = (80, 40, 140)

    def tiles():
        for _ in range((SIDE // tile) ** 2):
            yield base

    tifffile.imwrite(
        path,
        tiles(),
        shape=(SIDE, SIDE, 3),
        dtype=np.uint8,
        tile=(tile, tile),
        photometric="rgb",
        compression="zlib",
    )


def test_peak_memory_is_bounded_by_the_tile(tmp_path):
    big = tmp_path / "big.tif"
    _write_big_tiff(big)
    config = tmp_path / "fake.yaml"
    config.write_text(
        "MODEL:\n  META_ARCHITECTURE: NucleiWeakThresholdStandIn\n  DEVICE: cpu\nINPUT:\n  FORMAT: RGB\n"
    )
    out = tmp_path / "pred"
    proc = subprocess.run(
        [
            sys.executable,
            str(PROBE),
            str(REPO / "tools" / "predict.py"),
            "--config-file",
            str(config),
            "--input",
            str(big),
            "--output",
            str(out),
            "--read",
            "tiles",
            "--tile",
            "256",
            "--tile-overlap",
            "32",
            "--batch",
            "2",
            "--cache-mb",
            "8",
            "--overlay-max-side",
            "512",
            "--outputs",
            "labels,overlay,geojson",
            "--allow-random-weights",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO),
        # the caller's PYTHONPATH kept (an environment that finds detectron2 through it)
        env={
            "OMP_NUM_THREADS": "1",
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    assert stats["images"] == 1
    grown = stats["peak_rss_mib"] - stats["rss_start_mib"]
    image_mib = SIDE * SIDE * 3 / 2**20  # 27 MiB
    assert grown < 0.75 * image_mib, stats  # neither the image nor the label map was held
    with tifffile.TiffFile(out / "big_instances.tif") as tif:
        page = tif.pages[0]
        assert page.shape == (SIDE, SIDE) and page.is_tiled
        corner = page.asarray()[:200, :200]
    assert len(np.unique(corner[corner > 0])) == 16  # the 4 x 4 disks of the corner
