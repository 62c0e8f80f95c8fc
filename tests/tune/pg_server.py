"""A real PostgreSQL server for the tests: Debian's binaries, ``initdb`` into a temporary directory.

The server listens only on a Unix socket in its own temporary directory (``listen_addresses = ''``),
with ``trust`` authentication for the local socket, and is stopped (fast shutdown) and removed at the
end. ``initdb`` and ``postgres`` refuse to run as root: under root they run as the ``postgres`` system
user (Debian's package creates it) and the temporary directory is handed to it; the tests connect as
the superuser role ``initdb`` created (the name of the user that ran it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["PgServer", "find_initdb", "running_server"]


def _version(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/bin/", path)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def find_initdb() -> Path | None:
    """The ``initdb`` of the highest PostgreSQL version installed (Debian's layout first), or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1])
    for candidate in ("/usr/local/bin/initdb", shutil.which("initdb")):
        if candidate and os.path.exists(candidate):
            return Path(os.path.realpath(candidate))
    return None


@dataclasses.dataclass(frozen=True)
class PgServer:
    """A running server: its socket directory, the role to connect as, and its postmaster."""

    socket_dir: Path
    user: str
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for psycopg 3 over the Unix socket."""
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        """Create a database (a fresh one per test keeps studies apart) and return its URL."""
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres() -> dict[str, Any]:
    """``subprocess`` arguments that run a child as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "initdb refuses to run as root and there is no 'postgres' system user to run it as; "
            "install Debian's postgresql package (it creates the user) or run the tests as another user"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_server(initdb: Path, *, timeout: float = 60.0) -> Iterator[PgServer]:
    """Start a throwaway server from ``initdb``'s directory of binaries; stop and delete it afterwards.

    Raises:
        RuntimeError: ``initdb`` failed or the server did not come up (the message holds its log).
    """
    bindir = initdb.parent
    root = Path(tempfile.mkdtemp(prefix="cosanneal-pg-"))  # short: a socket path has ~100 bytes at most
    process: subprocess.Popen[bytes] | None = None
    try:
        data, sockets, log = root / "data", root / "sock", root / "server.log"
        sockets.mkdir()
        log.touch()
        child = _as_postgres()
        if child:
            for path in (root, sockets, log):
                os.chown(path, child["user"], child["group"])
            user = "postgres"
        else:
            user = pwd.getpwuid(os.geteuid()).pw_name
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if child:
            env["HOME"] = str(root)  # not root's home, which the postgres user cannot read
        made = subprocess.run(
            [str(initdb), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync",
             "--no-instructions"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False, **child,
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(
                f"{initdb} exited with {made.returncode}: {made.stderr.decode(errors='replace')}"
            )
        settings = {
            "listen_addresses": "",  # no TCP at all: the Unix socket only
            "unix_socket_directories": str(sockets),
            "max_connections": "200",
            "fsync": "off",  # a test server: durability across power loss is not what is tested
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data),
                 *(a for k, v in settings.items() for a in ("-c", f"{k}={v}"))],
                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, **child,
            )  # fmt: skip
        server = PgServer(sockets, user, process)
        _wait_ready(server, timeout, log)
        yield server
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, stop
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: PgServer, timeout: float, log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}: {log.read_text()[-2000:]}")
        try:
            with psycopg.connect(
                host=str(server.socket_dir), user=server.user, dbname="postgres", connect_timeout=2
            ):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not accept connections in {timeout:g} s ({exc}): {log.read_text()[-2000:]}"
                ) from exc
            time.sleep(0.1)
