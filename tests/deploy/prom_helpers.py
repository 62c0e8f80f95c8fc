"""Helpers of the fleet load test (tests/deploy/test_fleet.py) and benchmark (benchmarks/bench_fleet.py).

A real Prometheus on loopback (:func:`start_prometheus`) scraping targets from a ``file_sd`` file, with the
project's rule files (:func:`copy_rules`), and a fleet of ``cosanneal train`` jobs (:func:`run_fleet`).

The fleet runs in a *fork server* (``python prom_helpers.py fleet SPEC``): one interpreter imports the
CLI, torch, the trainer and matplotlib once, then forks one child per job, and each child runs the real
``cosanneal train`` command (``cosanneal.cli.main(["train", ...])``, what ``python -m cosanneal train``
runs) with its own run directory, exporter port and log, and exits with the command's exit code. Only
the imports are shared: 32 interpreters each importing torch cost about 250 CPU seconds and 3 minutes
on a 2-core machine before the first update, the fork server about 5. The server picks each job's
port (bind to port 0), writes the ``file_sd`` targets (atomically, Prometheus reloads the file), runs
again with ``--fresh`` on another port a job that could not bind its port, samples the fleet's memory
(PSS, the pages the children share with the server counted once) and writes what it measured (exit
code, CPU seconds and peak RSS from ``wait4``, start and end, the ports tried) to a JSON result file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
#: The rule files a deployment loads (deploy/prometheus/prometheus.yml ``rule_files``).
RULE_FILES = ("rules.yml", "alerts.yml")
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
#: What a job that could not bind its exporter port prints (cosanneal.sinks.prometheus) before exit 2.
BIND_ERROR = "telemetry.prometheus_port: cannot serve /metrics"


def get_json(url: str, timeout: float = 10) -> Any:
    """GET ``url`` and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll ``predicate`` until it holds; ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (bound to port 0, then released).

    Kept here, not imported from ``tests/blobs.py``: the fork server runs this file as a script, where
    ``tests/`` is not on the path.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any] | None) -> None:
    """Kill ``proc``'s process group (started with ``start_new_session=True``) and reap ``proc``."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # what is left in the group (a fork server's children)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def copy_rules(dest: Path, interval: str) -> list[Path]:
    """The project's rule files (deploy/prometheus), copied to ``dest`` with every group evaluated every ``interval``.

    The rules themselves (names, expressions, ``for``, labels) are the deployed ones, unchanged; only the
    groups' own ``interval`` (30 s for the recording groups) is replaced so that a test of seconds
    sees them evaluated.
    """
    out = []
    for name in RULE_FILES:
        doc = yaml.safe_load((DEPLOY / name).read_text())
        for group in doc["groups"]:
            group["interval"] = interval
        path = dest / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(path)
    return out


def rule_groups() -> dict[str, list[str]]:
    """Every rule group of the project's rule files: group name -> its rules' names (record or alert)."""
    groups: dict[str, list[str]] = {}
    for name in RULE_FILES:
        for group in yaml.safe_load((DEPLOY / name).read_text())["groups"]:
            groups[group["name"]] = [r.get("record") or r["alert"] for r in group["rules"]]
    return groups


def write_targets(path: Path, targets: Mapping[str, int]) -> None:
    """Write a ``file_sd`` file atomically: one target ``127.0.0.1:<port>`` per slot, labelled ``slot``."""
    groups = [{"targets": [f"127.0.0.1:{port}"], "labels": {"slot": slot}} for slot, port in targets.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=1))
    os.replace(tmp, path)


def write_config(
    path: Path,
    targets_file: Path,
    rule_files: Sequence[Path],
    scrape_interval: str = "500ms",
    evaluation_interval: str = "1s",
    self_port: int | None = None,
) -> None:
    """A Prometheus config: the ``cosanneal`` job from ``targets_file`` (file_sd), the rules, itself."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "cosanneal",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
            }
        ],
    }
    if self_port is not None:
        config["scrape_configs"].append(
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{self_port}"]}]}
        )
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def start_prometheus(workdir: Path, config: Path, port: int) -> subprocess.Popen[bytes]:
    """Start the real ``prometheus`` on ``127.0.0.1:port`` (own session; :func:`stop` it)."""
    if PROMETHEUS is None:
        raise RuntimeError("prometheus is not installed (Debian package: prometheus)")
    log = (workdir / "prometheus.log").open("wb")
    try:
        return subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


