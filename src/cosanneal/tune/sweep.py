"""Optuna sweeps over a training config, pruned at the schedule's restarts.

A sweep is an Optuna study; every trial is one training run in its own run directory
``<runs_dir>/<study>/trial-<n>``. This module is the study: the search space, the pruning at cycle ends,
the workers, the budget. The training itself comes in as a :data:`TrialJob` (built from the trial's
config); :func:`cosanneal.jobs.sweep.run_sweep` runs every trial as one
:class:`~cosanneal.jobs.trainer.Trainer` run. The search space maps dotted config keys to
distributions (see :func:`parse_space`). At every **cycle end** the trial reports its validation metric
with ``step = cycle index`` (0, 1, 2, ...), and the pruner (median or Hyperband) decides whether it goes
on: at a restart every trial has just annealed to its floor, so cycle-end metrics compare like with like
and the restarts are the natural rungs.

The objective is the final (or best) value of ``metric`` (``val_loss`` minimised by default). Each trial
records its cost as user attrs ``steps`` and ``seconds``; a budget (the sum of ``seconds`` over the
study's trials, all workers together) stops the study: no trial starts once it is spent.

Storage is an Optuna ``RDBStorage``: a SQLite file ``<runs_dir>/optuna.db`` by default, or any
SQLAlchemy URL (PostgreSQL for many machines: ``postgresql://`` is read as ``postgresql+psycopg://``,
psycopg 3; see :func:`check_storage_url`). The study is done when exactly ``trials`` trials are
COMPLETE or PRUNED and none is RUNNING. Workers claim a trial before running it and give back a claim that
would exceed ``trials``; a worker heartbeats its trial, and a trial whose worker died (SIGKILL, a lost node)
is marked ``FAIL`` once its heartbeat is older than the grace period and re-queued with the same
parameters and its cycle-end reports (``RetryHeartbeatStaleTrialCallback``); the retry runs in the dead
trial's run directory and, when the job can resume (a :class:`ResumableRunTrial`), from its last
checkpoint. A worker that finds the study full of running trials waits for them to finish or go stale
(see :class:`_Worker`).

Example:
    >>> space = parse_space({"schedule.peak_lr": {"low": 1e-3, "high": 1.0, "log": True},
    ...                      "schedule.cycle_mult": {"choices": [1, 2]}})
    >>> sorted(space)
    ['schedule.cycle_mult', 'schedule.peak_lr']
    >>> apply_params({"schedule": {"kind": "cosine"}}, {"schedule.peak_lr": 0.1})
    {'schedule': {'kind': 'cosine', 'peak_lr': 0.1}}
    >>> parse_budget("2h"), parse_budget("30m"), parse_budget("90")
    (7200.0, 1800.0, 90.0)
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import importlib.util
import inspect
import math
import os
import random
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from cosanneal.errors import ConfigError, CosannealError

__all__ = [
    "ParamSpec",
    "RunTrial",
    "StorageLostError",
    "StudySummary",
    "SweepResult",
    "SweepSettings",
    "TrialJob",
    "ResumableRunTrial",
    "TrialOutcome",
    "apply_params",
    "check_storage_url",
    "default_storage",
    "load_space",
    "make_pruner",
    "open_storage",
    "open_study",
    "parse_budget",
    "parse_space",
    "plot_study",
    "run_study",
    "summarize_study",
]

Direction = Literal["minimize", "maximize"]
Log = Callable[[str], None]
#: ``on_eval(updates, metrics, cycle_end) -> prune?``: called after every evaluation of a trial's run.
EvalHook = Callable[[int, dict[str, float], bool], bool]
_UNITS = ("st", "ep", "dur")
_SPACE_KEYS = ("low", "high", "log", "step", "choices", "unit")
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|h|d)?\s*$")
_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: ``status`` user attr of a claim a worker gave back unrun because the study already had enough trials.
SURPLUS = "surplus"
_OPEN_ATTEMPTS = 6
#: Seconds a PostgreSQL (or other server) connection attempt may take before the URL is reported unreachable.
CONNECT_TIMEOUT = 10
_URL_FORMS = (
    "sqlite:///PATH/optuna.db, postgresql://USER:PASSWORD@HOST:PORT/DB or, over a Unix socket, "
    "postgresql://USER@/DB?host=/SOCKET/DIR"
)


# ---- the search space -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One searched config key: an Optuna distribution, and an optional duration unit for the value.

    ``unit`` (``"st"``, ``"ep"`` or ``"dur"``) turns a sampled number ``x`` into the duration string
    ``f"{x}{unit}"`` (e.g. ``0.25dur``), so lengths can be searched as fractions of the budget.
    """

    distribution: BaseDistribution
    unit: str | None = None

    def value(self, sampled: Any) -> Any:
        """The config value for a sampled parameter."""
        return sampled if self.unit is None else f"{sampled:g}{self.unit}"


def _number(key: str, name: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f'space "{key}": {name} must be a finite number, got {value!r}')
    return value


