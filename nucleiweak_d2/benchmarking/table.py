"""What the benchmark runs and compares with: the per-method table, published numbers, runs.

Adding a method is one entry of :data:`METHODS`, e.g.::

    "feng2019": BenchMethod(
        "nucleiweak_d2.methods.feng2019",
        "configs/feng2019/mask_rcnn_R_18_FPN_partial.yaml",
        "configs/quick/feng2019_partial_instant_test.yaml",
        annotation="partial_mask",
        point_shifts=False,
    ),

A method whose config names no ``NUCLEIWEAK.PIPELINE`` is trained as one Detectron2 model
(checkpoint selected on val by ``select_metric``) and scored on the test splits.
"""

from dataclasses import dataclass

__all__ = [
    "BenchMethod",
    "METHODS",
    "PUBLISHED",
    "RunSpec",
    "shift_label",
    "RESULTS",
    "LEADERBOARD",
    "MARKER",
    "DECOMPOSITION",
]

#: Files of the output folder: the rows, the leaderboard, and the marker of each run folder.
RESULTS, LEADERBOARD, MARKER = "results.jsonl", "LEADERBOARD.md", "benchmark_run.json"
#: Rows of ``--decompose``: each run's final model and its labels as the prediction, on val.
DECOMPOSITION = "decomposition.jsonl"


@dataclass(frozen=True)
class BenchMethod:
    """One method of the benchmark.

    Attributes
    ----------
    module : str
        Imported before the config is built (registers the method and its config node).
    config, quick_config : str
        Default config (CPU budget) and smoke config (``--quick``), relative to the repository.
    annotation : {"points", "partial_mask", "crop_mask"}
        How the training split is exported (:func:`~nucleiweak_d2.data.coco.build_coco`);
        ``"crop_mask"``: each training image cut to one window of the run's ratio of its area,
        every nucleus in it annotated with its mask (Feng et al.'s "DH25crop" baseline,
        :func:`~nucleiweak_d2.methods.feng2019.crops.crop_fully_annotated`).
    uses_points : bool
        False: the method reads no annotation, so it runs once, not per ratio/shift/seed.
    point_shifts : bool
        False: the method trains on masks and reads no point (Feng et al.'s models), so a point
        shift leaves its training unchanged (feng2019 at 100 %, 2-4 px, seed 0 repeated its
        0 px run bit for bit, commit 8b4962d): its shifted runs are skipped
        (:meth:`~.runs.Benchmark.plan`) and its 0 px rows stand for every shift.
    select_metric : str
        Val metric that selects the checkpoint of a method trained as one model (no pipeline).
    fixed_ratio : float or None
        The method always trains on this ratio (e.g. 1.0: a fully annotated reference), so it
        runs once per shift and seed whatever ``--ratios`` asks, with this ratio in its rows.
    label_kind : str or None
        A UNet method's pseudo-label rule of :mod:`.label_bound` (``--decompose`` scores those
        labels as the prediction on val beside the trained model); None: not decomposed.
    points_from : tuple of str or None
        ``(method, file, key)``: the method trains on points another method's run completes,
        that method's run at the same ratio, shift and seed (planned first; it must be among
        the benchmarked methods): the config ``key`` is set to ``file`` in that run's folder.
    all_points_opts : tuple of str
        ``KEY VALUE`` overrides of the method's runs at ratio 1 (every nucleus clicked), where
        its paper runs it differently (Qu et al.: no detector); the rows keep the config's name.
    """

    module: str
    config: str
    quick_config: str
    annotation: str = "points"
    uses_points: bool = True
    point_shifts: bool = True
    select_metric: str = "nuclei/AJI"
    fixed_ratio: float = None
    label_kind: str = None
    points_from: tuple = None
    all_points_opts: tuple = ()


