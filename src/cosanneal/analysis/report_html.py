"""The report page: one self-contained HTML document (inline CSS, script, chart data and PNGs).

Each chart is drawn twice: interactively, by the page's own script (``report_charts.js``, package data,
inlined) from the JSON document of :func:`cosanneal.analysis.report_series.chart_data` (inlined as
``<script type="application/json" id="report-data">``), and as a base64 PNG ``<img class="fallback">``
shown when scripts are off, when printing, and on the chart's "PNG view" button. The page references
nothing outside itself (not even a favicon: the icon is an empty ``data:`` URI) and its
Content-Security-Policy allows no fetch at all (``default-src 'none'``), so it opens offline and makes no
network request. Every text taken from a run is HTML-escaped; the JSON is escaped for a ``<script>``.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from cosanneal.analysis.report_data import RunData, RunSummary
from cosanneal.analysis.report_figures import Chart, color

__all__ = ["CSP", "chart_script", "format_number", "render_html", "script_json", "summary_rows"]

#: The page's Content-Security-Policy: inline style and script only, images from data: URIs, nothing else.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

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
.interactive{display:none}.js .interactive{display:block}.js figure img.fallback{display:none}
.js figure.show-png img.fallback{display:block}
#report-controls{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid #ddd;
padding:.4rem 0;font-size:.9rem;display:flex;flex-wrap:wrap;gap:1.5rem;align-items:center}
#report-controls .hint{color:#666;font-size:.8rem}#report-controls input[type=range]{vertical-align:middle}
.epoch-note{color:#9a6700;font-size:.8rem}
.toolbar{font-size:.85rem;display:flex;gap:1rem;align-items:center;margin:.2rem 0}
.toolbar button{font-size:.8rem}
.legend{display:flex;flex-wrap:wrap;gap:.2rem .9rem;font-size:.8rem;margin:.3rem 0 .2rem 0}
.legend .item{cursor:pointer;user-select:none;white-space:nowrap}.legend .item.static{cursor:default}
.legend .item.off{opacity:.35;text-decoration:line-through}
.swatch{display:inline-block;width:18px;margin-right:4px;vertical-align:middle;border-top:2px solid #000;
font-size:.75rem;line-height:.5rem;text-align:center}
.swatch.vline{width:0;height:12px;border-top:none;border-left:2px dashed #000;margin:0 8px}
.swatch.span{height:10px;border-top:none;opacity:.5}
.note{font-size:.8rem;color:#666}
.plot{position:relative}.plot canvas{display:block;cursor:crosshair}
.tooltip{position:absolute;pointer-events:none;background:rgba(255,255,255,.96);border:1px solid #bbb;
border-radius:4px;padding:.3rem .5rem;font-size:.78rem;box-shadow:0 2px 6px rgba(0,0,0,.15);z-index:3}
.tooltip table{border-collapse:collapse}.tooltip td{padding:0 .35rem 0 0;white-space:nowrap}
.tooltip td.num{font-family:ui-monospace,Menlo,Consolas,monospace;text-align:right}
.tooltip .tip-head{font-weight:600;margin-bottom:.15rem}.tooltip td.smooth{color:#666}
@media print{.interactive,#report-controls{display:none!important}figure img.fallback{display:block!important}}
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
        *[("replanned", line) for line in s.replans],
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
        f'<div class="interactive" data-chart="{chart.key}"></div>'
        f'<img class="fallback" alt="{html.escape(chart.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def script_json(obj: Any) -> str:
    r"""JSON that is safe inside an HTML ``<script>`` element: ``<``, ``>`` and ``&`` as ``\u`` escapes.

    ``JSON.parse`` reads it back unchanged (the three characters only occur inside strings). A
    non-finite float is an error: :mod:`~cosanneal.analysis.report_series` writes them as ``null``.

    Example:
        >>> print(script_json({"name": "</script>", "y": [0.1, None]}))
        {"name":"\u003c/script\u003e","y":[0.1,null]}
    """
    text = json.dumps(obj, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def chart_script() -> str:
    """The page's chart code: the package data file ``cosanneal/analysis/report_charts.js``."""
    return resources.files("cosanneal.analysis").joinpath("report_charts.js").read_text(encoding="utf-8")


def render_html(
    data: Sequence[RunData],
    charts: Sequence[Chart],
    files: Sequence[str | None],
    *,
    title: str,
    series: dict[str, Any] | None = None,
) -> str:
    """The whole page: title, one header card per run, the chart controls, then every chart.

    Args:
        data: the runs, in colour order.
        charts: the rendered charts, in page order.
        files: the PNG file name written for each chart (shown in its caption), or ``None``.
        title: the page title.
        series: the interactive charts' JSON document (``report_series.chart_data``); ``None``: the PNGs
            only, no script.
    """
    from cosanneal import __version__

    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    cards = "".join(_run_card(k, run) for k, run in enumerate(data))
    figures = "".join(_figure(c, f) for c, f in zip(charts, files, strict=True))
    scripts = ""
    if series is not None:
        scripts = (
            f'<script type="application/json" id="report-data">{script_json(series)}</script>'
            f"<script>{chart_script()}</script>"
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<h2>Runs</h2><div class="runs">{cards}</div>'
        + ('<div id="report-controls" hidden></div>' if series is not None else "")
        + f"{figures}"
        f"<footer>cosanneal {html.escape(__version__)} · generated {made}</footer>"
        f"{scripts}</body></html>\n"
    )
