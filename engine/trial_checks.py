"""What a study's trials say about how its workload keeps the trial contract: a seed it
ignores (seed reruns that come out identical) and steps past ``max_train_steps``.

An unmodified script often hard-codes its random seed, or loops one step further than it
is told (nanoGPT's ``for it in range(max_iters + 1)``). Neither makes a trial fail, so
nothing else would say so: identical seed reruns look like a noiseless, decisive comparison,
and a trial past its budget trains longer than the study claims. Pure and light (no pandas,
no I/O), so ``tuneplay status`` can run it on every study, and ``decide`` and the report say
the same thing in the same words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.space import format_value
from engine.workloads.command import CommandWorkload, placeholders


def as_command(workload: Any) -> CommandWorkload | None:
    """The command workload behind a spec's (or a stored study's) ``workload``; None for a
    Python workload (``builtin:NAME`` or ``package.module:function``)."""
    if isinstance(workload, CommandWorkload):
        return workload
    if (isinstance(workload, Mapping) and "command" in workload) or isinstance(workload, (list, tuple)):
        return CommandWorkload.from_stored(workload)
    return None


def passes(command: CommandWorkload, name: str) -> bool:
    """Whether the command hands the program the placeholder ``{name}`` at all."""
    return name in command.placed() or name in placeholders(command.args)


# ----------------------------------------------------------------------------- the seed

def seed_advice(workload: Any) -> str:
    """How to make this workload use the trial's seed (one clause, no full stop); both
    forms when the workload is not known (``None``)."""
    if workload is None:
        return ('pass the trial\'s seed to it: put {seed} in a command workload\'s command '
                '(e.g. "--seed={seed}"), use trial.seed in a Python workload')
    command = as_command(workload)
    if command is None:
        return ("seed the training function's random number generators with trial.seed "
                "(e.g. torch.manual_seed(trial.seed))")
    if passes(command, "seed"):
        return ("make the script seed its random number generators with the value its command "
                "passes as {seed} (something in it overrides that value)")
    return 'put {seed} in its command (e.g. "--seed={seed}")'


def identical(values: Sequence[float | None]) -> bool:
    """Two or more finite values, all exactly equal: seeds that changed nothing.

    Exact equality on purpose: a loss from another seed essentially never agrees to the last
    bit, and a stored float round-trips exactly. (A metric on a coarse grid, an error rate
    over a few hundred examples, could agree by chance over two or three seeds.)
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return len(finite) >= 2 and all(v == finite[0] for v in finite)


@dataclass(frozen=True)
class IdenticalReruns:
    """One group of seed reruns (``label``: "baseline", "candidate", "candidate 2") whose
    ``n`` seeds all gave ``value``."""

    label: str
    n: int
    value: float


def ignored_seed_message(
    groups: Sequence[IdenticalReruns], workload: Any, metric: str = "", lead: str = "",
) -> str:
    """Why identical seed reruns settle nothing, and how to pass the seed; ``lead`` opens it.

    ``"Refused: all 5 candidate and all 5 baseline seed reruns gave exactly the same val_loss
    (0.2512 and 0.3011), so the workload ignores its seed: ..."``
    """
    sides = [f"both {g.label}" if g.n == 2 else f"all {g.n} {g.label}" for g in groups]
    values = [format_value(g.value) for g in groups]
    return (f"{lead}{_and(sides)} seed reruns gave exactly the same {metric or 'value'} "
            f"({_and(values)}), so the workload ignores its seed: the reruns measure no trial "
            "variance and no test can tell a real gain from a lucky seed. "
            f"To decide, {seed_advice(workload)}, then rerun with new seeds.")


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ----------------------------------------------------------------------------- the budget

@dataclass(frozen=True)
class StepOverrun:
    """Trials that reported steps at or past their ``max_train_steps`` (steps count from 0,
    so a 200-step budget's last step is 199 and ``steps_done`` is at most 200).

    Attributes:
        n_over: how many trials ran past their budget, of ``n_trained`` that reported a step.
        budgets: the ``max_train_steps`` they ran past (usually one value).
        last_step: the highest step any of them reported.
        trial_ids: the trials behind it; ``message`` the one sentence shown once per study.
    """

    n_over: int
    n_trained: int
    budgets: tuple[int, ...]
    last_step: int
    trial_ids: tuple[int, ...]
    message: str


def step_overrun(
    trial_ids: Sequence[int], steps_done: Sequence[int], max_train_steps: Sequence[int],
    workload: Any,
) -> StepOverrun | None:
    """The study's trials past their budget, from ``steps_done`` (last step + 1) alone; None
    when every trial stayed within it. The trials keep their data: this only says so."""
    rows = list(zip(trial_ids, steps_done, max_train_steps))
    over = [(int(i), int(s), int(m)) for i, s, m in rows if m > 0 and s > m]
    if not over:
        return None
    trained = sum(1 for _, s, _ in rows if s > 0)
    budgets = tuple(sorted({m for _, _, m in over}))
    last = max(s for _, s, _ in over) - 1
    shown = str(budgets[0]) if len(budgets) == 1 else "(" + ", ".join(map(str, budgets)) + ")"
    message = (f"{len(over)} of {trained} trials reported steps past max_train_steps {shown} "
               f"(up to step {last}): the workload runs longer than its budget; "
               f"{steps_advice(workload)}.")
    return StepOverrun(len(over), trained, budgets, last, tuple(i for i, _, _ in over), message)


def steps_advice(workload: Any) -> str:
    """How to make this workload stop at ``max_train_steps`` (one clause, no full stop)."""
    command = as_command(workload)
    if command is None:
        return "stop its training loop at trial.max_train_steps (range(start, trial.max_train_steps))"
    if passes(command, "max_train_steps"):
        return ("its command passes {max_train_steps}, so the script runs past the number it is "
                "given (steps count from 0: a loop like range(max_iters + 1) takes one step more); "
                "its extra steps are kept")
    return 'pass {max_train_steps} to it (e.g. "--max_iters={max_train_steps}")'
