"""`cosanneal report`: real runs, a real page, opened in real headless Chromium, checked against the store."""

from __future__ import annotations

import base64
import html
import html.parser
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from blobs import BLOBS as SHARED_BLOBS

from cosanneal import from_dict, runs
from cosanneal.analysis import report_figures
from cosanneal.analysis.report import ReportError, ReportInfo, build_report, run_names
from cosanneal.analysis.report_data import load_run
from cosanneal.analysis.report_figures import CHARTS, color
from cosanneal.analysis.report_html import chart_script, format_number
from cosanneal.analysis.report_series import (
    DEFAULT_SMOOTHING,
    decimate,
    ema,
    epoch_axis,
    epochs_of,
    lr_panels,
    normalised,
    peak_of,
)
from cosanneal.runtime.runstore import RunStore

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

# The shared blobs/mlp config, 5 epochs of 20 updates: 100 updates,
# 10 warmup + 30 + 60 (cut by the budget): one restart at update 40.
BLOBS: dict[str, Any] = {**SHARED_BLOBS, "epochs": 5}


def _train(run_dir: Path, **changes: Any) -> None:
    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.trainer import Trainer

    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BLOBS.items()}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section] = {**data.get(section, {}), key: value}
    result = Trainer(config_from_dict(data), run_dir, progress=False, log=lambda _: None).run()
    assert result.status == "finished" and result.steps == 100


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """An SGDR run and one with a lower peak, shorter cycles and a NaN injected at attempt 25."""
    root = tmp_path_factory.mktemp("runs")
    _train(root / "sgdr")
    _train(
        root / "nan",
        schedule__peak_lr=0.1,
        schedule__cycle_steps=20,
        debug__inject_nan_at=[25],
        checkpoint__every_steps=25,
    )
    return [root / "sgdr", root / "nan"]


@pytest.fixture(scope="module")
def report(two_runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> ReportInfo:
    return build_report(two_runs, tmp_path_factory.mktemp("out") / "report.html")


# ---- the header numbers are the run store's --------------------------------------------------------
def test_header_numbers_match_the_run_store(two_runs: list[Path], report: ReportInfo) -> None:
    assert [s.name for s in report.runs] == ["sgdr", "nan"]
    for path, s in zip(two_runs, report.runs, strict=True):
        with runs.open(path) as run:
            params, store = run.params, run.summary()
            assert (
                s.fingerprint == params["schedule_fingerprint"] == from_dict(params["schedule"]).fingerprint()
            )
            assert s.status == "finished"
            assert s.updates == 100 == len(run.scalar("lr", 0)[0])
            assert s.epochs == 5.0
            assert s.restarts == len(run.events("restart"))
            assert s.checkpoints == len(run.events("checkpoint_saved"))
            assert s.best_checkpoint_step == run.events("checkpoint_best")[-1]["step"]
            assert s.nonfinite == len(run.events("nonfinite"))
            assert s.rollbacks == len(run.events("rollback")) == 0
            assert s.wall_seconds == store["wall_seconds"]
            assert s.sessions == 1
            v_steps, v_loss = run.scalar("val_loss")
            assert s.final_metrics["val_loss"] == v_loss[-1]
            assert s.final_metrics["val_acc"] == run.scalar("val_acc")[1][-1]
            assert s.best_metric == ("val_loss", float(v_loss.min()), int(v_steps[np.argmin(v_loss)]))
            rate, seconds = run.scalar("samples_per_s")[1], run.scalar("step_time")[1]
            assert s.throughput == pytest.approx(float((rate * seconds).sum() / seconds.sum()), rel=1e-12)
    # what the two runs did differently shows in their numbers
    assert report.runs[0].restarts == 1 and report.runs[1].restarts == 2
    assert report.runs[0].nonfinite == 0 and report.runs[1].nonfinite == 1
    assert report.runs[0].fingerprint != report.runs[1].fingerprint


def test_pngs_are_written_next_to_the_page_and_embedded_in_it(report: ReportInfo) -> None:
    page = report.html.read_text()
    assert sorted(report.pngs) == sorted(key for key, _, _ in CHARTS)
    for key, png in report.pngs.items():
        assert png.parent == report.html.parent / "report_files"
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(data).decode() in page, key
    # nothing outside the file: no http(s) reference at all, no stylesheet link, and the page's only
    # scripts are inline: its data (JSON) and the package's report_charts.js, under a CSP that fetches nothing
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert re.findall(r"<script[^>]*>", page, re.I) == [
        '<script type="application/json" id="report-data">',
        "<script>",
    ]
    assert f"<script>{chart_script()}</script>" in page
    assert (
        chart_script() == (Path(__file__).parents[2] / "src/cosanneal/analysis/report_charts.js").read_text()
    )
    assert "default-src 'none'" in page and "connect-src" not in page
    assert not list(report.html.parent.glob(".*.tmp"))


def _pixels_near(png: Path, hex_color: str, tol: float = 0.06) -> int:
    from matplotlib.image import imread

    rgb = imread(str(png))[..., :3]
    target = np.array([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=-1) < tol).sum())


