"""Seconds per training step of the Qu et al. CPU segmentation model under the speed options.

Builds the segmentor of ``configs/qu2020/R18_monuseg_p10_cpu.yaml`` (ResNet-18 at half width)
and trains it on synthetic batches (random uint8 images, random 0/1/2 targets, 2 = ignore,
``(K, H, W)`` with K = ``len(TARGET_WEIGHTS)``) with the Trainer's own step classes
(``SimpleTrainer`` / :class:`CPUAutocastTrainer`). One step = forward + backward + Adam step;
warm-up steps are excluded and the median over every timed step is reported.

Variants are timed interleaved (A B C ... A B C ...) so that a shared, noisy CPU affects them
alike; only the ratios to the baseline of the same run are meaningful.

Then the whole-image network forward (eval mode, no_grad; preprocessing + logits, no
post-processing) of one 1000x1000 image: fp32 / channels_last / bf16 / both, for R18-half
(the CPU config) and R34 full width, plus the bf16 - fp32 difference of the foreground
probability on the same input.

    python benchmarks/bench_training_speed.py --steps 4 --repeats 3
    python benchmarks/bench_training_speed.py --quick          # tiny sizes, a smoke test
"""

import argparse
import contextlib
import copy
import os
import platform
import signal
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

R18_CPU = REPO / "configs/qu2020/R18_monuseg_p10_cpu.yaml"
R34 = REPO / "configs/qu2020/R34_monuseg_p10.yaml"


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    """The bf16/AMX-related flags the CPU reports."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            return sorted(
                f for f in line.split(":", 1)[1].split() if "bf16" in f or f.startswith("amx")
            )
    return []


# Every speed option and the stain normalisation off, whatever the config file turns on: the
# baseline is the plain float32 network and each variant switches on what it measures.
PLAIN = [
    "NUCLEIWEAK.TRAIN.CPU_BF16",
    "False",
    "NUCLEIWEAK.TRAIN.CHANNELS_LAST",
    "False",
    "NUCLEIWEAK.UNET.FAST_CPU_INFERENCE",
    "False",
    "NUCLEIWEAK.DATA.STAIN_NORM.METHOD",
    "none",
]


def build_cfg(config, opts=()):
    from nucleiweak_d2.config import setup_cfg

    return setup_cfg(str(config), ["MODEL.DEVICE", "cpu", *PLAIN, *opts])


def build_model(cfg, channels_last=False):
    from nucleiweak_d2.engine.trainer import Trainer

    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def synthetic_batch(cfg, batch, crop, seed=0):
    """``batch`` dicts with ``"image"`` (3, crop, crop) uint8 and ``"sem_seg"`` (K, crop, crop)
    long targets in {0, 1, 2} (2 = ignore)."""
    g = torch.Generator().manual_seed(seed)
    k = len(cfg.NUCLEIWEAK.UNET.TARGET_WEIGHTS)
    return [
        {
            "image": torch.randint(0, 256, (3, crop, crop), dtype=torch.uint8, generator=g),
            "sem_seg": torch.randint(0, 3, (k, crop, crop), generator=g),
            "height": crop,
            "width": crop,
        }
        for _ in range(batch)
    ]


def _repeat(batch):
    while True:
        yield batch


def channels_last_fraction(model, run):
    """Fraction of the conv outputs of ``run()`` that are NHWC (among those not both formats)."""
    seen = []

    def hook(_module, _inputs, out):
        nchw, nhwc = out.is_contiguous(), out.is_contiguous(memory_format=torch.channels_last)
        if nchw != nhwc:  # both: one channel or 1x1 spatial, either format
            seen.append(nhwc)

    convs = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, convs)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return sum(seen) / max(len(seen), 1)


@contextlib.contextmanager
def alarm(seconds):
    """Raise TimeoutError in the main thread after ``seconds`` (POSIX; no-op elsewhere)."""
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        yield
        return

    def on_alarm(_signum, _frame):
        raise TimeoutError(f"more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def compile_logits(model):
    """Replace ``model.logits`` by a torch.compile'd network (backbone + decoder) call."""
    net = torch.compile(lambda x: model.sem_seg_head.layers(model.backbone(x)))

    def logits(images):
        return net(images.tensor)

    model.logits = logits
    return model


