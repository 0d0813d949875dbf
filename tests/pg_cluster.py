"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary folder, listening
only on 127.0.0.1 at a free port, gone when stopped.

Run as root, the server runs as the unprivileged ``postgres`` OS user (PostgreSQL refuses to
run as root). The cluster's default collation is ICU ``en-US`` where the server supports it,
so a query that forgets ``COLLATE "C"`` sorts names differently from SQLite and is caught.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

BINDIR_ENV = "TUNEPLAY_PG_BINDIR"
_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockets}'
max_connections = 200
fsync = off
full_page_writes = off
shared_buffers = 64MB
log_min_messages = warning
"""


class PgUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or they cannot be run)."""


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``$TUNEPLAY_PG_BINDIR`` when set (and only it), else the newest Debian
    ``/usr/lib/postgresql/N/bin``, else ``initdb`` on the PATH.
    """
    if os.environ.get(BINDIR_ENV):
        candidates = [os.environ[BINDIR_ENV]]
    else:
        found = shutil.which("initdb")
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                            key=lambda p: int(Path(p).parent.name), reverse=True)
        candidates.append(str(Path(found).parent) if found else "")
    for folder in filter(None, candidates):
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise PgUnavailable(
        "PostgreSQL server binaries not found (initdb, pg_ctl, postgres): install the Debian "
        f"package `postgresql`, or set {BINDIR_ENV} to their folder"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One throwaway cluster: ``start()``, ``restart()``, ``stop()``, databases by name.

    Args:
        bindir: the server binaries (default: :func:`find_bindir`).
    """

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="tuneplay-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root, but there is no `postgres` OS user") from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        os.chmod(self.root, 0o700)

    def url(self, dbname: str = "postgres") -> str:
        """A URL for ``dbname`` on this cluster (trust auth: no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it accepts."""
        if not self.data.exists():
            self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                     "--no-sync", "-E", "UTF8", "--locale=C.UTF-8", *self._icu())
        for attempt in range(5):  # another process may take the free port before the server does
            self.port = self.port if self.port and attempt == 0 else free_port()
            self._write_conf()
            try:
                self._pg("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
                         "-l", str(self.log))
                return
            except PgUnavailable:
                if "could not bind" not in self._log_tail():
                    raise
        raise PgUnavailable(f"no free port for PostgreSQL; server log:\n{self._log_tail()}")

    def running(self) -> bool:
        """Whether the server's process is alive (its pid file names a live process)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def stop(self) -> None:
        """Stop the server (fast: open sessions are ended); the data stays until ``cleanup``."""
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data))

    def restart(self) -> None:
        """Stop and start the server on the same port: every open session is cut."""
        self._pg("pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", str(self.data),
                 "-l", str(self.log))

    def cleanup(self) -> None:
        """Stop the server and delete the cluster."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh random name by default); return its name."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._sql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still connected to it."""
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ----------------------------------------------------------------- internals

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def _icu(self) -> list[str]:
        """ICU en-US as the default collation, when this server was built with ICU."""
        help_text = subprocess.run(
            [str(self.bindir / "initdb"), "--help"], capture_output=True, text=True, check=False
        ).stdout
        return ["--locale-provider=icu", "--icu-locale=en-US"] if "icu-locale" in help_text else []

    def _write_conf(self) -> None:
        conf = self.data / "postgresql.auto.conf"  # read after postgresql.conf: wins
        conf.write_text(_CONF.format(port=self.port, sockets=self.root))
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(conf, owner.pw_uid, owner.pw_gid)

    def _pg(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=180, check=False,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise PgUnavailable(
                f"{tool} {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}\n"
                f"{proc.stderr}\nserver log:\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"
