"""Metric rows that could not be written (a full disk) are kept for the next flush."""

from __future__ import annotations

from typing import Any

import pytest

from engine.runner.context import MetricBuffer
from engine.store import DiskFullError
from engine.store.base import MetricRow


class FullOnce:
    def __init__(self) -> None:
        self.written: list[MetricRow] = []
        self.full = True

    def write_metrics(self, rows: Any) -> None:
        if self.full:
            self.full = False
            raise DiskFullError("disk full")
        self.written.extend(rows)


def test_rows_a_full_disk_refused_are_written_by_the_next_flush() -> None:
    store, buffer = FullOnce(), MetricBuffer()
    buffer.rows.extend([MetricRow(1, 0, "val_error", 0.5), MetricRow(1, 1, "val_error", 0.4)])
    with pytest.raises(DiskFullError):
        buffer.flush(store)  # type: ignore[arg-type]
    buffer.rows.append(MetricRow(1, 2, "val_error", 0.3))
    buffer.flush(store)  # type: ignore[arg-type]
    assert [r.step for r in store.written] == [0, 1, 2]