class PromAPI:
    """The HTTP API of one Prometheus server."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def ready(self) -> bool:
        """Whether the server answers ``/-/ready``."""
        return http_ok(f"{self.base}/-/ready")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query (vector or matrix), ``status`` checked."""
        params = {"query": promql} | ({} if at is None else {"time": f"{at:.3f}"})
        body = get_json(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}")
        if body["status"] != "success":
            raise AssertionError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def samples(self, metric: str, window: str, at: float) -> dict[str, list[tuple[float, float]]]:
        """The raw samples of ``metric`` (a selector) over ``window`` before ``at``, by ``cosanneal_run``."""
        out: dict[str, list[tuple[float, float]]] = {}
        for series in self.query(f"{metric}[{window}]", at):
            run = series["metric"].get("cosanneal_run", "")
            out.setdefault(run, []).extend((float(t), float(v)) for t, v in series["values"])
        return out

    def by_run(self, promql: str, at: float, label: str = "cosanneal_run") -> dict[str, float]:
        """An instant vector as ``{series' label value: value}``."""
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(promql, at)}

    def rules(self) -> list[dict[str, Any]]:
        """The rule groups ``/api/v1/rules`` reports."""
        groups: list[dict[str, Any]] = get_json(f"{self.base}/api/v1/rules")["data"]["groups"]
        return groups

    def active_targets(self) -> list[dict[str, Any]]:
        """The active scrape targets ``/api/v1/targets`` reports."""
        targets: list[dict[str, Any]] = get_json(f"{self.base}/api/v1/targets?state=active")["data"][
            "activeTargets"
        ]
        return targets


# ---- the fleet --------------------------------------------------------------------------------------------
def fleet_job(
    slot: str, config: Path, run_dir: Path, log: Path, sets: Sequence[str], export: bool = True
) -> dict[str, Any]:
    """One job of a fleet spec: ``cosanneal train CONFIG --run-dir RUN_DIR --no-progress --set ...``.

    With ``export`` the fork server adds ``--set telemetry.prometheus_port=<a free port>``.
    """
    return {
        "slot": slot,
        "argv": ["train", str(config), "--run-dir", str(run_dir), "--no-progress"]
        + [a for s in sets for a in ("--set", s)],
        "run_dir": str(run_dir),
        "log": str(log),
        "export": export,
    }


