"""Data-parallel training over ``torch.distributed`` ranks (``torchrun``; NCCL on GPUs, gloo on CPUs).

cladec trains data-parallel whenever a ``torch.distributed`` process group of more than one rank is initialised:
by the command line under ``torchrun`` (:func:`launched`), or by a user's own script that called
``torch.distributed.init_process_group`` before fitting. Then, in :class:`~cladec.training.engine.Engine`:

* ``batch_size`` is the **global** batch: each step, rank ``r`` trains on the ``r``-th of ``world`` equal slices
  of the batch a single process would train on (one shuffled order, the same on every rank). In-memory data is
  held by every rank; streamed data is read in shards (:func:`sampler`). The batch size must be a multiple of the
  number of ranks; of the last, short batch each rank takes an equal share, so up to ``world - 1`` of its images
  are left out of that epoch (a different few each epoch).
* The trained modules run inside :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over
  the ranks while the backward pass runs; weights and buffers broadcast from rank 0 when the fit starts); a frozen
  classifier is not wrapped. BatchNorm layers being trained normalise over their rank's slice of the batch.
* Every epoch's losses are all-reduced (weighted by images), so all ranks record the same history; random draws
  of the trained modules (dropout) come from a seed derived from the fit's seed and the rank, so a run is
  reproducible for a given number of ranks.
* CUDA graphs and ``torch.compile`` are switched off (one notice): DDP's gradient all-reduce runs between the
  backward pass and the optimiser step.

Only rank 0 writes files and shows progress bars (:func:`is_main`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from .._errors import ConfigError

__all__ = [
    "world",
    "is_main",
    "launched",
    "barrier",
    "same_seed",
    "rank_seed",
    "shard_order",
    "all_reduce_sum",
    "gather_rows",
    "sampler",
    "local_batch",
    "check_sharded",
    "refuse",
    "write_on_main",
    "broadcast_buffers",
    "from_main",
    "ddp_loss",
    "trainable_only",
    "DEFAULT_TIMEOUT_S",
]

#: Seconds a collective waits for the other ranks before it fails (``$CLADEC_DIST_TIMEOUT`` changes it for the
#: command line): a rank that died without ``torchrun`` noticing (a lost node) stops the others after this long.
DEFAULT_TIMEOUT_S = 1800

_writing = False  # rank 0 is inside write_on_main: nested writes go ahead without another barrier


def world() -> tuple[int, int]:
    """``(rank, number of ranks)`` of the initialised process group; ``(0, 1)`` when there is none.

    Examples:
        >>> world()  # a plain process
        (0, 1)
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (or not distributed): the one that writes files and shows progress.

    Examples:
        >>> is_main()
        True
    """
    return world()[0] == 0


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def same_seed(seed: int | None) -> int:
    """``seed``, or for None one drawn from the global generator on rank 0 and shared, so every rank agrees.

    Examples:
        >>> same_seed(7)
        7
    """
    if seed is not None:
        return int(seed)
    drawn = torch.randint(0, 2**62, (1,), dtype=torch.int64)
    if world()[1] > 1:
        import torch.distributed as dist

        drawn = drawn.to(_comm_device())
        dist.broadcast(drawn, src=0)
    return int(drawn.item())


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank ``rank``'s own random draws (dropout), derived from the fit's ``seed``.

    Examples:
        >>> rank_seed(0, 0) != rank_seed(0, 1)
        True
    """
    return (int(seed) * 1_000_003 + 7_919 * (rank + 1)) % (2**62)


def shard_order(order: torch.Tensor, batch_size: int, rank: int, size: int) -> tuple[torch.Tensor, int]:
    """Rank ``rank``'s part of one epoch's order of images: its slice of every global batch, in step order.

    Args:
        order: The epoch's order of image indices (the same on every rank).
        batch_size: The global batch size (a multiple of ``size``).
        rank: This rank.
        size: The number of ranks.

    Returns:
        ``(local order, local batch size)``: batch ``i`` of this rank is ``local[i*b:(i+1)*b]``; of the last, short
        global batch each rank takes ``len // size`` images.

    Examples:
        >>> shard_order(torch.arange(10), 4, 1, 2)
        (tensor([2, 3, 6, 7, 9]), 2)
    """
    n = order.numel()
    b = batch_size // size
    full = n // batch_size
    head = order[: full * batch_size].view(full, size, b)[:, rank].reshape(-1)
    last = (n - full * batch_size) // size
    start = full * batch_size + rank * last
    return torch.cat([head, order[start : start + last]]), b


