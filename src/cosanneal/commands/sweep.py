"""``cosanneal sweep``: an Optuna study over a training config, pruned at cycle ends.

* ``cosanneal sweep CONFIG --space space.toml --trials 40 [--storage URL] [--study NAME] [--budget 2h]``
  runs (or joins, or resumes) a sweep; start the same command on several machines with one
  ``--storage`` URL to share the study.
  A PostgreSQL URL (``postgresql://user@host/db``, or ``postgresql://user@/db?host=/socket/dir``) uses
  psycopg 3; a killed worker's trial is retried from its last checkpoint, in its own run directory.
* ``cosanneal sweep --show [--storage URL] --study NAME`` prints the best trials and the parameter
  importances and writes ``<runs-dir>/<study>/sweep.png``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cosanneal.commands.options import SetOpt, examples, metric_names, renamed
from cosanneal.commands.tables import output_console, print_table

__all__ = ["Direction", "Objective", "Pruner", "register"]

EXAMPLES = examples(
    "cosanneal sweep src/cosanneal/zoo/configs/digits_sgdr.toml --space examples/sweep/space.toml --trials 20",
    "cosanneal sweep my_job.toml --space space.toml --storage postgresql://optuna@db.internal/sweeps --budget 2h --pruner hyperband",
    "cosanneal sweep --show --study digits_sgdr",
)


class Pruner(StrEnum):
    """The sweep's pruners."""

    median = "median"
    hyperband = "hyperband"
    sha = "sha"
    none = "none"


class Direction(StrEnum):
    """Which way the objective is better."""

    minimize = "minimize"
    maximize = "maximize"


class Objective(StrEnum):
    """Which value of the metric a trial reports."""

    final = "final"
    best = "best"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _value(trial: Any, key: str) -> Any:
    """A trial's parameter as the config got it (``0.15dur``, not the sampled ``0.15``), else as sampled."""
    return trial.user_attrs.get("config_values", {}).get(key, trial.params.get(key, "-"))


