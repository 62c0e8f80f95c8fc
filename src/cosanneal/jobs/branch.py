r"""Cooldown branches: train a cooldown from any checkpoint of a run into its own run directory.

Hägele et al. (2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations")
show that a constant (or warmup-stable-decay) LR followed by a short cooldown matches a cosine
schedule tuned to the same length, so one long stable run with cooldowns branched from its
checkpoints serves many budgets: the stable phase is trained once.

``cosanneal branch RUN --at d --cooldown f`` (or :func:`branch`) makes, for each ``d``:

1. the branch directory (default ``<RUN>-branch-<d>`` beside the parent, or under ``out``), built
   in a hidden temporary sibling and renamed into place (it exists complete or not at all):
   the parent's committed checkpoint ``checkpoints/step-<d>`` (its manifest verified before and
   after the copy), the parent's run store up to update ``d`` (params, the LR and loss rows of
   updates ``0 .. d - 1``, the events up to ``d``; what a run stopped at ``d`` holds), the param
   ``branch`` and ``branch.json`` naming the parent, and a replan request
   (:class:`~cosanneal.jobs.replan.ReplanRequest`, mode ``cooldown``, total ``d + L``);
2. the parent's training config (its run store's ``params["config"]``) trained on the branch
   directory by :class:`~cosanneal.jobs.trainer.Trainer`: it resumes from the copied checkpoint and
   takes the request at update ``d``, so the branch's LR is the parent's up to ``d`` and then

   .. math:: \eta(t) = \eta_{\min} + (\eta(d) - \eta_{\min})\, g\!\left(\frac{t - d}{L}\right), \quad d \le t \le d + L,

   with ``g(x) = 1 - x`` (linear), ``(1 + cos(pi x)) / 2`` (cosine) or ``1 - sqrt(x)`` (1-sqrt):
   continuous at ``d`` (the switch is the recorded event ``schedule_replanned``), so ``verify`` and
   ``replan``'s :func:`~cosanneal.jobs.replan.run_plan` treat a branch as a replanned run.

The cooldown length ``L``: an integer is updates; a fraction ``f < 1`` is the cooldown's share of the
branch's own total ``T = d + L``, so ``d = (1 - f) T`` and ``L = round(f d / (1 - f))``.

A finished branch with the same settings is reused; an interrupted one resumes from its newest
checkpoint when the command runs again; a directory holding other settings is refused.

Example:
    >>> cooldown_steps(40, 0.2), cooldown_steps(80, "0.2"), cooldown_steps(80, 30)
    (10, 20, 30)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cosanneal.analysis.branches import BRANCH_FILE, REGISTRY_FILE, final_metric, read_branch
from cosanneal.errors import ConfigError, ScheduleError
from cosanneal.jobs.replan import ReplanRequest, check_shape, write_request

if TYPE_CHECKING:
    from cosanneal.jobs.trainer import TrainResult
    from cosanneal.schedules import Schedule

__all__ = ["Branch", "BranchResult", "branch", "checkpoint_steps", "cooldown_steps", "plan_branches"]

Log = Callable[[str], None]


def cooldown_steps(at: int, cooldown: int | float | str) -> int:
    """The cooldown's length ``L`` in updates for a branch at update ``at``.

    An integer (``30``, ``"30"``) is updates; a fraction ``f < 1`` is the cooldown's share of the
    branch's own total ``T = at + L``: ``L = round(f * at / (1 - f))``.

    Raises:
        ConfigError: not a positive length, or a fraction that rounds to no update.

    Example:
        >>> cooldown_steps(40, 0.2), cooldown_steps(100, "0.5"), cooldown_steps(100, "25")
        (10, 100, 25)
    """
    text = str(cooldown).strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if isinstance(cooldown, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"--cooldown: {cooldown!r} is not a length; pass updates (200) or the cooldown's fraction of "
            "the branch (0.2)"
        )
    if value >= 1:
        if not value.is_integer():
            raise ConfigError(
                f"--cooldown: {cooldown!r} is neither updates (a whole number) nor a fraction below 1"
            )
        return int(value)
    length = round(value * at / (1.0 - value))
    if length < 1:
        raise ConfigError(
            f"--cooldown: {text} of a branch at update {at} is {value * at / (1.0 - value):.3g} updates; "
            "pass a larger fraction or a number of updates"
        )
    return length


@dataclasses.dataclass(frozen=True)
class Branch:
    """One planned branch (nothing written yet).

    Attributes:
        at: ``d``, the parent's checkpoint it starts from.
        cooldown: ``L`` in updates.
        total: ``T = d + L``.
        shape: the cooldown's shape.
        floor: the cooldown's final LR (``None``: the parent plan's final LR).
        run_dir: the branch's run directory.
        state: ``new`` (to build and train), ``resume`` (interrupted: train on) or ``finished``.
        lr_at: the parent's LR at ``d`` (where the cooldown starts).
        lr_end: the cooldown's final LR.
    """

    at: int
    cooldown: int
    total: int
    shape: str
    floor: float | None
    run_dir: Path
    state: str
    lr_at: float
    lr_end: float


@dataclasses.dataclass(frozen=True)
class BranchResult:
    """What :func:`branch` did for one branch.

    Attributes:
        branch: the plan.
        status: ``trained`` (built and trained, or resumed to the end), ``reused`` (finished before),
            ``planned`` (a dry run), or the trainer's status when it stopped early (``preempted``, ...).
        train: the trainer's result (``None`` when nothing was trained).
        val_loss: the branch's final ``val_loss`` (``None``: not recorded).
    """

    branch: Branch
    status: str
    train: TrainResult | None
    val_loss: float | None

    @property
    def run_dir(self) -> Path:
        """The branch's run directory."""
        return self.branch.run_dir

    @property
    def exit_code(self) -> int:
        """The trainer's exit code (0 when nothing was trained)."""
        return 0 if self.train is None else self.train.exit_code


