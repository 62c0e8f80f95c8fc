"""``cosanneal predict RUN [RUN2] --schedule SPEC ...``: the loss of schedules before training them.

Fits a loss-vs-schedule law (:mod:`cosanneal.analysis.predict`: the multi-power law, or Tissue et al.'s)
to the LR and training-loss traces of one or two finished runs, then prints each candidate schedule's
predicted final loss (and validation loss, when the runs recorded one) and its rank; ``--json`` prints
the same as JSON, ``-o`` writes the predicted curves as CSV.

Exit codes: 0 predicted; 2 bad input (runs too short to fit, an LR that never anneals, a bad spec), as
one ``error:`` line, and nothing written.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cosanneal.commands.options import StepsOpt, StepsPerEpochOpt, atomic_write, examples, fmt_number

if TYPE_CHECKING:
    from cosanneal.analysis.predict import FittedLaw, Prediction

__all__ = ["LawChoice", "TargetChoice", "parse_zeta", "register"]

EXAMPLES = examples(
    "cosanneal predict runs/cosine --schedule examples/compare/gpt/wsd.toml --schedule examples/compare/gpt/sgdr.toml",
    "cosanneal predict runs/cosine runs/wsd --schedule examples/compare/gpt/constant.toml --law tissue --json",
    "cosanneal predict runs/cosine --schedule examples/compare/gpt/wsd.toml --steps 1600 -o curves.csv",
)


class LawChoice(StrEnum):
    """The laws ``predict`` fits."""

    multipower = "multipower"
    tissue = "tissue"


class TargetChoice(StrEnum):
    """The series ``predict`` fits the law to."""

    auto = "auto"
    loss = "loss"
    val_loss = "val_loss"


def parse_zeta(text: str) -> float | None:
    """``--zeta``: ``"fit"`` (``None``: fitted) or a number > 0.

    Example:
        >>> parse_zeta("fit"), parse_zeta("0.5")
        (None, 0.5)
    """
    from cosanneal.analysis.predict import PredictError

    if text.strip().lower() == "fit":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise PredictError(
            f"--zeta must be 'fit' or a number > 0 (1: the papers' forward area), got {text!r}"
        )
    return value


def _names(paths: list[Path]) -> list[str]:
    """Each spec's file stem; a stem given twice gets ``-2``, ``-3``."""
    seen: dict[str, int] = {}
    out = []
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def _ranked(predictions: list[Prediction]) -> list[int]:
    order = sorted(range(len(predictions)), key=lambda i: predictions[i].score)
    ranks = [0] * len(predictions)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def _fit_line(law: FittedLaw) -> str:
    rel = law.relative_rmse or 0.0
    what = "validation losses" if law.target == "val_loss" else "binned training losses"
    return (
        f"{law.law} law fitted to the {law.target} of {', '.join(law.runs)}: RMSE {law.rmse or 0.0:.4g} "
        f"({100 * rel:.2f}% of it) on {law.points} {what}"
    )


def _params_line(law: FittedLaw) -> str:
    text = ", ".join(f"{k} {v:.4g}" for k, v in law.params.items())
    if law.law == "tissue":
        text += f", lambda {law.lam:.6g}"
    if law.val_offset is not None and law.target != "val_loss":
        text += f"; val_loss = law + {law.val_offset:.4g}"
    return text


def _csv(predictions: list[Prediction]) -> str:
    lines = ["candidate,step,lr,loss"]
    for p in predictions:
        for step, loss in zip(p.steps.tolist(), p.loss.tolist(), strict=True):
            lines.append(f"{p.name},{step},{float(p.lr[step])!r},{loss!r}")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the CLI."""

    @app.command("predict", epilog=EXAMPLES)
    def predict_command(
        runs: Annotated[
            list[Path],
            typer.Argument(
                metavar="RUN...",
                help="Finished run directories (one or two) to fit the law to.",
                show_default=False,
            ),
        ],
        schedules: Annotated[
            list[Path] | None,
            typer.Option(
                "--schedule",
                metavar="SPEC",
                help="A candidate schedule spec (repeat for more).",
                show_default=False,
            ),
        ] = None,
        law: Annotated[LawChoice, typer.Option("--law", help="The loss law to fit.")] = LawChoice.multipower,
        fit_to: Annotated[
            TargetChoice,
            typer.Option(
                "--fit-to",
                help="The series to fit: val_loss, loss (training), or auto (val_loss when the runs "
                "recorded at least 12 after the warmup).",
            ),
        ] = TargetChoice.auto,
        zeta: Annotated[
            str,
            typer.Option(
                "--zeta",
                metavar="Z|fit",
                help="The area exponent of S1 = sum lr^Z: a number (1: the papers'), or fit.",
            ),
        ] = "1",
        steps: StepsOpt = None,
        steps_per_epoch: StepsPerEpochOpt = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the fit and predictions as JSON.")
        ] = False,
        output: Annotated[
            Path | None,
            typer.Option(
                "-o", "--output", help="Write the predicted curves as CSV (candidate,step,lr,loss)."
            ),
        ] = None,
    ) -> None:
        """Fit a loss law to finished runs and predict the final loss of candidate schedules.

        --steps is the candidates' run length (default: the first run's); durations such as '0.2dur' are
        fractions of it, '3ep' needs --steps-per-epoch. The table ranks the candidates by predicted final
        val_loss (the training loss when the runs recorded no validation loss).
        """
        import json

        from cosanneal.analysis.predict import fit, trace_from_run
        from cosanneal.commands.schedules_input import bind_spec
        from cosanneal.schedules.spec import load_spec

        zeta_value = parse_zeta(zeta)
        traces = [trace_from_run(run) for run in runs]
        n = steps if steps is not None else len(traces[0].lr)
        paths = list(schedules or [])
        bound = [bind_spec(load_spec(path), str(path), n, steps_per_epoch)[0] for path in paths]
        fitted = fit(traces, law=law.value, target=fit_to.value, zeta=zeta_value)
        predictions = [
            fitted.predict(schedule, n, name=name)
            for schedule, name in zip(bound, _names(paths), strict=True)
        ]
        ranks = _ranked(predictions)
        if output is not None:
            atomic_write(output, _csv(predictions).encode())
        if as_json:
            payload: dict[str, Any] = {
                "law": fitted.to_dict(),
                "steps": n,
                "candidates": [
                    {**p.to_dict(), "spec": str(path), "rank": rank}
                    for p, path, rank in zip(predictions, paths, ranks, strict=True)
                ],
            }
            typer.echo(json.dumps(payload, indent=2))
            return
        from cosanneal.commands.tables import output_console, print_table

        console = output_console()
        console.print(_fit_line(fitted), highlight=False, markup=False)
        console.print(_params_line(fitted), highlight=False, markup=False)
        if predictions:
            has_val = fitted.val_offset is not None
            has_loss = fitted.target != "val_loss"
            header = [
                "candidate",
                "steps",
                *(["final loss"] if has_loss else []),
                *(["final val_loss"] if has_val else []),
                "rank",
            ]
            rows = [
                [
                    p.name,
                    fmt_number(len(p.lr)),
                    *([f"{p.final_loss:.4f}"] if has_loss else []),
                    *([f"{p.final_val_loss:.4f}"] if p.final_val_loss is not None else []),
                    str(rank),
                ]
                for p, rank in zip(predictions, ranks, strict=True)
            ]
            print_table(console, f"predicted over {n} updates", header, rows)
        if output is not None:
            console.print(f"wrote {output}", highlight=False, markup=False)
