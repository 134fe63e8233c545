"""Data-parallel scaling of training on one node (alae_fast.train.distributed).

  gpu:   img/s of a full iteration at 1, 2, 4, ... ranks (one process per GPU, NCCL), with
         the config's global batch split over the ranks (strong scaling), and efficiency vs 1.
  both:  bytes all-reduced per iteration (every gradient of every optimizer step, fp32) and an
         ESTIMATE of 8-GPU efficiency from the 1-rank step time, that volume and an assumed
         bus bandwidth (env ALAE_BENCH_BUSBW_GBS, default 100): step_N = t1 / N + 2 (N-1)/N * bytes / busbw,
         no overlap of communication with compute (the trainer reduces after each backward).

Options: --bench-configs (built-in config names, default ffhq), --bench-lods (default 5).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from alae_fast.data import TensorStream
from alae_fast.train import Trainer, load_config
from alae_fast.train import distributed
from benchmarks.conftest import device_name, option_list

WARMUP, STEPS = 3, 10
ESTIMATE_RANKS = 8
DEFAULT_BUSBW_GBS = 100.0  # assumed NCCL all-reduce bus bandwidth; NVLink nodes reach more


def assumed_busbw_gbs() -> float:
    return float(os.environ.get("ALAE_BENCH_BUSBW_GBS", DEFAULT_BUSBW_GBS))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_trainer(cfg_name: str, lod: int, device, rank: int = 0, world: int = 1) -> Trainer:
    """The config's model at `lod` (after its transition) on synthetic uint8 images."""
    cfg = load_config(cfg_name)
    side = 4 * 2 ** (cfg.model.layer_count - 1) if cfg.model.kind == "style" else cfg.model.image_size
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (max(256, 2 * world), cfg.model.channels, side, side), generator=gen,
                           dtype=torch.uint8)
    stream = TensorStream(images, device=device, rank=rank, world_size=world)
    cfg.train.grid_size = 2
    tr = Trainer(cfg, None, device=device, precision="bf16" if device.type == "cuda" else "fp32",
                 stream=stream, rank=rank, world_size=world)
    tr.images = tr.schedule.images_per_lod * lod + tr.schedule.images_per_lod // 2 + 1
    return tr


def comm_bytes_per_iteration(tr: Trainer) -> int:
    """Bytes the trainer all-reduces in one iteration: the gradients that exist after each of
    the three backwards (E+D, F+G, E+F+G), as the reducer sends them."""
    def grad_bytes(opts):
        return sum(p.grad.numel() * p.grad.element_size() for o in opts for g in o.param_groups
                   for p in g["params"] if p.grad is not None)
    phase = tr.phase()
    if phase.lod != tr.lod:
        tr._enter_lod(phase)
    unit, local = tr.step_unit, phase.batch // tr.world_size
    unit.d_step(tr._real_batch(local, phase), phase.lod, phase.blend)
    total = grad_bytes([unit.opt_ed])
    unit.g_step(local, phase.lod, phase.blend)
    total += grad_bytes([unit.opt_fg])
    unit.ae_step(local, phase.lod, phase.blend)
    return total + grad_bytes([unit.opt_ed, unit.opt_fg])


def time_steps(tr: Trainer) -> float:
    """Mean seconds per iteration over STEPS after WARMUP (all ranks in lockstep)."""
    for _ in range(WARMUP):
        tr.step()
    t0 = tr.time_now()
    for _ in range(STEPS):
        tr.step()
    return (tr.time_now() - t0) / STEPS


def estimate(step_s: float, nbytes: int, ranks: int, busbw_gbs: float) -> dict:
    comm_s = 2 * (ranks - 1) / ranks * nbytes / (busbw_gbs * 1e9)
    step_n = step_s / ranks + comm_s
    return {"estimate_ranks": ranks, "assumed_busbw_gbs": busbw_gbs, "estimate_comm_s": comm_s,
            "estimate_step_s": step_n, "estimate_efficiency": (step_s / ranks) / step_n}


def _worker(rank: int, world: int, port: int, cfg_name: str, lod: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    env = distributed.init_from_env(torch.device("cuda"))
    try:
        tr = make_trainer(cfg_name, lod, env.device, rank, world)
        seconds = time_steps(tr)
        if rank == 0:
            Path(out).write_text(json.dumps({"step_s": seconds, "batch": tr.phase().batch}))
    finally:
        distributed.shutdown()


def _rank_counts():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 1
    return [k for k in (1, 2, 4, 8, 16) if k <= n] or [1]


def _cases(config):
    return [(c, int(lod)) for c in (option_list(config, "configs") or ["ffhq"])
            for lod in (option_list(config, "lods") or [5])]


@pytest.mark.gpu
@pytest.mark.parametrize("ranks", _rank_counts())
def test_scaling_img_per_s(benchmark, request, ranks):
    results = {}
    for cfg_name, lod in _cases(request.config):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            mp.spawn(_worker, args=(ranks, _free_port(), cfg_name, lod, str(out)), nprocs=ranks, join=True)
            r = json.loads(out.read_text())
        results[f"{cfg_name}-lod{lod}"] = {**r, "img_per_s": r["batch"] / r["step_s"]}
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update({"kind": "scaling", "device": device_name(torch.device("cuda")),
                                 "ranks": ranks, "results": results})


def _estimate_case(benchmark, cfg_name: str, lod: int, device) -> dict:
    tr = make_trainer(cfg_name, lod, device)
    nbytes = comm_bytes_per_iteration(tr)
    step_s = time_steps(tr)
    info = {"kind": "scaling-estimate", "device": device_name(device), "config": cfg_name, "lod": lod,
            "batch": tr.phase().batch, "step_s_1rank": step_s, "allreduce_bytes_per_iteration": nbytes,
            "parameter_bytes": sum(p.numel() * p.element_size() for p in tr.model.parameters()),
            "label": "ESTIMATE, not a measurement",
            **estimate(step_s, nbytes, ESTIMATE_RANKS, assumed_busbw_gbs())}
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update(info)
    return info


@pytest.mark.gpu
def test_scaling_estimate(benchmark, request):
    for cfg_name, lod in _cases(request.config):
        _estimate_case(benchmark, cfg_name, lod, torch.device("cuda"))


@pytest.mark.smoke
def test_scaling_estimate_smoke(benchmark):
    """Tiny config, 1 CPU rank: E, F, G are reduced twice per iteration and D once, so the
    volume lies between one and two copies of the parameters."""
    torch.manual_seed(0)
    info = _estimate_case(benchmark, "tiny", 1, torch.device("cpu"))
    assert info["parameter_bytes"] < info["allreduce_bytes_per_iteration"] < 2 * info["parameter_bytes"]
    assert 0 < info["estimate_efficiency"] <= 1
