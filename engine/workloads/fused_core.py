"""The machinery every fused trainer shares: the per-trial checkpoint views and the training
loop (the stacked building blocks are in :mod:`engine.workloads.fused_parts`).

A fused group keeps K trials' parameters in one flat ``(K, N)`` tensor and hands the model
code ``(K, *shape)`` views of it that require grad. One backward pass gives every trial's
gradient (the trials' losses are independent, so the gradient of their sum is each trial's
own), and
:class:`~engine.workloads.fused_optim.StackedOptimizer` updates all of them at once.

Row ``r`` of every stacked tensor belongs to one trial; when trials leave the group (diverged,
cancelled) the survivors are compacted so a half-dead group stops paying for the dead half.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from engine.workloads.common import (
    CUDA_FINITE_CHECK_EVERY,
    OptimConfig,
    build_optimizer,
    is_eval_step,
)
from engine.workloads.fused_optim import StackedOptimizer
from engine.workloads.fused_parts import StackedParams
from engine.workloads.rowstate import OptimizerLayout, RowState

COMPACT_BELOW = 0.5  # compact the stack when fewer than this fraction of its rows still train


class TrialModel:
    """One trial's model as the trial API sees it: ``state_dict()`` builds that trial's plain
    ``nn.Module`` state dict from the stack on demand; ``load_state_dict`` writes into it;
    ``best_snapshot()`` defers the copy of a new best to the group (see :class:`BestRow`)."""

    state_dict_is_copy = True  # the trial API need not copy it again

    def __init__(self, group: FusedTrainer, trial: int, step: int | None = None) -> None:
        self.group, self.trial, self.step = group, trial, step

    def state_dict(self) -> dict[str, torch.Tensor]:
        source = self.group.host_copy(self.step)
        return self.group.params.trial_state_dict(
            self.trial, self.group.row(self.trial), source["flat"] if source else None
        )

    def row_state(self) -> RowState | dict[str, torch.Tensor]:
        """The state dict to be, as a row of the group's host snapshot after this step (the
        checkpoint writer or its savers cut it; no per-trial work on the training thread)."""
        if self.step is None:
            return self.state_dict()
        host = self.group.host_copy(self.step, always=True)
        assert host is not None
        return RowState((host["flat"],), self.group.row(self.trial), self.group.params.layout(self.trial))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.group.params.load_trial_state_dict(self.trial, self.group.row(self.trial), state)

    def best_snapshot(self) -> BestRow:
        return self.group.defer_best(self.trial)


class BestRow:
    """A trial's best weights, kept by its group until someone needs them as a dict.

    At an evaluation the group copies the rows of every trial that improved into one stacked
    buffer with a single device copy (instead of K state dicts); ``resolve()`` builds the
    trial's plain state dict from it when the checkpoint is written, and the group freezes
    every pending one with one host copy when the trial leaves or the run ends.
    """

    def __init__(self, group: FusedTrainer, trial: int) -> None:
        self.group, self.trial = group, trial
        self.frozen: RowState | None = None

    def resolve(self) -> RowState:
        """The best weights as a :class:`RowState` of a host snapshot, which the checkpoint
        writer (or its savers) turns into the state dict."""
        if self.frozen is None:
            self.frozen = self.group.best_row_state(self.trial)
        return self.frozen


class TrialOptimizer:
    """One trial's optimizer as the trial API sees it, in ``torch.optim``'s state_dict format
    (the class the unfused path builds), so either path restores the other's checkpoint."""

    state_dict_is_copy = True  # built from fresh tensors: the trial API need not copy it again

    def __init__(self, group: FusedTrainer, trial: int, step: int = -1) -> None:
        self.group, self.trial, self.step = group, trial, step

    def _cut(self, host: Mapping[str, torch.Tensor] | None) -> tuple[OptimizerLayout, tuple[torch.Tensor, ...]]:
        g, k = self.group, self.trial
        row, opt = g.row(k), g.optimizer
        groups = copy.deepcopy(g.param_groups(k))
        for group in groups:
            group["lr"] = opt.lr(row, self.step)
        layout = opt.trial_layout(row, g.params.segments, opt.step_count(row, self.step), groups)
        state = opt.state if host is None else host
        return layout, tuple(state[name] for name in layout.names)

    def state_dict(self) -> dict[str, Any]:
        layout, sources = self._cut(self.group.host_copy(self.step if self.step >= 0 else None))
        row = self.group.row(self.trial)
        return layout.build([source[row].detach().clone() for source in sources])

    def row_state(self) -> RowState:
        """The state dict to be, as rows of the group's host snapshot after this step."""
        layout, sources = self._cut(self.group.host_copy(self.step, always=True))
        return RowState(sources, self.group.row(self.trial), layout)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        g, k = self.group, self.trial
        ids = [i for group in state["param_groups"] for i in group["params"]]
        if len(ids) != len(g.params.segments):
            raise ValueError(
                f"optimizer state has {len(ids)} parameters, the model has {len(g.params.segments)}"
            )
        counts = [
            g.optimizer.load_trial_state(g.row(k), seg, state["state"].get(i, {}))
            for i, seg in zip(ids, g.params.segments)
        ]
        g.restored_counts[k] = max(counts, default=0.0)


