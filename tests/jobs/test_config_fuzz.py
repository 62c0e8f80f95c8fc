"""Fuzz the config loader: one key of a valid config replaced by any value, or one unknown key added.

The rules below are written from the config reference (docs/training.md), not from the loader: each
key has a rule that says whether a value is valid and, when it is not, which dotted key the error
must name. A valid value must load (and the loaded config must reload from its ``to_dict``); an
invalid one must raise :class:`ConfigError` with one short line naming that key. Config loading only:
nothing is trained.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import shlex
import tomllib
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blobs import BLOBS
from hypothesis import given, settings
from hypothesis import strategies as st

from cosanneal import ConfigError
from cosanneal.jobs.config import TrainConfig, config_from_dict
from cosanneal.schedules import kinds

ROOT = Path(__file__).resolve().parents[2]
BASES: dict[str, dict[str, Any]] = {
    "blobs": copy.deepcopy(BLOBS),
    "digits_adamw": tomllib.loads((ROOT / "examples/train/digits_adamw.toml").read_text()),
    "digits_sgdr": tomllib.loads((ROOT / "src/cosanneal/zoo/configs/digits_sgdr.toml").read_text()),
}
TASK_METRICS = {"classification": {"val_loss", "val_acc"}, "language_model": {"val_loss", "val_ppl"}}
MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
DURATION = re.compile(r"\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*(st|ep|sp|tok|dur)?\s*")
MODEL_OPTIONS = {
    "cnn": {"channels", "classes", "dropout"},
    "mlp": {"in_features", "hidden", "classes", "dropout"},
    "gpt": {"layers", "heads", "width", "block", "dropout"},
}
DATA_OPTIONS = {
    "digits": {"val_fraction", "split_seed"},
    "blobs": {"n", "classes", "dim", "val_fraction", "split_seed"},
    "pysource": {"block", "max_bytes", "val_fraction"},
}
ENTRY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")

# A rule gets the value and the whole config it was put into; it returns None when the config is
# valid, else the dotted key the error must name.
Rule = Callable[[Any, dict[str, Any]], str | None]


# ---- value classes, from the reference ----------------------------------------------------------------
def as_int(v: Any) -> int | None:
    """An integer key takes an int or a whole float (``2.0``), never a bool."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def as_num(v: Any) -> float | None:
    """A number key takes a finite int or float, never a bool."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        x = float(v)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def integer(low: int, high: int = 2**63 - 1, optional: bool = False) -> Callable[[Any], bool]:
    return lambda v: (optional and v is None) or ((n := as_int(v)) is not None and low <= n <= high)


def number(ok: Callable[[float], bool], optional: bool = False) -> Callable[[Any], bool]:
    return lambda v: (optional and v is None) or ((x := as_num(v)) is not None and ok(x))


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (str, bool)) and v in choices and type(v) is type(choices[0])


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def text(optional: bool = False) -> Callable[[Any], bool]:
    return lambda v: (optional and v is None) or (isinstance(v, str) and v.strip() != "")


def shell_words(v: Any) -> bool:
    """A command a shell would split into at least one word (``slurm.scontrol``)."""
    if not isinstance(v, str):
        return False
    try:
        return bool(shlex.split(v))
    except ValueError:
        return False


def entry(v: Any) -> bool:
    return v is None or (isinstance(v, str) and ENTRY.fullmatch(v) is not None)


def unit(x: float) -> bool:
    return 0 <= x < 1


def pair_in_unit(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(number(unit)(x) for x in v)


def regex(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        re.compile(v)
    except re.error:
        return False
    return True


def group_ok(g: Any) -> bool:
    return (
        isinstance(g, dict)
        and "match" in g
        and set(g) <= {"match", "lr_scale", "weight_decay"}
        and regex(g["match"])
        and number(lambda x: x > 0)(g.get("lr_scale", 1.0))
        and number(lambda x: x >= 0, optional=True)(g.get("weight_decay"))
    )


def simple(key: str, ok: Callable[[Any], bool]) -> Rule:
    return lambda v, cfg: None if ok(v) else key


# ---- rules that look at the rest of the config ----------------------------------------------------------
def section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    out: dict[str, Any] = cfg.get(name, {})
    return out


def metrics_of(cfg: dict[str, Any]) -> set[str] | None:
    """The metrics the config's task reports (None: a user's task, checked when it first evaluates)."""
    task = section(cfg, "task")
    if task.get("entry") is not None:
        return None
    return TASK_METRICS.get(task.get("name", "classification"), set())


def metric_ok(cfg: dict[str, Any], metric: Any) -> bool:
    names = metrics_of(cfg)
    return names is None or metric in names


def metric_rule(sec: str, key: str, default_enabled: bool) -> Rule:
    def rule(v: Any, cfg: dict[str, Any]) -> str | None:
        if not isinstance(v, str):
            return f"{sec}.{key}"
        enabled = section(cfg, sec).get("enabled", default_enabled)
        return None if not enabled or metric_ok(cfg, v) else f"{sec}.{key}"

    return rule


def enabled_rule(sec: str, key: str) -> Rule:
    def rule(v: Any, cfg: dict[str, Any]) -> str | None:
        if not isinstance(v, bool):
            return f"{sec}.enabled"
        metric = section(cfg, sec).get(key, "val_loss")
        return None if not v or metric_ok(cfg, metric) else f"{sec}.{key}"

    return rule


def builtin_rule(sec: str, options: dict[str, set[str]], default: str) -> Rule:
    """``model.name`` / ``data.name``: a built-in whose signature takes every option already given."""

    def rule(v: Any, cfg: dict[str, Any]) -> str | None:
        if section(cfg, sec).get("entry") is not None:
            return None if isinstance(v, str) and v.strip() else f"{sec}.name"
        if not isinstance(v, str) or v not in options:
            return f"{sec}.name"
        return None if set(section(cfg, sec).get("options", {})) <= options[v] else f"{sec}.options"

    return rule


def options_rule(sec: str, options: dict[str, set[str]], default: str) -> Rule:
    def rule(v: Any, cfg: dict[str, Any]) -> str | None:
        if not isinstance(v, dict):
            return f"{sec}.options"
        if section(cfg, sec).get("entry") is not None:
            return None
        name = section(cfg, sec).get("name", default)
        for key, value in v.items():
            if key not in options[name] or not OPTIONS_OK[key](value):
                return f"{sec}.options"
        return None

    return rule


def size(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def share(low_open: bool) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return (0 < v < 1) if low_open else (0 <= v < 1)

    return ok


OPTIONS_OK: dict[str, Callable[[Any], bool]] = {
    "channels": size,
    "classes": size,
    "in_features": size,
    "hidden": size,
    "n": size,
    "dim": size,
    "layers": size,
    "heads": size,
    "width": size,
    "block": size,
    "max_bytes": size,
    "split_seed": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "dropout": share(low_open=False),
    "val_fraction": share(low_open=True),
}


def nesterov_momentum(v: Any, cfg: dict[str, Any]) -> str | None:
    if not number(unit)(v):
        return "optimizer.momentum"
    opt = section(cfg, "optimizer")
    needs = is_sgd(opt) and opt.get("nesterov", False)
    return "optimizer.momentum" if needs and float(v) == 0 else None


def nesterov(v: Any, cfg: dict[str, Any]) -> str | None:
    if not isinstance(v, bool):
        return "optimizer.nesterov"
    opt = section(cfg, "optimizer")
    return "optimizer.nesterov" if v and is_sgd(opt) and opt.get("momentum", 0.9) == 0 else None


def is_sgd(opt: dict[str, Any]) -> bool:
    name = opt.get("name", "sgd")
    return isinstance(name, str) and name.lower() == "sgd"


def optimizer_name(v: Any, cfg: dict[str, Any]) -> str | None:
    # any identifier (a torch.optim class name, resolved when the job is built) or package.module:Class
    if not (isinstance(v, str) and (v.isidentifier() or ENTRY.fullmatch(v) is not None)):
        return "optimizer.name"
    opt = section(cfg, "optimizer")
    return (
        "optimizer.nesterov"
        if v.lower() == "sgd" and opt.get("nesterov") and opt.get("momentum", 0.9) == 0
        else None
    )


def optimizer_options(v: Any, cfg: dict[str, Any]) -> str | None:
    ok = isinstance(v, dict) and all(isinstance(k, str) and k.isidentifier() for k in v)
    return None if ok else "optimizer.options"


def telemetry_sinks(v: Any, cfg: dict[str, Any]) -> str | None:
    def entry_ok(e: Any) -> bool:
        return isinstance(e, str) and (
            e in ("tensorboard", "prometheus", "mlflow", "wandb") or ENTRY.fullmatch(e) is not None
        )

    def item_ok(item: Any) -> bool:
        if isinstance(item, dict):
            return (
                set(item) <= {"entry", "options"}
                and entry_ok(item.get("entry"))
                and isinstance(item.get("options", {}), dict)
            )
        return entry_ok(item)

    return None if isinstance(v, list) and all(map(item_ok, v)) else "telemetry.sinks"


def price_per_device_hour(v: Any, cfg: dict[str, Any]) -> str | None:
    """A price > 0 (or none), which needs a Prometheus sink to export the cost."""
    key = "telemetry.price_per_device_hour"
    if not number(lambda x: x > 0, optional=True)(v):
        return key
    tel = section(cfg, "telemetry")
    listed = {e if isinstance(e, str) else e.get("entry") for e in tel.get("sinks", [])}
    has_sink = tel.get("prometheus_port") is not None or tel.get("prometheus_textfile") is not None
    return key if v is not None and not (has_sink or "prometheus" in listed) else None


def needs_price(key: str, ok: Callable[[Any], bool]) -> Rule:
    """A cost key: ``ok`` or none, and set only with a price."""
    return lambda v, cfg: (
        key
        if not ok(v) or (v is not None and section(cfg, "telemetry").get("price_per_device_hour") is None)
        else None
    )


def ranked_metrics_error(cfg: dict[str, Any]) -> str | None:
    """The key a metric check names when the task's metrics change under the ranked metrics."""
    ck, es = section(cfg, "checkpoint"), section(cfg, "early_stopping")
    if ck.get("enabled", True) and not metric_ok(cfg, ck.get("best_metric", "val_loss")):
        return "checkpoint.best_metric"
    if es.get("enabled", False) and not metric_ok(cfg, es.get("metric", "val_loss")):
        return "early_stopping.metric"
    return None


