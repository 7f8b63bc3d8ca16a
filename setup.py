"""Install nucleiweak_d2 (``pip install -e .``). torch and detectron2 are installed beforehand
(``./run setup`` does both); they are not listed here so that pip never replaces a user's build."""

from setuptools import find_packages, setup

setup(
    name="nucleiweak_d2",
    version="0.1.0",
    description="Point-supervised nuclei instance segmentation for Detectron2",
    packages=find_packages(exclude=("configs", "tests", "tools", "benchmarks", "datasets", "scripts")),
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
    extras_require={"crf": ["pydensecrf2"], "test": ["pytest"]},
)
