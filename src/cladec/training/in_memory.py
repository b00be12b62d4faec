"""The in-memory half of the fast path: batches gathered by index from tensors on the device (or pinned host
memory), and on CUDA the whole step captured once in a CUDA graph and replayed (:class:`InMemorySteps`, which
:class:`~cladec.training.engine.Engine` inherits)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # annotations only: engine imports this module at run time
    from .engine import EngineConfig, Task, _State

__all__ = ["InMemorySteps"]


class InMemorySteps:
    """Gathering in-memory batches and the CUDA-graph step of :class:`~cladec.training.engine.Engine`."""

    # set by Engine, declared here for the type checker
    tasks: list[Task]
    cfg: EngineConfig
    device: torch.device
    on_cuda: bool
    _states: list[_State]
    _order: torch.Tensor
    _order_dev: torch.Tensor
    _static_idx: torch.Tensor
    _graph: torch.cuda.CUDAGraph | None
    _graph_grads: bool
    _graph_lr_dirty: bool
    _warmup_rounds: int
    _batch: int  # this rank's batch size (the configured one over the number of ranks)

    if TYPE_CHECKING:  # defined by Engine

        def _compute(self, s: _State, batch: Mapping[str, torch.Tensor]) -> torch.Tensor: ...

        def _eager_step(self, s: _State, batch: Mapping[str, torch.Tensor]) -> torch.Tensor: ...

        def _check_finite(self, s: _State, losses: torch.Tensor, epoch: int) -> None: ...

        def _postfix(self, bar, rows: list[torch.Tensor]) -> None: ...

        def _lr_step(self) -> None: ...

    def _host_rows(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` of a host tensor, in pinned memory when training on CUDA (for an async copy)."""
        b = v.index_select(0, idx)
        return b.pin_memory() if self.on_cuda else b

    def _gather(self, s: _State, lo: int, hi: int) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in s.tensors.items():
            if v.device == self.device:
                out[k] = v.index_select(0, self._order_dev[lo:hi])
            elif v.device.type == "cpu":
                out[k] = self._host_rows(v, self._order[lo:hi]).to(self.device, non_blocking=True)
            else:  # another device: gathered there, then moved
                out[k] = v.index_select(0, self._order[lo:hi].to(v.device)).to(self.device, non_blocking=True)
        return out

    def _epoch_tensors(self, order: torch.Tensor, epoch: int, bar) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One epoch over in-memory tensors; returns each task's per-step loss rows and the steps' batch sizes."""
        cfg = self.cfg
        states = self._states
        B = self._batch
        n = order.numel()
        # a last batch of one image would break BatchNorm in train mode: it is skipped (as a DataLoader
        # with drop_last would for that batch only)
        steps = math.ceil(n / B) if n % B != 1 or n == 1 else n // B
        bufs = [torch.zeros(steps, len(s.parts), device=self.device) for s in states]
        # every path (graph replays of full batches, eager steps, the short last batch) weighs a row by its batch size
        sizes = torch.tensor([min(B, n - i * B) for i in range(steps)], dtype=torch.float64)
        # the graph reads device tensors by index and host tensors from static buffers copied in per step
        use_graph = (
            cfg.fast
            and cfg.cuda_graph
            and self.on_cuda
            and B == cfg.batch_size  # not data-parallel: DDP's all-reduce runs between backward and step
            and all(v.device == self.device or v.device.type == "cpu" for s in states for v in s.tensors.values())
        )
        self._order = order
        self._order_dev = order.to(self.device)  # one copy per epoch; device tensors are gathered there
        nxt = [self._gather(s, 0, B) for s in states] if not use_graph else None
        done = 0
        for i in range(steps):
            lo, hi = i * B, min((i + 1) * B, n)
            self._lr_step()  # the recipe's learning rate (outside the graph: a tensor rate is updated in place)
            if use_graph and hi - lo == B:
                rows = self._graph_step(lo, hi)
            else:
                batch = nxt if nxt is not None else [self._gather(s, lo, hi) for s in states]
                # prefetch the next batch (host gather + async copy) before this step runs
                nxt = [self._gather(s, hi, hi + B) for s in states] if (not use_graph and hi < n) else None
                rows = [self._eager_step(s, b) for s, b in zip(states, batch, strict=True)]
            for buf, row in zip(bufs, rows, strict=True):
                buf[i].copy_(row)
            if not cfg.fast or (i + 1) % cfg.log_every == 0 or i == steps - 1:
                if not cfg.fast or cfg.verbose or (i + 1) % (cfg.log_every * 4) == 0:
                    parts = [buf[: i + 1].cpu() for buf in bufs]  # one host synchronisation per log_every steps
                    for s, part in zip(states, parts, strict=True):
                        self._check_finite(s, part, epoch)
                    self._postfix(bar, [part[-1] for part in parts])
                bar.update(i + 1 - done)
                done = i + 1
        return [buf.cpu() for buf in bufs], sizes

    # -- CUDA graph ----------------------------------------------------------------------------
    def _graph_step(self, lo: int, hi: int) -> list[torch.Tensor]:
        if self._graph is not None and self._graph_lr_dirty and not self._lr_is_tensor():
            self._graph = None  # the learning rate is baked into the graph: capture again
        self._graph_lr_dirty = False
        if self._graph is None and self._warmup_rounds > 0:
            self._warmup_rounds -= 1
            return self._side_steps(lo, hi)
        if self._graph is None:
            # the warm-up step inside _capture trains on this batch; replays start with the next
            return self._capture(lo, hi)
        self._fill_static(lo, hi)
        self._graph.replay()
        return [s.graph_out for s in self._states]  # type: ignore[misc]  # set by _capture

    def _fill_static(self, lo: int, hi: int) -> None:
        self._static_idx.copy_(self._order_dev[lo:hi])
        rows: dict[int, torch.Tensor] = {}  # a host tensor several tasks read is gathered (and pinned) once
        for s in self._states:
            for k, buf in s.static.items():
                v = s.tensors[k]
                if id(v) not in rows:
                    rows[id(v)] = self._host_rows(v, self._order[lo:hi])
                buf.copy_(rows[id(v)], non_blocking=True)

    def _static_batch(self, s: _State) -> dict[str, torch.Tensor]:
        return {
            k: (s.static[k] if k in s.static else v.index_select(0, self._static_idx)) for k, v in s.tensors.items()
        }

    def _lr_is_tensor(self) -> bool:
        return all(isinstance(t.optimizer.param_groups[0]["lr"], torch.Tensor) for t in self.tasks)

    def _side_steps(self, lo: int, hi: int) -> list[torch.Tensor]:
        """One eager training step of every task on batch ``lo:hi``, each on its own side stream (the graph's
        static inputs are made and filled here)."""
        dev = self.device
        states = self._states
        self._static_idx = self._order_dev[lo:hi].clone()
        for s in states:
            if not s.static:
                s.static = {
                    k: torch.empty((hi - lo,) + tuple(v.shape[1:]), dtype=v.dtype, device=dev)
                    for k, v in s.tensors.items()
                    if v.device != dev
                }
            if s.stream is None:
                s.stream = torch.cuda.Stream(dev)
        self._fill_static(lo, hi)
        main = torch.cuda.current_stream(dev)
        outs = []
        for s in states:
            s.stream.wait_stream(main)  # type: ignore[union-attr]  # set in the loop above
            with torch.cuda.stream(s.stream):
                s.task.optimizer.zero_grad(set_to_none=not self._graph_grads)
                outs.append(self._compute(s, self._static_batch(s)))
        for s in states:
            main.wait_stream(s.stream)  # type: ignore[arg-type]  # set in the loop above
        return outs

    def _capture(self, lo: int, hi: int) -> list[torch.Tensor]:
        dev = self.device
        states = self._states
        # warm-up (optimiser state, compile): one real training step on this batch, each task on a side stream
        outs = self._side_steps(lo, hi)
        graph = torch.cuda.CUDAGraph()
        for s in states:
            s.task.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            if len(states) == 1:
                states[0].graph_out = self._compute(states[0], self._static_batch(states[0]))
            else:  # each task on its own stream, forked from and joined back into the capture stream
                cap = torch.cuda.current_stream(dev)
                for s in states:
                    s.stream.wait_stream(cap)  # type: ignore[union-attr]  # set by _side_steps
                    with torch.cuda.stream(s.stream):
                        s.graph_out = self._compute(s, self._static_batch(s))
                for s in states:
                    cap.wait_stream(s.stream)  # type: ignore[arg-type]  # set by _side_steps
        self._graph = graph
        self._graph_grads = True
        return outs
