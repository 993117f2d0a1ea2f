"""Data parallelism under `torchrun` (DESIGN §10): every rank draws the same mini-batch and works on
its own contiguous shard of it.

Zeroth-order methods all-reduce only loss scalars (each rank's summed loss and term count, for
each probe): the step seed is the same on every rank, so the directions and the update are too,
and no parameter or gradient is ever communicated. First-order methods all-reduce gradients
(or let FSDP2 reduce-scatter them). Shard r is micro-batch r of the batch cut into world-size
parts, so a run on W ranks computes exactly what one process computes with
optimizer.micro_batches=W: the same per-shard sums, added in the same order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from zoft.errors import ZoftError

log = logging.getLogger(__name__)
T = TypeVar("T")


class DistributedError(ZoftError):
    """A multi-process setting that cannot work."""


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def launched_world_size() -> int:
    """The world size torchrun announced in the environment (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str) -> str:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA); returns the device
    this rank computes on. A no-op in a single process."""
    if launched_world_size() == 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run one process")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    log.info("rank %d of %d on %s", rank(), world_size(), device)
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: Sequence[T]) -> Sequence[T]:
    """This rank's contiguous part of `batch` (the whole batch in a single process)."""
    world = world_size()
    if world == 1:
        return batch
    if len(batch) < world:
        raise DistributedError(
            f"a batch of {len(batch)} examples cannot be split over {world} processes; raise "
            f"batch_size to at least {world}"
        )
    bounds = [round(i * len(batch) / world) for i in range(world + 1)]
    r = rank()
    return batch[bounds[r] : bounds[r + 1]]


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over the ranks, in float64 (the values themselves in one process)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flags: Sequence[bool]) -> list[bool]:
    """Each flag true on every rank when it is true on one (ranks must agree on when to stop)."""
    if world_size() == 1:
        return list(flags)
    tensor = torch.tensor([1 if f else 0 for f in flags], device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def gather_shards(items: list[Any]) -> list[Any]:
    """Every rank's list, concatenated in rank order (the list itself in one process)."""
    if world_size() == 1:
        return items
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


@torch.no_grad()
def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum every gradient over the ranks (plain data parallelism for the first-order methods)."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_model(model: torch.nn.Module) -> None:
    """FSDP2: shard each transformer block (the model's no-split modules) and then the rest, so
    every rank holds 1/W of the parameters, gradients and AdamW state."""
    from torch.distributed.fsdp import fully_shard

    if world_size() == 1:
        raise DistributedError(
            "fsdp=true needs several processes: launch with torchrun --nproc-per-node=N -m zoft"
        )
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module)
    fully_shard(model)
    _SHARDED_MODELS.append(True)


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether a parameter is an FSDP2 shard (a DTensor)."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


_SHARDED_MODELS: list[bool] = []  # set by shard_model: checkpoints are then written per rank


def shards_parameters() -> bool:
    """Whether this process trains an FSDP-sharded model (each rank checkpoints its shards)."""
    return bool(_SHARDED_MODELS)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded tensor (the tensor itself otherwise)."""
    return tensor.to_local() if is_sharded(tensor) else tensor


_LOCAL_MARK = "__local_shard__"


def local_state(obj: Any) -> Any:
    """A state (nested dicts and lists) with each sharded tensor replaced by its local shard, so
    it saves and loads as plain tensors; restore with sharded_state."""
    if is_sharded(obj):
        return {_LOCAL_MARK: obj.to_local()}
    if isinstance(obj, dict):
        return {k: local_state(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(local_state(v) for v in obj)
    return obj


def sharded_state(state: dict[int, dict[str, Any]], params: Sequence[torch.Tensor]) -> None:
    """Undo local_state in an optimizer's per-parameter state, in place: each local shard is
    wrapped again as a shard laid out like its parameter (same mesh, placements and shape)."""
    from torch.distributed.tensor import DTensor

    for index, entries in state.items():
        p = params[index]
        for key, value in entries.items():
            if isinstance(value, dict) and _LOCAL_MARK in value:
                entries[key] = DTensor.from_local(
                    value[_LOCAL_MARK].to(p.device),
                    p.device_mesh,
                    p.placements,
                    shape=p.shape,
                    stride=p.stride(),
                )


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def full_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whole CPU copies of possibly sharded tensors; every rank must call it (it gathers)."""
    return {
        name: (t.full_tensor() if is_sharded(t) else t).detach().to("cpu").contiguous()
        for name, t in tensors.items()
    }
