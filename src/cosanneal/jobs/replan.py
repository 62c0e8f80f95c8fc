"""Replan a run: the request ``cosanneal replan`` leaves in a run directory, and how a job takes it.

``cosanneal replan RUN --total N ...`` (or :func:`request_replan`) checks the new plan against the run's
schedule now and writes ``RUN/replan.json`` atomically: a :class:`ReplanRequest` with an id. The job takes
it at a step boundary (:meth:`cosanneal.jobs.loop.Loop.check_replan`: in one process within
:data:`POLL_SECONDS` and right after each evaluation; every :data:`POLL_EVERY` updates under torchrun,
rank 0 reading and broadcasting it), or when it resumes:

1. it builds the new plan at the switch ``d`` = its update count
   (:func:`cosanneal.schedules.replan.replan`), which refuses an LR jump above ``1e-12`` relative;
2. it follows the new schedule and the new total from update ``d`` on, and records the event
   ``schedule_replanned`` (step ``d``: mode, totals, both fingerprints, the new schedule);
3. every checkpoint from then on names the request among its trackers (``"replans"``).

A job killed anywhere in between resumes right: a checkpoint that names the request has the new plan
in its scheduler state, so the request is spent; one that does not (saved before the switch) resumes
on the old plan and takes the request again at its own update count (the events after it are
discarded with the rest of the lost session, so the run records one switch). The request file is
removed when the run finishes. A request the job cannot take (the run moved on so the mode no
longer fits, or its schedule changed since) is renamed ``replan.refused.json`` and recorded as
``replan_refused``; training goes on with the plan it had.

Example:
    >>> from cosanneal import Cosine
    >>> req = ReplanRequest(total=300, mode="cooldown", cooldown="0.2", shape="1-sqrt")
    >>> r = req.plan(Cosine(0.1, cycle_steps=200), at=100)
    >>> r.total, r.after.schedules[1].decay_steps, r(100) == Cosine(0.1, cycle_steps=200)(100)
    (300, 60, True)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cosanneal.errors import ConfigError
from cosanneal.schedules import Schedule
from cosanneal.schedules.replan import MODES, SHAPES, ReplanError, Replanned, replan

__all__ = [
    "POLL_EVERY",
    "POLL_SECONDS",
    "REFUSED",
    "REQUEST",
    "ReplanRequest",
    "RunPlan",
    "read_request",
    "remove_request",
    "replan_event",
    "request_replan",
    "check_shape",
    "run_plan",
    "take",
    "write_request",
]

#: The request file in a run directory.
REQUEST = "replan.json"
#: Where a request the job could not take goes.
REFUSED = "replan.refused.json"
#: Under torchrun, the updates between two looks for a request (one broadcast each).
POLL_EVERY = 16
#: One process: the most seconds between two looks for a request (and one right after each evaluation).
POLL_SECONDS = 0.25


def check_shape(shape: Any) -> None:
    """Raise :class:`ConfigError` naming ``--shape`` unless ``shape`` is a cooldown shape.

    Example:
        >>> check_shape("1-sqrt")
        >>> check_shape("square")
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: --shape must be one of linear, cosine, 1-sqrt, got 'square'
    """
    if shape not in SHAPES:
        raise ConfigError(f"--shape must be one of {', '.join(SHAPES)}, got {shape!r}")


def _cooldown_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    try:
        number = float(text.removesuffix("dur").removesuffix("st"))
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(
            f"--cooldown: {value!r} is not a length; pass updates (200) or a fraction of the new total (0.2)"
        )
    return text


@dataclasses.dataclass(frozen=True)
class ReplanRequest:
    """What ``cosanneal replan`` asks of a run.

    Attributes:
        total: the run's new length in updates.
        mode: ``stretch``, ``cycles`` or ``cooldown``.
        cycles: how many cycles ``cycles`` adds (``None``: as many as the schedule's own rule fits).
        cooldown: the cooldown's length: updates (``"200"``) or a fraction of ``total`` below 1
            (``"0.2"``, ``"0.2dur"``); ``None``: from the switch to the end.
        shape: the cooldown's shape, ``linear``, ``cosine`` or ``1-sqrt``.
        floor: the cooldown's final LR (``None``: the old plan's final LR).
        expect: the fingerprint of the schedule the request was checked against (``None``: any).
        id: the request's id (a fresh one by default).
    """

    total: int
    mode: str = "stretch"
    cycles: int | None = None
    cooldown: str | None = None
    shape: str = "linear"
    floor: float | None = None
    expect: str | None = None
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        total = self.total
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ConfigError(f"--total must be a whole number of updates >= 1, got {total!r}")
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_shape(self.shape)
        if (
            not isinstance(self.id, str)
            or not self.id
            or (self.expect is not None and not isinstance(self.expect, str))
        ):
            raise ConfigError(
                f"{REQUEST}: id and expect must be strings; write the request with `cosanneal replan`"
            )
        object.__setattr__(self, "cooldown", _cooldown_text(self.cooldown))
        if self.cooldown is not None and self.mode != "cooldown":
            raise ConfigError(f"--cooldown is the length of --mode cooldown, not of --mode {self.mode}")
        if self.cycles is not None and self.mode != "cycles":
            raise ConfigError(f"--cycles is for --mode cycles, not --mode {self.mode}")
        floor = self.floor
        if floor is not None and (
            isinstance(floor, bool)
            or not isinstance(floor, (int, float))
            or not math.isfinite(floor)
            or floor < 0
        ):
            raise ConfigError(f"--floor must be a finite LR >= 0, got {floor!r}")

    def cooldown_steps(self) -> int | None:
        """The cooldown's length in updates (a fraction below 1 is of :attr:`total`, rounded).

        Example:
            >>> ReplanRequest(1000, "cooldown", cooldown="0.2").cooldown_steps(), ReplanRequest(1000, "cooldown", cooldown="150").cooldown_steps()
            (200, 150)
        """
        if self.cooldown is None:
            return None
        value = float(self.cooldown.removesuffix("dur").removesuffix("st"))
        if self.cooldown.endswith("dur") or value < 1:
            return max(1, round(value * self.total))
        if not value.is_integer():
            raise ConfigError(f"--cooldown: {self.cooldown!r} updates is not a whole number")
        return int(value)

    def plan(self, schedule: Schedule, at: int) -> Replanned:
        """The run's schedule replanned at update ``at`` (:func:`cosanneal.schedules.replan.replan`).

        Raises:
            ReplanError: the request cannot continue ``schedule`` at ``at`` (one line with the fix).
        """
        return replan(
            schedule,
            at=at,
            total=self.total,
            mode=self.mode,
            cycles=self.cycles,
            cooldown_steps=self.cooldown_steps(),
            shape=self.shape,
            floor=self.floor,
        )

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ReplanRequest:
        """The request a file holds.

        Raises:
            ConfigError: not a request (the message names the file's problem).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{REQUEST}: not a replan request (a JSON object), got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{REQUEST}: unknown field {unknown[0]!r}; write it with `cosanneal replan`")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ConfigError(f"{REQUEST}: {exc}; write it with `cosanneal replan`") from None


def write_request(run_dir: str | os.PathLike[str], request: ReplanRequest) -> Path:
    """Write ``request`` into the run directory atomically (the latest request wins); returns its path."""
    from cosanneal.io import atomic_write_json

    path = Path(run_dir) / REQUEST
    atomic_write_json(path, request.to_dict())
    return path


def read_request(run_dir: str | os.PathLike[str]) -> ReplanRequest | None:
    """The request waiting in the run directory, or ``None``.

    Raises:
        ConfigError: the file is there but is not a request.
    """
    path = Path(run_dir) / REQUEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc.msg}); write it with `cosanneal replan`") from None
    return ReplanRequest.from_dict(data)