# ---- reading the parent -------------------------------------------------------------------------
def _parent(run_dir: Path) -> tuple[dict[str, Any], bool]:
    from cosanneal import runs

    if not (run_dir / "run.db").is_file():
        raise ConfigError(
            f"RUN: {run_dir} is not a run directory (no run.db); pass the directory `cosanneal train` wrote"
        )
    with runs.open(run_dir) as run:
        params = run.params
        finished = bool(run.events("run_finished"))
    if not isinstance(params.get("config"), Mapping) or not isinstance(params.get("schedule"), Mapping):
        raise ConfigError(
            f"RUN: {run_dir} holds no training config and schedule; branch a run `cosanneal train` wrote"
        )
    return params, finished


def checkpoint_steps(run_dir: str | os.PathLike[str]) -> list[int]:
    """The update counts of the run's committed checkpoints (``checkpoints/step-*`` with a manifest).

    Example:
        >>> import tempfile
        >>> checkpoint_steps(tempfile.mkdtemp())
        []
    """
    from cosanneal.runtime.ckpt_format import step_of
    from cosanneal.runtime.manifest import MANIFEST_NAME

    root = Path(run_dir) / "checkpoints"
    try:
        names = [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return []
    steps = [(step_of(p.name), p) for p in names]
    return sorted(s for s, p in steps if s is not None and (p / MANIFEST_NAME).is_file())


def _checkpoint(run_dir: Path, at: int) -> Path:
    from cosanneal.runtime.ckpt_format import step_name

    return run_dir / "checkpoints" / step_name(at)


def _verified(directory: Path, at: int) -> str | None:
    from cosanneal.runtime import manifest
    from cosanneal.runtime.storage import LocalStorage

    return manifest.verify(LocalStorage(directory.parent), str(directory.resolve()), at)


def _checkpoint_schedule(directory: Path) -> Schedule | None:
    from cosanneal.runtime.ckpt_format import STATE_FILE
    from cosanneal.schedules import from_dict

    try:
        state = json.loads((directory / STATE_FILE).read_text())
        return from_dict(state["scheduler"]["schedule"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _listing(steps: Sequence[int]) -> str:
    if len(steps) <= 12:
        return ", ".join(map(str, steps))
    return ", ".join(map(str, steps[:6])) + ", ..., " + ", ".join(map(str, steps[-3:]))


def _parse_at(at: int | str | Sequence[int | str]) -> list[int]:
    items: list[Any] = (
        [p for p in at.split(",") if p.strip()]
        if isinstance(at, str)
        else list(at)
        if isinstance(at, Sequence)
        else [at]
    )
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit():
            raise ConfigError(
                f"--at: {item!r} is not an update count; pass the updates of checkpoints, e.g. --at 40,80"
            )
        out.append(int(text))
    if not out:
        raise ConfigError("--at: give the update of at least one checkpoint, e.g. --at 40,80")
    return sorted(set(out))


def _same(info: Any, parent: Path, fingerprint: Any, b: Branch) -> bool:
    return bool(
        info.parent == parent.resolve()
        and info.parent_fingerprint == fingerprint
        and (info.at, info.cooldown, info.shape, info.floor) == (b.at, b.cooldown, b.shape, b.floor)
    )


def _existing_state(run_dir: Path) -> str:
    from cosanneal import runs

    if not (run_dir / "run.db").exists():
        return "resume"
    with runs.open(run_dir) as run:
        return "finished" if run.events("run_finished") else "resume"


def plan_branches(
    run_dir: str | os.PathLike[str],
    *,
    at: int | str | Sequence[int | str],
    cooldown: int | float | str,
    shape: str = "linear",
    floor: float | None = None,
    out: str | os.PathLike[str] | None = None,
) -> list[Branch]:
    """Check every branch of ``run_dir`` at ``at`` and say where it goes; writes nothing.

    Args:
        run_dir: the parent run directory.
        at: the parent's checkpoints to branch from (update counts; ``"40,80"`` or a list).
        cooldown: updates, or the cooldown's fraction of each branch (:func:`cooldown_steps`).
        shape: ``linear``, ``cosine`` or ``1-sqrt``.
        floor: the cooldown's final LR (``None``: the parent plan's final LR).
        out: the directory the branches go under (default: beside the parent).

    Returns:
        The branches, by ``at``.

    Raises:
        ConfigError: not a run directory, an update without a (verified) checkpoint (the message
            lists those that have one), a cooldown that does not fit the schedule there, or a
            branch directory that holds something else (one line naming the option and the fix).
    """
    parent = Path(run_dir)
    params, _ = _parent(parent)
    check_shape(shape)  # before the checkpoints are read: a bad --shape is named first
    steps = _parse_at(at)
    have = checkpoint_steps(parent)
    if not have:
        raise ConfigError(
            f"--at: {parent} has no committed checkpoint to branch from; train it with checkpoint.every_steps set"
        )
    missing = [s for s in steps if s not in have]
    if missing:
        raise ConfigError(
            f"--at: update {missing[0]} has no checkpoint in {parent / 'checkpoints'}; pick one of {_listing(have)}"
        )
    root = parent.parent if out is None else Path(out)
    fingerprint = params.get("schedule_fingerprint")
    planned: list[Branch] = []
    for d in steps:
        ckpt = _checkpoint(parent, d)
        problem = _verified(ckpt, d)
        if problem is not None:
            raise ConfigError(
                f"--at: the checkpoint at update {d} does not verify ({problem}); pick another of {_listing(have)}"
            )
        schedule = _checkpoint_schedule(ckpt)
        if schedule is None:
            raise ConfigError(f"--at: the checkpoint at update {d} holds no schedule state; pick another")
        length = cooldown_steps(d, cooldown)
        request = ReplanRequest(
            total=d + length, mode="cooldown", cooldown=str(length), shape=shape, floor=floor
        )
        try:
            new = request.plan(schedule, d)
        except ScheduleError as exc:
            raise ConfigError(f"--at {d}: {exc}") from None
        target = root / f"{parent.name}-branch-{d}"
        b = Branch(
            d, length, d + length, shape, floor, target, "new", float(schedule(d)), float(new(d + length))
        )
        if target.exists():
            info = read_branch(target)
            if info is None:
                raise ConfigError(
                    f"--out: {target} exists and is not a branch; pass another --out or move it away"
                )
            if not _same(info, parent, fingerprint, b):
                raise ConfigError(
                    f"--out: {target} holds a branch at update {info.at} with a {info.cooldown}-update "
                    f"{info.shape} cooldown of {info.parent}; this one is {length} updates {shape} of "
                    f"{parent.resolve()}; pass another --out or move it away"
                )
            b = dataclasses.replace(b, state=_existing_state(target))
        planned.append(b)
    return planned


# ---- building a branch --------------------------------------------------------------------------
def _copy_store(parent: Path, target: Path, at: int, link: Mapping[str, Any]) -> None:
    """The parent's run store as it stood at update ``at``, plus the param ``branch``."""
    from cosanneal.runtime.runstore import RunStore
    from cosanneal.runtime.telemetry import STATE_EVENTS

    source = sqlite3.connect(f"file:{(parent / 'run.db').resolve()}?mode=ro", uri=True)
    dest = sqlite3.connect(target / "run.db")
    try:
        source.backup(dest)
        with dest:  # the parent's end is not the branch's: it finishes at its own total
            dest.execute(
                "DELETE FROM events WHERE step >= ? AND kind IN ('run_finished', 'early_stop')", (at,)
            )
    finally:
        source.close()
        dest.close()
    with RunStore(target) as store:
        store.discard_after(at, keep_events_at=STATE_EVENTS)
        store.log_params({"branch": dict(link)})


def _register(parent: Path, target: Path) -> None:
    """Add the branch to the parent's ``branches.json`` (skipped where the parent is read-only)."""
    from cosanneal.io import atomic_write_json

    path = parent / REGISTRY_FILE
    try:
        data = json.loads(path.read_text())
        entries = [e for e in data.get("branches", []) if isinstance(e, str)]
    except (OSError, ValueError, AttributeError):
        entries = []
    entry = os.path.relpath(target.resolve(), parent.resolve())
    if entry not in entries:
        with contextlib.suppress(OSError):
            atomic_write_json(path, {"branches": sorted([*entries, entry])})


def _build(parent: Path, params: Mapping[str, Any], b: Branch) -> None:
    """Make the branch directory complete in a hidden sibling, then rename it into place."""
    from cosanneal.io import atomic_write_json, fsync_dir

    source = _checkpoint(parent, b.at)
    schedule = _checkpoint_schedule(source)
    assert schedule is not None  # checked by plan_branches
    target = b.run_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "checkpoints").mkdir(parents=True)
        copied = tmp / "checkpoints" / source.name
        shutil.copytree(source, copied)
        problem = _verified(copied, b.at)
        if problem is not None:
            raise ConfigError(
                f"--at: the checkpoint at update {b.at} changed while it was copied ({problem})"
            )
        request = ReplanRequest(
            total=b.total,
            mode="cooldown",
            cooldown=str(b.cooldown),
            shape=b.shape,
            floor=b.floor,
            expect=schedule.fingerprint(),
        )
        link = {
            "parent": os.path.relpath(parent.resolve(), target.resolve()),
            "parent_fingerprint": params.get("schedule_fingerprint"),
            "at": b.at,
            "cooldown": b.cooldown,
            "total": b.total,
            "shape": b.shape,
            "floor": b.floor,
            "checkpoint": f"checkpoints/{source.name}",
            "request": request.id,
        }
        _copy_store(parent, tmp, b.at, link)
        write_request(tmp, request)
        atomic_write_json(tmp / BRANCH_FILE, link)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    _register(parent, target)


# ---- training -----------------------------------------------------------------------------------
def _train(
    run_dir: str, config: Mapping[str, Any], progress: bool, prefix: str, log: Log | None = None
) -> TrainResult:
    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.trainer import Trainer

    def printed(line: str) -> None:
        print(f"[{prefix}] {line}", flush=True)

    hint = "run the same `cosanneal branch` command again"
    return Trainer(
        config_from_dict(config), run_dir, progress=progress, log=log or printed, resume_hint=hint
    ).run()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def branch(
    run_dir: str | os.PathLike[str],
    *,
    at: int | str | Sequence[int | str],
    cooldown: int | float | str,
    shape: str = "linear",
    floor: float | None = None,
    out: str | os.PathLike[str] | None = None,
    workers: int = 1,
    dry_run: bool = False,
    progress: bool = False,
    log: Log | None = None,
) -> list[BranchResult]:
    """Train a cooldown branch from each checkpoint ``at`` of the run in ``run_dir`` (module docstring).

    Args:
        run_dir: the parent run directory (written by ``cosanneal train``; it may still be running).
        at: the parent's checkpoints to branch from, in updates (``"40,80"`` or a list).
        cooldown: updates, or the cooldown's fraction ``f`` of each branch: ``L = round(f d / (1 - f))``.
        shape: ``linear``, ``cosine`` or ``1-sqrt``.
        floor: the cooldown's final LR (``None``: the parent plan's final LR).
        out: where the branch directories go (default: beside the parent, ``<RUN>-branch-<d>``).
        workers: how many branches train at once, each in its own process (1: one after another here).
        dry_run: check and plan only; write nothing.
        progress: show the trainer's progress bar (one process only).
        log: where one-line messages go (default: ``print``).

    Returns:
        One :class:`BranchResult` per branch, by ``at``. A sequential sweep stops at a branch that
        did not finish (preempted, stopped); the ones after it are not in the list.

    Raises:
        ConfigError: bad input (see :func:`plan_branches`); nothing is written then.

    Example:
        >>> import tempfile
        >>> branch(tempfile.mkdtemp(), at=40, cooldown=0.2)
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: RUN: ... is not a run directory (no run.db); pass the directory `cosanneal train` wrote
    """
    say = log or print
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a whole number >= 1, got {workers!r}")
    parent = Path(run_dir)
    planned = plan_branches(parent, at=at, cooldown=cooldown, shape=shape, floor=floor, out=out)
    params, _ = _parent(parent)
    if dry_run:
        return [BranchResult(b, "planned", None, None) for b in planned]
    config = dict(params["config"])
    results: dict[int, BranchResult] = {}
    todo: list[Branch] = []
    for b in planned:
        if b.state == "finished":
            say(f"branch at {b.at}: {b.run_dir} finished before with these settings; reused")
            results[b.at] = BranchResult(b, "reused", None, final_metric(b.run_dir))
            continue
        if b.state == "new":
            _build(parent, params, b)
        todo.append(b)

    def done(b: Branch, result: TrainResult) -> BranchResult:
        status = "trained" if result.status == "finished" else result.status
        return BranchResult(b, status, result, final_metric(b.run_dir))

    if workers == 1 or len(todo) <= 1:
        for b in todo:
            say(
                f"branch at {b.at}: {b.cooldown}-update {b.shape} cooldown to update {b.total} in {b.run_dir}"
            )
            results[b.at] = done(b, _train(str(b.run_dir), config, progress, b.run_dir.name, say))
            if results[b.at].status != "trained":
                break
    else:
        import concurrent.futures
        import multiprocessing

        n = min(workers, len(todo))
        threads = max(1, (os.cpu_count() or 1) // n)
        with concurrent.futures.ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(threads,)
        ) as pool:
            futures = {pool.submit(_train, str(b.run_dir), config, False, b.run_dir.name): b for b in todo}
            say(f"training {len(todo)} branches, {n} at a time")
            for future in concurrent.futures.as_completed(futures):
                b = futures[future]
                results[b.at] = done(b, future.result())
    return [results[b.at] for b in planned if b.at in results]
