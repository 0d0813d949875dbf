"""What a command trial printed: the tail of ``checkpoints/<id>/output.log`` (and of the
rolled-over ``output.log.1`` when the current file is short), for failure messages in
``status``, the report and the app's trial detail. Reads the end of the file only."""

from __future__ import annotations

import os
from pathlib import Path

TAIL_BYTES = 16_384


def output_log(workspace: Path, trial_id: int) -> Path:
    """Where a command trial's output goes (every attempt appends to it)."""
    return workspace / "checkpoints" / str(trial_id) / "output.log"


def output_tail(workspace: Path, trial_id: int, lines: int = 5) -> list[str]:
    """The last ``lines`` non-empty lines the trial's program printed ([] if none)."""
    path = output_log(workspace, trial_id)
    found = _tail(path, lines)
    if len(found) < lines:
        found = _tail(path.with_name(path.name + ".1"), lines - len(found)) + found
    return found


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    kept = [ln.rstrip()[:300] for ln in text.splitlines() if ln.strip() and not ln.startswith("--- attempt ")]
    return kept[-lines:] if lines > 0 else []
