"""Waiting on training by its progress, not by the wall clock: a busy machine is slow, not stuck."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


def wait_while_progressing(
    done: Callable[[], bool], progress: Callable[[], Hashable], stall: float = 120, poll: float = 0.2,
) -> None:
    """Wait until ``done()``; fail only when ``progress()`` has not changed for ``stall`` seconds.

    ``progress`` is anything that changes while work goes on (steps done, trial states), so a
    slow machine gets all the time it needs and a stuck engine still fails the test.
    """
    last, since = progress(), time.monotonic()
    while not done():
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stall:
            raise AssertionError(f"no progress for {stall:.0f} s (last: {last!r})")
        time.sleep(poll)
