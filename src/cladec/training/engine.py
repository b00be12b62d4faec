"""The training engine shared by ClaDec, RefAE and the classifier trainer.

It runs epochs of minibatch steps of a loss function over

* in-memory tensors (the fast, usual case): batches are gathered by index from tensors that live
  on the training device when they fit (else in pinned host memory, copied asynchronously: ahead of the
  step on the eager path, into the CUDA graph's static buffers just before each replay on the graph path),
  with a seeded shuffling order that is the same on every device and path; or
* any iterable of batches (a user's DataLoader): streamed as given.

Two paths do the same arithmetic when both run in float32 (``amp=False``); by default the fast path
uses bf16 autocast where it is native (CUDA, and CPUs with AVX512-BF16/AMX), so there its results differ
from the plain path's by bf16 rounding:

* ``fast=True`` (default): no host synchronisation per step (per-step losses go to a device
  buffer, read every ``log_every`` steps), a fused optimiser, bf16 autocast by default on CUDA and on CPUs
  that compute bf16 natively (AVX512-BF16/AMX), and on CUDA channels-last and the whole step (gather,
  forward, backward, optimiser) captured once in a CUDA graph and replayed (inputs kept in host memory
  are copied into the graph's static buffers before each replay); optionally (``compile=True``) the
  loss is compiled with ``torch.compile`` (full batches) before the capture.
* Several tasks (``Engine.joint``: ClaDec and RefAE on the same data) train in lockstep over one batch
  order; on CUDA their steps are captured in one graph, each on its own stream, so the GPU runs their
  small kernels side by side. Without stochastic layers each task's result equals its separate fit.
* ``fast=False``: a plain eager loop that reads the loss after every step (for debugging).
* Data-parallel: with a ``torch.distributed`` group of several ranks (``torchrun``) each rank trains on its slice of
  every global batch inside DDP and the epoch records are all-reduced (:mod:`cladec.training.distributed`).
* ``checkpoint=``: the state after every epoch is saved, and a run with the same file resumes from it
  (:mod:`cladec.training.resume`).

Each epoch's record is the mean over its images: every step's losses are weighted by its batch size
(a short last batch counts for its images only), on every path. A non-finite loss stops training with
:class:`~cladec._errors.TrainingError` naming the epoch and step.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import seed as check_seed
from .._errors import TrainingError
from . import distributed as ddp
from . import resume
from .in_memory import InMemorySteps
from .options import check_amp, check_compile, cpu_has_bf16, step_decay_epochs
from .schedule import LrSchedule, Recipe
from .schedule import steps_per_epoch as count_steps

LossFn = Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]

#: With ``True`` the fast path on CUDA turns on cuDNN autotuning (``torch.backends.cudnn.benchmark``) while
#: it trains and restores the user's setting afterwards. Off: on an H200 it gave the same step time and cost
#: about 5 s of tuning in the first epoch (``benchmarks/RESULTS.md``); the user's own setting is used.
CUDNN_BENCHMARK = False


@dataclass
class EngineConfig:
    epochs: int
    batch_size: int = 128
    fast: bool = True
    amp: bool | None = None  # bf16 autocast; None: on CUDA, and on CPUs with native bf16 for the fast path
    cuda_graph: bool = True
    channels_last: bool | None = None  # None: on for the fast path on CUDA
    compile: bool | str = False  # torch.compile the loss (forward + backward) before graph capture; or a mode
    log_every: int = 50
    verbose: bool = True
    desc: str = "train"
    seed: int | None = None
    lr_decay: str | None = None  # None or "step"
    shuffle: bool = True
    recipe: Recipe | None = None  # a scheduled recipe: the learning rate is set before every step (schedule.py)
    epoch_steps: int | None = None  # streamed batches: steps per epoch when known (for the recipe's schedule)
    checkpoint: str | os.PathLike | None = None  # epoch checkpoints: written after each epoch, resumed from (resume)
    stop: Callable[[list[list[dict]]], str | None] | None = None  # every task's history -> why to stop early, or None
    set_epoch: Callable[[int], None] | None = None  # streamed batches: told each epoch's number (0-based) before it

    def __post_init__(self) -> None:
        self.compile = check_compile(self.compile, self.fast)  # type: ignore[assignment]  # from now on: a mode or None
        self.seed = check_seed(self.seed, "seed", optional=True)  # 2**80 would overflow the generator


@dataclass
class EngineResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    resumed_from: int = 0  # epochs a checkpoint had done before this run
    stopped: str | None = None  # why config.stop ended the run before config.epochs


@dataclass
class Task:
    """One model the engine trains: its loss, optimiser and modules.

    Args:
        loss_fn: Maps a batch dict (keys as in the task's tensors) to ``(total_loss, parts)`` where
            ``parts`` maps names to scalar tensors (logged).
        optimizer: The optimiser over the task's trainable parameters.
        train_modules: Modules to put in train mode while training (others are left as they are).
        part_names: Names of the logged parts, in order.
        name: Shown in the progress bar and in error messages.
        on_epoch_end: Called with each epoch's record; returns the record to keep.
    """

    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    train_modules: list[nn.Module]
    part_names: list[str]
    name: str = "train"
    on_epoch_end: Callable[[dict], dict] | None = None


class _State:
    """A task's per-run state: compiled loss, graph output, stream, tensors and static inputs."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.parts = ["loss"] + list(task.part_names)
        self.compiled: Callable | None = None
        self.graph_out: torch.Tensor | None = None
        self.stream: torch.cuda.Stream | None = None
        self.tensors: Mapping[str, torch.Tensor] = {}
        self.static: dict[str, torch.Tensor] = {}  # graph inputs copied from host memory before each replay
        self.ddp: nn.Module | None = None  # the loss through DistributedDataParallel, when training data-parallel
        self.result = EngineResult()


class Engine(InMemorySteps):
    """Minibatch training over tensors or an iterable of batches (see module docstring).

    Several tasks (:meth:`joint`) train in lockstep over the same batch order; on CUDA each task's step
    runs on its own stream inside one CUDA graph, so the GPU overlaps their small kernels.

    Args:
        loss_fn: Maps a batch dict (keys as in ``tensors``) to ``(total_loss, parts)`` where
            ``parts`` maps names to scalar tensors (logged).
        optimizer: The optimiser over the trainable parameters.
        train_modules: Modules to put in train mode while training (others are left as they are).
        device: Training device.
        config: :class:`EngineConfig`.
        part_names: Names of the logged parts, in order.
        on_epoch_end: Called with each epoch's record; returns the record to keep.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        train_modules: list[nn.Module],
        device: torch.device,
        config: EngineConfig,
        part_names: list[str],
        on_epoch_end: Callable[[dict], dict] | None = None,
    ) -> None:
        task = Task(loss_fn, optimizer, list(train_modules), list(part_names), config.desc, on_epoch_end)
        self._setup([task], device, config)

    @classmethod
    def joint(cls, tasks: list[Task], device: torch.device, config: EngineConfig) -> Engine:
        """An engine that trains ``tasks`` together (same epochs, batch order and settings)."""
        if not tasks:
            raise ValueError("joint training needs at least one task")
        self = cls.__new__(cls)
        self._setup(list(tasks), device, config)
        return self

    def _setup(self, tasks: list[Task], device: torch.device, config: EngineConfig) -> None:
        self.tasks = tasks
        self._states: list[_State] = []
        self._full_batch: int | None = None
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.cfg = config
        self.on_cuda = self.device.type == "cuda"
        check_amp(config.amp, self.device)
        if config.amp is None:
            self.use_amp = self.on_cuda or (config.fast and self.device.type == "cpu" and cpu_has_bf16())
        else:
            self.use_amp = bool(config.amp)
        cl = config.channels_last
        self.use_channels_last = (config.fast and self.on_cuda) if cl is None else bool(cl)

    # -- helpers -------------------------------------------------------------------------------
    def _autocast(self):
        enabled = self.use_amp
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=False)

    def _compute(self, s: _State, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        fn = s.ddp if s.ddp is not None else s.task.loss_fn
        if s.compiled is not None:
            size = next(iter(batch.values())).shape[0]
            if self._full_batch is None:
                self._full_batch = size
            if size == self._full_batch:
                fn = s.compiled  # full batches only: a short last batch would trigger a second compile
        with self._autocast():
            total, parts = fn(batch)
        total.backward()
        s.task.optimizer.step()
        return torch.stack([total.detach().float()] + [parts[n].detach().float() for n in s.parts[1:]])

    def _eager_step(self, s: _State, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        s.task.optimizer.zero_grad(set_to_none=not self._graph_grads)
        return self._compute(s, batch)

    def _set_lr_decay(self, epoch: int) -> bool:
        if self.cfg.lr_decay == "step" and (epoch + 1) % step_decay_epochs(self.cfg.epochs) == 0:
            for t in self.tasks:
                for g in t.optimizer.param_groups:
                    if isinstance(g["lr"], torch.Tensor):
                        g["lr"].mul_(0.1)
                    else:
                        g["lr"] *= 0.1
            return True
        return False

    def _lr_step(self) -> None:
        """Set the recipe's learning rate of the next step (nothing for a constant recipe)."""
        if self._sched is not None:
            self._sched.step()
            self._graph_lr_dirty |= self._sched.float_changed  # a float rate is baked into a graph: capture again

    @staticmethod
    def _lr(opt: torch.optim.Optimizer) -> float:
        lr = opt.param_groups[0]["lr"]
        return float(lr.item() if isinstance(lr, torch.Tensor) else lr)

    # -- main ----------------------------------------------------------------------------------
    def run(
        self,
        tensors: Mapping[str, torch.Tensor] | None = None,
        batches: Callable[[], Iterable[Mapping[str, torch.Tensor]]] | None = None,
    ) -> EngineResult:
        """Train the (single) task for ``config.epochs`` epochs over ``tensors`` or over ``batches()``."""
        if len(self.tasks) != 1:
            raise ValueError("run() trains one task; use run_all() for joint training")
        return self.run_all([tensors] if tensors is not None else None, batches)[0]

    def run_all(
        self,
        tensors: list[Mapping[str, torch.Tensor]] | None = None,
        batches: Callable[[], Iterable[Mapping[str, torch.Tensor]]] | None = None,
    ) -> list[EngineResult]:
        """Train every task for ``config.epochs`` epochs, each over its own tensors (same length, same
        batch order), or the single task over ``batches()``. Returns one result per task."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        if (tensors is None) == (batches is None):
            raise ValueError("give tensors or batches")
        if tensors is not None and len(tensors) != len(self.tasks):
            raise ValueError(f"{len(self.tasks)} tasks but {len(tensors)} tensor sets")
        if batches is not None and len(self.tasks) != 1:
            raise ValueError("joint training needs in-memory tensors")
        n = None
        if tensors is not None:
            lengths = {next(iter(t.values())).shape[0] if t else 0 for t in tensors}
            if len(lengths) != 1 or 0 in lengths:
                raise ValueError(
                    f"joint tasks need non-empty tensors with the same number of examples, got {sorted(lengths)}"
                )
            n = lengths.pop()
        t0 = time.perf_counter()
        rank, size = ddp.world()
        self._batch = self._check_world(size)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_grads = False
        self._graph_lr_dirty = False
        # compiled steps: one more eager step before the capture's own warm-up step, so that a recompile caused by
        # state the first call sets (e.g. the input normalisation's device copies) happens outside the capture,
        # where compiling is allowed (inside it failed on CUDA: "operation not permitted when stream is capturing")
        self._warmup_rounds = 1 if (cfg.compile and cfg.fast and size == 1) else 0
        self._states = states = [_State(t) for t in self.tasks]
        gen = torch.Generator()
        # seed None: a new order each run, drawn from the global generator
        # (torch.initial_seed() is constant in a process)
        if size > 1:  # one order on every rank; each rank's own draws (dropout) from a seed of its own
            order_seed = ddp.same_seed(cfg.seed)
            torch.manual_seed(ddp.rank_seed(order_seed, rank))
        else:
            order_seed = cfg.seed if cfg.seed is not None else int(torch.randint(0, 2**62, ()).item())
        gen.manual_seed(order_seed)
        modules = [m for t in self.tasks for m in t.train_modules]
        modes = [[(mod, mod.training) for mod in m.modules()] for m in modules]
        for m in modules:
            m.train()
        if self.use_channels_last:
            for m in modules:
                m.to(memory_format=torch.channels_last)  # type: ignore[call-overload, unused-ignore]  # torch 2.13 stubs omit memory_format
        for s in states:
            s.compiled = (
                torch.compile(s.task.loss_fn, mode=cfg.compile)  # type: ignore[arg-type]  # a mode: check_compile's
                if (cfg.compile and cfg.fast and size == 1)
                else None
            )
        self._full_batch = cfg.batch_size if tensors is not None else None  # a loader's: its first batch's size
        bench_was = torch.backends.cudnn.benchmark
        if tensors is not None:
            assert n is not None
            for s, t in zip(states, tensors, strict=True):
                s.tensors = t
            steps_per_epoch = math.ceil(n / cfg.batch_size)
        else:
            steps_per_epoch = None
        stack = contextlib.ExitStack()
        bar = tqdm(
            total=cfg.epochs * steps_per_epoch if steps_per_epoch else None,
            desc=cfg.desc,
            disable=not cfg.verbose or rank != 0,
            leave=True,
            dynamic_ncols=True,
            unit="step",
        )
        per_epoch = count_steps(n, cfg.batch_size) if n is not None else cfg.epoch_steps
        opts = [t.optimizer for t in self.tasks]
        total = per_epoch * cfg.epochs if per_epoch else None
        graph_lr = self.device if (cfg.fast and cfg.cuda_graph and self.on_cuda) else None  # a tensor rate there
        self._sched = LrSchedule(cfg.recipe, opts, total, graph_lr) if cfg.recipe is not None else None
        try:
            if size > 1:  # the trained modules inside DDP; parameters no optimiser updates take no part
                for s in states:
                    params = [p for g in s.task.optimizer.param_groups for p in g["params"]]
                    stack.enter_context(ddp.trainable_only(s.task.train_modules, params))
                    s.ddp = ddp.ddp_loss(s.task.train_modules, s.task.loss_fn, self.device)
            if cfg.fast and self.on_cuda and CUDNN_BENCHMARK and not _deterministic():
                torch.backends.cudnn.benchmark = True
            for epoch in range(self._resume(gen, n), cfg.epochs):
                t_epoch = time.perf_counter()
                if tensors is not None:
                    assert n is not None
                    order = torch.randperm(n, generator=gen) if cfg.shuffle else torch.arange(n)
                    if size > 1:  # this rank's slice of every global batch
                        order = ddp.shard_order(order, cfg.batch_size, rank, size)[0]
                    losses, sizes = self._epoch_tensors(order, epoch, bar)
                else:
                    if cfg.set_epoch is not None:  # the epoch's own order, also when resumed after earlier ones
                        cfg.set_epoch(epoch)
                    rows, sizes = self._epoch_batches(batches(), epoch, bar)  # type: ignore[misc]  # given: no tensors
                    losses = [rows]
                if losses[0].numel() == 0:
                    raise TrainingError("an epoch had no batches: the data set is empty")
                seconds = round(time.perf_counter() - t_epoch, 4)
                post = {}
                weights = sizes.double().unsqueeze(1)  # per-image means: each step weighted by its batch size
                for s, lo in zip(states, losses, strict=True):
                    self._check_finite(s, lo, epoch)
                    # summed over the ranks when data-parallel (every rank then records the same figures)
                    sums = ddp.all_reduce_sum(torch.cat([(lo.double() * weights).sum(0), weights.sum().view(1)]))
                    mean = (sums[:-1] / sums[-1]).tolist()
                    rec = {"epoch": epoch + 1, "lr": self._lr(s.task.optimizer), "seconds": seconds}
                    rec.update({k: float(v) for k, v in zip(s.parts, mean, strict=True)})
                    if s.task.on_epoch_end is not None:
                        rec = s.task.on_epoch_end(rec)
                    s.result.history.append(rec)
                    s.result.steps += lo.shape[0]
                    post.update(self._postfix_items(s, rec))
                if self._sched is not None:
                    self._sched.set_total(losses[0].shape[0] * cfg.epochs)  # streamed: known after an epoch
                if self._set_lr_decay(epoch):
                    self._graph_lr_dirty = True
                if cfg.checkpoint is not None:  # what the next epoch starts from (rank 0 writes)
                    done = [(s.task.train_modules, s.task.optimizer, s.result.history, s.result.steps) for s in states]
                    resume.save_checkpoint(cfg.checkpoint, self._resume_key, epoch + 1, gen, done)
                if cfg.verbose:
                    bar.set_postfix(post, refresh=False)
                    bar.set_description(f"{cfg.desc} epoch {epoch + 1}/{cfg.epochs}")
                why = cfg.stop([s.result.history for s in states]) if cfg.stop is not None else None
                if why:  # the same on every rank: the records are all-reduced
                    for s in states:
                        s.result.stopped = why
                    break
            if size > 1:  # every rank ends with rank 0's BatchNorm statistics (the ones rank 0 saves)
                ddp.broadcast_buffers(modules)
        finally:
            torch.backends.cudnn.benchmark = bench_was
            bar.close()
            if size > 1:
                stack.close()
                for s in states:
                    s.ddp = None
                    for m in s.task.train_modules:  # the gradients are views of DDP's buckets: let them go
                        for p in m.parameters():
                            p.grad = None
            if self.on_cuda:
                torch.cuda.synchronize(self.device)
            self._graph = None
            for ms in modes:  # leave every module in the mode it had before training
                for mod, was in ms:
                    mod.training = was
        seconds = time.perf_counter() - t0
        for s in states:
            s.result.seconds = seconds
        return [s.result for s in states]

    def _resume(self, gen: torch.Generator, n: int | None) -> int:
        """Load ``config.checkpoint`` when it holds a fit of these settings; returns the epochs it had done."""
        cfg = self.cfg
        if cfg.checkpoint is None:
            return 0
        tasks = [t.name for t in self.tasks]
        self._resume_key: dict[str, object] = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, images=n, tasks=tasks)
        self._resume_key.update(seed=cfg.seed, lr_decay=cfg.lr_decay, recipe=cfg.recipe.name if cfg.recipe else "paper")
        state = resume.load_checkpoint(cfg.checkpoint, self._resume_key)
        if state is None:
            return 0
        resume.restore(state, [(s.task.train_modules, s.task.optimizer) for s in self._states])
        gen.set_state(state["generator"])
        if ddp.world()[1] == 1:  # data-parallel: each rank's own draws come from its seed (set in run_all)
            torch.set_rng_state(state["rng"])
        for s, saved in zip(self._states, state["tasks"], strict=True):
            s.result.history, s.result.steps = list(saved["history"]), int(saved["steps"])
            s.result.resumed_from = int(state["epoch"])
        if self._sched is not None:  # the recipe's schedule goes on from the steps done (and their count per epoch)
            steps = self._states[0].result.steps
            total = steps // int(state["epoch"]) * cfg.epochs if state["epoch"] else None
            self._sched.resume([t.optimizer for t in self.tasks], steps, total)
        return int(state["epoch"])

    def _check_world(self, size: int) -> int:
        """This rank's batch size: the global ``batch_size`` over ``size`` ranks (which it must be a multiple of);
        a one-line notice when CUDA graphs or ``torch.compile`` are switched off for data-parallel training."""
        cfg = self.cfg
        if size == 1:
            return cfg.batch_size
        batch = ddp.local_batch(cfg.batch_size, size)
        if cfg.fast and (cfg.compile or (cfg.cuda_graph and self.on_cuda)):
            ddp.notice(f"data-parallel over {size} ranks: CUDA graphs and torch.compile are off for this fit")
        return batch

    def _postfix_items(self, s: _State, rec: Mapping[str, float]) -> dict[str, str]:
        if len(self.tasks) == 1:
            return {k: f"{float(v):.4g}" for k, v in rec.items() if k not in ("epoch",)}
        val = f" val {float(rec['val_mse']):.4g}" if "val_mse" in rec else ""
        return {s.task.name: f"{float(rec['loss']):.4g}{val}"}

    def _check_finite(self, s: _State, losses: torch.Tensor, epoch: int) -> None:
        tot = losses[:, 0]
        finite = torch.isfinite(tot)
        if not bool(finite.all()):
            step = int((~finite).nonzero()[0, 0])
            raise TrainingError(
                f"{s.task.name}: the loss became {float(tot[step])} at epoch {epoch + 1}, step "
                f"{step + 1}; training stopped. Lower the learning rate, check the inputs for "
                "NaN/inf, or use a smaller alpha."
            )

    def _epoch_batches(
        self, it: Iterable[Mapping[str, torch.Tensor]], epoch: int, bar
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch over streamed batches; returns the per-step loss rows and the steps' batch sizes."""
        s = self._states[0]
        rows = []
        sizes = []
        for i, batch in enumerate(it):
            size = next(iter(batch.values())).shape[0]
            if i > 0 and size == 1:
                continue  # a last batch of one image would break BatchNorm in train mode (as in _epoch_tensors)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            self._lr_step()
            row = self._eager_step(s, batch)
            rows.append(row)
            sizes.append(size)
            if not self.cfg.fast or (i + 1) % self.cfg.log_every == 0:
                part = torch.stack(rows).cpu()
                self._check_finite(s, part, epoch)
                self._postfix(bar, [part[-1]])
            bar.update(1)
        if not rows:
            return torch.zeros(0, len(s.parts)), torch.zeros(0)
        return torch.stack(rows).cpu(), torch.tensor(sizes, dtype=torch.float64)

    def _postfix(self, bar, rows: list[torch.Tensor]) -> None:
        if self.cfg.verbose:
            post = {}
            for s, row in zip(self._states, rows, strict=True):
                post.update(self._postfix_items(s, dict(zip(s.parts, row.tolist(), strict=True))))
            bar.set_postfix(post, refresh=False)


def _deterministic() -> bool:
    """Whether the user asked for deterministic algorithms (then cuDNN autotuning stays as they set it)."""
    return bool(torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled())
