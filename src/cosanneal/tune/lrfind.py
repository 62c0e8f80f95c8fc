"""The LR range test ("LR finder"): sweep the LR up exponentially, watch the loss, suggest a cosine schedule.

:func:`lr_find` runs on a *copy* of the model and optimizer (the caller's parameters, optimizer state and the
global Python/NumPy/torch RNG states are left exactly as they were). At update ``i`` of ``n`` the LR is

    lr_i = min_lr * (max_lr / min_lr) ** (i / (n - 1))

the loss of the batch is recorded, then the update is taken with ``lr_i``. The smoothed loss is an
exponential moving average with bias correction (``avg_i = b avg_{i-1} + (1 - b) loss_i``, ``smoothed_i =
avg_i / (1 - b^(i+1))``), and the sweep stops when ``smoothed_i > diverge * min(smoothed_0..i)`` or the loss
is not finite.

The suggestion (:func:`suggest`) is read from a zero-lag trend of the raw losses (a centred running median
followed by a centred running mean, so one noisy batch cannot move it and it does not lag like the EMA):

* ``min_loss_lr``: the LR where the trend is lowest;
* ``steepest_lr``: the LR of steepest descent of the trend *before* that minimum (``d trend / d log lr``);
* ``peak_lr = min(sqrt(steepest_lr * min_loss_lr), min_loss_lr / 3)``: half-way on the log-LR axis between
  where the loss falls fastest and where it bottoms out, and at least 3x below the bottom, past which the
  loss turns up towards divergence. The steepest point alone is too timid for a schedule that anneals
  (the loss is still falling fast there, so higher LRs still pay), the bottom is the edge of instability;
* ``fall_lr``: the first LR where the trend has dropped 10% of its total drop (the loss starts falling);
* ``min_lr = clip(fall_lr, peak_lr / 1000, peak_lr / 10)``: annealing far below the LR where the loss
  starts to move buys little, but the floor stays at least a decade under the peak;
* ``warmup_steps``: the number of sweep updates from ``fall_lr`` to ``peak_lr``. The sweep climbed that range
  in that many updates without diverging, and a linear warmup of the same length rises more slowly than
  the exponential sweep near the peak (where instability starts), so it is at least as gentle.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from cosanneal.errors import ConfigError
from cosanneal.runtime.rng import capture_rng_state, restore_rng_state

__all__ = [
    "LRFindResult",
    "Suggestion",
    "check_range",
    "ema",
    "lr_find",
    "spec_toml",
    "suggest",
    "sweep_in_place",
    "trend",
]

FloatArray = npt.NDArray[np.float64]
LossFn = Callable[[nn.Module, Any], torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

#: The trend's loss must fall by this fraction of its total drop for the loss to count as "falling".
FALL_FRACTION = 0.1
#: ``peak_lr`` is at most ``min_loss_lr / BACKOFF``.
BACKOFF = 3.0


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """A cosine schedule read off a range test (see the module docstring for each rule).

    Attributes:
        peak_lr: suggested peak LR, ``min(sqrt(steepest_lr * min_loss_lr), min_loss_lr / 3)``.
        min_lr: suggested floor, ``clip(fall_lr, peak_lr / 1000, peak_lr / 10)``.
        warmup_steps: sweep updates from ``fall_lr`` to ``peak_lr``.
        steepest_lr: LR of steepest descent of the trend before its minimum.
        min_loss_lr: LR where the trend is lowest.
        fall_lr: LR where the loss starts falling (10% of its total drop).
    """

    peak_lr: float
    min_lr: float
    warmup_steps: int
    steepest_lr: float
    min_loss_lr: float
    fall_lr: float

    def spec(self) -> dict[str, Any]:
        """The suggestion as a cosine spec for :func:`cosanneal.schedules.spec.load_spec` / ``[schedule]``.

        One cosine decay over the whole run (``cycle_steps = "1dur"``) with the warmup overlaid on its start
        (``warmup_prefix = false``), so the schedule ends exactly at the end of the budget.

        Example:
            >>> s = Suggestion(0.1, 0.001, 12, 0.2, 1.0, 0.001)
            >>> s.spec()["peak_lr"], s.spec()["cycle_steps"]
            (0.1, '1dur')
        """
        return {
            "kind": "cosine",
            "peak_lr": self.peak_lr,
            "min_lr": self.min_lr,
            "warmup_steps": self.warmup_steps,
            "warmup_prefix": False,
            "cycle_steps": "1dur",
        }


@dataclasses.dataclass(frozen=True, eq=False)
class LRFindResult:
    """The recorded range test.

    Attributes:
        lrs: LR of every recorded update (increasing, exponential).
        losses: raw loss of the batch at each LR (before that update).
        smoothed: bias-corrected EMA of ``losses``.
        suggestion: the suggested schedule, or ``None`` when the loss never fell.
        diverged_at: LR at which the sweep stopped for divergence, or ``None`` if it ran to ``max_lr``.
    """

    lrs: FloatArray
    losses: FloatArray
    smoothed: FloatArray
    suggestion: Suggestion | None
    diverged_at: float | None


def ema(losses: npt.ArrayLike, smoothing: float = 0.98) -> FloatArray:
    """Bias-corrected exponential moving average: ``avg_i = b avg_{i-1} + (1-b) x_i``, ``/ (1 - b^(i+1))``.

    Example:
        >>> ema([2.0, 2.0, 2.0], 0.9).tolist()
        [2.0, 2.0, 2.0]
        >>> np.round(ema([1.0, 0.0], 0.5), 4).tolist()
        [1.0, 0.3333]
    """
    x = np.asarray(losses, dtype=np.float64)
    out = np.empty_like(x)
    avg = 0.0
    for i, value in enumerate(x):
        avg = smoothing * avg + (1.0 - smoothing) * float(value)
        out[i] = avg / (1.0 - smoothing ** (i + 1))
    return out


def _window(n: int) -> int:
    """Odd trend window: about a tenth of the curve, at least 3."""
    w = max(3, n // 10)
    return w if w % 2 else w + 1


def trend(losses: npt.ArrayLike, window: int | None = None) -> FloatArray:
    """Zero-lag trend: a centred running median, then a centred running mean, both over ``window`` points.

    The ends are padded by reflection (so the ends have no artificial slope). ``window`` defaults to about a tenth of the curve (odd, >= 3).

    Example:
        >>> trend([1.0, 1.0, 9.0, 1.0, 1.0], 3).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    x = np.asarray(losses, dtype=np.float64)
    w = _window(len(x)) if window is None else window
    half = w // 2
    if len(x) == 0 or half == 0:
        return x.copy()
    views = np.lib.stride_tricks.sliding_window_view
    median = np.median(views(np.pad(x, half, mode="reflect"), w), axis=1)
    return np.asarray(views(np.pad(median, half, mode="reflect"), w).mean(axis=1), dtype=np.float64)