def test_runs_are_overlaid_one_colour_each(report: ReportInfo) -> None:
    for key in ("lr", "loss", "grad_norm", "throughput"):
        for k in range(2):
            assert _pixels_near(report.pngs[key], color(k)) > 200, (key, k)
    assert _pixels_near(report.pngs["lr"], color(2)) == 0  # a third colour only for a third run


def test_nonfinite_chart_marks_the_injected_nan(report: ReportInfo) -> None:
    # both rows have the same line and end ticks in their colour; only the NaN run (C1) has crosses
    chart = report.pngs["nonfinite"]
    assert _pixels_near(chart, color(1)) > _pixels_near(chart, color(0)) + 30


# ---- the interactive charts' data: inline JSON, the store's values exactly ----------------------------
def _page_data(page: Path) -> dict[str, Any]:
    text = page.read_text()
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    assert found is not None
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def _panel(doc: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for c in doc["charts"] for p in c["panels"] if p["id"] == pid)


def _series(doc: dict[str, Any], pid: str, label: str) -> dict[str, Any]:
    return next(s for s in _panel(doc, pid)["series"] if s["label"] == label)


def _as_json(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def test_inline_json_series_equal_the_run_store(two_runs: list[Path], report: ReportInfo) -> None:
    doc = _page_data(report.html)
    assert [c["key"] for c in doc["charts"]] == [key for key, _, _ in CHARTS]
    assert [r["name"] for r in doc["runs"]] == ["sgdr", "nan"]
    assert [r["color"] for r in doc["runs"]] == [color(0), color(1)]
    assert doc["smoothing"] == DEFAULT_SMOOTHING
    lr_series = [s for c in doc["charts"] if c["key"] == "lr" for p in c["panels"] for s in p["series"]]
    for k, path in enumerate(two_runs):
        name = report.runs[k].name
        with runs.open(path) as run:
            pairs = {
                ("loss-0", f"{name} train"): run.scalar("loss"),
                ("loss-0", f"{name} validation"): run.scalar("val_loss"),
                ("loss-1", f"{name} val_acc"): run.scalar("val_acc"),
                ("grad_norm-0", name): run.scalar("grad_norm"),
                ("throughput-0", name): run.scalar("samples_per_s"),
            }
            for (pid, label), (steps, values) in pairs.items():
                series = _series(doc, pid, label)
                assert series["run"] == k
                assert series["x"] == steps.tolist(), (pid, label)
                assert series["y"] == _as_json(values), (pid, label)  # float64 == float64, no tolerance
            lr_steps, lr = run.scalar("lr", 0)
            e_steps, expected = run.scalar("lr_expected", 0)
            (used,) = [s for s in lr_series if s["label"] == f"{name} lr"]
            (exp,) = [s for s in lr_series if s["label"] == f"{name} expected"]
            assert (used["x"], used["y"]) == (lr_steps.tolist(), _as_json(lr))
            assert (exp["x"], exp["y"]) == (e_steps.tolist(), _as_json(expected))
            assert used["peak"] == exp["peak"] == float(expected.max())
            assert doc["runs"][k]["epoch"] == {"kind": "per_epoch", "steps_per_epoch": 20.0}
            # event lanes: the store's event steps
            saved = sorted({e["step"] for e in run.events("checkpoint_saved")})
            assert _series(doc, "checkpoints-0", f"{name} saved ({len(saved)})")["x"] == saved
            restarts = [v["x"] for v in _panel(doc, "loss-0")["vlines"] if v["run"] == k]
            assert restarts == [e["step"] for e in run.events("restart")]
    (bad,) = [s for s in _panel(doc, "nonfinite-0")["series"] if s["label"].startswith("nan non-finite")]
    with runs.open(two_runs[1]) as run:
        assert bad["x"] == [e["step"] for e in run.events("nonfinite")]


def test_a_long_series_keeps_exact_points_and_its_extremes(tmp_path: Path) -> None:
    steps = np.arange(5000)
    values = np.cos(steps / 300.0) + 0.01 * np.sin(steps * 1.7)
    values[1234] = 9.0  # a spike
    values[4321] = np.nan
    kept_steps, kept = decimate(steps, values, 400)
    assert len(kept_steps) <= 400 and kept_steps[0] == 0 and kept_steps[-1] == 4999
    assert np.array_equal(values[kept_steps], kept, equal_nan=True)  # every point kept is a store point
    assert 1234 in kept_steps and 4321 in kept_steps and np.nanmin(kept) == np.nanmin(values)
    # through the report: a store longer than max_points, each JSON point is the store's
    with RunStore(tmp_path / "long") as store:
        for t, v in zip(steps.tolist(), values.tolist(), strict=True):
            store.log_scalars(t, {"loss": v})
    doc = _page_data(build_report([tmp_path / "long"], tmp_path / "r.html", max_points=400).html)
    series = _series(doc, "loss-0", "long train")
    assert series["x"] == kept_steps.tolist() and series["y"] == _as_json(kept)
    with pytest.raises(ReportError, match="max_points"):
        build_report([tmp_path / "long"], tmp_path / "r.html", max_points=3)


# ---- transforms: log loss, normalised LR, EMA smoothing, epochs -----------------------------------------
def test_log_normalised_and_smoothing_transforms(two_runs: list[Path]) -> None:
    assert normalised([0.0, 0.05, 0.2], 0.2).tolist() == [0.0, 0.25, 1.0]
    assert peak_of([0.0, float("nan"), 0.3, 0.1]) == 0.3 and peak_of([0.0, -1.0]) is None
    # the debiased EMA, by hand: w = 0.5 over 1, 3, (nan skipped), 3
    m1, m2, m3 = 0.5, 0.5 * 0.5 + 0.5 * 3, 0.5 * (0.5 * 0.5 + 0.5 * 3) + 0.5 * 3
    got = ema([1.0, 3.0, float("nan"), 3.0], 0.5)
    assert got[0] == m1 / 0.5 and got[1] == m2 / 0.75 and np.isnan(got[2]) and got[3] == m3 / 0.875
    assert ema([2.0, 5.0], 0.0).tolist() == [2.0, 5.0]
    with pytest.raises(ValueError, match="smoothing"):
        ema([1.0], 1.0)
    # the PNGs: loss on a log axis, legends outside the plot area, the epoch on a top axis
    data = [load_run(p, n) for p, n in zip(two_runs, ["sgdr", "nan"], strict=True)]
    fig = report_figures._loss_chart(data, DEFAULT_SMOOTHING)
    loss_ax = fig.axes[0]
    assert loss_ax.get_yscale() == "log" and fig.axes[1].get_yscale() == "linear"
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        legend = ax.get_legend()
        plot = ax.get_window_extent()
        box = legend.get_window_extent()
        assert box.x0 >= plot.x1, "the legend is outside, right of the data"
    assert any(getattr(child, "get_xlabel", lambda: "")() == "epoch" for child in loss_ax.child_axes)
    # the smoothed PNG curve is the EMA of the store's values
    with runs.open(two_runs[0]) as run:
        raw = run.scalar("loss")[1]
    lines = [line for line in loss_ax.get_lines() if line.get_label() == "sgdr train"]
    assert np.array_equal(lines[0].get_ydata(), ema(raw, DEFAULT_SMOOTHING))


def test_epoch_axis_from_steps_per_epoch_an_epoch_scalar_or_unknown(tmp_path: Path) -> None:
    with RunStore(tmp_path / "per") as store:
        store.log_params({"steps_per_epoch": 25})
        store.log_scalars(0, {"loss": 1.0})
    with RunStore(tmp_path / "scalar") as store:
        for t, epoch in [(0, 0.0), (10, 1.0), (30, 2.0)]:
            store.log_scalars(t, {"loss": 1.0, "epoch": epoch})
    with RunStore(tmp_path / "none") as store:
        store.log_scalars(0, {"loss": 1.0})
    per, scalar, none = (epoch_axis(load_run(tmp_path / n, n)) for n in ("per", "scalar", "none"))
    assert per == {"kind": "per_epoch", "steps_per_epoch": 25.0}
    assert epochs_of(per, [0, 50]).tolist() == [0.0, 2.0]  # type: ignore[union-attr]
    assert scalar["kind"] == "scalar" and scalar["steps"] == [0, 10, 30]
    assert epochs_of(scalar, [5, 20]).tolist() == [0.5, 1.5]  # type: ignore[union-attr]
    assert none["kind"] == "unknown" and epochs_of(none, [1]) is None


# ---- one LR panel per schedule shape -----------------------------------------------------------------------
_SHAPE = np.array([0.0, 0.5, 1.0, 0.75, 0.25, 0.05, 1.0, 0.5])
_OTHER = np.array([0.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])


def _lr_store(path: Path, peaks: list[float], shape: np.ndarray = _SHAPE, fingerprint: str | None = None,
              steps: int = 8) -> Path:  # fmt: skip
    with RunStore(path) as store:
        if fingerprint is not None:
            store.log_params({"schedule_fingerprint": fingerprint})
        for t in range(steps):
            for g, peak in enumerate(peaks):
                lr = peak * float(shape[t])
                store.log_scalars(t, {"lr": lr, "lr_expected": lr}, group=g)
            store.log_scalars(t, {"loss": 1.0 / (t + 1)})
    return path


def _lr_panels_of(paths: list[Path]) -> tuple[list[list[tuple[int, int]]], dict[str, Any], int]:
    data = [load_run(p, p.name) for p in paths]
    panels = [[(m.run, m.group) for m in panel.members] for panel in lr_panels(data)]
    doc = _page_data(build_report(paths, paths[0].parent / "lr.html").html)
    return panels, doc, len(report_figures._lr_chart(data, DEFAULT_SMOOTHING).axes)


def test_one_lr_panel_when_groups_and_runs_share_a_shape(tmp_path: Path) -> None:
    # two param groups (peak 0.1 and 0.01) and a second run with peak 3e-4: one shape, one panel
    paths = [_lr_store(tmp_path / "a", [0.1, 0.01]), _lr_store(tmp_path / "b", [3e-4])]
    panels, doc, axes = _lr_panels_of(paths)
    assert panels == [[(0, 0), (0, 1), (1, 0)]]
    (chart,) = [c for c in doc["charts"] if c["key"] == "lr"]
    assert [p["id"] for p in chart["panels"]] == ["lr-0"] and axes == 1
    assert chart["panels"][0]["toggles"] == ["log", "normalised"]
    peaks = [s["peak"] for s in chart["panels"][0]["series"] if s["label"].endswith(" lr")]
    assert peaks == [0.1, 0.01, 3e-4]
    # normalised by its own peak each curve is the shape
    for s in chart["panels"][0]["series"]:
        assert np.allclose(normalised(np.array(s["y"], dtype=float), s["peak"]), _SHAPE, rtol=1e-12)


def test_separate_lr_panels_only_for_different_shapes(tmp_path: Path) -> None:
    paths = [
        _lr_store(tmp_path / "a", [0.1, 0.02]),
        _lr_store(tmp_path / "b", [0.1], shape=_OTHER),
        _lr_store(tmp_path / "c", [0.5]),
    ]
    panels, doc, axes = _lr_panels_of(paths)
    assert panels == [[(0, 0), (0, 1), (2, 0)], [(1, 0)]]
    (chart,) = [c for c in doc["charts"] if c["key"] == "lr"]
    assert len(chart["panels"]) == 2 == axes
    assert [s["run"] for s in chart["panels"][1]["series"]] == [1, 1]
    # the same fingerprint is the same schedule, even when one run stopped early (fewer common steps)
    same = [
        _lr_store(tmp_path / "f1", [0.1], shape=_OTHER, fingerprint="abc"),
        _lr_store(tmp_path / "f2", [0.1], shape=_SHAPE, fingerprint="abc", steps=1),
    ]
    assert [len(p.members) for p in lr_panels([load_run(p, p.name) for p in same])] == [2]


# ---- Chromium: the page loads offline, without console errors, and shows the store's numbers -------
class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_CONNECT = do_POST = do_HEAD = do_GET  # noqa: N815 (http.server's handler names)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    """An HTTP proxy on 127.0.0.1 that records every request sent through it and answers 404."""
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


#: Chromium's own services (sign-in, time, variations) that it contacts whatever the page holds.
_BROWSER_HOSTS = re.compile(
    r"^(https?://)?([\w.-]+\.)?(google\.com|googleapis\.com|gstatic\.com)(:\d+)?(/|$)"
)


def _chromium(page: Path, proxy_url: str, tmp: Path, *mode: str, query: str = "") -> tuple[str, list[str]]:
    """Run headless Chromium on ``page`` (plus ``query``); return stdout and the console lines of its log."""
    assert CHROMIUM is not None
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        "--disable-default-apps", "--no-pings", f"--user-data-dir={tmp / 'profile'}",
        f"--proxy-server={proxy_url}", "--proxy-bypass-list=<-loopback>",
        "--enable-logging=stderr", "--v=0", "--window-size=1200,2000", *mode, page.resolve().as_uri() + query,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def _page_requests(seen: list[str]) -> list[str]:
    return [url for url in seen if not _BROWSER_HOSTS.match(url)]


class _Cells(html.parser.HTMLParser):
    """Collects, per run card, ``data-key -> text`` of the header cells, and the chart images."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, dict[str, str]] = {}
        self.images: list[str] = []
        self._run: str | None = None
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("data-run"):
            self._run = a["data-run"]
            self.cards[self._run] = {}
        elif tag == "td" and a.get("data-key") and self._run is not None:
            self._key = a["data-key"]
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_data(self, data: str) -> None:
        if self._key is not None and self._run is not None:
            self.cards[self._run][self._key] = self.cards[self._run].get(self._key, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None


@needs_chromium
def test_chromium_catches_a_page_that_fetches_or_logs(tmp_path: Path, proxy: tuple[str, list[str]]) -> None:
    """The harness below can fail: a page with a remote image and a console error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<html><head><link rel="icon" href="data:,"></head><body><img src="http://example.com/x.png">'
        '<script>console.error("boom")</script></body></html>'
    )
    _, console = _chromium(bad, proxy[0], tmp_path, "--dump-dom")
    assert any('"boom"' in line for line in console)
    assert _page_requests(proxy[1]) == ["http://example.com/x.png"]