def start_fleet(
    workdir: Path, jobs: Sequence[Mapping[str, Any]], targets_file: Path | None
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the fork server on ``jobs`` (own session; :func:`stop` it); returns it and its result path."""
    spec = workdir / "fleet.json"
    result = workdir / "fleet-result.json"
    spec.write_text(
        json.dumps(
            {
                "jobs": list(jobs),
                "targets": None if targets_file is None else str(targets_file),
                "result": str(result),
            }
        )
    )
    log = (workdir / "fleet.log").open("wb")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    try:
        proc = subprocess.Popen(
            [sys.executable, __file__, "fleet", str(spec)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    finally:
        log.close()
    return proc, result


def wait_fleet(proc: subprocess.Popen[bytes], result: Path, timeout: float) -> dict[str, Any]:
    """Wait for the fork server to finish; its result (``jobs``: one dict per job, ``peak_pss_kib``)."""
    code = proc.wait(timeout=timeout)
    if code != 0 or not result.exists():
        log = result.parent / "fleet.log"
        raise AssertionError(f"fork server exited {code}: {log.read_text()[-3000:] if log.exists() else ''}")
    out: dict[str, Any] = json.loads(result.read_text())
    return out


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _child(job: Mapping[str, Any], argv: Sequence[str], fresh: bool) -> None:
    """In a forked child: run ``cosanneal train`` with its output to the job's log, and exit with its code."""
    code = 1
    try:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's own stdout, never closed
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        from cosanneal.cli import main

        try:
            main([*argv, *(["--fresh"] if fresh else [])])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # report anything else in the log, never return into the server's code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve_fleet(spec_path: str) -> None:
    """The fork server's main (module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # shared by the children's plot_run
    import prometheus_client  # noqa: F401

    import cosanneal.cli
    import cosanneal.jobs.trainer
    import cosanneal.plotting
    import cosanneal.sinks.prometheus  # noqa: F401

    spec = json.loads(Path(spec_path).read_text())
    jobs: list[dict[str, Any]] = spec["jobs"]
    targets_file = None if spec["targets"] is None else Path(spec["targets"])
    ports: dict[str, int] = {}
    used: set[int] = set()

    def new_port() -> int:
        """A free port no job of the fleet was given (the kernel may hand a released port out again)."""
        while (port := free_port()) in used:
            pass
        used.add(port)
        return port

    for job in jobs:
        if job["export"]:
            ports[job["slot"]] = new_port()
    if targets_file is not None:
        write_targets(targets_file, ports)

    running: dict[int, dict[str, Any]] = {}
    offsets: dict[str, int] = {}
    results: dict[str, dict[str, Any]] = {
        j["slot"]: {"slot": j["slot"], "run_dir": j["run_dir"], "log": j["log"], "attempts": 0, "ports": []}
        for j in jobs
    }

    def launch(job: dict[str, Any]) -> None:
        argv = list(job["argv"])
        res = results[job["slot"]]
        if job["export"]:
            argv += ["--set", f"telemetry.prometheus_port={ports[job['slot']]}"]
            res["ports"].append(ports[job["slot"]])
        res["attempts"] += 1
        res["started"] = time.time()
        log = Path(job["log"])
        offsets[job["slot"]] = log.stat().st_size if log.exists() else 0  # this attempt's output starts here
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(job, argv, fresh=res["attempts"] > 1)
        running[pid] = job

    for job in jobs:
        launch(job)
    peak_pss = 0
    last_sample = 0.0
    while running:
        pid, status, usage = os.wait4(-1, os.WNOHANG)
        if pid == 0:
            now = time.monotonic()
            if now - last_sample >= 1.0:
                peak_pss = max(peak_pss, sum(_pss_kib(p) for p in running))
                last_sample = now
            time.sleep(0.05)
            continue
        job = running.pop(pid)
        res = results[job["slot"]]
        code = os.waitstatus_to_exitcode(status)
        res.update(
            returncode=code,
            ended=time.time(),
            cpu_user_s=usage.ru_utime,
            cpu_sys_s=usage.ru_stime,
            maxrss_kib=usage.ru_maxrss,
        )
        if job["export"]:
            res["port"] = ports[job["slot"]]
        with open(job["log"], "rb") as f:
            f.seek(offsets[job["slot"]])
            output = f.read().decode(errors="replace")
        if code == 2 and res["attempts"] < 3 and BIND_ERROR in output:
            ports[job["slot"]] = new_port()  # the port was taken meanwhile: another one, and start over
            if targets_file is not None:
                write_targets(targets_file, ports)
            launch(job)
    out = {"jobs": [results[j["slot"]] for j in jobs], "peak_pss_kib": peak_pss}
    tmp = Path(spec["result"] + ".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, spec["result"])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "fleet":
        _serve_fleet(sys.argv[2])
    else:
        sys.exit("usage: prom_helpers.py fleet SPEC.json")
