"""Fixtures of the sweep tests: a real PostgreSQL server, started once per session (per xdist worker)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # pg_server.py, as tests/conftest.py does for tests/

from pg_server import PgServer, find_initdb, running_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: many real processes; deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server on a Unix socket in a temporary directory (Debian's ``postgresql`` package).

    Skipped only when no ``initdb`` is installed (``apt-get install postgresql``; ``.ci/run`` does it);
    any other failure to start it fails the tests that use it.
    """
    initdb = find_initdb()
    if initdb is None:
        pytest.skip("no PostgreSQL initdb (/usr/lib/postgresql/*/bin/initdb); apt-get install postgresql")
    with running_server(initdb) as server:
        yield server
