"""One trial's state dict as a row of a stacked host tensor, built only when needed.

A fused group hands its trials' final weights to the checkpoint writer as rows of one host
tensor (:class:`RowState`) rather than K state dicts; the writer, or its saver processes
(:mod:`engine.runner.saver`), cut each row into the unfused ``state_dict`` format. Importing
this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Layout = tuple[tuple[str, int, int, tuple[int, ...]], ...]  # (key, offset, numel, shape) per entry


@dataclass(frozen=True)
class RowState:
    """One trial's ``nn.Module.state_dict()`` as row ``row`` of a host tensor ``source``
    (``(K, N)``, on the CPU), cut by ``layout``; :meth:`materialize` builds the dict."""

    source: Any  # torch.Tensor, 2-d, CPU
    row: int
    layout: Layout

    def materialize(self) -> dict[str, Any]:
        return cut_row(self.source[self.row], self.layout)


def cut_row(row: Any, layout: Layout) -> dict[str, Any]:
    """The state dict of one row: one copy of the row; the entries are views into it."""
    copy = row.detach().clone()
    return {key: copy[offset : offset + numel].view(shape) for key, offset, numel, shape in layout}


def materialize(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with every :class:`RowState` value replaced by its dict."""
    return {k: v.materialize() if isinstance(v, RowState) else v for k, v in state.items()}


def row_parts(state: Mapping[str, Any]) -> list[str]:
    """The top-level keys of ``state`` whose values are :class:`RowState`."""
    return [k for k, v in state.items() if isinstance(v, RowState)]
