#!/usr/bin/env python
"""Benchmark methods on a folder dataset: methods x point ratios x shifts x seeds, one row each.

Every number the project publishes comes from this tool. On a dataset folder (``images/``,
``labels/``, ``split.json`` with ``train``, ``val`` and the test splits) it runs each method at
each ratio of annotated points, point shift and seed (the points of ``train`` only; ``val`` and
the test splits keep every point), under the budget its config states (``--opts`` overrides
it, e.g. iterations), with models selected on ``val`` only by the method's pipeline, and scores
each run with NucleiEvaluator on every test split. In ``--out`` it writes:

- ``results.jsonl``: one row per run (method, ratio, shift, seed, git commit, config hash,
  wall and CPU minutes, hardware, command, every metric on each test split);
- ``LEADERBOARD.md``: mean ± std over seeds per method, ratio and shift, beside the published
  numbers of docs/PROTOCOL.md where they exist;
- ``aji_vs_ratio.png``, ``aji_vs_shift.png``, ``aji_vs_cpu.png`` (first test split; a plot
  with fewer than 2 points is not drawn);
- ``runs/<method>_r<ratio>_s<shift>_seed<seed>/``: each run's own OUTPUT_DIR (``runs/<method>/``
  for a method that reads no annotation, such as ``classical``: it runs once);
- ``coco/``: the exported annotations; ``log.txt``;
- with ``--decompose``, ``decomposition.jsonl`` and a section of ``LEADERBOARD.md``: for each
  run of a UNet method (qu2020, liu2022, nam2023) on unshifted points, its final model scored
  on ``val`` beside its method's pseudo-labels (built from the same ratio of val's points)
  scored as the prediction; compare the rows of 10 % and 100 % points to see whether the
  points, the labels or the network lose the accuracy (``--eval-only`` of the run, seconds).

A run whose row (same key and config hash) is in ``results.jsonl`` is skipped; an interrupted
run continues in its folder (its wall and CPU minutes then count the rest only). A folder
holding a run of another config is refused unless ``--overwrite``. ``--quick`` is a smoke
test: a tiny synthetic dataset made in ``<out>/quick_data``, each method's quick config,
ratio 0.5, shift 0, seed 0, split ``test``.

Methods and their default (CPU-budget) configs: ``METHODS`` in
:mod:`nucleiweak_d2.benchmarking.table`; ``--config METHOD=PATH`` replaces one. ``--opts`` takes
``KEY VALUE`` pairs for every method, or ``METHOD:KEY VALUE`` for one.

Examples::

    python tools/benchmark.py --methods classical qu2020 --out output/bench_mo
    python tools/benchmark.py --methods qu2020 --ratios 0.05 0.1 0.25 --shifts 0 2-4 \\
        --seeds 0 1 2 --out output/bench_mo --opts qu2020:NUCLEIWEAK.QU2020.SEG.MAX_ITER 150
    python tools/benchmark.py --methods qu2020 --ratios 0.1 1 --seeds 0 --decompose \\
        --out output/bench_mo
    python tools/benchmark.py --quick --methods classical qu2020 --out /tmp/bench_smoke

Bad input prints one ``error:`` line and exits with code 2 (``--debug``: traceback).
"""

import argparse
import shlex
import sys
from pathlib import Path

from nucleiweak_d2.cli import add_debug_flag, run_cli

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEST_SPLITS = ("test", "testA", "testB")


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data" / "monuseg_mo"),
        help="folder dataset (images/, labels/, split.json); default MoNuSeg/MO",
    )
    p.add_argument("--out", required=True, help="output folder (results, leaderboard, runs)")
    p.add_argument(
        "--methods", nargs="+", required=True, help="methods to run, e.g. classical qu2020"
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="METHOD=PATH",
        help="config file of a method instead of its default (repeatable)",
    )
    p.add_argument(
        "--ratios", nargs="+", type=float, help="fractions of train points (default 0.1)"
    )
    p.add_argument(
        "--shifts", nargs="+", help="point shift ranges in px: 0, 2-4, 4-6, 6-8 (default 0)"
    )
    p.add_argument(
        "--seeds", nargs="+", type=int, help="seeds of points and training (default 0 1 2)"
    )
    p.add_argument(
        "--test-splits",
        nargs="+",
        help="splits scored (default: those of test, testA, testB in split.json)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is far faster on a shared, oversubscribed CPU)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run on a tiny synthetic dataset")
    p.add_argument(
        "--decompose",
        action="store_true",
        help="also score each UNet run's model and its labels as the prediction on val",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace run folders that hold a run of another config",
    )
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="KEY VALUE ... config overrides (METHOD:KEY for one method); last option",
    )
    return add_debug_flag(p)


