"""One trial's part of a checkpoint as rows of stacked host tensors, built only when needed.

A fused group hands its trials' checkpoints to the checkpoint writer as rows of a few host
tensors (:class:`RowState`: the group's parameters, or its optimizer state) plus a small
picklable *recipe* that cuts those rows into the unfused format (a module ``state_dict``, a
``torch.optim`` state dict), rather than K state dicts built on the training thread. The
writer, or its saver processes (:mod:`engine.runner.saver`), build and save them. Importing
this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Layout = tuple[tuple[str, int, int, tuple[int, ...]], ...]  # (key, offset, numel, shape) per entry


class Recipe(Protocol):
    def build(self, rows: Sequence[Any]) -> Any:
        """The state built from one fresh copy of the trial's row of each source."""
        ...


@dataclass(frozen=True)
class StateDictLayout:
    """A module ``state_dict``: each entry a view into the (one) row."""

    entries: Layout

    def build(self, rows: Sequence[Any]) -> dict[str, Any]:
        (row,) = rows
        return {key: row[offset : offset + numel].view(shape) for key, offset, numel, shape in self.entries}


@dataclass(frozen=True)
class OptimizerLayout:
    """A ``torch.optim`` state dict: per parameter ``pos`` at ``(offset, numel, shape)`` of
    the rows, the named state tensors (one row per name), plus Adam's ``step`` when given."""

    names: tuple[str, ...]
    params: tuple[tuple[int, int, int, tuple[int, ...]], ...]  # (pos, offset, numel, shape)
    step: float | None
    param_groups: list[dict[str, Any]]

    def build(self, rows: Sequence[Any]) -> dict[str, Any]:
        import torch

        state: dict[int, dict[str, Any]] = {}
        for pos, offset, numel, shape in self.params:
            entry: dict[str, Any] = {}
            if self.step is not None:
                entry["step"] = torch.tensor(self.step, dtype=torch.float32)
            for name, row in zip(self.names, rows):
                entry[name] = row[offset : offset + numel].view(shape)
            if entry:
                state[pos] = entry
        return {"state": state, "param_groups": self.param_groups}


@dataclass(frozen=True)
class RowState:
    """Row ``row`` of each host tensor in ``sources`` (each ``(K, N_i)``, on the CPU, not
    changed after it is made), cut by ``recipe``; :meth:`materialize` builds the state."""

    sources: tuple[Any, ...]
    row: int
    recipe: Any  # a Recipe: StateDictLayout, OptimizerLayout

    def materialize(self) -> Any:
        return self.recipe.build([source[self.row].detach().clone() for source in self.sources])


def materialize(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with every :class:`RowState` value replaced by what it builds."""
    return {k: v.materialize() if isinstance(v, RowState) else v for k, v in state.items()}


def row_parts(state: Mapping[str, Any]) -> list[str]:
    """The top-level keys of ``state`` whose values are :class:`RowState`."""
    return [k for k, v in state.items() if isinstance(v, RowState)]
