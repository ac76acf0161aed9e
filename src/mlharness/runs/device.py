"""Where a torch run computes: the device it asked for, and its place in a ``torchrun`` job.

Shared by the lm and rl engines. torch is imported inside the functions, so that importing
this module (``mlx --help``, tabular runs, dry runs) never loads it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlharness.errors import ConfigError, PeerProcessError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


_joined: list[bool] = []  # non-empty once this process joined a torchrun job's group


def init_distributed(device_type: str) -> Dist:
    """Join the process group torchrun describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        if device_type == "cuda":
            import torch

            # nccl's object collectives run on the current device: this process's own GPU.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    _joined.append(True)
    return Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def end_processes(dist: Dist, together: bool) -> None:
    """Leave the process group; after a clean end, together (a rank that destroyed it and
    exited while rank 0 still wrote its files was aborted by gloo); after an error a peer
    may be gone, so without waiting for it."""
    if not dist.enabled:
        return
    import torch.distributed as tdist

    if not tdist.is_initialized():
        return
    if together:
        tdist.barrier()
    tdist.destroy_process_group()


def leave_job(code: int) -> None:
    """End a torchrun worker now, after its exit handlers but without Python's finalisation.

    Modules that torch.distributed imports after the group started (transformers brings
    ``torch.distributed.checkpoint`` and ``_shard``) keep gloo's threads alive past
    ``destroy_process_group``. Tearing them down during finalisation sometimes aborted a
    worker whose work was all done ("terminate called without an active exception"):
    torchrun then failed the job, or on several nodes waited 300 s at its exit barrier.
    Everything that matters is written (atomically) before this point.
    """
    if not _joined:
        return
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def leads() -> bool:
    """Whether this process reports: under torchrun only rank 0 does (it alone writes the run)."""
    return os.environ.get("RANK", "0") == "0"


def broadcast_object(value: Any, dist: Dist) -> Any:
    """Rank 0's ``value`` on every process (itself without a process group)."""
    if not dist.enabled:
        return value
    import torch.distributed as tdist

    box = [value]
    with _collective(dist):
        tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, dist: Dist) -> list[Any]:
    """Every process's ``value``, in rank order, on every process."""
    if not dist.enabled:
        return [value]
    import torch.distributed as tdist

    out: list[Any] = [None] * dist.world_size
    with _collective(dist):
        tdist.all_gather_object(out, value)
    return out


@contextlib.contextmanager
def _collective(dist: Dist) -> Iterator[None]:
    """A collective that fails because another process of the job is gone says so.

    torchrun stops the job when one process fails; the others then fail in their next
    collective with a transport error ("Connection closed by peer") that does not say why.
    """
    try:
        yield
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PeerProcessError(
            f"Another process of this torchrun job stopped (torchrun's report names it, and "
            f"its error is in the log), so process {dist.rank} stopped too: fix that and run "
            f"the same command again to resume. [{first}]"
        ) from exc


def sum_gradients(params: Sequence[torch.Tensor], dist: Dist) -> None:
    """Sum ``.grad`` over the processes, in place, with one all-reduce per dtype.

    A parameter without a gradient on every process keeps none (AdamW then skips it, as one
    process would); one with a gradient somewhere gets zeros where it had none.
    """
    if not dist.enabled:
        return
    import torch
    import torch.distributed as tdist

    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    with _collective(dist):
        tdist.all_reduce(has, op=tdist.ReduceOp.MAX)
    chosen = [p for p, h in zip(params, has.tolist(), strict=True) if h]
    for p in chosen:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for dtype in sorted({p.grad.dtype for p in chosen if p.grad is not None}, key=str):
        grads = [p.grad for p in chosen if p.grad is not None and p.grad.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in grads])
        with _collective(dist):
            tdist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a device that is not there is an error."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "train.device is 'cuda' but no CUDA device is available: use 'auto' or 'cpu'."
            )
        return torch.device("cuda", local_rank)
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is 'mps' but MPS is not available: use 'auto' or 'cpu'.")
    return torch.device(requested)
