"""Install nucleiweak_d2 (``pip install -e .``). torch and detectron2 are installed beforehand
(``./run setup`` does both); they are not listed here so that pip never replaces a user's build.

Console scripts: ``nucleiweak-predict``, ``nucleiweak-train``, ``nucleiweak-evaluate`` and
``nucleiweak-benchmark`` run ``tools/predict.py``, ``train_net.py``, ``evaluate.py`` and
``benchmark.py`` (entry functions in :mod:`nucleiweak_d2.api`). The scripts of ``tools/`` are
installed with the package as ``nucleiweak_d2/_tools`` so that a regular (non-editable)
install finds them wherever it runs; an editable install uses the checkout's ``tools/``.
"""

from setuptools import find_packages, setup

setup(
    name="nucleiweak_d2",
    version="0.1.0",
    description="Point-supervised nuclei instance segmentation for Detectron2",
    packages=find_packages(
        exclude=("configs", "tests", "tools", "benchmarks", "datasets", "scripts")
    )
    + ["nucleiweak_d2._tools"],
    package_dir={"nucleiweak_d2._tools": "tools"},
    python_requires=">=3.9",
    install_requires=[
        "numpy<2",
        "scipy",
        "scikit-image",
        "scikit-learn",
        "pycocotools",
        "pillow",
        "tifffile",
        "tqdm",
    ],
    extras_require={
        "crf": ["pydensecrf2"],
        "slides": ["openslide-python", "openslide-bin", "imagecodecs"],
        "test": ["pytest", "shapely"],
    },
    entry_points={
        "console_scripts": [
            "nucleiweak-predict=nucleiweak_d2.api:predict_cli",
            "nucleiweak-train=nucleiweak_d2.api:train_cli",
            "nucleiweak-evaluate=nucleiweak_d2.api:evaluate_cli",
            "nucleiweak-benchmark=nucleiweak_d2.api:benchmark_cli",
        ]
    },
)
