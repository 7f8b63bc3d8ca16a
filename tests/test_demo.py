"""``tools/demo.py`` end to end on a tiny dataset with the 2-iteration config: the trained model
and the val-tuned no-learning baseline scored on one test split, and the exports written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

REPO = Path(__file__).resolve().parents[1]


def test_demo_writes_both_scores_and_the_exports(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(REPO / "tools/demo.py"), "--out", str(out)]
    cmd += ["--n-images", "4", "--size", "96", "--threads", "1", "--config-file"]
    cmd += ["configs/quick/qu2020_instant_test.yaml", "--opts"]
    cmd += ["NUCLEIWEAK.UNET.CALIBRATE_EVAL", "True", "NUCLEIWEAK.UNET.CALIBRATION_SPLITS", "[0,3]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no-learning baseline" in run.stdout and "AJI" in run.stdout
    metrics = json.loads((out / "demo_metrics.json").read_text())
    test = "nucleiweak_synthetic_test"
    learned = metrics["segmentation"][test]["nuclei"]["AJI"]
    classical = metrics["classical"]["segmentation"][test]["nuclei"]["AJI"]
    settings = metrics["classical"]["settings_chosen_on_val"]
    assert 0.0 <= learned <= 1.0 and 0.0 < classical <= 1.0
    assert settings["images"] == 1 and settings["min_distance"] in (3, 4, 5, 6, 8, 10)
    verdict = "beats" if learned > classical else "does NOT beat"
    assert f"The trained model {verdict} the no-learning baseline" in run.stdout
    split = json.loads((out / "data/split.json").read_text())
    for name in split["test"]:
        stem = Path(name).stem
        geojson = json.loads((out / "predictions" / f"{stem}_nuclei.geojson").read_text())
        assert geojson["type"] == "FeatureCollection"
        header = (out / "predictions" / f"{stem}_nuclei.csv").read_text().splitlines()[0]
        assert header.startswith("id,")
        assert (out / "predictions" / f"{stem}_instances.png").is_file()
        assert (out / "overlays" / f"{stem}.png").is_file()
