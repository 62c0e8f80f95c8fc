r"""Cooldown branches of a run, as their directories record them (what ``cosanneal branch`` wrote).

A branch (:mod:`cosanneal.jobs.branch`) trains a cooldown of ``L`` updates from its parent's
checkpoint at update ``d`` into its own run directory, so its own total is ``T = d + L``. Its
``branch.json`` names the parent (a path relative to the branch directory), the parent's schedule
fingerprint, ``d``, ``L``, ``T``, the shape and the floor; the parent's ``branches.json`` lists its
branches (paths relative to the parent), so a branch trained under ``--out`` elsewhere is found too.

This module only reads: :func:`find_branches` lists a parent's branches (for the report's overlay
and ``cosanneal plan --branches``), :func:`read_branch` reads one, :func:`final_metric` is a run's
last recorded value of a metric.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from cosanneal.io import atomic_write_json
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "wsd").mkdir(); (root / "wsd-branch-80").mkdir()
    >>> atomic_write_json(root / "wsd-branch-80" / BRANCH_FILE, {"parent": "../wsd", "at": 80,
    ...     "cooldown": 20, "total": 100, "shape": "linear", "floor": None, "parent_fingerprint": "f"})
    >>> [(b.at, b.cooldown, b.total, b.fraction) for b in find_branches(root / "wsd")]
    [(80, 20, 100, 0.2)]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BRANCH_FILE",
    "REGISTRY_FILE",
    "BranchInfo",
    "branches_figure",
    "final_metric",
    "find_branches",
    "read_branch",
]

#: The file in a branch's run directory that names its parent.
BRANCH_FILE = "branch.json"
#: The file in a parent's run directory that lists its branches (paths relative to the parent).
REGISTRY_FILE = "branches.json"


@dataclasses.dataclass(frozen=True)
class BranchInfo:
    """One cooldown branch, as its ``branch.json`` records it.

    Attributes:
        run_dir: the branch's run directory.
        parent: the parent's run directory (resolved).
        at: ``d``, the parent's update count at the checkpoint the branch starts from.
        cooldown: ``L``, the cooldown's length in updates.
        total: ``T = d + L``, the branch's own length in updates.
        shape: the cooldown's shape (``linear``, ``cosine`` or ``1-sqrt``).
        floor: the cooldown's final LR as asked (``None``: the parent plan's final LR).
        parent_fingerprint: the parent run's schedule fingerprint.
        settings: the whole ``branch.json``.
    """

    run_dir: Path
    parent: Path
    at: int
    cooldown: int
    total: int
    shape: str
    floor: float | None
    parent_fingerprint: str | None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def fraction(self) -> float:
        """The cooldown's share of the branch, ``L / T``."""
        return self.cooldown / self.total


