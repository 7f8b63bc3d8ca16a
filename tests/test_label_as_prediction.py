"""benchmarks/label_as_prediction.py: quick mode, a designed two-nucleus case, bad inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from skimage.draw import disk

from nucleiweak_d2.data.points import points_from_labels
from nucleiweak_d2.evaluation.metrics import aji

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lap():
    return load_script("label_as_prediction_bench", REPO / "benchmarks" / "label_as_prediction.py")


def test_quick_mode_gives_finite_metrics_in_unit_range(lap, tmp_path, capsys):
    out = tmp_path / "lap.json"
    assert lap.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "time:" in printed and "qu2020_cells" in printed
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"val", "test"}
    for by_kind in res.values():
        assert set(by_kind) == set(lap.KINDS)
        for summary in by_kind.values():
            for metric in lap.METRICS:
                assert np.isfinite(summary[metric]) and 0.0 <= summary[metric] <= 1.0


def test_quick_mode_with_partial_points_uses_fewer_points(lap, tmp_path):
    full, part = tmp_path / "full.json", tmp_path / "part.json"
    kinds = ["--kinds", "qu2020", "--splits", "test"]
    assert lap.main(["--quick", "--out", str(full), *kinds]) == 0
    assert lap.main(["--quick", "--ratio", "0.1", "--out", str(part), *kinds]) == 0
    n_full = json.loads(full.read_text())["results"]["test"]["qu2020"]
    n_part = json.loads(part.read_text())["results"]["test"]["qu2020"]
    assert n_full["points"] == n_full["nuclei"] > n_part["points"] >= 1


def _two_flat_discs():
    """Two flat purple discs of radius 10 on white, far apart, and their bbox-centre points."""
    gt = np.zeros((128, 128), np.int32)
    gt[disk((40, 40), 10)] = 1
    gt[disk((88, 88), 10)] = 2
    image = np.full((128, 128, 3), 255, np.uint8)
    image[gt > 0] = (90, 50, 140)
    return gt, image, points_from_labels(gt)[1]


@pytest.mark.parametrize("kind", ["qu2020", "qu2020_cells", "liu2022_cells", "nam2023_cells"])
def test_two_flat_discs_give_each_disc_shrunk_by_two_pixels(lap, kind):
    # Two flat purple discs of radius 10 on white, far apart, exact bbox-centre points. The
    # k-means finds them; the cluster label's per-cell refinement (dilate by disk(5), fill,
    # erode by disk(7), Qu et al.) shrinks a flat convex nucleus by 2 px, so each disc comes
    # back as its concentric radius-8 disc: AJI = |pred| / |gt| ~ (8 / 10)^2 = 0.64 (0.659
    # with the pixel discs). Nothing is predicted outside the nuclei.
    gt, image, points = _two_flat_discs()
    pred = lap.predict(kind, image, points)
    assert pred.max() == 2
    assert not (pred[gt == 0]).any()
    assert {int(pred[40, 40]), int(pred[88, 88])} == {1, 2}
    score = aji(gt, pred)
    assert score == pytest.approx((pred > 0).sum() / (gt > 0).sum())
    assert 0.6 < score < 0.7


def test_instances_from_cells_splits_a_foreground_blob_by_its_cells(lap):
    fg = np.zeros((20, 40), bool)
    fg[5:15, 5:35] = True  # one blob across two cells
    cells = np.zeros((20, 40), np.int32)
    cells[:, 20:] = 1
    inst = lap.instances_from_cells(fg, cells, min_area=20)
    assert inst.max() == 2 and inst[10, 10] != inst[10, 30]
    assert (inst > 0).sum() == fg.sum()
    small = lap.instances_from_cells(fg, cells, min_area=151)  # each half is 150 px
    assert small.max() == 0


def test_bad_inputs_give_one_line_errors(lap, tmp_path, capsys):
    assert lap.main(["--quick", "--kinds", "qu2021"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert lap.main(["--quick", "--splits", "nope"]) == 2
    assert "unknown split 'nope'" in capsys.readouterr().err
    assert lap.main(["--data", str(tmp_path / "missing")]) == 2
    assert "no dataset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown kind"):
        lap.predict("voronoi", np.zeros((8, 8, 3), np.uint8), np.array([[2, 2]]))


def test_recalibrate_run_refuses_a_folder_without_a_model(tmp_path, capsys):
    from conftest import load_script

    script = load_script("recalibrate_run", "benchmarks/recalibrate_run.py")
    (tmp_path / "split.json").write_text("{}")
    assert script.main([str(tmp_path / "run"), "--data", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kind, settings",
    [
        ("qu2020", {"qu_label": {"kind": "kmeans", "erode_radius": 5}}),
        ("qu2020", {"qu_label": {"kind": "adaptive", "erode_radius": 5}}),
        ("nam2023", {"nam_label": {"erode_radius": 5}}),
        ("nam2023_cells", {"nam_label": {"erode_radius": 5}}),
    ],
)
def test_erosion_equal_to_the_dilation_keeps_the_discs_whole(lap, kind, settings):
    # The same two discs with the erosion radius 5 = the dilation's (NUCLEIWEAK.QU2020.LABEL,
    # NUCLEIWEAK.NAM2023.LABELS): the per-cell refinement is a closing, which leaves a flat
    # convex nucleus as it is.
    gt, image, points = _two_flat_discs()
    pred = lap.predict(kind, image, points, **settings)
    np.testing.assert_array_equal(pred > 0, gt > 0)
    assert aji(gt, pred) == 1.0


def test_settings_from_cfg_follow_the_run_config():
    from nucleiweak_d2.benchmarking.label_bound import settings_from_cfg
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.data.stain import StainNormalizer

    target = [60.0, 10.0, -10.0, 15.0, 5.0, 5.0]
    cfg = setup_cfg(
        None,
        [
            "NUCLEIWEAK.QU2020.LABEL.KIND", "adaptive",
            "NUCLEIWEAK.QU2020.LABEL.ERODE_RADIUS", 4,
            "NUCLEIWEAK.UNET.MIN_AREA", 33,
            "NUCLEIWEAK.DATA.STAIN_NORM.METHOD", "reinhard",
            "NUCLEIWEAK.DATA.STAIN_NORM.TARGET", target,
        ],
    )  # fmt: skip
    s = settings_from_cfg(cfg)
    assert s["qu_label"] == {
        "kind": "adaptive",
        "d_max": 20.0,
        "dilate_radius": 5,
        "erode_radius": 4,
    }
    assert s["nam_label"] == {"geodesic": True, "beta": 40.0, "d_max": 70.0, "erode_radius": 7}
    assert s["min_area"] == 33 and s["fill_holes"] is True
    assert isinstance(s["normalizer"], StainNormalizer)
    np.testing.assert_allclose(s["normalizer"].target_list(), target)
    assert settings_from_cfg(setup_cfg(None, []))["normalizer"] is None


def test_config_option_builds_the_labels_of_that_config(lap, tmp_path, capsys):
    # A config with Reinhard normalisation fitted on the synthetic train split and a different
    # erosion gives other labels than Qu's defaults on the raw images.
    runs = {}
    for name, extra in {
        "default": [],
        "erode5": ["--config", str(REPO / "configs/qu2020/R18_monuseg_p10_cpu_erode5.yaml")],
        "erode7": [
            "--config",
            str(REPO / "configs/qu2020/R18_monuseg_p10_cpu_erode5.yaml"),
            "--opts",
            "NUCLEIWEAK.QU2020.LABEL.ERODE_RADIUS",
            "7",
        ],
    }.items():
        out = tmp_path / f"{name}.json"
        args = ["--quick", "--kinds", "qu2020", "--splits", "test", "--out", str(out)]
        assert lap.main([*args, *extra]) == 0
        runs[name] = json.loads(out.read_text())["results"]["test"]["qu2020"]
    assert runs["erode5"]["Dice_obj"] != runs["erode7"]["Dice_obj"]
    assert runs["erode7"]["Dice_obj"] != runs["default"]["Dice_obj"]  # normalised colours
    capsys.readouterr()
    assert lap.main(["--quick", "--opts", "A", "1"]) == 2
    assert "--opts needs --config" in capsys.readouterr().err
    assert lap.main(["--quick", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "no config file" in capsys.readouterr().err


def test_the_point_free_rule_merges_touching_nuclei_the_points_keep_apart(lap):
    # Two flat discs of radius 10 that overlap (centres 18 px apart): with a closing
    # (erosion 5 = dilation) the label keeps both whole and touching, so without the points
    # they are one connected component; the points' Voronoi edge separates them. Qu's erosion
    # by 7 shrinks both by 2 px, which leaves a gap: the point-free rule then finds two.
    gt = np.zeros((64, 96), np.int32)
    gt[disk((32, 38), 10)] = 1
    gt[disk((32, 56), 10)] = 2  # the second disc takes the overlap
    image = np.full((64, 96, 3), 255, np.uint8)
    image[gt > 0] = (90, 50, 140)
    points = np.array([[38, 32], [56, 32]])
    closing = {"qu_label": {"kind": "kmeans", "erode_radius": 5}}
    assert lap.predict("qu2020", image, points, **closing).max() == 2
    assert lap.predict("qu2020_free", image, points, **closing).max() == 1
    assert lap.predict("qu2020_free", image, points).max() == 2
