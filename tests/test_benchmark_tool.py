"""tools/benchmark.py: the --quick smoke run, resume by results.jsonl, the leaderboard maths."""

import json
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

from conftest import load_script  # noqa: E402

from nucleiweak_d2 import benchmarking  # noqa: E402
from nucleiweak_d2.benchmarking import label_bound  # noqa: E402
from nucleiweak_d2.cli import run_cli  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / "tools" / "benchmark.py"


def _tool():
    return load_script("nucleiweak_benchmark_tool", TOOL)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_quick_run_writes_rows_leaderboard_and_rerun_skips(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--quick", "--methods", "classical", "qu2020", "--out", str(out)]
    assert run_cli(_tool().main, argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [["classical", None, None, None], ["qu2020", 0.5, "0", 0]]
    for row in rows:
        assert 0.0 <= row["metrics"]["test"]["AJI"] <= 1.0 and "det_F1" in row["metrics"]["test"]
        assert row["wall_min"] >= 0 and row["cpu_min"] >= 0 and row["config_hash"] and row["commit"]
        assert (out / row["run_dir"] / "metrics.json").is_file()
    assert (
        rows[1]["run_dir"] == "runs/qu2020_r0.5_s0_seed0"
        and "test" in rows[1]["extra"]["detection"]
    )
    board = (out / "LEADERBOARD.md").read_text()
    assert "| classical | n/a |" in board and "| qu2020 | 0.5 | 0 | 0 |" in board
    assert (out / "aji_vs_cpu.png").is_file()  # 2 points; ratio and shift plots have 1: skipped
    assert not (out / "aji_vs_ratio.png").exists()
    first = capsys.readouterr().out
    assert "[1/2] classical: running" in first and "[2/2] qu2020_r0.5_s0_seed0: AJI" in first

    assert run_cli(_tool().main, argv) == 0  # rerun: both rows found, nothing runs again
    again = capsys.readouterr().out
    assert again.count("skipped") == 2 and "running" not in again
    assert len((out / "results.jsonl").read_text().splitlines()) == 2

    # --decompose on the finished runs: the UNet run only, nothing retrained
    model = out / rows[1]["run_dir"] / "model_final.pth"
    stamp = model.stat().st_mtime_ns
    assert run_cli(_tool().main, [*argv, "--decompose"]) == 0
    parts = [json.loads(x) for x in (out / "decomposition.jsonl").read_text().splitlines()]
    assert [p["key"] for p in parts] == [["qu2020", 0.5, "0", 0]]
    part = parts[0]
    assert part["config_hash"] == rows[1]["config_hash"] and part["label_rule"] == "qu2020"
    assert 0.0 <= part["metrics"]["val"]["AJI"] <= 1.0
    labels, _ = label_bound.evaluate(
        out / "quick_data", ["val"], ["qu2020", "qu2020_free"], 0.5, 0, normalizer=None
    )
    assert part["labels"]["val"]["AJI"] == pytest.approx(labels["val"]["qu2020"]["AJI"])
    free = part["labels_free"]["val"]["AJI"]
    assert free == pytest.approx(labels["val"]["qu2020_free"]["AJI"])
    assert model.stat().st_mtime_ns == stamp  # scored by --eval-only in its own folder
    assert list((out / rows[1]["run_dir"]).glob("eval_only*/metrics.json"))
    board = (out / "LEADERBOARD.md").read_text()
    assert "## Where the accuracy goes (val)" in board and "| qu2020 | 0.5 | 0 | " in board
    assert "decompose qu2020_r0.5_s0_seed0: val AJI" in capsys.readouterr().out
    assert run_cli(_tool().main, [*argv, "--decompose"]) == 0
    assert "decompose qu2020_r0.5_s0_seed0: done earlier" in capsys.readouterr().out
    assert len((out / "decomposition.jsonl").read_text().splitlines()) == 1
    # a run whose folder lost its model: said and skipped, the leaderboard still written
    (out / "decomposition.jsonl").unlink()
    model.unlink()
    (out / "LEADERBOARD.md").unlink()
    assert run_cli(_tool().main, [*argv, "--decompose"]) == 0
    assert "no model_final.pth" in capsys.readouterr().out
    assert (out / "LEADERBOARD.md").is_file() and not (out / "decomposition.jsonl").exists()


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    tool = _tool()
    assert run_cli(tool.main, ["--out", str(tmp_path), "--methods", "nope"]) == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
    assert (
        run_cli(
            tool.main,
            ["--out", str(tmp_path), "--methods", "classical", "--data", str(tmp_path / "x")],
        )
        == 2
    )
    assert "is not a folder" in capsys.readouterr().err
    argv = [
        "--quick",
        "--out",
        str(tmp_path),
        "--methods",
        "classical",
        "--config",
        "qu2020=x.yaml",
    ]
    assert run_cli(tool.main, argv) == 2
    assert "--config 'qu2020=x.yaml'" in capsys.readouterr().err


def test_folder_of_another_config_is_refused_unless_overwrite(tmp_path, synthetic_root):
    configs = {"classical": benchmarking.METHODS["classical"].quick_config}
    configs = {m: str(benchmarking.REPO / c) for m, c in configs.items()}
    bench = benchmarking.Benchmark(synthetic_root, tmp_path, configs, ["test"])
    (spec,) = bench.plan([0.1], ["0"], [0])
    _, run_hash = bench.run_cfg(spec)
    folder = tmp_path / "runs" / "classical"
    folder.mkdir(parents=True)
    (folder / benchmarking.MARKER).write_text(json.dumps({"config_hash": "other"}))
    bench.check_folder(spec, "other")  # same config: kept
    with pytest.raises(ValueError, match="another config"):
        bench.check_folder(spec, run_hash)
    benchmarking.Benchmark(
        synthetic_root, tmp_path, configs, ["test"], overwrite=True
    ).check_folder(spec, run_hash)
    assert not folder.exists()


def test_method_opts_and_plan():
    opts = benchmarking.Benchmark._method_opts(
        ["SOLVER.MAX_ITER", "5", "qu2020:NUCLEIWEAK.QU2020.SEG.MAX_ITER", "3"], "qu2020"
    )
    assert opts == ["SOLVER.MAX_ITER", "5", "NUCLEIWEAK.QU2020.SEG.MAX_ITER", "3"]
    assert benchmarking.Benchmark._method_opts(["qu2020:SOLVER.MAX_ITER", "5"], "classical") == []
    with pytest.raises(ValueError, match="not a method"):
        benchmarking.Benchmark._method_opts(["nope:SOLVER.MAX_ITER", "5"], "qu2020")
    assert benchmarking.shift_label("2-4") == "2-4" and benchmarking.shift_label("0") == "0"
    assert benchmarking.RunSpec("qu2020", 0.25, "2-4", 1).name == "qu2020_r0.25_s2-4_seed1"


def _row(method, ratio, shift, seed, aji, cpu=1.0):
    return {
        "key": [method, ratio, shift, seed],
        "method": method,
        "ratio": ratio,
        "shift": shift,
        "seed": seed,
        "data": "/d/monuseg_mo",
        "metrics": {"test": {"AJI": aji, "Dice_obj": 0.5}},
        "wall_min": 2.0,
        "cpu_min": cpu,
        "commit": "abc",
        "hardware": "cpu",
        "command": "c",
    }


def test_decomposition_table_puts_model_and_labels_side_by_side():
    def part(ratio, seed, model, labels, free=None):
        row = _row("qu2020", ratio, "0", seed, model)
        row["metrics"] = {"val": {"AJI": model, "Dice_obj": 0.6, "PQ": 0.3}}
        row["labels"] = {"val": {"AJI": labels, "Dice_obj": 0.8, "PQ": 0.5}}
        if free is not None:  # rows written before the point-free rule have none
            row["labels_free"] = {"val": {"AJI": free, "Dice_obj": 0.7, "PQ": 0.4}}
        return row

    rows = [part(0.1, 0, 0.40, 0.30), part(0.1, 1, 0.50, 0.34), part(1.0, 0, 0.47, 0.70, 0.55)]
    lines = benchmarking.report.decomposition_table(rows, "/d/monuseg_mo")
    assert lines[0] == "## Where the accuracy goes (val)"
    assert "| qu2020 | 0.1 | 0,1 | 0.4500 ± 0.0707 | 0.3200 ± 0.0283 | n/a | 0.6000 ± 0.0000 |" in (
        "\n".join(lines)
    )
    want = "| qu2020 | 1 | 0 | 0.4700 | 0.7000 | 0.5500 | 0.6000 | 0.8000 | 0.7000 | 0.3000 | 0.5000 | 0.4000 |"
    assert want in lines
    assert benchmarking.report.decomposition_table(rows, "/d/other") == []  # another dataset
    board = benchmarking.leaderboard([_row("qu2020", 0.1, "0", 0, 0.4)], "/d/monuseg_mo", ["test"])
    assert "Where the accuracy goes" not in board  # no --decompose rows: no section


def test_leaderboard_mean_std_over_seeds_latest_row_wins_and_published():
    rows = [_row("qu2020", 0.1, "0", s, a) for s, a in [(0, 0.40), (1, 0.50), (2, 0.60)]]
    rows.append(_row("qu2020", 0.1, "0", 2, 0.45))  # a later run of seed 2 replaces the first
    rows.append(_row("qu2020", 0.1, "0", 0, 0.99) | {"data": "/other/monuseg_mo"})  # other data
    text = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test"])
    line = next(x for x in text.splitlines() if x.startswith("| qu2020 | 0.1 |"))
    assert "| 0,1,2 | 0.4500 ± 0.0500 | 0.5000 ± 0.0000 |" in line
    assert "0.5031 / 0.7033 / 0.7490 (Qu 2020, Tables II-III)" in line
    assert "Published numbers" in text and "Nam 2023" in text
    rows.append(
        _row("classical", None, None, None, 0.41) | {"key": ["classical", None, None, None]}
    )
    points, references = benchmarking.plot_points(rows, "/d/monuseg_mo", "test")
    assert points["aji_vs_ratio"] == [
        ("qu2020, shift 0", (0.1,), (pytest.approx(0.45),), (pytest.approx(0.05),))
    ]
    assert references == [("classical", 0.41)] and len(points["aji_vs_cpu"]) == 2


def test_detector_table_has_the_point_detectors_beside_table_ii():
    """Qu et al.'s runs keep their detector's scores in ``extra.detection``: a table of its own
    (mean ± std over seeds per split) beside the paper's Table II; rows without one add none."""
    rows = []
    for seed, f1 in [(0, 0.70), (1, 0.80)]:
        row = _row("qu2020", 0.1, "0", seed, 0.45)
        row["extra"] = {"detection": {"test": {"det_P": 0.9, "det_R": 0.6, "det_F1": f1}}}
        rows.append(row)
    text = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test", "testA"])
    assert "## Point detectors" in text
    line = next(x for x in text.splitlines() if x.startswith("| qu2020 | 0.1 | 0 | 0,1 | 0.9000"))
    assert line.endswith("| 0.7500 ± 0.0707 | n/a | n/a | n/a |")
    published = next(x for x in text.splitlines() if x.startswith("| published: Qu 2020, Tables"))
    assert "| 0.8238 | 0.8328 | 0.8282 | n/a | n/a | n/a |" in published
    plain = benchmarking.leaderboard([_row("qu2020", 0.1, "0", 0, 0.5)], "/d/monuseg_mo", ["test"])
    assert "## Point detectors" not in plain


def test_leaderboard_keeps_each_config_of_a_method_apart():
    """Two budgets of one method (two config files) get a row each, labelled by the file."""
    cheap = {"config_file": "configs/qu2020/R18_cpu.yaml"}
    long = {"config_file": "configs/qu2020/R18_cpu60.yaml"}
    rows = [_row("qu2020", 0.1, "0", s, 0.40) | cheap for s in (0, 1)]
    rows += [_row("qu2020", 0.1, "0", s, 0.50, cpu=2.0) | long for s in (0, 1)]
    # replaces seed 1 of its own config, run from another checkout
    rows.append(_row("qu2020", 0.1, "0", 1, 0.42) | {"config_file": "/tmp/x/R18_cpu.yaml"})
    text = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test"])
    cheap_line = next(x for x in text.splitlines() if x.startswith("| qu2020 (R18_cpu) |"))
    long_line = next(x for x in text.splitlines() if x.startswith("| qu2020 (R18_cpu60) |"))
    assert "| 0,1 | 0.4100 ± 0.0141 |" in cheap_line and "| 1.00 |" in cheap_line
    assert "| 0,1 | 0.5000 ± 0.0000 |" in long_line and "| 2.00 |" in long_line
    assert "0.5031 / 0.7033 / 0.7490 (Qu 2020" in long_line  # published numbers of the method
    # one config file only: the label stays the method's name
    single = benchmarking.leaderboard(rows[:2], "/d/monuseg_mo", ["test"])
    assert any(x.startswith("| qu2020 | 0.1 |") for x in single.splitlines())
    # the same config with an --opts override is another run: it neither replaces a row of the
    # config alone nor joins its mean (regression: it replaced the seed of the same key)
    over = {"opts": ["NUCLEIWEAK.QU2020.SEG.MAX_ITER", "3"]}
    both = rows[:2] + [_row("qu2020", 0.1, "0", 1, 0.30) | cheap | over]
    lines = benchmarking.leaderboard(both, "/d/monuseg_mo", ["test"]).splitlines()
    assert any(
        x.startswith("| qu2020 (R18_cpu) |") and "| 0,1 | 0.4000 ± 0.0000 |" in x for x in lines
    )
    assert any(
        x.startswith("| qu2020 (R18_cpu NUCLEIWEAK.QU2020.SEG.MAX_ITER=3) |")
        and "| 1 | 0.3000 |" in x
        for x in lines
    )


def test_leaderboard_gives_an_ablation_of_a_run_rows_of_its_own():
    """Liu et al.'s runs also score the SPN alone (``extra.spn_alone``): a row of its own,
    beside the paper's Table 2 ablation; the paper's SPN+IEN numbers sit beside the full
    method at 100 % points."""
    rows = []
    for seed, full, alone in [(0, 0.50, 0.44), (1, 0.52, 0.46)]:
        row = _row("liu2022", 1.0, "0", seed, full)
        row["extra"] = {
            "spn_alone": {"test": {"AJI": alone, "Dice_obj": 0.6}, "val": {"AJI": 0.3}},
            "inference": {"T0": 0.3},
        }
        rows.append(row)
    text = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test"])
    full = next(x for x in text.splitlines() if x.startswith("| liu2022 | 1 |"))
    alone = next(x for x in text.splitlines() if x.startswith("| liu2022/spn_alone | 1 |"))
    assert "| 0,1 | 0.5100 ± 0.0141 |" in full and "0.5357 / 0.7437 / 0.7967" in full
    assert "| 0,1 | 0.4500 ± 0.0141 | 0.6000 ± 0.0000 |" in alone
    assert "0.4754 / 0.7173 / 0.7917 (Liu 2022, Table 2 (SPN))" in alone
    # a row without the ablation adds none
    plain = benchmarking.leaderboard([_row("liu2022", 1.0, "0", 0, 0.5)], "/d/monuseg_mo", ["test"])
    assert "| liu2022/spn_alone | 1 |" not in plain


def test_published_ablation_sits_beside_its_config_only():
    """PROnet's Table 2 ablation (offset x) sits beside the rows of our no-offset config; the
    full model's Table 1 numbers beside the default config's rows, never the other way round."""
    full = {"config_file": "configs/nam2023/R18_monuseg_p100_shift6-8_cpu.yaml"}
    no_offset = {"config_file": "configs/nam2023/R18_monuseg_p100_shift6-8_cpu_no_offset.yaml"}
    rows = [_row("nam2023", 1.0, "6-8", 0, 0.33) | full]
    rows.append(_row("nam2023", 1.0, "6-8", 0, 0.30) | no_offset)
    rows.append(_row("nam2023", 1.0, "2-4", 0, 0.36) | full)
    lines = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test"]).splitlines()
    main = next(
        x for x in lines if x.startswith("| nam2023 (R18_monuseg_p100_shift6-8_cpu) | 1 | 6-8")
    )
    abl = next(
        x for x in lines if x.startswith("| nam2023 (R18_monuseg_p100_shift6-8_cpu_no_offset)")
    )
    shift24 = next(
        x for x in lines if x.startswith("| nam2023 (R18_monuseg_p100_shift6-8_cpu) | 1 | 2-4")
    )
    assert main.endswith("| 0.5090 / 0.7250 / n/a (Nam 2023, Table 1) |")
    assert abl.endswith("| 0.3850 / 0.6400 / n/a (Nam 2023, Table 2 (offset x)) |")
    assert shift24.endswith("| 0.5480 / 0.7480 / n/a (Nam 2023, Tables 1-2) |")


def test_donuseg_tnbc_numbers_sit_beside_the_100_percent_rows_only():
    rows = [_row("wang2024", r, "0", 0, 0.3) | {"data": "/d/tnbc"} for r in (1.0, 0.1)]
    lines = benchmarking.leaderboard(rows, "/d/tnbc", ["test"]).splitlines()
    full = next(x for x in lines if x.startswith("| wang2024 | 1 |"))
    tenth = next(x for x in lines if x.startswith("| wang2024 | 0.1 |"))
    assert full.endswith(
        "| 0.5006 / 0.6399 / n/a (Wang 2024, Table 1 (5-fold 3:1:1, not our split)) |"
    )
    assert tenth.endswith("|  |")


def test_study_table_of_the_feng2019_models():
    """The four Feng et al. models get a table of their own with the issue's metrics."""
    rows = []
    for method, ratio, values in [
        ("feng2019", 0.25, [(0, 0.40, 20.0), (1, 0.44, 22.0)]),
        ("feng2019_baseline_full", 1.0, [(0, 0.48, 30.0)]),
    ]:
        for seed, aji, ap in values:
            row = _row(method, ratio, "0", seed, aji)
            row["metrics"]["test"] |= {"obj_F1": aji + 0.1, "segm/AP": ap, "mAP_kaggle": 0.2}
            rows.append(row)
    rows.append(_row("qu2020", 0.1, "0", 0, 0.45))
    lines = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test", "testA"]).splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("## Feng et al. 2019"))
    assert lines[start].endswith("(test)")
    table = lines[start : lines.index("", start + 4)]
    assert (
        table[4]
        == "| model | ratio | seeds | AJI | obj_F1 | segm/AP | mAP_kaggle | det_F1 | CPU min |"
    )
    assert table[6] == (
        "| feng2019 | 0.25 | 0,1 | 0.4200 ± 0.0283 | 0.5200 ± 0.0283 | 21.0000 ± 1.4142 "
        "| 0.2000 ± 0.0000 | n/a | 1.00 |"
    )
    assert table[7].startswith("| feng2019_baseline_full | 1 | 0 | 0.4800 | 0.5800 | 30.0000 |")
    assert len(table) == 8  # no qu2020 row
    plain = benchmarking.leaderboard(rows[-1:], "/d/monuseg_mo", ["test"])
    assert "Feng et al. 2019" not in plain


def test_study_table_of_donuseg_has_table_1_metrics_and_the_papers_row():
    """DoNuSeg rows (main config and an ablation leaf) get Dice / AJI / DQ / SQ / PQ, followed
    by Table 1's TNBC row on the TNBC leaderboard and by no published row on MoNuSeg."""
    rows = []
    for leaf, seed, aji in [("R18_monuseg_p10_cpu", 0, 0.2), ("R18_monuseg_p10_cpu", 1, 0.3)]:
        rows.append(_row("wang2024", 1.0, "0", seed, aji))
    rows.append(_row("wang2024", 1.0, "0", 0, 0.1) | {"config_file": "x/R18_no_dcs.yaml"})
    for r in rows:
        r["metrics"]["test"] |= {"DQ": r["metrics"]["test"]["AJI"] + 0.1, "SQ": 0.6}
        r.setdefault("config_file", "configs/wang2024/R18_monuseg_p10_cpu.yaml")
    tnbc = [r | {"data": "/d/tnbc"} for r in rows]
    lines = benchmarking.leaderboard(tnbc, "/d/tnbc", ["test"]).splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("## Wang et al. 2024"))
    table = lines[start : lines.index("", start + 4)]
    assert table[4] == (
        "| model | ratio | seeds | pixel_F1 | Dice_obj | AJI | DQ | SQ | PQ | CPU min |"
    )
    assert table[6].startswith("| wang2024 (R18_monuseg_p10_cpu) | 1 | 0,1 | ")
    assert "| 0.2500 ± 0.0707 | 0.3500 ± 0.0707 | 0.6000 ± 0.0000 |" in table[6]
    assert table[7].startswith("| wang2024 (R18_no_dcs) | 1 | 0 | ")
    assert table[8] == (
        "| published: Wang 2024, Table 1 (5-fold 3:1:1, not our split) | 1 | n/a | n/a "
        "| 0.6399 | 0.5006 | 0.5877 | 0.6875 | 0.4064 | n/a |"
    )
    assert len(table) == 9
    mo = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test"]).splitlines()
    start = next(i for i, x in enumerate(mo) if x.startswith("## Wang et al. 2024"))
    assert not any(x.startswith("| published") for x in mo[start : mo.index("", start + 4)])


def test_feng2019_models_plan_once_at_a_fixed_ratio(synthetic_root, tmp_path):
    names = ["feng2019", "feng2019_baseline", "feng2019_baseline_crop", "feng2019_baseline_full"]
    configs = {m: str(benchmarking.REPO / benchmarking.METHODS[m].config) for m in names}
    bench = benchmarking.Benchmark(synthetic_root, tmp_path, configs, ["test"])
    keys = [s.key() for s in bench.plan([0.25, 0.5], ["0"], [0, 1])]
    assert [k for k in keys if k[0] == "feng2019_baseline_full"] == [
        ["feng2019_baseline_full", 1.0, "0", 0],  # trained on every mask: once per seed
        ["feng2019_baseline_full", 1.0, "0", 1],
    ]
    assert len(keys) == 3 * 2 * 2 + 2


def test_mask_trained_methods_get_no_shifted_runs_and_no_shifted_rows(synthetic_root, tmp_path):
    configs = {
        m: str(benchmarking.REPO / benchmarking.METHODS[m].config) for m in ("feng2019", "qu2020")
    }
    bench = benchmarking.Benchmark(synthetic_root, tmp_path, configs, ["test"])
    assert bench.skipped_shifts == []
    keys = [s.key() for s in bench.plan([1.0], ["0", "2-4", "6-8"], [0])]
    assert keys == [["feng2019", 1.0, "0", 0]] + [
        ["qu2020", 1.0, s, 0] for s in ("0", "2-4", "6-8")
    ]
    assert bench.skipped_shifts == ["feng2019"]
    assert bench.plan([1.0], ["2-4"], [0]) == [benchmarking.RunSpec("qu2020", 1.0, "2-4", 0)]
    bench.plan([1.0], ["0"], [0])
    assert bench.skipped_shifts == []  # nothing asked, nothing skipped
    # a mask-trained config that crops at the points reads them: no silent skip
    crops = benchmarking.Benchmark(
        synthetic_root,
        tmp_path,
        configs,
        ["test"],
        ["feng2019:NUCLEIWEAK.DATA.CROP_AT_POINTS", "0.5"],
    )
    with pytest.raises(ValueError, match="CROP_AT_POINTS 0.5"):
        crops.plan([1.0], ["0", "2-4"], [0])
    assert len(crops.plan([1.0], ["0"], [0])) == 2

    rows = [_row("feng2019", 1.0, "0", 0, 0.47), _row("feng2019", 1.0, "2-4", 0, 0.47)]
    rows.append(_row("qu2020", 1.0, "2-4", 0, 0.48))
    text = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test"])
    assert "| feng2019 | 1 | 0 |" in text and "| feng2019 | 1 | 2-4 |" not in text
    assert "| qu2020 | 1 | 2-4 |" in text and "0 px rows stand for every shift" in text


def test_feng2019_quick_runs_choose_the_score_threshold_on_val_and_crop(tmp_path):
    from detectron2.data import DatasetCatalog

    from nucleiweak_d2.methods.feng2019 import median_box_size

    out = tmp_path / "bench"
    argv = ["--quick", "--methods", "feng2019", "feng2019_baseline_crop", "--out", str(out)]
    assert run_cli(_tool().main, argv) == 0
    rows = {
        r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
    }
    assert set(rows) == {"feng2019", "feng2019_baseline_crop"}
    for method, row in rows.items():
        assert 0.0 <= row["metrics"]["test"]["AJI"] <= 1.0 and "segm/AP" in row["metrics"]["test"]
        choice = json.loads((out / row["run_dir"] / "select_score" / "stage_done.json").read_text())
        scores, chosen = choice["info"]["scores"], choice["info"]["threshold"]
        assert (
            set(scores) == {"0", "0.5"}
            and row["extra"]["inference"]["from"] == "val (select_score)"
        )
        assert row["extra"]["inference"]["INSTANCE_SCORE_THRESH"] == chosen
        valid = [v for v in scores.values() if v is not None]
        assert not valid or scores[f"{chosen:g}"] == max(valid)
    # the partial model's anchor: the median annotated box of its training set (paper's rule)
    tag = "partial_mask_r0.5_s0_seed0"
    train = DatasetCatalog.get(f"bench_{Path(rows['feng2019']['data']).name}_{tag}_train")
    assert rows["feng2019"]["extra"]["inference"]["ANCHOR_SIZE"] == median_box_size(train)
    # the partial model's pseudo-box curve on the unannotated training nuclei (QUALITY_PERIOD 1)
    curve = rows["feng2019"]["extra"]["pseudo_box_quality"]
    unannotated = sum(1 for r in train for a in r["annotations"] if not a["point_labeled"])
    assert [e["iter"] for e in curve] == [1, 2] and set(curve[-1]["train"]) == {"0.5", "0.95"}
    assert all(q["num_unannotated"] == unannotated for e in curve for q in e["train"].values())
    assert "pseudo_box_quality" not in rows["feng2019_baseline_crop"]["extra"]
    # the crop baseline trains on windows of half of each image's area, every nucleus labelled
    crop_train = json.loads(
        (out / "coco" / tag.replace("partial", "crop") / "crops" / "train.json").read_text()
    )
    full_train = json.loads((out / "coco" / tag / "train.json").read_text())
    area = {i["file_name"].split("/")[-1]: i["height"] * i["width"] for i in full_train["images"]}
    for image in crop_train["images"]:
        ratio = image["height"] * image["width"] / area[image["file_name"].split("/")[-1]]
        assert 0.4 < ratio < 0.6
    assert crop_train["annotations"] and all(
        a["point_labeled"] == 1 for a in crop_train["annotations"]
    )


def test_wang2024_quick_run_records_the_thresholds_chosen_on_val(tmp_path):
    out = tmp_path / "bench"
    assert run_cli(_tool().main, ["--quick", "--methods", "wang2024", "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["method"] == "wang2024" and 0.0 <= row["metrics"]["test"]["AJI"] <= 1.0
    stage = out / row["run_dir"] / "select_postprocess" / "stage_done.json"
    chosen = json.loads(stage.read_text())["info"]
    assert row["extra"]["postprocess"] == {
        "SEG.THRESHOLD": chosen["seg_threshold"],
        "SCORE_THRESH_TEST": chosen["score_threshold"],
        "from": "val (select_postprocess)",
    }
    assert chosen["seg_threshold"] in (0.3, 0.5) and chosen["score_threshold"] in (0.05, 0.2)
    assert (out / row["run_dir"] / "model_final.yaml").is_file()


def test_a_method_on_another_methods_points_plans_after_it_and_reads_its_file(
    synthetic_root, tmp_path
):
    configs = {
        m: str(benchmarking.REPO / benchmarking.METHODS[m].config) for m in ("nam2023_qu", "qu2020")
    }
    with pytest.raises(ValueError, match="add qu2020 to the benchmarked methods"):
        benchmarking.Benchmark(synthetic_root, tmp_path, {"nam2023_qu": configs["nam2023_qu"]}, [])
    bench = benchmarking.Benchmark(synthetic_root, tmp_path, configs, ["test"])
    specs = bench.plan([0.1], ["0"], [0, 1])
    assert [s.key() for s in specs] == [
        ["qu2020", 0.1, "0", 0],
        ["qu2020", 0.1, "0", 1],
        ["nam2023_qu", 0.1, "0", 0],
        ["nam2023_qu", 0.1, "0", 1],
    ]
    cfg, run_hash = bench.run_cfg(specs[3])
    assert cfg.NUCLEIWEAK.NAM2023.POINTS_FILE == str(
        tmp_path / "runs" / "qu2020_r0.1_s0_seed1" / "detect" / "points_merged.json"
    )
    # another qu2020 config makes another nam2023_qu run
    other = benchmarking.Benchmark(
        synthetic_root, tmp_path, configs, ["test"], ["qu2020:NUCLEIWEAK.QU2020.SEG.MAX_ITER", "7"]
    )
    other_cfg, other_hash = other.run_cfg(specs[3])
    assert other_cfg.NUCLEIWEAK.NAM2023.POINTS_FILE == cfg.NUCLEIWEAK.NAM2023.POINTS_FILE
    assert other_hash != run_hash


def test_qu2020_at_every_point_trains_no_detector_unless_the_opts_say_so(synthetic_root, tmp_path):
    """Qu et al.'s 100 % results are "without the detection": the benchmark's runs at ratio 1
    take ``all_points_opts``; other ratios do not, and ``--opts`` still wins."""
    config = str(benchmarking.REPO / benchmarking.METHODS["qu2020"].config)
    bench = benchmarking.Benchmark(synthetic_root, tmp_path, {"qu2020": config}, ["test"])
    full, partial = bench.plan([1.0, 0.1], ["0"], [0])
    assert not bench.run_cfg(full)[0].NUCLEIWEAK.QU2020.DET.ENABLED
    assert bench.run_cfg(partial)[0].NUCLEIWEAK.QU2020.DET.ENABLED
    assert bench._identity(full, "h")["opts"] == []  # the rows keep the config's name
    forced = benchmarking.Benchmark(
        synthetic_root,
        tmp_path,
        {"qu2020": config},
        ["test"],
        ["NUCLEIWEAK.QU2020.DET.ENABLED", "True"],
    )
    assert forced.run_cfg(full)[0].NUCLEIWEAK.QU2020.DET.ENABLED


def test_quick_run_of_pronet_on_the_points_of_qu_detector(tmp_path):
    out = tmp_path / "bench"
    argv = ["--quick", "--methods", "nam2023_qu", "qu2020", "--out", str(out)]
    assert run_cli(_tool().main, argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["key"][0] for r in rows] == ["qu2020", "nam2023_qu"]
    merged = json.loads((out / rows[0]["run_dir"] / "detect" / "points_merged.json").read_text())
    start = out / rows[1]["run_dir"] / "pseudo_labels" / "points_train.json"
    assert json.loads(start.read_text()) == merged  # PROnet starts from Qu's merged points
    assert 0.0 <= rows[1]["metrics"]["test"]["AJI"] <= 1.0


def test_plot_legend_wraps_long_config_labels_and_the_png_holds_it(tmp_path):
    from PIL import Image

    from nucleiweak_d2.benchmarking.report import legend_label, write_plots

    label = "feng2019 (R18 " + " ".join(f"NUCLEIWEAK.DATA.KEY_{i}=0.05" for i in range(6)) + ")"
    wrapped = legend_label(label)
    assert wrapped.replace("\n", " ") == label  # every character kept
    assert max(len(line) for line in wrapped.splitlines()) <= 60 and wrapped.count("\n") >= 2
    cfg = {"config_file": "configs/feng2019/R18.yaml"}
    over = {"opts": [x for i in range(6) for x in (f"NUCLEIWEAK.DATA.KEY_{i}", "0.05")]}
    rows = [_row("feng2019", r, "0", 0, 0.4, cpu=r) | cfg for r in (0.1, 1.0)]
    rows += [_row("feng2019", r, "0", 0, 0.45, cpu=r) | cfg | over for r in (0.1, 1.0)]
    (png,) = [p for p in write_plots(rows, "/d/monuseg_mo", "test", tmp_path) if "cpu" in p.name]
    width, _ = Image.open(png).size
    # wider than the 9-inch figure (1080 px at 120 dpi): it grew to hold the legend, whose
    # lines of <= 60 characters (not ~200) keep it narrow
    assert 1100 < width < 1700


def test_summary_has_the_default_configs_only_beside_the_classical_baseline():
    from nucleiweak_d2.benchmarking.report import summary_table

    default = {"config_file": "configs/qu2020/R18_monuseg_p10_cpu_det3x1200.yaml"}
    rows = [_row("classical", None, None, None, 0.41) | {"config_file": "x/monuseg.yaml"}]
    rows += [_row("qu2020", 0.1, "0", s, a) | default for s, a in ((0, 0.46), (1, 0.50))]
    rerun = {"commit": "0123456789abcdef-dirty"}
    rows.append(_row("qu2020", 0.1, "0", 1, 0.48) | default | rerun)  # the last row wins
    rows.append(_row("qu2020", 0.1, "2-4", 0, 0.99) | default)  # shifted: left out
    rows.append(_row("qu2020", 1.0, "0", 0, 0.99) | {"config_file": "c/R18_cpu60.yaml"})
    over = {"opts": ["SOLVER.MAX_ITER", "3"]}
    rows.append(_row("qu2020", 1.0, "0", 1, 0.99) | default | over)  # an override: left out
    lines = summary_table(rows, Path("/d/monuseg_mo"), "test")
    table = [x for x in lines if x.startswith("| ") and not x.startswith("| method")]
    assert table == [
        "| classical | monuseg | n/a | n/a | 0.4100 |  | 1.00 | abc |",
        "| qu2020 | R18_monuseg_p10_cpu_det3x1200 | 0.1 | 0,1 | 0.4700 ± 0.0141 | +0.0600 | 1.00 | "
        "abc,0123456* |",
    ]
    assert summary_table(rows, Path("/d/other"), "test") == []
    text = benchmarking.leaderboard(rows, "/d/monuseg_mo", ["test"])
    assert text.index("## Summary") < text.index("## test")


def test_feng2019_quick_run_averages_checkpoints_and_chooses_the_overlap_on_val(tmp_path, capsys):
    import torch

    out = tmp_path / "bench"
    opts = ["feng2019:NUCLEIWEAK.FENG2019.INSTANCE_OVERLAP_CANDIDATES", "[1.0, 0.3]"]
    opts += ["feng2019:NUCLEIWEAK.FENG2019.AVERAGE_CHECKPOINTS", "2"]
    opts += ["feng2019:SOLVER.CHECKPOINT_PERIOD", "1"]
    argv = ["--quick", "--methods", "feng2019", "--out", str(out), "--opts", *opts]
    assert run_cli(_tool().main, argv) == 0
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # the mean of the two periodic checkpoints, scored on val against the selected one
    run = out / row["run_dir"]
    avg = json.loads((run / "average" / "stage_done.json").read_text())["info"]
    assert avg["averaged_from"] == ["model_0000000.pth", "model_0000001.pth"]
    assert set(avg["scores"]) == {"selected", "average"}
    valid = {k: v for k, v in avg["scores"].items() if v is not None}
    if valid:  # ties go to the checkpoint train selected (model_final.pth: no eval period)
        best = "selected" if valid.get("selected") == max(valid.values()) else "average"
        expected = run / "average" / "model_average.pth"
        if best == "selected":
            expected = run / "train" / "model_final.pth"
        assert avg["weights"] == str(expected)
    a, b, mean = (
        torch.load(p, map_location="cpu", weights_only=False)["model"]
        for p in (
            run / "train" / "model_0000000.pth",
            run / "train" / "model_0000001.pth",
            run / "average" / "model_average.pth",
        )
    )
    key = next(  # a weight the second step changed (stain_target is NaN without a stain fit)
        k
        for k, v in mean.items()
        if v.is_floating_point() and torch.isfinite(v).all() and not torch.equal(a[k], b[k])
    )
    assert torch.allclose(mean[key], (a[key].double() + b[key].double()).div(2).float())
    final = torch.load(run / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    chosen = torch.load(avg["weights"], map_location="cpu", weights_only=False)["model"]
    assert torch.equal(final[key], chosen[key])  # the next stages use the choice
    # benchmarks/feng2019_rescore_run.py re-scores the run with the same mean of checkpoints
    rescore = load_script(
        "feng2019_rescore_run", TOOL.parents[1] / "benchmarks" / "feng2019_rescore_run.py"
    )
    assert rescore.main([str(run), "--average", "2", "--data", row["data"]]) == 0
    printed = capsys.readouterr().out
    assert "mean of model_0000000.pth, model_0000001.pth" in printed
    assert printed.count("<- val best") == 1
    assert rescore.main([str(run), "--average", "5", "--data", row["data"]]) == 2
    assert "holds 2 periodic checkpoints" in capsys.readouterr().err
    info = json.loads((out / row["run_dir"] / "select_score" / "stage_done.json").read_text())
    info = info["info"]
    # every score candidate of the quick config with every overlap fraction, one inference
    assert set(info["scores"]) == {f"{t}/mask_nms{o}" for t in ("0", "0.5") for o in ("1", "0.3")}
    chosen = f"{info['threshold']:g}/mask_nms{info['overlap_thresh']:g}"
    valid = [v for v in info["scores"].values() if v is not None]
    assert info["overlap"] == "mask_nms" and (not valid or info["scores"][chosen] == max(valid))
    inference = row["extra"]["inference"]
    assert inference["from"] == "val (select_score)"
    assert (inference["INSTANCE_OVERLAP"], inference["INSTANCE_OVERLAP_THRESH"]) == (
        "mask_nms",
        info["overlap_thresh"],
    )
    # the evaluated model's config carries the choice (tools/predict.py reads it)
    from nucleiweak_d2.config import setup_cfg

    cfg = setup_cfg(str(out / row["run_dir"] / "model_final.yaml"), [])
    assert cfg.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP == "mask_nms"
    assert cfg.NUCLEIWEAK.EVAL.INSTANCE_OVERLAP_THRESH == info["overlap_thresh"]
    assert cfg.NUCLEIWEAK.EVAL.INSTANCE_SCORE_THRESH == info["threshold"]
