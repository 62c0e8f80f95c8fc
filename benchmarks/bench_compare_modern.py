"""Issue #14 part 4: the modern alternatives compared, 3 seeds, on the language-model example and on digits.

Entries (examples/compare/modern/, one AdamW peak of 3e-3 for all): linear decay to zero, WSD with a
1-sqrt cool-down to 0, cosine to 10% of the peak, cosine to 0, schedule-free AdamW (flat after the
warmup), and the WSD runs' stable-phase checkpoints averaged (SWA, the second half of the phase).

* lm: src/cosanneal/zoo/configs/pysource_gpt.toml made small enough for a 2-core CPU (width 64,
  200 updates, evaluated every 50): val_ppl (per byte);
* digits: examples/train/digits_adamw.toml (the digits CNN, AdamW) for 12 epochs (216 updates), without
  its early stopping and beta1 annealing, so that only the schedule (or the optimizer) differs: val_acc
  and val_loss.

Each table is mean ± the 95% Student-t half-width over the seeds, and Welch's p-value against the best
row (``cosanneal.analysis.compare``). Quality figures, not timings: a loaded machine changes nothing
but the wall time. About 10-15 minutes on 2 CPU cores.

    python benchmarks/bench_compare_modern.py [--out runs/bench-compare-modern] [--seeds 3] [--only lm|digits]

Runs that finished before (same config) are reused, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cosanneal.analysis.compare import CompareSettings, load_entries, markdown_table, summarize
from cosanneal.jobs.compare import run_compare
from cosanneal.jobs.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "examples/compare/modern").glob("*.toml"))

TASKS: dict[str, dict[str, Any]] = {
    "lm": {
        "config": ROOT / "src/cosanneal/zoo/configs/pysource_gpt.toml",
        "sets": [
            "max_steps=200",
            "model.options={layers = 2, heads = 4, width = 64, block = 64, dropout = 0.0}",
            "eval.every_steps=50",
            "checkpoint.enabled=false",
            "telemetry.tensorboard=false",
        ],
        "metrics": ["val_ppl"],
    },
    "digits": {
        "config": ROOT / "examples/train/digits_adamw.toml",
        "sets": [
            "epochs=12",
            "device=cpu",
            "early_stopping.enabled=false",
            "scheduler.momentum=none",
            "checkpoint.enabled=false",
            "telemetry.tensorboard=false",
        ],
        "metrics": ["val_acc", "val_loss"],
    },
}


def run_task(name: str, out: Path, seeds: int) -> dict[str, Any]:
    task = TASKS[name]
    cfg = load_config(task["config"], task["sets"])
    entries = load_entries(SPECS)
    settings = CompareSettings(
        out_dir=out / name, seeds=tuple(range(seeds)), metric=task["metrics"][0], swa=("wsd_1sqrt",)
    )
    started = time.perf_counter()
    run_compare(cfg.to_dict(), entries, settings, log=lambda m: print(f"  {name}: {m}", flush=True))
    seconds = time.perf_counter() - started
    tables = {}
    rows_by_metric = {}
    for metric in task["metrics"]:
        s = dataclasses.replace(settings, metric=metric)
        rows, _ = summarize(list(entries), s)
        tables[metric] = markdown_table(rows, s)
        rows_by_metric[metric] = [dataclasses.asdict(r) for r in rows]
    return {"seconds": seconds, "tables": tables, "rows": rows_by_metric, "sets": task["sets"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-compare-modern"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=sorted(TASKS), action="append")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {}
    for name in args.only or list(TASKS):
        results[name] = run_task(name, args.out, args.seeds)
    print(
        f"\n{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"{args.seeds} seeds, mean ± 95% CI (Student t), p: Welch's t-test against the best row"
    )
    for name, res in results.items():
        for metric, table in res["tables"].items():
            print(f"\n{name} ({metric}; {res['seconds']:.0f} s for the task):\n\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_compare_modern.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {args.out / 'bench_compare_modern.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
