"""cosanneal's LR finder vs PyTorch Lightning's, on the digits CNN, then a short training with each suggestion.

For every seed both finders sweep the same model (built from the same seed), the same training set and the
same optimizer (the digits config's SGD, momentum 0.9, Nesterov, weight decay 5e-4, no decay on biases) over
the same range (1e-7 .. 1, 100 exponential steps, divergence at 4x the best smoothed loss). Then the digits
config is trained for a few epochs with a cosine schedule (10% linear warmup overlaid, floor 1% of the peak)
whose peak is each suggestion, plus cosanneal's whole suggested spec (peak, floor, warmup) and the demo's
hand-set peak 0.1 for reference; the final validation accuracy and loss are reported side by side.

Usage: python benchmarks/bench_lrfind.py [--seeds 3] [--epochs 5] [--append-results]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional

import cosanneal
from cosanneal.jobs.builders import build_data, build_model, build_optimizer
from cosanneal.jobs.config import TrainConfig, config_from_dict, load_config
from cosanneal.jobs.lrfind import lr_find_config
from cosanneal.jobs.trainer import Trainer

MIN_LR, MAX_LR, STEPS, DIVERGE = 1e-7, 1.0, 100, 4.0
RESULTS = Path(__file__).with_name("RESULTS.md")


def digits_config(seed: int, **changes: Any) -> TrainConfig:
    path = Path(str(files("cosanneal.zoo").joinpath("configs/digits_sgdr.toml")))
    data = load_config(path).to_dict()
    data.update(seed=seed, **changes)
    data["telemetry"] = {**data["telemetry"], "tensorboard": False, "progress": False}
    data["checkpoint"] = {**data["checkpoint"], "enabled": False}
    return config_from_dict(data)


def lightning_suggestion(cfg: TrainConfig) -> float:
    """Lightning's ``Tuner.lr_find(...).suggestion()`` on the config's model, data and optimizer."""
    import pytorch_lightning as pl
    from pytorch_lightning.tuner import Tuner

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_model(cfg.model)

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            return functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return build_optimizer(self.net, cfg.optimizer, 1.0)

    torch.manual_seed(cfg.seed)
    module = Module()
    train, _ = build_data(cfg.data)
    loader = torch.utils.data.DataLoader(
        train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
        )  # fmt: skip
        finder = Tuner(trainer).lr_find(
            module, train_dataloaders=loader, min_lr=MIN_LR, max_lr=MAX_LR, num_training=STEPS,
            mode="exponential", early_stop_threshold=DIVERGE, update_attr=False,
        )  # fmt: skip
    assert finder is not None
    suggestion = finder.suggestion()
    assert suggestion is not None
    return float(suggestion)


def train(cfg: TrainConfig, schedule: dict[str, Any], epochs: int) -> dict[str, float]:
    run_cfg = config_from_dict({**cfg.to_dict(), "epochs": epochs, "schedule": schedule})
    with tempfile.TemporaryDirectory() as run_dir:
        result = Trainer(run_cfg, Path(run_dir) / "run", fresh=True, log=lambda _: None, progress=False).run()
    return {"val_acc": result.final_metrics["val_acc"], "val_loss": result.final_metrics["val_loss"]}


def shaped(peak: float) -> dict[str, Any]:
    return {
        "kind": "cosine", "peak_lr": peak, "min_ratio": 0.01, "warmup_steps": "0.1dur",
        "warmup_prefix": False, "cycle_steps": "1dur",
    }  # fmt: skip


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def geo(values: list[float]) -> str:
    import math

    lo, hi = min(values), max(values)
    return f"{math.exp(statistics.fmean(math.log(v) for v in values)):.3g} ({lo:.3g} .. {hi:.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--append-results", action="store_true", help="append the section to RESULTS.md")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    rows: dict[str, dict[str, list[float]]] = {}
    peaks: dict[str, list[float]] = {"cosanneal": [], "lightning": []}
    seconds: dict[str, float] = {"cosanneal": 0.0, "lightning": 0.0}
    for seed in range(args.seeds):
        cfg = digits_config(seed)
        t0 = time.perf_counter()
        found = lr_find_config(cfg, min_lr=MIN_LR, max_lr=MAX_LR, steps=STEPS, diverge=DIVERGE)
        seconds["cosanneal"] += time.perf_counter() - t0
        assert found.suggestion is not None
        t0 = time.perf_counter()
        lightning = lightning_suggestion(cfg)
        seconds["lightning"] += time.perf_counter() - t0
        ours = found.suggestion
        peaks["cosanneal"].append(ours.peak_lr)
        peaks["lightning"].append(lightning)
        print(
            f"seed {seed}: cosanneal peak {ours.peak_lr:.4g} (spec {ours.spec()}), lightning {lightning:.4g}"
        )
        contenders = {
            "Lightning suggestion, cosine": shaped(lightning),
            "cosanneal peak_lr, cosine": shaped(ours.peak_lr),
            "cosanneal whole spec (peak, floor, warmup)": ours.spec(),
            "hand-set peak 0.1 (demo config), cosine": shaped(0.1),
        }
        for name, schedule in contenders.items():
            metrics = train(cfg, schedule, args.epochs)
            row = rows.setdefault(name, {"val_acc": [], "val_loss": []})
            for key, value in metrics.items():
                row[key].append(value)
            print(f"  {name}: {metrics}", flush=True)

    lines = [
        "| finder | suggested peak LR: geometric mean (range) | finder wall s per run |",
        "|---|---:|---:|",
        *(
            f"| {name} | {geo(peaks[name])} | {seconds[name] / args.seeds:.1f} |"
            for name in ("cosanneal", "lightning")
        ),
        "",
        f"| schedule ({args.epochs} epochs of digits, {args.seeds} seeds) | val accuracy | val loss |",
        "|---|---:|---:|",
        *(f"| {name} | {mean_std(m['val_acc'])} | {mean_std(m['val_loss'])} |" for name, m in rows.items()),
    ]
    table = "\n".join(lines)
    print()
    print(table)
    if args.append_results:
        import pytorch_lightning as pl

        versions = (
            f"Python {platform.python_version()}, cosanneal {cosanneal.__version__}, torch {torch.__version__}, "
            f"pytorch-lightning {pl.__version__}"
        )
        section = (
            "\n## LR finder (issue #5)\n\n"
            f"- Date: {datetime.date(2026, 11, 22).isoformat()}\n"
            f"- Machine: {platform.machine()}, 2 cores CPU (shared with other jobs during the run), Linux\n"
            f"- Versions: {versions}\n"
            f"- Command: `python benchmarks/bench_lrfind.py --seeds {args.seeds} --epochs {args.epochs} "
            "--append-results`\n"
            f"- Both finders: digits CNN and the digits config's SGD, range {MIN_LR:g} .. {MAX_LR:g}, {STEPS} "
            f"exponential steps, stop at {DIVERGE:g}x the best smoothed loss; same seed per row.\n\n"
            f"{table}\n"
        )
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(section)
        print(f"appended to {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
