"""Run ``tools/predict.py`` in this process and print its time and memory as one JSON line.

Usage::

    python benchmarks/predict_probe.py tools/predict.py --config-file C --input I ...

The last stdout line is ``RESULT {json}`` with ``seconds_total`` (start-up included),
``seconds_predict`` (from the first tile on), ``rss_start_mib`` (RSS when prediction starts:
imports done, model built), ``peak_rss_mib`` (this process's own peak, ``VmHWM``),
``ru_maxrss_mib`` (``getrusage``; on Linux it also holds the peak of the process that started
this one, kept across exec, so it is printed for reference only) and ``images``.

A config may name ``MODEL.META_ARCHITECTURE: NucleiWeakThresholdStandIn``, registered here: a
stand-in model whose instances are the 8-connected components of red < 180 (the synthetic
nuclei of ``benchmarks/bench_predict.py`` and ``tests/test_predict_memory.py``), so that what is
measured is the prediction pipeline's own cost (reading, stitching, measurements, writing).
Used by both of those files (the only copy of the stand-in).
"""

import importlib.util
import json
import resource
import sys
import time

import numpy as np
import torch
from detectron2.modeling import META_ARCH_REGISTRY
from scipy import ndimage

RED_THRESHOLD = 180


@META_ARCH_REGISTRY.register()
class NucleiWeakThresholdStandIn(torch.nn.Module):
    """Stand-in model: 8-connected components of red < 180, and ``1 - red / 255`` as ``prob``."""

    def __init__(self, cfg):
        super().__init__()
        self.t = torch.nn.Parameter(torch.tensor(float(RED_THRESHOLD)))

    @property
    def device(self):
        return self.t.device

    def forward(self, inputs):
        out = []
        for x in inputs:
            red = x["image"][0].numpy()
            label = ndimage.label(red < RED_THRESHOLD, structure=np.ones((3, 3)))[0]
            out.append(
                {
                    "instance_map": torch.from_numpy(label.astype("int32")),
                    "prob": torch.from_numpy(1 - red.astype("float32") / 255),
                }
            )
        return out


def rss_mib(key="VmRSS"):
    """``key`` (``VmRSS`` or ``VmHWM``) of this process from ``/proc/self/status``, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status (Linux only)")


def _import_run_modules():
    """Import (and compile, on a first run) every module of a run before the start mark, so
    that the memory growth measured is data, not code."""
    import PIL.PngImagePlugin  # noqa: F401
    import skimage.color  # noqa: F401
    import skimage.measure  # noqa: F401
    import tifffile  # noqa: F401
    import tqdm  # noqa: F401

    import nucleiweak_d2.data.label_store  # noqa: F401
    import nucleiweak_d2.data.nuclei_exports  # noqa: F401
    import nucleiweak_d2.data.slides  # noqa: F401
    import nucleiweak_d2.engine.predictor  # noqa: F401


def main(argv):
    if not argv:
        raise SystemExit("usage: predict_probe.py PATH/TO/tools/predict.py [predict options]")
    _import_run_modules()
    spec = importlib.util.spec_from_file_location("predict_tool", argv[0])
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    marks = {}
    real = tool.run_shard

    def run_shard(args, todo, *a, predictor=None, **k):
        marks["rss_start"] = rss_mib()  # imports done, model built
        marks["t_start"] = time.perf_counter()
        return real(args, todo, *a, predictor=predictor, **k)

    tool.run_shard = run_shard
    t0 = time.perf_counter()
    run = tool.main(argv[1:])
    t1 = time.perf_counter()
    result = {
        "seconds_total": t1 - t0,
        "seconds_predict": t1 - marks["t_start"],
        "rss_start_mib": marks["rss_start"],
        "peak_rss_mib": rss_mib("VmHWM"),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "images": len(run),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