def task_name(v: Any, cfg: dict[str, Any]) -> str | None:
    task = section(cfg, "task")
    if task.get("entry") is not None:
        return None if isinstance(v, str) and v.strip() else "task.name"
    if not isinstance(v, str) or v not in TASK_METRICS:
        return "task.name"
    return "task.options" if task.get("options") else ranked_metrics_error(cfg)


def task_entry(v: Any, cfg: dict[str, Any]) -> str | None:
    if v is None:
        task = section(cfg, "task")
        if task.get("name", "classification") not in TASK_METRICS:
            return "task.name"
        return "task.options" if task.get("options") else ranked_metrics_error(cfg)
    ok = isinstance(v, str) and (ENTRY.fullmatch(v) is not None or MODULE.fullmatch(v) is not None)
    return None if ok else "task.entry"


def task_options(v: Any, cfg: dict[str, Any]) -> str | None:
    if not isinstance(v, dict):
        return "task.options"
    return None if not v or section(cfg, "task").get("entry") is not None else "task.options"


def accumulate(v: Any, cfg: dict[str, Any]) -> str | None:
    n = as_int(v)
    if n is None or n < 1 or n >= 2**63:
        return "accumulate"
    return None if cfg.get("batch_size", 64) % n == 0 else "accumulate"


def max_steps(v: Any, cfg: dict[str, Any]) -> str | None:
    if not isinstance(v, str):
        return None if integer(1, optional=True)(v) else "max_steps"
    m = DURATION.fullmatch(v)
    if m is None or m[2] == "dur":
        return "max_steps"
    amount = float(m[1])
    if (m[2] or "st") == "st":
        return None if amount.is_integer() and 1 <= amount < 2**63 else "max_steps"
    return None if amount > 0 else "max_steps"