class TrainVariant:
    """One training configuration: its model, optimiser and Trainer step class."""

    def __init__(
        self,
        name,
        cfg,
        *,
        batch,
        crop,
        channels_last=False,
        bf16=False,
        threads=1,
        compile=False,
    ):
        from detectron2.engine import SimpleTrainer

        from nucleiweak_d2.engine.trainer import CPUAutocastTrainer, Trainer

        self.name, self.batch, self.threads = name, batch, threads
        self.model = build_model(cfg, channels_last)
        if compile:
            compile_logits(self.model)
        optimizer = Trainer.build_optimizer(cfg, self.model)
        data = _repeat(synthetic_batch(cfg, batch, crop))
        if bf16:
            self.trainer = CPUAutocastTrainer(self.model, data, optimizer)
        else:
            self.trainer = SimpleTrainer(self.model, data, optimizer)
        self.times = []
        self.losses = []

    def step(self):
        from detectron2.utils.events import EventStorage

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with EventStorage(self.trainer.iter) as storage:
                start = time.perf_counter()
                self.trainer.run_step()
                elapsed = time.perf_counter() - start
                self.trainer.iter += 1
                self.losses.append(storage.latest()["total_loss"][0])
        finally:
            torch.set_num_threads(before)
        return elapsed

    def close(self):
        self.trainer.concurrent_executor.shutdown(wait=False)


def train_variants(args):
    """The list of (name, cfg overrides, TrainVariant kwargs) to time."""
    half = "[64,32,16,16,8]" if not args.quick else "[16,8,8,4,4]"
    b, c = args.batch, args.crop
    return [
        ("baseline fp32", [], dict(batch=b, crop=c)),
        ("channels_last", [], dict(batch=b, crop=c, channels_last=True)),
        ("bf16 autocast", [], dict(batch=b, crop=c, bf16=True)),
        ("channels_last+bf16", [], dict(batch=b, crop=c, channels_last=True, bf16=True)),
        ("threads 2", [], dict(batch=b, crop=c, threads=2)),
        ("decoder half", ["NUCLEIWEAK.UNET.DECODER_CHANNELS", half], dict(batch=b, crop=c)),
        (
            "cl+bf16+decoder half",
            ["NUCLEIWEAK.UNET.DECODER_CHANNELS", half],
            dict(batch=b, crop=c, channels_last=True, bf16=True),
        ),
        (f"crop {args.crop_big}", [], dict(batch=b, crop=args.crop_big)),
        (f"batch {2 * b}", [], dict(batch=2 * b, crop=c)),
    ]


def bench_training(args):
    opts = list(args.quick_opts)
    variants = []
    for name, extra, kw in train_variants(args):
        variants.append(TrainVariant(name, build_cfg(R18_CPU, opts + extra), **kw))
    if args.compile:
        # torch.compile of the fp32 network and of the adopted options (channels_last + bf16)
        for name, kw in (
            ("torch.compile", {}),
            ("compile+cl+bf16", dict(channels_last=True, bf16=True)),
        ):
            try:
                with alarm(args.compile_timeout):
                    start = time.perf_counter()
                    v = TrainVariant(
                        name,
                        build_cfg(R18_CPU, opts),
                        batch=args.batch,
                        crop=args.crop,
                        compile=True,
                        **kw,
                    )
                    v.step()  # compiles forward and backward
                    v.step()
                print(
                    f"{name}: built and first two steps (compilation) {time.perf_counter() - start:.1f} s"
                )
                variants.append(v)
            except Exception as exc:  # noqa: BLE001  (any failure: skip the variant, say why)
                print(f"{name} skipped: {type(exc).__name__}: {str(exc).splitlines()[0:1]}")
    else:
        print("torch.compile skipped: --no-compile")

    # channels_last check on the model of the channels_last variant (one forward, no grad)
    cl = next(v for v in variants if v.name == "channels_last")
    sample = synthetic_batch(build_cfg(R18_CPU, opts), 1, args.crop)
    with torch.no_grad():
        frac = channels_last_fraction(cl.model, lambda: cl.model(sample))
    print(f"channels_last variant: {frac:.0%} of conv outputs are NHWC")

    for v in variants:  # warm-up, excluded
        for _ in range(args.warmup):
            v.step()
    for _ in range(args.repeats):
        for v in variants:  # interleaved: A B C ... A B C ...
            for _ in range(args.steps):
                v.times.append(v.step())
    rows = []
    base = statistics.median(variants[0].times)
    base_img = base / variants[0].batch
    for v in variants:
        med = statistics.median(v.times)
        finite = all(torch.isfinite(torch.tensor(v.losses)).tolist())
        rows.append(
            (
                v.name,
                v.batch,
                v.threads,
                med,
                med / base,
                med / v.batch,
                (med / v.batch) / base_img,
                "yes" if finite else "NO",
            )
        )
        v.close()
    print()
    print(
        f"Training step, R18-half (CPU config), median of {args.steps * args.repeats} steps "
        f"per variant, baseline = batch {args.batch}, crop {args.crop}, 1 thread, fp32"
    )
    head = ("variant", "batch", "thr", "s/step", "x base", "s/img", "x base/img", "finite")
    widths = (-20, 5, 3, 8, 7, 8, 10, 6)
    print(" ".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w in zip(head, widths)))
    for name, b, t, med, ratio, per_img, ratio_img, finite in rows:
        print(
            f"{name:<20} {b:>5} {t:>3} {med:>8.3f} {ratio:>7.2f} "
            f"{per_img:>8.4f} {ratio_img:>10.2f} {finite:>6}"
        )
    return rows


