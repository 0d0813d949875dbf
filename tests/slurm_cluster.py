"""A throwaway single-node Slurm on this machine, for tests: munged, slurmctld and slurmd in
the foreground as child processes, everything (key, sockets, state, logs) in one temp folder.

No systemd and no cgroups: processes are tracked by walking /proc (proctrack/linuxproc),
tasks are not bound (task/none), nothing is accounted. Needs root (slurmd starts each job as
its submitter) and Debian's ``slurm-wlm`` and ``munge``. Clients find the cluster through
``SLURM_CONF`` (``cluster.env``, or os.environ while the ``slurm_cluster`` fixture runs).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scancel")
INSTALL_HINT = "apt-get install -y slurm-wlm munge"
ALLOW_SKIP_ENV = "TUNEPLAY_ALLOW_SKIP_SLURM"
START_TIMEOUT_SECONDS = 30.0


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the test cluster (missing programs, not root)."""


def program(name: str) -> str | None:
    """Where a Slurm or munge program is (daemons live in /usr/sbin, often off a user's PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def missing_programs() -> list[str]:
    """Slurm and munge programs this machine lacks."""
    return [name for name in (*DAEMONS, *CLIENTS) if program(name) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SlurmCluster:
    """One node (this host, all its CPUs) in one partition, ``debug``.

    ``start()`` returns once ``sinfo`` shows the node idle; ``stop()`` cancels what still
    runs, ends the daemons and removes the folder. Also a context manager.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tuneplay-slurm-"))
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> Self:
        try:
            self._check_machine()
            self._start_munged()
            self._write_conf()
            self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
            self._wait(self._node_idle, "the node to come up idle")
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _check_machine() -> None:
        missing = missing_programs()
        if missing:
            raise SlurmUnavailable(
                f"Slurm test cluster: {', '.join(missing)} not found ({INSTALL_HINT})"
            )
        if os.geteuid() != 0:
            raise SlurmUnavailable(
                "Slurm test cluster: needs root (slurmd starts each job as its submitter)"
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start_munged(self) -> None:
        # munged wants every folder above its socket searchable by all, and a key only its
        # user can read; as root it runs without --force.
        self.root.chmod(0o711)
        folder = self.munge_socket.parent
        folder.mkdir(mode=0o755)
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn("munged", [
            "munged", "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--log-file={folder / 'munged.log'}", f"--pid-file={folder / 'munged.pid'}",
            f"--seed-file={folder / 'munged.seed'}",
        ])
        self._wait(self.munge_socket.exists, "munged's socket")

    def _write_conf(self) -> None:
        for name in ("state", "spool", "log"):
            (self.root / name).mkdir()
        self.conf.write_text(self.conf_text())

    def conf_text(self) -> str:
        """slurm.conf: this host as controller and only node, on free ports, no accounting."""
        r = self.root
        return "\n".join([
            "ClusterName=tuneplaytest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "ReturnToService=2",
            "MailProg=/bin/true",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=2",  # finished jobs leave squeue after 2 s, not 300
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=512",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = (self.root / f"{name}.out").open("wb")
        self.procs[name] = subprocess.Popen(
            [program(argv[0]) or argv[0], *argv[1:]],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        out.close()

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise SlurmUnavailable(f"Slurm test cluster: {dead[0]} exited\n{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise SlurmUnavailable(f"Slurm test cluster: timed out waiting for {what}\n{self.logs()}")

    def run(self, *argv: str) -> str:
        """A Slurm client command against this cluster; its stdout."""
        proc = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=30, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def _node_idle(self) -> bool:
        try:
            return self.run("sinfo", "--noheader", "--Node", "--format=%t").strip() == "idle"
        except (RuntimeError, subprocess.TimeoutExpired):
            return False  # slurmctld not listening yet

    def job_ids(self) -> list[str]:
        """Jobs (array tasks apart) still in the queue."""
        return self.run("squeue", "--noheader", "--array", "--format=%i").split()

    def wait_until_empty(self, timeout: float) -> None:
        """Wait until nothing is queued or running (the allocations are given back)."""
        deadline = time.monotonic() + timeout
        while self.job_ids():
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still queued after {timeout} s:\n{self.run('squeue')}")
            time.sleep(0.5)

    def logs(self, lines: int = 15) -> str:
        """The last lines of each daemon's output, for error messages."""
        parts = []
        for path in sorted(self.root.glob("*.out")) + sorted((self.root / "log").glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, end the daemons (slurmd, slurmctld, munged) and remove the folder."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                if self.job_ids():
                    self.run("scancel", "--full", *self.job_ids())
                    self.wait_until_empty(15)
            except (RuntimeError, AssertionError, subprocess.TimeoutExpired):
                pass  # the daemons go anyway; a job step left behind dies with its session
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running test cluster, with SLURM_CONF set in os.environ for the session.

    Fails when Slurm or munge is missing, unless TUNEPLAY_ALLOW_SKIP_SLURM=1 (then skips).
    """
    cluster = SlurmCluster()
    problem = None
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        problem = str(exc)  # reported outside the handler, without a chained traceback
    if problem and os.environ.get(ALLOW_SKIP_ENV) == "1":
        pytest.skip(problem.splitlines()[0])
    if problem:
        hint = f"(set {ALLOW_SKIP_ENV}=1 to skip Slurm tests instead)"
        pytest.fail(f"{problem}\n{hint}", pytrace=False)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()