def local_batch(batch_size: int, size: int) -> int:
    """A rank's batch: the global ``batch_size`` over ``size`` ranks, refused (ConfigError) unless it divides evenly.

    Examples:
        >>> local_batch(64, 2)
        32
    """
    if batch_size % size:
        lo = max(size, batch_size - batch_size % size)
        raise ConfigError(
            f"batch_size is the global batch over all {size} ranks and must be a multiple of {size}, got "
            f"{batch_size}; use e.g. {lo} or {lo + size}"
        )
    return batch_size // size


def _comm_device() -> torch.device:
    """The device of the tensors a collective takes: the current GPU for NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks (``t`` itself without a process group), on ``t``'s device.

    Examples:
        >>> all_reduce_sum(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    if world()[1] == 1:
        return t
    import torch.distributed as dist

    out = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def gather_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` computed in shards: each rank applies ``fn`` to its share of the rows and all ranks gather the
    results (a plain call without a process group). ``fn`` must map rows independently.

    Examples:
        >>> gather_rows(lambda t: t * 2, torch.arange(3.0))
        tensor([0., 2., 4.])
    """
    rank, size = world()
    if size == 1:
        return fn(x)
    import torch.distributed as dist

    n = x.shape[0]
    per = -(-n // size)
    part = fn(x[rank * per : min(n, (rank + 1) * per)])
    dev = _comm_device()
    shape = (per,) + tuple(part.shape[1:])
    buf = torch.zeros(shape, dtype=part.dtype, device=dev)
    buf[: part.shape[0]] = part.to(dev)
    parts = [torch.empty_like(buf) for _ in range(size)]
    dist.all_gather(parts, buf)
    return torch.cat(parts)[:n].to(part.device)


def sampler(dataset, *, shuffle: bool, seed: int | None):
    """A :class:`~torch.utils.data.distributed.DistributedSampler` over ``dataset`` for this rank (None without a
    process group): every rank reads its own ``1 / world`` of the images, in one order seeded with ``seed`` (drawn
    on rank 0 and shared when None) and drawn again each epoch.

    Examples:
        >>> sampler(list(range(8)), shuffle=True, seed=0) is None  # a plain process
        True
    """
    rank, size = world()
    if size == 1:
        return None
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=shuffle, seed=same_seed(seed))


def check_sharded(loader: object) -> None:
    """Data-parallel: warn when a DataLoader the user gave feeds every rank the same images (no DistributedSampler).

    Examples:
        >>> check_sharded(None)  # nothing to check (and not data-parallel)
    """
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    if world()[1] == 1 or not isinstance(loader, DataLoader):
        return
    if not isinstance(loader.sampler, DistributedSampler):
        warnings.warn(
            "training data-parallel on a DataLoader without a DistributedSampler: every rank reads the same batches "
            "(give it sampler=DistributedSampler(dataset), or pass the Dataset and let cladec shard it)",
            UserWarning,
            stacklevel=3,
        )


class _Loss(nn.Module):
    """The trained modules with a task's loss as the forward pass, so DDP can wrap them as one module."""

    def __init__(self, modules: list[nn.Module], loss_fn: Callable) -> None:
        super().__init__()
        self.trained = nn.ModuleList(modules)
        self._loss_fn = loss_fn

    def forward(self, batch: Mapping[str, torch.Tensor]):
        return self._loss_fn(batch)