def remove_request(run_dir: str | os.PathLike[str], request_id: str, *, refused: bool = False) -> None:
    """Remove (or set aside as refused) the request file if it still holds ``request_id``."""
    from cosanneal.io import fsync_dir

    path = Path(run_dir) / REQUEST
    try:
        current = read_request(run_dir)
    except ConfigError:
        return
    if current is None or current.id != request_id:
        return  # a newer request was written meanwhile: it waits for its turn
    if refused:
        os.replace(path, Path(run_dir) / REFUSED)
    else:
        path.unlink(missing_ok=True)
    fsync_dir(run_dir)


def replan_event(
    before: Schedule, after: Replanned, request: ReplanRequest, total_before: int
) -> dict[str, Any]:
    """The ``schedule_replanned`` event's payload (its step is the switch).

    Example:
        >>> from cosanneal import Cosine
        >>> s = Cosine(0.1, cycle_steps=100)
        >>> req = ReplanRequest(200, "stretch", id="abc")
        >>> e = replan_event(s, req.plan(s, 40), req, 100)
        >>> e["fingerprint_before"] == s.fingerprint(), e["total_steps_before"], e["total_steps"], e["jump"]
        (True, 100, 200, 0.0)
    """
    at = after.at
    old, new = float(before(at)), float(after(at))
    return {
        "request": request.id,
        "mode": request.mode,
        "total_steps_before": total_before,
        "total_steps": after.total,
        "fingerprint_before": before.fingerprint(),
        "fingerprint_after": after.fingerprint(),
        "lr_before": old,
        "lr_after": new,
        "jump": 0.0 if old == new else abs(new - old) / abs(old),
        "schedule": after.to_dict(),
    }