def bench_inference(args):
    from nucleiweak_d2.data.synthetic import synthesize_image

    size = args.infer_size
    image = synthesize_image((size, size), seed=1)[0]
    inputs = [{"image": torch.from_numpy(image).permute(2, 0, 1).contiguous()}]
    models = [("R18-half", R18_CPU, list(args.quick_opts))]
    if not args.no_r34:
        models.append(("R34 full", R34, []))
    results = {}
    for label, config, opts in models:
        cfg = build_cfg(config, opts + ["NUCLEIWEAK.UNET.INFERENCE_TILE", "0"])
        fp32 = build_model(cfg).eval()
        cl = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
        variants = [
            ("fp32", fp32, False),
            ("channels_last", cl, False),
            ("bf16", fp32, True),
            ("channels_last+bf16", cl, True),
        ]

        def forward(model, bf16):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                images, _ = model.preprocess(inputs)
                logits = model.logits(images)
            return torch.softmax(logits.float(), dim=1)[:, 1]

        probs = {name: forward(m, b) for name, m, b in variants}  # warm-up + outputs
        times = {name: [] for name, _, _ in variants}
        for _ in range(args.repeats):
            for name, m, b in variants:
                start = time.perf_counter()
                forward(m, b)
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["fp32"])
        print()
        print(
            f"Inference, {label}, one {size}x{size} image, whole-image network forward "
            f"(eval, no_grad, no post-processing), median of {args.repeats}, 1 thread"
        )
        print(f"{'variant':<20} {'s/image':>8} {'x fp32':>7} {'max|dp|':>9} {'mean|dp|':>9}")
        for name, _, _ in variants:
            med = statistics.median(times[name])
            diff = (probs[name] - probs["fp32"]).abs()
            print(
                f"{name:<20} {med:>8.3f} {med / base:>7.2f} "
                f"{diff.max().item():>9.2e} {diff.mean().item():>9.2e}"
            )
            results[(label, name)] = (med, med / base, diff.max().item())
    print("(max|dp|, mean|dp|: foreground probability difference to fp32 on the same input)")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant and repeat")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the variants")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    p.add_argument("--batch", type=int, default=4, help="baseline batch (the config's)")
    p.add_argument("--crop", type=int, default=192, help="baseline crop (the config's)")
    p.add_argument("--crop-big", type=int, default=256, help="the larger crop variant")
    p.add_argument("--infer-size", type=int, default=1000, help="inference image side")
    p.add_argument("--no-r34", action="store_true", help="skip the R34 inference model")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip compile")
    p.add_argument(
        "--compile-timeout", type=int, default=300, help="seconds allowed for compilation"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = p.parse_args(argv)
    args.quick_opts = []
    if args.quick:
        args.steps, args.repeats, args.warmup = 1, 1, 1
        args.batch, args.crop, args.crop_big, args.infer_size = 2, 64, 96, 96
        args.no_r34, args.compile = True, False
        args.quick_opts = [
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "8",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "8",
            "NUCLEIWEAK.UNET.DECODER_CHANNELS",
            "[32,16,16,8,8]",
        ]

    torch.set_num_threads(1)
    print(
        f"CPU: {cpu_model()}, {len(os.sched_getaffinity(0))} CPUs available, flags {cpu_flags()}; "
        f"{torch.get_num_threads()} torch thread unless stated"
    )
    print(f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"mkldnn bf16 supported: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    bench_training(args)
    bench_inference(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
