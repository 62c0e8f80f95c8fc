"""The report page: one self-contained HTML document (inline CSS, charts as base64 PNG data URIs).

The page has no script and references nothing outside itself (not even a favicon: the icon is an empty
``data:`` URI), so it opens offline and makes no network request. Every text taken from a run is
HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from collections.abc import Sequence
from typing import Any

from cosanneal.analysis.report_data import RunData, RunSummary
from cosanneal.analysis.report_figures import Chart, color

__all__ = ["format_number", "render_html", "summary_rows"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1240px;
color:#1b1b1b;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.runs{display:flex;flex-wrap:wrap;gap:1rem}
.run{border:1px solid #ddd;border-left:8px solid var(--c);border-radius:4px;padding:.6rem 1rem;flex:1 1 360px}
.run h3{margin:.2rem 0 .5rem 0;font-size:1.05rem}
table.summary{border-collapse:collapse;font-size:.9rem}
table.summary th{text-align:left;font-weight:600;padding:.1rem .8rem .1rem 0;color:#444}
table.summary td{font-family:ui-monospace,Menlo,Consolas,monospace;padding:.1rem 0}
.status-finished{color:#1a7f37}.status-failed,.status-preempted{color:#cf222e}
.status-incomplete,.status-running,.status-early_stopped{color:#9a6700}
details pre{font-size:.8rem;background:#f6f8fa;padding:.5rem;overflow:auto;max-height:24rem}
figure{margin:1.5rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
footer{margin-top:2rem;font-size:.8rem;color:#777}
"""


def format_number(value: float | int | None, digits: int = 6) -> str:
    """A number as the header shows it: ``—`` for ``None``, integers plainly, floats with 6 significant digits.

    Example:
        >>> format_number(None), format_number(160), format_number(0.000123456789), format_number(1234.5)
        ('—', '160', '0.000123457', '1234.5')
    """
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def summary_rows(s: RunSummary) -> list[tuple[str, str]]:
    """The header table of one run as ``(label, text)`` rows (what the page and the tests read).

    Example:
        >>> from cosanneal.analysis.report_data import RunSummary
        >>> s = RunSummary("a", "/r/a", "finished", 160, 8.0, 2, 17, 19, ("val_loss", 0.1, 19),
        ...                {"val_loss": 0.2}, 0, 0, 4.25, 1000.0, "aaf9f0cea421d3dc", 1)
        >>> dict(summary_rows(s))["best val_loss"]
        '0.1 at step 19'
    """
    rows = [
        ("status", s.status),
        ("schedule fingerprint", s.fingerprint or "—"),
        ("updates", format_number(s.updates)),
        ("epochs", format_number(s.epochs)),
    ]
    if s.best_metric is not None:
        metric, value, step = s.best_metric
        rows.append((f"best {metric}", f"{format_number(value)} at step {step}"))
    rows += [(f"final {k}", format_number(v)) for k, v in s.final_metrics.items()]
    rows += [
        ("restarts", format_number(s.restarts)),
        ("checkpoints saved", format_number(s.checkpoints)),
        ("checkpoints kept", format_number(s.checkpoints_kept)),
        ("best checkpoint step", format_number(s.best_checkpoint_step)),
        ("non-finite", format_number(s.nonfinite)),
        ("rollbacks", format_number(s.rollbacks)),
        ("wall time (s)", format_number(s.wall_seconds, 4)),
        ("throughput (samples/s)", format_number(s.throughput, 5)),
        ("sessions", format_number(s.sessions)),
        ("path", s.path),
    ]
    return rows


def _run_card(k: int, run: RunData) -> str:
    s = run.summary
    cells = []
    for label, text in summary_rows(s):
        key = label.replace(" ", "-").replace("(", "").replace(")", "").replace("/", "-")
        cls = f' class="status-{html.escape(text)}"' if label == "status" else ""
        cells.append(
            f'<tr><th>{html.escape(label)}</th><td data-key="{html.escape(key)}"{cls}>{html.escape(text)}</td></tr>'
        )
    config = {k: v for k, v in run.params.items() if k != "env"}
    env = run.params.get("env")
    return (
        f'<section class="run" style="--c:{color(k)}" data-run="{html.escape(s.name)}">'
        f"<h3>{html.escape(s.name)}</h3>"
        f'<table class="summary">{"".join(cells)}</table>'
        f"<details><summary>config and schedule</summary><pre>{_json(config)}</pre></details>"
        + (f"<details><summary>environment</summary><pre>{_json(env)}</pre></details>" if env else "")
        + "</section>"
    )


def _json(obj: Any) -> str:
    return html.escape(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _figure(chart: Chart, file_name: str | None) -> str:
    data = base64.b64encode(chart.png).decode("ascii")
    caption = html.escape(chart.title) + (
        f" — also saved as <code>{html.escape(file_name)}</code>" if file_name else ""
    )
    return (
        f'<figure id="chart-{chart.key}" data-chart="{chart.key}"><h2>{html.escape(chart.title)}</h2>'
        f'<img alt="{html.escape(chart.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def render_html(
    data: Sequence[RunData], charts: Sequence[Chart], files: Sequence[str | None], *, title: str
) -> str:
    """The whole page: title, one header card per run, then every chart.

    Args:
        data: the runs, in colour order.
        charts: the rendered charts, in page order.
        files: the PNG file name written for each chart (shown in its caption), or ``None``.
        title: the page title.
    """
    from cosanneal import __version__

    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    cards = "".join(_run_card(k, run) for k, run in enumerate(data))
    figures = "".join(_figure(c, f) for c, f in zip(charts, files, strict=True))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<h2>Runs</h2><div class="runs">{cards}</div>'
        f"{figures}"
        f"<footer>cosanneal {html.escape(__version__)} · generated {made}</footer>"
        "</body></html>\n"
    )
