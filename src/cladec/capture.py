"""Layer capture: run a model up to one layer and return that layer's output.

A layer is given as a dotted module name (``"features.7"``, ``"layer3.1.conv2"``) or as the module
object itself; it is resolved to, and stored as, its name. Capture uses a forward hook and stops the
forward pass as soon as the layer has produced its output, so nothing after the layer is computed.

A layer's output has one of the layouts of :mod:`cladec.layouts` — ``nchw`` maps, ``nhwc`` channels-last maps,
``tokens`` ``(N, T, D)``, ``flat`` ``(N, D)`` — given as ``layout=`` or detected once, at the first output
(declared by the model family, else measured at a second image size, else refused). The decoder always sees
``(N, C, H, W)`` maps (or ``(N, D)`` vectors): an ``nhwc`` map is permuted, the patch tokens are laid back on
their ``g×g`` grid as ``(N, D, g, g)``. Extra tokens in front of the patch tokens (a class token, distillation
or register tokens) are handled explicitly by ``prefix_tokens``: ``"drop"`` (default) discards them,
``"channels"`` broadcasts them over the grid as extra channels so the decoder sees them too. Their number ``k``
is the model's own ``num_prefix_tokens`` (timm), else inferred as the smallest ``k`` in 0..8 for which ``T - k``
is a perfect square (197 tokens → 1 class token + 14×14; 17 → 1 + 4×4); give ``num_prefix_tokens`` for other
layouts.

A module that is called several times in one forward pass (a shared block) is captured at its
first call.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._errors import ConfigError, DataError, out_of_memory_types
from ._tensors import model_device
from .layouts import (
    check_layout,
    declared_layout,
    declared_prefix,
    infer_prefix,
    measured_layout,
    neuron_indices,
    output_tensor,
    resolve_layout,
    to_map,
)
from .models.roles import ROLES, default_layers
from .normalize import InputNorm

__all__ = ["LayerCapture", "list_layers", "resolve_layer", "LayerInfo", "default_layer_roles"]


class _StopForward(Exception):
    """Raised inside the forward hook to stop the forward pass once the layer is computed."""


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> str:
    """Resolve a layer given as a dotted name or as a module to its dotted name.

    Args:
        model: The classifier.
        layer: A dotted module name such as ``"layer3.1.conv2"`` or a submodule of ``model``.

    Returns:
        The layer's dotted name in ``model.named_modules()``.

    Raises:
        ConfigError: If the name is unknown (the message lists the closest valid names) or the
            module is not part of ``model``.

    Examples:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        >>> resolve_layer(m, m[1])
        '1'
    """
    names = {name: mod for name, mod in model.named_modules() if name}
    if isinstance(layer, nn.Module):
        for name, mod in names.items():
            if mod is layer:
                return name
        if layer is model:
            raise ConfigError("the layer is the whole model; pick one of its submodules")
        raise ConfigError(f"the module {type(layer).__name__} given as layer is not a submodule of the model")
    if not isinstance(layer, str):
        raise ConfigError(f"layer must be a dotted module name or an nn.Module, got {type(layer).__name__}")
    if layer in names:
        return layer
    close = difflib.get_close_matches(layer, list(names), n=6, cutoff=0.4)
    hint = close if close else list(names)[:12]
    raise ConfigError(
        f"unknown layer {layer!r}; closest valid layer names: {', '.join(hint)}"
        + ("" if close else " ...")
        + " (see cladec.list_layers(model, example_input) for all)"
    )


def resolve_layer_or_role(model: nn.Module, layer: str, example_input: torch.Tensor | None = None) -> str:
    """:func:`resolve_layer`, where a name the model lacks may also be one of its architecture's default-layer
    roles (``model.default_layers``, e.g. ``"last"`` → ``"conv4"`` for vgg-paper), as ``cladec fit --layer``
    and ``cladec sweep --layers`` accept. A model that names no roles (a user's ``--factory`` model) gets them
    from :func:`cladec.models.roles.default_layers`: its family's rule, else one probe forward of
    ``example_input`` (stored as ``model.default_layers``).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten())
        >>> resolve_layer_or_role(net, "last", torch.zeros(1, 1, 8, 8))
        '2'
    """
    names = {n for n, _ in model.named_modules() if n}
    roles = getattr(model, "default_layers", None)
    if layer not in names and not roles and layer in ROLES:
        roles = default_layers(model, example_input)
        if roles:
            model.default_layers = roles  # type: ignore[assignment]  # a plain attribute, as load_model sets
    if layer not in names and isinstance(roles, dict) and layer in roles:
        layer = roles[layer]
    return resolve_layer(model, layer)


@dataclass
class LayerInfo:
    """A layer's name, module type, output shape (without the batch dimension) and output layout (``"nchw"``,
    ``"nhwc"``, ``"tokens"``, ``"flat"``; None where it is not known: see :func:`list_layers`)."""

    name: str
    type: str
    shape: tuple[int, ...]
    layout: str | None = None


def _output_shapes(model: nn.Module, x: torch.Tensor) -> tuple[list[str], dict[str, str], dict[str, tuple[int, ...]]]:
    """One forward pass in eval mode: the modules in call order, their types and output shapes."""
    order: list[str] = []
    types: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def make_hooks(name: str):
        def pre(mod, inp):
            if name not in types:
                order.append(name)
                types[name] = type(mod).__name__

        def post(mod, inp, out):
            if name not in shapes:
                out = output_tensor(name, mod, out, strict=False)  # () for an output that is no one tensor
                shapes[name] = tuple(out.shape[1:]) if out is not None else ()

        return pre, post

    for name, mod in model.named_modules():
        if name:
            pre, post = make_hooks(name)
            handles.append(mod.register_forward_pre_hook(pre))
            handles.append(mod.register_forward_hook(post))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x.to(model_device(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order, types, shapes


def list_layers(model: nn.Module, example_input: torch.Tensor, *, measure: bool = False) -> list[LayerInfo]:
    """List every submodule reached by a forward pass with its output shape and layout.

    Args:
        model: The classifier.
        example_input: One batch (N ≥ 1) of valid input, e.g. ``torch.zeros(1, 1, 28, 28)``.
        measure: Also measure the layout of 4-D outputs that the model family does not declare, with one more
            forward pass at twice the image size (:mod:`cladec.layouts`); without it their ``layout`` is None.

    Returns:
        A list of :class:`LayerInfo` in the order the modules are called (a block before its children); modules
        whose output is not a tensor report an empty shape. ``layout``: ``flat`` for ``(N, D)``, ``tokens`` for
        ``(N, T, D)``, and for ``(N, ·, ·, ·)`` the one the family declares or (``measure``) the measured one.

    Examples:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> [(l.name, l.shape) for l in list_layers(m, torch.zeros(1, 2, 2))]
        [('0', (4,)), ('1', (2,))]
        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten())
        >>> [(l.name, l.layout) for l in list_layers(m, torch.zeros(1, 1, 8, 8), measure=True)]
        [('0', 'nchw'), ('1', 'nchw'), ('2', 'flat')]
    """
    order, types, shapes = _output_shapes(model, example_input)
    modules = dict(model.named_modules())
    layouts: dict[str, str | None] = {}
    for n in order:
        rank = len(shapes.get(n, ()))
        found = declared_layout(model, n, modules[n]) if rank == 3 else None
        layouts[n] = {1: "flat", 2: "tokens"}.get(rank, found[0] if found else None)
    todo = [n for n in order if layouts[n] is None and len(shapes.get(n, ())) == 3]
    if measure and todo and example_input.dim() == 4:
        n_, c, h, w = example_input.shape
        try:
            bigger = _output_shapes(model, torch.zeros(1, c, 2 * h, 2 * w))[2]
        except Exception:  # noqa: BLE001 - a model built for one image size: not measurable
            bigger = {}
        for n in todo:
            layouts[n] = measured_layout(shapes[n], bigger[n]) if n in bigger else None
    return [LayerInfo(n, types[n], shapes.get(n, ()), layouts[n]) for n in order]


class LayerCapture:
    """Context manager that captures one layer's output and stops the forward pass there.

    Args:
        model: The classifier (any ``nn.Module``).
        layer: Dotted module name or the module itself; stored as :attr:`layer` (the name).
        neurons: Optional subset of the layer's units: channel indices or a boolean mask over
            channels for maps and token grids, feature indices for vectors.
        prefix_tokens: For ``(N, T, D)`` outputs: ``"drop"`` or ``"channels"`` (see module doc); other
            outputs refuse ``"channels"`` (ConfigError at the first call).
        num_prefix_tokens: Number of extra tokens before the patch tokens, if it cannot be inferred (token
            outputs only).
        input_norm: Optional ``(mean, std)`` per input channel; inputs in [0, 1] are normalised so
            before they reach the model.
        layout: ``"nchw"``, ``"nhwc"``, ``"tokens"`` or ``"flat"``; None (default) detects it at the first
            call (:mod:`cladec.layouts`), stored as :attr:`layout`. A layout that contradicts the output's rank,
            or what the model family declares or a second image size shows, is a ConfigError.

    Examples:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
        >>> with LayerCapture(m, "1") as cap:
        ...     a = cap(torch.rand(2, 1, 4, 4))
        >>> tuple(a.shape)
        (2, 4, 4, 4)
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        *,
        neurons: Sequence[int] | torch.Tensor | None = None,
        prefix_tokens: str = "drop",
        num_prefix_tokens: int | None = None,
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        layout: str | None = None,
    ) -> None:
        self.model = model
        # a role ("last", "middle") names the model's default layer, as in `cladec fit --layer last`
        self.layer = resolve_layer_or_role(model, layer) if isinstance(layer, str) else resolve_layer(model, layer)
        self._module = dict(model.named_modules())[self.layer]
        if prefix_tokens not in ("drop", "channels"):
            raise ConfigError(f"prefix_tokens must be 'drop' or 'channels', got {prefix_tokens!r}")
        self.prefix_tokens = prefix_tokens
        self.num_prefix_tokens = num_prefix_tokens
        self.given_layout = check_layout(layout)
        self.layout: str | None = None  # the layout in use, set at the first output
        self.norm = InputNorm(input_norm)  # checked now: a bad input_norm is a ConfigError before any image
        self._raw_neurons = neurons
        self.neurons: list[int] | None = None
        self._neuron_index: torch.Tensor | None = None
        self._index_cache: dict[torch.device, torch.Tensor] = {}
        self._handle = None
        self._armed = False  # the hook acts only during this capture's own forward passes
        self._out: torch.Tensor | None = None
        self.raw_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> LayerCapture:
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def attach(self) -> None:
        """Register the forward hook (done by ``with``)."""
        if self._handle is None:
            self._handle = self._module.register_forward_hook(self._hook)

    @contextlib.contextmanager
    def attached(self) -> Iterator[LayerCapture]:
        """The hook attached for a block, left as it was afterwards (for code that may run inside a user's ``with``).

        Training attaches it once around all steps, so that no hook is added or removed inside a step
        (which ``torch.compile`` cannot trace).
        """
        was = self._handle is not None
        self.attach()
        try:
            yield self
        finally:
            if not was:
                self.detach()

    def detach(self) -> None:
        """Remove the forward hook (done when the ``with`` block ends)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, mod, inp, out):
        if not self._armed:  # another forward pass while attached (the user's, or another capture's): untouched
            return None
        self._out = output_tensor(self.layer, mod, out)
        raise _StopForward

    # -- running -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the model (inputs are moved there)."""
        return model_device(self.model)

    @property
    def input_norm(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The classifier's ``(mean, std)`` as two 1-D float32 tensors, or None."""
        return self.norm.tensors

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the classifier's input normalisation (:class:`~cladec.normalize.InputNorm`: uint8 scaled to [0, 1],
        the identity when none was given)."""
        return self.norm(x)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on ``x`` (images in [0, 1]) until the layer and return its raw output."""
        attached = self._handle is not None
        if not attached:
            self.attach()
        try:
            out = self._forward_to_layer(x)
        except out_of_memory_types():
            raise  # not a problem of the input's shape: let it through as is
        except RuntimeError as e:
            if "out of memory" in str(e):
                raise
            raise DataError(
                f"the model rejected input of shape {tuple(x.shape)} ({x.dtype}, {x.device}): {e}. "
                "Give images shaped (N, C, H, W) with the channels and size the classifier was built for, "
                "on its device."
            ) from e
        finally:
            if not attached:
                self.detach()
        if out is None:
            raise ConfigError(
                f"layer {self.layer!r} was never reached in the forward pass; pick a layer that "
                "the model's forward() calls (see cladec.list_layers)"
            )
        return out

    def _forward_to_layer(self, x: torch.Tensor) -> torch.Tensor | None:
        """One forward pass with the hook armed, stopped at the layer; the layer's raw output (None: not reached)."""
        self._out = None
        self._armed = True
        try:
            self.model(self.normalize(x))
        except _StopForward:
            pass
        finally:
            self._armed = False
        out, self._out = self._out, None
        return out

    def run_attached(self, x: torch.Tensor) -> torch.Tensor:
        """``self(x)`` for a hook already attached (inside :meth:`attached`): a lean path for training steps.

        It neither touches the hook handle nor wraps errors, so ``torch.compile`` can trace it.
        """
        out = self._forward_to_layer(x)
        if out is None:
            raise ConfigError(
                f"layer {self.layer!r} was not reached: run_attached needs the hook attached "
                "(use it inside `with capture.attached():`) and a layer the model's forward() calls"
            )
        return self.process(out)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (processed) activations the decoder sees: gridded tokens, selected neurons."""
        out = self.raw(x)
        if self.raw_shape is None:
            self._setup(tuple(out.shape[1:]), x)
        return self.process(out)

    def process(self, out: torch.Tensor) -> torch.Tensor:
        """Turn a raw layer output into decoder input (token grid, neuron subset)."""
        if self.raw_shape is None:
            self._setup(tuple(out.shape[1:]))
        elif tuple(out.shape[1:]) != self.raw_shape:
            raise DataError(
                f"layer {self.layer!r} produced shape {tuple(out.shape[1:])}, but {self.raw_shape} "
                "was seen before; all inputs must have the same image size"
            )
        if self.layout in ("nhwc", "tokens"):
            out = to_map(out, self.layout, self.num_prefix_tokens or 0, self.prefix_tokens)
        if self._neuron_index is not None:
            if out.device not in self._index_cache:
                self._index_cache[out.device] = self._neuron_index.to(out.device)
            out = out.index_select(1, self._index_cache[out.device])
        return out

    def _setup(self, raw_shape: tuple[int, ...], x: torch.Tensor | None = None) -> None:
        # everything is worked out first and stored at the end: a bad setting raises here every time, instead of
        # leaving a half-set capture that would later return all units
        measure = (lambda: self._shape_at_twice(x)) if x is not None and x.dim() == 4 else None
        layout = resolve_layout(self.model, self.layer, self._module, raw_shape, self.given_layout, measure)
        k = self.num_prefix_tokens
        if layout == "tokens":
            T, D = raw_shape
            if k is None:
                k = declared_prefix(self.model, T)
                k = infer_prefix(T) if k is None else k
                if k is None:
                    raise ConfigError(
                        f"layer {self.layer!r} outputs {T} tokens, which is not a square grid plus 0-8 "
                        "extra tokens; pass num_prefix_tokens= (the number of tokens before the patches)"
                    )
            if T - k <= 0 or math.isqrt(T - k) ** 2 != T - k:
                raise ConfigError(
                    f"layer {self.layer!r} outputs {T} tokens; with num_prefix_tokens={k} the remaining "
                    f"{T - k} patch tokens do not form a square grid"
                )
            g = math.isqrt(T - k)
            extra = k * D if (self.prefix_tokens == "channels" and k) else 0
            shape: tuple[int, ...] = (D + extra, g, g)
        else:
            given = ([f"prefix_tokens={self.prefix_tokens!r}"] if self.prefix_tokens != "drop" else []) + (
                [f"num_prefix_tokens={k!r}"] if k is not None else []
            )
            if given:  # they would be ignored
                raise ConfigError(
                    f"{' and '.join(given)} set{'s' if len(given) == 1 else ''} how extra tokens of a token output "
                    f"(N, T, D) are handled, but layer {self.layer!r} outputs shape {raw_shape} per image: drop "
                    f"{'it' if len(given) == 1 else 'them'}"
                )
            shape = (raw_shape[2], raw_shape[0], raw_shape[1]) if layout == "nhwc" else raw_shape
        units = shape[0]
        if self._raw_neurons is not None:
            idx = neuron_indices(self._raw_neurons, units, self.layer)
            self.neurons = idx
            self._neuron_index = torch.tensor(idx, dtype=torch.long)
            shape = (len(idx),) + tuple(shape[1:])
        if layout == "tokens":
            self.num_prefix_tokens = k
        self.layout = layout
        self.output_shape = tuple(shape)
        self.raw_shape = raw_shape

    def _shape_at_twice(self, x: torch.Tensor) -> tuple[int, ...] | None:
        """The layer's output shape (without the batch) for images of twice ``x``'s size; None where the model
        refuses them. Run once, in eval mode (batch-norm statistics stay as they are)."""
        n, c, h, w = x.shape
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.raw(torch.zeros(min(n, 2), c, 2 * h, 2 * w, device=self.device))
        except Exception:  # noqa: BLE001  # a model built for one image size: not measurable
            return None
        finally:
            self.model.train(was)
        return tuple(out.shape[1:])

    def probe(self, x: torch.Tensor) -> tuple[int, ...]:
        """Run one small batch to learn the layer's shapes; returns the decoder input shape."""
        with torch.no_grad():
            self(x[:2].to(self.device))
        assert self.output_shape is not None
        return self.output_shape


def default_layer_roles(model: nn.Module) -> dict[str, list[str]]:
    """The roles of the layers an architecture names as its defaults (``model.default_layers``), by layer.

    Args:
        model: A classifier; those of :func:`cladec.models.create_model` name their ``"last"`` and ``"middle"``
            layers, other models none.

    Returns:
        ``{layer: [role, ...]}`` (a layer may have several roles), empty when the model names none.

    Examples:
        >>> default_layer_roles(classifier)  # vgg-paper
        {'conv4': ['last'], 'conv2': ['middle']}
        >>> default_layer_roles(nn.Linear(2, 2))
        {}
    """
    roles: dict[str, list[str]] = {}
    named = getattr(model, "default_layers", None)
    if isinstance(named, dict):
        for role, layer in named.items():
            roles.setdefault(str(layer), []).append(str(role))
    return roles