def _one_param(key: str, spec: Any) -> ParamSpec:
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f'space "{key}": expected a table like {{low = 0.01, high = 1.0, log = true}} or '
            f"{{choices = [1, 2]}}, got {spec!r}"
        )
    unknown = [k for k in spec if k not in _SPACE_KEYS]
    if unknown:
        raise ConfigError(f'space "{key}": unknown option {unknown[0]!r}; allowed: {", ".join(_SPACE_KEYS)}')
    unit = spec.get("unit")
    if unit is not None and unit not in _UNITS:
        raise ConfigError(f'space "{key}": unit must be one of {", ".join(_UNITS)}, got {unit!r}')
    if "choices" in spec:
        others = [k for k in spec if k not in ("choices", "unit")]
        if others:
            raise ConfigError(f'space "{key}": choices cannot be combined with {others[0]!r}')
        choices = spec["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f'space "{key}": choices must be a non-empty list, got {choices!r}')
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise ConfigError(f'space "{key}": a choice must be a number, string or bool, got {c!r}')
        return ParamSpec(CategoricalDistribution(tuple(choices)), unit)
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f'space "{key}": give both low and high (or choices = [...])')
    low, high = _number(key, "low", spec["low"]), _number(key, "high", spec["high"])
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f'space "{key}": log must be true or false, got {log!r}')
    step = spec.get("step")
    if step is not None and not _number(key, "step", step) > 0:
        raise ConfigError(f'space "{key}": step must be > 0, got {step!r}')
    if not low < high:
        raise ConfigError(f'space "{key}": low must be < high, got low={low!r}, high={high!r}')
    if log and not low > 0:
        raise ConfigError(f'space "{key}": log = true needs low > 0, got low={low!r}')
    if log and step is not None:
        raise ConfigError(f'space "{key}": log = true cannot be combined with step')
    if all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int)):
        return ParamSpec(IntDistribution(int(low), int(high), log=log, step=int(step or 1)), unit)
    return ParamSpec(FloatDistribution(float(low), float(high), log=log, step=step), unit)


def parse_space(data: Mapping[str, Any]) -> dict[str, ParamSpec]:
    """Parse a search space: dotted config keys mapped to distributions.

    Each value is a table: ``{low, high}`` (integers give an integer parameter, numbers a float one;
    ``log = true`` samples log-uniformly, ``step`` quantises) or ``{choices = [...]}``; ``unit = "dur"``
    (or ``"ep"``, ``"st"``) makes the value a duration string.

    Example:
        >>> spec = parse_space({"schedule.warmup_steps": {"low": 0, "high": 40, "step": 10}})
        >>> spec["schedule.warmup_steps"].distribution
        IntDistribution(high=40, log=False, low=0, step=10)
        >>> parse_space({"epochs": {"low": 5, "high": 2}})
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: space "epochs": low must be < high, got low=5, high=2

    Raises:
        ConfigError: one line naming the key, the value and what is allowed.
    """
    if not data:
        raise ConfigError(
            'space: the space file holds no parameters; add e.g. "schedule.peak_lr" = {low = 0.01, high = 1, log = true}'
        )
    out: dict[str, ParamSpec] = {}
    for key, spec in data.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"space: {key!r} is not a dotted config key like schedule.peak_lr")
        out[key] = _one_param(key, spec)
    return out


def load_space(path: str | Path) -> dict[str, ParamSpec]:
    """Read a space file (TOML, YAML or JSON) and parse it with :func:`parse_space`.

    Quoted dotted keys (``"schedule.peak_lr" = {...}``) and nested tables (``[schedule] peak_lr =
    {...}``) both work: a table holding none of the distribution options is read as a section.
    """
    from cosanneal.schedules.spec import read_mapping

    try:
        raw = read_mapping(path)
    except CosannealError as exc:
        raise ConfigError(str(exc)) from exc
    return parse_space(_flatten(raw))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value and not any(k in _SPACE_KEYS for k in value):
            out.update(_flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def apply_params(config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config mapping with each dotted key set to its value (missing tables are created).

    Example:
        >>> apply_params({"epochs": 3}, {"schedule.peak_lr": 0.5, "epochs": 4})
        {'epochs': 4, 'schedule': {'peak_lr': 0.5}}

    Raises:
        ConfigError: a dotted key passes through a value that is not a table.
    """
    out: dict[str, Any] = copy.deepcopy(dict(config))
    for key, value in params.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f'space "{key}": {part!r} holds {child!r}, not a table of options')
            node = child
        node[last] = value
    return out


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution {dist!r}")  # internal: parse_space makes only these


# ---- settings, storage, study ---------------------------------------------------------------------
def parse_budget(text: str | float | None) -> float | None:
    """Seconds from ``"90"``, ``"45s"``, ``"30m"``, ``"2h"`` or ``"1d"`` (``None`` stays ``None``).

    Raises:
        ConfigError: not a positive number with an optional unit s, m, h or d.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _BUDGET.match(str(text))
        if match is None:
            raise ConfigError(f"--budget: expected seconds or a duration like 30m or 2h, got {text!r}")
        seconds = float(match.group(1)) * _SECONDS[match.group(2) or "s"]
    if not seconds > 0:
        raise ConfigError(f"--budget: must be > 0, got {text!r}")
    return seconds


def default_storage(runs_dir: str | Path) -> str:
    """The embedded default: the SQLite file ``<runs_dir>/optuna.db`` as a SQLAlchemy URL."""
    return f"sqlite:///{Path(runs_dir).resolve() / 'optuna.db'}"


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """How a sweep runs.

    Attributes:
        study: the study name (trials go to ``<runs_dir>/<study>/trial-<n>``).
        runs_dir: where run directories (and the default SQLite storage) live.
        storage: a SQLAlchemy URL; ``None`` is ``sqlite:///<runs_dir>/optuna.db``. ``postgresql://``
            (and ``postgres://``) use psycopg 3 (``postgresql+psycopg://``, ``pip install 'cosanneal[postgres]'``).
        trials: the study is done when this many trials are COMPLETE or PRUNED (all workers together).
        budget_seconds: no trial starts once the study's trials have used this many seconds.
        pruner: ``median``, ``hyperband``, ``sha`` or ``none``.
        metric: the validation metric of the objective (``val_loss``, ``val_acc``).
        direction: ``minimize``/``maximize``; default: minimise a loss, perplexity or error (:func:`cosanneal.runs.lower_is_better`), maximise others.
        objective: ``final`` (the value at the end of the run) or ``best`` (best over evaluations).
        startup_trials: trials that run unpruned before the median pruner starts to prune.
        seed: the sampler's seed (leave ``None`` when several workers share a study).
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: a trial whose last heartbeat is older than this is failed and retried.
        max_retry: how often a trial of a dead worker is re-run.
        rungs: where trials report to the pruner: ``cycles`` (at cycle ends, ``step`` = cycle index) or
            ``evals`` (at every evaluation, ``step`` = updates done: Optuna's usual use, for comparisons).
    """

    study: str
    runs_dir: Path = Path("runs/sweeps")
    storage: str | None = None
    trials: int = 40
    budget_seconds: float | None = None
    pruner: Literal["median", "hyperband", "sha", "none"] = "median"
    metric: str = "val_loss"
    direction: Direction | None = None
    objective: Literal["final", "best"] = "final"
    startup_trials: int = 3
    seed: int | None = None
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: int = 2
    rungs: Literal["cycles", "evals"] = "cycles"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.study):
            raise ConfigError(f"--study: use letters, digits, '.', '_' and '-', got {self.study!r}")
        for name in ("trials", "heartbeat_interval", "grace_period"):
            if not getattr(self, name) >= 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)!r}")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"--grace-period: must be more than --heartbeat-interval ({self.heartbeat_interval}), "
                f"got {self.grace_period}"
            )
        if self.startup_trials < 0 or self.max_retry < 0:
            raise ConfigError("--startup-trials and --max-retry: must be >= 0")
        if self.rungs not in ("cycles", "evals"):
            raise ConfigError(f"rungs: must be cycles or evals, got {self.rungs!r}")

    @property
    def url(self) -> str:
        """The storage URL in use."""
        return self.storage or default_storage(self.runs_dir)

    @property
    def resolved_direction(self) -> Direction:
        """The direction given, or the metric's natural one."""
        if self.direction is not None:
            return self.direction
        from cosanneal.runs import lower_is_better

        return "minimize" if lower_is_better(self.metric) else "maximize"


