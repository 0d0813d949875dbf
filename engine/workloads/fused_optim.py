"""Optimizers as tensor math over K stacked trials, each with its own hyperparameters.

The update rules are exactly the ones :func:`engine.workloads.common.build_optimizer` builds
(torch's single-tensor SGD / Adam / AdamW), rewritten as batched tensor ops over a leading
trial dimension: every per-trial scalar (learning rate of this step, betas, epsilon, weight
decay, momentum, clip norm) is a ``(K, 1)`` column, so one kernel updates all K trials and
nothing loops over K in Python.

Two entry points:

* :class:`StackedOptimizer`: the built-in fused workloads' optimizer over one flat ``(K, N)``
  parameter tensor (weight matrices first, so "decay weight matrices only" is a slice). Its
  per-step scalars (schedule, Adam bias corrections, resume gating) are precomputed on the
  CPU in float64 for a chunk of steps and moved to the device once per chunk.
* :func:`stacked_optimizer_step`: the same math for a user's own vmap'd loop over a list of
  stacked tensors (``torch.func.stack_module_state``), scalars computed on the device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from engine.workloads.common import OptimConfig, lr_at
from engine.workloads.rowstate import OptimizerLayout

ADAM_KINDS = ("adam", "adamw")
SGD_KINDS = ("sgd", "momentum", "nesterov")
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6)
TABLE_CHUNK = 256  # steps of precomputed per-trial scalars per host-to-device copy
_SCHEDULE_CODES = {"constant": 0, "linear_decay": 1, "cosine": 2, "linear_warmup_cosine": 3}

# Columns of the per-step table, by optimizer family.
_SGD_COLS = ("gate", "neg_lr", "momentum_keep")
_ADAM_COLS = ("gate", "neg_step", "beta1_w", "beta2_keep", "beta2_w", "bc2_sqrt", "decay")


@dataclass(frozen=True)
class Segment:
    """One parameter tensor inside the flat ``(K, N)`` stack: columns ``[offset, offset+numel)``."""

    offset: int
    numel: int
    shape: tuple[int, ...]
    decay: bool  # a weight matrix (ndim >= 2): weight decay applies

    @property
    def columns(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


def warmup_steps(cfg: OptimConfig, max_train_steps: int) -> int:
    """The warmup length :func:`lr_at` uses (0 for schedules without warmup)."""
    total = max(1, max_train_steps)
    warmup = round(cfg.warmup_fraction * total) if cfg.schedule == "linear_warmup_cosine" else 0
    return min(warmup, total - 1)


def schedule_table(
    cfgs: Sequence[OptimConfig], steps: torch.Tensor, max_train_steps: int
) -> torch.Tensor:
    """``lr_at(step, cfgs[k], max_train_steps)`` for every step and trial: ``(len(steps), K)``
    float64 on the CPU, the same arithmetic as :func:`lr_at` in the same order."""
    total = max(1, max_train_steps)
    f64 = torch.float64
    base = torch.tensor([c.learning_rate for c in cfgs], dtype=f64)
    code = torch.tensor([_SCHEDULE_CODES[c.schedule] for c in cfgs])
    warm = torch.tensor([warmup_steps(c, max_train_steps) for c in cfgs], dtype=f64)
    s = steps.to(f64)[:, None]
    linear = base * (1.0 - s / total)
    warming = base * (s + 1) / warm.clamp(min=1)
    progress = (s - warm) / (total - warm).clamp(min=1)
    cosine = base * 0.5 * (1.0 + torch.cos(math.pi * progress))
    decayed = torch.where(s < warm, warming, cosine)
    out = torch.where(code == 1, linear, decayed)
    return torch.where(code == 0, base.expand_as(out), out)


class StackedOptimizer:
    """The unfused optimizer of each of K trials, applied to one flat ``(K, N)`` tensor.

    Columns ``[0, n_decay)`` of the flat tensor hold the weight matrices (weight decay applies),
    the rest biases and gains. A trial whose ``gate`` is 0 at a step (it resumes from a later
    step than the group) keeps its parameters and optimizer state unchanged.
    """

    def __init__(
        self,
        kind: str,
        cfgs: Sequence[OptimConfig],
        n_columns: int,
        n_decay: int,
        max_train_steps: int,
        device: str | torch.device,
    ) -> None:
        if kind not in ADAM_KINDS + SGD_KINDS or any(c.optimizer != kind for c in cfgs):
            raise ValueError(
                f"a fused group needs one optimizer; got {[c.optimizer for c in cfgs]}"
            )
        self.kind, self.cfgs, self.n_decay = kind, list(cfgs), n_decay
        self.max_train_steps, self.device = max_train_steps, device
        k = len(cfgs)
        self.starts = [0] * k  # the first step each trial trains
        self.base_counts = [0.0] * k  # Adam's step count restored from the checkpoint
        self.state: dict[str, torch.Tensor] = {}
        if kind in ADAM_KINDS:
            self.state["exp_avg"] = torch.zeros(k, n_columns, device=device)
            self.state["exp_avg_sq"] = torch.zeros(k, n_columns, device=device)
        elif kind != "sgd":
            self.state["momentum_buffer"] = torch.zeros(k, n_columns, device=device)
        self._static_columns()
        self._table: torch.Tensor | None = None
        self._table_start = 0

    # -- per-trial scalars -----------------------------------------------------------
    def _static_columns(self) -> None:
        def col(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=self.device)[:, None]

        cfgs = self.cfgs
        self.weight_decay = col([c.weight_decay for c in cfgs])
        self.epsilon = col([c.epsilon for c in cfgs])
        self.momentum = col([c.momentum for c in cfgs])
        self.grad_clip = col([c.grad_clip for c in cfgs])
        self.any_clip = any(c.grad_clip > 0 for c in cfgs)
        self.any_decay = any(c.weight_decay != 0 for c in cfgs) and self.n_decay > 0

    def set_resume(self, starts: Sequence[int], base_counts: Sequence[float]) -> None:
        """Each trial's first step and (Adam) restored step count; drops the cached table."""
        self.starts, self.base_counts = list(starts), list(base_counts)
        self._table = None

    def lr(self, k: int, step: int) -> float:
        """Trial ``k``'s learning rate at ``step`` (what its param_groups would hold)."""
        return lr_at(step, self.cfgs[k], self.max_train_steps)

    def step_count(self, k: int, step: int) -> float:
        """Adam's step counter of trial ``k`` after training ``step``."""
        return self.base_counts[k] + step - self.starts[k] + 1

    def _build_table(self, first: int) -> None:
        last = min(first + TABLE_CHUNK, max(self.max_train_steps, first + 1))
        steps = torch.arange(first, last, dtype=torch.float64)
        lr = schedule_table(self.cfgs, steps, self.max_train_steps)
        f64 = torch.float64
        start = torch.tensor(self.starts, dtype=f64)
        gate = (steps[:, None] >= start).to(f64)
        on = gate > 0
        if self.kind in SGD_KINDS:
            mom = torch.tensor([c.momentum for c in self.cfgs], dtype=f64).expand_as(lr)
            cols = [gate, -lr * gate, torch.where(on, mom, torch.ones_like(mom))]
        else:
            cols = self._adam_columns(steps, lr, gate, on)
        table = torch.stack(cols, dim=-1).to(torch.float32)
        self._table, self._table_start = table.to(self.device), first

    def _adam_columns(
        self, steps: torch.Tensor, lr: torch.Tensor, gate: torch.Tensor, on: torch.Tensor
    ) -> list[torch.Tensor]:
        f64 = torch.float64
        b1 = torch.tensor([c.beta1 for c in self.cfgs], dtype=f64)
        b2 = torch.tensor([c.beta2 for c in self.cfgs], dtype=f64)
        wd = torch.tensor([c.weight_decay for c in self.cfgs], dtype=f64)
        base = torch.tensor(self.base_counts, dtype=f64)
        start = torch.tensor(self.starts, dtype=f64)
        count = torch.where(on, base + steps[:, None] - start + 1, torch.ones_like(lr))
        bc1 = 1 - b1**count
        bc2 = 1 - b2**count
        one = torch.ones_like(lr)
        decay = 1 - lr * wd if self.kind == "adamw" else one
        return [
            gate,
            -(lr / bc1) * gate,
            (1 - b1) * gate,
            torch.where(on, b2.expand_as(lr), one),
            (1 - b2) * gate,
            torch.where(on, bc2**0.5, one),
            torch.where(on, decay, one),
        ]

    def _row(self, step: int) -> torch.Tensor:
        at = step - self._table_start
        if self._table is None or not 0 <= at < len(self._table):
            self._build_table(step)
            at = 0
        assert self._table is not None
        return self._table[at]

    # -- the update ------------------------------------------------------------------
    @torch.no_grad()
    def step(self, flat: torch.Tensor, grad: torch.Tensor, step: int, mixed: bool) -> None:
        """Apply step ``step`` to ``flat`` given its gradient (``grad`` is overwritten).

        ``mixed``: some trial is gated off this step; its update is masked exactly (NaN-safe).
        """
        row = self._row(step)
        names = _ADAM_COLS if self.kind in ADAM_KINDS else _SGD_COLS
        c = {name: row[:, i : i + 1] for i, name in enumerate(names)}
        if self.any_clip:
            clip_by_norm(grad, self.grad_clip)
        nd = self.n_decay
        decay = (flat[:, :nd], grad[:, :nd]) if self.any_decay else None
        if self.kind in ADAM_KINDS:
            adam_math(
                flat,
                grad,
                self.state["exp_avg"],
                self.state["exp_avg_sq"],
                c,
                self.epsilon,
                self.weight_decay,
                decay,
                self.kind == "adamw",
                mixed,
            )
        else:
            sgd_math(
                flat,
                grad,
                self.state.get("momentum_buffer"),
                c,
                self.momentum,
                self.weight_decay,
                decay,
                self.kind == "nesterov",
            )

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the trials at ``rows`` (compaction after trials leave the group)."""
        keep = rows.tolist()
        self.cfgs = [self.cfgs[i] for i in keep]
        self.starts = [self.starts[i] for i in keep]
        self.base_counts = [self.base_counts[i] for i in keep]
        self.state = {name: t.index_select(0, rows) for name, t in self.state.items()}
        self._static_columns()
        self._table = None

    # -- one trial's state in torch.optim's format -----------------------------------
    def state_names(self, row: int) -> tuple[str, ...]:
        """The state tensors ``torch.optim`` keeps per parameter for the trial at ``row``."""
        if self.kind in ADAM_KINDS:
            return ("exp_avg", "exp_avg_sq")
        if self.kind != "sgd" and self.cfgs[row].momentum != 0:
            return ("momentum_buffer",)
        return ()

    def trial_layout(
        self, row: int, segments: Sequence[Segment], count: float, param_groups: list[dict[str, Any]]
    ) -> OptimizerLayout:
        """How to cut the trial at ``row``'s ``torch.optim`` state dict from its rows of
        :meth:`state_names` (Adam's ``step`` is ``count``)."""
        return OptimizerLayout(
            self.state_names(row),
            tuple((pos, seg.offset, seg.numel, seg.shape) for pos, seg in enumerate(segments)),
            float(count) if self.kind in ADAM_KINDS else None,
            param_groups,
        )

    @torch.no_grad()
    def load_trial_state(self, row: int, seg: Segment, entry: Mapping[str, Any]) -> float:
        """Write one parameter's torch.optim state into the stack; returns Adam's step count."""
        for name in self.state:
            value = entry.get(name)
            if value is None:
                self.state[name][row, seg.columns] = 0
            else:
                self.state[name][row, seg.columns] = value.reshape(-1).to(self.state[name])
        step = entry.get("step")
        return float(step) if step is not None else 0.0


# -- the math, shared by the flat path and the user helper ------------------------------


def clip_by_norm(grad: torch.Tensor, max_norm: torch.Tensor) -> None:
    """``clip_grad_norm_`` per trial on a flat ``(K, N)`` gradient (max_norm 0 = no clip)."""
    norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
    coef = torch.clamp(max_norm / (norm + CLIP_EPS), max=1.0)
    grad.mul_(torch.where(max_norm > 0, coef, torch.ones_like(coef)))


def sgd_math(
    p: torch.Tensor,
    g: torch.Tensor,
    buf: torch.Tensor | None,
    c: Mapping[str, torch.Tensor],
    momentum: torch.Tensor,
    weight_decay: torch.Tensor,
    decay: tuple[torch.Tensor, torch.Tensor] | None,
    nesterov: bool,
) -> None:
    """torch.optim.SGD (dampening 0) with per-trial columns; ``decay`` = (params, grads) views
    that get coupled L2."""
    if decay is not None:
        decay[1].addcmul_(decay[0], weight_decay)
    if buf is not None:
        buf.mul_(c["momentum_keep"]).addcmul_(g, c["gate"])
        update = torch.addcmul(g, buf, momentum) if nesterov else buf
    else:
        update = g
    p.addcmul_(update, c["neg_lr"])


def adam_math(
    p: torch.Tensor,
    g: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    c: Mapping[str, torch.Tensor],
    epsilon: torch.Tensor,
    weight_decay: torch.Tensor,
    decay: tuple[torch.Tensor, torch.Tensor] | None,
    decoupled: bool,
    mixed: bool,
) -> None:
    """torch.optim.Adam / AdamW with per-trial columns (see ``_ADAM_COLS``)."""
    if decay is not None:
        if decoupled:
            decay[0].mul_(c["decay"])
        else:
            decay[1].addcmul_(decay[0], weight_decay)
    exp_avg.lerp_(g, c["beta1_w"])
    exp_avg_sq.mul_(c["beta2_keep"]).addcmul_(g, g * c["beta2_w"])
    denom = exp_avg_sq.sqrt().div_(c["bc2_sqrt"]).add_(epsilon)
    update = exp_avg / denom
    if mixed:  # a gated trial's 0/0 must not reach its parameters
        update = torch.where(c["gate"] > 0, update, torch.zeros((), device=update.device))
    p.addcmul_(update, c["neg_step"])


# -- the helper for user workloads ------------------------------------------------------

HP_NAMES = ("learning_rate", "weight_decay", "beta1", "beta2", "epsilon", "momentum", "grad_clip")
_HP_DEFAULTS = {
    "weight_decay": 0.0,
    "beta1": 0.9,
    "beta2": 0.999,
    "epsilon": 1e-8,
    "momentum": 0.9,
    "grad_clip": 0.0,
}


@torch.no_grad()
def stacked_optimizer_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    state: dict[str, Any],
    hp: Mapping[str, torch.Tensor | float],
    optimizer: str = "adamw",
    decay: Sequence[bool] | None = None,
) -> None:
    """One optimizer step for K trials whose parameters are stacked on dim 0.

    The same rule as ``torch.optim`` (``sgd``, ``momentum``, ``nesterov``, ``adam``, ``adamw``)
    for every trial at once, each with its own hyperparameters, in batched tensor ops.

    Args:
        params: stacked parameters, each ``(K, *shape)``, updated in place (e.g. the values
            of ``torch.func.stack_module_state(models)[0]``).
        grads: their gradients, same shapes (overwritten by clipping / weight decay).
        state: an empty dict before the first step; holds the moments and step counts.
        hp: per-trial values, tensors of shape ``(K,)`` or floats: ``learning_rate`` (this
            step's, after your schedule), ``weight_decay``, ``beta1``, ``beta2``,
            ``epsilon``, ``momentum``, ``grad_clip`` (0 = off; the global norm per trial).
        decay: which parameters get weight decay; default the weight matrices
            (``ndim >= 3`` stacked, i.e. ``ndim >= 2`` per trial), as the built-ins do.
    """
    k, device = params[0].shape[0], params[0].device

    def column(name: str) -> torch.Tensor:
        value = hp.get(name, _HP_DEFAULTS.get(name))
        if value is None:
            raise ValueError(f"stacked_optimizer_step: hyperparameter {name!r} is required")
        return torch.as_tensor(value, dtype=torch.float32, device=device).expand(k).reshape(k, 1)

    cols = {name: column(name) for name in HP_NAMES}
    decays = list(decay) if decay is not None else [p.ndim >= 3 for p in params]
    flat_g = [g.reshape(k, -1) for g in grads]
    _clip_list(flat_g, cols["grad_clip"])
    c = _user_columns(optimizer, state, cols, k, device)
    for i, (p, g) in enumerate(zip(params, grads)):
        shape = (k,) + (1,) * (p.ndim - 1)
        ci = {name: t.reshape(shape) for name, t in c.items()}
        wd, eps, mom = (cols[n].reshape(shape) for n in ("weight_decay", "epsilon", "momentum"))
        pair = (p, g) if decays[i] else None
        if optimizer in ADAM_KINDS:
            m = state.setdefault(f"exp_avg.{i}", torch.zeros_like(p))
            v = state.setdefault(f"exp_avg_sq.{i}", torch.zeros_like(p))
            adam_math(p, g, m, v, ci, eps, wd, pair, optimizer == "adamw", False)
        else:
            buf = None if optimizer == "sgd" else state.setdefault(f"buf.{i}", torch.zeros_like(p))
            sgd_math(p, g, buf, ci, mom, wd, pair, optimizer == "nesterov")


