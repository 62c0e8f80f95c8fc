"""Cost of the training-ops runtime on the digits example, side by side in one process (issue #3).

Three parts, each a markdown table with a PASS/FAIL line per target:

(a) Telemetry: training throughput (samples/s, wall time) of the same digits loop (DigitsCNN, batch 64,
    SGD + the SGDR cosine schedule through ``cosanneal.torch.Scheduler(count="optimizer")``) with full
    telemetry (``Telemetry`` into a ``RunStore`` plus a ``TensorBoardSink``, ``on_update`` every step)
    divided by the same loop with none. Reference row: per-step ``SummaryWriter.add_scalar`` of the loss,
    LR and grad norm. Target >= 0.97.
(b) Checkpoints: wall time ``Checkpoints(async_write=True).save`` blocks the calling thread, divided by a
    plain ``torch.save`` of the same state (a ~34M-parameter MLP with SGD momentum buffers). Target <= 0.3.
(c) Trainer: throughput of ``cosanneal.jobs.trainer.Trainer`` on a digits config divided by the same
    job under PyTorch Lightning (``LearningRateMonitor`` + ``ModelCheckpoint`` + ``TensorBoardLogger``).
    Target >= 1.0.

Throughput is wall time, not CPU time: the run store's writer thread (which also writes the TensorBoard
file), SummaryWriter's thread and the checkpoint writer are part of what each variant costs on the same
cores. Variants run interleaved in shuffled rounds after a discarded warm-up round, from the same seed;
ratios are the median of the per-round paired ratios (each round's variants ran back to back, so slow
phases of a shared machine hit both sides of a ratio), next to the median absolute figures. A single
10-epoch digits run swings by +-10% on a shared 2-core machine, so (a) runs 31 rounds and prints a
distribution-free 95% confidence interval of its median ratio (order statistics), the ratio of medians and
the ratio of the best runs.

torch runs with ONE intra-op thread by default (``--threads N`` to change): on a 2-core machine shared
with other jobs, two OpenMP threads spin against the other processes and a digits step swings between
~10 and ~250 ms, which drowns every ratio. One thread leaves the second core to the writer threads
(run store, TensorBoard, checkpoint writer) and to the rest of the machine, as on a dedicated 2-core box.

Usage::

    python benchmarks/bench_runtime.py            # full run (~5 min on 2 cores)
    python benchmarks/bench_runtime.py --quick    # short run (~1 min)
    python benchmarks/bench_runtime.py --check    # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bench_env
import torch
from torch import nn
from torch.nn import functional

from cosanneal.jobs.builders import param_groups
from cosanneal.jobs.config import TrainConfig, config_from_dict
from cosanneal.jobs.data import EpochBatches
from cosanneal.jobs.trainer import Trainer
from cosanneal.runtime.checkpoints import Checkpoints
from cosanneal.runtime.runstore import RunStore
from cosanneal.runtime.telemetry import Telemetry
from cosanneal.schedules import Schedule, from_dict
from cosanneal.sinks.tensorboard import TensorBoardSink
from cosanneal.torch import Scheduler
from cosanneal.zoo.data import digits
from cosanneal.zoo.models import DigitsCNN

SEED = 0
BATCH = 64
TELEMETRY_TARGET = 0.97  # with / without telemetry, higher is better
CKPT_TARGET = 0.3  # async blocking / plain torch.save, lower is better
TRAINER_TARGET = 1.0  # ours / Lightning, higher is better

# The digits demo's optimizer and SGDR schedule (src/cosanneal/zoo/configs/digits_sgdr.toml).
OPTIMIZER = {
    "name": "sgd",
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "groups": [{"match": "bias", "weight_decay": 0.0}],
}
SCHEDULE = {
    "kind": "cosine",
    "peak_lr": 0.1,
    "min_ratio": 0.01,
    "warmup_steps": "1ep",
    "cycle_steps": "5ep",
    "cycle_mult": 2,
    "peak_decay": 0.8,
    "max_cycles": 3,
}


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of ``num[i] / den[i]`` (paired within a round)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: order statistics ``x_(k)``, ``x_(n+1-k)``.

    ``k`` is the largest rank with ``P(Binomial(n, 1/2) < k) <= (1 - level) / 2``; with too few values for
    that level the interval is the whole range.
    """
    xs, n = sorted(values), len(values)
    tail, k, cumulative = (1 - level) / 2, 0, 0.0
    while k < n // 2:
        cumulative += math.comb(n, k) / 2**n  # P(Binomial(n, 1/2) <= k)
        if cumulative > tail:
            break
        k += 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


