"""Quasi-random search: scrambled Halton points mapped through each hyperparameter's scale.

Stateless: the point at index ``i`` depends only on (dimensions, seed, i). The study stores
its seed and next index, so resuming or extending a study continues the same sequence, and
a new seed gives an independent replicate of the whole search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import qmc

from engine.space import Param


def unit_points(d: int, seed: int, start: int, n: int) -> np.ndarray:
    """Points ``start .. start+n-1`` of the scrambled Halton sequence in ``[0, 1)^d``."""
    if n <= 0:
        return np.empty((0, d))
    if d == 0:
        return np.empty((n, 0))
    sampler = qmc.Halton(d=d, scramble=True, seed=seed)
    if start:
        sampler.fast_forward(start)
    return sampler.random(n)


def halton_points(params: Sequence[Param], seed: int, start: int, n: int) -> list[dict[str, Any]]:
    """The hyperparameter values of points ``start .. start+n-1``, one dict per point."""
    cube = unit_points(len(params), seed, start, n)
    return [
        {p.name: _native(p.from_unit(u)) for p, u in zip(params, row)} for row in cube
    ]


def _native(value: Any) -> Any:
    """Plain Python scalars (JSON- and TOML-friendly) rather than numpy ones."""
    return value.item() if isinstance(value, np.generic) else value
