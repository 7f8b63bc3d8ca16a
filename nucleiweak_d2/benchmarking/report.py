"""``LEADERBOARD.md`` and plots from the rows of ``results.jsonl``."""

import json
import textwrap
from pathlib import Path

from .runs import read_results
from .table import DECOMPOSITION, LEADERBOARD, METHODS, PUBLISHED, RESULTS

__all__ = [
    "COLUMNS",
    "STUDY_TABLES",
    "detector_table",
    "leaderboard",
    "plot_points",
    "summary_table",
    "write_plots",
    "write_report",
]

#: Columns of the leaderboard (NucleiEvaluator's names), in this order.
COLUMNS = ("AJI", "Dice_obj", "pixel_F1", "PQ", "det_F1")

#: Tables of their own for the models of one study, on the first test split: ``(title,
#: method prefix, columns, caption)``; every group whose method starts with the prefix is a row,
#: with the metrics the study is judged on, followed by the published entries of the prefix's
#: methods on the same dataset (issue 17: Feng et al.'s module and the paper's baselines;
#: issue 15: DoNuSeg with the five metrics of Wang et al.'s Table 1).
STUDY_TABLES = (
    (
        "Feng et al. 2019: partial-annotation module and the paper's baselines",
        "feng2019",
        ("AJI", "obj_F1", "segm/AP", "mAP_kaggle", "det_F1"),
        "obj_F1: objects matched at IoU > 0.5; segm/AP: COCO mask AP (0-100); "
        "mAP_kaggle: the 2018 Data Science Bowl mean AP over IoU 0.5-0.95.",
    ),
    (
        "Wang et al. 2024 (DoNuSeg): the metrics of the paper's Table 1",
        "wang2024",
        ("pixel_F1", "Dice_obj", "AJI", "DQ", "SQ", "PQ"),
        "The paper's DICE is not defined there (pixel or object level); its value sits under "
        "Dice_obj. DQ, SQ, PQ: panoptic quality at IoU > 0.5 (Kirillov et al.).",
    ),
)

#: Ablations a run scores on the side (key of its ``extra``: ``{split: metrics}``); each gets
#: rows of its own, labelled ``<method>/<key>`` (e.g. Liu et al.'s SPN alone).
ABLATIONS = ("spn_alone",)


def _groups(rows, data):
    """``{(label, ratio, shift): [latest row per seed]}`` of the rows of dataset folder ``data``.

    The label is the method, followed by its run name (:func:`_run_name`: the config file's name
    and the run's ``--opts``) when the rows hold runs of the method under several names (e.g. two
    CPU budgets, or one config with and without an override): each keeps its own rows. A later
    row replaces an earlier one of the same run and name (wherever the config file was).
    A row holding an ablation of :data:`ABLATIONS` also counts as a row of ``<method>/<name>``.
    Shifted rows of a method trained on masks (``point_shifts`` False in
    :data:`~.table.METHODS`) are left out: they repeat its 0 px rows.
    """
    latest = {}
    for row in rows:
        method = METHODS.get(row.get("method"))
        if method is not None and not method.point_shifts and row.get("shift") not in ("0", None):
            continue
        if row.get("data") == str(data):
            latest[json.dumps([row["key"], _run_name(row)])] = row
    for key, row in list(latest.items()):
        for name in ABLATIONS:
            if isinstance(row.get("extra", {}).get(name), dict):
                latest[key + name] = {
                    **row,
                    "method": f"{row['method']}/{name}",
                    "metrics": row["extra"][name],
                }
    configs = {}
    for row in latest.values():
        configs.setdefault(row["method"], set()).add(_run_name(row))
    groups = {}
    for row in latest.values():
        label = row["method"]
        if len(configs[label]) > 1:
            label += f" ({_run_name(row)})"
        groups.setdefault((label, row["ratio"], row["shift"]), []).append(row)
    return dict(
        sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, _shift_lo(kv[0][2])))
    )


