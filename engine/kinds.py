"""The closed sets of names the engine passes around, as enums (never bare strings).

They are ``StrEnum``: each member *is* its stored string (``Mode.MIN == "min"``, JSON and
SQL see ``"min"``), so records written before these types existed read back unchanged.
"""

from __future__ import annotations

import enum


class Mode(enum.StrEnum):
    """Whether the study's metric is minimized or maximized."""

    MIN = "min"
    MAX = "max"

    @property
    def sign(self) -> float:
        """+1 for MIN, -1 for MAX: ``sign * value`` is smaller for better values."""
        return 1.0 if self is Mode.MIN else -1.0

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a < b if self is Mode.MIN else a > b


class Search(enum.StrEnum):
    """How a study picks its points."""

    QUASI_RANDOM = "quasi_random"
    BAYESIAN = "bayesian"


class TrialKind(enum.StrEnum):
    """Why a trial exists: a search point, a seed rerun, or a run of the baseline as it stands."""

    SEARCH = "search"
    RERUN = "rerun"
    BASELINE = "baseline"


class Verdict(enum.StrEnum):
    """What a decision concluded."""

    ADOPT = "adopt"
    REJECT = "reject"
    INCONCLUSIVE = "inconclusive"
