"""Training speed options of ``cfg.NUCLEIWEAK.TRAIN``: channels_last, bf16 autocast on CPU,
torch threads; and the smoke run of ``benchmarks/bench_training_speed.py``."""

from pathlib import Path

import pytest
from conftest import load_script, make_tiny_coco

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.engine import AMPTrainer, SimpleTrainer  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from nucleiweak_d2.config import setup_cfg  # noqa: E402
from nucleiweak_d2.engine import Trainer  # noqa: E402
from nucleiweak_d2.engine.trainer import CPUAutocastTrainer, cpu_bf16_enabled  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs/quick/qu2020_instant_test.yaml")
CONVS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("speed")
    make_tiny_coco(tmp, "speed", size=(96, 96), ratio=0.5)
    return tmp


def _det_cfg(out, opts=()):
    """The Qu et al. point-detector stage on the tiny data (the Trainer's own mapper)."""
    return setup_cfg(
        QUICK,
        [
            "MODEL.META_ARCHITECTURE",
            "NucleiWeakUNetPointDetector",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "1",
            "NUCLEIWEAK.MAPPER",
            "NucleiWeakQu2020DetMapper",
            "DATASETS.TRAIN",
            "('speed_train',)",
            "DATASETS.TEST",
            "('speed_val',)",
            "NUCLEIWEAK.EVAL_DATASETS",
            "[]",
            "TEST.EVAL_PERIOD",
            "0",
            "OUTPUT_DIR",
            str(out),
            *opts,
        ],
    )


def _steps(trainer, n=2):
    """Run ``n`` training steps of a Trainer / SimpleTrainer; the total losses."""
    losses = []
    for i in range(n):
        with EventStorage(i) as storage:
            trainer.iter = i
            trainer.run_step()
            losses.append(storage.latest()["total_loss"][0])
    return losses


def _conv_output_dtypes(model, run):
    """The (dtype, NHWC) pairs of the conv outputs during ``run()`` (ambiguous ones left out)."""
    seen = set()

    def hook(_module, _inputs, out):
        if not _ambiguous(out):
            seen.add((out.dtype, _nhwc(out)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, CONVS)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def _ambiguous(t):
    """Both NCHW- and NHWC-contiguous (one channel, or 1x1 spatial): no format to check."""
    return t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _nhwc(t):
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _close(trainer):
    trainer._trainer.concurrent_executor.shutdown(wait=True)


def test_default_config_keeps_todays_trainer(data):
    cfg = _det_cfg(data / "default")
    node = cfg.NUCLEIWEAK.TRAIN
    assert (node.CHANNELS_LAST, node.CPU_BF16, node.NUM_THREADS) == (False, False, 0)
    threads = torch.get_num_threads()
    trainer = Trainer(cfg)
    assert type(trainer._trainer) is SimpleTrainer
    assert torch.get_num_threads() == threads
    convs = [m for m in trainer.model.modules() if isinstance(m, CONVS)]
    assert convs and all(m.weight.is_contiguous() for m in convs)
    seen = _conv_output_dtypes(trainer.model, lambda: _steps(trainer, 1))
    assert seen == {(torch.float32, False)}
    _close(trainer)


@pytest.mark.parametrize(
    "channels_last, bf16", [(True, False), (False, True), (True, True)], ids=["cl", "bf16", "both"]
)
def test_options_train_two_finite_steps(data, channels_last, bf16):
    cfg = _det_cfg(
        data / f"opt_{channels_last}_{bf16}",
        [
            "NUCLEIWEAK.TRAIN.CHANNELS_LAST",
            str(channels_last),
            "NUCLEIWEAK.TRAIN.CPU_BF16",
            str(bf16),
        ],
    )
    trainer = Trainer(cfg)
    model = trainer.model
    assert isinstance(trainer._trainer, CPUAutocastTrainer) == bf16
    convs = [m for m in model.modules() if isinstance(m, CONVS)]
    if channels_last:
        assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = []

    def run():
        losses.extend(_steps(trainer, 2))

    seen = _conv_output_dtypes(model, run)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert seen == {(torch.bfloat16 if bf16 else torch.float32, channels_last)}
    # the parameters (and their gradients, the optimiser state) stay float32 and are updated
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} == {torch.float32}
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    _close(trainer)