class FusedTrainer:
    """K trials of one shape trained as one computation; subclasses supply the model.

    Subclasses implement :meth:`loss` (per-trial training loss of a step, shape ``(K,)``) and
    :meth:`evaluate` (per-trial metrics ``(K, len(metric_names))``), reading the stacked
    parameters from ``self.params.leaves``, and extend :meth:`select` for their own
    per-row tensors.
    """

    metric_names: tuple[str, ...] = ()

    def __init__(
        self,
        trials: Sequence[Any],
        modules: Sequence[nn.Module],
        cfgs: Sequence[OptimConfig],
        tensors: Iterable[Sequence[torch.Tensor]] | None = None,
    ) -> None:
        """``modules`` and ``tensors`` as for :class:`StackedParams` (see :func:`reinitialized`)."""
        check_group(trials)
        self.trials = list(trials)
        first = self.trials[0]
        self.max_train_steps, self.eval_every = first.max_train_steps, first.eval_every
        self.device = str(first.device)
        # param_groups hold parameter indices and hyperparameters only: one module of the
        # group's shape serves every trial (keeping K modules would hold K models' memory)
        self._template, self._cfgs = modules[0], list(cfgs)
        self._param_groups: dict[int, list[dict[str, Any]]] = {}
        self.params = StackedParams(modules, self.device, tensors)
        self.optimizer = StackedOptimizer(
            cfgs[0].optimizer,
            cfgs,
            self.params.n_columns,
            self.params.n_decay,
            self.max_train_steps,
            self.device,
        )
        self.rows = list(range(len(self.trials)))  # trial index -> row (-1: left the group)
        self.restored_counts = [0.0] * len(self.trials)
        self.best_flat = torch.empty_like(self.params.flat)  # rows: each trial's best weights
        self._best_pending: dict[int, BestRow] = {}  # improved at this eval, not yet copied
        self._best: dict[int, BestRow] = {}  # each trial's latest deferred best
        self._host: tuple[int, dict[str, torch.Tensor]] | None = None
        self._best_host: tuple[int, torch.Tensor] | None = None
        self._eval_step: int | None = None  # the evaluation whose checkpoints are being offered

    def row(self, trial: int) -> int:
        return self.rows[trial]

    def param_groups(self, trial: int) -> list[dict[str, Any]]:
        """Trial ``trial``'s ``torch.optim`` param_groups (as the unfused path has them),
        built when a checkpoint first needs them."""
        if trial not in self._param_groups:
            optimizer = build_optimizer(self._template, self._cfgs[trial])
            self._param_groups[trial] = optimizer.state_dict()["param_groups"]
        return self._param_groups[trial]

    # -- snapshots ---------------------------------------------------------------------
    def host_copy(self, step: int | None, always: bool = False) -> dict[str, torch.Tensor] | None:
        """The parameters and optimizer state after ``step`` copied to the host once for the
        whole group (K trials' checkpoints cost one transfer, not K x tensors), and never
        changed afterwards. On a CPU, or with no step, None (read the live tensors), unless
        ``always``: then a copy on any device."""
        if step is None or not (always or self.device.startswith("cuda")):
            return None
        if self._host is None or self._host[0] != step:
            tensors = {"flat": self.params.flat, **self.optimizer.state}
            on_gpu = self.device.startswith("cuda")
            copy_ = (lambda t: t.detach().to("cpu")) if on_gpu else (lambda t: t.detach().clone())
            self._host = (step, {name: copy_(t) for name, t in tensors.items()})
        return self._host[1]

    def defer_best(self, trial: int) -> BestRow:
        """Trial ``trial`` has a new best now: its row is copied at the end of this eval."""
        best = BestRow(self, trial)
        self._best_pending[trial] = best
        self._best[trial] = best
        return best

    def best_row_state(self, trial: int) -> RowState:
        """Trial ``trial``'s best weights as a row of a host snapshot taken at this eval
        (its new best is still in the live parameters; an older one is in the buffer)."""
        row = self.rows[trial]
        if row < 0 or self._eval_step is None:
            raise RuntimeError(f"trial {trial}'s best weights left the group unsaved")
        if trial in self._best_pending:
            source = self.host_copy(self._eval_step, always=True)["flat"]  # type: ignore[index]
        else:
            source = self._best_host_copy(self._eval_step)
        return RowState((source,), row, self.params.layout(trial))

    def _best_host_copy(self, step: int) -> torch.Tensor:
        if self._best_host is None or self._best_host[0] != step:
            best = self.best_flat.detach()
            self._best_host = (step, best.to("cpu") if self.device.startswith("cuda") else best.clone())
        return self._best_host[1]

    @torch.no_grad()
    def _commit_best(self) -> None:
        """Copy the rows of the trials that improved at this eval, in one device op."""
        if not self._best_pending:
            return
        rows = torch.tensor([self.rows[k] for k in self._best_pending], device=self.best_flat.device)
        self.best_flat.index_copy_(0, rows, self.params.flat.index_select(0, rows))
        self._best_pending.clear()

    def _freeze_best(self, trials: Sequence[int]) -> None:
        """Build the pending best dicts of ``trials`` now (one host copy for all of them)."""
        self._commit_best()
        todo = [
            self._best[k]
            for k in trials
            if k in self._best and self._best[k].frozen is None and self.rows[k] >= 0
        ]
        if not todo:
            return
        host = self.best_flat.detach().to("cpu") if self.device.startswith("cuda") else self.best_flat
        for best in todo:  # rows of the host copy: the writer (or its savers) cut them
            best.frozen = RowState((host,), self.rows[best.trial], self.params.layout(best.trial))

    # -- model hooks -------------------------------------------------------------------
    def loss(self, step: int) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self) -> torch.Tensor:
        raise NotImplementedError

    def segment_start(self, step: int) -> None:
        """Called when training (re)starts at ``step`` and after each evaluation (``step``
        is then the next one): where a subclass reseeds a global RNG it uses."""

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the stack rows ``rows``; subclasses index their own per-row tensors."""
        kept = rows.tolist()
        keep = set(kept)
        self._freeze_best([k for k, r in enumerate(self.rows) if r >= 0 and r not in keep])
        on_device = rows.to(self.params.flat.device)
        self.params.select(on_device)
        self.optimizer.select(on_device)
        self.best_flat = self.best_flat.index_select(0, on_device)
        self._host = self._best_host = None
        new = {old: i for i, old in enumerate(kept)}
        self.rows = [new.get(r, -1) for r in self.rows]

    # -- the loop ----------------------------------------------------------------------
    def close(self) -> None:
        """Release what the trainer holds beyond memory (subclasses: helper threads)."""

    def run(self) -> None:
        """Restore, train, report / checkpoint per trial, let trials leave; see the module doc."""
        try:
            self._run()
        finally:
            try:
                self._freeze_best(range(len(self.trials)))
            finally:
                self._host = self._best_host = None
                self.close()

    def _run(self) -> None:
        starts = [
            t.restore(model=TrialModel(self, k), optimizer=TrialOptimizer(self, k))
            for k, t in enumerate(self.trials)
        ]
        self.optimizer.set_resume(starts, self.restored_counts)
        live = [k for k, s in enumerate(starts) if s < self.max_train_steps]
        if not live:
            return
        check_every = CUDA_FINITE_CHECK_EVERY if self.device.startswith("cuda") else 1
        first = min(starts[k] for k in live)
        meter = torch.zeros(len(self.trials), device=self.device)
        last_reset = first - 1
        latest = max(starts[k] for k in live)
        self.segment_start(first)
        for step in range(first, self.max_train_steps):
            mixed = step < latest  # someone still waits for its own start step
            loss = self.loss(step)
            grads = torch.autograd.grad(loss.sum(), self.params.leaves)
            self.optimizer.step(self.params.flat, self.params.flat_grad(grads), step, mixed)
            meter += loss.detach()
            eval_now = is_eval_step(step, self)
            if eval_now or step % check_every == 0:
                started = [k for k in live if starts[k] <= step]
                counts = [step - max(last_reset + 1, starts[k]) + 1 for k in started]
                live = self._check(step, started, counts, meter, eval_now, live)
                if eval_now:
                    meter.zero_()
                    last_reset = step
                    self.segment_start(step + 1)
                # stop requests (cancel, pause, divergence) are looked at with the losses:
                # K Python calls a step would cost a large group more than its kernels
                live = [k for k in live if not self.trials[k].should_stop()]
                if not live:
                    return
                latest = max(starts[k] for k in live)
                if len(live) < COMPACT_BELOW * meter.shape[0]:
                    meter = self._compact(live, meter)

    def _check(
        self,
        step: int,
        started: list[int],
        counts: list[int],
        meter: torch.Tensor,
        eval_now: bool,
        live: list[int],
    ) -> list[int]:
        """Report divergence (train_loss only), or at an eval step the metrics, per trial."""
        if not started:
            return live
        sums = meter.tolist()
        gone: set[int] = set()
        ok: list[tuple[int, float]] = []
        for k, count in zip(started, counts):
            train_loss = sums[self.rows[k]] / max(1, count)
            if math.isfinite(train_loss):
                ok.append((k, train_loss))
            else:
                self.trials[k].report(step, train_loss=train_loss)
                gone.add(k)
        if eval_now and ok:
            with torch.no_grad():
                values = self.evaluate().tolist()
            for k, train_loss in ok:
                metrics = dict(zip(self.metric_names, values[self.rows[k]]))
                self.trials[k].report(step, train_loss=train_loss, **metrics)
            # every report first: a trial's save flushes the metrics the group shares once
            self._eval_step = step
            for k, _ in ok:
                self.trials[k].checkpoint(
                    step, model=TrialModel(self, k, step), optimizer=TrialOptimizer(self, k, step)
                )
            self._commit_best()
        return [k for k in live if k not in gone]

    def _compact(self, live: list[int], meter: torch.Tensor) -> torch.Tensor:
        rows = torch.tensor([self.rows[k] for k in live], dtype=torch.long)
        self.select(rows)  # the rows of trials not live become -1
        return meter.index_select(0, rows.to(meter.device))


def check_group(trials: Sequence[Any]) -> None:
    """A fused group shares ``max_train_steps``, ``eval_every`` and ``device``."""
    if not trials:
        raise ValueError("a fused group needs at least one trial")
    first = trials[0]
    for t in trials[1:]:
        same = (t.max_train_steps, t.eval_every, str(t.device)) == (
            first.max_train_steps,
            first.eval_every,
            str(first.device),
        )
        if not same:
            raise ValueError(
                "a fused group's trials must share max_train_steps, eval_every and device"
            )