def suggest(lrs: npt.ArrayLike, losses: npt.ArrayLike) -> Suggestion | None:
    """Suggest a cosine schedule from a range test's raw losses (rules in the module docstring).

    Returns ``None`` when there are fewer than 5 points or the loss never falls.

    Example:
        >>> lrs = np.geomspace(1e-4, 1.0, 41)
        >>> s = suggest(lrs, 1.0 / (1.0 + (lrs / 1e-2) ** 2) + (lrs / 0.3) ** 4)
        >>> round(s.steepest_lr, 4), round(s.min_loss_lr, 4), round(s.peak_lr, 4), round(s.min_lr, 5)
        (0.01, 0.0794, 0.0265, 0.00265)
    """
    x = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 5:
        return None
    t = trend(y)
    i_min = int(np.argmin(t))
    drop = float(t[0] - t[i_min])
    if i_min == 0 or not drop > 1e-12 * max(1.0, abs(float(t[0]))):
        return None
    i_fall = int(np.argmax(t <= t[0] - FALL_FRACTION * drop))
    slope = np.gradient(t, np.log(x))
    i_steep = int(np.argmin(slope[: i_min + 1]))
    peak = min(math.sqrt(float(x[i_steep]) * float(x[i_min])), float(x[i_min]) / BACKOFF)
    floor = min(max(float(x[i_fall]), peak / 1000.0), peak / 10.0)
    i_peak = int(np.searchsorted(x, peak))
    return Suggestion(
        peak_lr=peak,
        min_lr=floor,
        warmup_steps=max(0, i_peak - i_fall),
        steepest_lr=float(x[i_steep]),
        min_loss_lr=float(x[i_min]),
        fall_lr=float(x[i_fall]),
    )