def fresh_dir(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def sgdr(config: TrainConfig, steps_per_epoch: int) -> Schedule:
    total = config.epochs * steps_per_epoch
    return from_dict(config.schedule).bind(total_steps=total, steps_per_epoch=steps_per_epoch)


def digits_config(epochs: int) -> TrainConfig:
    """The digits demo config, shortened to ``epochs``: TensorBoard on, eval and checkpoint per epoch."""
    return config_from_dict(
        {
            "name": "bench",
            "seed": SEED,
            "epochs": epochs,
            "batch_size": BATCH,
            "device": "cpu",
            "model": {"name": "cnn"},
            "data": {"name": "digits"},
            "optimizer": OPTIMIZER,
            "schedule": SCHEDULE,
            "checkpoint": {"keep_last": 3, "keep_cycle_ends": True},
            "telemetry": {"tensorboard": True, "progress": False},
        }
    )


def make_optimizer(model: nn.Module, config: TrainConfig, peak: float) -> torch.optim.SGD:
    cfg = config.optimizer
    groups = param_groups(model, cfg, peak)
    return torch.optim.SGD(groups, lr=peak, momentum=cfg.momentum, nesterov=cfg.nesterov)


def grad_norm(model: nn.Module) -> torch.Tensor:
    """The total gradient norm, computed as the trainer does (one fused norm per tensor, no sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


# ---- (a) telemetry -------------------------------------------------------------------------------
TELEMETRY_VARIANTS = ["no telemetry", "cosanneal Telemetry (RunStore + TensorBoardSink)", "SummaryWriter"]


def thread_cpu(thread: Any) -> float:
    """CPU seconds a running thread has used (Linux: its per-thread CPU clock)."""
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def train_loop(
    variant: str, epochs: int, train: EpochBatches, config: TrainConfig, root: Path
) -> tuple[float, float]:
    """Wall seconds of ``epochs`` epochs of the digits loop with ``variant``'s logging, closing included.

    Logger construction (opening the SQLite file / event file) is a one-off per run and not timed;
    closing is timed, since it writes whatever the writer threads have not written yet.

    Also returns, for the cosanneal variant, the CPU seconds telemetry used on every thread: the
    ``on_update`` calls (training thread), the run store's writer thread (SQLite and the TensorBoard
    file) and ``close()`` (its final flush runs on the calling thread); NaN for the other variants.
    """
    torch.manual_seed(SEED)
    model = DigitsCNN()
    steps_per_epoch = train.batches_per_epoch
    schedule = sgdr(config, steps_per_epoch)
    optimizer = make_optimizer(model, config, schedule.peak)
    scheduler = Scheduler(optimizer, schedule, count="optimizer")
    run_dir = fresh_dir(root, "a")
    log_update: Callable[[int, list[float], torch.Tensor, torch.Tensor, float], None]
    close: Callable[[], None]
    cpu = [math.nan]
    if variant == TELEMETRY_VARIANTS[1]:
        store = RunStore(run_dir)
        telemetry = Telemetry(
            store, schedule=schedule, expected=scheduler.lrs_at, sinks=[TensorBoardSink(run_dir / "tb")]
        )
        cpu[0] = 0.0
        clock = time.thread_time

        def log_update(step: int, lrs: list[float], loss: torch.Tensor, gn: torch.Tensor, t: float) -> None:
            c0 = clock()
            telemetry.on_update(step, lrs, loss=loss.detach(), grad_norm=gn, samples=BATCH, step_time=t)
            cpu[0] += clock() - c0

        def close() -> None:
            cpu[0] += thread_cpu(store._thread)  # the writer thread, up to now
            c0 = clock()
            store.close()  # joins the writer, then flushes the rest on this thread
            cpu[0] += clock() - c0
    elif variant == TELEMETRY_VARIANTS[2]:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "sw"))

        def log_update(step: int, lrs: list[float], loss: torch.Tensor, gn: torch.Tensor, t: float) -> None:
            writer.add_scalar("loss/train", loss.item(), step)
            for i, lr in enumerate(lrs):
                writer.add_scalar(f"lr/group_{i}", lr, step)
            writer.add_scalar("train/grad_norm", gn.item(), step)

        close = writer.close
    else:

        def log_update(step: int, lrs: list[float], loss: torch.Tensor, gn: torch.Tensor, t: float) -> None:
            pass

        def close() -> None:
            pass

    model.train()
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        for index in range(steps_per_epoch):
            x, y = train.batch(epoch, index)
            lrs = [g["lr"] for g in optimizer.param_groups]
            t0 = time.perf_counter()
            loss = functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gn = grad_norm(model)
            optimizer.step()
            log_update(step, lrs, loss, gn, time.perf_counter() - t0)
            step += 1
    close()
    elapsed = time.perf_counter() - start
    scheduler.close()
    return elapsed, cpu[0]


@dataclasses.dataclass
class TelemetryResult:
    """Samples/s of every variant per measured round, and the cosanneal variant's telemetry CPU seconds."""

    samples_per_s: dict[str, list[float]]
    telemetry_cpu: list[float]
    run_seconds: list[float]  # the no-telemetry runs
    updates: int


