"""Sharding of the inputs of tools/predict.py between processes (--num-gpus/--num-machines)."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("detectron2")

from nucleiweak_d2.engine.predictor import shard_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("sized", [False, True])
def test_shards_are_disjoint_covering_and_deterministic(sized):
    rng = np.random.default_rng(0)
    for n, world in itertools.product((0, 1, 5, 17), (1, 2, 3, 8)):
        inputs = [f"/data/slide_{k:03d}.svs" for k in rng.permutation(n)]
        sizes = rng.integers(1, 10**9, n).tolist() if sized else None
        shards = [shard_inputs(inputs, r, world, sizes) for r in range(world)]
        flat = [x for shard in shards for x in shard]
        assert sorted(flat) == sorted(inputs)  # covering, each input once (disjoint)
        assert len(set(flat)) == len(flat)
        for shard in shards:  # the order of the inputs is kept
            assert shard == [x for x in inputs if x in shard]
        # the same on every machine, whatever order the inputs were listed in
        again = [
            shard_inputs(
                list(reversed(inputs)), r, world, None if sizes is None else list(reversed(sizes))
            )
            for r in range(world)
        ]
        assert [sorted(s) for s in again] == [sorted(s) for s in shards]
        if not sized and n:
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_sizes_balance_the_load():
    sizes = [100, 1, 1, 1, 1, 90, 2, 2]
    inputs = [f"s{k}" for k in range(len(sizes))]
    loads = [
        sum(sizes[inputs.index(x)] for x in shard_inputs(inputs, r, 2, sizes)) for r in range(2)
    ]
    assert sorted(loads) == [98, 100]


def test_bad_ranks():
    with pytest.raises(ValueError, match=r"shard rank must be in \[0, 2\)"):
        shard_inputs(["a"], 2, 2)
    with pytest.raises(ValueError, match="distinct"):
        shard_inputs(["a", "a"], 0, 1)


@pytest.mark.skipif(
    not os.environ.get("NUCLEIWEAK_RUN_SLOW"),
    reason="starts 3 Python processes (~30 s on 2 busy cores); set NUCLEIWEAK_RUN_SLOW=1",
)
def test_two_processes_write_each_image_once(tmp_path):
    """``--num-gpus 2`` on the CPU: Detectron2's launch (gloo), two shards, one report."""
    from nucleiweak_d2.data.io import write_image

    for k in range(3):
        image = np.full((40, 48, 3), 230, np.uint8)
        image[10:20, 5 + 10 * k : 15 + 10 * k] = (60, 40, 150)
        write_image(tmp_path / "in" / f"img{k}.png", image)
    # a real (tiny, untrained) model: spawned workers build it from the config alone
    config = REPO / "configs" / "quick" / "qu2020_instant_test.yaml"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "predict.py"),
            "--config-file",
            str(config),
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--num-gpus",
            "2",
            "--allow-random-weights",
            "--outputs",
            "labels",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 of 3 image(s) predicted, 0 skipped, 0 failed" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"img{k}_instances.png" for k in range(3)
    ]
