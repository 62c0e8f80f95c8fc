"""Read a run store: ``cosanneal.runs.open(path)`` gives params, scalar series and events of a run.

The connection is read-only (SQLite ``mode=ro`` URI), so reading never blocks or modifies the run
that writes the database; in WAL mode a reader sees every flush committed before each query.

Example:
    >>> import tempfile
    >>> from cosanneal import runs
    >>> from cosanneal.runtime.runstore import RunStore
    >>> d = tempfile.mkdtemp()
    >>> with RunStore(d) as store:
    ...     store.log_scalars(0, {"lr": 0.1}, group=0)
    ...     store.log_scalars(1, {"lr": 0.05}, group=0)
    >>> with runs.open(d) as run:
    ...     steps, lrs = run.scalar("lr", group=0)
    >>> steps.tolist(), lrs.tolist()
    ([0, 1], [0.1, 0.05])
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from cosanneal.errors import CosannealError
from cosanneal.runtime.runstore import SCHEMA_VERSION, resolve_db

__all__ = ["MINIMISED", "Run", "RunStoreError", "lower_is_better", "open"]


#: Metric-name endings that mean "lower is better": a loss, a perplexity, an error rate.
MINIMISED = ("loss", "ppl", "perplexity", "err", "error", "nll", "mse", "mae", "rmse", "wer", "cer", "bpc")


def lower_is_better(metric: str) -> bool:
    """Whether ``metric`` is minimised, by its name (the default direction everywhere a metric ranks).

    Example:
        >>> lower_is_better("val_loss"), lower_is_better("val_ppl"), lower_is_better("val_acc")
        (True, True, False)
    """
    return metric.lower().endswith(MINIMISED)


class RunStoreError(CosannealError, ValueError):
    """A file where a run store should be is not one (not SQLite, no cosanneal schema, too new a schema)."""


class Run:
    """A read-only view of one run store (a run directory's ``run.db``).

    Every accessor queries the database again, so a :class:`Run` opened on a live run sees the rows
    flushed since the previous call.

    Args:
        path: The run directory or the ``run.db`` file.

    Raises:
        FileNotFoundError: No run store at ``path``.
        RunStoreError: The file is not a cosanneal run store (not an SQLite database, or one without the
            run store's tables), or was written by a newer cosanneal (schema version too high).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = resolve_db(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no run store at {path}: expected a run directory holding run.db")
        uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False)
        try:
            version = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise RunStoreError(_not_a_store(self.path, exc)) from None
        if version is None or version > SCHEMA_VERSION:
            self._conn.close()
            raise RunStoreError(
                f"run store {self.path} has schema version {version}; this cosanneal reads up to "
                f"{SCHEMA_VERSION}; upgrade cosanneal"
            )
        self.schema_version = int(version)

    # ---- params -----------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """Every logged param, key -> decoded JSON value (the last value logged for a key)."""
        rows = self._conn.execute("SELECT key, value FROM params ORDER BY key").fetchall()
        return {k: json.loads(v) for k, v in rows}

    # ---- scalars ----------------------------------------------------------------------------
    def scalar_names(self) -> list[str]:
        """Names of every scalar series, sorted."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT name FROM scalars ORDER BY name")]

    def groups(self, name: str) -> list[int]:
        """The param-group indices a series was logged with, sorted (``[]`` for an ungrouped series)."""
        rows = self._conn.execute(
            "SELECT DISTINCT grp FROM scalars WHERE name = ? AND grp IS NOT NULL ORDER BY grp", (name,)
        )
        return [int(r[0]) for r in rows]

    def scalar(
        self, name: str, group: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """One series as ``(steps, values)``, sorted by step, one value per step.

        When a step was logged more than once (a resumed run repeats the steps after its last
        checkpoint) the value written last wins. A NaN that was logged reads back as NaN.

        Args:
            name: The series name (see :meth:`scalar_names`).
            group: The param group for per-group series such as ``"lr"``; ``None`` for ungrouped ones.

        Raises:
            KeyError: No such series; the message lists what exists.
        """
        rows = self._conn.execute(
            "SELECT step, value FROM scalars WHERE name = ? AND grp IS ? ORDER BY step, rowid",
            (name, group),
        ).fetchall()
        if not rows:
            self._missing(name, group)
        steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        values = np.array([r[1] for r in rows], dtype=np.float64)  # NULL (stored NaN) -> nan
        last = np.ones(len(steps), dtype=bool)
        last[:-1] = steps[1:] != steps[:-1]
        return steps[last], values[last]

    def _missing(self, name: str, group: int | None) -> None:
        names = self.scalar_names()
        if name not in names:
            raise KeyError(f"no scalar {name!r} in {self.path}; logged: {', '.join(names) or 'none'}")
        groups = self.groups(name)
        if group is None:
            raise KeyError(f"scalar {name!r} is logged per param group; pass group= one of {groups}")
        raise KeyError(f"scalar {name!r} has no group {group!r}; groups: {groups or 'none (ungrouped)'}")

    # ---- events -----------------------------------------------------------------------------
    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Events in the order they were logged, as dicts ``{"step", "kind", "wall", **payload}``.

        Args:
            kind: Only events of this kind (e.g. ``"restart"``); ``None`` for all.
        """
        if kind is None:
            cur = self._conn.execute("SELECT step, kind, wall, payload FROM events ORDER BY rowid")
        else:
            cur = self._conn.execute(
                "SELECT step, kind, wall, payload FROM events WHERE kind = ? ORDER BY rowid", (kind,)
            )
        out = []
        for step, k, wall, payload in cur:
            event: dict[str, Any] = json.loads(payload)
            event.update(step=int(step), kind=k, wall=float(wall))
            out.append(event)
        return out

    # ---- summary ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts and spans: first/last step, scalar rows, events, series, sessions, wall-time span.

        ``wall_seconds`` is last row minus first row wall time (``None`` for an empty run);
        ``sessions`` counts the processes that appended to the run (more than 1 after a resume).
        """
        q = self._conn.execute
        first, last, n_scalars, w0, w1 = q(
            "SELECT MIN(step), MAX(step), COUNT(*), MIN(wall), MAX(wall) FROM scalars"
        ).fetchone()
        e_first, e_last, n_events, ew0, ew1 = q(
            "SELECT MIN(step), MAX(step), COUNT(*), MIN(wall), MAX(wall) FROM events"
        ).fetchone()
        steps = [s for s in (first, last, e_first, e_last) if s is not None]
        walls = [w for w in (w0, w1, ew0, ew1) if w is not None]
        kinds = dict(q("SELECT kind, COUNT(*) FROM events GROUP BY kind ORDER BY kind").fetchall())
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "first_step": min(steps) if steps else None,
            "last_step": max(steps) if steps else None,
            "scalar_rows": int(n_scalars),
            "event_count": int(n_events),
            "events_by_kind": kinds,
            "series": self.scalar_names(),
            "sessions": int(q("SELECT COUNT(*) FROM sessions").fetchone()[0]),
            "wall_start": min(walls) if walls else None,
            "wall_end": max(walls) if walls else None,
            "wall_seconds": (max(walls) - min(walls)) if walls else None,
        }

    # ---- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the read-only connection."""
        self._conn.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def _not_a_store(path: Path, exc: sqlite3.DatabaseError) -> str:
    """One line saying why the SQLite file ``path`` cannot be read as a run store."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "no such table" in detail:
        return (
            f"{path} is not a cosanneal run store (no schema_version table): an SQLite database, but {detail}"
        )
    if isinstance(exc, sqlite3.OperationalError):  # locked, unreadable...: a store that cannot be read now
        return f"{path}: cannot read the run store: {detail}"
    return f"{path} is not a cosanneal run store (not an SQLite database): {detail}"


def open(path: str | os.PathLike[str]) -> Run:  # the documented name: cosanneal.runs.open
    """Open a run store read-only; ``path`` is a run directory or its ``run.db``.

    Example:
        >>> import tempfile
        >>> from cosanneal.runtime.runstore import RunStore
        >>> d = tempfile.mkdtemp()
        >>> with RunStore(d) as s:
        ...     s.log_params({"seed": 3})
        >>> open(d).params
        {'seed': 3}
    """
    return Run(Path(path))
