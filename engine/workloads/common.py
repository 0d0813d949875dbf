"""Torch code the built-in workloads share: optimizers, schedules, data order, the loop.

The pieces are separate on purpose (model construction lives in each workload; the
optimizer, the schedule and the data order here), so a fused trainer that stacks K
trials' weights with ``torch.func`` can reuse the schedule and the data order unchanged.

Reproducibility contract: a trial resumed from its checkpoint at step ``k`` continues
exactly as the uninterrupted run would have. Three things make that true:

* the batch of step ``s`` depends only on ``(seed, s)`` (:class:`EpochSampler`);
* the learning rate of step ``s`` is a pure function of ``s`` (:func:`lr_at`);
* the global RNG (dropout) is reseeded from ``(seed, k + 1)`` right after every
  checkpoint, and from ``(seed, start)`` when a run starts or resumes (:func:`reseed`).

``torch.set_num_threads`` is left to the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.workloads.builtin import ACTIVATIONS, OPTIMIZERS, SCHEDULES

# On a GPU, reading the loss back forces a sync; check for divergence this often.
CUDA_FINITE_CHECK_EVERY = 32


def seed_cpu(seed: int) -> None:
    """Seed the CPU generator only: what a module built on the CPU draws its initial weights
    from. The same stream as ``torch.manual_seed`` gives it, without seeding every GPU and
    the dynamo guard around it (0.1 ms a call: a fused group of 1,024 trials builds 1,024)."""
    torch.default_generator.manual_seed(seed)


def check_choice(hp: Mapping[str, Any], name: str, choices: Iterable[str]) -> str:
    """``hp[name]`` if it is one of ``choices``, else a ValueError naming the key."""
    value = hp[name]
    allowed = tuple(choices)
    if value not in allowed:
        raise ValueError(f"hyperparameter {name}={value!r}: expected one of {', '.join(allowed)}")
    return str(value)


def check_range(
    hp: Mapping[str, Any],
    name: str,
    low: float,
    high: float | None = None,
    *,
    high_open: bool = True,
) -> float:
    """``hp[name]`` as a float if ``low <= value < high`` (or ``<= high``), else ValueError."""
    value = float(hp[name])
    above = high is not None and (value >= high if high_open else value > high)
    if not value >= low or above:  # `not >=` also rejects NaN
        bound = "" if high is None else (f", {high})" if high_open else f", {high}]")
        raise ValueError(f"hyperparameter {name}={value!r}: expected [{low}{bound or ', inf)'}")
    return value


def check_positive_int(hp: Mapping[str, Any], name: str, low: int = 1) -> int:
    """``hp[name]`` as an int >= ``low`` (an integral float such as 64.0 is accepted)."""
    value = hp[name]
    try:
        ok = not isinstance(value, bool) and float(value) == int(value) and int(value) >= low
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"hyperparameter {name}={value!r}: expected an integer >= {low}")
    return int(value)


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer, schedule and loss hyperparameters shared by every built-in workload."""

    optimizer: str
    learning_rate: float
    momentum: float
    beta1: float
    beta2: float
    epsilon: float
    weight_decay: float
    schedule: str
    warmup_fraction: float
    label_smoothing: float
    grad_clip: float

    @classmethod
    def from_hp(cls, hp: Mapping[str, Any]) -> OptimConfig:
        """Read and validate the shared hyperparameters (all of them, always)."""
        return cls(
            optimizer=check_choice(hp, "optimizer", OPTIMIZERS),
            learning_rate=check_range(hp, "learning_rate", 0.0, None),
            momentum=check_range(hp, "momentum", 0.0, 1.0),
            beta1=check_range(hp, "beta1", 0.0, 1.0),
            beta2=check_range(hp, "beta2", 0.0, 1.0),
            epsilon=check_range(hp, "epsilon", 0.0, None),
            weight_decay=check_range(hp, "weight_decay", 0.0, None),
            schedule=check_choice(hp, "schedule", SCHEDULES),
            warmup_fraction=check_range(hp, "warmup_fraction", 0.0, 1.0, high_open=False),
            label_smoothing=check_range(hp, "label_smoothing", 0.0, 1.0),
            grad_clip=check_range(hp, "grad_clip", 0.0, None),
        )


