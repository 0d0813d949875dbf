"""Benchmark the terminal app: time to first paint, and frames while 500 trials run.

Run: ``.venv/bin/python benchmarks/tui_bench.py [--trials 500] [--ticks 60]``

* **import** — importing ``tuneplay_tui.app`` (Textual, the engine's light modules) in a
  fresh interpreter: what ``tuneplay`` pays before anything shows.
* **first paint** — from constructing the app on the fake workspace to the home screen
  mounted (first frame), and to the first frame that shows the workspace's data.
* **frames while following a study** — the running screen follows a study of N trials,
  all running; each tick the fake advances every trial by 5 steps and writes their
  metrics, then the poller reads the workspace in its thread. Per tick we time the UI
  thread's work: the poll handler (table cells, summary, curves bookkeeping) and the paint
  that follows it (layout, the table's visible rows, the plotext chart). A frame = handler
  + paint; we print the median and the worst.

Headless (``run_test``): terminal output itself is not included, only the app's work.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tui"))
sys.path.insert(0, str(ROOT))

from fake_facade import FakeFacade  # noqa: E402 (after sys.path)
from textual.screen import Screen  # noqa: E402 (after sys.path)

from tuneplay_tui.app import TuneplayApp  # noqa: E402 (after sys.path)

SIZE = (120, 40)


class Probe:
    """Timings collected by the instrumented handler and paint."""

    def __init__(self) -> None:
        self.handler: list[float] = []
        self.paint: list[float] = []
        self.first_paint_at: float | None = None
        self.data_paint_at: float | None = None


PROBE = Probe()


def instrument() -> None:
    """Wrap the poll handler and the screen refresh (class level, before any app exists)."""
    handle = TuneplayApp.on_workspace_polled

    def timed_handler(self: Any, message: Any) -> None:
        t = time.perf_counter()
        handle(self, message)
        PROBE.handler.append(time.perf_counter() - t)

    paint = Screen._on_timer_update

    def timed_paint(self: Any) -> None:
        t = time.perf_counter()
        paint(self)
        now = time.perf_counter()
        PROBE.paint.append(now - t)
        if PROBE.first_paint_at is None:
            PROBE.first_paint_at = now
        if PROBE.data_paint_at is None and getattr(self.app, "state", None) is not None \
                and self.app.state.snapshot is not None:
            PROBE.data_paint_at = now

    TuneplayApp.on_workspace_polled = timed_handler  # type: ignore[method-assign]
    Screen._on_timer_update = timed_paint  # type: ignore[method-assign]


async def settle(pilot: Any) -> None:
    for _ in range(10):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if not any(w.is_running for w in pilot.app.workers):
            return


def import_time() -> float:
    code = "import time; t = time.perf_counter(); import tuneplay_tui.app; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    return float(out.stdout.strip())


async def first_paint(workspace: Path) -> tuple[float, float, float]:
    fake = FakeFacade(workspace / ".tuneplay")
    PROBE.first_paint_at = PROBE.data_paint_at = None
    t0 = time.perf_counter()
    app = TuneplayApp(fake, poll_interval=0, clock=lambda: fake.now)
    async with app.run_test(size=SIZE) as pilot:
        mounted = time.perf_counter() - t0
        await settle(pilot)
        await pilot.pause(0.05)
    first = (PROBE.first_paint_at or t0) - t0
    data = (PROBE.data_paint_at or t0) - t0
    return mounted, first, data


async def follow_study(workspace: Path, n_trials: int, ticks: int) -> dict[str, Any]:
    t = time.perf_counter()
    fake = FakeFacade.bench(workspace / ".tuneplay", n_trials=n_trials, start_step=2000)
    build = time.perf_counter() - t
    app = TuneplayApp(fake, poll_interval=0, clock=lambda: fake.now)
    frames, handlers, paints, round_trips = [], [], [], []
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        rows = app.screen.query_one("#trials").row_count
        for _ in range(ticks):
            fake.tick()
            PROBE.handler.clear()
            PROBE.paint.clear()
            t0 = time.perf_counter()
            app.poller.request()
            await settle(pilot)
            await pilot.pause()
            round_trips.append(time.perf_counter() - t0)
            h = sum(PROBE.handler)
            p = max(PROBE.paint, default=0.0)
            handlers.append(h)
            paints.append(p)
            frames.append(h + p)
        curve_points = sum(len(s[0]) for c in app.state.curves.values() for s in c.values())
    return {"build": build, "rows": rows, "frames": frames, "handlers": handlers,
            "paints": paints, "round_trips": round_trips, "curve_points": curve_points}


def ms(x: float) -> str:
    return f"{x * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--ticks", type=int, default=60)
    args = parser.parse_args()
    instrument()
    print(f"tuneplay TUI benchmark (headless, {SIZE[0]}x{SIZE[1]}, Python {sys.version.split()[0]})")
    print(f"  import tuneplay_tui.app         {ms(import_time())}")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(first_paint(Path(tmp)))  # warm caches (CSS parse, numpy, pandas)
        mounted, first, data = asyncio.run(first_paint(Path(tmp)))
        print(f"  app mounted, home composed     {ms(mounted)}")
        print(f"  first paint with the data      {ms(max(first, data))}")
        r = asyncio.run(follow_study(Path(tmp), args.trials, args.ticks))
    f = sorted(r["frames"])
    print(f"\nrunning screen following {args.trials} running trials "
          f"({r['rows']} rows, {args.ticks} ticks, 5 steps/trial/tick, "
          f"{r['curve_points']} curve points followed; fake built in {r['build']:.1f} s)")
    for name in ("handlers", "paints", "frames", "round_trips"):
        xs = sorted(r[name])
        print(f"  {name:<12} median {ms(statistics.median(xs))}   p90 "
              f"{ms(xs[int(0.9 * (len(xs) - 1))])}   worst {ms(xs[-1])}")
    print(f"\n  worst frame {ms(f[-1])} · median frame {ms(statistics.median(f))}")
    print("  (frame = UI-thread poll handling + the paint after it; round trip = tick -> "
          "poll in the worker thread -> handled -> painted, incl. the fake's own work)")


if __name__ == "__main__":
    main()