def bench_telemetry(rounds: int, epochs: int, root: Path) -> TelemetryResult:
    """Samples/s of every variant in every measured round."""
    config = digits_config(epochs)
    train_set, _ = digits()
    train = EpochBatches(train_set, BATCH, seed=SEED)
    samples = epochs * train.batches_per_epoch * BATCH
    res = TelemetryResult({v: [] for v in TELEMETRY_VARIANTS}, [], [], epochs * train.batches_per_epoch)
    for r, order in bench_env.shuffled_rounds(TELEMETRY_VARIANTS, rounds, seed=1):
        for variant in order:
            seconds, cpu = train_loop(variant, epochs, train, config, root)
            if r:
                res.samples_per_s[variant].append(samples / seconds)
                if variant == TELEMETRY_VARIANTS[1]:
                    res.telemetry_cpu.append(cpu)
                elif variant == TELEMETRY_VARIANTS[0]:
                    res.run_seconds.append(seconds)
    return res


# ---- (b) checkpoints -----------------------------------------------------------------------------
CKPT_VARIANTS = ["plain torch.save", "Checkpoints(async_write=True).save", "Checkpoints (sync).save"]


def big_mlp(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, 2 * width), nn.ReLU(),
        nn.Linear(2 * width, width),
    )  # fmt: skip


