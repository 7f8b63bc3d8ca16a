"""Shared pytest setup: the ``gpu`` marker and small synthetic data.

The default command (``./run test``) runs ``pytest -m "not gpu"``; tests marked ``gpu`` also skip
themselves when CUDA is absent.
"""

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (deselected by ./run test)")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


REPO = Path(__file__).resolve().parents[1]


def monuseg_root():
    """The converted MoNuSeg folder: ``$NUCLEIWEAK_DATA``, else ``../shared/data/monuseg_mo``
    next to the repository root (wherever the checkout lies)."""
    default = REPO.parent / "shared" / "data" / "monuseg_mo"
    return Path(os.environ.get("NUCLEIWEAK_DATA") or default)


@pytest.fixture(scope="session")
def shared_monuseg():
    """Path of the converted MoNuSeg folder (:func:`monuseg_root`); the test skips when it is
    absent. Every test on the real data takes this fixture."""
    root = monuseg_root()
    if not (root / "split.json").is_file() or not (root / "images").is_dir():
        pytest.skip(f"MoNuSeg data not found at {root} (set NUCLEIWEAK_DATA)")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic H&E dataset in the folder layout (6 images, 128x128, seed 0)."""
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    return Path(
        make_synthetic_dataset(
            tmp_path_factory.mktemp("synthetic"), n_images=6, size=(128, 128), seed=0
        )
    )
