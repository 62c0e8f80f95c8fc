"""DataLoader workers in the trainer vs the in-process gather and vs Lightning with the same DataLoader (issue #11).

An image-like job: 3,072 synthetic 3x32x32 images with per-sample CPU augmentation in ``__getitem__``
(random crop after 4-pixel padding, horizontal flip, brightness/contrast jitter, Gaussian noise; about
as costly per sample as torchvision's CIFAR transforms), a small CNN, batch 64, SGD with a cosine
schedule, one evaluation at the end. Three variants, interleaved in shuffled rounds after a discarded
warm-up round:

* **cosanneal 2 workers**: ``cosanneal train`` (``Trainer``) with ``data.num_workers = 2``: the seeded
  batch-key sampler, per-sample RNG seeding, run store, checkpoints every 25 updates;
* **cosanneal in-process**: the same job with ``num_workers = 0``: samples gathered in the training
  process (what the trainer did before the DataLoader path);
* **Lightning 2 workers**: ``pytorch_lightning.Trainer.fit`` of the same model and optimizer over a
  ``DataLoader(num_workers=2, shuffle=True)`` of the same data set, ``ModelCheckpoint`` every 25 steps
  (``save_top_k=-1``: it writes at every one of them, as cosanneal does).

The training process runs ``--threads`` torch threads (default 1, leaving the second core of a 2-core
machine to the workers; with 2 threads training and two workers oversubscribe two cores).

Throughput is training samples per second of wall time of the whole fit (start-up of the workers
included). Ratios are medians of the per-round paired ratios. Targets: 2 workers >= 1.3x the in-process
gather (the augmentation leaves the training process), and >= 0.95x Lightning with the same loader.

Usage::

    python benchmarks/bench_loading.py            # 5 rounds of 2 epochs (~4 min on 2 cores)
    python benchmarks/bench_loading.py --quick    # 2 rounds of 1 epoch
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import bench_env
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset, TensorDataset

N_TRAIN, N_VAL, BATCH, SEED = 3072, 512, 64, 0
VARIANTS = ["cosanneal 2 workers", "cosanneal in-process", "Lightning 2 workers"]
TARGETS = {"cosanneal in-process": 1.3, "Lightning 2 workers": 0.95}


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Synthetic 3x32x32 images with CIFAR-style augmentation per sample (global torch RNG)."""

    def __init__(self, n: int, seed: int, augment: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 10, (n,), generator=g)
        base = torch.randn(10, 3, 32, 32, generator=g)
        self.x = base[self.y] + 0.5 * torch.randn(n, 3, 32, 32, generator=g)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[i]
        if self.augment:
            padded = functional.pad(x, (4, 4, 4, 4), mode="reflect")
            dx, dy = torch.randint(0, 9, (2,)).tolist()
            x = padded[:, dy : dy + 32, dx : dx + 32]
            if torch.rand(()) < 0.5:
                x = x.flip(2)
            x = (x - x.mean()) * (0.8 + 0.4 * torch.rand(())) + x.mean() + 0.2 * (torch.rand(()) - 0.5)
            x = x + 0.05 * torch.randn_like(x)
            x = functional.avg_pool2d(functional.pad(x[None], (1, 1, 1, 1), mode="replicate"), 3, 1)[0]
        return x.contiguous(), self.y[i]


def data() -> tuple[Augmented, TensorDataset]:
    """The benchmark's data set: augmented training images, plain validation tensors."""
    val = Augmented(N_VAL, SEED + 1, augment=False)
    return Augmented(N_TRAIN, SEED), TensorDataset(val.x, val.y)


def model() -> nn.Module:
    """A small CNN for 3x32x32 inputs."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )  # fmt: skip


def run_cosanneal(workers: int, epochs: int, run_dir: Path) -> tuple[int, float]:
    from cosanneal.jobs.config import config_from_dict
    from cosanneal.jobs.trainer import Trainer

    cfg = config_from_dict(
        {
            "seed": SEED, "epochs": epochs, "batch_size": BATCH, "device": "cpu",
            "model": {"entry": "bench_loading:model"},
            "data": {"entry": "bench_loading:data", "num_workers": workers},
            "optimizer": {"name": "sgd", "momentum": 0.9},
            "schedule": {"kind": "cosine", "peak_lr": 0.05, "cycle_steps": "1dur", "min_ratio": 0.02},
            "eval": {"every_steps": 10**9, "batch_size": 256},
            "checkpoint": {"every_steps": 25, "keep_last": 2, "at_restarts": False},
            "telemetry": {"tensorboard": False, "progress": False},
        }
    )  # fmt: skip
    start = time.perf_counter()
    result = Trainer(cfg, run_dir, progress=False, log=lambda _: None).run()
    return result.steps * BATCH, time.perf_counter() - start


def run_lightning(epochs: int, run_dir: Path) -> tuple[int, float]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from cosanneal import Cosine
    from cosanneal.torch import Scheduler

    class Module(pl.LightningModule):
        def __init__(self, total: int) -> None:
            super().__init__()
            self.net, self.total = model(), total

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            return functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            self.log("val_loss", functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
            sched = Scheduler(opt, Cosine(0.05, cycle_steps=self.total, min_ratio=0.02))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    train, val = data()
    torch.manual_seed(SEED)
    loader = DataLoader(train, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=2)
    val_loader = DataLoader(val, batch_size=256)
    total = epochs * (N_TRAIN // BATCH)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=epochs,
        callbacks=[ModelCheckpoint(dirpath=run_dir, every_n_train_steps=25, save_top_k=-1)],
        default_root_dir=run_dir,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(Module(total), loader, val_loader)
    return total * BATCH, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of the training process (1: a core left for the workers)",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs = 2, 1
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the trainer imports bench_loading:model
    warnings.simplefilter("ignore")
    import pytorch_lightning  # noqa: F401  (imports are excluded from the timing)

    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="bench-loading-"))
    speed: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {v: [] for v in TARGETS}
    try:
        for r, order in bench_env.shuffled_rounds(VARIANTS, args.rounds, seed=11):
            this: dict[str, float] = {}
            for variant in order:
                run_dir = root / f"r{r}-{VARIANTS.index(variant)}"
                if variant == "Lightning 2 workers":
                    samples, seconds = run_lightning(args.epochs, run_dir)
                else:
                    samples, seconds = run_cosanneal(2 if "2 workers" in variant else 0, args.epochs, run_dir)
                this[variant] = samples / seconds
                shutil.rmtree(run_dir, ignore_errors=True)
            if r == 0:
                continue  # warm-up
            for variant, value in this.items():
                speed[variant].append(value)
            for other in TARGETS:
                ratios[other].append(this["cosanneal 2 workers"] / this[other])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(bench_env.versions(("cosanneal", "torch", "pytorch-lightning")))
    print(f"{args.rounds} rounds (+1 warm-up) of {args.epochs} epochs x {N_TRAIN // BATCH} updates of {BATCH}, "
          f"torch threads {torch.get_num_threads()}\n")  # fmt: skip
    print("| variant | samples/s (median) | min | max |")
    print("|---|---|---|---|")
    for variant in VARIANTS:
        values = speed[variant]
        print(f"| {variant} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
    print()
    for other, target in TARGETS.items():
        ratio = statistics.median(ratios[other])
        verdict = "PASS" if ratio >= target else "FAIL"
        print(f"cosanneal 2 workers / {other} = {ratio:.3f} (median of {len(ratios[other])} paired ratios; "
              f"per-round {min(ratios[other]):.3f}..{max(ratios[other]):.3f}); target >= {target}: {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