def _config_name(row):
    """The name of a row's config file without folder and extension ("" when unknown)."""
    return Path(str(row.get("config_file") or "")).stem


def _run_name(row):
    """The config file's name, then the run's ``--opts`` as ``KEY=VALUE`` (rows without any, or
    written before the benchmark recorded them, have the config name alone)."""
    opts = list(row.get("opts") or [])
    pairs = [f"{k}={v}" for k, v in zip(opts[::2], opts[1::2])]
    return " ".join([_config_name(row), *pairs]).strip()


def _shift_lo(shift):
    return float(str(shift or 0).split("-")[0])


def _stats(values):
    """``(mean, sample std or None)`` of the finite values, ``(None, None)`` when none."""
    import numpy as np

    v = np.array([x for x in values if isinstance(x, (int, float))], dtype=float)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def _metric(group, split, name):
    return _stats([r["metrics"].get(split, {}).get(name) for r in group])


def _cell(mean, std):
    if mean is None:
        return "n/a"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _ratio_cell(ratio):
    return "n/a" if ratio is None else f"{ratio:g}"


def _seeds_cell(group):
    return ",".join(str(r["seed"]) for r in group if r["seed"] is not None) or "n/a"


def _commits_cell(group):
    """The group's commits, 7 characters each (``*``: a dirty tree), once each, in row order.

    The summary shows them because a config file keeps its name when its content changes: rows
    of one label can come from different versions of the same default config."""
    seen = []
    for row in group:
        commit = str(row.get("commit") or "?")
        cell = commit.split("-")[0][:7] + ("*" if commit.endswith("-dirty") else "")
        if cell not in seen:
            seen.append(cell)
    return ",".join(seen)


def _minutes_cell(group, key):
    """Mean of ``key`` (``"wall_min"`` or ``"cpu_min"``) over the group's rows, 2 decimals."""
    return f"{_stats([r[key] for r in group])[0]:.2f}"


def _published(method, dataset, ratio, shift, config=""):
    """Published entries beside a group of rows of config file name ``config``: the paper's
    ablation of that config if one is listed, else the method's entries without a config."""
    same = [
        p
        for p in PUBLISHED
        if (p["method"], p["dataset"]) == (method, dataset)
        and p["ratio"] is not None
        and p["ratio"] == ratio
        and p["shift"] == shift
    ]
    ablations = {p["config"] for p in PUBLISHED if p.get("config")}
    want = config if config in ablations else None
    return [p for p in same if p.get("config") == want]


def summary_table(rows, data, split):
    """Markdown lines: each method's benchmark default config (:data:`~.table.METHODS`,
    without ``--opts``) on unshifted points, per ratio, its AJI on ``split`` beside the
    no-learning baseline's (``classical``); [] without such rows.

    Rows of another config (a budget, an ablation, an override) are left out: this is what a
    user running ``tools/benchmark.py`` with the defaults gets.
    """
    groups = {}
    for (_, ratio, shift), group in _groups(rows, data).items():  # the last row of a run wins
        spec = METHODS.get(group[0]["method"])  # None for an ablation's rows
        if spec and shift in ("0", None) and _run_name(group[0]) == Path(spec.config).stem:
            groups[(group[0]["method"], ratio)] = group
    if not groups:
        return []
    base = groups.get(("classical", None))
    base_aji = _metric(base, split, "AJI")[0] if base else None
    head = ["method", "default config", "ratio", "seeds", "AJI", "AJI - classical"]
    head += ["CPU min", "commits"]
    caption = (
        f"`{split}`, mean ± std over seeds, unshifted points: each method under the config "
        "`tools/benchmark.py` runs by default (benchmarking/table.py), beside the no-learning "
        "baseline (hematoxylin, Otsu, watershed). A config keeps its name when it changes: the "
        "commits column says which version each row ran."
    )
    lines = _section("Summary: default configs against the no-learning baseline", caption, head)
    for (method, ratio), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        mean, std = _metric(group, split, "AJI")
        margin = ""
        if method != "classical" and mean is not None and base_aji is not None:
            margin = f"{mean - base_aji:+.4f}"
        config = Path(METHODS[method].config).stem
        lines.append(
            f"| {method} | {config} | {_ratio_cell(ratio)} | {_seeds_cell(group)} | "
            f"{_cell(mean, std)} | {margin} | {_minutes_cell(group, 'cpu_min')} | "
            f"{_commits_cell(group)} |"
        )
    return lines + [""]