def ddp_loss(modules: list[nn.Module], loss_fn: Callable, device: torch.device) -> nn.Module:
    """``loss_fn`` run through :class:`~torch.nn.parallel.DistributedDataParallel` over ``modules``: calling it
    computes the loss, and its backward pass averages the gradients of ``modules`` over the ranks.

    The modules' parameters that take no part in training must have ``requires_grad`` off (:func:`trainable_only`).
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_Loss(modules, loss_fn), device_ids=ids, gradient_as_bucket_view=True)


@contextlib.contextmanager
def trainable_only(modules: list[nn.Module], params: list[nn.Parameter]) -> Iterator[None]:
    """Turn ``requires_grad`` off, for the duration, on the parameters of ``modules`` that are not in ``params``
    (the optimiser's), so that DDP expects gradients only where training makes them."""
    keep = {id(p) for p in params}
    changed = [p for m in modules for p in m.parameters() if p.requires_grad and id(p) not in keep]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


def refuse(what: str) -> None:
    """ConfigError when data-parallel: ``what`` does not run over several ranks (nothing in a plain process).

    Examples:
        >>> refuse("the plain loop")  # not data-parallel: nothing happens
    """
    size = world()[1]
    if size > 1:
        raise ConfigError(
            f"{what} does not run data-parallel ({size} ranks); use in-memory data on the fast path, or run it "
            "without torchrun"
        )


def write_on_main(write: Callable[[], object]) -> None:
    """Call ``write`` on rank 0 only (every rank when not data-parallel); the other ranks wait until it is done, so
    the files are complete everywhere when it returns.

    Examples:
        >>> write_on_main(lambda: print("written"))
        written
    """
    global _writing
    rank, size = world()
    if size == 1 or _writing:  # not data-parallel, or a write within rank 0's write (a run's explainer saves)
        write()
        return
    if rank == 0:
        _writing = True
        try:
            write()
        finally:
            _writing = False
    barrier()


def from_main(value):
    """Rank 0's ``value`` on every rank (``value`` itself when not data-parallel): for decisions that read files
    only rank 0 may see (a sweep's finished cells), so every rank takes the same path.

    Examples:
        >>> from_main({"done": 3})
        {'done': 3}
    """
    if world()[1] == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)  # between the ranks of this job: never a user's file
    return box[0]


def broadcast_buffers(modules: list[nn.Module]) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics) of ``modules``: DDP broadcasts them before each
    forward pass, so after the last one each rank has updated its own."""
    import torch.distributed as dist

    if world()[1] == 1:
        return
    for m in modules:
        for b in m.buffers():
            t = b.to(_comm_device())
            dist.broadcast(t, src=0)
            if t is not b:
                b.copy_(t)


def notice(text: str) -> None:
    """A one-line notice on rank 0's standard error."""
    if is_main():
        print(f"cladec: {text}", file=sys.stderr)


@contextlib.contextmanager
def launched(device: torch.device | None = None) -> Iterator[tuple[int, int]]:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1) for the
    duration; yields ``(rank, world size)`` (``(0, 1)`` outside ``torchrun``: nothing happens).

    The backend is NCCL for a CUDA device (each rank on GPU ``LOCAL_RANK``), else gloo; collectives time out after
    ``$CLADEC_DIST_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT_S`). A group initialised already (by the
    caller) is used as it is and left open.

    Raises:
        ConfigError: ``$WORLD_SIZE`` / ``$RANK`` are malformed, or the timeout is not a positive number.

    Examples:
        >>> with launched(torch.device("cpu")) as (rank, size):  # not under torchrun
        ...     rank, size
        (0, 1)
    """
    import torch.distributed as dist

    size = _env_int("WORLD_SIZE", 1)
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        yield world()
        return
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run without torchrun")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ConfigError(f"WORLD_SIZE={size} but ${key} is not set: start the command with torchrun")
    raw = os.environ.get("CLADEC_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise ConfigError(f"$CLADEC_DIST_TIMEOUT must be a positive number of seconds, got {raw!r}")
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gloo's notes on unset network interfaces
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout))
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def _env_int(key: str, default: int) -> int:
    raw = os.environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"${key} must be an integer (set by torchrun), got {raw!r}") from None