def _clip_list(flat_grads: list[torch.Tensor], max_norm: torch.Tensor) -> None:
    norms = torch.stack([torch.linalg.vector_norm(g, dim=1) for g in flat_grads], dim=1)
    total = torch.linalg.vector_norm(norms, dim=1, keepdim=True)
    coef = torch.clamp(max_norm / (total + CLIP_EPS), max=1.0)
    coef = torch.where(max_norm > 0, coef, torch.ones_like(coef))
    torch._foreach_mul_(flat_grads, [coef] * len(flat_grads))


def _user_columns(
    optimizer: str, state: dict[str, Any], cols: dict[str, torch.Tensor], k: int, device: Any
) -> dict[str, torch.Tensor]:
    if optimizer not in ADAM_KINDS + SGD_KINDS:
        raise ValueError(f"stacked_optimizer_step: unknown optimizer {optimizer!r}")
    lr, one = cols["learning_rate"], torch.ones(k, 1, device=device)
    if optimizer in SGD_KINDS:
        return {"gate": one, "neg_lr": -lr, "momentum_keep": cols["momentum"]}
    count = state.setdefault("step", torch.zeros(k, 1, device=device))
    count += 1
    b1, b2 = cols["beta1"], cols["beta2"]
    return {
        "gate": one,
        "neg_step": -lr / (1 - b1**count),
        "beta1_w": 1 - b1,
        "beta2_keep": b2,
        "beta2_w": 1 - b2,
        "bc2_sqrt": (1 - b2**count).sqrt(),
        "decay": 1 - lr * cols["weight_decay"],
    }