@needs_chromium
def test_report_opens_offline_in_chromium_with_the_store_numbers(
    report: ReportInfo, tmp_path: Path, proxy: tuple[str, list[str]]
) -> None:
    from matplotlib.image import imread

    dom, console = _chromium(report.html, proxy[0], tmp_path, "--dump-dom")
    shot = tmp_path / "shot.png"
    _, console_shot = _chromium(report.html, proxy[0], tmp_path, f"--screenshot={shot}")
    assert console == console_shot == []
    assert _page_requests(proxy[1]) == []

    # the screenshot is a drawn page, not a blank one: many distinct colours, real variance
    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 0.05
    assert len(np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) > 100

    cells = _Cells()
    cells.feed(dom)
    # every chart is in the DOM Chromium built, as a decodable, non-blank PNG
    assert len(cells.images) == len(CHARTS)
    for src in cells.images:
        assert src.startswith("data:image/png;base64,")
        png = tmp_path / "chart.png"
        png.write_bytes(base64.b64decode(src.split(",", 1)[1]))
        assert imread(str(png)).std() > 0.05
    # the header numbers in the rendered page are the run store's
    assert list(cells.cards) == ["sgdr", "nan"]
    for s in report.runs:
        card = cells.cards[s.name]
        with runs.open(s.path) as run:
            assert card["schedule-fingerprint"] == run.params["schedule_fingerprint"]
            assert card["restarts"] == str(len(run.events("restart")))
            saved = {e["step"] for e in run.events("checkpoint_saved")}
            assert card["checkpoints-saved"] == str(len(saved))
            kept = saved - {e["step"] for e in run.events("checkpoint_deleted")}
            on_disk = list((Path(s.path) / "checkpoints").glob("step-*"))
            assert card["checkpoints-kept"] == str(len(kept)) == str(len(on_disk))
            assert card["best-checkpoint-step"] == str(run.events("checkpoint_best")[-1]["step"])
            assert card["non-finite"] == str(len(run.events("nonfinite")))
            assert card["updates"] == str(len(run.scalar("lr", 0)[0]))
            assert card["final-val_loss"] == format_number(float(run.scalar("val_loss")[1][-1]))
            assert card["wall-time-s"] == format_number(run.summary()["wall_seconds"], 4)
        assert card["status"] == "finished"


