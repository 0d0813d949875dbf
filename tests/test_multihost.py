"""Engines on many hosts serving one PostgreSQL store, with real processes and a real server.

Two engines started with different ``--host`` names on this machine behave as two machines:
each plans its own slots, claims under leases, and resumes what another host left. The faults
are the ones that break shared-storage tuners: a worker frozen past its lease (SIGSTOP) whose
late writes must not land, a host killed outright (SIGKILL), the database restarted mid-study.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from engine.store.base import TrialState

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]

# A slow trial that checkpoints, resumes, and says which attempt wrote each step (``tag``) and
# where each attempt started (``starts.log`` in the shared folder).
SLOW = '''
import os, time, torch

def train(hp, ctx):
    model = torch.nn.Linear(1, 1)
    start = ctx.restore(model=model)
    with open(os.path.join(os.environ["TUNEPLAY_TEST_SHARED"], "starts.log"), "a") as fh:
        fh.write(f"{ctx.trial_id} {ctx.attempt} {start} {os.environ.get('TUNEPLAY_ENGINE_HOST')}\\n")
    for step in range(start, ctx.max_train_steps):
        time.sleep(hp["sleep"])
        ctx.report(step, val_loss=1.0 / (step + 1), tag=float(ctx.attempt))
        ctx.checkpoint(step, model=model)
        if ctx.should_stop():
            return
'''

SLOW_STUDY = """\
[study]
name = "{name}"
workload = "slow:train"
max_train_steps = {steps}
eval_every = 1
budget = {budget}
metric = "val_loss"
fuse = "off"
[fixed]
sleep = {sleep}
[nuisance]
lr = {{ low = 0.01, high = 0.1, scale = "log" }}
"""

DIGITS = """\
[study]
name = "{name}"
workload = "builtin:digits-mlp"
max_train_steps = 60
eval_every = 20
budget = 6
fuse = "off"
seed = 0
[fixed]
optimizer = "adam"
[nuisance]
learning_rate = {{ low = 1e-3, high = 3e-2, scale = "log" }}
"""


class Cluster:
    """One project folder, one PostgreSQL store, a shared folder, engines by host name."""

    def __init__(self, path: Path, url: str) -> None:
        self.path, self.url = path, url
        self.shared = path / "shared"
        self.shared.mkdir()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "TUNEPLAY_STORE": url,
                    "TUNEPLAY_CHECKPOINTS": str(self.shared), "TUNEPLAY_TEST_SHARED": str(self.shared),
                    "TUNEPLAY_CHECKPOINT_INTERVAL": "0.3"}
        self.env.pop("TUNEPLAY_WORKSPACE", None)
        self.hosts: list[str] = []

    def tuneplay(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "tuneplay_tui.launcher", *args], cwd=self.path,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"tuneplay {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, host: str, lease: float = 3.0, slots: int = 1) -> int:
        self.tuneplay("engine", "start", "--host", host, "--lease", str(lease), "--cpu-slots", str(slots))
        self.hosts.append(host)
        return self.engine_pid(host)

    def engine_pid(self, host: str) -> int:
        record = json.loads((self.shared / "hosts" / host / "engine.pid").read_text())
        return int(record["pid"])

    def store(self) -> Any:
        from engine.store.postgres import PostgresStorage

        return PostgresStorage(self.url)

    def stop_all(self) -> None:
        for host in self.hosts:
            self.tuneplay("engine", "stop", "--host", host, check=False, timeout=120)


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, pg_url)
    c.tuneplay("db", "init")
    yield c
    c.stop_all()


def _wait(what: str, ok: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = ok()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _starts(c: Cluster) -> list[tuple[int, int, int, str]]:
    path = c.shared / "starts.log"
    if not path.exists():
        return []
    return [(int(a), int(b), int(s), h) for a, b, s, h in (ln.split() for ln in path.read_text().splitlines())]


def _checkpointed_on(store: Any, host: str, min_step: int = 5) -> Any:
    """A trial RUNNING on ``host`` that has a recorded latest checkpoint past ``min_step``."""
    for t in store.list_trials(states=[TrialState.RUNNING]):
        if t.host == host:
            latest = [c for c in store.get_checkpoints(t.id) if c.kind == "latest"]
            if latest and latest[0].step >= min_step:
                return t
    return None


def test_two_hosts_share_a_study_and_match_sqlite(cluster: Cluster, tmp_path: Path) -> None:
    # the same study on the embedded SQLite workspace, one engine
    local = tmp_path / "local"
    local.mkdir()
    (local / "s.toml").write_text(DIGITS.format(name="twohost"))
    env = {k: v for k, v in cluster.env.items() if k not in ("TUNEPLAY_STORE", "TUNEPLAY_CHECKPOINTS")}
    env["TUNEPLAY_WORKSPACE"] = str(local / ".tuneplay")
    subprocess.run([sys.executable, "-m", "tuneplay_tui.launcher", "run", "s.toml", "--wait", "--cpu-slots", "1"],
                   cwd=local, env=env, check=True, capture_output=True, timeout=600)
    sqlite = pd.read_csv(io.StringIO(subprocess.run(
        [sys.executable, "-m", "tuneplay_tui.launcher", "export", "twohost"], cwd=local, env=env,
        check=True, capture_output=True, text=True).stdout))
    subprocess.run([sys.executable, "-m", "tuneplay_tui.launcher", "engine", "stop"], cwd=local, env=env,
                   capture_output=True, timeout=120)

    cluster.start("a", lease=10)
    cluster.start("b", lease=10)
    status = cluster.tuneplay("status").stdout
    assert "engine: 2 hosts · 2 slots" in status
    (cluster.path / "s.toml").write_text(DIGITS.format(name="twohost"))
    run = cluster.tuneplay("run", "s.toml", "--wait", timeout=600)
    assert "engine: 2 hosts · 2 slots" in run.stdout
    assert "study 'twohost' finished: 6 of 6 trials completed" in run.stdout
    shared = pd.read_csv(io.StringIO(cluster.tuneplay("export", "twohost").stdout))
    assert set(shared["host"]) == {"a", "b"}  # both hosts trained
    assert (shared["state"] == "COMPLETED").all() and (shared["attempt"] == 1).all()
    key = ["number", "seed", "learning_rate"]
    a, b = sqlite.sort_values(key).reset_index(), shared.sort_values(key).reset_index()
    pd.testing.assert_frame_equal(a[key], b[key])
    assert list(a["best_step"]) == list(b["best_step"])
    assert a["best_value"].to_numpy() == pytest.approx(b["best_value"].to_numpy(), abs=1e-9)
    curves = pd.read_csv(io.StringIO(cluster.tuneplay("export", "twohost", "--curves").stdout))
    assert not curves.duplicated(["trial_id", "step", "metric"]).any()
    # the analysis commands work on the shared store as on a workspace
    report = json.loads(cluster.tuneplay("report", "twohost", "--format", "json").stdout)
    assert report["next_round"] and "twohost" in json.dumps(report)
    assert "twohost" in cluster.tuneplay("status").stdout


def test_a_frozen_host_loses_its_trial_and_its_late_writes_are_refused(cluster: Cluster) -> None:
    (cluster.path / "slow.py").write_text(SLOW)
    (cluster.path / "s.toml").write_text(SLOW_STUDY.format(name="frozen", steps=60, budget=1, sleep=0.1))
    a = cluster.start("a", lease=5)
    cluster.tuneplay("run", "s.toml")
    store = cluster.store()
    trial = _wait("a checkpointed trial on host a", lambda: _checkpointed_on(store, "a"))
    os.killpg(a, signal.SIGSTOP)  # the engine and its workers: a host cut off mid-trial
    try:
        cluster.start("b", lease=5)
        done = _wait("host b to finish the trial", lambda: (
            t := store.get_trial(trial.id)).state.is_finished() and t, timeout=180)
    finally:
        os.killpg(a, signal.SIGCONT)
    time.sleep(4)  # host a's worker wakes, trains on a moment, tries to write and to finish
    done = store.get_trial(trial.id)
    assert (done.state, done.host, done.attempt) == (TrialState.COMPLETED, "b", 2)
    starts = {(tid, attempt): (start, host) for tid, attempt, start, host in _starts(cluster)}
    assert starts[(trial.id, 1)] == (0, "a")
    resumed_at, host = starts[(trial.id, 2)]
    assert host == "b" and resumed_at > 5  # from a's checkpoint, not from step 0
    rows = store.read_metrics([trial.id], names=["tag"])
    assert [r.step for r in rows] == list(range(60))  # one row per step
    assert all(r.value == 2.0 for r in rows if r.step >= resumed_at)  # nothing of a's landed late
    latest = [c for c in store.get_checkpoints(trial.id) if c.kind == "latest"]
    assert all("/a2/" in c.path for c in latest)
    log = "".join(p.read_text() for p in (cluster.shared / "hosts" / "a" / "logs").glob("worker-*.log"))
    assert log.count(f"lease lost for trials [{trial.id}]") == 1


def test_a_killed_host_s_trials_resume_elsewhere_from_their_checkpoints(cluster: Cluster) -> None:
    (cluster.path / "slow.py").write_text(SLOW)
    (cluster.path / "s.toml").write_text(SLOW_STUDY.format(name="killed", steps=50, budget=2, sleep=0.08))
    a = cluster.start("a", lease=5, slots=2)
    cluster.tuneplay("run", "s.toml")
    store = cluster.store()
    _wait("both trials checkpointed on a", lambda: len(
        [t for t in store.list_trials(states=[TrialState.RUNNING])
         if any(c.kind == "latest" and c.step >= 5 for c in store.get_checkpoints(t.id))]) == 2)
    os.killpg(a, signal.SIGKILL)
    cluster.hosts.remove("a")
    cluster.start("b", lease=5, slots=2)
    _wait("all trials done", lambda: all(t.state.is_finished() for t in store.list_trials()), timeout=180)
    trials = store.list_trials()
    assert [(t.state, t.host, t.attempt) for t in trials] == [(TrialState.COMPLETED, "b", 2)] * 2
    for tid, attempt, start, host in _starts(cluster):
        if attempt == 2:
            assert host == "b" and start > 5, (tid, start)
    for t in trials:
        assert [r.step for r in store.read_metrics([t.id], names=["val_loss"])] == list(range(50))


def test_a_postgres_restart_mid_study_loses_nothing(cluster: Cluster, pg_server: Any) -> None:
    (cluster.path / "slow.py").write_text(SLOW)
    (cluster.path / "s.toml").write_text(SLOW_STUDY.format(name="restart", steps=40, budget=4, sleep=0.05))
    cluster.start("a", lease=20)
    cluster.start("b", lease=20)
    cluster.tuneplay("run", "s.toml")
    store = cluster.store()
    _wait("training under way", lambda: _checkpointed_on(store, "a", 3) or _checkpointed_on(store, "b", 3))
    pg_server.restart()
    _wait("all trials done", lambda: all(t.state.is_finished() for t in store.list_trials()), timeout=240)
    trials = store.list_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETED] * 4
    for t in trials:
        assert [r.step for r in store.read_metrics([t.id], names=["val_loss"])] == list(range(40))
    assert "2 hosts" in cluster.tuneplay("status").stdout  # both engines lived through it


BAYES = """\
[study]
name = "bo"
workload = "builtin:digits-mlp"
max_train_steps = 20
eval_every = 10
budget = 12
seed = 4
search = "bayesian"
fuse = "off"
[nuisance]
learning_rate = { low = 1e-4, high = 1e-1, scale = "log" }
weight_decay  = { low = 1e-6, high = 1e-2, scale = "log" }
"""


def test_only_the_coordinator_creates_trials_and_another_host_takes_over(cluster: Cluster) -> None:
    cluster.start("a", lease=10, slots=2)
    cluster.start("b", lease=10, slots=2)
    (cluster.path / "s.toml").write_text(BAYES)
    store = cluster.store()
    hosts = _wait("both hosts' records", lambda: len(
        [h for h in store.list_meta("engine.host.").values() if json.loads(h)["slots"]]) == 2 and [
        json.loads(h) for h in store.list_meta("engine.host.").values()])
    assert sorted(h["coordinator"] for h in hosts) == [False, True]  # exactly one coordinates
    coordinator = next(k.rsplit(".", 1)[1] for k, v in store.list_meta("engine.host.").items()
                       if json.loads(v)["coordinator"])
    run = cluster.tuneplay("run", "s.toml", "--wait", timeout=600)
    assert "study 'bo' finished: 12 of 12 trials completed" in run.stdout
    trials = store.list_trials()
    assert len(trials) == 12 and len({t.point_index for t in trials}) == 12  # none created twice
    # the coordinator leaves: the other host takes the lock within a few seconds
    cluster.tuneplay("engine", "stop", "--host", coordinator)
    cluster.hosts.remove(coordinator)
    _wait("a new coordinator", lambda: any(json.loads(v)["coordinator"]
                                           for v in store.list_meta("engine.host.").values()), timeout=30)
    assert list(store.list_meta("engine.host.")) == [f"engine.host.{({'a', 'b'} - {coordinator}).pop()}"]


def test_a_host_with_another_folder_at_the_shared_path_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start("a", lease=10)
    elsewhere = tmp_path / "not-shared"
    elsewhere.mkdir()
    proc = cluster.tuneplay("--checkpoints", str(elsewhere), "engine", "start", "--host", "b", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "not the folder the other hosts of this store use" in proc.stderr
    assert not (elsewhere / "hosts" / "b" / "engine.pid").exists()


def test_the_app_facade_shows_every_host_and_its_slots(cluster: Cluster) -> None:
    from engine.facade_local import LocalFacade

    cluster.start("a", lease=10, slots=2)
    cluster.start("b", lease=10, slots=1)
    facade = LocalFacade(cluster.shared, cluster.url)
    snap = _wait("both hosts", lambda: (s := facade.snapshot()).hosts == ("a", "b") and s)
    assert snap.engine_running and sorted(snap.slots) == ["a/cpu.0", "a/cpu.1", "b/cpu.0"]
    assert "postgresql://" in snap.workspace and "@" in snap.workspace
    facade.start_engine()  # what the app does on opening: hosts serve, so none starts here
    time.sleep(2)
    assert facade.snapshot().hosts == ("a", "b")
