"""Weights & Biases sink: a run's scalars, events, config and LR plot in one W&B run.

:class:`WandbSink` is a run-store :class:`~cosanneal.runtime.runstore.Sink`: each flushed batch becomes
one ``run.log`` call per optimizer update, on the store's writer thread, so W&B adds no work to the
training loop (``wandb`` itself sends in the background; one call costs about a millisecond). What goes
where:

==========================  ======================================================================
W&B                         from
==========================  ======================================================================
run config                  ``config`` (the trainer passes ``{"config": <config dict>, "schedule":
                            <schedule dict>, "schedule_fingerprint": ...}``), plus ``cosanneal``:
                            ``{"version", "run_dir"}``
history ``update``          the run-store step (the optimizer update index): the x-axis of every
                            other key (``define_metric("*", step_metric="update")``)
history ``lr/group_<i>``    scalar ``lr`` of group ``i`` (any grouped scalar: ``<name>/group_<i>``)
history ``loss``, ...       ungrouped scalars under their run-store names (``lr_expected/group_<i>``,
                            ``loss``, ``val_loss``, ``val_acc``, ``grad_norm``, ``cycle``, ...)
history ``events/<kind>``   running count of events of that kind at the event's update
                            (``events/restart``, ``events/resumed``, ``events/checkpoint_saved``, ...)
history ``events``          a ``wandb.Table`` of every event of the run (columns ``update``,
                            ``kind``, ``wall``, ``payload`` as JSON), logged at close
history ``lr_loss``         a ``wandb.Image`` of the LR (used and expected) and loss curves, drawn at
                            close from the whole run (not when the run was preempted)
run files                   ``report.html`` from ``run_dir`` when there is one
==========================  ======================================================================

Steps: the W&B step (``_step``) is W&B's own row counter; the update number is the key ``update`` that
every chart uses as its x-axis. W&B drops a row whose step is lower than one already logged, so a run
resumed from a checkpoint older than its last logged update (after a kill) would lose the updates it
trains again if the update number were the W&B step. As a custom step metric they are logged again: the
run's history then holds those updates twice (equal values for an exact resume), and the later row is
the one that counts, as in the run store.

Resume: with ``run_dir``, the W&B run id is kept in ``run_dir/wandb_run_id`` and a resumed job reopens
that run (``wandb.init(id=..., resume="allow")``), so a preempted and resumed job is one W&B run. W&B
cannot resume a run offline (nor one its server does not know): every offline session is a new
``offline-run-*`` directory with the same id, and ``wandb sync`` of one replaces what an earlier one sent.
So when the W&B run does not hold the earlier sessions' history, the sink logs that history again from
the run store when the run resumes (:meth:`WandbSink.rewind`), and the newest ``offline-run-*``
directory holds the whole run: sync that one.

On :meth:`WandbSink.close` the run finishes with exit code 0, 1 when a ``run_failed`` event was seen, or
the ``preempted`` event's exit code (after ``run.mark_preempting()``). A W&B failure never stops
training: it is reported as a :class:`WandbSinkWarning` and the sink goes on (after
:data:`MAX_FAILURES` failures in a row it stops calling W&B).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cosanneal.errors import CosannealError
from cosanneal.runtime.runstore import EventRow, ScalarRow

__all__ = [
    "MAX_FAILURES",
    "MODES",
    "RUN_ID_FILE",
    "STEP_METRIC",
    "WandbMissingError",
    "WandbSink",
    "WandbSinkWarning",
    "history_rows",
    "metric_key",
]

#: File in the run directory that holds the W&B run id (what a resumed job reopens).
RUN_ID_FILE = "wandb_run_id"
#: The history key holding the update number, the x-axis of every other key.
STEP_METRIC = "update"
#: Consecutive failed W&B calls after which the sink stops calling W&B.
MAX_FAILURES = 3
#: The values of ``mode`` (``None``: ``WANDB_MODE``, else online).
MODES = ("online", "offline", "disabled")


class WandbSinkWarning(UserWarning):
    """A W&B call failed; training goes on, the W&B run may be incomplete."""


class WandbMissingError(CosannealError, ImportError):
    """The ``wandb`` package is not installed."""


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (pydantic's, W&B's settings errors, span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _import_wandb() -> Any:
    try:
        import wandb  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise WandbMissingError("WandbSink needs wandb: pip install 'cosanneal[wandb]'") from exc
    return wandb


def metric_key(name: str, group: int | None = None) -> str:
    """The W&B history key of a run-store scalar: ``name``, or ``name/group_<i>`` for a param group.

    Example:
        >>> metric_key("lr", 0), metric_key("loss"), metric_key("val_acc")
        ('lr/group_0', 'loss', 'val_acc')
    """
    return name if group is None else f"{name}/group_{group}"


def history_rows(
    scalars: Sequence[ScalarRow], events: Sequence[EventRow], counts: dict[str, int]
) -> list[dict[str, float]]:
    """One batch as W&B history rows: one row per update, in update order, each with its ``update``.

    Events add ``events/<kind>``, the running count of that kind (``counts`` is updated in place). A key
    logged twice at one update (a final evaluation repeated) keeps its last value.

    Example:
        >>> rows = [ScalarRow(0, "lr", 0, 0.1, 0.0), ScalarRow(0, "loss", None, 2.5, 0.0),
        ...         ScalarRow(1, "lr", 0, 0.05, 0.0), ScalarRow(2, "val_loss", None, 1.5, 0.0)]
        >>> history_rows(rows, [EventRow(1, "restart", {}, 0.0)], {"restart": 2})
        [{'update': 0, 'lr/group_0': 0.1, 'loss': 2.5}, {'update': 1, 'lr/group_0': 0.05, \
'events/restart': 3}, {'update': 2, 'val_loss': 1.5}]
    """
    by_step: dict[int, dict[str, float]] = {}
    for r in scalars:
        by_step.setdefault(r.step, {STEP_METRIC: r.step})[metric_key(r.name, r.group)] = r.value
    for ev in events:
        count = counts[ev.kind] = counts.get(ev.kind, 0) + 1
        by_step.setdefault(ev.step, {STEP_METRIC: ev.step})[f"events/{ev.kind}"] = count
    return [by_step[step] for step in sorted(by_step)]


def _store_rows(run: Any) -> tuple[list[ScalarRow], list[EventRow]]:
    """Every scalar (one per step and series, the last written) and every event of a run store."""
    scalars: list[ScalarRow] = []
    for name in run.scalar_names():
        for group in run.groups(name) or [None]:
            steps, values = run.scalar(name, group)
            scalars.extend(
                ScalarRow(int(s), name, group, float(v), 0.0) for s, v in zip(steps, values, strict=True)
            )
    scalars.sort(key=lambda r: r.step)
    events = [EventRow(int(e.pop("step")), str(e.pop("kind")), e, float(e.pop("wall"))) for e in run.events()]
    return scalars, events


class WandbSink:
    """Sends a run store's rows to one W&B run (see the module docs for the mapping and for resume).

    Args:
        project: W&B project (default: ``WANDB_PROJECT``, else W&B's default).
        entity: W&B entity, a user or team (default: ``WANDB_ENTITY``, else the API key's user).
        name: Display name of a new W&B run (default: the run directory's name).
        mode: ``"online"``, ``"offline"`` or ``"disabled"`` (default: ``WANDB_MODE``, else online).
        dir: Where W&B writes its files, under ``<dir>/wandb`` (default: ``run_dir``).
        tags: Tags of the W&B run.
        config: The run config; the trainer passes ``{"config": ..., "schedule": ...,
            "schedule_fingerprint": ...}``.
        run_dir: The cosanneal run directory: holds ``wandb_run_id`` (so a resumed job reuses its W&B
            run), the run store the history is replayed from, and ``report.html``.
        settings: Extra ``wandb.Settings`` fields (the sink sets ``console="off"``: the training log is
            not captured unless you set ``console``).

    Raises:
        WandbMissingError: ``wandb`` is not installed (``pip install 'cosanneal[wandb]'``).
        ValueError: ``mode`` is not one of :data:`MODES`, or ``settings`` are not valid W&B settings.
            Any other failure to open the W&B run is a :class:`WandbSinkWarning`, and training goes on.

    Example (needs ``wandb``; offline, so no account is needed):

    .. code-block:: python

        from cosanneal.runtime.runstore import RunStore
        from cosanneal.sinks.wandb import WandbSink

        sink = WandbSink(project="demo", mode="offline", run_dir="runs/demo")
        with RunStore("runs/demo", sinks=[sink]) as store:  # the sink closes with the store
            store.log_scalar(0, "lr", 0.1, group=0)        # history row {"update": 0, "lr/group_0": 0.1}
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        entity: str | None = None,
        name: str | None = None,
        mode: str | None = None,
        dir: str | os.PathLike[str] | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self._wandb = wandb = _import_wandb()
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        try:  # a bad setting is the caller's mistake, not W&B's: raise it
            wandb_settings = wandb.Settings(**{"console": "off", **(settings or {})})
        except Exception as exc:
            raise ValueError(f"settings: {_one_line(exc)}") from None
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.run_id: str | None = None
        self.resumed = False
        self._run: Any = None
        self._replay = False  # the W&B run lacks the earlier sessions' history: log it on rewind
        self._failures = 0
        self._counts: dict[str, int] = {}
        self._events: list[EventRow] = []
        self._last_update = 0
        self._status, self._exit_code = "finished", 0
        self._closed = False
        try:
            self._open_run(project, entity, name, mode, dir, tags, wandb_settings)
        except Exception as exc:
            self._run = None
            self._warn(
                f"could not open a W&B run ({type(exc).__name__}: {_one_line(exc)}); W&B logging is off"
            )
            return
        self._safe("log the config", lambda: self._log_config(config or {}))

    # ---- setup --------------------------------------------------------------------------------
    def _open_run(
        self,
        project: str | None,
        entity: str | None,
        name: str | None,
        mode: str | None,
        dir: str | os.PathLike[str] | None,
        tags: Sequence[str],
        settings: Any,
    ) -> None:
        """``wandb.init`` the run named in ``run_dir/wandb_run_id`` (``resume="allow"``), else a new one."""
        wandb = self._wandb
        previous = self._previous_id()
        root = dir if dir is not None else self.run_dir
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project,
            entity=entity,
            name=name or (self.run_dir.name if self.run_dir is not None else None),
            mode=mode,
            dir=None if root is None else str(root),
            tags=list(tags) or None,
            id=previous,
            resume="allow" if previous is not None else None,
            reinit="create_new",  # never finish, nor log into, a run of the user's own
            settings=settings,
        )
        self._run = run
        if run.disabled:
            return
        self.run_id = str(run.id)
        self.resumed = previous is not None
        self._replay = not run.resumed
        if run.resumed:  # the server's run: its counts go on (rewind recounts from the run store)
            self._counts = {
                k[len("events/") :]: int(v)
                for k, v in dict(run.summary).items()
                if k.startswith("events/") and isinstance(v, (int, float))
            }
        run.define_metric(STEP_METRIC)
        run.define_metric("*", step_metric=STEP_METRIC)
        if self.run_dir is not None and previous != self.run_id:
            from cosanneal.io import atomic_write_text

            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / RUN_ID_FILE, self.run_id + "\n")

    def _previous_id(self) -> str | None:
        if self.run_dir is None or not (self.run_dir / RUN_ID_FILE).is_file():
            return None
        return (self.run_dir / RUN_ID_FILE).read_text(encoding="utf-8").strip() or None

    def _log_config(self, config: Mapping[str, Any]) -> None:
        from cosanneal import __version__

        extra: dict[str, Any] = {"version": __version__}
        if self.run_dir is not None:
            extra["run_dir"] = str(self.run_dir.resolve())
        # a resumed job may change a key (max_steps, say): the run config shows the latest
        self._run.config.update({**config, "cosanneal": extra}, allow_val_change=True)

    # ---- failure policy -----------------------------------------------------------------------
    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(f"cosanneal: W&B sink: {message}", WandbSinkWarning, stacklevel=3)

    def _safe(self, what: str, call: Callable[[], None]) -> bool:
        """Run one W&B call; on failure warn and go on (give up after MAX_FAILURES in a row)."""
        if self._run is None:
            return False
        try:
            call()
        except Exception as exc:
            self._failures += 1
            self._warn(f"could not {what} ({type(exc).__name__}: {_one_line(exc)})")
            if self._failures >= MAX_FAILURES:
                self._run = None
                self._warn(f"{MAX_FAILURES} failures in a row; W&B logging is off for run {self.run_id}")
            return False
        self._failures = 0
        return True

    # ---- the Sink protocol --------------------------------------------------------------------
    def write(self, scalars: Sequence[ScalarRow], events: Sequence[EventRow]) -> None:
        """Log one batch: one history row per update (see :func:`history_rows`)."""
        for ev in events:
            self._events.append(ev)
            if ev.kind == "run_failed":
                self._status, self._exit_code = "failed", 1
            elif ev.kind == "preempted" and self._status != "failed":
                self._status, self._exit_code = "preempted", int(ev.payload.get("exit_code") or 143)
        if self._run is not None:
            self._log(history_rows(scalars, events, self._counts))

    def _log(self, rows: list[dict[str, float]]) -> None:
        if rows:
            self._last_update = max(self._last_update, int(rows[-1][STEP_METRIC]))
        run = self._run
        for row in rows:  # a row W&B refuses is skipped; MAX_FAILURES in a row turn the sink off
            if not self._safe("log history", functools.partial(run.log, row)) and self._run is None:
                return

    def flush(self) -> None:
        """Nothing to do: ``wandb`` sends logged rows in the background."""

    def rewind(self, step: int) -> None:
        """A resumed run trains again from update ``step``: recount events; replay history if needed.

        Called by :meth:`RunStore.discard_after` once it has dropped the rows past the checkpoint. The
        event counts restart from the run store's. When the W&B run does not hold the earlier sessions'
        history (offline mode, or a run the server did not know), that history is logged from the run
        store now, so this session's W&B run is the whole run.
        """
        if self._run is None or self.run_dir is None or not (self.run_dir / "run.db").is_file():
            return
        from cosanneal import runs

        run = runs.open(self.run_dir)
        try:
            scalars, events = _store_rows(run)
        finally:
            run.close()
        self._counts = {}
        if self._replay:
            self._replay = False
            self._log(history_rows(scalars, events, self._counts))
        else:
            history_rows([], events, self._counts)

    def close(self) -> None:
        """Log the events table and the LR plot, then finish the run; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._run is None:
            return
        with tempfile.TemporaryDirectory(prefix="cosanneal-wandb-") as tmp:
            self._safe("log the events and the plot", lambda: self._log_final(Path(tmp)))
            if self._status == "preempted":
                self._safe("mark the run preempted", self._run.mark_preempting)
            run = self._run
            self._safe("finish the run", lambda: run.finish(exit_code=self._exit_code))

    # ---- at close -----------------------------------------------------------------------------
    def _all_events(self) -> list[EventRow]:
        """Every event of the run: from ``run.db`` (all sessions) when there is one, else this session's."""
        if self.run_dir is not None and (self.run_dir / "run.db").is_file():
            from cosanneal import runs

            run = runs.open(self.run_dir)
            try:
                return _store_rows(run)[1]
            finally:
                run.close()
        return list(self._events)

    def _log_final(self, tmp: Path) -> None:
        wandb, run = self._wandb, self._run
        final: dict[str, Any] = {STEP_METRIC: self._last_update}
        events = self._all_events()
        if events:
            final["events"] = wandb.Table(
                columns=[STEP_METRIC, "kind", "wall", "payload"],
                data=[
                    [e.step, e.kind, e.wall, json.dumps(e.payload, sort_keys=True, default=str)]
                    for e in events
                ],
            )
        run_dir = self.run_dir
        if run_dir is not None and self._status != "preempted" and (run_dir / "run.db").is_file():
            from cosanneal.plotting import plot_run

            plot = tmp / "lr_loss.png"
            plot_run(run_dir, plot)
            final["lr_loss"] = wandb.Image(str(plot), caption="LR used and expected; train and val loss")
        if len(final) > 1:
            run.log(final)
        if run_dir is not None and (run_dir / "report.html").is_file():
            run.save(str(run_dir / "report.html"), base_path=str(run_dir), policy="now")

    def __repr__(self) -> str:
        state = "off" if self._run is None else ("closed" if self._closed else "open")
        return f"WandbSink(run_id={self.run_id!r}, {state})"