def make_pruner(name: str, startup_trials: int = 3) -> optuna.pruners.BasePruner:
    """The pruner for ``name``: ``median``, ``hyperband``, ``sha`` (successive halving) or ``none``.

    ``median`` prunes after ``startup_trials``; ``hyperband`` and ``sha`` count resources in cycle indices
    (``sha`` is Hyperband's most aggressive bracket alone: the best third goes on at each rung).

    Example:
        >>> type(make_pruner("hyperband")).__name__
        'HyperbandPruner'
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner: must be one of median, hyperband, sha, none; got {name!r}")


def check_storage_url(url: str) -> str:
    """Check a storage URL and return the one to connect with (``postgresql://`` means psycopg 3).

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://`` (the driver of
    ``cosanneal[postgres]``; SQLAlchemy's own default would be psycopg2); a Unix socket is the ``host``
    query parameter (``postgresql+psycopg://user@/db?host=/var/run/postgresql``). Nothing is connected to.

    Example:
        >>> check_storage_url("postgresql://optuna@db.internal:5432/sweeps")
        'postgresql+psycopg://optuna@db.internal:5432/sweeps'
        >>> check_storage_url("db.internal/sweeps")
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: --storage: 'db.internal/sweeps' is not a database URL; use sqlite:///PATH/optuna.db, postgresql://USER:PASSWORD@HOST:PORT/DB or, over a Unix socket, postgresql://USER@/DB?host=/SOCKET/DIR

    Raises:
        ConfigError: a malformed URL, an unknown database kind, no database name, or a driver that is not
            installed (one line naming ``--storage`` and the fix).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018  (a port that is not a number raises here)
    except (ArgumentError, ValueError, TypeError):
        raise ConfigError(f"--storage: {url!r} is not a database URL; use {_URL_FORMS}") from None
    shown = _shown(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql" and not parsed.database:
        raise ConfigError(f"--storage: {shown} names no database; add it: postgresql://USER@HOST/DBNAME")
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"--storage: {shown}: unknown database kind {parsed.drivername!r}; use {_URL_FORMS}"
        ) from None
    module = _DRIVERS.get(parsed.drivername)
    if module is not None and importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"--storage: {shown} needs the {module} driver, which is not installed: "
            f"pip install {_INSTALL.get(module, module)!r}"
        )
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ConfigError(
            f"--storage: {shown} needs the {parsed.drivername} driver, which does not import ({exc}); "
            f"install it (for PostgreSQL: pip install 'cosanneal[postgres]')"
        ) from None
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url.removeprefix(plain)
    return url


#: The DB-API modules of the drivers a sweep is likely given, and what installs them.
_DRIVERS = {
    "postgresql+psycopg": "psycopg",
    "postgresql+psycopg2": "psycopg2",
    "mysql+pymysql": "pymysql",
}
_INSTALL = {"psycopg": "cosanneal[postgres]", "psycopg2": "psycopg2-binary"}
_PASSWORD = re.compile(r"^([^:/]+://[^:/@?]*:)[^@/?]*@")


def _shown(url: str) -> str:
    """``url`` quoted as messages and results show it: the password replaced by ``***``."""
    return repr(_PASSWORD.sub(r"\1***@", url))


def _where(url: str) -> str:
    """The server a URL points at, in words: ``socket dir /x`` or ``host:port``."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host
    if isinstance(host, tuple):
        host = ",".join(host)
    if not host or str(host).startswith("/"):
        return f"the Unix socket in {host or 'the default socket directory'}"
    return f"{host}:{parsed.port or 5432}" if parsed.get_backend_name() == "postgresql" else str(host)


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # several workers on one file wait for the lock
    from sqlalchemy.engine import make_url

    kwargs: dict[str, Any] = {"pool_pre_ping": True}  # a server restart drops pooled connections
    if make_url(url).get_backend_name() == "postgresql" and "connect_timeout" not in make_url(url).query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    return kwargs


def _probe(url: str) -> None:
    """Connect once to a server URL (not SQLite), so an unreachable server is one line, before any write.

    Raises:
        ConfigError: the server cannot be reached, refuses the role or has no such database.
    """
    if url.startswith("sqlite"):
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool, **_engine_kwargs(url))
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.DBAPIError as exc:
        reason = " ".join(line.strip() for line in str(exc.orig).strip().splitlines() if line.strip())
        raise ConfigError(
            f"--storage: cannot connect to {_shown(url)} at {_where(url)}: {reason}; start the server "
            "or fix the host, port, socket directory, user or database in the URL"
        ) from None
    finally:
        engine.dispose()


def open_storage(url: str, settings: SweepSettings | None = None) -> optuna.storages.RDBStorage:
    """An Optuna ``RDBStorage`` for ``url``, checked (:func:`check_storage_url`) and reached first.

    With ``settings`` it heartbeats trials and retries a dead worker's trial (``heartbeat_interval``,
    ``grace_period``, ``max_retry``), the retry inheriting the trial's reports. A missing SQLite file is
    created (with its directory); a PostgreSQL database must exist (``createdb``), its tables are created.

    Raises:
        ConfigError: a malformed URL, a missing driver, an unreachable server (one line: ``--storage: ...``).
    """
    url = check_storage_url(url)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    _probe(url)
    heartbeat: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings is not None:
            heartbeat = {
                "heartbeat_interval": settings.heartbeat_interval,
                "grace_period": settings.grace_period,
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=settings.max_retry, inherit_intermediate_values=True
                ),
            }
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **heartbeat)
            except Exception as exc:  # a schema race, a locked file, a server gone since the probe
                # Workers that start together race to create the schema (SQLite: a locked file; PostgreSQL:
                # a duplicate table or type); the loser sees it next time.
                if attempt + 1 < _OPEN_ATTEMPTS and type(exc).__name__ in (
                    "IntegrityError",
                    "OperationalError",
                    "ProgrammingError",
                ):
                    time.sleep(0.2 * (attempt + 1))
                    continue
                reason = " ".join(str(exc).split())[:300]
                raise ConfigError(
                    f"--storage: cannot open {_shown(url)}: {type(exc).__name__}: {reason}"
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _storage(settings: SweepSettings) -> optuna.storages.RDBStorage:
    return open_storage(settings.url, settings)


def open_study(
    settings: SweepSettings,
    *,
    pruner: optuna.pruners.BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    storage: optuna.storages.RDBStorage | None = None,
) -> optuna.Study:
    """Create the study, or load it when it exists (so workers and resumed sweeps share it).

    The sampler is TPE (seeded with ``settings.seed``) unless one is given; the storage is opened from
    ``settings`` (with its heartbeat and retry settings) unless one is given.
    """
    return optuna.create_study(
        storage=storage or _storage(settings),
        study_name=settings.study,
        direction=settings.resolved_direction,
        load_if_exists=True,
        sampler=sampler or optuna.samplers.TPESampler(seed=settings.seed),
        pruner=pruner or make_pruner(settings.pruner, settings.startup_trials),
    )


def _counts(study: optuna.Study) -> tuple[int, int, int]:
    """``(finished, running, waiting)`` trials: COMPLETE or PRUNED, RUNNING, and WAITING.

    RUNNING trials are claimed by some worker; WAITING ones are queued (retries, re-queued claims,
    enqueued parameters).
    """
    live = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING))
    finished = sum(t.state in FINISHED for t in live)
    waiting = sum(t.state == TrialState.WAITING for t in live)
    return finished, len(live) - finished - waiting, waiting


def _queued(trial: FrozenTrial) -> bool:
    """Whether a trial carries parameters chosen before it ran: a retry, a re-queued or enqueued trial."""
    return bool(trial.params) or "fixed_params" in trial.system_attrs or "failed_trial" in trial.system_attrs


#: User attrs of a run's cost and ending, which a re-queued copy of a trial does not inherit.
_COST_ATTRS = ("steps", "seconds", "status")


def _requeue(study: optuna.Study, trial: FrozenTrial, **user_attrs: Any) -> None:
    """Queue a copy of ``trial`` (WAITING): its parameters, reports, run directory and cycle-end updates."""
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in _COST_ATTRS}
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**attrs, **user_attrs},
            system_attrs=trial.system_attrs,
            intermediate_values=trial.intermediate_values,
        )
    )


def _origin(trial: FrozenTrial) -> int | None:
    """The number of the trial whose run a retry or a re-queued trial continues (``None``: a new trial)."""
    failed = trial.system_attrs.get("failed_trial")
    if failed is not None:
        return int(failed)
    requeued = trial.user_attrs.get("requeued_from")
    return None if requeued is None else int(requeued)


def _accepts_resume(run: Any) -> bool:
    """Whether a :data:`RunTrial` takes ``resume=`` (a :class:`ResumableRunTrial`)."""
    try:
        params = inspect.signature(run).parameters
    except (TypeError, ValueError):
        return False
    return "resume" in params or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())


def _is_surplus(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and trial.user_attrs.get("status") == SURPLUS


def _spent(study: optuna.Study) -> float:
    return float(sum(t.user_attrs.get("seconds", 0.0) for t in study.get_trials(deepcopy=False)))


# ---- one trial ------------------------------------------------------------------------------------
class _CycleReporter:
    """The trainer's ``on_eval``: reports at cycle ends (step = cycle index) and asks the pruner.

    A retry starts with the reports of the trial it retries (inherited by the retry callback) and their
    cycle-end updates (user attrs ``cycle_end_update_<k>``): a run resumed past a rung does not see that
    rung again, and one that does (resumed from an earlier checkpoint, or rerun from scratch) keeps the
    report it already has. With ``rungs = "evals"`` every evaluation is a report, at ``step = updates``.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        metric: str,
        direction: Direction,
        rungs: str = "cycles",
        before: FrozenTrial | None = None,
    ) -> None:
        self.trial, self.metric, self.direction, self.rungs = trial, metric, direction, rungs
        self.cycle = 0
        self.best: float | None = None
        self.pruned_at: int | None = None
        self.reported: set[int] = set()
        self.ends: dict[int, int] = {}  # cycle-end update -> cycle index
        if before is not None:
            self.reported = set(before.intermediate_values)
            for key, value in before.user_attrs.items():
                if key.startswith("cycle_end_update_") and key.removeprefix("cycle_end_update_").isdigit():
                    self.ends[int(value)] = int(key.removeprefix("cycle_end_update_"))
            self.cycle = len(self.reported)
            for value in before.intermediate_values.values():
                self._track(value)

    def _track(self, value: float) -> None:
        if math.isfinite(value) and (
            self.best is None or (value < self.best if self.direction == "minimize" else value > self.best)
        ):
            self.best = value

    def __call__(self, updates: int, metrics: dict[str, float], cycle_end: bool) -> bool:
        if self.metric not in metrics:
            raise ConfigError(
                f"--metric: {self.metric!r} is not evaluated; have {', '.join(sorted(metrics))}"
            )
        value = float(metrics[self.metric])
        self._track(value)
        if self.rungs == "evals":
            step = updates
        elif not cycle_end:
            return False
        else:
            step = self.ends.get(updates, sum(u < updates for u in self.ends))
            self.ends[updates] = step
            self.trial.set_user_attr(f"cycle_end_update_{step}", updates)
        if step not in self.reported:  # a retry keeps the report it inherited
            self.trial.report(value, step=step)
            self.reported.add(step)
        self.cycle = len(self.reported)
        if self.trial.should_prune():
            self.pruned_at = step
            return True
        return False


