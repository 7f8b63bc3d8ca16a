"""Milliseconds per training sample of the UNet methods' training mappers (the data loading).

With ``NUM_WORKERS: 1`` a CPU run loads one sample after another in one worker process while
the trainer steps; when a batch takes the worker longer than a step takes the trainer, the
trainer waits (Detectron2's ``data_time``). This times the training mappers of the CPU
configs (Qu et al.'s segmentation and detection mappers, Liu et al.'s SPN mapper, all with the
CPU recipe's stain normalisation, jitter, warps and crops at points) on the training images
of a folder dataset, one thread, after a first pass over every image (so the decoded images
and pseudo-labels are cached, as in training), and prints the functions that take the most
time.

    python benchmarks/bench_mapper.py --data ../shared/data/monuseg_mo --samples 40
    python benchmarks/bench_mapper.py              # synthetic 512x512 tiles written to a temp folder

Compare commits by running it from each checkout side by side (``PYTHONPATH=<checkout>``).
"""

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MAPPERS = {
    "qu2020 seg": ("configs/qu2020/R18_monuseg_p10_cpu.yaml", "NucleiWeakQu2020SegMapper"),
    "qu2020 det": ("configs/qu2020/R18_monuseg_p10_cpu.yaml", "NucleiWeakQu2020DetMapper"),
    "liu2022 spn": ("configs/liu2022/R18_monuseg_cpu.yaml", "NucleiWeakLiu2022SPNMapper"),
}


def registered_train_set(data, tmp):
    """Name of the registered training split of folder dataset ``data`` (every point)."""
    from nucleiweak_d2.data.coco import export_coco_splits
    from nucleiweak_d2.data.datasets import register_nuclei_dataset

    files = export_coco_splits(data, Path(tmp) / "coco", ratio=1.0, splits=["train"])
    register_nuclei_dataset("bench_mapper_train", files["train"], data)
    return "bench_mapper_train"


def time_mapper(label, config, mapper_name, dataset, samples, top):
    from detectron2.data import DatasetCatalog

    import nucleiweak_d2.methods.liu2022  # noqa: F401  (registration)
    import nucleiweak_d2.methods.qu2020  # noqa: F401
    from nucleiweak_d2.config import setup_cfg
    from nucleiweak_d2.data.mapper import NUCLEIWEAK_MAPPER_REGISTRY
    from nucleiweak_d2.engine.stain import fit_stain_target

    cfg = setup_cfg(
        str(REPO / config), ["DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()"]
    )
    cfg = fit_stain_target(cfg)
    mapper = NUCLEIWEAK_MAPPER_REGISTRY.get(mapper_name)(cfg, True)
    records = DatasetCatalog.get(dataset)
    for record in records:  # first pass: decoded images and pseudo-labels cached
        mapper(record)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for i in range(samples):
        mapper(records[i % len(records)])
    profile.disable()
    ms = (time.perf_counter() - start) / samples * 1000
    print(f"\n## {label} ({mapper_name}): {ms:.1f} ms per sample ({samples} samples)\n")
    pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(top)
    return ms


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="folder dataset (default: synthetic tiles in a temp folder)")
    p.add_argument("--samples", type=int, default=40, help="timed samples per mapper")
    p.add_argument("--mappers", nargs="+", default=list(MAPPERS), choices=list(MAPPERS))
    p.add_argument("--top", type=int, default=8, help="functions listed per mapper")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from nucleiweak_d2.data.synthetic import make_synthetic_dataset

            data = Path(tmp) / "synthetic"
            make_synthetic_dataset(data, n_images=6, size=(512, 512))
        dataset = registered_train_set(data, tmp)
        results = {
            label: time_mapper(label, *MAPPERS[label], dataset, args.samples, args.top)
            for label in args.mappers
        }
    print("\n| mapper | ms per sample |\n|---|---|")
    for label, ms in results.items():
        print(f"| {label} | {ms:.1f} |")


if __name__ == "__main__":
    main()
