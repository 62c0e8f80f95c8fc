"""Tasks: what one training step computes and what an evaluation reports.

A task is any object with two methods (the :class:`Task` protocol)::

    training_step(model, batch) -> loss                 # a scalar tensor, or {"loss": tensor, **scalars}
    evaluate(model, batches) -> {"name": float, ...}    # metrics over the validation batches

The trainer moves each batch to the device, runs ``training_step`` in training mode under autocast
(``amp``) and ``evaluate`` in evaluation mode without gradients; it records every metric as
``val_<name>``, so checkpoints, early stopping, sweeps and reports rank by any metric the task
returns. An optional ``tokens(batch) -> int`` tells how many tokens a batch holds (durations in
tokens, ``"5e7tok"``, need it; the built-in language-model task has it).

Built-ins: ``classification`` (cross-entropy and accuracy of ``(inputs, labels)`` batches) and
``language_model`` (next-token cross-entropy and perplexity of ``(tokens, next_tokens)`` batches).
A user's task is ``task.entry = "pkg.module:make_task"`` (called with ``task.options``) or
``"pkg.module"`` (a module defining ``training_step`` and ``evaluate``).

Example:
    >>> import torch
    >>> task = ClassificationTask()
    >>> model = torch.nn.Linear(3, 2, bias=False)
    >>> batch = (torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))
    >>> round(float(task.training_step(model, batch)), 4)  # zero inputs: equal logits, ln 2
    0.6931
    >>> sorted(task.evaluate(model, [batch]))
    ['acc', 'loss']
"""

from __future__ import annotations

import importlib
import inspect
import math
import types
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn import functional

from cosanneal.errors import ConfigError
from cosanneal.jobs.config import TaskConfig


@runtime_checkable
class Task(Protocol):
    """The two methods the trainer calls (see the module docstring)."""

    def training_step(self, model: nn.Module, batch: Any) -> Any:
        """The loss of one (micro-)batch: a scalar tensor or ``{"loss": tensor, **scalars}``."""

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> Mapping[str, float]:
        """Metrics over the validation ``batches`` (already on the model's device)."""


def _pair(batch: Any, task: str, what: str) -> tuple[Tensor, Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch):
        return batch[0], batch[1]
    shape = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    raise TypeError(f"the {task} task needs batches of ({what}) tensors, got {shape}")


class ClassificationTask:
    """Cross-entropy on ``(inputs, labels)`` batches; reports ``loss`` and ``acc`` (top-1 accuracy).

    Formulas: ``loss = mean_i -log softmax(model(x))[i, y_i]``; ``acc = mean_i [argmax model(x)_i == y_i]``.
    """

    def training_step(self, model: nn.Module, batch: Any) -> Tensor:
        """Mean cross-entropy of one batch."""
        x, y = _pair(batch, "classification", "inputs, labels")
        return functional.cross_entropy(model(x), y)

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Mean loss and accuracy over every sample of ``batches``."""
        total, correct, loss_sum = 0, 0, 0.0
        for batch in batches:
            x, y = _pair(batch, "classification", "inputs, labels")
            logits = model(x)
            loss_sum += float(functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            total += len(y)
        return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1)}


class LanguageModelTask:
    """Next-token prediction on ``(tokens, targets)`` batches of shape ``(B, T)``; reports ``loss`` and ``ppl``.

    The model maps ``(B, T)`` token ids to ``(B, T, V)`` logits. Formulas: ``loss`` is the mean
    cross-entropy per target token (nats); ``ppl = exp(loss)``.
    """

    def training_step(self, model: nn.Module, batch: Any) -> Tensor:
        """Mean next-token cross-entropy of one batch."""
        x, y = _pair(batch, "language_model", "tokens, targets")
        logits = model(x)
        return functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Mean loss per token over ``batches`` and its perplexity."""
        tokens, loss_sum = 0, 0.0
        for batch in batches:
            x, y = _pair(batch, "language_model", "tokens, targets")
            logits = model(x)
            flat = logits.reshape(-1, logits.shape[-1])
            loss_sum += float(functional.cross_entropy(flat, y.reshape(-1), reduction="sum"))
            tokens += y.numel()
        loss = loss_sum / max(tokens, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}

    def tokens(self, batch: Any) -> int:
        """Target tokens in a batch (``B * T``)."""
        return int(_pair(batch, "language_model", "tokens, targets")[1].numel())


BUILTIN_TASKS: dict[str, type] = {
    "classification": ClassificationTask,
    "language_model": LanguageModelTask,
}


def _check_signature(task: Any, method: str, where: str) -> None:
    wanted = f"{method}(model, {'batch' if method == 'training_step' else 'batches'})"
    func = getattr(task, method, None)
    if not callable(func):
        raise ConfigError(
            f"task.entry: {where} has no {wanted}; a task defines training_step(model, batch) and "
            "evaluate(model, batches)"
        )
    try:
        signature = inspect.signature(func)
    except ValueError:  # a builtin without a signature: trust it
        return
    try:
        signature.bind(None, None)
    except TypeError:
        params = ", ".join(p.name for p in signature.parameters.values())
        raise ConfigError(
            f"task.entry: {where}: {method}({params}) cannot be called as {wanted}; change its parameters"
        ) from None