def request_replan(
    run_dir: str | os.PathLike[str],
    request: ReplanRequest,
    *,
    schedule: Schedule,
    at: Sequence[int],
    write: bool = True,
) -> Replanned:
    """Check ``request`` against the run's ``schedule`` at each switch in ``at``, then write it.

    Args:
        run_dir: the run directory.
        request: the request (its ``expect`` is set to ``schedule``'s fingerprint when unset).
        schedule: the schedule the run follows now (config plus recorded changes).
        at: the updates the job may switch at (the next update of a running job; the newest checkpoint,
            where a stopped one resumes); every one must take the request.
        write: ``False`` checks without writing (a dry run).

    Returns:
        The new plan at the last switch in ``at``.

    Raises:
        ReplanError: the new plan would jump the LR or cannot continue the schedule at one of ``at``
            (nothing is written).
    """
    planned = [request.plan(schedule, d) for d in sorted(set(at))]
    if write:
        if request.expect is None:
            request = dataclasses.replace(request, expect=schedule.fingerprint())
        write_request(run_dir, request)
    return planned[-1]


def take(request: ReplanRequest, schedule: Schedule, at: int) -> Replanned | str:
    """The plan the job at update ``at`` on ``schedule`` switches to, or why it cannot take ``request``."""
    if request.expect is not None and request.expect != schedule.fingerprint():
        return (
            f"the request was checked against schedule {request.expect}, the run now follows "
            f"{schedule.fingerprint()}; run `cosanneal replan` again"
        )
    try:
        return request.plan(schedule, at)
    except (ReplanError, ConfigError) as exc:
        return str(exc)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Where a run stands, as its run store records it (what ``cosanneal replan`` checks against).

    Attributes:
        schedule: the schedule it follows now: the stored one with its recorded changes applied.
        total: its length in updates now.
        next_update: the update it trains next (its last logged update + 1).
        checkpoint: the update count of its newest checkpoint (where a stopped run resumes), or ``None``.
        finished: whether it finished.
        steps_per_epoch: updates per epoch (for the lint), when recorded.
    """

    schedule: Schedule
    total: int
    next_update: int
    checkpoint: int | None
    finished: bool
    steps_per_epoch: float | None = None

    @property
    def switches(self) -> list[int]:
        """The updates a replan may take effect at: where a stopped run resumes, and the next update."""
        return sorted({self.next_update, *([self.checkpoint] if self.checkpoint is not None else [])})


def run_plan(run_dir: str | os.PathLike[str]) -> RunPlan:
    """The run's schedule, length and position from its run store (:class:`RunPlan`).

    Raises:
        ConfigError: not a cosanneal run directory, or one without a stored schedule.
    """
    from cosanneal import runs
    from cosanneal.schedules import from_dict
    from cosanneal.schedules.replan import CHANGE_EVENTS, apply_changes

    path = Path(run_dir)
    if not (path / "run.db").exists():
        raise ConfigError(f"RUN: {path} is not a run directory (no run.db); pass the directory `train` wrote")
    with runs.open(path) as run:
        params = run.params
        stored = params.get("schedule")
        if not isinstance(stored, Mapping) or "total_steps" not in params:
            raise ConfigError(
                f"RUN: {path} was not written by `cosanneal train` (no stored schedule and length), so no job "
                "will take a request; in your own loop (or a Lightning / HF run) build the new plan with "
                "cosanneal.schedules.replan.replan() and give it to the Scheduler"
            )
        events = run.events()
        lr_steps: Any = run.scalar("lr", 0)[0] if "lr" in run.scalar_names() else []
    schedule = apply_changes(from_dict(stored), [e for e in events if e.get("kind") in CHANGE_EVENTS])
    total = int(params.get("total_steps") or 0)
    for event in events:
        if event.get("kind") in CHANGE_EVENTS and event.get("total_steps") is not None:
            total = int(event["total_steps"])
    saved = [int(e["step"]) for e in events if e.get("kind") == "checkpoint_saved"]
    spe = params.get("steps_per_epoch")
    return RunPlan(
        schedule=schedule,
        total=total,
        next_update=int(lr_steps[-1]) + 1 if len(lr_steps) else 0,
        checkpoint=max(saved) if saved else None,
        finished=any(e.get("kind") == "run_finished" for e in events),
        steps_per_epoch=float(spe) if isinstance(spe, (int, float)) and not isinstance(spe, bool) else None,
    )
