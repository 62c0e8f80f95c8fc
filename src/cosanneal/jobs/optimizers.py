"""The optimizer a config names: SGD, AdamW, any ``torch.optim`` optimizer, or a user's by import path.

``[optimizer] name`` is

* ``"sgd"`` or ``"adamw"``: ``torch.optim.SGD`` with ``momentum``/``nesterov``, ``torch.optim.AdamW``
  with ``betas``/``eps`` (the named keys of ``[optimizer]``);
* the name of any other optimizer class in ``torch.optim`` (``"Adam"``, ``"RAdam"``, ``"NAdam"``,
  ``"RMSprop"``, ``"Adagrad"``, ``"Adafactor"``, ...; case does not matter);
* ``"adamw_schedulefree"`` or ``"sgd_schedulefree"``: the schedule-free AdamW (with ``betas``/``eps``)
  or SGD (with ``momentum``) of the ``schedulefree`` package (Defazio et al. 2024; ``pip install
  schedulefree==1.4.1``, part of ``cosanneal[runtime]``); the trainer switches its train/eval modes
  and its schedule must be constant after the warmup (:mod:`cosanneal.jobs.optimizer_modes`);
* ``"package.module:Class"``: a user's ``torch.optim.Optimizer`` subclass.

``[optimizer.options]`` is passed to the constructor as keyword arguments, for every optimizer
(``amsgrad = true``, ``foreach = false``, ``alpha = 0.9`` ...). The LR is never an option (it comes from
the schedule) and weight decay is per group (``weight_decay``, ``[[optimizer.groups]]``). Every failure
is a :class:`~cosanneal.errors.ConfigError` naming the key, raised while the job is built, before any
training.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any

import torch
from torch import nn

from cosanneal.errors import ConfigError
from cosanneal.jobs.config import OptimizerConfig
from cosanneal.jobs.optimizer_modes import is_schedule_free

__all__ = ["SCHEDULE_FREE", "build_optimizer", "optimizer_class", "param_groups", "torch_optimizers"]

#: The shorthands, and the keys of ``[optimizer]`` each of them reads (every other optimizer reads none).
_NAMED: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"),
    "adamw": ("betas", "eps"),
    "adamw_schedulefree": ("betas", "eps"),
    "sgd_schedulefree": ("momentum",),
}
#: The schedule-free shorthands: their class in the ``schedulefree`` package.
SCHEDULE_FREE = {"adamw_schedulefree": "AdamWScheduleFree", "sgd_schedulefree": "SGDScheduleFree"}
#: Constructor arguments that are not options: they come from the schedule or the groups.
_NOT_OPTIONS = {
    "params": "the parameters come from the model (and [[optimizer.groups]])",
    "lr": "the LR comes from the schedule (schedule.peak_lr; a group's lr_scale multiplies it)",
    "weight_decay": "set optimizer.weight_decay (or a group's weight_decay)",
}
#: Optimizers whose ``step`` needs a closure, which a training loop with one backward per update lacks.
_NEEDS_CLOSURE = {"LBFGS"}


def torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    """The optimizer classes ``torch.optim`` exports, by name.

    Example:
        >>> {"SGD", "Adam", "AdamW", "RAdam"} <= set(torch_optimizers())
        True
    """
    found: dict[str, type[torch.optim.Optimizer]] = {}
    for name in dir(torch.optim):
        value = getattr(torch.optim, name)
        if (
            isinstance(value, type)
            and issubclass(value, torch.optim.Optimizer)
            and value is not torch.optim.Optimizer
        ):
            found[name] = value
    return found


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The class ``[optimizer] name`` stands for.

    Raises:
        ConfigError: an unknown name (with the closest ``torch.optim`` names), an import path that does
            not import, a class that is not a ``torch.optim.Optimizer``, or a schedule-free shorthand
            without the ``schedulefree`` package.

    Example:
        >>> optimizer_class("adamw"), optimizer_class("radam")
        (<class 'torch.optim.adamw.AdamW'>, <class 'torch.optim.radam.RAdam'>)
        >>> optimizer_class("adamw_schedulefree").__name__
        'AdamWScheduleFree'
    """
    if name.lower() in SCHEDULE_FREE:
        try:
            schedulefree = importlib.import_module("schedulefree")
        except ImportError:
            raise ConfigError(
                f"optimizer.name: {name!r} needs the schedulefree package, which is not installed; "
                "pip install schedulefree==1.4.1 (it comes with cosanneal[runtime])"
            ) from None
        cls: type[torch.optim.Optimizer] = getattr(schedulefree, SCHEDULE_FREE[name.lower()])
        return cls
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"optimizer.name: cannot import {name!r} ({type(exc).__name__}: {exc}); give "
                "'package.module:Class' of an importable module"
            ) from None
        if not (isinstance(value, type) and issubclass(value, torch.optim.Optimizer)):
            raise ConfigError(
                f"optimizer.name: {name!r} is not a torch.optim.Optimizer subclass, got {value!r}"
            )
        return value
    known = torch_optimizers()
    spelled = {key.lower(): key for key in known}  # lower case -> torch.optim's own spelling
    key = spelled.get(name.lower())
    if key is None:
        close = difflib.get_close_matches(name.lower(), list(spelled), n=3, cutoff=0.6)
        close += difflib.get_close_matches(name.lower(), list(SCHEDULE_FREE), n=1, cutoff=0.6)
        hint = f"did you mean {', '.join(repr(spelled.get(c, c)) for c in close)}? " if close else ""
        raise ConfigError(
            f"optimizer.name: {name!r} is not a torch.optim optimizer; {hint}use 'sgd', 'adamw', a torch.optim "
            "class name (Adam, RAdam, NAdam, RMSprop, ...), 'adamw_schedulefree', 'sgd_schedulefree' or "
            "'package.module:Class'"
        )
    return known[key]


