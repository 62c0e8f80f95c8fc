"""The run store: a run's params, per-step scalars and events in one SQLite file (``run_dir/run.db``).

The training thread only appends rows to in-memory queues (a few hundred nanoseconds a row, no I/O,
no host-device synchronisation: values may be torch tensors, CUDA ones included, and are converted
with ``.item()`` later). A background thread writes the queued rows every ``flush_rows`` rows or
``flush_seconds`` seconds, one transaction per flush, then hands the same converted batch to the
attached sinks (TensorBoard, ...). The database is in WAL mode, so readers in other processes
(:func:`cosanneal.runs.open`) read while the run writes, and a ``kill -9`` loses at most the rows
queued since the last flush; committed rows are never lost or corrupted.

Schema (version :data:`SCHEMA_VERSION`)::

    schema_version(version INTEGER, created REAL)
    sessions(id INTEGER PRIMARY KEY, pid INTEGER, host TEXT, started REAL, ended REAL)
    params(key TEXT PRIMARY KEY, value TEXT /* JSON */, wall REAL)
    scalars(step INTEGER, name TEXT, grp INTEGER /* NULL: no group */, value REAL /* NULL: NaN */,
            wall REAL, session INTEGER)
    events(step INTEGER, kind TEXT, payload TEXT /* JSON object */, wall REAL, session INTEGER)

Rows are appended, never updated. A resumed run first calls :meth:`RunStore.discard_after` with the
checkpoint it resumes from, which deletes the rows it will record again, so every step has one row;
readers still take the one written last (the larger ``rowid``) should a step appear twice.

Durability: :meth:`RunStore.flush` with ``durable=True`` also fsyncs the database files, so what it
committed survives a power cut too; the trainer does that before every checkpoint's commit marker,
so the store always holds every row up to the checkpoint a run resumes from.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import getpass
import importlib.metadata
import itertools
import json
import math
import os
import platform
import socket
import sqlite3
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol, runtime_checkable

#: Version of the table layout written by this module; readers refuse newer files.
SCHEMA_VERSION = 1
#: File name of the database inside a run directory.
DB_NAME = "run.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, started REAL NOT NULL, ended REAL
);
CREATE TABLE IF NOT EXISTS params (key TEXT PRIMARY KEY, value TEXT NOT NULL, wall REAL NOT NULL);
CREATE TABLE IF NOT EXISTS scalars (
    step INTEGER NOT NULL, name TEXT NOT NULL, grp INTEGER, value REAL, wall REAL NOT NULL,
    session INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scalars_by_series ON scalars (name, grp, step);
CREATE TABLE IF NOT EXISTS events (
    step INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, wall REAL NOT NULL,
    session INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, step);
"""


class ScalarRow(NamedTuple):
    """One scalar as the writer thread hands it to sinks (``value`` already a Python float)."""

    step: int
    name: str
    group: int | None
    value: float
    wall: float


class EventRow(NamedTuple):
    """One event as the writer thread hands it to sinks (``payload`` JSON-ready)."""

    step: int
    kind: str
    payload: dict[str, Any]
    wall: float


@runtime_checkable
class Sink(Protocol):
    """Something that receives every flushed batch, on the writer thread (never the training thread)."""

    def write(self, scalars: Sequence[ScalarRow], events: Sequence[EventRow]) -> None:
        """Consume one batch; called once per flush, in step order of logging."""

    def flush(self) -> None:
        """Make everything written so far durable/visible."""

    def close(self) -> None:
        """Flush and release resources; no call follows."""

    # Optional: ``rewind(step)``, called by :meth:`RunStore.discard_after` before the rows a resumed run
    # records again arrive (a sink that keeps its own history drops what lies past ``step`` there).


def run_relative(path: Any, run_dir: str | os.PathLike[str]) -> Any:
    """``path`` relative to ``run_dir`` (POSIX separators) for storing in a run, so the run can move.

    Anything that is not a local path string (a URL, ``None``, a number) is returned as is, and so is
    a path on another drive (Windows).

    Example:
        >>> run_relative("runs/demo/checkpoints/step-000000010", "runs/demo")
        'checkpoints/step-000000010'
        >>> run_relative("s3://bucket/ck", "runs/demo")
        's3://bucket/ck'
    """
    if not isinstance(path, str) or "://" in path:
        return path
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(run_dir))).as_posix()
    except ValueError:  # another drive (Windows)
        return path