class _Tooltips(html.parser.HTMLParser):
    """Collects the rows of every chart tooltip in the DOM: ``panel -> [row attributes]``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[dict[str, str | None]]] = {}
        self._panel: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div" and a.get("class") == "tooltip":
            self._panel = a.get("data-panel")
            self.rows[self._panel or ""] = []
        elif tag == "tr" and self._panel is not None:
            self.rows[self._panel].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._panel = None


def _selftest(dom: str) -> dict[str, Any]:
    found = re.search(r'<pre id="report-selftest" hidden="">(.*?)</pre>', dom, re.S)
    assert found is not None, "the page's self test did not run"
    assert 'data-selftest="done"' in dom
    return json.loads(html.unescape(found.group(1)))  # type: ignore[no-any-return]


def _at(steps: np.ndarray, values: np.ndarray, step: float) -> tuple[int, float]:
    """The store's point nearest to ``step`` (the earlier one on a tie), as the tooltip must show it."""
    i = int(np.searchsorted(steps, step, side="right"))
    if i > 0 and (i == len(steps) or step - steps[i - 1] <= steps[i] - step):
        i -= 1
    return int(steps[i]), float(values[i])


@needs_chromium
def test_chromium_draws_zooms_and_hovers_the_interactive_charts(
    report: ReportInfo, tmp_path: Path, proxy: tuple[str, list[str]]
) -> None:
    # the cursor at 7.3 updates, in the warmup: nearest is update 7, and validation's first point, 20
    step = 7.3
    page = tmp_path / "report.html"
    shutil.copy(report.html, page)
    dom, console = _chromium(page, proxy[0], tmp_path, "--dump-dom", query=f"?selftest={step}")
    assert console == []
    assert _page_requests(proxy[1]) == []
    result = _selftest(dom)
    doc = _page_data(report.html)
    # every panel was drawn: stroked paths (curves) or markers (event lanes), and coloured pixels
    ids = [p["id"] for c in doc["charts"] for p in c["panels"]]
    assert [p["id"] for p in result["panels"]] == ids == [
        "lr-0", "lr-1", "loss-0", "loss-1", "grad_norm-0", "nonfinite-0", "checkpoints-0", "throughput-0",
    ]  # fmt: skip
    for p in result["panels"]:
        assert p["paths"] + p["points"] > 0 and p["inked"] > 100 and p["width"] > 600, p
        if p["chart"] in ("lr", "grad_norm", "throughput"):
            assert p["paths"] >= 2, p  # one curve per run (lr: used and expected)
    assert next(p for p in result["panels"] if p["id"] == "loss-0")["paths"] == 2 * 2 + 1  # raw+EMA, val
    # a drag from step 20 to 60 zooms there, the wheel zooms out around 40, a double click resets
    zoom = result["zoom"]
    assert zoom["full"] == {"x0": 0, "x1": 100}  # updates 0..99, validation after update 100
    assert zoom["drag"]["x0"] == pytest.approx(20, abs=0.2)
    assert zoom["drag"]["x1"] == pytest.approx(60, abs=0.2)
    assert zoom["drag"]["paths"] == 5
    assert zoom["wheel"]["x0"] == pytest.approx(40 - 20 * 1.25, abs=0.3)
    assert zoom["wheel"]["x1"] == pytest.approx(40 + 20 * 1.25, abs=0.3)
    assert zoom["reset"] == zoom["full"]
    assert result["toggles"]["loss_log"]["log"] is True
    assert "1" in result["toggles"]["loss_log"]["ticks"]
    # the tooltip shows every run's store value nearest the cursor, in the DOM Chromium built
    tips = _Tooltips()
    tips.feed(dom)
    for k, summary in enumerate(report.runs):
        name = summary.name
        with runs.open(summary.path) as run:
            expected = {
                ("loss-0", f"{name} train"): run.scalar("loss"),
                ("loss-0", f"{name} validation"): run.scalar("val_loss"),
                ("grad_norm-0", name): run.scalar("grad_norm"),
                ("throughput-0", name): run.scalar("samples_per_s"),
                (f"lr-{k}", f"{name} lr"): run.scalar("lr", 0),
                (f"lr-{k}", f"{name} expected"): run.scalar("lr_expected", 0),
            }
            peak = float(run.scalar("lr_expected", 0)[1].max())
            loss_steps, loss = run.scalar("loss")
        for (pid, label), (steps, values) in expected.items():
            (row,) = [r for r in tips.rows[pid] if r["data-label"] == label]
            at, value = _at(steps, values, step)
            assert row["data-run"] == name and int(row["data-step"] or -1) == at, (pid, label)
            assert float(row["data-value"] or "nan") == value, (pid, label)  # exactly the store's double
            assert [float(r["value"]) for r in result["hover"][pid] if r["label"] == label] == [value]
        (train,) = [r for r in tips.rows["loss-0"] if r["data-label"] == f"{name} train"]
        nearest = int(np.searchsorted(loss_steps, _at(loss_steps, loss, step)[0]))
        smoothed = ema(loss, DEFAULT_SMOOTHING)[nearest]
        assert float(train["data-smoothed"] or "nan") == pytest.approx(smoothed, rel=1e-12)
        # normalised: lr / the run's peak, computed in the browser, exactly the division of the store's values
        norm = next(n for n in result["toggles"]["normalised"] if n["id"] == f"lr-{k}")
        assert norm["y1"] == pytest.approx(1.05)  # the peak at 1, plus the 5% margin
        for r in norm["rows"]:
            assert float(r["shown"]) == float(r["value"]) / peak
        log = next(n for n in result["toggles"]["lr_log"] if n["id"] == f"lr-{k}")
        assert log["log"] is True and log["paths"] == 2 and log["y1"] < np.log10(peak) + 0.2
        assert "0.01" in log["ticks"] and "0.1" in log["ticks"]
        # smoothing 0: the raw value only; epoch axis: 20 updates per epoch, x in epochs
        assert all(r["smoothed"] is None for r in result["toggles"]["smoothing0"])
    epoch = result["toggles"]["epoch"]
    assert (epoch["x0"], epoch["x1"]) == (0, 5) and epoch["paths"] == 5
    assert {r["step"] for r in epoch["rows"] if r["label"].endswith("train")} == {7}
    assert 'id="epoch-note"' not in dom  # every run has steps_per_epoch: the epoch axis is known


