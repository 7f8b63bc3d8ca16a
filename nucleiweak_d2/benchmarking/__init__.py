"""Benchmarks: methods x point ratios x shifts x seeds on one folder dataset, a row each.

The library behind ``tools/benchmark.py`` (its docstring has the command line):

- :mod:`.table`: the per-method table :data:`METHODS` (adding a method is one entry), the
  published numbers of docs/PROTOCOL.md, :class:`RunSpec`;
- :mod:`.runs`: :class:`Benchmark` exports the data, builds each run's config, runs it
  (resuming its folder) and appends its row to ``results.jsonl``;
- :mod:`.report`: ``LEADERBOARD.md`` (mean +- std over seeds, beside published numbers) and
  the plots;
- :mod:`.label_bound`: a UNet method's pseudo-labels scored as the prediction (``--decompose``).

It sits above the layers (it imports the methods named in :data:`METHODS`).
"""

from .report import COLUMNS, leaderboard, plot_points, write_plots, write_report
from .runs import REPO, Benchmark, cpu_seconds, git_commit, hardware, read_results
from .table import (
    DECOMPOSITION,
    LEADERBOARD,
    MARKER,
    METHODS,
    PUBLISHED,
    RESULTS,
    BenchMethod,
    RunSpec,
    shift_label,
)

__all__ = [
    "BenchMethod",
    "Benchmark",
    "COLUMNS",
    "DECOMPOSITION",
    "LEADERBOARD",
    "MARKER",
    "METHODS",
    "PUBLISHED",
    "REPO",
    "RESULTS",
    "RunSpec",
    "cpu_seconds",
    "git_commit",
    "hardware",
    "leaderboard",
    "plot_points",
    "read_results",
    "shift_label",
    "write_plots",
    "write_report",
]
