"""Fleet benchmark (issue 13): N concurrent ``cosanneal train`` jobs exporting to one real Prometheus.

The fleet of tests/deploy/test_fleet.py, measured. Each round runs the N jobs twice, one fleet after the
other (the order alternates between rounds): once without the Prometheus sink ("off") and once with
each job serving ``/metrics`` on its own port, scraped by one Prometheus on loopback every
``--scrape-interval`` with the project's rules (deploy/prometheus, every group evaluated every second)
and scraping itself ("on"). The jobs are the blobs MLP (tests/blobs.py) for ``--updates`` updates with
``debug.sleep_per_step``; they run in the fork server of tests/deploy/prom_helpers.py (torch and the
CLI imported once, each child runs the real ``cosanneal train`` command), so a job's CPU time is its
training, telemetry, evaluation, checkpoints and final plot, not the interpreter's start.

Reported:

* scrape duration per target: p50/p95 of ``scrape_duration_seconds`` over every successful scrape of
  every job, and the worst target's p95;
* series: ``scrape_samples_scraped`` per target (median), ``prometheus_tsdb_head_series`` (max) and
  Prometheus's own CPU (``rate(process_cpu_seconds_total)`` over the "on" fleet's run);
* CPU overhead of exporting per job: the median over jobs of CPU seconds per update (``wait4`` of the
  child: user + system) with the exporter on and off, their ratio, and the difference per scrape;
* memory: the peak PSS of the whole fleet, and wall time of each fleet.

    python benchmarks/bench_fleet.py [--jobs 32] [--updates 100] [--sleep 0.1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "deploy")]

import prom_helpers as ph  # noqa: E402
from blobs import blobs_config  # noqa: E402

JOB_NAMES = ("fleet-a", "fleet-b", "fleet-c", "fleet-d")


def run_fleet(
    root: Path, tag: str, n: int, updates: int, sleep: float, targets: Path | None
) -> tuple[dict[str, Any], float, float]:
    """Run ``n`` jobs (exporting when ``targets`` is given); the fork server's result, start and end."""
    work = root / tag
    (work / "runs").mkdir(parents=True)
    (work / "logs").mkdir()
    configs = {}
    for name in JOB_NAMES:
        cfg = blobs_config(name=name, epochs=math.ceil(updates / 20), max_steps=updates)
        configs[name] = work / f"{name}.json"
        configs[name].write_text(json.dumps(cfg))
    jobs = [
        ph.fleet_job(
            f"job-{i:02d}",
            configs[JOB_NAMES[i % len(JOB_NAMES)]],
            work / "runs" / f"job-{i:02d}",
            work / "logs" / f"job-{i:02d}.log",
            [f"debug.sleep_per_step={sleep}"],
            export=targets is not None,
        )
        for i in range(n)
    ]
    start = time.time()
    proc, result_path = ph.start_fleet(work, jobs, targets)
    try:
        result = ph.wait_fleet(proc, result_path, timeout=3600)
    finally:
        ph.stop(proc)
    end = time.time()
    failed = [j["slot"] for j in result["jobs"] if j["returncode"] != 0]
    if failed:
        log = Path(result["jobs"][0]["log"]).read_text()[-2000:]
        raise SystemExit(f"{tag}: jobs {failed} failed; first log:\n{log}")
    if targets is not None:
        targets.write_text("[]")  # the next fleet's ports are its own
    return result, start, end


def cpu_per_update(result: dict[str, Any], updates: int) -> list[float]:
    return [(j["cpu_user_s"] + j["cpu_sys_s"]) / updates for j in result["jobs"]]