def bench_checkpoints(rounds: int, width: int, root: Path) -> tuple[dict[str, list[float]], int, int]:
    """Seconds each save blocks the calling thread; also the parameter count and bytes of state."""
    torch.manual_seed(SEED)
    model = big_mlp(width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(8, width)).square().mean().backward()
    optimizer.step()  # creates the momentum buffers
    scheduler = Scheduler(optimizer, from_dict(SCHEDULE).bind(total_steps=1000, steps_per_epoch=10))
    params = sum(p.numel() for p in model.parameters())
    state_bytes = 2 * params * 4
    async_ckpts = Checkpoints(fresh_dir(root, "b-async"), keep_last=2, best=None, async_write=True)
    sync_ckpts = Checkpoints(fresh_dir(root, "b-sync"), keep_last=2, best=None)
    plain_dir = fresh_dir(root, "b-plain")
    out: dict[str, list[float]] = {v: [] for v in CKPT_VARIANTS}
    step = 0
    for r, order in bench_env.shuffled_rounds(CKPT_VARIANTS, rounds, seed=2):
        for variant in order:
            step += 1
            kwargs: dict[str, Any] = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
            start = time.perf_counter()
            if variant == CKPT_VARIANTS[0]:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "step": step,
                    },
                    plain_dir / f"step-{step % 2}.pt",
                )
            elif variant == CKPT_VARIANTS[1]:
                async_ckpts.save(step, **kwargs)
            else:
                sync_ckpts.save(step, **kwargs)
            elapsed = time.perf_counter() - start
            async_ckpts.wait()  # the background write finishes before the next measurement, not counted
            if r:
                out[variant].append(elapsed)
    async_ckpts.close()
    scheduler.close()
    return out, params, state_bytes


# ---- (c) our Trainer vs PyTorch Lightning ---------------------------------------------------------
TRAINER_VARIANTS = ["cosanneal Trainer", "PyTorch Lightning"]


class _EpochBatchSampler:
    """Lightning's batches in exactly the order of our ``EpochBatches`` (Lightning calls ``set_epoch``)."""

    def __init__(self, batches: EpochBatches) -> None:
        self.batches = batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = self.batches.order(self.epoch)
        for i in range(len(self)):
            yield order[i * BATCH : (i + 1) * BATCH].tolist()