def to_float(value: Any) -> float:
    """Convert a logged value to a Python float (tensors and numpy scalars via ``.item()``).

    Example:
        >>> import numpy as np
        >>> to_float(np.float32(0.5)), to_float(3)
        (0.5, 3.0)
    """
    if type(value) is float:
        return value
    item = getattr(value, "item", None)  # tensors (autograd or not) and numpy scalars
    return float(item() if item is not None else value)


def _safe_float(value: Any, name: str) -> float:
    """:func:`to_float`, but a value that cannot be converted becomes NaN with a warning.

    One bad value (a multi-element tensor, a failing ``expected`` function) must not stop its whole
    batch from being written.
    """
    try:
        return to_float(value)
    except Exception as exc:
        warnings.warn(
            f"cosanneal: scalar {name!r} value {value!r} is not a number ({exc}); stored NaN", stacklevel=1
        )
        return math.nan


def _scalar_value(value: Any, name: str) -> Any:
    """A logged value as a float, or the tensor itself when it is a scalar on an accelerator.

    Accelerator tensors are left for :func:`_device_floats`, which converts all of a flush's at once
    (one synchronisation per device); everything else is converted here (a CPU ``.item()`` costs a
    fraction of a microsecond). A value that cannot be converted becomes NaN with a warning.
    """
    if type(value) is int:
        return float(value)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and not value.is_cpu and value.numel() == 1:
        return value
    return _safe_float(value, name)