def _show(storage: str, study: str, png: Path) -> None:
    from rich.table import Table

    from cosanneal.tune.sweep import plot_study, summarize_study

    summary = summarize_study(storage, study)
    console = output_console()
    params = sorted({k for t in summary.best for k in t.params})
    rows = [
        [
            str(t.number),
            _fmt(t.value),
            *(_fmt(_value(t, k)) for k in params),
            str(t.user_attrs.get("steps", "-")),
            _fmt(t.user_attrs.get("seconds", "-")),
            str(t.user_attrs.get("cycles_reported", "-")),
        ]
        for t in summary.best
    ]
    header = ["trial", "value", *params, "steps", "seconds", "cycles"]
    print_table(console, f"study {study}: best trials ({summary.direction})", header, rows)
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.states.items()))
    console.print(f"trials: {states}; cost {summary.steps} updates, {summary.seconds:.1f} s")
    if summary.importances:
        imp = Table(title="parameter importances (fANOVA)")
        imp.add_column("parameter")
        imp.add_column("importance", justify="right")
        for name, value in summary.importances.items():
            imp.add_row(name, f"{value:.3f}")
        console.print(imp)
    else:
        console.print(summary.importance_note)
    plot_study(storage, study, png)
    console.print(f"wrote {png}")


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to the CLI."""

    @app.command(epilog=EXAMPLES)
    def sweep(
        config: Annotated[
            Path | None,
            typer.Argument(
                metavar="CONFIG", help="Training config (TOML, YAML or JSON).", show_default=False
            ),
        ] = None,
        space: Annotated[
            Path | None, typer.Option("--space", help="Search space file (TOML/YAML/JSON).")
        ] = None,
        trials: Annotated[int, typer.Option("--trials", min=1, help="Finished trials the study needs.")] = 40,
        storage: Annotated[
            str | None,
            typer.Option(
                "--storage",
                help="SQLAlchemy URL: sqlite:///FILE or postgresql://USER@HOST/DB (default: sqlite:///<output>/optuna.db).",
                show_default=False,
            ),
        ] = None,
        study: Annotated[
            str | None, typer.Option("--study", help="Study name (default: config name).")
        ] = None,
        budget: Annotated[
            str | None,
            typer.Option("--budget", help="Stop starting trials after this much trial time: 2h, 30m, 600."),
        ] = None,
        pruner: Annotated[
            Pruner, typer.Option("--pruner", help="Stop weak trials at their cycle ends with this pruner.")
        ] = Pruner.median,
        metric: Annotated[
            str,
            typer.Option(
                "--metric",
                metavar="val_<name>",
                help="Objective: any metric the task reports (val_loss, val_acc, val_ppl, ...).",
                autocompletion=metric_names,
            ),
        ] = "val_loss",
        direction: Annotated[
            Direction | None,
            typer.Option("--direction", help="Default: from --metric (minimize a loss).", show_default=False),
        ] = None,
        objective: Annotated[
            Objective, typer.Option("--objective", help="The final or the best value of --metric.")
        ] = Objective.final,
        startup_trials: Annotated[
            int, typer.Option("--startup-trials", min=0, help="Unpruned trials before median pruning.")
        ] = 3,
        seed: Annotated[int | None, typer.Option("--seed", help="Sampler seed (one worker only).")] = None,
        heartbeat_interval: Annotated[
            int, typer.Option("--heartbeat-interval", min=1, help="Seconds between trial heartbeats.")
        ] = 30,
        grace_period: Annotated[
            int, typer.Option("--grace-period", min=1, help="A trial silent this long is failed and retried.")
        ] = 120,
        max_retry: Annotated[
            int, typer.Option("--max-retry", min=0, help="Retries of a dead worker's trial.")
        ] = 2,
        output: Annotated[
            Path | None,
            typer.Option(
                "-o", "--output", help="Where trial run dirs go.  [default: runs/sweeps]", show_default=False
            ),
        ] = None,
        runs_dir_old: Annotated[Path | None, typer.Option("--runs-dir", hidden=True)] = None,
        sets: SetOpt = None,
        show: Annotated[
            bool, typer.Option("--show", help="Summarise the study instead of running it.")
        ] = False,
        predict_from: Annotated[
            list[Path] | None,
            typer.Option(
                "--predict-from",
                metavar="RUN",
                help="Finished runs of this job to fit a loss law to: the predicted best schedules train first.",
                show_default=False,
            ),
        ] = None,
        prescreen: Annotated[
            int, typer.Option("--prescreen", min=1, help="With --predict-from: schedule candidates to rank.")
        ] = 64,
        keep: Annotated[
            int, typer.Option("--keep", min=1, help="With --predict-from: the best candidates queued first.")
        ] = 8,
    ) -> None:
        """Optuna sweep of a config: every trial a training run, pruned at its cycle ends.

        Start the same command on several machines with one --storage URL to share the study; a
        killed worker's trial is retried. --show summarises a study and writes its sweep.png.
        """
        from cosanneal.errors import ConfigError
        from cosanneal.jobs.config import load_config
        from cosanneal.tune.sweep import SweepSettings, default_storage, load_space, parse_budget

        runs_dir = renamed(output, runs_dir_old, old="--runs-dir", new="--output") or Path("runs/sweeps")

        if show:
            if study is None and config is None:
                raise ConfigError("--study: give the study name (or CONFIG, whose name is the default)")
            name = study or load_config(config, sets or []).name
            _show(storage or default_storage(runs_dir), name, runs_dir / name / "sweep.png")
            return
        if config is None:
            raise ConfigError("CONFIG: give a training config to sweep (or --show --study NAME)")
        if space is None:
            raise ConfigError("--space: give a search space file, e.g. examples/sweep/space.toml")
        cfg = load_config(config, sets or [])
        settings = SweepSettings(
            study=study or cfg.name,
            runs_dir=runs_dir,
            storage=storage,
            trials=trials,
            budget_seconds=parse_budget(budget),
            pruner=pruner.value,
            metric=metric,
            direction=None if direction is None else direction.value,
            objective=objective.value,
            startup_trials=startup_trials,
            seed=seed,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
        )
        parsed = load_space(space)
        if predict_from:
            if keep > prescreen:
                raise ConfigError(
                    f"--keep: {keep} is more than the {prescreen} --prescreen candidates; lower it"
                )
            _prescreen(cfg.to_dict(), parsed, settings, predict_from, prescreen, keep)
        _run(cfg.to_dict(), parsed, settings)


def _prescreen(
    config: dict[str, Any], space: Any, settings: Any, runs: list[Path], candidates: int, keep: int
) -> None:
    """Fit the multi-power law to ``runs``, rank ``candidates`` schedules of the space, queue the best ``keep``.

    The queued trials are skipped when the study already holds the same parameters, so every worker
    may be started with the same flags.
    """
    import warnings

    import optuna

    from cosanneal.analysis.predict import fit, trace_from_run
    from cosanneal.jobs.sweep_predict import prescreen
    from cosanneal.tune.sweep import open_study

    law = fit([trace_from_run(run) for run in runs])
    best = prescreen(config, space, law, candidates=candidates, keep=keep, seed=settings.seed or 0)
    study = open_study(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for s in best:
            attrs = {"predicted_final_loss": s.prediction.final_loss}
            study.enqueue_trial(s.params, user_attrs=attrs, skip_if_exists=True)
    shown = ", ".join(f"{s.prediction.final_loss:.4g}" for s in best)
    typer.echo(
        f"prescreen: {len(best)} of {candidates} schedules queued first by predicted final loss "
        f"(multi-power law fitted to {len(runs)} run(s)): {shown}",
        err=True,
    )


def _run(config: dict[str, Any], space: Any, settings: Any) -> None:
    import optuna
    from rich.console import Console

    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.sweep import check_space, trainer_trial
    from cosanneal.tune.sweep import StorageLostError, SweepPreemptedError, run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the log below says what each trial does

    err = Console(stderr=True)

    def log(message: str) -> None:
        err.print(message, soft_wrap=True, markup=False, highlight=False)

    try:
        config_from_dict(config)  # what run_sweep checks
        check_space(config, space)
        result = run_study(config, space, settings, trainer_trial, log=log)
    except SweepPreemptedError as exc:
        log(str(exc))
        raise typer.Exit(143) from None
    except StorageLostError as exc:
        log(f"error: {exc}")
        raise typer.Exit(75) from None  # EX_TEMPFAIL: the same command works once the server is back
    out = Console()
    best = "-" if result.best_value is None else f"{result.best_value:.4g} (trial {result.best_trial})"
    out.print(
        f"study {result.study}: {result.complete} complete, {result.pruned} pruned, {result.failed} failed; "
        f"best {settings.metric} {best}; cost {result.steps} updates, {result.seconds:.1f} s; "
        f"stopped by {result.stopped_by}"
    )
    if result.best_params:
        out.print("best params: " + ", ".join(f"{k}={_fmt(v)}" for k, v in result.best_params.items()))
    out.print(f"storage {result.storage}")
