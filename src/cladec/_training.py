"""The training engine shared by ClaDec, RefAE and the classifier trainer.

It runs epochs of minibatch steps of a loss function over

* in-memory tensors (the fast, usual case): batches are gathered by index from tensors that live
  on the training device when they fit (else in pinned host memory, copied ahead asynchronously),
  with a seeded shuffling order that is the same on every device and path; or
* any iterable of batches (a user's DataLoader): streamed as given.

Two paths do the same arithmetic:

* ``fast=True`` (default): no host synchronisation per step (per-step losses go to a device
  buffer, read every ``log_every`` steps), a fused optimiser, bf16 autocast on CUDA and on CPUs that
  compute bf16 natively (AVX512-BF16/AMX), and on CUDA channels-last, cuDNN autotuning and the whole
  step (gather, forward, backward, optimiser) captured once in a CUDA graph and replayed; optionally
  (``compile=True``) the loss is compiled with ``torch.compile`` (full batches) before the capture.
* ``fast=False``: a plain eager loop that reads the loss after every step (for debugging).

A non-finite loss stops training with :class:`~cladec._errors.TrainingError` naming the epoch
and step.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch
from torch import nn

from ._errors import ConfigError, TrainingError

LossFn = Callable[[Mapping[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]

#: The fast path on CUDA turns on cuDNN autotuning (``torch.backends.cudnn.benchmark``) while it trains
#: (shapes are static, so each convolution is tuned once) and restores the user's setting afterwards.
CUDNN_BENCHMARK = True


def step_decay_epochs(epochs: int) -> int:
    """The authors' step decay period: lr × 0.1 after every ``E//3 + E//10 + 2`` epochs."""
    return epochs // 3 + epochs // 10 + 2


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

    def __post_init__(self) -> None:
        self.compile = compile_mode(self.compile)  # type: ignore[assignment]


#: ``torch.compile`` modes the engine accepts (the others build CUDA graphs of their own, which the
#: engine's whole-step graph already is).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