def param_groups(model: nn.Module, cfg: OptimizerConfig, peak_lr: float) -> list[dict[str, Any]]:
    """Split parameters into groups by the ``[[optimizer.groups]]`` regexes.

    The first regex that matches a parameter's name claims it; the rest form the default group. A
    group's LR is ``peak_lr * lr_scale`` (the schedule's shape then multiplies it), its weight decay
    the group's or the optimizer's.
    """
    claimed: list[list[nn.Parameter]] = [[] for _ in cfg.groups]
    default: list[nn.Parameter] = []
    patterns = [re.compile(g.match) for g in cfg.groups]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        for i, pattern in enumerate(patterns):
            if pattern.search(name):
                claimed[i].append(param)
                break
        else:
            default.append(param)
    groups: list[dict[str, Any]] = [{"params": default, "lr": peak_lr, "weight_decay": cfg.weight_decay}]
    for i, (group, params) in enumerate(zip(cfg.groups, claimed, strict=True)):
        if not params:
            raise ConfigError(f"optimizer.groups[{i}].match: {group.match!r} matches no parameter")
        wd = cfg.weight_decay if group.weight_decay is None else group.weight_decay
        groups.append({"params": params, "lr": peak_lr * group.lr_scale, "weight_decay": wd})
    for g in groups:
        g["initial_lr"] = g["lr"]
    return [g for g in groups if g["params"]]


def _accepts(cls: type[torch.optim.Optimizer]) -> tuple[set[str], bool]:
    """The constructor's keyword names, and whether it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the constructor decide
        return set(), True
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, peak_lr: float) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names over :func:`param_groups`, with ``cfg.options`` as keyword arguments.

    ``sgd`` gets ``momentum`` and ``nesterov``, ``adamw`` and ``adamw_schedulefree`` ``betas`` and
    ``eps``, ``sgd_schedulefree`` ``momentum``; any other optimizer gets only its options (its own
    defaults otherwise) and the groups' weight decay. A schedule-free optimizer takes no
    ``warmup_steps`` option: its warmup is the schedule's.

    Raises:
        ConfigError: the class cannot be resolved, needs a closure (LBFGS), has no weight decay while
            one is set, is schedule-free and given a warmup, or refuses its options (the constructor's own
            message, one line).

    Example:
        >>> from cosanneal.jobs.config import OptimizerConfig
        >>> opt = build_optimizer(nn.Linear(2, 1), OptimizerConfig(name="RAdam", options={"decoupled_weight_decay": True}), 0.01)
        >>> type(opt).__name__, opt.param_groups[0]["lr"], opt.param_groups[0]["decoupled_weight_decay"]
        ('RAdam', 0.01, True)
    """
    cls = optimizer_class(cfg.name)
    shorthand = cfg.name.lower() if cfg.name.lower() in _NAMED else None
    if cls.__name__ in _NEEDS_CLOSURE and cls.__module__.startswith("torch.optim"):
        raise ConfigError(
            f"optimizer.name: {cls.__name__} needs a closure that re-evaluates the loss at every step, which "
            "cosanneal train does not run; use a first-order optimizer (sgd, adamw, Adam, ...)"
        )
    accepted, any_keyword = _accepts(cls)
    for key in cfg.options:
        if key in _NOT_OPTIONS:
            raise ConfigError(f"optimizer.options.{key}: not an option here; {_NOT_OPTIONS[key]}")
        if shorthand is not None and key in _NAMED[shorthand]:
            raise ConfigError(
                f"optimizer.options.{key}: set optimizer.{key} instead (it is a key of [optimizer])"
            )
        if key == "warmup_steps" and is_schedule_free(cls):
            raise ConfigError(
                f"optimizer.options.warmup_steps: {cls.__name__}'s warmup is the schedule's here (the LR the "
                "run records is the LR it uses); remove it and set the schedule's warmup"
            )
        if not any_keyword and key not in accepted:
            takes = ", ".join(sorted(accepted - {"self", "params", "lr"})) or "none"
            raise ConfigError(
                f"optimizer.options.{key}: {cls.__name__} takes no {key!r}; its options: {takes}"
            )
    decays = [cfg.weight_decay] + [g.weight_decay or 0.0 for g in cfg.groups]
    if any(decays) and not any_keyword and "weight_decay" not in accepted:
        raise ConfigError(
            f"optimizer.weight_decay: {cls.__name__} has no weight decay; set weight_decay = 0 (and in the groups)"
        )
    groups = param_groups(model, cfg, peak_lr)
    if "weight_decay" not in accepted and not any_keyword:
        for g in groups:
            g.pop("weight_decay", None)
    kwargs: dict[str, Any] = dict(cfg.options)
    if shorthand is not None:
        kwargs.update({key: getattr(cfg, key) for key in _NAMED[shorthand]})
    try:
        make: Any = cls  # a torch.optim.Optimizer subclass: (params, lr=..., **options)
        return make(groups, lr=peak_lr, **kwargs)  # type: ignore[no-any-return]
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "optimizer.options" if cfg.options else "optimizer.name"
        raise ConfigError(
            f"{where}: {cls.__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.options.items())}) refused: {first}"
        ) from None