def build_task(cfg: TaskConfig) -> Task:
    """The task a ``[task]`` section names, checked to have the two methods with the right parameters.

    Raises:
        ConfigError: the entry cannot be imported, its factory fails on ``task.options``, or the task
            lacks ``training_step(model, batch)`` / ``evaluate(model, batches)`` (one line naming the key).

    Example:
        >>> type(build_task(TaskConfig(name="language_model"))).__name__
        'LanguageModelTask'
        >>> build_task(TaskConfig(entry="math"))
        Traceback (most recent call last):
        ...
        cosanneal.errors.ConfigError: task.entry: module 'math' has no training_step(model, batch); a task defines training_step(model, batch) and evaluate(model, batches)
    """
    if cfg.entry is None:
        return BUILTIN_TASKS[cfg.name]()  # type: ignore[no-any-return]
    task: Any
    if ":" in cfg.entry:
        from cosanneal.jobs.builders import construct, resolve_entry

        task = construct("task.options", repr(cfg.entry), resolve_entry(cfg.entry, "task.entry"), cfg.options)
        where = f"the task {cfg.entry!r} builds"
    else:
        try:
            task = importlib.import_module(cfg.entry)
        except ImportError as exc:
            raise ConfigError(
                f"task.entry: cannot import module {cfg.entry!r} ({exc}); check PYTHONPATH"
            ) from exc
        if cfg.options:
            raise ConfigError(
                "task.options: a task module takes no options; name a factory 'package.module:make_task' instead"
            )
        where = f"module {cfg.entry!r}"
    for method in ("training_step", "evaluate"):
        _check_signature(task, method, where)
    return task  # type: ignore[no-any-return]


def step_loss(out: Any) -> tuple[Tensor, dict[str, Any]]:
    """Split what ``training_step`` returned into the loss and the extra scalars (``train_<name>``).

    Raises:
        TypeError: ``out`` is not a scalar tensor or a mapping with a scalar tensor ``loss``.

    Example:
        >>> import torch
        >>> loss, extra = step_loss({"loss": torch.tensor(2.0), "aux": torch.tensor(0.5)})
        >>> float(loss), sorted(extra)
        (2.0, ['train_aux'])
    """
    extra: dict[str, Any] = {}
    if isinstance(out, Mapping):
        if "loss" not in out:
            raise TypeError(
                f"training_step returned a dict without 'loss' (keys: {', '.join(map(str, out))})"
            )
        extra = {
            f"train_{k}": (v.detach() if isinstance(v, Tensor) else v) for k, v in out.items() if k != "loss"
        }
        out = out["loss"]
    if not isinstance(out, Tensor) or out.numel() != 1 or not out.dtype.is_floating_point:
        got = (
            f"a tensor of shape {tuple(out.shape)} ({out.dtype})"
            if isinstance(out, Tensor)
            else type(out).__name__
        )
        raise TypeError(
            f"training_step must return a scalar float loss tensor or {{'loss': tensor, ...}}, got {got}"
        )
    for name, value in extra.items():
        if not isinstance(value, (int, float)) and not (isinstance(value, Tensor) and value.numel() == 1):
            raise TypeError(f"training_step's {name[6:]!r} must be a number or a one-element tensor")
    return out.reshape(()), extra


def check_metrics(metrics: Any) -> dict[str, float]:
    """``evaluate``'s result as ``{name: float}``.

    Raises:
        TypeError: not a mapping of names to numbers.
    """
    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError(f"evaluate must return a non-empty dict of metrics, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(
                f"evaluate returned the metric name {name!r}; use identifiers like 'loss' or 'bleu'"
            )
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"evaluate's metric {name!r} must be a number, got {type(value).__name__}")
        out[name] = float(value)
    return out


def batch_tokens(task: Any, batch: Any) -> int | None:
    """Tokens in ``batch`` when the task can count them (its ``tokens(batch)``), else None."""
    counter = getattr(task, "tokens", None)
    if counter is None or (isinstance(task, types.ModuleType) and not callable(counter)):
        return None
    return int(counter(batch))


def batch_samples(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (0 when it holds none).

    Example:
        >>> import torch
        >>> batch_samples({"ids": torch.zeros(8, 16), "mask": torch.ones(8, 16)})
        8
    """
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    items = (
        batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    )
    for item in items:
        n = batch_samples(item)
        if n:
            return n
    return 0


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Every tensor of a (nested) batch moved to ``device``; other values as they are."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device, non_blocking) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch


def split_batch(batch: Any, parts: int) -> list[Any]:
    """``batch`` cut into ``parts`` micro-batches along the first dimension (gradient accumulation).

    Tensors are split with ``tensor_split``; lists the length of the batch are sliced; other values
    are given to every micro-batch.

    Example:
        >>> import torch
        >>> [tuple(x.shape) for x, _ in split_batch((torch.zeros(6, 2), torch.zeros(6)), 3)]
        [(2, 2), (2, 2), (2, 2)]
    """
    if parts == 1:
        return [batch]
    n = batch_samples(batch)

    bounds = [i * (n // parts) + min(i, n % parts) for i in range(parts + 1)]  # tensor_split's sizes

    def cut(value: Any, i: int) -> Any:
        if isinstance(value, Tensor) and value.dim() and value.shape[0] == n:
            return value.tensor_split(parts)[i]
        if isinstance(value, Mapping):
            return type(value)({k: cut(v, i) for k, v in value.items()})  # type: ignore[call-arg]
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return type(value)(*(cut(v, i) for v in value))
        leaves = (
            not any(isinstance(v, (Tensor, Mapping, tuple, list)) for v in value)
            if isinstance(value, list)
            else False
        )
        if leaves and len(value) == n:
            return value[bounds[i] : bounds[i + 1]]
        if isinstance(value, (tuple, list)):
            return type(value)(cut(v, i) for v in value)
        return value

    return [cut(batch, i) for i in range(parts)]


__all__ = [
    "BUILTIN_TASKS",
    "ClassificationTask",
    "LanguageModelTask",
    "Task",
    "batch_samples",
    "batch_tokens",
    "build_task",
    "check_metrics",
    "split_batch",
    "step_loss",
    "to_device",
]