def read_dropout(hp: Mapping[str, Any]) -> float:
    """``hp["dropout"]`` validated to [0, 1)."""
    return check_range(hp, "dropout", 0.0, 1.0)


def make_activation(name: str) -> nn.Module:
    """The activation module for ``name`` in relu / gelu / tanh / silu."""
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "silu": nn.SiLU,
    }
    if name not in table:
        raise ValueError(
            f"hyperparameter activation={name!r}: expected one of {', '.join(ACTIVATIONS)}"
        )
    return table[name]()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight matrices (ndim >= 2) get ``weight_decay``; biases and norm gains do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` over ``model``'s parameters.

    ``weight_decay`` is coupled L2 for sgd / momentum / nesterov / adam and decoupled for
    adamw (torch semantics: each step multiplies weights by ``1 - lr * weight_decay``).
    """
    groups = param_groups(model, cfg.weight_decay)
    lr = cfg.learning_rate
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr)
    if cfg.optimizer in ("momentum", "nesterov"):
        nesterov = cfg.optimizer == "nesterov" and cfg.momentum > 0
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=nesterov)
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return adam(groups, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.epsilon)


def lr_at(step: int, cfg: OptimConfig, max_train_steps: int) -> float:
    """The learning rate of ``step`` (0-based) in a run of ``max_train_steps`` steps.

    * constant: ``learning_rate`` throughout.
    * cosine: half a cosine from ``learning_rate`` towards 0 at ``max_train_steps``.
    * linear_warmup_cosine: linear from ``lr / w`` to ``lr`` over the first
      ``w = round(warmup_fraction * max_train_steps)`` steps, then cosine to 0.
    * linear_decay: straight line from ``learning_rate`` towards 0 at ``max_train_steps``.

    Pure (no torch): the same function serves a fused trainer and a resumed run.
    """
    base, total = cfg.learning_rate, max(1, max_train_steps)
    if cfg.schedule == "constant":
        return base
    if cfg.schedule == "linear_decay":
        return base * (1.0 - step / total)
    warmup = round(cfg.warmup_fraction * total) if cfg.schedule == "linear_warmup_cosine" else 0
    warmup = min(warmup, total - 1)
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def mix_seed(seed: int, salt: int) -> int:
    """A 63-bit seed derived from ``(seed, salt)``; distinct pairs give unrelated streams."""
    x = int(seed) * 0x9E3779B97F4A7C15 + int(salt) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB
    x &= (1 << 64) - 1
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & ((1 << 64) - 1)
    x ^= x >> 32
    return x & ((1 << 63) - 1)


def reseed(seed: int, step: int) -> None:
    """Reseed the global RNG (dropout) so the steps from ``step`` on are reproducible."""
    torch.manual_seed(mix_seed(seed, 1_000_003 + step))


MASK32 = 0xFFFFFFFF


def hash32(x: torch.Tensor) -> torch.Tensor:
    """The "lowbias32" integer hash, elementwise on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def epoch_orders(
    seeds: Sequence[int], epoch: int, n: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The example order of ``epoch`` for each seed: a ``(len(seeds), n)`` tensor of
    permutations of ``range(n)``, made on ``device``.

    Row k sorts the examples by a 62-bit hash of ``(seeds[k], epoch, index)`` (a stable sort,
    so the rare equal key breaks by index): a pure function of its seed, epoch and ``n``, so
    one trial gets the same order alone or in a fused group of any size, on a CPU or a GPU,
    and a group draws all of its orders in a few kernels instead of K generator calls.
    """
    mixed = [mix_seed(s, epoch) for s in seeds]
    lo = torch.tensor([m & MASK32 for m in mixed], dtype=torch.int64, device=device)
    hi = torch.tensor([(m >> 32) & MASK32 for m in mixed], dtype=torch.int64, device=device)
    index = torch.arange(n, dtype=torch.int64, device=device)
    a = hash32(hash32(index[None, :] ^ lo[:, None]) ^ hi[:, None])
    b = hash32(a ^ (hi[:, None] * 0x9E3779B1 & MASK32))
    keys = (a << 30) | (b >> 2)
    return torch.argsort(keys, dim=1, stable=True)


class EpochSampler:
    """Deterministic batches: each epoch is a permutation seeded from ``(seed, epoch)``.

    The batch of step ``s`` depends only on ``(seed, s)``, so a resumed trial sees exactly
    the batches the uninterrupted run would have. The last partial batch of an epoch is
    dropped so every step has ``batch_size`` examples.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: str | torch.device = "cpu"):
        if batch_size > n:
            raise ValueError(
                f"hyperparameter batch_size={batch_size}: at most {n} (the training set size)"
            )
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.steps_per_epoch = n // batch_size
        self._epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        """The example indices (on ``device``) of the batch for ``step``."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm = epoch_orders([self.seed], epoch, self.n, self.device)[0]
            self._epoch = epoch
        start = within * self.batch_size
        return self._perm[start : start + self.batch_size]


class LossMeter:
    """Sums the training loss on the device, so reading it back happens only when asked."""

    def __init__(self, device: str | torch.device):
        self.total = torch.zeros((), device=device, dtype=torch.float32)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().float()
        self.count += 1

    def mean(self) -> float:
        """The mean since the last :meth:`reset` (a host sync on a GPU)."""
        return float(self.total.item()) / max(1, self.count)

    def reset(self) -> None:
        self.total.zero_()
        self.count = 0


def is_eval_step(step: int, trial: Any) -> bool:
    """Whether ``step`` is an evaluation point: every ``eval_every`` steps and the last."""
    return step % trial.eval_every == 0 or step == trial.max_train_steps - 1


def train_one_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float
) -> None:
    """Backpropagate ``loss`` and apply one update (clipping the global norm if asked)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def run_training(
    trial: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: OptimConfig,
    loss_at: Callable[[int], torch.Tensor],
    evaluate: Callable[[], dict[str, float]],
) -> None:
    """The shared loop: restore, train, evaluate/report/checkpoint, honour stop requests.

    Args:
        trial: the engine's trial context (``max_train_steps``, ``eval_every``, ``seed``,
            ``device``, ``report``, ``checkpoint``, ``restore``, ``should_stop``).
        loss_at: the training loss of step ``s`` (forward pass on that step's batch).
        evaluate: validation metrics of the current model (called in eval mode, no grad).

    A non-finite training loss is reported at once (``train_loss`` only) and the run
    returns, so the engine records DIVERGED at that step.
    """
    start = trial.restore(model=model, optimizer=optimizer)
    reseed(trial.seed, start)
    meter = LossMeter(trial.device)
    check_every = CUDA_FINITE_CHECK_EVERY if str(trial.device).startswith("cuda") else 1
    model.train()
    for step in range(start, trial.max_train_steps):
        set_lr(optimizer, lr_at(step, cfg, trial.max_train_steps))
        loss = loss_at(step)
        train_one_step(model, optimizer, loss, cfg.grad_clip)
        meter.add(loss)
        eval_now = is_eval_step(step, trial)
        if eval_now or step % check_every == 0:
            train_loss = meter.mean()
            if not math.isfinite(train_loss):
                trial.report(step, train_loss=train_loss)
                return
            if eval_now:
                _evaluate_and_checkpoint(trial, step, model, optimizer, train_loss, evaluate)
                meter.reset()
                reseed(trial.seed, step + 1)
        if trial.should_stop():
            return


def _evaluate_and_checkpoint(
    trial: Any,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loss: float,
    evaluate: Callable[[], dict[str, float]],
) -> None:
    model.eval()
    with torch.no_grad():
        metrics = evaluate()
    model.train()
    trial.report(step, train_loss=train_loss, **metrics)
    trial.checkpoint(step, model=model, optimizer=optimizer)
