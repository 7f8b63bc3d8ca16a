"""Shared pytest setup: the ``gpu`` marker and small synthetic data.

The default command (``./run test``) runs ``pytest -m "not gpu"``; tests marked ``gpu`` also skip
themselves when CUDA is absent.
"""

import importlib.util
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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (several-fold faster on a shared CPU, no OpenMP
    spin-waiting; the same arithmetic as one-thread worker processes); restored after. A module
    opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_script(name, path):
    """Import a script that is not in a package (``tools/*.py``, ``benchmarks/*.py``,
    ``scripts/*.py``) as the module ``name``, so tests can call its functions."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tiny_coco(
    tmp_dir,
    prefix=None,
    *,
    n_images=4,
    size=(128, 128),
    seed=0,
    split_fractions=None,
    ratio=0.5,
    shift=None,
    weak_splits=("train",),
):
    """A tiny synthetic dataset in ``<tmp_dir>/data``, its COCO splits in ``<tmp_dir>/coco`` and,
    with ``prefix``, the splits registered as ``<prefix>_{train,val,test}``.

    ``seed`` drives both the images and the point sampling; ``split_fractions``, ``shift`` and
    ``weak_splits`` left ``None`` take the defaults of ``make_synthetic_dataset`` /
    ``export_coco_splits``. Returns ``(root, files, names)``: the synthetic folder, the written
    COCO files by split, and the registered dataset names (``[]`` without ``prefix``).
    """
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.datasets import register_nuclei_splits
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    tmp_dir = Path(tmp_dir)
    data_kw = {} if split_fractions is None else {"split_fractions": split_fractions}
    root = make_synthetic_dataset(
        tmp_dir / "data", n_images=n_images, size=size, seed=seed, **data_kw
    )
    coco_kw = {} if shift is None else {"shift": shift}
    if weak_splits is not None:
        coco_kw["weak_splits"] = list(weak_splits)
    files = export_coco_splits(root, tmp_dir / "coco", ratio=ratio, seed=seed, **coco_kw)
    if prefix is None:
        return root, files, []
    names = register_nuclei_splits(prefix, tmp_dir / "coco", root)
    assert {f"{prefix}_train", f"{prefix}_val", f"{prefix}_test"} <= set(names)
    return root, files, names


def register_partial_mask_train(root, tmp_dir, name, ratio=0.25):
    """Register the train split of the folder dataset ``root`` with masks on ``ratio`` of the
    nuclei (``annotation="partial_mask"``, seed 0; COCO in ``<tmp_dir>/coco``) as ``name``;
    return the COCO file."""
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.datasets import register_nuclei_dataset

    files = export_coco_splits(
        root,
        Path(tmp_dir) / "coco",
        ratio=ratio,
        seed=0,
        annotation="partial_mask",
        splits=["train"],
    )
    register_nuclei_dataset(name, files["train"], root)
    return files["train"]


# Config overrides of a tiny CPU ResNet-18 UNet (8-channel stem, narrow decoder) for model tests.
TINY_UNET_OPTS = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "8",
    "NUCLEIWEAK.UNET.DECODER_CHANNELS",
    "[16,16,8,8,8]",
]