METHODS = {
    "classical": BenchMethod(
        "nucleiweak_d2.methods.classical",
        "configs/classical/monuseg.yaml",
        "configs/classical/synthetic.yaml",
        uses_points=False,
    ),
    # Feng et al. 2019 and the paper's three baselines (issue 17), one Mask R-CNN each: the
    # ratio is the fraction of training nuclei annotated with their masks
    "feng2019": BenchMethod(
        "nucleiweak_d2.methods.feng2019",
        "configs/feng2019/R18_monuseg_cpu_partial.yaml",
        "configs/quick/feng2019_pipeline_partial_instant_test.yaml",
        annotation="partial_mask",
        point_shifts=False,
    ),
    "feng2019_baseline": BenchMethod(  # plain Mask R-CNN on the same partial masks ("DH25")
        "nucleiweak_d2.methods.feng2019",
        "configs/feng2019/R18_monuseg_cpu_baseline.yaml",
        "configs/quick/feng2019_pipeline_baseline_instant_test.yaml",
        annotation="partial_mask",
        point_shifts=False,
    ),
    "feng2019_baseline_crop": BenchMethod(  # fully annotated crops of the ratio's area
        "nucleiweak_d2.methods.feng2019",
        "configs/feng2019/R18_monuseg_cpu_baseline.yaml",
        "configs/quick/feng2019_pipeline_baseline_instant_test.yaml",
        annotation="crop_mask",
        point_shifts=False,
    ),
    "feng2019_baseline_full": BenchMethod(  # every nucleus annotated ("DH100")
        "nucleiweak_d2.methods.feng2019",
        "configs/feng2019/R18_monuseg_cpu_baseline.yaml",
        "configs/quick/feng2019_pipeline_baseline_instant_test.yaml",
        annotation="partial_mask",
        point_shifts=False,
        fixed_ratio=1.0,
    ),
    # three detectors of 1200 iterations (docs/RECIPE.md, "The detector's schedule"): at 10 %
    # points val AJI 0.494 against 0.472-0.479 for R18_monuseg_p10_cpu.yaml (3 seeds each), and
    # above it at 5 and 25 % too, for about 1.6x its CPU; at 100 % no detector (7.5 CPU-min)
    "qu2020": BenchMethod(
        "nucleiweak_d2.methods.qu2020",
        "configs/qu2020/R18_monuseg_p10_cpu_det3x1200.yaml",
        "configs/quick/qu2020_instant_test.yaml",
        label_kind="qu2020",
        # "all ground-truth (100%) points without the detection" (Qu et al., Figs. 8-9)
        all_points_opts=("NUCLEIWEAK.QU2020.DET.ENABLED", "False"),
    ),
    "liu2022": BenchMethod(
        "nucleiweak_d2.methods.liu2022",
        "configs/liu2022/R18_monuseg_cpu.yaml",
        "configs/quick/liu2022_instant_test.yaml",
        label_kind="liu2022",
    ),
    # the CPU recipe at 2800 iterations: val AJI +0.09 to +0.12 a seed for the recipe at 1400,
    # +0.02 more for twice its iterations (nam2023.md)
    "nam2023": BenchMethod(
        "nucleiweak_d2.methods.nam2023",
        "configs/nam2023/R18_monuseg_p100_cpu_recipe_long.yaml",
        "configs/quick/nam2023_instant_test.yaml",
        label_kind="nam2023",
    ),
    # PROnet on the points of Qu et al.'s detector: the annotated ones plus those detected by
    # the qu2020 run of the same ratio, shift and seed (not in either paper: PROnet clicks every
    # nucleus); at 100 % qu2020 trains no detector, so these are the annotated points alone
    "nam2023_qu": BenchMethod(
        "nucleiweak_d2.methods.nam2023",
        "configs/nam2023/R18_monuseg_p100_cpu_recipe_long.yaml",
        "configs/quick/nam2023_instant_test.yaml",
        points_from=("qu2020", "detect/points_merged.json", "NUCLEIWEAK.NAM2023.POINTS_FILE"),
    ),
    "wang2024": BenchMethod(
        "nucleiweak_d2.methods.wang2024",
        "configs/wang2024/R18_monuseg_p10_cpu.yaml",
        "configs/quick/wang2024_instant_test.yaml",
    ),
}

