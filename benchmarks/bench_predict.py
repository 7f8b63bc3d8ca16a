"""Speed and memory of prediction: one UNet tile, and a large region end to end.

Prints (with the hardware it ran on):

1. **UNet tile**: the forward pass of a UNet method (default ``configs/qu2020/R34_monuseg_p10.yaml``,
   Qu et al.'s ResNet-34 UNet; random weights unless ``--weights``) on one ``--tile-size``
   (1000) px synthetic H&E tile, median of ``--repeats``, and the conversion of its output
   into an instance map.
2. **End to end**: a ``--size`` x ``--size`` (10 000) synthetic H&E region written as a tiled
   TIFF, predicted by ``tools/predict.py`` in a fresh process (read tile by tile -> model ->
   stitch -> QuPath GeoJSON + label TIFF): wall time, peak RSS of that process (``VmHWM``;
   ``resource.getrusage``'s ``ru_maxrss`` is printed too, but on Linux it also holds the peak
   of the process that started it, kept across exec), RSS before the first tile, nuclei,
   nuclei/s and Mpx/s. ``--e2e-model threshold`` (default)
   uses a thresholding stand-in for the model, so that the figure is the pipeline's own cost
   (reading, stitching, measurements, outlines, writing); ``--e2e-model unet`` runs the UNet
   of part 1 (random weights give meaningless nuclei: use ``--weights``).

Measured (AMD EPYC, 2 logical cores shared with other jobs, load average 3-5, 1 torch
thread, no GPU; ``OMP_NUM_THREADS=1``):

- UNet tile (Qu et al. R34 UNet, random weights, CPU): 1000 x 1000 px, forward 14.7-18.4 s
  (the model's own output -> instance map included; the evaluator's conversion adds 1 ms).
- UNet tile, quiet machine (load 1.5), 1 thread, commit 948c390: Qu et al.'s CPU model
  (``configs/qu2020/R18_monuseg_p10_cpu.yaml``, trained weights of the leaderboard's seed 0),
  1000 x 1000 synthetic tile through the whole predictor (Reinhard normalisation, network,
  threshold, watershed split): float32 2218 ms, ``FAST_CPU_INFERENCE`` (bf16, channels_last,
  batch norm folded) 896 ms. On real MoNuSeg images (fewer nuclei to split) the same model takes
  0.72 s (0.94 s before batch-norm folding, the float32 CIELAB and the lookup-table relabelling).
  Random weights, fast / float32: Liu et al.'s CPU config 552 / 1865 ms; PROnet's 1333 / 4177 ms.
- End to end, threshold stand-in, tile 1024, overlap 64, outputs ``labels,geojson``:
  10 000 x 10 000 px in 42.7 s (58.5 s in a busier run): 48 005 nuclei, 1124 nuclei/s,
  2.34 Mpx/s; peak RSS 1025 MiB, 99 MiB above start-up (the region is 286 MiB of RGB, its
  int32 label map 381 MiB). 3000 x 3000 px: 4 344 nuclei in 4.9 s, 83 MiB above start-up.
- End to end with the UNet (random weights): 1984 x 1984 px, 4 tiles of 1024 px, 51.5 s
  (13 s per tile), peak RSS 1196 MiB, 172 MiB above start-up (the UNet's activations).

Examples::

    .venv/bin/python benchmarks/bench_predict.py                       # 1000 px tile + 10k region
    .venv/bin/python benchmarks/bench_predict.py --size 3000 --skip-unet
    .venv/bin/python benchmarks/bench_predict.py --device cuda --batch 8 --e2e-model unet \\
        --weights output/qu/model_final.pth
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
UNET_CONFIG = "configs/qu2020/R34_monuseg_p10.yaml"

PROBE = REPO / "benchmarks" / "predict_probe.py"  # runs tools/predict.py, prints RESULT


def hardware():
    """One line: CPU model, cores, torch threads, GPU, load."""
    import torch

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}; {os.cpu_count()} logical cores; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; {gpu}; load average {load:.1f}; "
        f"Python {platform.python_version()}"
    )


def synthetic_tiles(n, size, seed=0):
    from nucleiweak_d2.data.synthetic import synthesize_image

    return [synthesize_image(size=(size, size), seed=seed + k)[0] for k in range(n)]


def bench_unet_tile(args):
    """Median forward time of one tile, and of its conversion to an instance map."""
    import torch

    from nucleiweak_d2.api import load_predictor

    torch.set_num_threads(max(1, args.threads))
    variants = {"float32": []}
    if args.compare_fast:  # the same weights with NUCLEIWEAK.UNET.FAST_CPU_INFERENCE, interleaved
        variants["float32"] = ["NUCLEIWEAK.UNET.FAST_CPU_INFERENCE", "False"]
        variants["bf16+channels_last"] = ["NUCLEIWEAK.UNET.FAST_CPU_INFERENCE", "True"]
    predictors = {
        name: load_predictor(
            REPO / args.config,
            args.weights,
            device=args.device,
            opts=list(args.opts) + extra,
            allow_random_weights=args.weights is None,
        )
        for name, extra in variants.items()
    }
    if args.compare_fast and args.weights is None:  # same random weights in both
        state = predictors["float32"].model.state_dict()
        predictors["bf16+channels_last"].model.load_state_dict(state)
    image = synthetic_tiles(1, args.tile_size)[0]
    times = {name: ([], []) for name in predictors}
    probs = {}
    for predictor in predictors.values():
        predictor.run_batch([image])  # warm-up
    for _ in range(args.repeats):
        for name, predictor in predictors.items():
            forward, convert = times[name]
            if args.device and args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            output = predictor.run_batch([image])[0]
            if args.device and args.device.startswith("cuda"):
                torch.cuda.synchronize()
            forward.append(time.perf_counter() - t)
            t = time.perf_counter()
            label, _ = predictor._convert(output)
            convert.append(time.perf_counter() - t)
            probs[name] = output["prob"].float()
    mpx = args.tile_size**2 / 1e6
    result = {}
    base = statistics.median(times["float32"][0])
    for name, (forward, convert) in times.items():
        f, c = statistics.median(forward), statistics.median(convert)
        print(
            f"UNet tile ({args.config}, "
            f"{'weights ' + args.weights if args.weights else 'random weights'}, device "
            f"{predictors[name].cfg.MODEL.DEVICE}, {name}): {args.tile_size}x{args.tile_size} "
            f"px: forward {f * 1e3:.0f} ms ({f / base:.2f} x float32), output -> instance map "
            f"{c * 1e3:.0f} ms (median of {args.repeats}); {mpx / (f + c):.2f} Mpx/s",
            flush=True,
        )
        result[name] = {"forward_s": f, "convert_s": c}
    if len(probs) > 1:
        diff = (probs["bf16+channels_last"] - probs["float32"]).abs()
        print(f"  foreground probability, bf16 vs float32: max |diff| {float(diff.max()):.2e}")
    return result["float32"] if len(result) == 1 else result


def write_region_tiff(path, size, tile=1000, block=256):
    """A ``size`` x ``size`` synthetic H&E TIFF (tiled, zlib) built from 4 synthetic tiles,
    written block by block (the region is never in memory)."""
    import tifffile

    sources = synthetic_tiles(4, tile, seed=100)

    def blocks():
        for y in range(0, size, block):
            for x in range(0, size, block):
                out = np.zeros((block, block, 3), np.uint8)
                # pixel (y, x) from source tile (y // tile + x // tile) % 4 at (y % tile, x % tile)
                ys = np.arange(y, min(y + block, size))
                xs = np.arange(x, min(x + block, size))
                which = ((ys[:, None] // tile) + (xs[None, :] // tile)) % 4
                for k in range(4):
                    m = which == k
                    if m.any():
                        part = sources[k][(ys % tile)[:, None], (xs % tile)[None, :]]
                        out[: len(ys), : len(xs)][m] = part[m]
                yield out

    tifffile.imwrite(
        path,
        blocks(),
        shape=(size, size, 3),
        dtype=np.uint8,
        tile=(block, block),
        photometric="rgb",
        compression="zlib",
    )


def bench_end_to_end(args, workdir):
    size = args.size
    tiff = workdir / f"region_{size}.tif"
    t = time.perf_counter()
    if not tiff.exists():
        write_region_tiff(tiff, size)
    print(
        f"synthetic {size}x{size} TIFF written in {time.perf_counter() - t:.1f} s "
        f"({tiff.stat().st_size / 2**20:.0f} MiB)",
        flush=True,
    )
    if args.e2e_model == "threshold":
        config = workdir / "threshold.yaml"
        config.write_text(
            "MODEL:\n  META_ARCHITECTURE: NucleiWeakThresholdStandIn\n"
            "  DEVICE: cpu\nINPUT:\n  FORMAT: RGB\n"
        )
        opts = ["--allow-random-weights"]
    else:
        config = REPO / args.config
        opts = (
            ["--opts", "MODEL.WEIGHTS", args.weights]
            if args.weights
            else ["--allow-random-weights"]
        )
    out = workdir / f"pred_{size}_{args.e2e_model}"
    command = [
        sys.executable,
        str(PROBE),
        str(REPO / "tools" / "predict.py"),
        "--config-file",
        str(config),
        "--input",
        str(tiff),
        "--output",
        str(out),
        "--overwrite",
        "--read",
        "tiles",
        "--tile",
        str(args.tile),
        "--tile-overlap",
        str(args.overlap),
        "--batch",
        str(args.batch),
        "--outputs",
        args.outputs,
    ]
    if args.device:
        command += ["--device", args.device]
    command += opts
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(REPO))
    if proc.returncode:
        print(proc.stderr[-4000:])
        raise SystemExit(f"end-to-end run failed ({proc.returncode})")
    stats = json.loads(
        next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    )
    summary = next((line for line in proc.stdout.splitlines() if " nuclei" in line), "")
    n_nuclei = int(summary.split(": ", 1)[1].split(" nuclei")[0]) if summary else -1
    secs = stats["seconds_predict"]
    print(
        f"end to end ({args.e2e_model} model, tile {args.tile}, overlap {args.overlap}, batch "
        f"{args.batch}, outputs {args.outputs}): {size}x{size} px in {secs:.1f} s "
        f"({stats['seconds_total']:.1f} s with start-up): {n_nuclei} nuclei, "
        f"{n_nuclei / secs:.0f} nuclei/s, {size * size / 1e6 / secs:.2f} Mpx/s; peak RSS "
        f"(VmHWM) {stats['peak_rss_mib']:.0f} MiB, "
        f"{stats['peak_rss_mib'] - stats['rss_start_mib']:.0f} MiB above the "
        f"{stats['rss_start_mib']:.0f} MiB after start-up (getrusage ru_maxrss "
        f"{stats['ru_maxrss_mib']:.0f} MiB); the region is {size * size * 3 / 2**20:.0f} MiB "
        f"of RGB, its int32 label map {size * size * 4 / 2**20:.0f} MiB",
        flush=True,
    )
    for f in sorted(out.iterdir()):
        print(f"  {f.name}: {f.stat().st_size / 2**20:.1f} MiB")
    return stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=UNET_CONFIG, help="UNet config (repo-relative)")
    parser.add_argument("--weights", default=None, help="checkpoint (default: random weights)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the config's)")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", 1)),
        help="CPU threads of torch and of the end-to-end process",
    )
    parser.add_argument("--tile-size", type=int, default=1000, help="side of the UNet tile")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=10000, help="side of the end-to-end region")
    parser.add_argument("--tile", type=int, default=1024, help="tile side of the end-to-end run")
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--outputs", default="labels,geojson")
    parser.add_argument("--e2e-model", choices=("threshold", "unet"), default="threshold")
    parser.add_argument(
        "--workdir",
        default=None,
        help="where the TIFF and outputs go (default: a temporary folder, removed)",
    )
    parser.add_argument(
        "--compare-fast",
        action="store_true",
        help="also time NUCLEIWEAK.UNET.FAST_CPU_INFERENCE (bf16 + channels_last), interleaved",
    )
    parser.add_argument("--opts", nargs="*", default=[], help="config overrides KEY VALUE ...")
    parser.add_argument("--skip-unet", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args(argv)
    print(f"hardware: {hardware()}", flush=True)
    if not args.skip_unet:
        bench_unet_tile(args)
    if not args.skip_e2e:
        if args.workdir:
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            bench_end_to_end(args, Path(args.workdir))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                bench_end_to_end(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
