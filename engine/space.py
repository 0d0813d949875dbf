"""Hyperparameter types and scales, and the mapping between the unit cube and values.

A study's search space is a tuple of :class:`Param` objects. Each maps a coordinate in
[0, 1) to a value through its scale, so the quasi-random sampler can draw in the unit
cube and every search method shares one definition of "where a value sits in its range".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Union

Scale = Literal["linear", "log", "int", "int_log"]
SCALES: tuple[str, ...] = ("linear", "log", "int", "int_log")
Role = Literal["scientific", "nuisance", "fixed"]
Scalar = Union[bool, int, float, str]


@dataclass(frozen=True)
class RangeParam:
    """A numeric hyperparameter searched over ``[low, high]`` on a scale."""

    name: str
    low: float
    high: float
    scale: Scale = "linear"

    @property
    def is_int(self) -> bool:
        return self.scale in ("int", "int_log")

    @property
    def is_log(self) -> bool:
        return self.scale in ("log", "int_log")

    def from_unit(self, u: float) -> float | int:
        """The value at unit coordinate ``u`` (0 -> low, 1 -> high)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.is_int:
            # Equal-width bins per integer (on the scale), so no integer is favoured.
            lo, hi = self.low - 0.5, self.high + 0.5
            if self.is_log:  # validation guarantees low >= 1
                value = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            else:
                value = lo + u * (hi - lo)
            return int(min(max(round(value), self.low), self.high))
        if self.is_log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def to_unit(self, value: float) -> float:
        """Where ``value`` sits in the range, 0 at ``low`` and 1 at ``high`` (on the scale)."""
        v = float(value)
        if self.is_log:
            if v <= 0:
                return 0.0
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= float(value) <= self.high

    def describe(self) -> str:
        return f"[{_fmt(self.low)}, {_fmt(self.high)}] {self.scale}"


@dataclass(frozen=True)
class ChoiceParam:
    """A categorical hyperparameter: one of ``values``."""

    name: str
    values: tuple[Scalar, ...]

    def from_unit(self, u: float) -> Scalar:
        index = min(int(min(max(float(u), 0.0), 1.0) * len(self.values)), len(self.values) - 1)
        return self.values[index]

    def to_unit(self, value: Any) -> float:
        index = self.values.index(value)
        return (index + 0.5) / len(self.values)

    def contains(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "{" + ", ".join(_fmt(v) for v in self.values) + "}"


Param = Union[RangeParam, ChoiceParam]


def is_range(param: Param) -> bool:
    return isinstance(param, RangeParam)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_value(value: Any) -> str:
    """A short, stable rendering of a hyperparameter value for tables and plots."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)
