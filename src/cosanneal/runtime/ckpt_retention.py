"""What a checkpoint directory keeps: rotation, the best copy in ``best/``, and cycle-end snapshots.

After each committed save, :meth:`Retention.saved` updates ``best/`` (only on a strictly better metric,
so the spike after a warm restart never replaces it) and rotates: it keeps the newest ``keep_last``
checkpoints and, with ``keep_cycle_ends``, every cycle-end one, and deletes those with a step *larger*
than the one just saved (an abandoned future, e.g. after a rollback). Rotation never touches ``best/``.
The rules themselves are pure functions in :mod:`cosanneal.runtime.ckpt_policy`; deleting and copying
go through the commit strategy, so no half checkpoint is ever visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cosanneal.runtime import ckpt_format
from cosanneal.runtime.ckpt_commit import CommitStrategy
from cosanneal.runtime.ckpt_format import step_name, step_of
from cosanneal.runtime.ckpt_policy import is_better, to_delete
from cosanneal.runtime.ckpt_types import CheckpointError, CheckpointInfo

BEST_DIR = "best"


def check_retention(keep_last: Any, best: Any) -> tuple[int, tuple[str, str] | None]:
    """Validate ``keep_last`` and ``best``; return them normalised (``best`` as a tuple or ``None``).

    Raises:
        CheckpointError: ``keep_last`` is not an int >= 1, or ``best`` not ``(metric, "min" | "max")``.

    Example:
        >>> check_retention(2, ["val_acc", "max"])
        (2, ('val_acc', 'max'))
    """
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise CheckpointError(f"keep_last must be an int >= 1, got {keep_last!r}")
    spec: Any = tuple(best) if isinstance(best, list) else best  # a list comes from TOML/JSON configs
    if spec is not None and (
        not isinstance(spec, tuple)
        or len(spec) != 2
        or not isinstance(spec[0], str)
        or spec[1] not in ("min", "max")
    ):
        raise CheckpointError(f"best must be None or (metric name, 'min' | 'max'), got {best!r}")
    return keep_last, None if spec is None else (spec[0], spec[1])


class Retention:
    """Keep the newest, the best and (optionally) the cycle-end checkpoints of one directory.

    Args:
        store: the directory's commit strategy.
        keep_last: how many of the newest checkpoints rotation keeps (validated by :func:`check_retention`).
        best_metric: ``(metric, "min" | "max")`` for ``best/``, or ``None``.
        keep_cycle_ends: also keep every checkpoint saved with ``cycle_end=True``.
        emit: ``emit(kind, **payload)`` for ``checkpoint_best`` and ``checkpoint_deleted``.
    """

    def __init__(
        self,
        store: CommitStrategy,
        keep_last: int,
        best_metric: tuple[str, str] | None,
        keep_cycle_ends: bool,
        emit: Callable[..., None],
    ) -> None:
        self._store = store
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.keep_cycle_ends = keep_cycle_ends
        self._emit = emit
        self._cycle_end_cache: dict[str, bool] = {}

    # ---- reading ------------------------------------------------------------------------------
    def infos(self, where: str) -> list[tuple[str, CheckpointInfo]]:
        """``(path, info)`` of the committed checkpoints in ``where`` whose state reads, oldest first."""
        out = []
        for step, path in sorted(self._store.committed(where, step_of).items()):
            state = ckpt_format.read_state(self._store, path)
            if state is not None:
                out.append((path, ckpt_format.info_from_state(step, self._store.display(path), state)))
        return out

    def best_entries(self) -> list[tuple[str, CheckpointInfo]]:
        """``best/`` entries, the best first (several exist only after a crash mid-update)."""
        if self.best_metric is None:
            return []
        metric, mode = self.best_metric
        entries = [(p, i) for p, i in self.infos(self._store.join(BEST_DIR)) if metric in i.metrics]
        sign = 1.0 if mode == "min" else -1.0
        entries.sort(key=lambda e: (sign * e[1].metrics[metric], -e[1].step))
        return entries

    def resume_candidates(self) -> list[tuple[int, str]]:
        """``(step, path)`` to try when resuming, newest first.

        Every ``step-*`` directory (committed or not: loading reports why one is skipped), and the
        ``best/`` entries that fill gaps below the newest of them. A ``best/`` entry above the newest ``step-*`` directory is from an abandoned future (a rollback
        saved an earlier step since), so it is never resumed.
        """
        steps = self._store.checkpoint_dirs(self._store.root, step_of)
        newest = max(steps, default=None)
        extra = {
            s: p
            for s, p in self._store.checkpoint_dirs(self._store.join(BEST_DIR), step_of).items()
            if s not in steps and (newest is None or s < newest)
        }
        return sorted({**extra, **steps}.items(), reverse=True)

    # ---- after a save -------------------------------------------------------------------------
    def saved(self, info: CheckpointInfo, final: str, files: list[str]) -> None:
        """Checkpoint ``info`` was committed at ``final`` with ``files``: update ``best/``, then rotate."""
        self._cycle_end_cache[final.rsplit("/", 1)[-1]] = info.cycle_end
        self._update_best(info, final, files)
        self._rotate(info.step)

    def _update_best(self, info: CheckpointInfo, final: str, files: list[str]) -> None:
        if self.best_metric is None:
            return
        metric, mode = self.best_metric
        value = info.metrics.get(metric)
        if value is None:
            return
        current = self.best_entries()
        best_value = current[0][1].metrics.get(metric) if current else None
        if not is_better(value, best_value, mode):
            return
        target = self._store.join(BEST_DIR, step_name(info.step))
        self._store.copy(final, target, files)
        for path, old in current:
            if old.step != info.step:
                self._store.remove(path)
        self._emit(
            "checkpoint_best", step=info.step, metric=metric, value=value, path=self._store.display(target)
        )

    def _rotate(self, saved_step: int) -> None:
        committed = self._store.committed(self._store.root, step_of)
        newer = [s for s in committed if s > saved_step]
        older = {s: p for s, p in committed.items() if s <= saved_step}
        protected = [s for s, p in older.items() if self.keep_cycle_ends and self._is_cycle_end(p)]
        for step in newer:
            self._delete(committed[step], step, f"newer than the step just saved ({saved_step}): abandoned")
        for step in to_delete(list(older), self.keep_last, protected):
            self._delete(older[step], step, f"rotation (keep_last={self.keep_last})")

    def _delete(self, path: str, step: int, reason: str) -> None:
        self._store.remove(path)
        self._cycle_end_cache.pop(path.rsplit("/", 1)[-1], None)
        self._emit("checkpoint_deleted", step=step, path=self._store.display(path), reason=reason)

    def _is_cycle_end(self, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        if name not in self._cycle_end_cache:
            state = ckpt_format.read_state(self._store, path)
            self._cycle_end_cache[name] = bool(state and state.get("cycle_end"))
        return self._cycle_end_cache[name]