def compile_mode(value: bool | str | None) -> str | None:
    """``compile=`` as a ``torch.compile`` mode: ``False``/``None`` → ``None``, ``True`` → ``"default"``."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ConfigError(f"compile must be True, False or one of {', '.join(map(repr, COMPILE_MODES))}, got {value!r}")


@dataclass
class EngineResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


class Engine:
    """Minibatch training over tensors or an iterable of batches (see module docstring).

    Args:
        loss_fn: Maps a batch dict (keys as in ``tensors``) to ``(total_loss, parts)`` where
            ``parts`` maps names to scalar tensors (logged).
        optimizer: The optimiser over the trainable parameters.
        train_modules: Modules to put in train mode while training (others are left as they are).
        device: Training device.
        config: :class:`EngineConfig`.
        part_names: Names of the logged parts, in order.
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
        self.on_epoch_end = on_epoch_end
        self._compiled = None
        self._full_batch: int | None = None
        self.loss_fn = loss_fn
        self.opt = optimizer
        self.train_modules = train_modules
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.cfg = config
        self.part_names = ["loss"] + list(part_names)
        self.on_cuda = self.device.type == "cuda"
        if config.amp is None:
            self.use_amp = self.on_cuda or (config.fast and self.device.type == "cpu" and cpu_has_bf16())
        else:
            self.use_amp = bool(config.amp) and self.device.type in ("cuda", "cpu")
        cl = config.channels_last
        self.use_channels_last = (config.fast and self.on_cuda) if cl is None else bool(cl)

    # -- helpers -------------------------------------------------------------------------------
    def _autocast(self):
        enabled = self.use_amp
        return torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=False
        )

    def _compute(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        fn = self.loss_fn
        if self._compiled is not None:
            size = next(iter(batch.values())).shape[0]
            if self._full_batch is None:
                self._full_batch = size
            if size == self._full_batch:
                fn = self._compiled  # full batches only: a short last batch would trigger a second compile
        with self._autocast():
            total, parts = fn(batch)
        total.backward()
        self.opt.step()
        return torch.stack([total.detach().float()] + [parts[n].detach().float() for n in self.part_names[1:]])

    def _eager_step(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=not self._graph_grads)
        return self._compute(batch)

    def _set_lr_decay(self, epoch: int) -> bool:
        if self.cfg.lr_decay == "step" and (epoch + 1) % step_decay_epochs(self.cfg.epochs) == 0:
            for g in self.opt.param_groups:
                if isinstance(g["lr"], torch.Tensor):
                    g["lr"].mul_(0.1)
                else:
                    g["lr"] *= 0.1
            return True
        return False

    def _lr(self) -> float:
        lr = self.opt.param_groups[0]["lr"]
        return float(lr.item() if isinstance(lr, torch.Tensor) else lr)

    # -- main ----------------------------------------------------------------------------------
    def run(
        self,
        tensors: Mapping[str, torch.Tensor] | None = None,
        batches: Callable[[], Iterable[Mapping[str, torch.Tensor]]] | None = None,
    ) -> EngineResult:
        """Train for ``config.epochs`` epochs over ``tensors`` or over ``batches()``."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        res = EngineResult()
        t0 = time.perf_counter()
        self._graph = None
        self._graph_grads = False
        self._graph_lr_dirty = False
        gen = torch.Generator()
        gen.manual_seed(cfg.seed if cfg.seed is not None else torch.initial_seed() % 2**63)
        modes = [[(mod, mod.training) for mod in m.modules()] for m in self.train_modules]
        for m in self.train_modules:
            m.train()
        if self.use_channels_last:
            for m in self.train_modules:
                m.to(memory_format=torch.channels_last)
        self._compiled = torch.compile(self.loss_fn, mode=cfg.compile) if (cfg.compile and cfg.fast) else None
        self._full_batch = cfg.batch_size if tensors is not None else None  # a loader's: its first batch's size
        bench_was = torch.backends.cudnn.benchmark
        n = None
        if tensors is not None:
            n = next(iter(tensors.values())).shape[0]
            resident = all(t.device == self.device for t in tensors.values())
            steps_per_epoch = math.ceil(n / cfg.batch_size)
        else:
            steps_per_epoch = None
        bar = tqdm(
            total=cfg.epochs * steps_per_epoch if steps_per_epoch else None,
            desc=cfg.desc,
            disable=not cfg.verbose,
            leave=True,
            dynamic_ncols=True,
            unit="step",
        )
        try:
            if cfg.fast and self.on_cuda and CUDNN_BENCHMARK and not _deterministic():
                torch.backends.cudnn.benchmark = True
            for epoch in range(cfg.epochs):
                t_epoch = time.perf_counter()
                if tensors is not None:
                    assert n is not None
                    order = torch.randperm(n, generator=gen) if cfg.shuffle else torch.arange(n)
                    losses = self._epoch_tensors(tensors, order, resident, epoch, bar)
                else:
                    losses = self._epoch_batches(batches(), epoch, bar)  # type: ignore[misc]
                if losses.numel() == 0:
                    raise TrainingError("an epoch had no batches: the data set is empty")
                self._check_finite(losses, epoch, upto=None)
                mean = losses.double().mean(0).tolist()
                rec = {"epoch": epoch + 1, "lr": self._lr(), "seconds": round(time.perf_counter() - t_epoch, 4)}
                rec.update({k: float(v) for k, v in zip(self.part_names, mean)})
                if self.on_epoch_end is not None:
                    rec = self.on_epoch_end(rec)
                res.history.append(rec)
                res.steps += losses.shape[0]
                if self._set_lr_decay(epoch):
                    self._graph_lr_dirty = True
                bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k not in ("epoch",)}, refresh=False)
                if cfg.verbose:
                    bar.set_description(f"{cfg.desc} epoch {epoch + 1}/{cfg.epochs}")
        finally:
            torch.backends.cudnn.benchmark = bench_was
            bar.close()
            if self.on_cuda:
                torch.cuda.synchronize(self.device)
            self._graph = None
            for ms in modes:  # leave every module in the mode it had before training
                for mod, was in ms:
                    mod.training = was
        res.seconds = time.perf_counter() - t0
        return res

    def _check_finite(self, losses: torch.Tensor, epoch: int, upto: int | None) -> None:
        tot = losses[:, 0] if upto is None else losses[:upto, 0]
        finite = torch.isfinite(tot)
        if not bool(finite.all()):
            step = int((~finite).nonzero()[0, 0])
            raise TrainingError(
                f"{self.cfg.desc}: the loss became {float(tot[step])} at epoch {epoch + 1}, step "
                f"{step + 1}; training stopped. Lower the learning rate, check the inputs for "
                "NaN/inf, or use a smaller alpha."
            )

    def _epoch_batches(self, it: Iterable[Mapping[str, torch.Tensor]], epoch: int, bar) -> torch.Tensor:
        rows = []
        for i, batch in enumerate(it):
            if i > 0 and next(iter(batch.values())).shape[0] == 1:
                continue  # a last batch of one image would break BatchNorm in train mode (as in _epoch_tensors)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            row = self._eager_step(batch)
            rows.append(row)
            if not self.cfg.fast or (i + 1) % self.cfg.log_every == 0:
                part = torch.stack(rows).cpu()
                self._check_finite(part, epoch, upto=None)
                self._postfix(bar, part[-1])
            bar.update(1)
        if not rows:
            return torch.zeros(0, len(self.part_names))
        return torch.stack(rows).cpu()

    def _postfix(self, bar, row: torch.Tensor) -> None:
        if self.cfg.verbose:
            bar.set_postfix({k: f"{float(v):.4g}" for k, v in zip(self.part_names, row)}, refresh=False)

    def _gather(self, tensors, idx: torch.Tensor, resident: bool) -> dict[str, torch.Tensor]:
        if resident:
            return {k: v.index_select(0, idx) for k, v in tensors.items()}
        out = {}
        for k, v in tensors.items():
            if v.device.type == "cpu":
                b = v.index_select(0, idx)
                if self.on_cuda:
                    b = b.pin_memory().to(self.device, non_blocking=True)
            else:  # a small tensor (labels) may sit on the device while the images stream
                b = v.index_select(0, idx.to(v.device, non_blocking=True))
            out[k] = b
        return out

    def _epoch_tensors(self, tensors, order: torch.Tensor, resident: bool, epoch: int, bar) -> torch.Tensor:
        cfg = self.cfg
        B = cfg.batch_size
        n = order.numel()
        # a last batch of one image would break BatchNorm in train mode: it is skipped (as a DataLoader
        # with drop_last would for that batch only)
        steps = math.ceil(n / B) if n % B != 1 or n == 1 else n // B
        buf = torch.zeros(steps, len(self.part_names), device=self.device)
        use_graph = cfg.fast and cfg.cuda_graph and self.on_cuda and resident
        if resident and self.on_cuda:
            order = order.to(self.device)  # one copy per epoch; batches are gathered on the device
        nxt = self._gather(tensors, order[:B], resident) if not use_graph else None
        done = 0
        for i in range(steps):
            lo, hi = i * B, min((i + 1) * B, n)
            if use_graph and hi - lo == B:
                buf[i].copy_(self._graph_step(tensors, order[lo:hi]))
            else:
                batch = nxt if nxt is not None else self._gather(tensors, order[lo:hi], resident)
                # prefetch the next batch (host gather + async copy) before this step runs
                nxt = self._gather(tensors, order[hi : hi + B], resident) if (not use_graph and hi < n) else None
                buf[i].copy_(self._eager_step(batch))
            if not cfg.fast or (i + 1) % cfg.log_every == 0 or i == steps - 1:
                if not cfg.fast or cfg.verbose or (i + 1) % (cfg.log_every * 4) == 0:
                    part = buf[: i + 1].cpu()  # one host synchronisation per log_every steps
                    self._check_finite(part, epoch, upto=None)
                    self._postfix(bar, part[-1])
                bar.update(i + 1 - done)
                done = i + 1
        return buf.cpu()

    # -- CUDA graph ----------------------------------------------------------------------------
    def _graph_step(self, tensors, idx: torch.Tensor) -> torch.Tensor:
        if self._graph is not None and self._graph_lr_dirty and not self._lr_is_tensor():
            self._graph = None  # the learning rate is baked into the graph: capture again
        self._graph_lr_dirty = False
        if self._graph is None:
            # the warm-up step inside _capture trains on this batch; replays start with the next
            return self._capture(tensors, idx)
        self._static_idx.copy_(idx)
        self._graph.replay()
        return self._graph_out

    def _lr_is_tensor(self) -> bool:
        return isinstance(self.opt.param_groups[0]["lr"], torch.Tensor)

    def _capture(self, tensors, idx: torch.Tensor) -> torch.Tensor:
        self._static_idx = idx.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            # warm-up (cuDNN autotuning, optimiser state): one real training step on this batch
            self.opt.zero_grad(set_to_none=True)
            out = self._compute({k: v.index_select(0, self._static_idx) for k, v in tensors.items()})
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            self._graph_out = self._compute({k: v.index_select(0, self._static_idx) for k, v in tensors.items()})
        self._graph = graph
        self._graph_grads = True
        return out


def _deterministic() -> bool:
    """Whether the user asked for deterministic algorithms (then cuDNN autotuning stays as they set it)."""
    return bool(torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled())


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 autocast speeds it up."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def make_optimizer(
    kind: str,
    params: list[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    device: torch.device,
    fast: bool,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Adam or SGD; on CUDA with ``fast`` fused (and capturable, for CUDA graphs)."""
    dev_type = torch.device(device).type
    cuda_fast = fast and dev_type == "cuda"
    if kind == "adam":
        if cuda_fast:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True, capturable=True)
        if fast and dev_type == "cpu":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind == "sgd":
        if cuda_fast:
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimiser {kind!r}")
