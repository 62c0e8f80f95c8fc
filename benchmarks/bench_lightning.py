"""Cost of cosanneal's Lightning callbacks against Lightning's own logging and checkpointing (issue #10).

The same Lightning fit (scikit-learn's digits, ``DigitsCNN``, batch 64, SGD, an SGDR cosine schedule,
validation every epoch) runs two ways, interleaved in shuffled rounds after a discarded warm-up round:

* **cosanneal**: ``cosanneal.integrations.lightning.callbacks(schedule, ...)``: the callback builds and
  counts the scheduler, records every update (LR used and expected, cycle, phase, loss, step time) into
  ``run.db`` and TensorBoard events, keeps the best model and a snapshot at each cycle end
  (``Checkpoints``), and the ``ModelCheckpoint`` of the set writes an atomic ``last.ckpt`` every
  ``--every`` steps; no Lightning logger.
* **Lightning**: the same schedule as a ``cosanneal.torch.Scheduler`` returned from
  ``configure_optimizers`` (``interval="step"``), ``LearningRateMonitor(logging_interval="step")`` into
  a ``TensorBoardLogger`` (``log_every_n_steps=1``, the loss logged each step too), and
  ``ModelCheckpoint(monitor="val_loss", save_top_k=1, save_last=True, every_n_train_steps=--every)``.

Throughput is samples per second of wall time over each whole ``trainer.fit`` (writer threads
included). The ratio cosanneal / Lightning is the median of the per-round paired ratios (target >=
0.98), with the median absolute figures beside it. torch runs one intra-op thread (a 2-core machine
shared with other jobs; see bench_runtime.py).

Usage::

    python benchmarks/bench_lightning.py            # 9 rounds of 3 epochs (~3 min on 2 cores)
    python benchmarks/bench_lightning.py --quick    # 3 rounds of 1 epoch
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import bench_env
import torch
from torch.nn import functional

from cosanneal import Cosine
from cosanneal.torch import Scheduler
from cosanneal.zoo.data import digits
from cosanneal.zoo.models import DigitsCNN

TARGET = 0.98
VARIANTS = ["cosanneal", "Lightning"]
BATCH = 64
SEED = 0


def schedule(steps_per_epoch: int) -> Cosine:
    return Cosine(0.05, warmup_steps=10, cycle_steps=steps_per_epoch, cycle_mult=1.5, min_ratio=0.02)


def fit(variant: str, epochs: int, every: int, run_dir: Path) -> tuple[int, float]:
    """One whole fit; returns (samples trained, seconds)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    from cosanneal.integrations.lightning import callbacks

    torch.manual_seed(SEED)
    train_set, val_set = digits()
    train = torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=True)
    val = torch.utils.data.DataLoader(val_set, batch_size=256)
    sched = schedule(len(train))
    ours = variant == "cosanneal"

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = DigitsCNN()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = functional.cross_entropy(self.model(x), y)
            if not ours:
                self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", functional.cross_entropy(self.model(x), y))

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=sched.peak, momentum=0.9)
            if ours:
                return optimizer
            scheduler = Scheduler(optimizer, sched)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    if ours:
        cbs: list[Any] = callbacks(sched, run_dir, every_steps=every)
        logger: Any = False
    else:
        cbs = [
            LearningRateMonitor(logging_interval="step"),
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints", monitor="val_loss", save_top_k=1, save_last=True,
                every_n_train_steps=every,
            ),
        ]  # fmt: skip
        logger = TensorBoardLogger(str(run_dir), name="tb")
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=cbs, logger=logger, log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(run_dir),
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(Module(), train, val)
    seconds = time.perf_counter() - start
    return int(trainer.global_step) * BATCH, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--every", type=int, default=10, help="last.ckpt every N optimizer steps (both variants)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs = 3, 1
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # Lightning's advice (num_workers, ...) is not what is measured
    import pytorch_lightning  # noqa: F401  (imports are excluded from the timing)

    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="bench-lightning-"))
    speed: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ratios: list[float] = []
    try:
        for r, order in bench_env.shuffled_rounds(VARIANTS, args.rounds, seed=10):
            this: dict[str, float] = {}
            for variant in order:
                run_dir = root / f"r{r}-{VARIANTS.index(variant)}"
                samples, seconds = fit(variant, args.epochs, args.every, run_dir)
                this[variant] = samples / seconds
                shutil.rmtree(run_dir, ignore_errors=True)
            if r == 0:
                continue  # warm-up
            for variant, value in this.items():
                speed[variant].append(value)
            ratios.append(this["cosanneal"] / this["Lightning"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(bench_env.versions(("cosanneal", "torch", "pytorch-lightning", "tensorboard", "safetensors")))
    print(f"{args.rounds} rounds (+1 warm-up) of {args.epochs} epochs, last.ckpt every {args.every} steps, "
          f"{args.threads} torch thread(s)\n")  # fmt: skip
    print("| variant | samples/s (median) | min | max |")
    print("|---|---|---|---|")
    for variant in VARIANTS:
        values = speed[variant]
        print(f"| {variant} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
    ratio = statistics.median(ratios)
    of_medians = statistics.median(speed["cosanneal"]) / statistics.median(speed["Lightning"])
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"\ncosanneal / Lightning throughput = {ratio:.3f} (median of {len(ratios)} paired ratios; ratio of "
        f"medians {of_medians:.3f}; per-round {min(ratios):.3f}..{max(ratios):.3f}); target >= {TARGET}: {verdict}"
    )


if __name__ == "__main__":
    main()