def _configs(methods, given, quick):
    from nucleiweak_d2.benchmarking import METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(sorted(METHODS))}")
    configs = {
        m: str(REPO / (METHODS[m].quick_config if quick else METHODS[m].config)) for m in methods
    }
    for item in given:
        method, sep, path = item.partition("=")
        if not sep or method not in configs:
            raise ValueError(
                f"--config {item!r}: expected METHOD=PATH with METHOD one of --methods "
                f"({', '.join(methods)})"
            )
        configs[method] = path
    return configs


def _quick_data(out):
    from nucleiweak_d2.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        out / "quick_data", n_images=4, size=(128, 128), seed=0, overwrite=True
    )


def _decompose(bench, todo, rows):
    """``--decompose``: a ``decomposition.jsonl`` row for each finished UNet run lacking one."""
    from nucleiweak_d2.benchmarking import DECOMPOSITION

    for spec, cfg, run_hash in todo:
        if not bench.decomposable(spec):
            continue
        head = f"decompose {spec.name}"
        if bench.done(spec, run_hash, rows) is not None:
            print(f"{head}: done earlier ({DECOMPOSITION}), skipped", flush=True)
            continue
        if not (Path(cfg.OUTPUT_DIR) / "model_final.pth").is_file():
            print(f"{head}: no model_final.pth in {cfg.OUTPUT_DIR} (removed?), skipped", flush=True)
            continue
        row = bench.decompose(spec, cfg, run_hash)
        print(
            f"{head}: val AJI {row['metrics']['val'].get('AJI', float('nan')):.4f} trained, "
            f"{row['labels']['val']['AJI']:.4f} labels as the prediction",
            flush=True,
        )


def main(argv=None):
    args = build_parser().parse_args(argv)
    from nucleiweak_d2.benchmarking import DECOMPOSITION, Benchmark, read_results, write_report
    from nucleiweak_d2.data.folder import list_splits
    from nucleiweak_d2.engine import entry_setup

    out = Path(args.out).resolve()
    configs = _configs(list(dict.fromkeys(args.methods)), args.config, args.quick)
    if args.quick:
        data = _quick_data(out)
        ratios, shifts, seeds = args.ratios or [0.5], args.shifts or ["0"], args.seeds or [0]
    else:
        data = Path(args.data)
        ratios, shifts, seeds = args.ratios or [0.1], args.shifts or ["0"], args.seeds or [0, 1, 2]
        if not data.is_dir():
            raise FileNotFoundError(f"--data {data} is not a folder")
    bad = [r for r in ratios if not 0 < r <= 1]
    if bad:
        raise ValueError(f"--ratios must be in (0, 1], got {bad}")
    splits = (
        args.test_splits or [s for s in DEFAULT_TEST_SPLITS if s in list_splits(data)] or ["test"]
    )
    bench = Benchmark(data, out, configs, splits, args.opts, overwrite=args.overwrite)
    specs = bench.plan(ratios, shifts, seeds)
    for method in bench.skipped_shifts:
        print(
            f"{method}: trains on masks, not points; its shifted runs would repeat the 0 px run "
            "and are skipped",
            flush=True,
        )
    rows = read_results(out / "results.jsonl")
    todo = []
    for spec in specs:  # every check before the first run
        cfg, run_hash = bench.run_cfg(spec)
        if bench.done(spec, run_hash, rows) is None:
            bench.check_folder(spec, run_hash)
        todo.append((spec, cfg, run_hash))
    entry_setup(out, threads=args.threads)
    given = argv if argv is not None else sys.argv[1:]
    command = "python tools/benchmark.py " + " ".join(shlex.quote(a) for a in given)
    for i, (spec, cfg, run_hash) in enumerate(todo, start=1):
        head = f"[{i}/{len(todo)}] {spec.name}"
        row = bench.done(spec, run_hash, rows)
        if row is not None:
            print(f"{head}: done earlier (results.jsonl, config {run_hash}), skipped", flush=True)
            continue
        print(f"{head}: running in {cfg.OUTPUT_DIR}", flush=True)
        row = bench.run(spec, cfg, run_hash, command)
        aji = row["metrics"].get(splits[0], {}).get("AJI")
        score = f"AJI {aji:.4f} ({splits[0]})" if aji is not None else f"no AJI on {splits[0]}"
        print(
            f"{head}: {score}, wall {row['wall_min']:.1f} min, CPU {row['cpu_min']:.1f} min",
            flush=True,
        )
    if args.decompose:
        _decompose(bench, todo, read_results(out / DECOMPOSITION))
    for path in write_report(out, data, splits):
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