def check_range(min_lr: float, max_lr: float, steps: int, smoothing: float, diverge: float) -> None:
    """Refuse range-test settings out of their domain (each with a one-line :class:`ConfigError`)."""
    if not (min_lr > 0 and math.isfinite(min_lr)):
        raise ConfigError(f"min_lr: must be a finite number > 0, got {min_lr!r}")
    if not (max_lr > min_lr and math.isfinite(max_lr)):
        raise ConfigError(f"max_lr: must be finite and > min_lr={min_lr!r}, got {max_lr!r}")
    if steps < 5:
        raise ConfigError(f"steps: must be >= 5, got {steps!r}")
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"smoothing: must be in [0, 1), got {smoothing!r}")
    if not diverge > 1.0:
        raise ConfigError(f"diverge: must be > 1, got {diverge!r}")


def _constructor_keywords(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(params, ...)`` accepts, or ``None`` when it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def _copy_optimizer(optimizer: torch.optim.Optimizer, memo: dict[int, Any]) -> torch.optim.Optimizer:
    """The same optimizer class, hyperparameters and state, over the copied model's parameters."""
    groups: list[dict[str, Any]] = []
    for i, group in enumerate(optimizer.param_groups):
        params = []
        for p in group["params"]:
            if id(p) not in memo:
                raise ConfigError(
                    f"optimizer: param group {i} holds a parameter that is not in the model; "
                    "pass an optimizer factory (lambda params: SGD(params, ...)) instead"
                )
            params.append(memo[id(p)])
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    # every group carries all its hyperparameters; pass the defaults only as far as the constructor names
    # them (torch >= 2.x AdamW keeps ``decoupled_weight_decay`` in its defaults but does not accept it)
    accepted = _constructor_keywords(type(optimizer))
    defaults = {k: v for k, v in optimizer.defaults.items() if accepted is None or k in accepted}
    try:
        clone = type(optimizer)(groups, **defaults)
    except TypeError as exc:
        raise ConfigError(
            f"optimizer: cannot rebuild {type(optimizer).__name__} from its defaults ({exc}); "
            "pass an optimizer factory (lambda params: Opt(params, ...)) instead"
        ) from None
    # load_state_dict may keep the very tensors it is given (momentum buffers...): hand it copies
    clone.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return clone


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``batches`` again and again (once, if it is a one-shot iterator)."""
    if iter(batches) is batches:
        yield from batches
        return
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            return


def sweep_in_place(
    work: nn.Module,
    opt: torch.optim.Optimizer,
    batches: Iterable[Any],
    loss_fn: LossFn,
    min_lr: float,
    max_lr: float,
    steps: int,
    smoothing: float,
    diverge: float,
    grad_clip: float | None,
) -> LRFindResult:
    """The range test itself: train ``work`` with ``opt`` in place (callers hand it copies they own).

    Settings as :func:`lr_find` takes them, already checked with :func:`check_range`; the RNG states are the
    caller's to keep (:func:`lr_find` and :func:`cosanneal.jobs.lrfind.lr_find_config` restore them).
    """
    work.train()
    base = float(opt.param_groups[0]["lr"])
    ratios = [float(g["lr"]) / base if base > 0 else 1.0 for g in opt.param_groups]
    schedule = min_lr * (max_lr / min_lr) ** (np.arange(steps, dtype=np.float64) / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best, diverged_at = 0.0, math.inf, None
    for lr, batch in zip(schedule.tolist(), itertools.islice(_cycle(batches), steps), strict=False):
        for group, ratio in zip(opt.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        loss = loss_fn(work, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged_at = lr
            break
        avg = smoothing * avg + (1.0 - smoothing) * value
        smooth = avg / (1.0 - smoothing ** (len(losses) + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(smooth)
        if losses[1:] and smooth > diverge * best:
            diverged_at = lr
            break
        best = min(best, smooth)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(work.parameters(), grad_clip)
        opt.step()
    lr_arr, loss_arr = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    return LRFindResult(
        lrs=lr_arr,
        losses=loss_arr,
        smoothed=np.asarray(smoothed, dtype=np.float64),
        suggestion=suggest(lr_arr, loss_arr),
        diverged_at=diverged_at,
    )


def lr_find(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | OptimizerFactory,
    batches: Iterable[Any],
    loss_fn: LossFn,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge: float = 4.0,
    grad_clip: float | None = None,
) -> LRFindResult:
    """Run an LR range test on a copy of ``model`` and suggest a cosine schedule.

    ``lr_i = min_lr (max_lr/min_lr)^(i/(steps-1))``; the loss of batch ``i`` is recorded, then the copy takes
    one update at ``lr_i``. The first param group follows the sweep; other groups keep their LR ratio to it
    (e.g. a config's ``lr_scale``). The sweep stops early when the bias-corrected EMA of the loss exceeds
    ``diverge`` times its minimum so far, or the loss is not finite (that point is not recorded).

    Args:
        model: the model; it is deep-copied and the copy is trained (``model`` is untouched).
        optimizer: an optimizer over ``model``'s parameters (copied with its state) or a factory
            ``params -> optimizer`` called with the copy's parameters.
        batches: batches, re-iterated when exhausted (a one-shot iterator ends the sweep when it runs out).
        loss_fn: ``loss_fn(model_copy, batch) -> scalar loss tensor`` (move the batch to the device here).
        min_lr: first LR (> 0).
        max_lr: last LR (> min_lr).
        steps: number of updates (>= 5).
        smoothing: EMA factor ``b`` in [0, 1).
        diverge: stop when the smoothed loss exceeds this multiple of its best (> 1).
        grad_clip: clip the gradient norm to this before each update.

    Returns:
        The curve and the suggestion. The global Python, NumPy and torch RNG states are restored on return.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(256, 4)
        >>> y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        >>> model = torch.nn.Linear(4, 1)
        >>> batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
        >>> loss = lambda m, b: torch.nn.functional.mse_loss(m(b[0]).squeeze(1), b[1])
        >>> res = lr_find(model, lambda p: torch.optim.SGD(p, lr=0.1), batches, loss, min_lr=1e-4, max_lr=10.0)
        >>> res.diverged_at is not None and res.suggestion.peak_lr < res.diverged_at
        True
    """
    check_range(min_lr, max_lr, steps, smoothing, diverge)
    rng = capture_rng_state()
    try:
        memo: dict[int, Any] = {}
        work = copy.deepcopy(model, memo)
        if isinstance(optimizer, torch.optim.Optimizer):
            opt = _copy_optimizer(optimizer, memo)
        else:
            opt = optimizer(work.parameters())
        return sweep_in_place(
            work, opt, batches, loss_fn, min_lr, max_lr, steps, smoothing, diverge, grad_clip
        )
    finally:
        restore_rng_state(rng)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def spec_toml(suggestion: Suggestion, comment: str = "") -> str:
    """The suggestion as a TOML ``[schedule]`` table (a spec file and a valid ``cosanneal train`` config).

    Example:
        >>> print(spec_toml(Suggestion(0.1, 0.001, 12, 0.2, 1.0, 0.001)))
        [schedule]
        kind = "cosine"
        peak_lr = 0.1
        min_lr = 0.001
        warmup_steps = 12
        warmup_prefix = false
        cycle_steps = "1dur"
        <BLANKLINE>
    """
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append("[schedule]")
    lines += [f"{key} = {_toml_value(value)}" for key, value in suggestion.spec().items()]
    return "\n".join(lines) + "\n"
