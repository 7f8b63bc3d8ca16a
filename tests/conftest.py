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


@pytest.fixture(scope="session")
def shared_monuseg():
    """Path of the converted MoNuSeg folder; the test skips when it is absent."""
    root = Path(os.environ.get("NUCLEIWEAK_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg_mo"))
    if not (root / "split.json").is_file():
        pytest.skip(f"MoNuSeg data not found at {root}")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic H&E dataset in the folder layout (6 images, 128x128, seed 0)."""
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    return Path(make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_images=6, size=(128, 128), seed=0))
