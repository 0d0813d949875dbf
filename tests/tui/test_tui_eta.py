"""The study ETA: measured step rates of the remaining work over the slots, one estimate for
the header, the running screen and ``tuneplay status``, never shorter than a trial's own."""

from __future__ import annotations

import re

from tui_helpers import poll, screen_text, settle

from engine.status import estimate_eta, step_rate
from engine.store.base import Trial, TrialState

NOW = 1_000_000.0
S = TrialState


def trial(tid: int, state: TrialState, steps: int, *, started: float | None = None,
          heartbeat: float | None = None, wall: float = 0.0, max_steps: int = 300) -> Trial:
    return Trial(tid, 1, tid, {}, 0, state, 1, tid, "search", max_steps, 0.0,
                 started_at=started, heartbeat_at=heartbeat, steps_done=steps, wall_time=wall)


def test_eta_places_queued_work_on_the_slot_that_frees_first() -> None:
    trials = [
        trial(1, S.RUNNING, 200, started=NOW - 210, heartbeat=NOW - 10),  # 1 step/s, 100 left
        trial(2, S.RUNNING, 100, started=NOW - 50, heartbeat=NOW),  # 2 steps/s, 200 left
        trial(3, S.COMPLETED, 300, wall=150.0),  # 2 steps/s
        trial(4, S.QUEUED, 0),  # 300 steps at the median rate (2/s): 150 s
        trial(5, S.PAUSED, 10),  # waits for a person: not counted
    ]
    # slot 1 frees at 100 - 10 = 90 s, slot 2 at 100 s; the queued trial takes slot 1
    assert estimate_eta(trials, now=NOW, slots=2) == 90 + 150
    assert estimate_eta(trials, now=NOW, slots=3) == 150  # a free slot takes it at once
    assert estimate_eta(trials, now=NOW) == 240  # slots default to the trials running


def test_a_resumed_trial_counts_every_attempt_and_nothing_measured_says_none() -> None:
    resumed = trial(1, S.RUNNING, 250, started=NOW - 50, heartbeat=NOW, wall=100.0)
    assert step_rate(resumed) == 250 / 150
    assert estimate_eta([trial(1, S.QUEUED, 0), trial(2, S.RUNNING, 0, started=NOW,
                                                        heartbeat=NOW)], now=NOW) is None
    assert estimate_eta([trial(1, S.COMPLETED, 300, wall=10.0)], now=NOW) is None  # all done


async def test_the_header_eta_follows_the_fake_clock_and_bounds_every_trial(fake,
                                                                            app_factory) -> None:
    app = app_factory(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        first = eta_seconds(app)
        assert 'study "wd-longer" (running 9/24 · ETA 14m)' in screen_text(app)
        fake.tick(6)  # one minute later by the fake's clock, every running trial a bit further
        await poll(pilot)
        later = eta_seconds(app)
        assert later < first
        text = screen_text(app)
        shown = re.search(r"· ETA (\S+)\)", text.splitlines()[0]).group(1)
        assert f"· ETA {shown}" in text.splitlines()[2]  # the running summary says the same
        assert row_etas(app) and all(e <= later for e in row_etas(app))
        assert later == estimate_eta(app.state.study_trials(), now=fake.now, slots=4)


def eta_seconds(app) -> float:
    return app.state.study_eta(app.clock())


def row_etas(app) -> list[float]:
    from tuneplay_tui.widgets.trial_table import trial_eta

    return [e for t in app.state.study_trials() if (e := trial_eta(t, app.clock())) is not None]