def scheduler_momentum(v: Any, cfg: dict[str, Any]) -> str | None:
    if v is None:
        return None
    return None if pair_in_unit(v) and v[1] <= v[0] else "scheduler.momentum"


def amp(v: Any, cfg: dict[str, Any]) -> str | None:
    if not one_of("none", "bf16", "fp16")(v):
        return "amp"
    return "scheduler.count" if v == "fp16" and section(cfg, "scheduler").get("count") == "manual" else None


def count(v: Any, cfg: dict[str, Any]) -> str | None:
    if not one_of("optimizer", "manual")(v):
        return "scheduler.count"
    return "scheduler.count" if v == "manual" and cfg.get("amp") == "fp16" else None


def schedule_kind(v: Any, cfg: dict[str, Any]) -> str | None:
    if isinstance(v, str) and v == "cosine":  # every base schedule is a cosine
        return None
    if isinstance(v, str) and v in kinds():
        return "schedule"  # another kind: some of the cosine's parameters are unknown to it
    return "schedule.kind"


def schedule_number(key: str) -> Rule:
    """Only definitely-bad values are drawn for schedule parameters (their own rules are tested elsewhere)."""
    return lambda v, cfg: None if number(lambda x: x > 0)(v) else f"schedule.{key}"


RULES: dict[str, Rule] = {
    "name": simple("name", text()),
    "seed": simple("seed", integer(0)),
    "epochs": simple("epochs", integer(1)),
    "batch_size": simple("batch_size", integer(1)),
    "max_steps": max_steps,
    "accumulate": accumulate,
    "compile": simple("compile", boolean),
    "compile_backend": simple("compile_backend", one_of("inductor", "aot_eager", "eager", "cudagraphs")),
    "data.num_workers": simple("data.num_workers", integer(0, 256)),
    "data.pin_memory": simple("data.pin_memory", boolean),
    "data.prefetch_factor": simple("data.prefetch_factor", integer(1)),
    "task.name": task_name,
    "task.entry": task_entry,
    "task.options": task_options,
    "device": simple("device", one_of("auto", "cpu", "cuda")),
    "amp": amp,
    "model.name": builtin_rule("model", MODEL_OPTIONS, "cnn"),
    "model.entry": simple("model.entry", entry),
    "model.options": options_rule("model", MODEL_OPTIONS, "cnn"),
    "data.name": builtin_rule("data", DATA_OPTIONS, "digits"),
    "data.entry": simple("data.entry", entry),
    "data.options": options_rule("data", DATA_OPTIONS, "digits"),
    "optimizer.name": optimizer_name,
    "optimizer.options": optimizer_options,
    "optimizer.momentum": nesterov_momentum,
    "optimizer.nesterov": nesterov,
    "optimizer.weight_decay": simple("optimizer.weight_decay", number(lambda x: x >= 0)),
    "optimizer.betas": simple("optimizer.betas", pair_in_unit),
    "optimizer.eps": simple("optimizer.eps", number(lambda x: x > 0)),
    "optimizer.grad_clip": simple("optimizer.grad_clip", number(lambda x: x > 0, optional=True)),
    "optimizer.groups": simple("optimizer.groups", lambda v: isinstance(v, list) and all(map(group_ok, v))),
    "optimizer.groups[0].match": simple("optimizer.groups[0].match", regex),
    "optimizer.groups[0].lr_scale": simple("optimizer.groups[0].lr_scale", number(lambda x: x > 0)),
    "optimizer.groups[0].weight_decay": simple(
        "optimizer.groups[0].weight_decay", number(lambda x: x >= 0, optional=True)
    ),
    "scheduler.count": count,
    "scheduler.momentum": scheduler_momentum,
    "schedule": simple("schedule", lambda v: False),  # only non-tables are drawn for the whole table
    "schedule.kind": schedule_kind,
    "schedule.peak_lr": schedule_number("peak_lr"),
    "schedule.cycle_steps": schedule_number("cycle_steps"),
    "schedule.cycle_mult": schedule_number("cycle_mult"),
    "eval.every_steps": simple("eval.every_steps", integer(1, optional=True)),
    "eval.batch_size": simple("eval.batch_size", integer(1)),
    "checkpoint.enabled": enabled_rule("checkpoint", "best_metric"),
    "checkpoint.keep_last": simple("checkpoint.keep_last", integer(1)),
    "checkpoint.best_metric": metric_rule("checkpoint", "best_metric", True),
    "checkpoint.best_mode": simple("checkpoint.best_mode", one_of("min", "max")),
    "checkpoint.keep_cycle_ends": simple("checkpoint.keep_cycle_ends", boolean),
    "checkpoint.every_steps": simple("checkpoint.every_steps", integer(1, optional=True)),
    "checkpoint.every_seconds": simple("checkpoint.every_seconds", number(lambda x: x > 0, optional=True)),
    "checkpoint.at_restarts": simple("checkpoint.at_restarts", boolean),
    "checkpoint.async_write": simple("checkpoint.async_write", boolean),
    "checkpoint.sharded": simple("checkpoint.sharded", boolean),
    "guard.enabled": simple("guard.enabled", boolean),
    "guard.max_consecutive": simple("guard.max_consecutive", integer(1)),
    "guard.on_exhausted": simple("guard.on_exhausted", one_of("rollback", "stop")),
    "guard.lr_factor": simple("guard.lr_factor", number(lambda x: 0 < x < 1)),
    "guard.adjust": simple("guard.adjust", one_of("peak", "floor")),
    "guard.max_rollbacks": simple("guard.max_rollbacks", integer(0)),
    "early_stopping.enabled": enabled_rule("early_stopping", "metric"),
    "early_stopping.metric": metric_rule("early_stopping", "metric", False),
    "early_stopping.mode": simple("early_stopping.mode", one_of("min", "max")),
    "early_stopping.patience_cycles": simple("early_stopping.patience_cycles", integer(1)),
    "early_stopping.min_delta": simple("early_stopping.min_delta", number(lambda x: x >= 0)),
    "telemetry.sinks": telemetry_sinks,
    "telemetry.tensorboard": simple("telemetry.tensorboard", boolean),
    "telemetry.prometheus_port": simple("telemetry.prometheus_port", integer(0, 65535, optional=True)),
    "telemetry.prometheus_address": simple("telemetry.prometheus_address", text()),
    "telemetry.prometheus_textfile": simple("telemetry.prometheus_textfile", text(optional=True)),
    "telemetry.mlflow_tracking_uri": simple("telemetry.mlflow_tracking_uri", text(optional=True)),
    "telemetry.mlflow_experiment": simple("telemetry.mlflow_experiment", text()),
    "telemetry.every": simple("telemetry.every", integer(1)),
    "telemetry.flush_rows": simple("telemetry.flush_rows", integer(1)),
    "telemetry.flush_seconds": simple("telemetry.flush_seconds", number(lambda x: 0 < x <= 3600)),
    "telemetry.progress": simple("telemetry.progress", boolean),
    "telemetry.progress_seconds": simple("telemetry.progress_seconds", number(lambda x: x > 0)),
    "telemetry.price_per_device_hour": price_per_device_hour,
    "telemetry.devices": needs_price("telemetry.devices", integer(1, optional=True)),
    "telemetry.planned_step_seconds": needs_price(
        "telemetry.planned_step_seconds", number(lambda x: x > 0, optional=True)
    ),
    "slurm.requeue": simple("slurm.requeue", boolean),
    "slurm.signal": simple("slurm.signal", one_of("SIGUSR1", "SIGUSR2", "SIGTERM")),
    "slurm.scontrol": simple("slurm.scontrol", shell_words),
    "resume.world_size": simple("resume.world_size", one_of("accumulate", "linear", "sqrt", "refuse")),
    "distributed.timeout_seconds": simple(
        "distributed.timeout_seconds", number(lambda x: 0 < x <= 86400, optional=True)
    ),
    "debug.inject_nan_at": simple(
        "debug.inject_nan_at", lambda v: isinstance(v, list) and all(integer(0)(x) for x in v)
    ),
    "debug.sleep_per_step": simple("debug.sleep_per_step", number(lambda x: 0 <= x <= 3600)),
    "debug.lr_trace_dir": simple("debug.lr_trace_dir", text(optional=True)),
}
for _sec, _options in (("model", MODEL_OPTIONS), ("data", DATA_OPTIONS)):
    for _name in set().union(*_options.values()):
        RULES[f"{_sec}.options.{_name}"] = simple(f"{_sec}.options.{_name}", OPTIONS_OK[_name])