def read_branch(run_dir: str | os.PathLike[str]) -> BranchInfo | None:
    """The branch recorded in ``run_dir/branch.json``, or ``None`` when it is not a (readable) branch.

    Example:
        >>> import tempfile
        >>> read_branch(tempfile.mkdtemp()) is None
        True
    """
    path = Path(run_dir)
    try:
        data = json.loads((path / BRANCH_FILE).read_text())
        parent = (path / str(data["parent"])).resolve()
        at, cooldown = int(data["at"]), int(data["cooldown"])
        total = int(data.get("total", at + cooldown))
        floor = data.get("floor")
        return BranchInfo(
            run_dir=path,
            parent=parent,
            at=at,
            cooldown=cooldown,
            total=total,
            shape=str(data.get("shape", "linear")),
            floor=None if floor is None else float(floor),
            parent_fingerprint=data.get("parent_fingerprint"),
            settings=data,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _registered(parent: Path) -> list[Path]:
    try:
        data = json.loads((parent / REGISTRY_FILE).read_text())
    except (OSError, ValueError):
        return []
    entries = data.get("branches", []) if isinstance(data, Mapping) else []
    return [Path(os.path.normpath(parent / e)) for e in entries if isinstance(e, str)]


def find_branches(
    parent_dir: str | os.PathLike[str], search: Iterable[str | os.PathLike[str]] = ()
) -> list[BranchInfo]:
    """The cooldown branches of the run in ``parent_dir``, by branch step (then cooldown length).

    Looks at the directories the parent's ``branches.json`` lists, the parent's siblings (where
    ``cosanneal branch`` puts them by default) and the directories in ``search`` and their children;
    keeps those whose ``branch.json`` names ``parent_dir`` as their parent.

    Example:
        >>> import tempfile
        >>> find_branches(tempfile.mkdtemp())
        []
    """
    parent = Path(parent_dir).resolve()
    candidates: list[Path] = _registered(parent)
    roots = [parent.parent, *(Path(s) for s in search)]
    for root in roots:
        candidates.append(root)
        try:
            candidates += [child for child in root.iterdir() if child.is_dir()]
        except OSError:
            continue
    found: dict[Path, BranchInfo] = {}
    for candidate in candidates:
        key = candidate.resolve()
        if key in found or key == parent:
            continue
        info = read_branch(candidate)
        if info is not None and info.parent == parent:
            found[key] = info
    return sorted(found.values(), key=lambda b: (b.at, b.cooldown, str(b.run_dir)))


def final_metric(run_dir: str | os.PathLike[str], name: str = "val_loss") -> float | None:
    """The last value of scalar ``name`` a run recorded (``None``: no store, no such scalar, or NaN).

    Example:
        >>> import tempfile
        >>> final_metric(tempfile.mkdtemp()) is None
        True
    """
    from cosanneal import runs

    path = Path(run_dir)
    if not (path / "run.db").exists():
        return None
    with runs.open(path) as run:
        if name not in run.scalar_names():
            return None
        _, values = run.scalar(name)
    if not len(values):
        return None
    value = float(values[-1])
    return value if math.isfinite(value) else None


def branches_figure(parent_dir: str | os.PathLike[str], branches: Iterable[BranchInfo] | None = None) -> Any:
    """The parent's and its branches' LR (above) and ``val_loss`` (below) on one update axis.

    Args:
        parent_dir: the parent run directory.
        branches: the branches to draw (default: :func:`find_branches`).

    Returns:
        A ``matplotlib.figure.Figure`` on an Agg canvas; ``fig.axes`` is ``[lr, val_loss]``, one line
        per run in each (the parent first, labelled by its directory name).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cosanneal import runs
    from cosanneal.plotting import DPI, FIGSIZE

    parent = Path(parent_dir)
    chosen = find_branches(parent) if branches is None else list(branches)
    fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * 1.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_lr, ax_loss = fig.subplots(2, 1, sharex=True)
    drawn = [(parent, f"{parent.name} (parent)", {"color": "black", "lw": 1.6})]
    drawn += [
        (b.run_dir, f"branch at {b.at}: {b.cooldown} {b.shape}", {"color": f"C{k}", "lw": 1.2})
        for k, b in enumerate(chosen)
    ]
    for run_dir, label, style in drawn:
        with runs.open(run_dir) as run:
            names = set(run.scalar_names())
            if "lr" in names:
                steps, lr = run.scalar("lr", 0)
                ax_lr.plot(steps, lr, label=label, **style)
            if "val_loss" in names:
                steps, loss = run.scalar("val_loss")
                ax_loss.plot(steps, loss, "o-", ms=3, label=label, **style)
    for b in chosen:
        ax_lr.axvline(b.at, color="grey", ls=":", lw=0.7)
    ax_lr.set_title(f"{parent.name} and its {len(chosen)} cooldown branch{'es' if len(chosen) != 1 else ''}")
    ax_lr.set_ylabel("learning rate")
    ax_loss.set_ylabel("val_loss")
    ax_loss.set_xlabel("optimizer update")
    for ax in (ax_lr, ax_loss):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
    return fig
