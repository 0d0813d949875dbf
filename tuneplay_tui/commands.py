"""The command palette (ctrl+p): every stage, every screen's actions, every study.

Actions are read from each screen's ``BINDINGS``, so a key added to a screen shows up here
(and in its help) without a second list to keep in sync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tuneplay_tui.state import STAGE_TITLES, is_baseline_run

if TYPE_CHECKING:
    from tuneplay_tui.app import TuneplayApp

Command = tuple[str, str, Callable[[], Any]]


class TuneplayCommands(Provider):
    """Stages, screen actions (switching to the screen first), studies, help and quit."""

    @property
    def tuneplay(self) -> TuneplayApp:
        return self.app  # type: ignore[return-value]

    def commands(self) -> Iterator[Command]:
        app = self.tuneplay
        for stage, title in STAGE_TITLES.items():
            yield f"Go to {title}", f"the {title.lower()} screen", partial(app.action_stage, stage)
        for stage, screen_cls in app.MODES.items():
            title = STAGE_TITLES.get(stage, stage)
            for binding in getattr(screen_cls, "BINDINGS", []):
                desc = getattr(binding, "description", "")
                if desc:
                    help_text = getattr(binding, "tooltip", "") or f"key {binding.key}"
                    yield (f"{title}: {desc}", help_text,
                           partial(app.run_stage_action, stage, binding.action))
        snap = app.state.snapshot
        for exp in snap.experiments if snap else ():
            yield (f"Follow experiment {exp.experiment.name}", exp.experiment.workload,
                   partial(app.follow_experiment, exp.experiment.id))
            for s in exp.studies:
                if not is_baseline_run(s.study):
                    yield (f"Follow study {s.study.name}", f"experiment {exp.experiment.name}",
                           partial(app.follow_study, s.study.id))
        yield "Help for this screen", "the playbook idea behind it, and its keys", app.action_help
        yield "Quit tuneplay", "the engine and its trials keep running", app.action_quit_app

    async def discover(self) -> Hits:
        for title, help_text, callback in self.commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self.commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