# Values worth trying for a key besides the generic ones: the valid choices and the edges of the ranges.
EXAMPLES: dict[str, list[Any]] = {
    "device": ["auto", "cpu", "cuda", "tpu", "CPU"],
    "amp": ["none", "bf16", "fp16", "fp8"],
    "max_steps": [None, 1, 100, "100", "100st", "3ep", "0ep", "0.5ep", "0.5dur", "2x", "1.5", 0, 2**63],
    "accumulate": [1, 2, 3, 4, 8, 64, 0, 2**63],
    "task.name": ["classification", "language_model", "regression"],
    "task.entry": [None, "pkg.mod:make", "pkg.mod", "a b", "a:b:c"],
    "task.options": [{}, {"scale": 2}],
    "data.num_workers": [0, 2, 4, 256, 257, -1],
    "compile_backend": ["inductor", "aot_eager", "tvm"],
    "model.name": ["cnn", "mlp", "resnet"],
    "data.name": ["digits", "blobs", "mnist"],
    "model.entry": ["pkg.mod:build", "mod:f", "no-colon", "a:", ":b", "a.b:c.d"],
    "data.entry": ["pkg.mod:build", "no-colon"],
    "model.options": [{}, {"dropout": 0.5}, {"classes": 3}, {"depth": 2}],
    "data.options": [{}, {"val_fraction": 0.5}, {"n": 100}, {"size": 2}],
    "optimizer.name": ["sgd", "adamw", "adam", "RAdam", "SGD", "torch.optim:NAdam", "", "no such", "a:b:c"],
    "telemetry.sinks": [
        [],
        ["tensorboard"],
        ["a.b:c", {"entry": "d:e", "options": {"k": 1}}],
        ["wandb"],
        ["neptune"],
        [{"entry": 3}],
        [{"entry": "a:b", "x": 1}],
        "a:b",
    ],
    "optimizer.options": [{}, {"amsgrad": True}, {"foreach": False, "maximize": False}, {"bad key": 1}, []],
    "optimizer.betas": [[0.9, 0.999], [0.0, 0.5], [1.0, 0.9], [0.9], [0.9, 0.99, 0.999], [-0.1, 0.9]],
    "optimizer.groups": [[], [{"match": "bias"}], [{"match": "bias", "weight_decay": -1}], [{"lr_scale": 2}]],
    "optimizer.groups[0].match": ["bias", "", "(", "[a-z]+"],
    "scheduler.count": ["optimizer", "manual", "auto"],
    "scheduler.momentum": [[0.95, 0.85], [0.85, 0.95], [0.9, 0.9], [1.0, 0.5], [0.9]],
    "schedule.kind": ["cosine", "linear", "constant", "nope", ["cosine"], {"kind": "cosine"}],
    "checkpoint.best_metric": ["val_loss", "val_acc", "nope", ""],
    "early_stopping.metric": ["val_loss", "val_acc", "nope"],
    "checkpoint.best_mode": ["min", "max", "MIN"],
    "early_stopping.mode": ["min", "max", "mid"],
    "guard.on_exhausted": ["rollback", "stop", "retry"],
    "guard.adjust": ["peak", "floor", "both"],
    "telemetry.prometheus_port": [0, 1, 9100, 65535, 65536, 70000, -1],
    "seed": [0, 2**63 - 1, 2**63, 10**15, -1],
    "debug.inject_nan_at": [[], [1, 2], [-1], [1.5], ["1"]],
    "slurm.signal": ["SIGUSR1", "SIGUSR2", "SIGTERM", "SIGKILL", "USR1", "sigusr1"],
    "slurm.scontrol": ["scontrol", "sudo -n scontrol", "", "   ", "'unbalanced"],
    "resume.world_size": ["accumulate", "linear", "sqrt", "refuse", "auto", "Linear", "", True],
    "distributed.timeout_seconds": [0.5, 30, 86400, 86401, 0, -5, None, "30", True],
    "telemetry.flush_seconds": [0.001, 3600, 3601, 1e300],
    "telemetry.progress_seconds": [0.001, 30, 0, -1, 1e300],
    "debug.sleep_per_step": [0, 3600, 3600.5, 1e12],
    "guard.lr_factor": [0.5, 0.999, 1, 0, 2],
    "optimizer.momentum": [0, 0.0, 0.5, 0.999, 1, 1.5],
}
SCHEDULE_BAD = st.one_of(
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, -0.5, 0, 10**400, -(10**400), "abc", ""]),
)
GENERIC = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", " ", "\n", "none", "1"]),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(st.integers(-3, 3), st.floats(-2, 2), st.text(max_size=2)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
    st.integers(-5, 70000),
    st.integers(min_value=2**62, max_value=10**400),
    st.integers(min_value=-(10**400), max_value=-(2**62)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.0, 0.5, 1.0, 2.0, -0.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]),
)