class _TensorPairs(torch.utils.data.Dataset[Any]):
    """A dataset that gathers a whole batch with one index (``__getitems__``), as our trainer does."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(idx)
        return self.x[index], self.y[index]


def _batch_as_is(batch: Any) -> Any:
    return batch


def run_lightning(config: TrainConfig, run_dir: Path) -> int:
    """The digits job under PyTorch Lightning; returns the number of optimizer updates it ran."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    torch.manual_seed(SEED)
    train_set, val_set = digits()
    train_batches = EpochBatches(train_set, BATCH, seed=SEED)
    steps_per_epoch = train_batches.batches_per_epoch
    schedule = sgdr(config, steps_per_epoch)
    train_loader = torch.utils.data.DataLoader(
        _TensorPairs(*train_set.tensors),
        batch_sampler=_EpochBatchSampler(train_batches),  # type: ignore[arg-type]
        collate_fn=_batch_as_is,
    )
    val_loader = torch.utils.data.DataLoader(
        _TensorPairs(*val_set.tensors), batch_size=config.eval.batch_size, collate_fn=_batch_as_is
    )

    class DigitsModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = DigitsCNN()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = functional.cross_entropy(self.model(x), y)
            self.log("train_loss", loss)
            return loss

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            self.log("grad_norm", grad_norm(self.model))

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self.model(x)
            self.log("val_loss", functional.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

        def configure_optimizers(self) -> Any:
            optimizer = make_optimizer(self.model, config, schedule.peak)
            scheduler = Scheduler(optimizer, schedule, count="manual")
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    trainer = pl.Trainer(
        max_epochs=config.epochs,
        callbacks=[
            LearningRateMonitor(logging_interval="step"),
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints", monitor="val_loss", save_top_k=3, save_last=True
            ),
        ],
        logger=TensorBoardLogger(str(run_dir), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        deterministic=False,
        log_every_n_steps=1,
        default_root_dir=str(run_dir),
    )
    trainer.fit(DigitsModule(), train_loader, val_loader)
    return int(trainer.global_step)


def run_ours(config: TrainConfig, run_dir: Path) -> int:
    result = Trainer(config, run_dir, fresh=False, log=lambda _: None, progress=False).run()
    return result.steps


def bench_trainer(rounds: int, epochs: int, root: Path) -> tuple[dict[str, list[float]], int]:
    """Samples/s over each whole fit (data, model, loggers, training, eval, checkpoints, closing)."""
    import pytorch_lightning  # noqa: F401  (imports are excluded from the timing)

    import cosanneal.plotting  # noqa: F401

    for name in ("pytorch_lightning", "lightning_fabric"):  # after the import, which sets them to INFO
        logging.getLogger(name).setLevel(logging.ERROR)

    config = digits_config(epochs)
    runners = {TRAINER_VARIANTS[0]: run_ours, TRAINER_VARIANTS[1]: run_lightning}
    out: dict[str, list[float]] = {v: [] for v in TRAINER_VARIANTS}
    updates = 0
    for r, order in bench_env.shuffled_rounds(TRAINER_VARIANTS, rounds, seed=3):
        for variant in order:
            run_dir = fresh_dir(root, f"c-{TRAINER_VARIANTS.index(variant)}")
            start = time.perf_counter()
            steps = runners[variant](config, run_dir)
            elapsed = time.perf_counter() - start
            if updates and steps != updates:
                raise RuntimeError(f"{variant} ran {steps} updates, the other {updates}")
            updates = steps
            if r:
                out[variant].append(steps * BATCH / elapsed)
    return out, updates


# ---- report -------------------------------------------------------------------------------------
def versions() -> str:
    return bench_env.versions(
        ("cosanneal", "torch", "pytorch-lightning", "tensorboard", "safetensors", "numpy")
    )


@dataclasses.dataclass
class Verdicts:
    lines: list[str] = dataclasses.field(default_factory=list)
    ok: bool = True

    def add(self, passed: bool, text: str) -> None:
        self.ok &= passed
        self.lines.append(f"{'PASS' if passed else 'FAIL'}: {text}")


def report_telemetry(result: TelemetryResult, epochs: int, verdicts: Verdicts) -> None:
    res = result.samples_per_s
    base = res[TELEMETRY_VARIANTS[0]]
    n = len(base)
    print(f"### (a) Telemetry cost: samples/s, {epochs} epochs per round, {n} rounds (wall time)\n")
    print(
        "| variant | samples/s (median) | ÷ no telemetry: median paired ratio [95% CI] "
        "| ratio of medians | ratio of bests | min-max paired ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for v in TELEMETRY_VARIANTS:
        ratios = [a / b for a, b in zip(res[v], base, strict=True)]
        lo, hi = median_ci(ratios)
        print(
            f"| {v} | {statistics.median(res[v]):,.0f} | {statistics.median(ratios):.3f} [{lo:.3f}, {hi:.3f}] "
            f"| {statistics.median(res[v]) / statistics.median(base):.3f} | {max(res[v]) / max(base):.3f} "
            f"| {min(ratios):.3f}-{max(ratios):.3f} |"
        )
    print()
    cpu, run = statistics.median(result.telemetry_cpu), statistics.median(result.run_seconds)
    print(
        f"Telemetry's CPU time, all threads (on_update + run-store writer incl. TensorBoard + close): "
        f"{cpu * 1e3:.1f} ms per run, {cpu / result.updates * 1e6:.0f} µs per update (median of {n}); "
        f"a no-telemetry run takes {run:.3f} s. Were all of it on the training thread's critical path, "
        f"the ratio would be {run / (run + cpu):.3f}: a noise-free bound that the shared machine's spread "
        f"does not blur.\n"
    )
    ratios = [a / b for a, b in zip(res[TELEMETRY_VARIANTS[1]], base, strict=True)]
    ratio = statistics.median(ratios)
    lo, hi = median_ci(ratios)
    verdicts.add(
        ratio >= TELEMETRY_TARGET,
        f"(a) full telemetry ÷ none = {ratio:.3f} (median paired ratio, 95% CI [{lo:.3f}, {hi:.3f}]; "
        f"target >= {TELEMETRY_TARGET})",
    )


def report_checkpoints(res: dict[str, list[float]], params: int, nbytes: int, verdicts: Verdicts) -> None:
    base = res[CKPT_VARIANTS[0]]
    n = len(base)
    print(
        f"### (b) Checkpoint blocking time: MLP of {params / 1e6:.1f}M params + SGD momentum "
        f"({nbytes / 2**20:.0f} MiB of tensors), median of {n} rounds (wall time on the calling thread)\n"
    )
    print("| save | blocks for (ms, median) | ÷ plain torch.save (median paired ratio) | min-max ratio |")
    print("|---|---:|---:|---:|")
    for v in CKPT_VARIANTS:
        ratios = [a / b for a, b in zip(res[v], base, strict=True)]
        print(
            f"| {v} | {statistics.median(res[v]) * 1e3:.0f} | {statistics.median(ratios):.3f} "
            f"| {min(ratios):.3f}-{max(ratios):.3f} |"
        )
    print()
    ratio = median_ratio(res[CKPT_VARIANTS[1]], base)
    of_medians = statistics.median(res[CKPT_VARIANTS[1]]) / statistics.median(base)
    verdicts.add(
        ratio <= CKPT_TARGET,
        f"(b) async save blocking ÷ torch.save = {ratio:.3f} (ratio of medians {of_medians:.3f}; target <= {CKPT_TARGET})",
    )


def report_trainer(res: dict[str, list[float]], epochs: int, updates: int, verdicts: Verdicts) -> None:
    ours, theirs = res[TRAINER_VARIANTS[0]], res[TRAINER_VARIANTS[1]]
    n = len(ours)
    print(
        f"### (c) Whole fit, {epochs} epochs ({updates} updates, eval + checkpoint per epoch), "
        f"median of {n} rounds (wall time)\n"
    )
    print("| trainer | samples/s (median) | seconds per fit (median) | ÷ Lightning (median paired ratio) |")
    print("|---|---:|---:|---:|")
    for v in TRAINER_VARIANTS:
        ratios = [a / b for a, b in zip(res[v], theirs, strict=True)]
        sps = statistics.median(res[v])
        print(f"| {v} | {sps:,.0f} | {updates * BATCH / sps:.2f} | {statistics.median(ratios):.3f} |")
    print()
    ratio = median_ratio(ours, theirs)
    of_medians = statistics.median(ours) / statistics.median(theirs)
    verdicts.add(
        ratio >= TRAINER_TARGET,
        f"(c) ours ÷ Lightning throughput = {ratio:.3f} (ratio of medians {of_medians:.3f}; target >= {TRAINER_TARGET})",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer rounds and epochs)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these parts")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1: see the module docstring)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = set(args.only or ["a", "b", "c"])
    if args.quick:
        a_rounds, a_epochs, b_rounds, width, c_rounds, c_epochs = 7, 2, 3, 1024, 2, 3
    else:
        a_rounds, a_epochs, b_rounds, width, c_rounds, c_epochs = 31, 10, 9, 2048, 5, 6
    warnings.simplefilter("ignore")  # Lightning's advice (num_workers, ...) is not what is measured

    print(
        f"Date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}; {versions()}"
    )
    flags = (" --quick" if args.quick else "") + (f" --threads {args.threads}" if args.threads != 1 else "")
    print(f"Command: python benchmarks/bench_runtime.py{flags}\n")
    verdicts = Verdicts()
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        root = Path(tmp)
        if "a" in parts:
            report_telemetry(bench_telemetry(a_rounds, a_epochs, root), a_epochs, verdicts)
        if "b" in parts:
            res, params, nbytes = bench_checkpoints(b_rounds, width, root)
            report_checkpoints(res, params, nbytes, verdicts)
        if "c" in parts:
            res_c, updates = bench_trainer(c_rounds, c_epochs, root)
            report_trainer(res_c, c_epochs, updates, verdicts)
    print("\n".join(verdicts.lines))
    print(f"OVERALL: {'PASS' if verdicts.ok else 'FAIL'}")
    return 0 if verdicts.ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