@needs_chromium
def test_chromium_epoch_toggle_says_when_a_run_has_no_epoch(
    tmp_path: Path, proxy: tuple[str, list[str]]
) -> None:
    with RunStore(tmp_path / "known") as store:
        store.log_params({"steps_per_epoch": 10})
        for t in range(40):
            store.log_scalars(t, {"lr": 0.1, "lr_expected": 0.1}, group=0)
            store.log_scalars(t, {"loss": 1.0 / (t + 1)})
    with RunStore(tmp_path / "unknown") as store:
        for t in range(40):
            store.log_scalars(t, {"loss": 2.0 / (t + 1)})
    info = build_report([tmp_path / "known", tmp_path / "unknown"], tmp_path / "r.html", smoothing=0.0)
    dom, console = _chromium(info.html, proxy[0], tmp_path, "--dump-dom", query="?selftest=20")
    assert console == [] and _page_requests(proxy[1]) == []
    note = re.search(r'<span class="epoch-note" id="epoch-note">(.*?)</span>', dom)
    assert note is not None and "unknown" in note.group(1) and "known," not in note.group(1)
    result = _selftest(dom)
    epoch = result["toggles"]["epoch"]
    assert (epoch["x0"], epoch["x1"]) == (0, 3.9)  # steps 0..39 of the known run, 10 per epoch
    assert [r["run"] for r in epoch["rows"]] == ["known"]  # the run without epochs is hidden there
    assert [r["run"] for r in result["hover"]["loss-0"]] == ["known", "unknown"]
    assert all(r["smoothed"] is None for r in result["hover"]["loss-0"])  # smoothing=0: raw curves


