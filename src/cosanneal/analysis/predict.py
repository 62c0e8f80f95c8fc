"""Predict the loss of a schedule before training it: fit a loss-vs-schedule law to finished runs.

Two laws, both functions of the LR schedule only (the model, data and optimizer are fixed by the runs
they are fitted to). ``eta_t`` is the LR of update ``t`` (0-based), ``w`` the end of the warmup (the
first step at the schedule's largest LR; 0 without a warmup), ``d_k = eta_{k-1} - eta_k`` the LR
decrease at step ``k`` (counted for ``k > w`` only: the warmup's increase is not an annealing), and
``S1(t) = eta_0 + ... + eta_t`` the forward area of the updates up to ``t`` (the warmup's included).
The loss recorded at step ``t`` is modelled after those ``t + 1`` updates.

* **multipower** (Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate
  Schedules")::

      L(t)  = L0 + A * S1(t)^(-alpha) - LD(t)
      LD(t) = B * sum_{k=w+1..t} d_k * G(eta_k^(-gamma) * S_k(t)),   S_k(t) = eta_k + ... + eta_t
      G(x)  = 1 - (C * x + 1)^(-beta)

  seven parameters ``L0, A, alpha, B, C, beta, gamma``.

* **tissue** (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing")::

      L(t) = L0 + A * S1(t)^(-alpha) - C * S2(t),   S2(t) = m_0 + ... + m_t,
      m_i  = lambda * m_{i-1} + d_i   (m = 0 through the warmup)

  four parameters ``L0, A, alpha, C``; ``lambda`` is fixed (0.999 as in the paper) or fitted.

Cost of one evaluation. ``S1`` and ``S_k(t) = P(t) - P(k-1)`` come from one cumulative sum ``P`` of the
LRs. The tissue law is O(T) for the whole curve (``m`` is a first-order linear filter, ``S2`` a cumulative
sum). The multi-power drop is not separable in ``(k, t)``; it is evaluated exactly, vectorised, at the
``m`` steps asked for, in O(K * m) time and blocks of at most 4M elements, where ``K <= T`` counts the
steps whose LR changes (a constant or stable phase costs nothing). The fit bins the loss trace into at
most ``points`` (200) means and evaluates the drop at up to 5 steps of each, so one evaluation of a fit
costs O(1000 * K); a prediction evaluates ``points`` (256) steps of the curve, the last one included.

Fitting (:func:`fit`): least squares on the binned training-loss trace of one or more runs by variable
projection: the shape parameters (``alpha, C, beta, gamma``; tissue: ``alpha`` and a fitted ``lambda``)
in log space by :func:`scipy.optimize.least_squares`, ``L0``, ``A`` and ``B`` (tissue: ``C``) solved
by non-negative least squares at each evaluation (a loss, its power term and its annealing drop are
never negative). The starts are a fixed grid, the best three refined; then two reweighted passes with
soft-L1 weights at three noise scales of the residuals, so loss spikes do not pull the fit.
Deterministic: no random starts. The validation loss is predicted as the law's final loss plus the gap
between the runs' last recorded ``val_loss`` and the law there (:attr:`FittedLaw.val_offset`).

Example:
    >>> import numpy as np
    >>> from cosanneal.schedules import Cosine
    >>> truth = {"L0": 2.0, "A": 0.4, "alpha": 0.5, "C": 60.0}
    >>> lr = Cosine(1e-3, cycle_steps=400, warmup_steps=20)(np.arange(420))
    >>> loss = curve("tissue", truth, lr, lam=0.999)
    >>> law = fit([LossTrace(lr, np.arange(420), loss)], law="tissue")
    >>> round(law.params["alpha"], 3), law.rmse < 1e-6
    (0.5, True)
    >>> p = law.predict(Cosine(1e-3, cycle_steps=200, warmup_steps=20), steps=220)
    >>> bool(abs(p.final_loss - curve("tissue", truth, p.lr, lam=0.999)[-1]) < 1e-6)
    True
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from cosanneal.errors import CosannealError

if TYPE_CHECKING:
    from cosanneal.schedules.base import Schedule

__all__ = [
    "LAWS",
    "MIN_UPDATES",
    "MIN_VAL_POINTS",
    "TARGETS",
    "FittedLaw",
    "LossTrace",
    "PredictError",
    "Prediction",
    "choose_target",
    "curve",
    "fit",
    "multipower_drop",
    "multipower_drop_naive",
    "predict",
    "rank",
    "tissue_momentum",
    "trace_from_run",
    "warmup_end",
]

FloatArray = npt.NDArray[np.float64]
Law = Literal["multipower", "tissue"]

#: The laws :func:`fit` knows, and their parameters in the order they are reported.
LAWS: dict[str, tuple[str, ...]] = {
    "multipower": ("L0", "A", "alpha", "zeta", "B", "C", "beta", "gamma"),
    "tissue": ("L0", "A", "alpha", "zeta", "C"),
}
#: The series a law can be fitted to: the training loss of every update, or the validation loss.
TARGETS = ("loss", "val_loss")
#: Fewest recorded training-loss updates after the warmup a fit accepts (over all its runs).
MIN_UPDATES = 50
#: Fewest validation losses after the warmup (over all the runs) a fit to ``val_loss`` accepts.
MIN_VAL_POINTS = 12
#: The LR must fall by at least this fraction of its peak after the warmup in one of the fitted runs,
#: or the annealing term cannot be identified.
MIN_ANNEAL = 0.05
_SUB = 5  # steps of a bin at which the fit evaluates the multi-power drop
_CHUNK = 1 << 22  # elements of one (K x m) block of the multi-power drop


class PredictError(CosannealError, ValueError):
    """A fit or a prediction that cannot be made from the input given (one line with the fix)."""


def _scipy() -> Any:
    """The scipy package with its ``optimize`` and ``signal`` modules (it comes with ``cosanneal[runtime]``)."""
    try:
        import scipy.optimize  # type: ignore[import-untyped]
        import scipy.signal  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - scikit-learn (runtime extra) depends on scipy
        raise PredictError("predict needs scipy: pip install scipy (or 'cosanneal[runtime]')") from None
    return scipy


# ---------------------------------------------------------------------------------------------
# the traces
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LossTrace:
    """One run's LR of every update and its recorded training loss (and validation loss).

    Attributes:
        lr: LR of every update ``0 .. n-1`` (length ``n``).
        steps: the steps at which ``loss`` was recorded (increasing, each ``< n``).
        loss: the training loss at ``steps``.
        val_steps: steps of the validation losses (may be empty).
        val_loss: the validation loss at ``val_steps``.
        name: where the trace came from (a run directory).
    """

    lr: FloatArray
    steps: npt.NDArray[np.int64]
    loss: FloatArray
    val_steps: npt.NDArray[np.int64] = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    val_loss: FloatArray = dataclasses.field(default_factory=lambda: np.zeros(0))
    name: str = "trace"

    def __post_init__(self) -> None:
        lr = np.asarray(self.lr, dtype=np.float64).ravel()
        steps = np.asarray(self.steps, dtype=np.int64).ravel()
        loss = np.asarray(self.loss, dtype=np.float64).ravel()
        if len(steps) != len(loss):
            raise PredictError(f"{self.name}: {len(steps)} loss steps but {len(loss)} loss values")
        keep = np.isfinite(loss) & (steps >= 0) & (steps < len(lr))
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "steps", steps[keep])
        object.__setattr__(self, "loss", loss[keep])
        vs = np.asarray(self.val_steps, dtype=np.int64).ravel()
        vl = np.asarray(self.val_loss, dtype=np.float64).ravel()
        vkeep = np.isfinite(vl) & (vs >= 0) & (vs <= len(lr))
        object.__setattr__(self, "val_steps", np.minimum(vs[vkeep], max(len(lr) - 1, 0)))
        object.__setattr__(self, "val_loss", vl[vkeep])


def trace_from_run(path: str | os.PathLike[str], *, group: int = 0) -> LossTrace:
    """The :class:`LossTrace` of a run directory: ``lr`` of ``group``, ``loss`` and ``val_loss``.

    Steps whose LR was not recorded (``telemetry.every > 1``) get it by linear interpolation.

    Raises:
        PredictError: no run store at ``path``, or it has no ``lr`` or ``loss`` series.
    """
    from cosanneal import runs

    try:
        run = runs.open(path)
    except FileNotFoundError:
        raise PredictError(
            f"no run store at {path}: give a run directory written by `cosanneal train` (it holds run.db)"
        ) from None
    with run:
        names = run.scalar_names()
        for needed in ("lr", "loss"):
            if needed not in names:
                raise PredictError(
                    f"{path}: the run recorded no {needed!r} series; predict needs the LR and training loss "
                    "of every update (the trainer's telemetry records them)"
                )
        lr_steps, lrs = run.scalar("lr", group if run.groups("lr") else None)
        steps, loss = run.scalar("loss")
        val_steps, val = (
            run.scalar("val_loss") if "val_loss" in names else (np.zeros(0, np.int64), np.zeros(0))
        )
    ok = np.isfinite(lrs)
    lr_steps, lrs = lr_steps[ok], lrs[ok]
    if len(lr_steps) == 0:
        raise PredictError(f"{path}: the run recorded no finite LR; predict needs its LR trace")
    n = int(max(lr_steps[-1], steps[-1] if len(steps) else 0)) + 1
    lr = np.interp(np.arange(n), lr_steps, lrs)
    return LossTrace(lr, steps, loss, val_steps, val, name=str(path))


def warmup_end(lr: FloatArray) -> int:
    """The end of the warmup: the first step at the trace's largest LR (within 1e-9 relative).

    Example:
        >>> warmup_end(np.array([0.1, 0.5, 1.0, 1.0, 0.5])), warmup_end(np.array([1.0, 0.5]))
        (2, 0)
    """
    lr = np.asarray(lr, dtype=np.float64)
    if len(lr) == 0:
        return 0
    peak = float(np.max(lr))
    return int(np.argmax(lr >= peak * (1.0 - 1e-9)))


# ---------------------------------------------------------------------------------------------
# the laws
# ---------------------------------------------------------------------------------------------
def _drops(lr: FloatArray, w: int) -> FloatArray:
    d = np.zeros_like(lr)
    d[1:] = lr[:-1] - lr[1:]
    d[: w + 1] = 0.0
    return d


def _annealings(lr: FloatArray, w: int) -> tuple[npt.NDArray[np.int64], FloatArray, npt.NDArray[np.int64]]:
    """The multi-power law's annealing terms ``(k, a, from)``, LR increases included (a stack of LR levels).

    Every LR decrease ``d_k > 0`` at ``k > w`` is a term ``(k, d_k, k)``: the band of LR levels
    ``[eta_k, eta_{k-1})`` left at step ``k``. An increase at step ``j`` (a warm restart, a re-warmup)
    climbs back through the lowest bands first and undoes them: each band (or the part of one) below
    ``eta_j`` is a term ``(k, -a, j)``, the same drop taken back from step ``j`` on. A band is only ever
    undone from its bottom, so what is left of it is one interval, and a monotone schedule has no
    undone terms (the paper's sum, unchanged). A full restart to the peak undoes every band: the loss
    goes back to the power term of the area covered.
    """
    ks: list[int] = []
    amounts: list[float] = []
    froms: list[int] = []
    stack: list[list[float]] = []  # [k, top, bottom] of the bands still left, the lowest last
    for j in range(w + 1, len(lr)):
        prev, cur = float(lr[j - 1]), float(lr[j])
        if cur < prev:
            stack.append([j, prev, cur])
            ks.append(j)
            amounts.append(prev - cur)
            froms.append(j)
        elif cur > prev:
            while stack and stack[-1][2] < cur:
                k, top, bottom = stack[-1]
                undone = min(top, cur) - bottom
                ks.append(int(k))
                amounts.append(-undone)
                froms.append(j)
                if top <= cur:
                    stack.pop()
                else:
                    stack[-1][2] = cur
    return (
        np.asarray(ks, dtype=np.int64),
        np.asarray(amounts, dtype=np.float64),
        np.asarray(froms, dtype=np.int64),
    )


def multipower_drop_naive(
    lr: FloatArray, at: Iterable[int], *, b: float, c: float, beta: float, gamma: float, w: int | None = None
) -> FloatArray:
    """The multi-power loss drop ``LD(t)`` by its definition, a double loop: O(T^2), for tests.

    At each ``t`` the bands of LR levels left by the decreases up to ``t`` (less what the increases up
    to ``t`` climbed back through) are summed: ``LD(t) = B * sum_bands width * G(eta_k^(-gamma) * S_k(t))``.

    Example:
        >>> lr = np.array([1.0, 1.0, 0.5, 0.25])
        >>> float(multipower_drop_naive(lr, [3], b=1.0, c=1.0, beta=1.0, gamma=0.0)[0])
        0.2642857142857143
        >>> float(multipower_drop_naive(np.array([1.0, 0.5, 0.25, 1.0]), [3], b=1.0, c=1.0, beta=1.0, gamma=0.0)[0])
        0.0
    """
    lr = np.asarray(lr, dtype=np.float64)
    w = warmup_end(lr) if w is None else w
    out = []
    for t in at:
        bands: list[tuple[int, float, float]] = []  # (k, top, bottom)
        for j in range(w + 1, t + 1):
            prev, cur = float(lr[j - 1]), float(lr[j])
            if cur < prev:
                bands.append((j, prev, cur))
            while cur > prev and bands and bands[-1][2] < cur:
                k, top, _ = bands.pop()
                if top > cur:
                    bands.append((k, top, cur))
                    break
        total = 0.0
        for k, top, bottom in bands:
            s_k = sum(float(lr[tau]) for tau in range(k, t + 1))
            x = float(lr[k]) ** (-gamma) * s_k
            total += (top - bottom) * (1.0 - (c * x + 1.0) ** (-beta))
        out.append(b * total)
    return np.array(out, dtype=np.float64)


def multipower_drop(
    lr: FloatArray, at: Iterable[int], *, b: float, c: float, beta: float, gamma: float, w: int | None = None
) -> FloatArray:
    """The multi-power loss drop ``LD(t)`` at the steps ``at``, exact and vectorised: O(K * len(at)).

    ``S_k(t) = P(t) - P(k-1)`` from one cumulative sum ``P`` of the LRs; only the ``K`` annealing terms
    (a step whose LR fell after the warmup, and the part of it an LR increase took back) contribute, in
    blocks of at most 4M elements. An LR increase (a warm restart) takes back the most recent decreases
    below the new LR, from that step on, so the drop is never negative and a restart to the peak
    resets it to 0: :func:`multipower_drop_naive` has the definition.

    Example:
        >>> lr = np.array([1.0, 1.0, 0.5, 0.25])
        >>> multipower_drop(lr, [0, 2, 3], b=1.0, c=1.0, beta=1.0, gamma=0.0).round(6).tolist()
        [0.0, 0.166667, 0.264286]
        >>> sgdr = np.array([1.0, 0.5, 0.25, 1.0, 0.5])
        >>> multipower_drop(sgdr, [2, 3, 4], b=1.0, c=1.0, beta=1.0, gamma=0.0).round(6).tolist()
        [0.264286, 0.0, 0.166667]
    """
    lr = np.asarray(lr, dtype=np.float64)
    at_arr = np.asarray(list(at) if not isinstance(at, np.ndarray) else at, dtype=np.int64)
    w = warmup_end(lr) if w is None else w
    ks, dk, froms = _annealings(lr, w)
    out = np.zeros(len(at_arr), dtype=np.float64)
    if len(ks) == 0 or len(at_arr) == 0:
        return out
    p = np.cumsum(lr)
    p_before = p[ks - 1]  # P(k-1); k >= 1 always
    scale = c * lr[ks] ** (-gamma)
    width = max(1, _CHUNK // len(ks))
    for lo in range(0, len(at_arr), width):
        t = at_arr[lo : lo + width]
        s = p[t][None, :] - p_before[:, None]  # (K, m): S_k(t), meaningful where k <= t
        g = -np.expm1(-beta * np.log1p(scale[:, None] * np.maximum(s, 0.0)))
        g *= froms[:, None] <= t[None, :]
        out[lo : lo + width] = dk @ g
    return b * np.maximum(out, 0.0)


def tissue_momentum(lr: FloatArray, lam: float, *, w: int | None = None) -> FloatArray:
    """Tissue et al.'s annealing area ``S2(t)``: the cumulative sum of ``m_i = lam * m_{i-1} + d_i``.

    O(T): a first-order linear filter and a cumulative sum.

    Example:
        >>> tissue_momentum(np.array([1.0, 1.0, 0.5, 0.25]), 0.5).tolist()
        [0.0, 0.0, 0.5, 1.0]
    """
    lfilter = _scipy().signal.lfilter

    lr = np.asarray(lr, dtype=np.float64)
    w = warmup_end(lr) if w is None else w
    m = lfilter([1.0], [1.0, -lam], _drops(lr, w))
    return np.asarray(np.cumsum(m), dtype=np.float64)


def curve(
    law: str,
    params: Mapping[str, float],
    lr: FloatArray,
    at: Iterable[int] | None = None,
    *,
    lam: float = 0.999,
) -> FloatArray:
    """The loss a law predicts for the LR trace ``lr`` at the steps ``at`` (default: every step).

    The formulas are in the module docstring; a step where ``S1`` is 0 (a warmup from 0) gives ``inf``.

    Example:
        >>> lr = np.array([1.0, 1.0, 0.5, 0.25])
        >>> p = {"L0": 1.0, "A": 1.0, "alpha": 1.0, "C": 1.0}
        >>> curve("tissue", p, lr, lam=0.5).round(6).tolist()
        [2.0, 1.5, 0.9, 0.363636]
    """
    lr = np.asarray(lr, dtype=np.float64)
    t = np.arange(len(lr)) if at is None else np.asarray(list(at) if not isinstance(at, np.ndarray) else at)
    t = t.astype(np.int64)
    w = warmup_end(lr)
    s1 = np.cumsum(lr ** params.get("zeta", 1.0))[t]
    with np.errstate(divide="ignore", invalid="ignore"):  # S1 = 0: inf (0 x inf with A = 0: nan)
        power = params["L0"] + params["A"] * np.where(s1 > 0, s1, 0.0) ** (-params["alpha"])
    if law == "tissue":
        return np.asarray(power - params["C"] * tissue_momentum(lr, lam, w=w)[t], dtype=np.float64)
    if law == "multipower":
        drop = multipower_drop(
            lr, t, b=params["B"], c=params["C"], beta=params["beta"], gamma=params["gamma"], w=w
        )
        return np.asarray(power - drop, dtype=np.float64)
    raise PredictError(f"law must be one of {', '.join(LAWS)}, got {law!r}")


# ---------------------------------------------------------------------------------------------
# the fitted law and its predictions
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Prediction:
    """A law's prediction for one schedule.

    Attributes:
        name: the candidate's name.
        lr: the schedule's LR of every update.
        steps: the steps of :attr:`loss` (evenly spaced, the last update included).
        loss: the predicted training loss at :attr:`steps`.
        final_loss: the predicted training loss after the last update.
        final_val_loss: :attr:`final_loss` plus the law's validation offset, when it has one.
    """

    name: str
    lr: FloatArray
    steps: npt.NDArray[np.int64]
    loss: FloatArray
    final_loss: float
    final_val_loss: float | None

    @property
    def score(self) -> float:
        """What ranks candidates: the final validation loss when predicted, else the final loss."""
        return self.final_val_loss if self.final_val_loss is not None else self.final_loss

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no curve)."""
        return {
            "name": self.name,
            "steps": len(self.lr),
            "final_loss": self.final_loss,
            "final_val_loss": self.final_val_loss,
        }


@dataclasses.dataclass(frozen=True)
class FittedLaw:
    """A law fitted to runs: its parameters (in the runs' LR units) and how well it fits them.

    Attributes:
        law: ``"multipower"`` or ``"tissue"``.
        params: the parameters by name (:data:`LAWS`).
        lam: tissue's momentum decay ``lambda`` (fixed or fitted; unused by multipower).
        runs: the names of the fitted traces.
        points: binned loss values the fit used.
        rmse: root-mean-square error of the law on those binned values.
        relative_rmse: ``rmse`` over the mean binned loss.
        val_offset: mean of ``val_loss - law`` at each run's last validation step (``None``: no
            validation loss was recorded; 0 for a law fitted to the validation loss itself).
        target: the series the law was fitted to, ``"loss"`` (training) or ``"val_loss"``.
    """

    law: str
    params: dict[str, float]
    lam: float = 0.999
    runs: tuple[str, ...] = ()
    points: int = 0
    rmse: float | None = None
    relative_rmse: float | None = None
    val_offset: float | None = None
    target: str = "loss"

    def curve(self, lr: FloatArray, at: Iterable[int] | None = None) -> FloatArray:
        """The law's loss for the LR trace ``lr`` at ``at`` (default every step): :func:`curve`."""
        return curve(self.law, self.params, lr, at, lam=self.lam)

    def predict(
        self, schedule: Schedule | FloatArray, steps: int | None = None, *, points: int = 256, name: str = ""
    ) -> Prediction:
        """The predicted curve and final loss of ``schedule`` over ``steps`` updates (:func:`predict`)."""
        return predict(self, schedule, steps, points=points, name=name)

    def heldout_error(self, trace: LossTrace) -> dict[str, float | None]:
        """How far the law is from a run it was not fitted to.

        Returns:
            ``rmse`` and ``relative_rmse`` on the run's series the law was fitted to (its binned training
            loss, or its validation losses), ``final_loss_error`` (relative error of that series' last
            bin), and ``final_val_error`` (relative error of the last recorded
            validation loss, when both the run and the law have one).
        """
        series = _val_trace(trace) if self.target == "val_loss" else trace
        bins = _bins(series, _fit_start(series), 200)
        y = bins.y
        pred = bins.mean(self.curve(trace.lr, bins.steps))
        rmse = float(np.sqrt(np.mean((pred - y) ** 2))) if len(y) else math.nan
        out: dict[str, float | None] = {
            "rmse": rmse,
            "relative_rmse": rmse / float(np.mean(y)) if len(y) else math.nan,
            "final_loss_error": float((pred[-1] - y[-1]) / y[-1]) if len(y) else math.nan,
            "final_val_error": None,
        }
        if self.val_offset is not None and len(trace.val_loss):
            v = float(self.curve(trace.lr, [int(trace.val_steps[-1])])[0]) + self.val_offset
            out["final_val_error"] = (v - float(trace.val_loss[-1])) / float(trace.val_loss[-1])
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping that :meth:`from_dict` reads back."""
        return {
            "law": self.law,
            "params": dict(self.params),
            "lambda": self.lam,
            "runs": list(self.runs),
            "points": self.points,
            "rmse": self.rmse,
            "relative_rmse": self.relative_rmse,
            "val_offset": self.val_offset,
            "target": self.target,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FittedLaw:
        """The law :meth:`to_dict` wrote.

        Example:
            >>> law = FittedLaw("tissue", {"L0": 2.0, "A": 0.5, "alpha": 0.4, "zeta": 1.0, "C": 30.0})
            >>> FittedLaw.from_dict(json.loads(law.to_json())) == law
            True
        """
        law = str(data["law"])
        if law not in LAWS:
            raise PredictError(f"law must be one of {', '.join(LAWS)}, got {law!r}")
        params = {
            k: float(data["params"].get(k, 1.0) if k == "zeta" else data["params"][k]) for k in LAWS[law]
        }
        offset = data.get("val_offset")
        return cls(
            law=law,
            params=params,
            lam=float(data.get("lambda", 0.999)),
            runs=tuple(data.get("runs", ())),
            points=int(data.get("points", 0)),
            rmse=None if data.get("rmse") is None else float(data["rmse"]),
            relative_rmse=None if data.get("relative_rmse") is None else float(data["relative_rmse"]),
            val_offset=None if offset is None else float(offset),
            target=str(data.get("target", "loss")),
        )


def predict(
    law: FittedLaw,
    schedule: Schedule | FloatArray,
    steps: int | None = None,
    *,
    points: int = 256,
    name: str = "",
) -> Prediction:
    """Predict the training (and validation) loss of ``schedule`` over ``steps`` updates.

    Args:
        law: a fitted law (:func:`fit`).
        schedule: a :class:`~cosanneal.schedules.Schedule` (unbound durations are bound to ``steps``) or
            the LR of every update.
        steps: the run length; default the schedule's end (its horizon) or the array's length.
        points: how many evenly spaced steps of the curve to evaluate (the last update always is).
        name: the candidate's name in tables.

    Raises:
        PredictError: the run length is unknown or not positive, or the LR is not finite and > 0.

    Example:
        >>> from cosanneal.schedules import WarmupStableDecay
        >>> law = FittedLaw("tissue", {"L0": 2.0, "A": 0.5, "alpha": 0.4, "C": 0.3})
        >>> p = predict(law, WarmupStableDecay(1e-3, "0.05dur", "0.75dur", "0.2dur"), steps=1000)
        >>> len(p.lr), int(p.steps[-1]), round(p.final_loss, 4)
        (1000, 999, 2.4993)
    """
    if isinstance(schedule, (np.ndarray, list, tuple)):
        lr = np.asarray(schedule, dtype=np.float64)
        if steps is not None:
            lr = lr[:steps]
    else:
        if schedule.unbound_fields():
            if steps is None:
                raise PredictError(f"{name or 'the schedule'}: its durations are fractions; give steps=N")
            schedule = schedule.bind(total_steps=steps)
        if steps is None:
            end = schedule.horizon
            if end is None or end < 1:
                raise PredictError(f"{name or 'the schedule'} never ends; give steps=N, the run length")
            steps = math.ceil(end)
        lr = np.asarray(schedule(np.arange(steps, dtype=np.float64)), dtype=np.float64)
    if len(lr) < 1:
        raise PredictError(f"{name or 'the schedule'}: steps must be >= 1, got {len(lr)}")
    if not np.all(np.isfinite(lr)) or np.any(lr < 0) or lr.sum() <= 0:
        raise PredictError(f"{name or 'the schedule'}: its LR must be finite, >= 0 and not all 0")
    n = len(lr)
    at = np.unique(np.round(np.linspace(0, n - 1, max(2, min(points, n)))).astype(np.int64))
    loss = law.curve(lr, at)
    final = float(loss[-1])
    val = None if law.val_offset is None else final + law.val_offset
    return Prediction(name or "schedule", lr, at, loss, final, val)


def rank(
    law: FittedLaw,
    candidates: Mapping[str, Schedule | FloatArray],
    steps: int | None = None,
    *,
    keep: int | None = None,
) -> list[Prediction]:
    """Predict every candidate and sort them, best (lowest predicted loss) first: a sweep's pre-filter.

    Candidates are ranked by :attr:`Prediction.score` (the final validation loss when the law has a
    validation offset, else the final training loss); ``keep`` returns only the best ``keep``.

    Example:
        >>> from cosanneal.schedules import Constant, Cosine
        >>> law = FittedLaw("tissue", {"L0": 2.0, "A": 0.5, "alpha": 0.4, "C": 1.0})
        >>> best = rank(law, {"flat": Constant(1e-3), "cosine": Cosine(1e-3, cycle_steps="1dur")}, 1000)
        >>> [p.name for p in best]
        ['cosine', 'flat']
    """
    predictions = [predict(law, schedule, steps, name=name) for name, schedule in candidates.items()]
    ordered = sorted(predictions, key=lambda p: p.score)
    return ordered if keep is None else ordered[:keep]


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------
def _fit_start(trace: LossTrace) -> int:
    return warmup_end(trace.lr) + 1


@dataclasses.dataclass(frozen=True)
class _Bins:
    """The recorded loss from a start step on, averaged in consecutive bins of equal counts."""

    steps: npt.NDArray[np.int64]  # the recorded steps in the bins
    edges: npt.NDArray[np.int64]  # bin k holds steps[edges[k]:edges[k+1]]
    mid: npt.NDArray[np.int64]  # each bin's mean step, rounded
    y: FloatArray  # each bin's mean loss
    sub: npt.NDArray[np.int64]  # indices into steps: at most _SUB evenly spaced in each bin

    def sub_mean(self, values: FloatArray) -> FloatArray:
        """Each bin's mean of ``values`` (one per index of :attr:`sub`)."""
        counts = np.minimum(np.diff(self.edges), _SUB)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return np.asarray(np.add.reduceat(values, starts) / counts, dtype=np.float64)

    def mean(self, values: FloatArray) -> FloatArray:
        """Each bin's mean of ``values`` (one per recorded step)."""
        return np.asarray(np.add.reduceat(values, self.edges[:-1]) / np.diff(self.edges), dtype=np.float64)


def _bins(trace: LossTrace, start: int, points: int) -> _Bins:
    """Means of the recorded loss from ``start`` on, in at most ``points`` bins."""
    keep = trace.steps >= start
    steps, loss = trace.steps[keep], trace.loss[keep]
    width = max(1, math.ceil(len(steps) / points))
    n_bins = math.ceil(len(steps) / width)
    edges = np.minimum(np.arange(n_bins + 1) * width, len(steps)).astype(np.int64)
    empty = np.zeros(0, np.int64)
    out = _Bins(steps, edges, empty, np.zeros(0), empty)
    if len(steps) == 0:
        return out
    mid = np.round(out.mean(steps.astype(np.float64))).astype(np.int64)
    sub = np.concatenate(
        [
            lo + np.unique(np.round(np.linspace(0, hi - lo - 1, min(hi - lo, _SUB))))
            for lo, hi in itertools.pairwise(edges)
        ]
    ).astype(np.int64)
    return dataclasses.replace(out, mid=mid, y=out.mean(loss), sub=sub)


def _val_trace(trace: LossTrace) -> LossTrace:
    """``trace`` with its validation losses as the series a law is fitted to."""
    return dataclasses.replace(trace, steps=trace.val_steps, loss=trace.val_loss)


def _usable(trace: LossTrace) -> int:
    return int(np.sum(trace.steps >= _fit_start(trace)))


def choose_target(traces: Sequence[LossTrace]) -> str:
    """The series :func:`fit` fits with ``target="auto"``: ``"val_loss"`` or ``"loss"``.

    ``"val_loss"`` when every run recorded validation losses after its warmup and they number at least
    :data:`MIN_VAL_POINTS` together (the law then predicts the validation loss itself, whatever gap the
    training loss has to it); else ``"loss"``, the training loss of every update.

    Example:
        >>> lr = np.linspace(1.0, 0.1, 400)
        >>> every_20 = np.arange(19, 400, 20)
        >>> tr = LossTrace(lr, np.arange(400), np.linspace(3, 2, 400), every_20, np.linspace(3, 2, 20))
        >>> choose_target([tr]), choose_target([dataclasses.replace(tr, val_steps=every_20[:5], val_loss=np.ones(5))])
        ('val_loss', 'loss')
    """
    vals = [_usable(_val_trace(tr)) for tr in traces]
    return "val_loss" if traces and min(vals) > 0 and sum(vals) >= MIN_VAL_POINTS else "loss"


def _check(traces: Sequence[LossTrace], target: str) -> None:
    if not traces:
        raise PredictError("fit needs at least one run's trace")
    names = ", ".join(tr.name for tr in traces)
    if target == "val_loss":
        usable = sum(_usable(_val_trace(tr)) for tr in traces)
        if usable < MIN_VAL_POINTS:
            raise PredictError(
                f"{names}: {usable} validation losses recorded after the warmup, too few to fit a loss law "
                f"to (needs >= {MIN_VAL_POINTS}); fit to the training loss (target 'loss'), or evaluate "
                "more often (eval.every_steps)"
            )
    else:
        usable = sum(_usable(tr) for tr in traces)
        if usable < MIN_UPDATES:
            raise PredictError(
                f"{names}: {usable} recorded updates after the warmup, too short to fit a loss law (needs "
                f">= {MIN_UPDATES}); fit a longer run, or add a second run"
            )
    anneal = 0.0
    for tr in traces:
        w = warmup_end(tr.lr)
        peak = float(tr.lr[w])
        after = tr.lr[w:]
        if peak > 0 and len(after):
            anneal = max(anneal, (peak - float(np.min(after))) / peak)
    if anneal < MIN_ANNEAL:
        raise PredictError(
            f"{names}: the LR never falls by {MIN_ANNEAL:.0%} of its peak after the warmup, so the annealing "
            "term cannot be fitted; fit a run whose LR decays (a cosine or a WSD cool-down)"
        )


@dataclasses.dataclass
class _Problem:
    """The binned traces in normalised LR units (``lr / scale``) and everything an evaluation reuses."""

    lrs: list[FloatArray]
    bins: list[_Bins]
    y: FloatArray
    ws: list[int]
    areas: dict[float, list[FloatArray]] = dataclasses.field(default_factory=dict)

    def s1(self, zeta: float) -> list[FloatArray]:
        """``S1`` with the area exponent ``zeta`` at the recorded steps of the bins (cached by ``zeta``)."""
        if zeta not in self.areas:
            if len(self.areas) > 64:
                self.areas.clear()
            self.areas[zeta] = [
                np.cumsum(lr**zeta)[b.steps] for lr, b in zip(self.lrs, self.bins, strict=True)
            ]
        return self.areas[zeta]


def _problem(traces: Sequence[LossTrace], points: int, scale: float) -> _Problem:
    per = max(8, points // len(traces))
    lrs, bins, ws = [], [], []
    for tr in traces:
        lr = tr.lr / scale
        lrs.append(lr)
        bins.append(_bins(tr, _fit_start(tr), per))
        ws.append(warmup_end(lr))
    return _Problem(lrs, bins, np.concatenate([b.y for b in bins]), ws)


def _columns(
    law: str, prob: _Problem, shape: Mapping[str, float], lam: float
) -> tuple[FloatArray, FloatArray]:
    """``S1^-alpha`` and the annealing term (its linear coefficient 1) of every bin.

    Both are the bin's means over its recorded steps; the multi-power drop (the costly term) is the mean
    of at most :data:`_SUB` evenly spaced steps of each bin.
    """
    u = np.concatenate(
        [b.mean(s1 ** (-shape["alpha"])) for b, s1 in zip(prob.bins, prob.s1(shape["zeta"]), strict=True)]
    )
    if law == "tissue":
        v = np.concatenate(
            [
                b.mean(tissue_momentum(lr, lam, w=w)[b.steps])
                for lr, b, w in zip(prob.lrs, prob.bins, prob.ws, strict=True)
            ]
        )
    else:
        v = np.concatenate(
            [
                b.sub_mean(
                    multipower_drop(
                        lr, b.steps[b.sub], b=1.0, c=shape["C"], beta=shape["beta"], gamma=shape["gamma"], w=w
                    )
                )
                for lr, b, w in zip(prob.lrs, prob.bins, prob.ws, strict=True)
            ]
        )
    return u, v


def _nonnegative(m: FloatArray, y: FloatArray) -> FloatArray:
    """``c >= 0`` minimising ``|m c - y|`` (non-negative least squares on unit-norm columns)."""
    nnls = _scipy().optimize.nnls
    norms = np.maximum(np.linalg.norm(m, axis=0), 1e-300)
    coef, _ = nnls(m / norms, y)
    return np.asarray(coef / norms, dtype=np.float64)


def _linear(y: FloatArray, u: FloatArray, v: FloatArray) -> tuple[FloatArray, float]:
    """``L0, A, B >= 0`` minimising ``|L0 + A u - B v - y|``, and that squared error."""
    m = np.column_stack([np.ones_like(u), u, -v])
    coef = _nonnegative(m, y)
    r = m @ coef - y
    return coef, float(r @ r)


_SHAPES = {"multipower": ("alpha", "C", "beta", "gamma"), "tissue": ("alpha",)}
_BOUNDS = {
    "alpha": (1e-3, 5.0),
    "C": (1e-4, 1e4),
    "beta": (1e-3, 20.0),
    "gamma": (1e-3, 3.0),
    "zeta": (1e-3, 1.5),
}
_GRID = {
    "multipower": [
        {"alpha": a, "C": c, "beta": b, "gamma": g}
        for a in (0.2, 0.5, 1.0)
        for c in (0.3, 3.0)
        for b in (0.5, 2.0)
        for g in (0.3, 0.7)
    ],
    "tissue": [{"alpha": a} for a in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)],
}
_ZETAS = (1.0, 0.3)  # the starts of a fitted area exponent


def fit(
    traces: Sequence[LossTrace],
    law: str = "multipower",
    *,
    target: str = "auto",
    zeta: float | None = 1.0,
    lam: float | None = None,
    points: int = 200,
) -> FittedLaw:
    """Fit ``law`` to the loss of one or more runs (shared parameters).

    Least squares by variable projection: the shape parameters in log space by
    :func:`scipy.optimize.least_squares`, ``L0``, ``A`` and the annealing coefficient by non-negative
    least squares at every evaluation, from a fixed grid of starts (no random ones: the same runs give
    the same law, bit for bit), then two soft-L1 reweighted passes so a loss spike does not pull the fit.

    Args:
        traces: the runs (:func:`trace_from_run`, or a :class:`LossTrace` built by hand), e.g. one cosine
            and one WSD run; one run works if its LR anneals.
        law: ``"multipower"`` or ``"tissue"`` (module docstring).
        target: the series fitted: ``"val_loss"`` (the recorded validation losses: the law predicts the
            validation loss itself), ``"loss"`` (the training loss of every update, binned; the validation
            loss is then predicted as the law plus the runs' last gap), or ``"auto"``
            (:func:`choose_target`: ``val_loss`` when the runs recorded enough of them).
        zeta: the area exponent ``zeta`` of ``S1 = sum eta^zeta``; ``None`` fits it in ``[0.001, 1.5]``,
            ``1.0`` is both papers' forward area.
        lam: tissue's momentum decay ``lambda``; ``None`` fits it in ``[0.9, 0.99999]`` (0.999 in the paper).
        points: the training loss is averaged into at most this many bins (split over the runs): the
            smoothing of a noisy training loss, and the evaluation cost of the fit.

    Raises:
        PredictError: too few losses to fit (fewer than :data:`MIN_UPDATES` recorded updates, or
            :data:`MIN_VAL_POINTS` validation losses, after the warmup), or no run whose LR falls after the
            warmup (the annealing term cannot be identified), or an unknown law or target.

    Example:
        >>> from cosanneal.schedules import Cosine
        >>> lr = Cosine(1e-3, cycle_steps=30)(np.arange(30))
        >>> fit([LossTrace(lr, np.arange(30), 3.0 - np.arange(30) / 30, name="runs/short")])
        Traceback (most recent call last):
        ...
        cosanneal.analysis.predict.PredictError: runs/short: 29 recorded updates after the warmup, too short to fit a loss law (needs >= 50); fit a longer run, or add a second run
    """
    least_squares = _scipy().optimize.least_squares

    if law not in LAWS:
        raise PredictError(f"law must be one of {', '.join(LAWS)}, got {law!r}")
    if target not in ("auto", *TARGETS):
        raise PredictError(f"target must be one of auto, {', '.join(TARGETS)}, got {target!r}")
    chosen = choose_target(traces) if target == "auto" else target
    _check(traces, chosen)
    fitted_traces = [_val_trace(tr) for tr in traces] if chosen == "val_loss" else list(traces)
    scale = max(float(np.max(tr.lr)) for tr in traces)
    prob = _problem(fitted_traces, points, scale)
    y = prob.y
    fit_zeta = zeta is None
    shape_names = _SHAPES[law] + (("zeta",) if fit_zeta else ())
    zetas = _ZETAS if fit_zeta else (float(zeta),)  # type: ignore[arg-type]
    fit_lam = law == "tissue" and lam is None
    lams = (0.99, 0.999, 0.9999) if fit_lam else (0.999 if lam is None else lam,)

    # stage 1: the linear parameters by NNLS at every grid start
    starts: list[tuple[float, dict[str, float], float]] = []
    for lam0 in lams:
        for z0 in zetas:
            for grid_shape in _GRID[law]:
                shape = {**grid_shape, "zeta": z0}
                u, v = _columns(law, prob, shape, lam0)
                starts.append((_linear(y, u, v)[1], shape, lam0))
    starts.sort(key=lambda s: s[0])

    # stage 2: variable projection: the shape parameters (log space) by least squares, L0, A and the
    # annealing coefficient by NNLS at every evaluation; stage 3: reweighted (soft-L1) passes
    lo = [math.log(_BOUNDS[k][0]) for k in shape_names]
    hi = [math.log(_BOUNDS[k][1]) for k in shape_names]
    if fit_lam:
        lo.append(math.log(1e-5))  # log(1 - lambda)
        hi.append(math.log(0.1))

    def unpack(x: FloatArray) -> tuple[dict[str, float], float]:
        shape = {k: float(math.exp(x[i])) for i, k in enumerate(shape_names)}
        shape.setdefault("zeta", zetas[0])
        return shape, (1.0 - math.exp(x[-1]) if fit_lam else lams[0])

    def solve(x: FloatArray, weights: FloatArray) -> tuple[FloatArray, FloatArray]:
        shape, lam_x = unpack(x)
        u, v = _columns(law, prob, shape, lam_x)
        m = np.column_stack([np.ones_like(u), u, -v])
        coef = _nonnegative(m * weights[:, None], y * weights)
        return coef, np.asarray(m @ coef - y, dtype=np.float64)

    def refine(x0: FloatArray, weights: FloatArray) -> FloatArray:
        x0 = np.clip(x0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
        res = least_squares(lambda x: solve(x, weights)[1] * weights, x0, bounds=(lo, hi), max_nfev=200)
        return np.asarray(res.x, dtype=np.float64)

    ones = np.ones_like(y)
    best: tuple[float, FloatArray] | None = None
    for _, shape, lam0 in starts[:3]:
        x0 = [math.log(shape[k]) for k in shape_names] + ([math.log(1.0 - lam0)] if fit_lam else [])
        x = refine(np.array(x0), ones)
        r = solve(x, ones)[1]
        if best is None or float(r @ r) < best[0]:
            best = (float(r @ r), x)
    assert best is not None
    x = best[1]
    for _ in range(2):  # residuals beyond 3 noise scales (loss spikes) weigh linearly, not quadratically
        r = solve(x, ones)[1]
        f_scale = 3.0 * 1.4826 * float(np.median(np.abs(r - np.median(r))))
        if f_scale <= 1e-9 * float(np.mean(np.abs(y))):
            break
        weights = (1.0 + (r / f_scale) ** 2) ** -0.25  # sqrt of the soft-L1 weight
        x = refine(x, weights)
    coef, r = solve(x, ones)
    shape, lam_fit = unpack(x)
    p = {"L0": float(coef[0]), "A": float(coef[1]), "K": float(coef[2]), **shape}
    params = _raw_params(law, p, scale)
    rmse = math.sqrt(float(r @ r) / len(y))
    fitted = FittedLaw(
        law=law,
        params=params,
        lam=lam_fit,
        runs=tuple(tr.name for tr in traces),
        points=len(y),
        rmse=rmse,
        relative_rmse=rmse / float(np.mean(y)),
        target=chosen,
    )
    offset = 0.0 if chosen == "val_loss" else _val_offset(fitted, traces)
    return dataclasses.replace(fitted, val_offset=offset)


def _raw_params(law: str, p: Mapping[str, float], r: float) -> dict[str, float]:
    """Parameters fitted on ``lr / r`` in the units of ``lr`` (the same curves)."""
    out = {"L0": p["L0"], "A": p["A"] * r ** (p["alpha"] * p["zeta"]), "alpha": p["alpha"], "zeta": p["zeta"]}
    if law == "tissue":
        out["C"] = p["K"] / r
    else:
        out.update(B=p["K"] / r, C=p["C"] * r ** (p["gamma"] - 1.0), beta=p["beta"], gamma=p["gamma"])
    return {k: float(out[k]) for k in LAWS[law]}


def _val_offset(law: FittedLaw, traces: Sequence[LossTrace]) -> float | None:
    gaps = []
    for tr in traces:
        if len(tr.val_loss):
            t = int(tr.val_steps[-1])
            gaps.append(float(tr.val_loss[-1]) - float(law.curve(tr.lr, [t])[0]))
    return float(np.mean(gaps)) if gaps else None
