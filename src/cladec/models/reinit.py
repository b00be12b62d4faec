"""Fresh weights for a model of the same architecture (RefAE's encoder, the evaluation classifier)."""

from __future__ import annotations

import torch
from torch import nn

from ._registry import create_model


def weight_marks(module: nn.Module, buffers: bool = False) -> tuple:
    """Identity, version and storage of every parameter (and buffer) of ``module``: an in-place change alters
    the version, a ``param.data = ...`` assignment (as ``vector_to_parameters`` makes) the storage."""
    tensors = list(module.parameters()) + (list(module.buffers()) if buffers else [])
    return tuple((id(t), t._version, t.data_ptr()) for t in tensors)


_BIAS_LIKE = ("bias", "beta", "shift", "offset")


def reinitialise(module: nn.Module, seed: int | None = None) -> nn.Module:
    """Re-draw every parameter of ``module`` in place, as for a new, untrained module of its architecture.

    Used for RefAE's encoder, for a custom decoder :meth:`RefAE.like` copies and for evaluation
    classifiers of a user's architecture. Modules are reset children first, then their parents (the order
    in which they are constructed, so a parent's own initialisation wins, as in ``nn.MultiheadAttention``):
    ``reset_parameters()``, or ``_reset_parameters()`` where a module has only that
    (``nn.MultiheadAttention``, ``nn.Transformer``); BatchNorm running statistics are reset. A parameter
    that no method re-drew keeps its value after that pass. Such a parameter is kept as it is when it is an
    untrained constant (one value in all its elements, or a single 0 or 1: an architecture's own starting value
    that training never changed, as a ReZero gate of 0, a LayerScale of 1e-4 or BatchNorm's weight of ones).
    Otherwise it was trained and is drawn by a fixed rule: tensors of two or more dimensions (class, register
    and position tokens) from N(0, 0.02²), the usual initialisation of tokens in vision transformers; vectors and
    scalars (scales, gates, temperatures) set to ones, or to zeros when their name ends in ``bias``, ``beta``,
    ``shift`` or ``offset``. An architecture's own initialisation of such trained parameters (e.g. a LayerScale's
    1e-6) cannot be recovered from trained weights. All parameters end trainable (also those the source froze:
    RefAE's encoder is trained as a whole).

    Args:
        module: The module, changed in place (pass a copy to keep the original).
        seed: Seeds the draws (``torch.manual_seed``); None: the global random generator as it stands.

    Returns:
        ``module``.

    Examples:
        >>> from torch import nn
        >>> lin = nn.Linear(3, 2)
        >>> before = lin.weight.detach().clone()
        >>> reinitialise(lin, seed=0) is lin and not torch.equal(lin.weight, before)
        True
    """
    if seed is not None:
        torch.manual_seed(seed)
    before = {id(p): p.detach().clone() for p in module.parameters()}
    order: list[nn.Module] = []
    seen: set[int] = set()

    def visit(m: nn.Module) -> None:  # children first (post-order), each module once
        if id(m) in seen:
            return
        seen.add(id(m))
        for c in m.children():
            visit(c)
        order.append(m)

    visit(module)
    has_reset: set[int] = set()
    for m in order:
        reset = getattr(m, "reset_parameters", None)
        if not callable(reset):
            reset = getattr(m, "_reset_parameters", None)
        if callable(reset):
            reset()
            has_reset.add(id(m))
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.reset_running_stats()
    done: set[int] = set()
    with torch.no_grad():
        for m in order:
            for name, p in m.named_parameters(recurse=False):
                if id(p) in done:
                    continue
                done.add(id(p))
                if not torch.equal(p, before[id(p)]):
                    continue  # re-drawn
                if _untrained_constant(p):
                    continue  # the architecture's own starting value (or one its module's reset set)
                if p.dim() >= 2:
                    p.normal_(0.0, 0.02)
                elif name.lower().endswith(_BIAS_LIKE):
                    p.zero_()
                else:
                    p.fill_(1.0)
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def _untrained_constant(p: torch.Tensor) -> bool:
    """Whether a parameter holds what an architecture sets and training would not leave: one value in every
    element of a tensor of several, or a single 0 or 1 (a trained scalar, as a gate at 0.37, is not)."""
    if p.numel() > 1:
        return bool((p == p.flatten()[0]).all())
    return p.numel() == 1 and float(p.detach().flatten()[0]) in (0.0, 1.0)


def redraw(module: nn.Module, seed: int | None = None) -> nn.Module:
    """Re-draw ``module``'s parameters in place as a new model of its architecture would have them.

    A model made by :func:`cladec.models.create_model` (it carries ``arch`` and ``arch_kwargs``) gets the weights
    of a freshly created one — its architecture's own initialisation (e.g. ResNet's Kaiming fan-out) — when its
    parameters and buffers have the same names and shapes; any other module goes through :func:`reinitialise`.

    Args:
        module: The module, changed in place (pass a copy to keep the original).
        seed: Seeds the draws; None: the global random generator as it stands.

    Returns:
        ``module``.

    Examples:
        >>> from cladec.models import create_model
        >>> net = create_model("resnet10", width=0.25)
        >>> _ = redraw(net, seed=0)
        >>> _ = torch.manual_seed(0)
        >>> torch.equal(net.fc.weight, create_model("resnet10", width=0.25).fc.weight)
        True
    """
    arch, kwargs = getattr(module, "arch", None), getattr(module, "arch_kwargs", None)
    if isinstance(arch, str) and isinstance(kwargs, dict):
        try:
            if seed is not None:
                torch.manual_seed(seed)
            fresh = create_model(arch, **kwargs)
        except Exception:  # noqa: BLE001 - an architecture that no longer builds: the generic way below
            fresh = None
        own = module.state_dict()
        if fresh is not None:
            new = fresh.state_dict()
            if new.keys() == own.keys() and all(new[k].shape == own[k].shape for k in own):
                with torch.no_grad():
                    module.load_state_dict(new)
                for p in module.parameters():
                    p.requires_grad_(True)
                return module
    return reinitialise(module, seed)