def _device_floats(tensors: list[Any], names: list[str]) -> list[float]:
    """Floats of scalar accelerator tensors: stacked per device in float64, one transfer per device."""
    import torch

    out: list[float] = [math.nan] * len(tensors)
    by_device: dict[Any, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for idx in by_device.values():
        try:
            with torch.no_grad():
                stacked = torch.stack([tensors[i].reshape(()).to(torch.float64) for i in idx])
            for i, f in zip(idx, stacked.cpu().tolist(), strict=True):
                out[i] = float(f)
        except (RuntimeError, TypeError):  # exotic dtypes: one conversion per value
            for i in idx:
                out[i] = _safe_float(tensors[i], names[i])
    return out


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; on an error roll back if a transaction is still open.

    SQLite itself rolls back on some errors (a full disk, an I/O error); a second ``ROLLBACK`` would
    then raise "no transaction is active" and hide the real error, so the original one always wins.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


#: Rows per multi-row INSERT statement (5 parameters each, far below SQLite's 32766-parameter limit).
_INSERT_CHUNK = 256


def _insert_scalars(conn: sqlite3.Connection, rows: Sequence[ScalarRow], session: int) -> None:
    """Insert ``rows`` with multi-row ``INSERT ... VALUES (...), (...)`` statements of ``_INSERT_CHUNK`` rows.

    One statement step per chunk instead of per row costs about a quarter less CPU and hands the GIL to
    the training thread far less often. ScalarRow is the column order (the session is a literal);
    SQLite stores a NaN value as NULL by itself.
    """
    one = f"(?, ?, ?, ?, ?, {int(session)})"
    flat = itertools.chain.from_iterable
    full = len(rows) - len(rows) % _INSERT_CHUNK
    if full:
        sql = "INSERT INTO scalars VALUES " + ", ".join([one] * _INSERT_CHUNK)
        conn.executemany(
            sql, [tuple(flat(rows[i : i + _INSERT_CHUNK])) for i in range(0, full, _INSERT_CHUNK)]
        )
    if full < len(rows):
        rest = rows[full:]
        conn.execute("INSERT INTO scalars VALUES " + ", ".join([one] * len(rest)), tuple(flat(rest)))


def _json_default(value: Any) -> Any:
    """JSON fallback for payload values: tensors/numpy scalars -> numbers, paths -> str."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        item = value.item()
        return item if isinstance(item, (bool, int, float)) else to_float(item)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return repr(value)


def _plain(obj: Any) -> Any:
    """Make a payload JSON-ready (round trip through :mod:`json` with the fallback above)."""
    return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))


def environment() -> dict[str, Any]:
    """The environment worth recording with a run: versions, host, user, pid, platform, devices.

    Torch's version comes from its installed metadata (torch is not imported); CUDA details are added
    when the job has imported torch and CUDA is available.

    Example:
        >>> env = environment()
        >>> sorted(k for k in ("python", "cosanneal", "host", "numpy") if k in env)
        ['cosanneal', 'host', 'numpy', 'python']
    """
    from cosanneal import __version__

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "cosanneal": __version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
    }
    try:
        env["user"] = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        env["user"] = None
    try:
        import numpy

        env["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    try:
        env["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        env["torch"] = None
    torch = sys.modules.get("torch")  # CUDA details only if the job already imported torch
    if torch is not None and torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def run_params(
    config: Mapping[str, Any] | None = None, *, schedule: Any = None, seed: int | None = None
) -> dict[str, Any]:
    """The standard params of a run: ``config``, ``schedule`` (dict), ``schedule_fingerprint``, ``seed``, ``env``.

    Args:
        config: The whole job configuration (JSON-ready mapping), or ``None``.
        schedule: A :class:`cosanneal.Schedule` (stored as ``to_dict()`` and ``fingerprint()``), or ``None``.
        seed: The run's seed, or ``None``.

    Example:
        >>> from cosanneal import Cosine
        >>> p = run_params({"epochs": 3}, schedule=Cosine(0.1, cycle_steps=10), seed=7)
        >>> p["schedule"]["kind"], p["seed"], len(p["schedule_fingerprint"])
        ('cosine', 7, 16)
    """
    out: dict[str, Any] = {"config": dict(config) if config is not None else None, "seed": seed}
    if schedule is not None:
        out["schedule"] = schedule.to_dict()
        out["schedule_fingerprint"] = schedule.fingerprint()
    out["env"] = environment()
    return out


def resolve_db(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it names a file ending in ``.db``, else ``path / run.db``."""
    p = Path(path)
    return p if p.suffix == ".db" else p / DB_NAME


_RESERVED = frozenset(("step", "kind", "wall"))
_LIVE: weakref.WeakSet[RunStore] = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:
    for store in list(_LIVE):
        try:
            store.close()
        except Exception as exc:  # never let one store stop the others from flushing
            print(f"cosanneal: could not flush run store {store.path}: {exc}", file=sys.stderr)


class RunStore:
    """Buffered, crash-safe recorder of one run's params, scalars and events.

    Args:
        run_dir: The run directory (created if missing); the database is ``run_dir/run.db``.
            A path ending in ``.db`` is used as the database file itself.
        flush_rows: Wake the writer thread when this many rows are queued.
        flush_seconds: Flush at least this often while rows are queued (``<= 0``: only on
            ``flush_rows``, :meth:`flush` and :meth:`close`).
        enabled: ``False`` makes every method a no-op and touches no file (DDP ranks other than 0).
        synchronous: SQLite ``synchronous`` level, ``"NORMAL"`` (default: a kill -9 loses no committed
            flush; a power cut may lose the last ones) or ``"FULL"`` (fsync every flush).
        sinks: Sinks that receive every flushed batch on the writer thread.

    Appending is thread-safe and never blocks on I/O; :meth:`flush` blocks until every row queued
    before the call is committed. The store is flushed and closed at interpreter exit, by :meth:`close`
    and when a ``with`` block ends (normally or by an exception).

    Example:
        >>> import tempfile
        >>> from cosanneal import runs
        >>> d = tempfile.mkdtemp()
        >>> with RunStore(d) as store:
        ...     store.log_params({"seed": 1})
        ...     for step in range(3):
        ...         store.log_scalar(step, "loss", 1.0 / (step + 1))
        ...     store.log_event(2, "run_finished", reason="done")
        >>> run = runs.open(d)
        >>> run.scalar("loss")[1].tolist()
        [1.0, 0.5, 0.3333333333333333]
        >>> run.events()[0]["reason"]
        'done'
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str] | None,
        *,
        flush_rows: int = 1000,
        flush_seconds: float = 1.0,
        enabled: bool = True,
        synchronous: str = "NORMAL",
        sinks: Iterable[Sink] = (),
    ) -> None:
        if isinstance(flush_rows, bool) or not isinstance(flush_rows, int) or flush_rows < 1:
            raise ValueError(f"flush_rows must be an int >= 1, got {flush_rows!r}")
        if not isinstance(flush_seconds, (int, float)) or math.isnan(flush_seconds):
            raise ValueError(f"flush_seconds must be a number of seconds, got {flush_seconds!r}")
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be 'NORMAL', 'FULL' or 'EXTRA', got {synchronous!r}")
        self.enabled = bool(enabled)
        self.flush_rows = flush_rows
        self.flush_seconds = float(flush_seconds)
        self._scalars: collections.deque[tuple[int, str | None, int | None, Any, float]] = collections.deque()
        self._events: collections.deque[tuple[int, str, dict[str, Any], float]] = collections.deque()
        self._sinks: list[Sink] = []
        self._io_lock = threading.RLock()
        self._io_owner: int | None = None
        self._wake = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._retry: tuple[list[ScalarRow], list[EventRow]] | None = None
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self.path: Path | None = None
        self._identity: tuple[int, int] | None = None
        self.session = 0
        if not self.enabled:
            return
        if run_dir is None:
            raise ValueError("run_dir must be a directory path when enabled=True, got None")
        self.path = resolve_db(run_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._connect(self.path, synchronous.upper())
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._sinks.extend(sinks)
        self._thread = threading.Thread(
            target=self._run, name=f"cosanneal-runstore-{self.session}", daemon=True
        )
        self._thread.start()
        _LIVE.add(self)

    @classmethod
    def disabled(cls) -> RunStore:
        """A store that records nothing (for DDP ranks other than 0).

        Example:
            >>> s = RunStore.disabled()
            >>> s.log_scalar(0, "loss", 1.0); s.flush(); s.enabled
            False
        """
        return cls(None, enabled=False)

    # ---- setup ------------------------------------------------------------------------------
    def _connect(self, path: Path, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        try:
            with _transaction(conn):
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                if row[0] is None:
                    conn.execute("INSERT INTO schema_version VALUES (?, ?)", (SCHEMA_VERSION, time.time()))
                elif row[0] > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{path} has run-store schema version {row[0]}; this cosanneal writes version "
                        f"{SCHEMA_VERSION}; upgrade cosanneal to append to it"
                    )
                cur = conn.execute(
                    "INSERT INTO sessions (pid, host, started) VALUES (?, ?, ?)",
                    (os.getpid(), socket.gethostname(), time.time()),
                )
                self.session = int(cur.lastrowid or 0)
        except BaseException:
            conn.close()
            raise
        return conn

    def add_sink(self, sink: Sink) -> None:
        """Attach a sink; it receives every batch flushed from now on (ignored when disabled)."""
        if self.enabled:
            with self._io_lock:
                self._sinks.append(sink)

    # ---- appending (training thread) ----------------------------------------------------------
    def log_scalar(self, step: int, name: str, value: Any, group: int | None = None) -> None:
        """Queue one scalar. ``value`` may be a float, a numpy scalar or a 1-element tensor (any device)."""
        if self.enabled:
            self._scalars.append((step, name, group, value, time.time()))
            if len(self._scalars) >= self.flush_rows:
                self._wake.set()

    def log_scalars(self, step: int, values: Mapping[str, Any], group: int | None = None) -> None:
        """Queue several scalars of one step (same rules as :meth:`log_scalar`)."""
        if self.enabled:
            wall = time.time()
            append = self._scalars.append
            for name, value in values.items():
                append((step, name, group, value, wall))
            if len(self._scalars) >= self.flush_rows:
                self._wake.set()

    def log_rows(self, step: int, rows: Iterable[tuple[str, int | None, Any]]) -> None:
        """Queue several ``(name, group, value)`` scalars of one step with a single append (the cheapest).

        The rows stay one queue entry until the writer thread expands them, so they count as one
        towards ``flush_rows``. ``rows`` is iterated once, on the writer thread, at flush time: an
        iterable that computes some rows then (as :class:`~cosanneal.runtime.telemetry.Telemetry` does
        for the expected LR) keeps that work off the training thread; it must not raise.
        """
        if self.enabled:
            self._scalars.append((step, None, None, rows, time.time()))
            if len(self._scalars) >= self.flush_rows:
                self._wake.set()

    def log_event(self, step: int, kind: str, /, **payload: Any) -> None:
        """Queue one event; ``payload`` must be JSON-ready after tensors/numpy values become numbers.

        Raises:
            ValueError: A payload field is named ``step``, ``kind`` or ``wall`` (the reader's own keys).
        """
        if self.enabled:
            if _RESERVED.intersection(payload):
                bad = sorted(_RESERVED.intersection(payload))[0]
                raise ValueError(f"event payload field {bad!r} is reserved (step, kind, wall); rename it")
            self._events.append((step, kind, payload, time.time()))
            if len(self._events) >= self.flush_rows:
                self._wake.set()

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Write params now (blocking; once per run): each top-level key is one row, its value JSON.

        Logging a key again replaces its value (a resumed run re-logs its config).
        """
        if not self.enabled:
            return
        wall = time.time()
        rows = [(str(k), json.dumps(_plain(v), sort_keys=True), wall) for k, v in params.items()]
        with self._io_lock:
            conn = self._require_conn()
            with _transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO params VALUES (?, ?, ?)", rows)

    @property
    def pending(self) -> int:
        """Number of rows queued and not yet written."""
        return len(self._scalars) + len(self._events)

    # ---- writing (writer thread, or a blocking flush) -----------------------------------------
    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"run store {self.path} is closed")
        return self._conn

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds if self.flush_seconds > 0 else None)
            self._wake.clear()
            if self._closed:
                break
            try:
                self._flush_once()
            except Exception as exc:  # kept and raised by the next flush()/close() on the caller's thread
                self._error = exc

    def _drain(self) -> tuple[list[ScalarRow], list[EventRow]]:
        """Take every queued row (thread-safe against concurrent appends) and convert it.

        One pass over the rows (this is the writer thread's busiest loop, run with the GIL held):
        values that are already floats are not touched; accelerator tensors are converted together
        at the end (:func:`_device_floats`).
        """
        rows: list[ScalarRow] = []
        append = rows.append
        new = tuple.__new__
        deferred: list[int] = []
        popleft = self._scalars.popleft
        for _ in range(len(self._scalars)):
            step, name, group, value, wall = popleft()
            if type(step) is not int:
                step = int(step)
            batch = value if name is None else ((name, group, value),)  # a log_rows entry holds many
            for n, g, v in batch:
                if type(v) is not float:
                    v = _scalar_value(v, n)
                    if type(v) is not float:
                        deferred.append(len(rows))
                if g is not None and type(g) is not int:
                    g = int(g)
                append(new(ScalarRow, (step, n, g, v, wall)))
        if deferred:
            floats = _device_floats([rows[k].value for k in deferred], [rows[k].name for k in deferred])
            for k, f in zip(deferred, floats, strict=True):
                rows[k] = rows[k]._replace(value=f)
        raw_e = [self._events.popleft() for _ in range(len(self._events))]
        events = [EventRow(int(s), k, _plain(p), w) for s, k, p, w in raw_e]
        return rows, events

    def _flush_once(self) -> None:
        if os.getpid() != self._pid:  # a forked child must never write through the parent's handle
            return
        with self._io_lock:
            if self._io_owner == threading.get_ident():  # re-entered (e.g. from a signal handler)
                return
            self._io_owner = threading.get_ident()
            try:
                self._write_batch()
            finally:
                self._io_owner = None

    def _write_batch(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if self._retry is not None:
            scalars, events = self._retry
            more_s, more_e = self._drain()
            scalars, events = scalars + more_s, events + more_e
        else:
            scalars, events = self._drain()
        if not scalars and not events:
            return
        sid = int(self.session)
        try:
            with _transaction(conn):
                _insert_scalars(conn, scalars, sid)
                conn.executemany(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                    [(s, k, json.dumps(p, sort_keys=True), w, sid) for s, k, p, w in events],
                )
        except Exception:
            self._retry = (scalars, events)  # keep the batch; the next flush tries again
            raise
        self._retry = None
        self._each_sink("write", scalars, events)

    def _each_sink(self, method: str, *args: Any) -> None:
        """Call ``method`` on every sink; a sink that raises gets a warning and never stops the others.

        A broken sink must not cost the run store its rows, nor another sink its batch.
        """
        for sink in list(self._sinks):
            call = getattr(sink, method, None)
            if call is None:  # an optional method (``rewind``) this sink does not have
                continue
            try:
                call(*args)
            except Exception as exc:
                warnings.warn(f"cosanneal: sink {type(sink).__name__} failed: {exc}", stacklevel=3)

    def flush(self, *, durable: bool = False) -> None:
        """Write every row queued so far, in one transaction, and flush the sinks; blocks until done.

        Safe from any thread at any time; a call made while the same thread is already flushing (a
        signal handler interrupting a flush) returns at once and the outer flush completes. Raises the
        error of a failed background flush, if any (its rows are kept and retried).

        Args:
            durable: also fsync the database and its write-ahead log, so every row committed so far
                survives a power cut (with ``synchronous="NORMAL"`` a commit survives a process kill
                but not a power cut). Costs one or two fsyncs.
        """
        if not self.enabled or self._conn is None or self._io_owner == threading.get_ident():
            return
        self._flush_once()
        if self._error is None and durable:
            with self._io_lock:
                self._sync_files()
        with self._io_lock:
            self._each_sink("flush")
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _sync_files(self) -> None:
        """Sync the write-ahead log (where WAL commits live until a checkpoint) and the database to disk.

        Raises:
            FileNotFoundError: the database file was deleted or replaced under the run (its directory
                vanished): SQLite would go on writing into the deleted file, losing every row.
        """
        assert self.path is not None
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == self._identity
        except FileNotFoundError:
            same = False
        if not same:
            raise FileNotFoundError(
                errno.ENOENT,
                "the run store was deleted or replaced while the run was writing it",
                str(self.path),
            )
        for path in (Path(f"{self.path}-wal"), self.path):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard_after(
        self,
        step: int,
        *,
        keep_scalars_at: str = "val_*",
        keep_events_at: Iterable[str] = (),
    ) -> tuple[int, int]:
        """Delete the rows a run resumed at ``step`` will record again; returns ``(scalars, events)`` deleted.

        Deleted: every scalar and event with a step above ``step``, and at ``step`` itself the scalars
        whose name does not match the GLOB pattern ``keep_scalars_at`` and the events whose kind is not
        in ``keep_events_at``. The rows kept at ``step`` describe the state *after* ``step`` updates
        (an evaluation, a checkpoint); the ones deleted describe update index ``step`` (its LR, loss,
        a restart starting there), which the resumed run trains again. Rows still queued are written
        first, so they are judged by the same rule. One transaction: readers see the rows before or
        after, never half of it.

        Example:
            >>> import tempfile
            >>> from cosanneal import runs
            >>> d = tempfile.mkdtemp()
            >>> with RunStore(d) as store:
            ...     for t in range(6):
            ...         store.log_scalar(t, "lr", 0.1)
            ...     store.log_scalar(4, "val_loss", 0.5)
            ...     store.discard_after(4)
            (2, 0)
            >>> run = runs.open(d); run.scalar("lr")[0].tolist(), run.scalar("val_loss")[0].tolist()
            ([0, 1, 2, 3], [4])
        """
        if not self.enabled:
            return (0, 0)
        self.flush()
        kinds = sorted(set(keep_events_at))
        marks = ", ".join("?" * len(kinds)) or "NULL"
        with self._io_lock:
            conn = self._require_conn()
            with _transaction(conn):
                scalars = conn.execute(
                    "DELETE FROM scalars WHERE step > ? OR (step = ? AND NOT name GLOB ?)",
                    (step, step, keep_scalars_at),
                ).rowcount
                events = conn.execute(
                    f"DELETE FROM events WHERE step > ? OR (step = ? AND kind NOT IN ({marks}))",
                    (step, step, *kinds),
                ).rowcount
            self._each_sink("rewind", step)
        return (int(scalars), int(events))

    def close(self) -> None:
        """Flush durably, stop the writer thread, close the sinks and the database (idempotent).

        Raises the error of the last flush, if any (after releasing everything).
        """
        if not self.enabled or self._closed or os.getpid() != self._pid:
            return
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        error: BaseException | None = None
        try:
            self.flush(durable=True)  # the last rows are durable, and really went into the run's file
        except BaseException as exc:  # still close the database and the sinks; then raise it
            error = exc
        with self._io_lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.execute("UPDATE sessions SET ended = ? WHERE id = ?", (time.time(), self.session))
                except sqlite3.Error as exc:  # the flush's error (if any) is the one worth reporting
                    error = error or exc
                finally:
                    conn.close()
            self._each_sink("close")
        _LIVE.discard(self)
        if error is not None:
            raise error

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self.enabled:
            return "RunStore(disabled)"
        return f"RunStore({str(self.path)!r}, session={self.session}, pending={self.pending})"