def leaderboard(rows, data, test_splits, decomposition=()):
    """Markdown of the runs on ``data``: a table per test split, published numbers, provenance;
    with ``decomposition`` rows (``decomposition.jsonl``), :func:`decomposition_table`."""
    data = Path(data).resolve()
    groups = _groups(rows, data)
    head = [
        "method",
        "ratio",
        "shift",
        "seeds",
        *COLUMNS,
        "wall min",
        "CPU min",
        "published AJI / Dice_obj / pixel_F1",
    ]
    lines = [
        f"# Leaderboard: {data.name}",
        "",
        f"Data `{data}`. Mean ± sample std over seeds (std omitted for one seed); every metric "
        "from NucleiEvaluator (docs/PROTOCOL.md); models selected on `val` only. Ratio, shift "
        "and seed are n/a for methods that read no annotation. Feng et al.'s models train on "
        "masks and read no point: a point shift leaves their training unchanged, so their 0 px "
        "rows stand for every shift.",
        "",
    ]
    lines += summary_table(rows, data, test_splits[0])
    for split in test_splits:
        lines += [f"## {split}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for (method, ratio, shift), group in groups.items():
            pub = "; ".join(
                " / ".join(
                    f"{p[m]:.4f}" if m in p else "n/a" for m in ("AJI", "Dice_obj", "pixel_F1")
                )
                + f" ({p['source']})"
                for p in _published(
                    group[0]["method"], data.name, ratio, shift, _config_name(group[0])
                )
            )
            cells = [
                method,
                _ratio_cell(ratio),
                shift or "n/a",
                _seeds_cell(group),
                *[_cell(*_metric(group, split, m)) for m in COLUMNS],
                _minutes_cell(group, "wall_min"),
                _minutes_cell(group, "cpu_min"),
                pub,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += _study_tables(groups, test_splits[0], data.name)
    lines += detector_table(groups, test_splits, data.name)
    lines += decomposition_table(decomposition, data)
    published = [p for p in PUBLISHED if p["dataset"] == data.name]
    if published:
        lines += [
            "## Published numbers (docs/PROTOCOL.md)",
            "",
            "| method | ratio | shift | source | " + " | ".join(COLUMNS) + " |",
            "|---" * (4 + len(COLUMNS)) + "|",
        ]
        for p in published:
            lines.append(
                f"| {p['method']} | {p['ratio'] if p['ratio'] is not None else 'n/s'} | "
                f"{p['shift'] or 'n/s'} | {p['source']} | "
                + " | ".join(f"{p[m]:.4f}" if m in p else "" for m in COLUMNS)
                + " |"
            )
        lines += [
            "",
            "det_F1 above is from the instance centres of the segmentation; Qu 2020's det_F1 is "
            "its point detector's (Table II), in the table of point detectors.",
            "",
        ]
    every = [r for g in groups.values() for r in g]
    for what in ("commit", "hardware", "command"):
        values = sorted({str(r.get(what, "")) for r in every})
        lines.append(f"- {what}: " + "; ".join(f"`{v}`" for v in values))
    return "\n".join(lines) + "\n"


#: Metrics of the decomposition table, each for the model and for its labels.
DECOMPOSITION_COLUMNS = ("AJI", "Dice_obj", "PQ")


def decomposition_table(rows, data):
    """Markdown lines of ``--decompose`` rows on ``data`` (none without rows): per method and
    ratio, the final models' val metrics beside their labels' (mean ± std over seeds)."""
    groups = _groups(rows, Path(data).resolve())
    if not groups:
        return []
    head = ["method", "ratio", "seeds"] + [
        f"{who} {m}"
        for m in DECOMPOSITION_COLUMNS
        for who in ("model", "labels", "labels w/o points")
    ]
    lines = _section(
        "Where the accuracy goes (val)",
        "`--decompose`: each run's final model scored on val beside its method's pseudo-labels, "
        "built from the same ratio of val's points and post-processed like the network's output, "
        "scored as the prediction (what the network would reach by learning its labels "
        "perfectly; Qu et al.'s network also learns from its detected points). Labels far above "
        "the model: the network loses the accuracy; labels at a low ratio far below those at "
        "100 %: the points do. The labels separate touching nuclei by the points' Voronoi "
        'edges; "w/o points" scores the label\'s nuclei as connected components, as the '
        "network must separate them at test time (n/a for rows written before it).",
        head,
    )
    for (label, ratio, _), group in groups.items():
        cells = [label, _ratio_cell(ratio), _seeds_cell(group)]
        for m in DECOMPOSITION_COLUMNS:
            cells.append(_cell(*_metric(group, "val", m)))
            for key in ("labels", "labels_free"):
                values = [r.get(key, {}).get("val", {}).get(m) for r in group]
                cells.append(_cell(*_stats(values)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


#: Metrics of a method's own point detector (a row's ``extra.detection``: ``{split: metrics}``).
DETECTOR_COLUMNS = ("det_P", "det_R", "det_F1")


def detector_table(groups, test_splits, dataset):
    """Markdown lines of the point detectors of the rows that keep one in ``extra.detection``
    (Qu et al.'s stage 1; none when no row does): precision, recall and F1 of the detected
    points on each test split (mean ± std over seeds), then the published detection numbers on
    ``dataset`` (a folder name). The leaderboard's ``det_F1`` is the segmentation's instead."""
    chosen = [
        (k, g)
        for k, g in groups.items()
        if any(isinstance(r.get("extra", {}).get("detection"), dict) for r in g)
    ]
    if not chosen:
        return []
    head = ["method", "ratio", "shift", "seeds"] + [
        f"{split} {m}" for split in test_splits for m in DETECTOR_COLUMNS
    ]
    lines = _section(
        "Point detectors",
        "Points detected by a method's own detector (Qu et al.'s stage 1), matched to the "
        "ground-truth centroids as in the paper's Table II; the segmentation's det_F1 above "
        "counts the final instances' centres instead.",
        head,
    )
    for (label, ratio, shift), group in chosen:
        cells = [label, _ratio_cell(ratio), shift or "n/a", _seeds_cell(group)]
        for split in test_splits:
            for m in DETECTOR_COLUMNS:
                values = [
                    r.get("extra", {}).get("detection", {}).get(split, {}).get(m) for r in group
                ]
                cells.append(_cell(*_stats(values)))
        lines.append("| " + " | ".join(cells) + " |")
    for p in PUBLISHED:
        if p["dataset"] == dataset and all(m in p for m in DETECTOR_COLUMNS):
            cells = [
                f"published: {p['source']}",
                _ratio_cell(p["ratio"]),
                p["shift"] or "n/s",
                "n/a",
            ]
            cells += [f"{p[m]:.4f}" for m in DETECTOR_COLUMNS]
            cells += ["n/a"] * (len(head) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _section(title, caption, head):
    """The first lines of a table section: its title, caption and column header."""
    return [
        f"## {title}",
        "",
        caption,
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]


def _study_tables(groups, split, dataset):
    """Markdown lines of :data:`STUDY_TABLES` that have rows (mean ± std over seeds), each
    followed by the published entries of its methods on ``dataset`` (a folder name)."""
    lines = []
    for title, prefix, columns, caption in STUDY_TABLES:
        chosen = [(k, g) for k, g in groups.items() if k[0].startswith(prefix)]
        if not chosen:
            continue
        head = ["model", "ratio", "seeds", *columns, "CPU min"]
        lines += _section(f"{title} ({split})", caption, head)
        for (method, ratio, _), group in chosen:
            cells = [
                method,
                _ratio_cell(ratio),
                _seeds_cell(group),
                *[_cell(*_metric(group, split, m)) for m in columns],
                _minutes_cell(group, "cpu_min"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        for p in PUBLISHED:
            if p["method"].startswith(prefix) and p["dataset"] == dataset:
                cells = [
                    f"published: {p['source']}",
                    _ratio_cell(p["ratio"]),
                    "n/a",
                    *[f"{p[m]:.4f}" if m in p else "n/a" for m in columns],
                    "n/a",
                ]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot_points(rows, data, split):
    """``({plot name: [(label, xs, means, stds)]}, [(method, AJI)] of methods without points)``."""
    groups = _groups(rows, Path(data).resolve())
    series, references = {"aji_vs_ratio": {}, "aji_vs_shift": {}, "aji_vs_cpu": {}}, []
    for (method, ratio, shift), group in groups.items():
        mean, std = _metric(group, split, "AJI")
        if mean is None:
            continue
        cpu = _stats([r["cpu_min"] for r in group])[0]
        series["aji_vs_cpu"].setdefault(method, []).append((cpu, mean, std or 0.0))
        if ratio is None:
            references.append((method, mean))
            continue
        series["aji_vs_ratio"].setdefault(f"{method}, shift {shift}", []).append(
            (ratio, mean, std or 0.0)
        )
        series["aji_vs_shift"].setdefault(f"{method}, ratio {ratio:g}", []).append(
            (_shift_lo(shift), mean, std or 0.0)
        )
    return {
        name: [(label, *zip(*sorted(pts))) for label, pts in s.items()]
        for name, s in series.items()
    }, references


def legend_label(label, width=60):
    """``label`` wrapped on lines of at most ``width`` characters (a config with long
    ``--opts`` keeps every character without widening the figure past its legend)."""
    return textwrap.fill(label, width, break_on_hyphens=False)


def write_plots(rows, data, split, out):
    """Write the PNGs with >= 2 points (methods without points: dashed lines); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xlabels = {
        "aji_vs_ratio": "fraction of points annotated",
        "aji_vs_shift": "point shift, lower bound (px)",
        "aji_vs_cpu": "CPU minutes per run",
    }
    plots, references = plot_points(rows, data, split)
    written = []
    for name, series in plots.items():
        if sum(len(s[1]) for s in series) < 2:
            continue
        # the legend sits right of the axes (one line per series): the plot stays readable
        # whatever the number of methods and configs
        fig, ax = plt.subplots(figsize=(9, 3.5 + 0.12 * max(0, len(series) - 12)))
        for i, (label, xs, means, stds) in enumerate(series):
            ax.errorbar(
                xs,
                means,
                yerr=stds,
                color=plt.cm.tab20(i % 20),  # 20 colours, then a marker of its own
                marker="osD^v"[i // 20 % 5],
                capsize=3,
                label=legend_label(label),
                linestyle="none" if name == "aji_vs_cpu" else "-",
            )
        if name != "aji_vs_cpu":
            for method, mean in references:
                ax.axhline(mean, linestyle="--", color="grey", label=f"{method} (no annotation)")
        if name == "aji_vs_ratio":
            ax.set_xscale("log")
        ax.set_xlabel(xlabels[name])
        ax.set_ylabel(f"AJI ({split})")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
        # "tight": the saved figure grows to hold the labels and the whole legend beside the
        # axes, which keep their width
        fig.savefig(Path(out) / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(Path(out) / f"{name}.png")
    return written


def write_report(out, data, test_splits):
    """Write ``LEADERBOARD.md`` and the plots (first test split) from ``out/results.jsonl``."""
    out = Path(out)
    rows = read_results(out / RESULTS)
    parts = read_results(out / DECOMPOSITION)
    (out / LEADERBOARD).write_text(leaderboard(rows, data, test_splits, parts))
    return [out / LEADERBOARD, *write_plots(rows, data, test_splits[0], out)]
