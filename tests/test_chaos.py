"""Chaos: a tiny deterministic run SIGKILLed at random moments (some in the middle of checkpoint writes)
and resumed each time ends bit-identical to an uninterrupted run: weights, EMA, optimizer state and
every reproducible column of losses.csv, across level boundaries."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from alae_fast.io.checkpoint import list_checkpoints, load_checkpoint
from alae_fast.train.logging import TIMING_FIELDS, read_csv

KILLS = 10
CONFIG = {
    "model": {"kind": "style", "layer_count": 3, "startf": 8, "maxf": 16, "latent_size": 16, "mapping_layers": 2,
              "channels": 1},
    # 8 iterations per level (3 levels, 2 boundaries), a checkpoint after every iteration.
    "train": {"dataset": "builtin:digits", "kimg_per_lod": 0.064, "total_kimg": 0.192, "batch_per_lod": [8],
              "lr_per_lod": [0.002, 0.0015, 0.001], "log_kimg": 0.016, "grid_kimg": 10, "snapshot_kimg": 0.008,
              "keep_checkpoints": 2, "ema_half_life_kimg": 0.1},
}


def _command(config: Path, out: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "alae_fast.cli", "train", "--config", str(config), "--out", str(out),
           "--device", "cpu", "--precision", "fp32", "--deterministic", "--no-progress"]
    return cmd + (["--resume"] if resume else [])


def _env():
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _training_started(out: Path) -> bool:
    log = out / "log.txt"
    return log.exists() and "training " in log.read_text()


def _kill_during_a_write(proc, ckpt_dir: Path, timeout: float) -> bool:
    """SIGKILL `proc` as soon as a checkpoint temp file exists; False if none appeared in time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if ckpt_dir.is_dir() and any(name.endswith(".tmp") for name in os.listdir(ckpt_dir)):
            proc.send_signal(signal.SIGKILL)
            return True
    return False


def _chaos_run(config: Path, out: Path, rng: random.Random) -> tuple[int, int]:
    """Run, SIGKILL and resume until KILLS kills have landed mid-training, then finish; returns
    (kills, kills that caught a checkpoint write in progress)."""
    kills = during_writes = attempts = 0
    while True:
        attempts += 1
        assert attempts < 4 * KILLS, "the run kept finishing before it could be killed"
        proc = subprocess.Popen(_command(config, out, resume=attempts > 1), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kills >= KILLS:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            return kills, during_writes
        while proc.poll() is None and not _training_started(out):
            time.sleep(0.01)
        if kills % 2 == 0:
            caught = _kill_during_a_write(proc, out / "checkpoints", timeout=5.0)
        else:
            time.sleep(rng.uniform(0.0, 0.6))
            caught = False
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), err
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            during_writes += caught


def _state(run: Path) -> dict:
    final = list_checkpoints(run / "checkpoints")[-1]
    return load_checkpoint(final)


def _assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    config = tmp_path / "chaos.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    reference = subprocess.run(_command(config, tmp_path / "reference", resume=False), env=_env(),
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    kills, during_writes = _chaos_run(config, tmp_path / "chaos", random.Random(0))
    assert kills >= KILLS and during_writes >= 1, (kills, during_writes)

    want, got = _state(tmp_path / "reference"), _state(tmp_path / "chaos")
    assert got["images"] == want["images"] == 192 and got["lod"] == 2
    for key in ("model", "ema", "step", "interval", "guard"):
        _assert_same(want[key], got[key], key)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]  # noqa: E731
    rows_want = strip(read_csv(tmp_path / "reference" / "losses.csv"))
    rows_got = strip(read_csv(tmp_path / "chaos" / "losses.csv"))
    assert len(rows_want) == 12 and rows_got == rows_want
    assert not [p for p in (tmp_path / "chaos" / "checkpoints").iterdir() if p.name.endswith(".tmp")]
