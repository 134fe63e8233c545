"""Multi-process training on CPU with gloo: 2 ranks == 1 process, rank-0-only writes,
torchrun restart + resume, uneven batch split."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from alae_fast.data import TensorStream
from alae_fast.train import Trainer, train
from alae_fast.train import distributed
from _train_utils import mlp_config_file, one_thread, tiny_config, tiny_images  # noqa: F401 (fixture)

STEPS = 6  # batch 4, 16 images per lod: crosses into lod 1 and its blend transition
LR = 0.002  # tiny_config's lr
# Adam with beta1 = 0 moves a parameter whose gradient is rounding noise by a full ±lr step of random
# sign, and six such steps cascade into every other weight; an eps far above that noise (1e-4) keeps
# the comparison about gradient averaging, not about Adam amplifying last-bit differences.
ADAM_EPS = 1e-4
# fp32 tolerance of 2 ranks vs 1 process: batch means are summed in another order, and Adam
# carries that rounding (~1e-7 relative) through 6 steps. Seen: <= 3e-5 abs on weights of ~3,
# the same as one process whose batches are merely reversed; the bound leaves ~7x headroom.
RTOL, ATOL = 1e-4, 2e-4
# The bias added before the first instance norm of G (constant input) has a zero gradient up
# to rounding; Adam turns that noise into steps of up to lr, so it is only bounded by lr * steps.
ZERO_GRAD = {"generator.blocks.0.adain_1.bias"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, tmp) -> None:
    """Train STEPS steps through the normal loop; save the result where the test can read it."""
    torch.set_num_threads(1)
    cfg = tiny_config(snapshot_kimg=0.016, grid_kimg=0.016, adam_eps=ADAM_EPS)
    stream = TensorStream(tiny_images(), rank=rank, world_size=world)
    # noise='fixed': per-pixel noise is drawn inside G per rank, so only fixed noise makes the
    # 2-rank and 1-process runs see identical inputs (z and style mixing are shared already).
    tr = Trainer(cfg, tmp / f"out{world}-{rank}", stream=stream, rank=rank, world_size=world, noise="fixed")
    seen, take = [], stream._take
    stream._take = lambda n: (lambda r: (seen.extend(r[0].tolist()), r)[1])(take(n))
    train(tr, max_steps=STEPS, progress=False, tensorboard=False)
    torch.save({"model": tr.model.state_dict(), "ema": tr.ema.state_dict(), "seen": seen, "steps": tr.steps},
               tmp / f"result{world}-{rank}.pt")


def _spawned(rank: int, world: int, port: int, tmp) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    env = distributed.init_from_env(torch.device("cpu"))
    assert (env.rank, env.world_size) == (rank, world)
    try:
        _run(rank, world, tmp)
    finally:
        distributed.shutdown()


@pytest.mark.usefixtures("one_thread")
def test_two_ranks_match_one_process_and_only_rank0_writes(tmp_path):
    mp.spawn(_spawned, args=(2, _free_port(), tmp_path), nprocs=2, join=True)
    _run(0, 1, tmp_path)
    r0, r1, single = (torch.load(tmp_path / f"result{n}.pt") for n in ("2-0", "2-1", "1-0"))
    assert r0["steps"] == r1["steps"] == single["steps"] == STEPS
    for name in ("model", "ema"):  # includes w_avg
        for key, value in r0[name].items():
            assert torch.equal(value, r1[name][key]), f"ranks disagree on {name}.{key}"
            if key in ZERO_GRAD:
                assert (value - single[name][key]).abs().max() <= 2 * LR * STEPS
            else:
                torch.testing.assert_close(value, single[name][key], rtol=RTOL, atol=ATOL, msg=f"{name}.{key}")
    assert not set(r0["seen"]) & set(r1["seen"]) and len(set(r0["seen"])) == len(r0["seen"]) == 2 * STEPS
    assert sorted(r0["seen"] + r1["seen"]) == sorted(single["seen"])  # the same global batches
    out0, out1 = tmp_path / "out2-0", tmp_path / "out2-1"
    assert (out0 / "summary.json").is_file() and len(list((out0 / "checkpoints").glob("ckpt-*.pt"))) == 2
    assert not out1.exists(), f"rank 1 wrote {list(out1.rglob('*'))}"
    state = torch.load(next((out0 / "checkpoints").glob("ckpt-*.pt")), weights_only=True)
    assert [r["stream"]["rank"] for r in state["ranks"]] == [0, 1]


FAILING_MAIN = """
import os, sys
from alae_fast.cli import main
from alae_fast.train import Trainer

step = Trainer.step

def failing_step(self):  # rank 1 dies before step FAIL_AT_STEP, on the first attempt only
    if self.rank == 1 and self.steps == int(os.environ["FAIL_AT_STEP"]) \\
            and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        os._exit(3)
    return step(self)

Trainer.step = failing_step
sys.exit(main(sys.argv[1:]))
"""


def test_torchrun_restart_resumes_from_last_checkpoint(tmp_path):
    cfg = mlp_config_file(tmp_path / "t.yaml", total_kimg=0.064, snapshot_kimg=0.024)
    script = tmp_path / "failing_main.py"
    script.write_text(FAILING_MAIN)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--max-restarts", "1", str(script), "train", "--config", str(cfg), "--out", str(out),
           "--no-progress", "--device", "cpu", "--resume"]
    env = {**os.environ, "FAIL_AT_STEP": "5", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    # Checkpoints at 24 and 48 images (steps 3, 6); rank 1 died before step 5 -> resume at 24.
    assert "no checkpoint in" in log and "resumed from" in log and "ckpt-000000000024.pt at 0.02 kimg" in log, log
    assert (out / "checkpoints" / "ckpt-000000000064.pt").is_file()
    summary = yaml.safe_load((out / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["kimg"] == pytest.approx(0.064)


def test_uneven_batch_split_names_lod_batch_and_world_size():
    cfg = tiny_config(batch_per_lod=[4, 6])
    with pytest.raises(ValueError, match=r"global batch 6 of lod 1 .* world size 4"):
        Trainer(cfg, stream=TensorStream(tiny_images()), rank=0, world_size=4)


def test_world_size_without_process_group_says_how_to_launch():
    with pytest.raises(RuntimeError, match="torchrun"):
        Trainer(tiny_config(), stream=TensorStream(tiny_images()), rank=0, world_size=2)