# ---- summary rules on small hand-written stores -----------------------------------------------------
def _store(path: Path, events: list[tuple[int, str, dict[str, Any]]], nonfinite: list[float] = ()) -> Path:  # type: ignore[assignment]
    with RunStore(path) as store:
        for t in range(10):
            store.log_scalars(t, {"lr": 0.1, "lr_expected": 0.1}, group=0)
            store.log_scalars(t, {"loss": 1.0, "phase": 1.0})
        for t, value in enumerate(nonfinite):
            store.log_scalars(t, {"nonfinite": value})
        for step, kind, payload in events:
            store.log_event(step, kind, **payload)
    return path


@pytest.mark.parametrize(
    ("kinds", "status"),
    [
        ([], "incomplete"),
        (["run_finished"], "finished"),
        (["preempted"], "preempted"),
        (["preempted", "resumed"], "running"),
        (["preempted", "resumed", "run_finished"], "finished"),
        (["early_stop"], "early_stopped"),
        (["nonfinite", "run_failed"], "failed"),
    ],
)
def test_status_is_the_last_terminal_event(tmp_path: Path, kinds: list[str], status: str) -> None:
    path = _store(tmp_path / "r", [(5, k, {}) for k in kinds])
    assert load_run(path, "r").summary.status == status


def test_nonfinite_counts_events_and_nonzero_scalar_steps(tmp_path: Path) -> None:
    path = _store(
        tmp_path / "r", [(3, "nonfinite", {"consecutive": 1})], nonfinite=[0.0, 2.0, float("nan"), 0.0]
    )
    s = load_run(path, "r").summary
    assert s.nonfinite == 3
    assert s.updates == 10 and s.epochs is None and s.best_metric is None and s.throughput is None