def test_bf16_segmentor_losses_are_float32_and_finite():
    """The seg stage (two pseudo-label maps, ignore = 2) and the CRF fine-tuning loss under the
    bf16 step, on synthetic batches."""
    from nucleiweak_d2.modeling.meta_arch import NucleiWeakUNetSegmentor

    cfg = setup_cfg(QUICK, ["MODEL.DEVICE", "cpu", "NUCLEIWEAK.TRAIN.CHANNELS_LAST", "True"])
    torch.manual_seed(0)
    model = NucleiWeakUNetSegmentor(cfg, crf_weight=0.005).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g),
            "sem_seg": torch.randint(0, 3, (2, 64, 64), generator=g),
        }
        for _ in range(2)
    ]

    def loader():
        while True:
            yield batch

    trainer = CPUAutocastTrainer(model, loader(), Trainer.build_optimizer(cfg, model))
    losses = _steps(trainer, 2)
    assert all(torch.isfinite(torch.tensor(losses)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_dict = model(batch)
    assert set(loss_dict) == {"loss_sem_seg_t0", "loss_sem_seg_t1", "loss_crf"}
    for name in ("loss_sem_seg_t0", "loss_sem_seg_t1"):  # logits.float() before the CE
        assert loss_dict[name].dtype == torch.float32
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    trainer.concurrent_executor.shutdown(wait=True)


def test_num_threads_is_applied(data):
    before = torch.get_num_threads()
    try:
        trainer = Trainer(_det_cfg(data / "threads", ["NUCLEIWEAK.TRAIN.NUM_THREADS", "2"]))
        assert torch.get_num_threads() == 2
        _close(trainer)
    finally:
        torch.set_num_threads(before)


def test_cpu_bf16_only_on_cpu():
    """On CUDA the CPU key is ignored: Detectron2's SOLVER.AMP.ENABLED route stays in charge."""
    cfg = setup_cfg(
        None, ["MODEL.DEVICE", "cpu", "NUCLEIWEAK.TRAIN.CPU_BF16", "True"], freeze=False
    )
    assert cpu_bf16_enabled(cfg)
    cfg.MODEL.DEVICE = "cuda:0"  # set after setup_cfg, which falls back to cpu without CUDA
    assert not cpu_bf16_enabled(cfg)
    cfg.NUCLEIWEAK.TRAIN.CPU_BF16 = False
    cfg.MODEL.DEVICE = "cpu"
    assert not cpu_bf16_enabled(cfg)


@pytest.mark.gpu
def test_cuda_with_cpu_keys_uses_detectron2_amp(data):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    opts = ["NUCLEIWEAK.TRAIN.CPU_BF16", "True", "NUCLEIWEAK.TRAIN.CHANNELS_LAST", "True"]
    opts += ["MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True"]
    trainer = Trainer(_det_cfg(data / "cuda", opts))
    assert type(trainer._trainer) is AMPTrainer
    assert all(torch.isfinite(torch.tensor(_steps(trainer, 2))))
    _close(trainer)


def test_benchmark_quick_prints_the_table(capsys):
    bench = load_script("bench_training_speed", REPO / "benchmarks" / "bench_training_speed.py")
    threads = torch.get_num_threads()
    assert bench.main(["--quick"]) == 0
    torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for text in (
        "torch ",
        "baseline fp32",
        "channels_last+bf16",
        "threads 2",
        "decoder half",
        "x base/img",
        "max|dp|",
        "100% of conv outputs are NHWC",
    ):
        assert text in out, text
    assert " NO" not in out  # every variant's loss is finite
