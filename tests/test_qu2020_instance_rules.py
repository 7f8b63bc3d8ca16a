"""benchmarks/qu2020_instance_rules.py: the marker watershed and the rules on two touching
discs, and the refusal of a folder that is not a finished run."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from skimage.draw import disk

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    return load_script("qu2020_instance_rules", REPO / "benchmarks" / "qu2020_instance_rules.py")


def two_touching_discs():
    """Foreground probability of two discs of radius 10 (centres 18 px apart, touching) and a
    lone disc; the contact is less sure (0.6) than the cores (0.9)."""
    prob = np.zeros((48, 80), np.float32)
    for c in ((20, 20), (20, 38), (20, 66)):
        prob[disk(c, 10, shape=prob.shape)] = 0.6
        prob[disk(c, 7, shape=prob.shape)] = 0.9
    return prob


def test_marker_watershed_splits_by_markers_and_keeps_unmarked_components(script):
    prob = two_touching_discs()
    markers = np.zeros(prob.shape, np.int32)
    markers[20, 20], markers[20, 38] = 1, 2  # the lone disc at x 66 has no marker
    label = script.marker_watershed(prob > 0.5, markers, -prob)
    assert label.max() == 3
    assert label[20, 20] != label[20, 38]
    assert label[20, 66] not in (0, label[20, 20], label[20, 38])
    assert (label > 0).sum() == (prob > 0.5).sum()  # no pixel lost


def test_every_rule_separates_the_touching_discs(script):
    prob = two_touching_discs()
    det = np.zeros_like(prob)
    for c in ((20, 20), (20, 38), (20, 66)):
        det[disk(c, 3, shape=det.shape)] = 0.9
    families = script.rules(0.5, 4)
    cases = {
        "distance": "t 0.5 d 6",
        "two_level": "t 0.5 h 0.8",
        "detector_dist": "t 0.5",
        "detector_prob": "t 0.5",
    }
    for family, name in cases.items():
        label = families[family][name](prob, det)
        assert label.max() == 3, family
        assert len({label[20, 20], label[20, 38], label[20, 66]}) == 3, family
    # Qu et al.'s rule (no split) keeps the touching pair as one object
    assert families["distance"]["t 0.5 d 0"](prob, det).max() == 2


def test_refuses_a_folder_that_is_not_a_finished_run(script, tmp_path, capsys):
    (tmp_path / "split.json").write_text("{}")
    assert script.main([str(tmp_path / "run"), "--data", str(tmp_path)]) == 2
    assert "not a finished qu2020 run" in capsys.readouterr().err