#: Published numbers of docs/PROTOCOL.md (fractions). ``ratio``/``shift`` None: not stated there,
#: so the entry is listed but never put beside one of our rows. An entry with ``config`` (a config
#: file name without folder and extension) is a paper's ablation: it sits beside the rows of that
#: config only, and the method's other entries beside none of them.
PUBLISHED = (
    dict(
        method="qu2020",
        dataset="monuseg_mo",
        ratio=0.1,
        shift="0",
        source="Qu 2020, Tables II-III",
        pixel_F1=0.7490,
        Dice_obj=0.7033,
        AJI=0.5031,
        det_P=0.8238,
        det_R=0.8328,
        det_F1=0.8282,
    ),
    dict(
        method="qu2020",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="0",
        source="Qu 2020, Table III",
        pixel_F1=0.7716,
        Dice_obj=0.7242,
        AJI=0.5174,
    ),
    dict(  # the paper annotates every nucleus (its centroid point)
        method="liu2022",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="0",
        source="Liu 2022, Table 2 (SPN+IEN)",
        pixel_F1=0.7967,
        Dice_obj=0.7437,
        AJI=0.5357,
    ),
    dict(  # the ablation "SPN": the SPN's map alone, connected components
        method="liu2022/spn_alone",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="0",
        source="Liu 2022, Table 2 (SPN)",
        pixel_F1=0.7917,
        Dice_obj=0.7173,
        AJI=0.4754,
    ),
    dict(  # a (shifted) point for every nucleus
        method="nam2023",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="0",
        source="Nam 2023, Table 1",
        Dice_obj=0.750,
        AJI=0.555,
    ),
    dict(  # Dice of shifts 2-4 and 4-6: Table 2's full model (Table 1 gives AJI only here)
        method="nam2023",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="2-4",
        source="Nam 2023, Tables 1-2",
        Dice_obj=0.748,
        AJI=0.548,
    ),
    dict(
        method="nam2023",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="4-6",
        source="Nam 2023, Tables 1-2",
        Dice_obj=0.733,
        AJI=0.532,
    ),
    dict(  # a (shifted) point for every nucleus
        method="nam2023",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="6-8",
        source="Nam 2023, Table 1",
        Dice_obj=0.725,
        AJI=0.509,
    ),
    dict(  # Table 2's ablations at 6-8 px, beside the runs of our ablation configs
        method="nam2023",
        config="R18_monuseg_p100_shift6-8_cpu_no_offset",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="6-8",
        source="Nam 2023, Table 2 (offset x)",
        Dice_obj=0.640,
        AJI=0.385,
    ),
    dict(
        method="nam2023",
        config="R18_monuseg_p100_shift6-8_cpu_euclidean",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="6-8",
        source="Nam 2023, Table 2 (geo x)",
        Dice_obj=0.703,
        AJI=0.474,
    ),
    dict(
        method="nam2023",
        config="R18_monuseg_p100_shift6-8_cpu_no_refine",
        dataset="monuseg_mo",
        ratio=1.0,
        shift="6-8",
        source="Nam 2023, Table 2 (refine x)",
        Dice_obj=0.675,
        AJI=0.420,
    ),
    dict(  # the paper clicks every nucleus (its centre), so beside our 100 % rows
        method="wang2024",
        dataset="tnbc",
        ratio=1.0,
        shift="0",
        source="Wang 2024, Table 1 (5-fold 3:1:1, not our split)",
        Dice_obj=0.6399,
        AJI=0.5006,
        DQ=0.5877,
        SQ=0.6875,
        PQ=0.4064,
    ),
)


def shift_label(shift):
    """Canonical label of a shift range: ``"0"`` or ``"<min>-<max>"`` (e.g. ``"2-4"``)."""
    from ..data.points import parse_shift

    lo, hi = parse_shift(shift)
    return "0" if hi == 0 else f"{lo:g}-{hi:g}"


@dataclass(frozen=True)
class RunSpec:
    """One run: a method at one ratio, shift and seed (all None for a method without points)."""

    method: str
    ratio: float = None
    shift: str = None
    seed: int = None

    @property
    def name(self):
        """Folder name under ``<out>/runs``."""
        if self.ratio is None:
            return self.method
        return f"{self.method}_r{self.ratio:g}_s{self.shift}_seed{self.seed}"

    def key(self):
        return [self.method, self.ratio, self.shift, self.seed]
