"""A command workload as a study file writes it: argv, working folder, how values print,
how the program resumes, and the regular expressions that read metrics from its output.

Pure and light (no torch): the study loader validates with it, the worker runs with it.

```toml
[study.workload]
command = ["python", "train.py", "--out_dir={checkpoint_dir}", "--seed={seed}"]
cwd = "trainer"                  # relative to the study file's folder (default: that folder)
args = "--{name}={value}"        # each hyperparameter not already placed; "" = placeholders only
bools = "python"                 # lower (true/false) | python (True/False) | flag (--name or nothing)
resume = ["--resume"]            # appended when the trial's folder holds an earlier attempt's files
stdout = ['^step (?P<step>\\d+): .*val loss (?P<val_loss>[\\d.]+)']
```
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import TuneplayError

BOOL_STYLES = ("lower", "python", "flag")
DEFAULT_ARGS = "--{name}={value}"
# What every trial provides besides its hyperparameters.
BUILTIN_PLACEHOLDERS = ("seed", "trial_id", "max_train_steps", "eval_every", "checkpoint_dir", "device", "gpus")
KEYS = ("command", "cwd", "args", "bools", "resume", "stdout")
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class CommandConfigError(TuneplayError, ValueError):
    """A problem with one key of a command workload; ``key`` names it (``command``, ``stdout``…)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}")


@dataclass(frozen=True)
class CommandWorkload:
    """Any program, run directly (never through a shell), one argv token per value.

    ``cwd`` is absolute once loaded from a study file; ``""`` (studies stored before it
    existed) runs in the workspace's parent folder, as those studies always did.
    """

    command: tuple[str, ...]
    cwd: str = ""
    args: str = DEFAULT_ARGS
    bools: str = "lower"
    resume: tuple[str, ...] = ()
    stdout: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """The one-string name experiments are keyed by (argv joined; display only)."""
        return "command:" + " ".join(self.command)

    def to_dict(self) -> dict[str, Any]:
        return {"command": list(self.command), "cwd": self.cwd, "args": self.args, "bools": self.bools,
                "resume": list(self.resume), "stdout": list(self.stdout)}

    @classmethod
    def from_stored(cls, value: Sequence[str] | Mapping[str, Any]) -> CommandWorkload:
        """From a stored spec: a plain argv list (older studies) or :meth:`to_dict`'s form."""
        if isinstance(value, Mapping):
            return cls(
                command=tuple(value["command"]), cwd=value.get("cwd", ""),
                args=value.get("args", DEFAULT_ARGS), bools=value.get("bools", "lower"),
                resume=tuple(value.get("resume", ())), stdout=tuple(value.get("stdout", ())),
            )
        return cls(command=tuple(value))

    # -- argv --------------------------------------------------------------------------
    def placed(self) -> set[str]:
        """Names used as placeholders in the command (``args`` does not repeat them)."""
        return {name for token in self.command for name in placeholders(token)}

    def argv(self, values: Mapping[str, Any], hp: Mapping[str, Any], resuming: bool = False) -> list[str]:
        """The full argv: command tokens filled in, then one token per hyperparameter not
        already placed, then ``resume`` when ``resuming``. ``values`` holds the builtins."""
        every = {**hp, **values}
        out: list[str] = []
        for token in self.command:
            out.extend(self._token(token, every))
        if self.args:
            placed = self.placed()
            for name, value in hp.items():
                if name not in placed:
                    out.extend(self._arg(name, value, values))
        if resuming:
            for token in self.resume:
                out.extend(self._token(token, every))
        return out

    def _token(self, token: str, every: Mapping[str, Any]) -> list[str]:
        names = placeholders(token)
        if self.bools == "flag" and len(names) == 1 and token == "{" + next(iter(names)) + "}":
            value = every[next(iter(names))]
            if isinstance(value, bool):  # a flag alone: "--name" when true, no token when false
                return [f"--{next(iter(names))}"] if value else []
        return [fill(token, {k: self.show(v) for k, v in every.items()})]

    def _arg(self, name: str, value: Any, values: Mapping[str, Any]) -> list[str]:
        if self.bools == "flag" and isinstance(value, bool):
            if not value:
                return []
            template = re.sub(r"[=:]?\{value\}", "", self.args)
            return [fill(template, {**{k: self.show(v) for k, v in values.items()}, "name": name})]
        shown = {k: self.show(v) for k, v in values.items()}
        return [fill(self.args, {**shown, "name": name, "value": self.show(value)})]

    def show(self, value: Any) -> str:
        """A value as the program reads it: booleans per ``bools``, floats always with a
        decimal point or exponent (``0.0``, never ``0``), ints as ints."""
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            value = value.item()  # numpy scalars
        if isinstance(value, bool):
            if self.bools == "python":
                return "True" if value else "False"
            return "true" if value else "false"
        if isinstance(value, float):
            return repr(value) if math.isfinite(value) else str(value)
        return str(value)

    # -- metrics from output ------------------------------------------------------------
    def patterns(self) -> list[re.Pattern[str]]:
        return [re.compile(p) for p in self.stdout]

    def output_metrics(self) -> set[str]:
        """Every metric some ``stdout`` pattern captures."""
        return {g for p in self.patterns() for g in p.groupindex if g != "step"}


