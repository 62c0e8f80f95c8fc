"""`cosanneal report`: real runs, a real page, opened in real headless Chromium, checked against the store."""

from __future__ import annotations

import base64
import html.parser
import http.server
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
from cosanneal.analysis.report import ReportError, ReportInfo, build_report, run_names
from cosanneal.analysis.report_data import load_run
from cosanneal.analysis.report_figures import CHARTS, color
from cosanneal.analysis.report_html import format_number
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
    # nothing outside the file: no http(s) reference at all, no script, no stylesheet link
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
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


def _chromium(page: Path, proxy_url: str, tmp: Path, *mode: str) -> tuple[str, list[str]]:
    """Run headless Chromium on ``page``; return stdout and the console lines of its log."""
    assert CHROMIUM is not None
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        "--disable-default-apps", "--no-pings", f"--user-data-dir={tmp / 'profile'}",
        f"--proxy-server={proxy_url}", "--proxy-bypass-list=<-loopback>",
        "--enable-logging=stderr", "--v=0", "--window-size=1200,2000", *mode, page.resolve().as_uri(),
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