class SweepPreemptedError(Exception):
    """The worker got SIGTERM/SIGINT mid-trial: the trial is re-queued and the worker stops."""


class StorageLostError(CosannealError):
    """The study's database server went away while the worker ran (a restart, a failover, the network).

    The trials already told are in the database; a trial that was training is left RUNNING there, so
    once the server is back its heartbeat goes stale and it is failed and retried (from its run
    directory's last checkpoint) by whichever worker runs next. The CLI exits with 75 (``EX_TEMPFAIL``):
    run the worker again once the server is back.
    """


def is_storage_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a lost or refused database connection.

    SQLAlchemy's ``OperationalError`` / ``InterfaceError`` (a dropped connection, a server that is not
    there), possibly wrapped in Optuna's ``StorageInternalError``.

    Example:
        >>> import sqlalchemy
        >>> is_storage_lost(sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("gone")))
        True
        >>> is_storage_lost(ValueError("a bug"))
        False
    """
    import sqlalchemy

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        current = current.__cause__ or current.__context__
    return False


class TrialOutcome(Protocol):
    """What a trial's run reports when it ends (a :class:`~cosanneal.jobs.trainer.TrainResult` is one).

    ``status`` is ``finished``, ``early_stopped``, ``pruned`` (``on_eval`` asked to stop), ``preempted``
    (the trial is re-queued) or another ending the run chose; ``steps`` are the updates done.
    """

    @property
    def status(self) -> str:
        """How the run ended."""

    @property
    def steps(self) -> int:
        """Updates done."""

    @property
    def wall_seconds(self) -> float:
        """Wall-clock seconds of the run (the trial's cost)."""

    @property
    def final_metrics(self) -> dict[str, float]:
        """The last evaluation's metrics (``NaN`` for a diverged run)."""


class RunTrial(Protocol):
    """Runs one trial's training in ``run_dir`` (fresh), logging with ``log`` and calling ``on_eval``."""

    def __call__(self, run_dir: Path, log: Log, on_eval: EvalHook) -> TrialOutcome:
        """Train, and report how it ended."""


class ResumableRunTrial(Protocol):
    """A :class:`RunTrial` that can also continue a run (``resume=True``).

    A retry of a trial whose worker died (or was preempted) runs in that trial's run directory. With ``resume=True`` the job continues from the run directory's last good checkpoint, or starts over
    there (moving the old run aside) when it has none; ``resume=False`` is a fresh run. A retry of a
    plain :class:`RunTrial` trains from scratch in its own run directory.
    """

    def __call__(self, run_dir: Path, log: Log, on_eval: EvalHook, *, resume: bool = False) -> TrialOutcome:
        """Train (or continue), and report how it ended."""


#: Builds a trial's training job from its config (the base config with the trial's values applied) and
#: returns what runs it (a :class:`RunTrial`, or a :class:`ResumableRunTrial` so retries resume); raises :class:`ConfigError` for a config it does not accept (the trial fails and
#: the sweep goes on). :func:`cosanneal.jobs.sweep.run_sweep` passes one that runs the Trainer.
TrialJob = Callable[[dict[str, Any]], RunTrial]


@dataclasses.dataclass
class _Objective:
    config: dict[str, Any]
    space: dict[str, ParamSpec]
    settings: SweepSettings
    job: TrialJob
    log: Log

    def __call__(self, trial: optuna.Trial) -> float:
        sampled = {key: _suggest(trial, key, spec.distribution) for key, spec in self.space.items()}
        values = {key: self.space[key].value(v) for key, v in sampled.items()}
        run = self.job(apply_params(self.config, values))
        before = trial.storage.get_trial(trial._trial_id)  # a retry's inherited reports and attrs
        origin = _origin(before)
        resume = origin is not None and _accepts_resume(run)
        owner = origin if resume and origin is not None else trial.number
        run_dir = Path(self.settings.runs_dir) / self.settings.study / f"trial-{owner}"
        trial.set_user_attr("config_values", values)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        reporter = _CycleReporter(
            trial, self.settings.metric, self.settings.resolved_direction, self.settings.rungs, before
        )
        prefix = f"trial {trial.number}: "
        again = f" (continues trial {origin} in {run_dir.name})" if resume else ""
        self.log(prefix + ", ".join(f"{k}={v}" for k, v in values.items()) + again)
        say: Log = lambda m: self.log(prefix + m)  # noqa: E731
        result = run(run_dir, say, reporter, resume=True) if resume else run(run_dir, say, reporter)  # type: ignore[call-arg]
        trial.set_user_attr("steps", result.steps)
        trial.set_user_attr("seconds", result.wall_seconds)
        trial.set_user_attr("status", result.status)
        trial.set_user_attr("cycles_reported", reporter.cycle)
        if result.status == "preempted":
            _requeue(trial.study, trial.storage.get_trial(trial._trial_id), requeued_from=owner)
            raise SweepPreemptedError(f"trial {trial.number} preempted at update {result.steps}; re-queued")
        if result.status == "pruned":
            self.log(f"{prefix}pruned at cycle {reporter.pruned_at} (update {result.steps})")
            raise optuna.TrialPruned(f"pruned at cycle {reporter.pruned_at}")
        if self.settings.objective == "best" and reporter.best is not None:
            final = result.final_metrics.get(self.settings.metric, math.nan)
            better = min if self.settings.resolved_direction == "minimize" else max
            return better(reporter.best, final) if math.isfinite(final) else reporter.best
        value = result.final_metrics.get(self.settings.metric)
        if value is None:
            raise ConfigError(
                f"--metric: {self.settings.metric!r} is not evaluated; have {', '.join(result.final_metrics)}"
            )
        return float(value)  # a diverged run returns NaN, which Optuna records as FAIL


# ---- the sweep ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What a sweep worker leaves behind (counts are over the whole study, all workers).

    ``best_params`` holds config values as the trials used them (a ``unit = "dur"`` parameter sampled as
    ``0.15`` is ``"0.15dur"``); ``failed`` does not count ``surplus`` claims (trials a worker claimed and gave
    back unrun because the other workers' trials already filled the study).
    """

    study: str
    storage: str
    complete: int
    pruned: int
    failed: int
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    steps: int
    seconds: float
    stopped_by: str
    surplus: int = 0


class _Heartbeat:
    """Record a trial's heartbeat now, then every ``interval`` seconds on a thread until :meth:`stop`."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        storage.record_heartbeat(trial_id)  # at once: a claim is never without a heartbeat for long
        self._thread = threading.Thread(target=self._beat, name=f"sweep-heartbeat-{trial_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # a server restart: beat again next time; the trial's own calls fail
                if not is_storage_lost(exc):
                    raise

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclasses.dataclass
class _Worker:
    """One worker's loop over the shared study: fail stale trials, claim a trial, check the claim, run it.

    The study is done when ``settings.trials`` trials are COMPLETE or PRUNED **and none is RUNNING**.

    * Before each claim the worker fails every RUNNING trial whose heartbeat is older than the grace period
      (Optuna's ``fail_stale_trials``; the storage's ``RetryHeartbeatStaleTrialCallback`` re-queues it with
      the same parameters).
    * A worker only claims a trial while ``finished + running < trials``; otherwise it waits (polling) for
      the running trials to finish or to go stale, so a killed worker's trial is retried rather than
      replaced or forgotten.
    * A claim is ``study.ask()`` (the trial is RUNNING, with a heartbeat, before the check). Then the worker
      counts again: if ``finished + running`` now exceeds ``trials`` another worker claimed at the same
      time, and this claim is given back unrun (FAIL, ``status = "surplus"``, its queued parameters
      re-queued) before it waits or tries again. Every claim is visible before its own count, so of two
      racing claims the later one sees the earlier: the live trials never exceed ``trials``.
    * A new trial (no queued parameters) is also given back when a trial WAITs in the queue (a retry of a
      dead worker's trial, a re-queued claim): ``ask`` takes queued trials first, so the next claim runs
      it. A queued claim given back is queued again before it is failed, so it is always in the storage;
      a retry therefore takes the slot of the trial it retries and is never crowded out by new trials.
    """

    study: optuna.Study
    storage: optuna.storages.RDBStorage
    objective: Callable[[optuna.Trial], float]
    settings: SweepSettings
    log: Log

    def __post_init__(self) -> None:
        self.poll = min(max(self.settings.heartbeat_interval / 2.0, 0.2), 5.0)
        self.rng = random.Random()  # jitter after a lost race; never the trainer's seeded global RNG
        self.sampler_stopped = False

    def tell(self, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None) -> None:
        """``study.tell``; a sampler that stops the study (GridSampler, its grid done) ends this worker.

        Outside ``study.optimize`` Optuna's ``study.stop()`` raises from the sampler's ``after_trial``; the
        trial's state is stored before that (Optuna stores it in a ``finally``).
        """
        try:
            self.study.tell(trial, value, state=state)
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise
            self.sampler_stopped = True
        except ValueError:
            if self.storage.get_trial(trial._trial_id).state != TrialState.FAIL:
                raise
            self._failed_elsewhere(trial)

    def _failed_elsewhere(self, trial: optuna.Trial) -> None:
        self.log(
            f"trial {trial.number} was failed by another worker (no heartbeat for {self.settings.grace_period} s): "
            "its retry runs in its place and this run's result is dropped; raise --grace-period if workers "
            "are alive but slow"
        )

    def budget_spent(self) -> bool:
        spent = self.settings.budget_seconds
        return spent is not None and _spent(self.study) >= spent

    def fail_stale(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def run(self) -> str:
        """Run trials until the study is done or the budget is spent; returns what stopped it."""
        wanted = self.settings.trials
        attempts, cap = 0, 3 * wanted  # a worker whose every trial fails gives up
        said_waiting = False
        while True:
            self.fail_stale()
            finished, running, _ = _counts(self.study)
            if finished >= wanted and running == 0:
                if attempts == 0 and not said_waiting:
                    self.log(f"study {self.settings.study!r} already has {wanted} finished trials")
                return "trials"
            if self.sampler_stopped:
                self.log("the sampler has no new parameters (a grid is done); no new trial starts")
                return "sampler"
            if self.budget_spent():
                if attempts == 0:
                    self.log(
                        f"study {self.settings.study!r} has spent its budget of {self.settings.budget_seconds:g} s"
                    )
                else:
                    self.log(f"budget of {self.settings.budget_seconds:g} s spent; no new trial starts")
                return "budget"
            if finished + running >= wanted:
                if not said_waiting:
                    self.log(
                        f"{finished} finished and {running} running of {wanted} trials: waiting for the running "
                        f"ones (one silent for {self.settings.grace_period} s is failed and retried)"
                    )
                    said_waiting = True
                time.sleep(self.poll)
                continue
            if attempts >= cap:
                self.log(f"{attempts} trials started by this worker and the study is not done; giving up")
                return "failures"
            said_waiting = False
            with warnings.catch_warnings():  # this loop heartbeats its trials itself (_Heartbeat)
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                trial = self.study.ask()
            heartbeat = _Heartbeat(self.storage, trial._trial_id, self.settings.heartbeat_interval)
            try:
                finished, running, waiting = _counts(self.study)
                if finished + running > wanted or (
                    waiting and not _queued(self.storage.get_trial(trial._trial_id))
                ):  # over the count, or a new trial while a retry (or a queued trial) waits: it goes first
                    self._give_back(trial)
                    time.sleep(self.rng.uniform(0.0, self.poll))
                    continue
                attempts += 1
                self._run_one(trial)
            finally:
                heartbeat.stop()
                gc.collect()

    def _give_back(self, trial: optuna.Trial) -> None:
        """Fail a claim unrun (``status = "surplus"``), re-queued first if it carried queued parameters.

        A retry or an enqueued trial is queued again (its parameters, reports and run directory) *before*
        the claim is failed, so at every instant it is in the storage, RUNNING or WAITING: a new trial
        counted at that instant sees it and yields, and a retry is never replaced by a new trial.
        """
        frozen = self.storage.get_trial(trial._trial_id)
        if _queued(frozen):
            _requeue(self.study, frozen)
        trial.set_user_attr("status", SURPLUS)
        self.tell(trial, state=TrialState.FAIL)

    def _run_one(self, trial: optuna.Trial) -> None:
        try:
            value = self.objective(trial)
        except optuna.TrialPruned:
            self.tell(trial, state=TrialState.PRUNED)
        except ConfigError as exc:  # this trial's combination is invalid: it fails, the sweep goes on
            self.log(f"trial {trial.number} failed: {exc}")
            self.tell(trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # a report or attr after another worker failed it
            if self.storage.get_trial(trial._trial_id).state != TrialState.FAIL:
                raise
            self._failed_elsewhere(trial)
        except BaseException as exc:
            if is_storage_lost(exc):
                raise  # nothing can be told now; the trial goes stale and is retried once the server is back
            self.tell(trial, state=TrialState.FAIL)
            raise
        else:
            self.tell(trial, value)  # NaN (a diverged run) is recorded as FAIL


def run_study(
    config: Mapping[str, Any],
    space: Mapping[str, ParamSpec],
    settings: SweepSettings,
    job: TrialJob,
    *,
    log: Log | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> SweepResult:
    """Run (or join, or resume) a study until ``settings.trials`` trials are done or the budget is spent.

    Done means exactly ``settings.trials`` trials COMPLETE or PRUNED, all workers together, and none
    RUNNING: a dead worker's trial is failed once its heartbeat is older than the grace period and its
    retry runs before the sweep reports done (see :class:`_Worker` for how claims keep the count exact).
    :func:`cosanneal.jobs.sweep.run_sweep` checks the config and the space, then runs this with the Trainer.

    Args:
        config: the base config as a mapping, already checked; every trial applies its values to it.
        space: the parsed search space (:func:`load_space`), already checked against ``config``.
        settings: the study, storage, pruner, budget.
        job: builds and runs one trial's training from its config (:data:`TrialJob`).
        log: where one-line progress messages go (default: ``print``).
        pruner: an Optuna pruner to use instead of ``settings.pruner``.
        sampler: an Optuna sampler to use instead of TPE (e.g. ``GridSampler`` for a grid).

    Raises:
        ConfigError: a bad storage URL.
        StorageLostError: the database server went away mid-sweep (run the worker again once it is back).
    """
    say: Log = log or print
    base = dict(config)
    storage = _storage(settings)
    try:
        study = open_study(settings, pruner=pruner, sampler=sampler, storage=storage)
        objective = _Objective(base, dict(space), settings, job, say)
        stopped_by = _Worker(study, storage, objective, settings, say).run()
        return _result(study, settings, stopped_by, space)
    except Exception as exc:
        if not is_storage_lost(exc):
            raise
        reason = _lost_reason(exc)
        raise StorageLostError(
            f"--storage: lost the connection to {_shown(settings.url)} mid-sweep ({reason}); the trials told "
            "so far are kept and a trial in flight keeps its checkpoints: restart this worker once the server "
            "is back (the unfinished trial is retried from its last checkpoint)"
        ) from None


def _lost_reason(exc: BaseException) -> str:
    """The driver's own words for a lost connection, on one line."""
    current: BaseException | None = exc
    while current is not None:
        orig = getattr(current, "orig", None)
        if orig is not None:
            return " ".join(str(orig).split())[:200]
        current = current.__cause__ or current.__context__
    return type(exc).__name__


def _result(
    study: optuna.Study, settings: SweepSettings, stopped_by: str, space: Mapping[str, ParamSpec]
) -> SweepResult:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    params = (
        {} if best is None else {k: space[k].value(v) if k in space else v for k, v in best.params.items()}
    )
    return SweepResult(
        study=settings.study,
        storage=_shown(settings.url).strip("'"),
        complete=len(complete),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL and not _is_surplus(t) for t in trials),
        best_value=best.value if best is not None else None,
        best_params=params,
        best_trial=best.number if best is not None else None,
        steps=int(sum(t.user_attrs.get("steps", 0) for t in trials)),
        seconds=float(sum(t.user_attrs.get("seconds", 0.0) for t in trials)),
        stopped_by=stopped_by,
        surplus=sum(_is_surplus(t) for t in trials),
    )


# ---- --show ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StudySummary:
    """The best trials, state counts and parameter importances of a study."""

    study: str
    direction: Direction
    best: list[FrozenTrial]
    states: dict[str, int]
    importances: dict[str, float]
    importance_note: str
    steps: int
    seconds: float


def summarize_study(storage: str, study_name: str, *, top: int = 10) -> StudySummary:
    """Load a study and summarise it (importances by fANOVA; needs two or more complete trials).

    Raises:
        ConfigError: no such study in that storage (the message lists the studies there), or a storage URL
            that is malformed or cannot be reached (see :func:`open_storage`).
    """
    rdb = open_storage(storage)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(rdb)]
    if study_name not in names:
        raise ConfigError(f"--study: no study {study_name!r} in {storage}; have {', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=study_name, storage=rdb)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    direction: Direction = (
        "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
    )
    complete.sort(key=lambda t: float(t.value or 0.0), reverse=direction == "maximize")
    states: dict[str, int] = {}
    for t in trials:
        state = "SURPLUS" if _is_surplus(t) else t.state.name  # claims given back unrun are not failures
        states[state] = states.get(state, 0) + 1
    importances: dict[str, float] = {}
    note = ""
    varied = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
    if len(complete) < 2 or not varied:
        note = "importances need 2+ complete trials with varied parameters"
    else:
        try:
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=sorted(varied)
            )
        except (ImportError, RuntimeError, ValueError) as exc:
            note = f"importances unavailable: {exc}"
    return StudySummary(
        study=study_name,
        direction=direction,
        best=complete[:top],
        states=states,
        importances=dict(importances),
        importance_note=note,
        steps=int(sum(t.user_attrs.get("steps", 0) for t in trials)),
        seconds=float(sum(t.user_attrs.get("seconds", 0.0) for t in trials)),
    )


def plot_study(storage: str, study_name: str, path: str | Path) -> None:
    """Write a PNG of a study (atomically): objective per trial, cycle-end values, importances.

    Pruned trials are drawn at their last report; the middle panel shows every trial's cycle-end values
    (the pruning rungs).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from cosanneal.io import atomic_save

    summary = summarize_study(storage, study_name, top=1)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    fig = Figure(figsize=(15.0, 4.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_hist, ax_rungs, ax_imp = fig.subplots(1, 3)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    ax_hist.scatter(
        [t.number for t in done], [t.value for t in done], color="tab:blue", label="complete", s=18
    )
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    ax_hist.scatter(
        [t.number for t in pruned],
        [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
        color="tab:red", marker="x", label="pruned (last cycle end)", s=18,
    )  # fmt: skip
    if done:
        pick = min if summary.direction == "minimize" else max
        best, xs, ys = None, [], []
        for t in sorted(done, key=lambda t: t.number):
            best = float(t.value) if best is None else pick(best, float(t.value))  # type: ignore[arg-type]
            xs.append(t.number)
            ys.append(best)
        ax_hist.step(xs, ys, where="post", color="black", lw=1.0, label="best so far")
    ax_hist.set(xlabel="trial", ylabel="objective", title=f"{study_name}: trials")
    ax_hist.legend(fontsize="small")
    for t in trials:
        if t.intermediate_values:
            steps = sorted(t.intermediate_values)
            color = "tab:red" if t.state == TrialState.PRUNED else "tab:blue"
            ax_rungs.plot(steps, [t.intermediate_values[s] for s in steps], marker="o", ms=3, lw=0.8,
                          color=color, alpha=0.6)  # fmt: skip
    for ax in (ax_hist, ax_rungs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rungs.set(xlabel="cycle index (restart rung)", ylabel="reported value", title="cycle-end values")
    names = sorted(summary.importances, key=lambda k: summary.importances[k])
    ax_imp.barh(names, [summary.importances[k] for k in names], color="tab:green")
    ax_imp.set(xlabel="importance (fANOVA)", title="parameter importances")
    if not names:
        ax_imp.text(0.5, 0.5, summary.importance_note or "none", ha="center", va="center",
                    transform=ax_imp.transAxes, fontsize="small")  # fmt: skip
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
