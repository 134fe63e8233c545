"""Multi-process training under torchrun: process-group set-up and the few collectives the
Trainer needs (gradient averaging, parameter broadcast, agreeing on objects).

Why no DistributedDataParallel: an ALAE iteration has three optimizer steps that freeze
different sub-networks (E+D, then F+G, then E+F+G with D unused), and the D step takes the
R1 penalty by double backward. DDP's reducer would need one wrapper per sub-network,
find_unused_parameters and no_sync tricks around the R1 input gradient. Averaging the
gradients by hand after each backward is simpler and provably exact: every gradient that
exists after the backward is all-reduced once, in flat buckets, before its optimizer steps.
The cost is that communication is not overlapped with the backward (see docs/distributed.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

BUCKET_BYTES = 25 << 20  # like DDP's default bucket_cap_mb


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: torch.device, timeout_minutes: float = 30.0) -> DistEnv:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT): NCCL and cuda:LOCAL_RANK on GPU, gloo on CPU. Without torchrun: one process."""
    device = torch.device(device)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistEnv(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                               "set torchrun --nproc_per_node to at most the number of GPUs per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = timedelta(minutes=timeout_minutes)
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, store=_store(rank, world, timeout), rank=rank, world_size=world,
                                timeout=timeout, **kwargs)
    return DistEnv(rank, world, local_rank, device)


def _store(rank: int, world: int, timeout: timedelta) -> dist.Store:
    """The TCPStore at MASTER_ADDR:MASTER_PORT (torchrun's agent hosts it when it says so, else
    rank 0), with keys prefixed by the restart attempt: a group restarted by torchrun must not
    read the addresses its dead predecessor left there (seen to hang gloo's connect)."""
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_hosts, timeout=timeout, multi_tenant=True)
    return dist.PrefixStore(f"alae_fast/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_group(world_size: int) -> None:
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"world_size {world_size} needs a process group: launch with torchrun, or call "
                           "alae_fast.train.distributed.init_from_env() first")


def _buckets(tensors, limit: int = BUCKET_BYTES):
    """Consecutive groups of same-dtype tensors of at most `limit` bytes (one tensor may exceed it)."""
    bucket, size = [], 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (size + nbytes > limit or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


def all_reduce_mean(tensors) -> None:
    """Average `tensors` in place over all ranks: flat buckets, all launched, then waited on."""
    tensors = list(tensors)
    world = dist.get_world_size()
    pending = []
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        pending.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
    for bucket, flat, work in pending:
        work.wait()
        flat.div_(world)
        for t, part in zip(bucket, flat.split([t.numel() for t in bucket])):
            t.copy_(part.view_as(t))


def reduce_gradients(params, extra: torch.Tensor | None = None) -> torch.Tensor | None:
    """Average every existing .grad of `params` (and `extra`, e.g. a batch statistic) over ranks.

    Parameters without a gradient are skipped; they are the same on every rank because every
    rank runs the same graph (same lod, blend, R1 and style-mixing decisions).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if extra is not None:
        extra = extra.detach().float().clone()
        grads.append(extra)
    all_reduce_mean(grads)
    return extra


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy `src`'s parameters and buffers to every rank (bucketed)."""
    tensors = [t for t in list(module.parameters()) + list(module.buffers())]
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.broadcast(flat, src)
        for t, part in zip(bucket, flat.split([t.numel() for t in bucket])):
            t.copy_(part.view_as(t))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one."""
    t = torch.tensor([float(bool(flag))], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj, src: int = 0):
    """`src`'s obj on every rank (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