def placeholders(token: str) -> set[str]:
    """Field names in ``token`` (``{{`` and ``}}`` are literal braces)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(token) if name is not None}
    except ValueError:
        return set()


def fill(token: str, values: Mapping[str, str]) -> str:
    """Replace each ``{name}`` with its value; one token in, one token out, no shell."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(token):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return "".join(out)


def check_command(
    config: CommandWorkload, hyperparameters: Sequence[str], metric: str | None,
) -> None:
    """Validate what can be known without running: placeholders, ``bools``, the regexes.

    Raises:
        CommandConfigError: naming the key at fault.
    """
    known = set(BUILTIN_PLACEHOLDERS) | set(hyperparameters)
    for key, tokens, extra in (("command", config.command, set()), ("resume", config.resume, set()),
                               ("args", (config.args,), {"name", "value"})):
        for token in tokens:
            _check_token(key, token, known | extra)
    if config.bools not in BOOL_STYLES:
        raise CommandConfigError("bools", f"must be one of {', '.join(BOOL_STYLES)}, got {config.bools!r}")
    for pattern in config.stdout:
        _check_pattern(pattern)
    captured = config.output_metrics()
    if config.stdout and metric and metric not in captured:
        raise CommandConfigError(
            "stdout", f"no pattern captures the study's metric {metric!r} (named groups: "
            f"{', '.join(sorted(captured)) or 'none'}); name a group (?P<{metric}>...) or set study.metric")


def _check_token(key: str, token: str, known: set[str]) -> None:
    try:
        fields = list(string.Formatter().parse(token))
    except ValueError as exc:
        raise CommandConfigError(key, f"{token!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if spec or conversion:
            raise CommandConfigError(key, f"{token!r}: placeholders take no format spec or conversion")
        if name not in known:
            raise CommandConfigError(
                key, f"unknown placeholder {{{name}}} in {token!r} (known: {', '.join(sorted(known))})")


def _check_pattern(pattern: Any) -> None:
    if not isinstance(pattern, str):
        raise CommandConfigError("stdout", f"must be a list of regular expressions, got {pattern!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise CommandConfigError("stdout", f"bad regular expression {pattern!r}: {exc}") from None
    if not compiled.groupindex:
        raise CommandConfigError("stdout", f"{pattern!r} has no named group: write (?P<val_loss>[0-9.]+)")
    metrics = [g for g in compiled.groupindex if g != "step"]
    if not metrics:
        raise CommandConfigError("stdout", f"{pattern!r} captures only the step: name a metric group too")
    for g in metrics:
        if not _METRIC_RE.match(g):
            raise CommandConfigError("stdout", f"group name {g!r} is not a metric name")
