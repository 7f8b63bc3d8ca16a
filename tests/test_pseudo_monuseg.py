"""Pseudo-labels on one real MoNuSeg training image (skipped when the data is absent)."""

import json

import pytest

from nucleiweak_d2.data.io import read_image, read_label
from nucleiweak_d2.data.points import points_from_labels
from nucleiweak_d2.pseudo_labels import (
    BACKGROUND,
    NUCLEUS,
    cluster_label,
    geodesic_labels,
    voronoi_label,
)


@pytest.fixture(scope="module")
def sample(shared_monuseg):
    name = json.loads((shared_monuseg / "split.json").read_text())["train"][0]
    image = read_image(shared_monuseg / "images" / f"{name}.png")
    inst = read_label(shared_monuseg / "labels" / f"{name}.png")
    return image, inst > 0, points_from_labels(inst)[1]


def _precisions(lab, gt):
    return gt[lab == NUCLEUS].mean(), (~gt[lab == BACKGROUND]).mean()


def test_real_image_label_precision(sample):
    image, gt, pts = sample
    assert len(pts) > 100
    nuc, bg = _precisions(voronoi_label(pts, gt.shape), gt)
    assert nuc > 0.98 and bg > 0.85
    nuc, bg = _precisions(cluster_label(image, pts), gt)
    assert nuc > 0.75 and bg > 0.85
    g_vor, g_clu = geodesic_labels(image, pts)
    nuc, bg = _precisions(g_clu, gt)
    assert nuc > 0.75 and bg > 0.85
    assert _precisions(g_vor, gt)[0] > 0.98
