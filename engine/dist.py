"""torch.distributed from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK), nanoGPT-style."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """'auto' → cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda requested but CUDA is not available on this machine")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
        # Training crops and TTA view sizes repeat batch after batch, so cuDNN's per-shape algorithm search pays
        # for itself after the first batch of each shape (mmseg's cudnn_benchmark=True).
        torch.backends.cudnn.benchmark = True
    return dev


def init(device: str | None = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (NCCL on CUDA, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=30)
        dist.init_process_group(backend=backend, timeout=timeout, device_id=dev if dev.type == "cuda" else None,
                                **_restart_store(rank, world, timeout))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def _restart_store(rank: int, world: int, timeout: datetime.timedelta) -> dict:
    """init_process_group's store for a worker group that torchrun --max-restarts started again: the agent's store
    still holds the previous group's addresses under the same keys, and gloo connected to those dead ranks
    ("connectFullMesh failed ... Connection refused"); a prefix per restart keeps each group to its own keys."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt == "0" or "MASTER_ADDR" not in os.environ:
        return {}
    from torch.distributed.rendezvous import _create_c10d_store
    store = _create_c10d_store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rank, world, timeout)
    return {"store": dist.PrefixStore(f"trashseg/restart_{attempt}", store), "rank": rank, "world_size": world}


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank when any rank raised the flag (used for SIGTERM and NaN stops)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_int(value: int, info: DistInfo) -> int:
    """The largest of every rank's `value`, on every rank (the loop's stop code: one all-reduce per step)."""
    if not info.enabled:
        return value
    t = torch.tensor([float(value)], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather(obj, info: DistInfo) -> list:
    """Every rank's `obj`, in rank order, on every rank ([obj] outside a process group)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, src: int, info: DistInfo):
    """Rank `src`'s `obj` on every rank (pickled through the process group: a checkpoint reaches ranks whose
    filesystem does not hold it)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def is_main() -> bool:
    """Whether this process is rank 0 (or alone), for code that has no DistInfo at hand."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def from_main(obj):
    """Rank 0's value of `obj` on every rank (itself outside a process group). For settings each process would
    otherwise resolve from its own machine, such as --amp auto from its CPU's flags: nodes with different CPUs
    must still run one precision."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel whose gradients live in its all-reduce buckets (gradient_as_bucket_view).

    Why: a conv weight with a size-1 dimension (depthwise (C, 1, 7, 7), 1×1 convs) has two valid stride patterns,
    and its gradient takes the one its input's memory format suggests (channels_last after ConvNeXt's permuted
    LayerNorms), while DDP's bucket view copies the parameter's. Each step DDP then copied every such gradient
    through a strided view ("Grad strides do not match bucket view strides"). With the gradients being the bucket
    views, autograd accumulates straight into them (same values: 0 + g), there is no copy and no second gradient
    buffer. They must exist before DDP is built (it adopts them then) and stay allocated: the training loop zeroes
    them with ``zero_grad(set_to_none=False)``."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