def test_run_names_are_unique() -> None:
    assert run_names(["/a/x", "/b/y"]) == ["x", "y"]
    assert run_names(["/a/x", "/b/x"]) == ["a/x", "b/x"]
    assert run_names(["/a/x/run.db"]) == ["x"]


def test_a_failed_build_leaves_the_previous_report(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old")
    with pytest.raises(ReportError, match="no run store"):
        build_report([_store(tmp_path / "r", []), tmp_path / "missing"], out)
    assert out.read_text() == "old"
    with pytest.raises(ReportError, match="at least one"):
        build_report([], out)


# ---- the command line -------------------------------------------------------------------------------
def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cosanneal", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_writes_the_report(two_runs: list[Path], tmp_path: Path) -> None:
    done = _cli("report", *two_runs, "-o", tmp_path / "cmp.html")
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "cmp.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and 'data-run="sgdr"' in page and 'data-run="nan"' in page
    assert sorted(p.name for p in (tmp_path / "cmp_files").iterdir()) == sorted(
        f"{k}.png" for k, _, _ in CHARTS
    )
    assert "sgdr: finished, 100 updates, 1 restarts" in done.stdout


def test_cli_missing_run_is_exit_2_with_one_line(tmp_path: Path) -> None:
    done = _cli("report", tmp_path / "nope", "-o", tmp_path / "r.html")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: run ") and "nope" in done.stderr
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("content", [b"step,lr\n0,0.1\n", b""], ids=["text-file", "empty-sqlite"])
def test_cli_run_db_that_is_not_a_run_store_is_exit_2_with_one_line(tmp_path: Path, content: bytes) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.db").write_bytes(content)  # an empty file is a valid, empty SQLite database
    done = _cli("report", run_dir, "-o", tmp_path / "r.html")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"error: {run_dir / 'run.db'} is not a cosanneal run store (")
    assert not (tmp_path / "r.html").exists()


def test_cli_directory_without_run_db_is_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = _cli("report", tmp_path / "empty", "-o", tmp_path / "r.html")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"error: run {str(tmp_path / 'empty')!r}: no run store there (expected a directory holding run.db)\n"
    )
