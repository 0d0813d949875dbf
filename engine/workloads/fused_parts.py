"""The stacked building blocks of a fused group: K trials' parameters in one flat tensor,
their initial weights, their data order and their dropout.

A fused group keeps K trials' parameters in one flat ``(K, N)`` tensor (weight matrices
first, in each module's parameter order) and hands the model code ``(K, *shape)`` views of
it that require grad. Row ``r`` of every stacked tensor belongs to one trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from engine.workloads.common import MASK32, epoch_orders, hash32, mix_seed, seed_cpu
from engine.workloads.fused_optim import Segment
from engine.workloads.rowstate import StateDictLayout


class StackedParams:
    """K same-shaped modules' parameters in one flat ``(K, N)`` tensor.

    ``leaves`` are ``(K, *shape)`` views of it in module parameter order, requiring grad;
    ``segments`` describe the flat layout (weight matrices first, the order of the
    optimizer's param groups). Each trial keeps its own ``state_dict`` key names (a module
    built with dropout has other layer indices than one without).
    """

    def __init__(
        self,
        modules: Sequence[nn.Module],
        device: str | torch.device,
        tensors: Iterable[Sequence[torch.Tensor]] | None = None,
    ) -> None:
        """``modules``: one per trial (trials may share one module object: it gives the
        structure and state_dict keys); ``tensors``: each trial's initial parameters in
        module parameter order, read one trial at a time (default: each module's own)."""
        shapes = [tuple(p.shape) for p in modules[0].parameters()]
        order = [j for j, s in enumerate(shapes) if len(s) >= 2]
        order += [j for j, s in enumerate(shapes) if len(s) < 2]
        self.segments: list[Segment] = []
        self.segment_of: dict[int, int] = {}  # module parameter index -> flat position
        offset = 0
        for pos, j in enumerate(order):
            numel = math.prod(shapes[j])
            self.segments.append(Segment(offset, numel, shapes[j], len(shapes[j]) >= 2))
            self.segment_of[j] = pos
            offset += numel
        self.n_columns = offset
        self.n_decay = sum(s.numel for s in self.segments if s.decay)
        dtype = next(iter(modules[0].parameters())).dtype
        flat = torch.empty(len(modules), offset, dtype=dtype)
        source = tensors if tensors is not None else (list(m.parameters()) for m in modules)
        filled = 0
        with torch.no_grad():
            for k, params in enumerate(source):  # each trial straight into its row
                if [tuple(p.shape) for p in params] != shapes:
                    raise ValueError("a fused group needs trials of one shape (see fuse_key)")
                torch.cat([params[j].detach().reshape(-1) for j in order], out=flat[k])
                filled = k + 1
        if filled != len(modules):
            raise ValueError(f"initial parameters for {filled} trials, {len(modules)} modules")
        self.flat = flat.to(device)
        keys_of: dict[int, dict[str, int]] = {}
        for m in modules:
            if id(m) not in keys_of:
                keys_of[id(m)] = _state_keys(m)
        self.keys = [keys_of[id(m)] for m in modules]  # per trial: key -> module param index
        self._layouts: dict[int, StateDictLayout] = {}
        self._make_leaves()

    def _make_leaves(self) -> None:
        base, k = self.flat.detach(), self.flat.shape[0]
        views: list[torch.Tensor] = [torch.empty(0)] * len(self.segments)
        for j, pos in self.segment_of.items():
            seg = self.segments[pos]
            views[j] = base[:, seg.columns].view(k, *seg.shape).requires_grad_(True)
        self.leaves = views

    def flat_grad(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        """The leaves' gradients (module order) as one ``(K, N)`` tensor in flat order."""
        k = self.flat.shape[0]
        by_pos = sorted(self.segment_of.items(), key=lambda item: item[1])
        return torch.cat([grads[j].reshape(k, -1) for j, _ in by_pos], dim=1)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the rows ``rows`` (trial keys stay indexed by original trial)."""
        self.flat = self.flat.index_select(0, rows)
        self._make_leaves()

    def layout(self, trial: int) -> StateDictLayout:
        """Where each of trial ``trial``'s state_dict entries lies in a row:
        ``(key, offset, numel, shape)``; one layout per distinct key set."""
        keys = self.keys[trial]
        cached = self._layouts.get(id(keys))
        if cached is None:
            cached = StateDictLayout(tuple(
                (key, seg.offset, seg.numel, seg.shape)
                for key, j in keys.items()
                for seg in [self.segments[self.segment_of[j]]]
            ))
            self._layouts[id(keys)] = cached
        return cached

    def trial_state_dict(
        self, trial: int, row: int, source: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Trial ``trial``'s plain ``nn.Module.state_dict()`` (fresh tensors), read from row
        ``row`` of ``source`` (default: the live parameters; else e.g. a host copy)."""
        flat = self.flat if source is None else source
        # one copy of the row; the entries are views into it (the layout the savers use too)
        return self.layout(trial).build([flat[row].detach().clone()])

    @torch.no_grad()
    def load_trial_state_dict(self, trial: int, row: int, state: Mapping[str, Any]) -> None:
        """``nn.Module.load_state_dict`` (strict) into one trial's row."""
        keys = self.keys[trial]
        missing, unexpected = sorted(set(keys) - set(state)), sorted(set(state) - set(keys))
        if missing or unexpected:
            raise RuntimeError(
                f"Error(s) in loading state_dict: missing keys {missing}, unexpected {unexpected}"
            )
        for key, j in keys.items():
            seg = self.segments[self.segment_of[j]]
            value = state[key]
            if tuple(value.shape) != seg.shape:
                raise RuntimeError(f"size mismatch for {key}: {tuple(value.shape)} vs {seg.shape}")
            self.flat[row, seg.columns] = value.reshape(-1).to(self.flat)


def reinitialized(
    build: Callable[..., nn.Module],
    model_hps: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    structure: Callable[[Mapping[str, Any]], Any] = repr,
) -> tuple[list[nn.Module], Iterator[list[torch.Tensor]]]:
    """Each trial's initial weights, as ``torch.manual_seed(seed); build(**hp)`` draws them,
    without building a module per trial: one module per ``structure(hp)`` is built and its
    layers' ``reset_parameters()`` rerun in construction order after seeding (what each
    layer's constructor does). For modules whose layers all initialise in their own
    ``reset_parameters`` (``nn.Linear``, ``nn.Conv2d``). Returns the module of each trial
    and an iterator over each trial's initial parameters (valid until the next item: read
    them one at a time, as :class:`StackedParams` does)."""
    templates: dict[Any, nn.Module] = {}
    modules = []
    for hp in model_hps:
        key = structure(hp)
        if key not in templates:
            templates[key] = build(**hp)
        modules.append(templates[key])

    def draw() -> Iterator[list[torch.Tensor]]:
        for template, seed in zip(modules, seeds):
            seed_cpu(seed)
            with torch.no_grad():
                for layer in template.modules():
                    reset = getattr(layer, "reset_parameters", None)
                    if layer is not template and reset is not None:
                        reset()
            yield list(template.parameters())

    return modules, draw()


def _state_keys(module: nn.Module) -> dict[str, int]:
    index = {id(p): j for j, p in enumerate(module.parameters())}
    keys: dict[str, int] = {}
    for key, value in module.state_dict(keep_vars=True).items():
        if id(value) not in index:
            raise ValueError(f"fused training supports parameters only; {key!r} is a buffer")
        keys[key] = index[id(value)]
    return keys


class GroupSampler:
    """Each trial's :class:`~engine.workloads.common.EpochSampler` order, gathered: the
    ``(K, batch_size)`` indices of a step. All trials share ``n`` and ``batch_size``, so epoch
    boundaries coincide and one slice serves every trial; an epoch's K orders are drawn on
    the device at once (:func:`~engine.workloads.common.epoch_orders`)."""

    def __init__(
        self, n: int, batch_size: int, seeds: Sequence[int], device: str, steps: int | None = None
    ) -> None:
        if batch_size > n:
            raise ValueError(
                f"hyperparameter batch_size={batch_size}: at most {n} (the training set size)"
            )
        self.n, self.batch_size, self.seeds, self.device = n, batch_size, list(seeds), device
        self.steps_per_epoch = n // batch_size
        self._epoch = -1
        self._perms = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perms = epoch_orders(self.seeds, epoch, self.n, self.device)
            self._epoch = epoch
        start = within * self.batch_size
        return self._perms[:, start : start + self.batch_size]

    def select(self, rows: torch.Tensor) -> None:
        self.seeds = [self.seeds[i] for i in rows.tolist()]
        if self._perms.numel():
            self._perms = self._perms.index_select(0, rows.to(self._perms.device))

    def close(self) -> None:
        """Nothing to release (kept for subclasses' and callers' symmetry)."""


class TrialDropout:
    """Dropout with a per-trial probability and a per-trial, counter-based random stream.

    The mask of trial k at step s is a hash of ``(seed_k, s, layer, position)``, so a trial's
    dropout does not depend on which other trials share its group, and a resumed trial sees
    the masks the uninterrupted one would have. (The stream differs from the unfused path's
    global-RNG dropout; with p = 0 the layer is the identity, exactly.)
    """

    def __init__(self, probabilities: Sequence[float], seeds: Sequence[int], device: str) -> None:
        self.device = device
        self.active = any(p > 0 for p in probabilities)
        p = torch.tensor(list(probabilities), dtype=torch.float64)
        self.threshold = (p * 2.0**32).to(torch.int64).to(device)
        self.scale = (1.0 / (1.0 - p)).to(torch.float32).to(device)
        self.keys = torch.tensor([mix_seed(s, 77) & MASK32 for s in seeds], device=device)

    def __call__(self, h: torch.Tensor, step: int, layer: int) -> torch.Tensor:
        """``h`` is ``(K, ...)``; returns it with trial k's units dropped with its p."""
        if not self.active:
            return h
        k = h.shape[0]
        salt = (step * 0x9E3779B1 + layer * 0x85EBCA77 + 1) & MASK32
        key = hash32(self.keys ^ salt)
        pos = torch.arange(h[0].numel(), device=h.device, dtype=torch.int64)
        bits = hash32((pos * 0x27D4EB2F & MASK32)[None, :] ^ key[:, None])
        shape = (k,) + (1,) * (h.ndim - 1)
        keep = (bits >= self.threshold[:, None]).view(h.shape)
        return h * keep * self.scale.view(shape)

    def select(self, rows: torch.Tensor) -> None:
        self.threshold = self.threshold.index_select(0, rows)
        self.scale = self.scale.index_select(0, rows)
        self.keys = self.keys.index_select(0, rows)
