"""Process-group helpers for runs launched by ``torchrun`` (or a single plain process).

``torchrun --nproc_per_node P tools/train.py ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and starts NCCL on GPUs
or gloo on CPUs. Without them every helper here degrades to the single-process answer.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "resolve_device", "init_distributed", "destroy_distributed", "get_rank", "get_world_size",
    "is_main_process", "synchronize", "all_gather_object", "reduce_mean", "broadcast_object",
    "any_process",
]


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available "
                         "(use device: auto or cpu)")
    return device


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group described by torchrun's environment, if any.

    Returns the device this process uses: ``cuda:LOCAL_RANK`` on GPUs (one GPU per process), the
    given device otherwise. Safe to call when the group is already initialised.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return device


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """A barrier across processes (a no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of process ``src`` on every process."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over processes (a detached copy)."""
    values = values.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= get_world_size()
    return values


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any process (an all-reduce of one integer on ``device``, the
    process group's device: a GPU under NCCL); the same answer on every process."""
    if get_world_size() == 1:
        return bool(flag)
    value = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