def values_for(key: str) -> st.SearchStrategy[Any]:
    if key == "schedule":
        return st.one_of(
            st.none(), st.booleans(), st.integers(), st.text(max_size=4), st.lists(st.integers())
        )
    if key in ("schedule.peak_lr", "schedule.cycle_steps", "schedule.cycle_mult"):
        return SCHEDULE_BAD
    return st.one_of(GENERIC, st.sampled_from(EXAMPLES[key])) if key in EXAMPLES else GENERIC


def put(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (``optimizer.groups[0].match`` included) in ``cfg``, creating tables."""
    node: Any = cfg
    parts = re.split(r"\.|(?=\[)", key)
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    node[parts[-1]] = value


def with_group(cfg: dict[str, Any]) -> dict[str, Any]:
    """Group keys need a group: the bases without one get ``match = "bias"``."""
    opt = cfg.setdefault("optimizer", {})
    if not opt.get("groups"):
        opt["groups"] = [{"match": "bias"}]
    return cfg


def schema_keys(cls: type[Any] = TrainConfig, prefix: str = "") -> set[str]:
    """Every leaf key of the config dataclasses (a group's keys as ``optimizer.groups[0].<key>``)."""
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys |= schema_keys(tp, f"{dotted}.")  # type: ignore[arg-type]
        else:
            keys.add(dotted)
        if dotted == "optimizer.groups":
            keys |= schema_keys(typing.get_args(tp)[0], f"{dotted}[0].")
    return keys


def test_every_schema_key_has_a_rule() -> None:
    assert schema_keys() <= set(RULES), sorted(schema_keys() - set(RULES))


def test_the_bases_are_valid() -> None:
    for base in BASES.values():
        config_from_dict(base)
        config_from_dict(with_group(copy.deepcopy(base)))


def check(cfg: dict[str, Any], expected: str | None) -> None:
    try:
        loaded = config_from_dict(cfg)
    except ConfigError as exc:
        message = str(exc)
        assert expected is not None, f"a valid config was refused: {message}"
        assert "\n" not in message and len(message) < 400, message
        assert expected in message, (expected, message)
        return
    assert expected is None, f"accepted, but {expected} is invalid: {cfg}"
    assert config_from_dict(loaded.to_dict()) == loaded


@settings(max_examples=400)
@given(
    base=st.sampled_from(sorted(BASES)),
    key=st.sampled_from(sorted(RULES)),
    data=st.data(),
)
def test_one_replaced_key_loads_or_names_the_key(base: str, key: str, data: st.DataObject) -> None:
    cfg = copy.deepcopy(BASES[base])
    if "groups[0]" in key:
        with_group(cfg)
    if key.startswith(("model.options.", "data.options.")):
        sec = key.split(".")[0]
        name = section(cfg, sec).get("name", "cnn" if sec == "model" else "digits")
        allowed = (MODEL_OPTIONS if sec == "model" else DATA_OPTIONS)[name]
        if key.rsplit(".", 1)[1] not in allowed:  # not an option of this base's built-in
            key = f"{sec}.options.{sorted(allowed)[0]}"
    value = data.draw(values_for(key), label="value")
    put(cfg, key, value)
    check(cfg, RULES[key](value, cfg))


TABLES = [
    "",
    "model",
    "data",
    "optimizer",
    "optimizer.groups[0]",
    "scheduler",
    "schedule",
    "eval",
    "checkpoint",
    "guard",
    "early_stopping",
    "telemetry",
    "debug",
    "model.options",
    "data.options",
]


@settings(max_examples=100)
@given(
    base=st.sampled_from(sorted(BASES)),
    table=st.sampled_from(TABLES),
    name=st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True),
    value=st.one_of(st.integers(-2, 2), st.text(max_size=3), st.booleans()),
)
def test_an_unknown_key_is_named(base: str, table: str, name: str, value: Any) -> None:
    cfg = with_group(copy.deepcopy(BASES[base]))
    dotted = f"{table}.{name}" if table else name
    known = schema_keys() | {"model", "data", "optimizer", "scheduler", "schedule", "eval", "checkpoint"}
    known |= {"guard", "early_stopping", "telemetry", "debug"} | set(RULES)
    schedule_params = {"peak_lr", "min_lr", "min_ratio", "warmup_steps", "warmup_start_lr", "warmup_shape"}
    schedule_params |= {"cycle_steps", "cycle_mult", "peak_decay", "peak_decay_mode", "cycle_warmup_steps"}
    schedule_params |= {"max_cycles", "k", "warmup_prefix", "kind"}
    options = set().union(*MODEL_OPTIONS.values(), *DATA_OPTIONS.values())
    if dotted in known or (table == "schedule" and name in schedule_params) or name in options:
        return  # not unknown
    put(cfg, dotted, value)
    check(cfg, dotted)


def test_a_key_with_a_newline_stays_one_line() -> None:
    for cfg in ({"optimizer": {"a\nb": 1}}, {"model": {"name": "mlp", "options": {"x\ny": 1}}}):
        check(cfg, "unknown")