def scrape_figures(api: ph.PromAPI, start: float, end: float) -> dict[str, float]:
    """Scrape durations, series and Prometheus's CPU of the "on" fleet running from ``start`` to ``end``."""
    window = f"{math.ceil(end - start) + 2}s"
    at = end + 1.0
    durations = {
        s["metric"]["slot"]: dict((float(t), float(v)) for t, v in s["values"])
        for s in api.query(f'scrape_duration_seconds{{job="cosanneal"}}[{window}]', at)
    }
    up = {
        s["metric"]["slot"]: dict((float(t), float(v)) for t, v in s["values"])
        for s in api.query(f'up{{job="cosanneal"}}[{window}]', at)
    }
    ok = {
        slot: [d for t, d in series.items() if up[slot].get(t) == 1.0] for slot, series in durations.items()
    }
    every = np.array([d for values in ok.values() for d in values])
    worst_p95 = max(float(np.percentile(v, 95)) for v in ok.values() if v)
    samples = api.query(f'max_over_time(scrape_samples_scraped{{job="cosanneal"}}[{window}])', at)
    (head,) = api.query(f"max_over_time(prometheus_tsdb_head_series[{window}])", at)
    (cpu,) = api.query(f'increase(process_cpu_seconds_total{{job="prometheus"}}[{window}])', at)
    return {
        "scrapes": float(len(every)),
        "scrapes_per_target": float(len(every)) / max(1, len(ok)),
        "p50_ms": float(np.percentile(every, 50)) * 1e3,
        "p95_ms": float(np.percentile(every, 95)) * 1e3,
        "worst_p95_ms": worst_p95 * 1e3,
        "samples_per_target": statistics.median(float(s["value"][1]) for s in samples),
        "head_series": float(head["value"][1]),
        "prom_cpu_s": float(cpu["value"][1]),
        "prom_cpu_cores": float(cpu["value"][1]) / (end - start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=0.1, help="debug.sleep_per_step of every job")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scrape-interval", default="500ms")
    args = parser.parse_args()
    if ph.PROMETHEUS is None:
        raise SystemExit("prometheus is not installed (Debian package: prometheus)")
    off: list[float] = []
    on: list[float] = []
    pss = {"off": 0.0, "on": 0.0}
    walls: dict[str, list[float]] = {"off": [], "on": []}
    figures: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        targets = root / "targets.json"
        targets.write_text("[]")
        port = ph.free_port()
        config = root / "prometheus.yml"
        ph.write_config(
            config,
            targets,
            ph.copy_rules(root, interval="1s"),
            scrape_interval=args.scrape_interval,
            self_port=port,
        )
        prom = ph.start_prometheus(root, config, port)
        api = ph.PromAPI(port)
        try:
            ph.wait_for(api.ready, 60, "prometheus to be ready")
            for r in range(args.rounds):
                for tag in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    exporting = tag == "on"
                    result, start, end = run_fleet(
                        root,
                        f"{tag}-{r}",
                        args.jobs,
                        args.updates,
                        args.sleep,
                        targets if exporting else None,
                    )
                    (on if exporting else off).extend(cpu_per_update(result, args.updates))
                    pss[tag] = max(pss[tag], result["peak_pss_kib"] / 2**20)
                    walls[tag].append(end - start)
                    if exporting:
                        time.sleep(2)  # the last scrapes of the fleet
                        figures.append(scrape_figures(api, start, end))
        finally:
            ph.stop(prom)
    fig = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
    med_on, med_off = statistics.median(on), statistics.median(off)
    print(
        f"{args.jobs} jobs x {args.updates} updates (sleep {args.sleep:g} s/update), scrape every "
        f"{args.scrape_interval}, {args.rounds} round(s); medians over rounds"
    )
    print(f"\n{'Prometheus, fleet exporting':<44} {'value':>12}")
    rows = [
        ("successful scrapes per target", f"{fig['scrapes_per_target']:.0f}"),
        ("scrape duration p50 (ms)", f"{fig['p50_ms']:.2f}"),
        ("scrape duration p95 (ms)", f"{fig['p95_ms']:.2f}"),
        ("scrape duration p95, worst target (ms)", f"{fig['worst_p95_ms']:.2f}"),
        ("samples per scrape (median target)", f"{fig['samples_per_target']:.0f}"),
        ("head series (max)", f"{fig['head_series']:.0f}"),
        ("Prometheus CPU (cores, during the fleet)", f"{fig['prom_cpu_cores']:.3f}"),
    ]
    for name, value in rows:
        print(f"{name:<44} {value:>12}")
    per_scrape_ms = (med_on - med_off) * args.updates / max(1.0, fig["scrapes_per_target"]) * 1e3
    print(f"\n{'job CPU per update (median over jobs)':<44} {'ms/update':>12} {'÷ off':>8}")
    print(f"{'exporter off':<44} {med_off * 1e3:>12.2f} {1.0:>8.3f}")
    print(f"{'exporter on, scraped':<44} {med_on * 1e3:>12.2f} {med_on / med_off:>8.3f}")
    print(f"{'difference per scrape (ms CPU)':<44} {per_scrape_ms:>12.3f}")
    print(f"\n{'fleet':<44} {'wall s':>12} {'peak PSS GiB':>14}")
    for tag in ("off", "on"):
        print(f"{'exporter ' + tag:<44} {statistics.median(walls[tag]):>12.1f} {pss[tag]:>14.2f}")


if __name__ == "__main__":
    main()
