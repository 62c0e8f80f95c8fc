"""One rank of the exactness matrix (``test_matrix.py``): every sub-case of one or more frameworks.

Usage: ``python matrix_worker.py OUT FRAMEWORK[,FRAMEWORK...]`` (or under ``torch.distributed.run``
for 2 processes). Frameworks: ``own`` (a plain loop with cosanneal's Scheduler, Telemetry and
Checkpoints), ``accelerate``, ``lightning``, ``hf``.

Each framework runs the sub-cases gradient accumulation {1, 4} x AMP overflow {off, on}, each in its
own run directory ``OUT/<framework>-acc<A>-amp<0|1>``. ``ATTEMPTS`` optimizer steps are attempted;
with AMP on, a real ``torch.amp.GradScaler("cpu")`` is the framework's own scaler (Lightning's
``MixedPrecision`` plugin, accelerate's ``Accelerator.scaler``, the one the HF Trainer's accelerator
uses, the loop's own) and the gradients of the attempts in ``POISONED`` are made inf by an autograd
function whose backward multiplies by inf (the loss stays finite, as in a real fp16 overflow), so the
framework's skip logic is what skips them.

Ground truth, independent of cosanneal: an optimizer step pre-hook (it runs only when the update
really runs) appends ``{"attempt", "lr"}`` to ``truth-rank<r>.jsonl``; the test derives the real
update index from the attempt and ``POISONED``.

The last sub-case of each framework (accumulation 4, AMP on) is killed with SIGKILL after attempt
``KILL_AT`` (after its last checkpoint at ``SAVE_EVERY`` attempts) in the first launch; the next
launch resumes it the framework's way and continues. A sub-case that finished writes ``done-rank<r>``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ATTEMPTS = 16
POISONED = (3, 9, 10)
KILL_AT = 11  # killed once this many attempts are done; the last checkpoint is at 8
SAVE_EVERY = 4
BATCH = 2
PEAK = 0.1
SUBCASES = [(1, False), (4, False), (1, True), (4, True)]
KILLED = (4, True)

import torch  # noqa: E402


def schedule() -> Any:
    from cosanneal import Cosine

    # the LR changes at every update: warmup, then cycles of 3, 4, 6, ... updates (cycle_mult=1.5)
    return Cosine(PEAK, warmup_steps=2, warmup_start_lr=0.01, cycle_steps=3, cycle_mult=1.5, max_cycles=None)


class Overflow(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by inf: an fp16 overflow with a finite loss."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class Truth:
    """Appends the LR of every update that really ran, with its attempt index (survives SIGKILL)."""

    def __init__(self, run_dir: Path, attempt: Callable[[], int]) -> None:
        self.file = open(run_dir / f"truth-rank{rank()}.jsonl", "a", buffering=1)  # noqa: SIM115
        self.attempt = attempt

    def hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.file.write(json.dumps({"attempt": self.attempt(), "lr": optimizer.param_groups[0]["lr"]}) + "\n")


def kill_here(run_dir: Path) -> None:
    (run_dir / f"killed-rank{rank()}").write_text("SIGKILL\n")
    os.kill(os.getpid(), signal.SIGKILL)


def batch(attempt: int, micro: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(10_000 * rank() + 100 * attempt + micro)
    return torch.randn(BATCH, 3, generator=g)


# ---- own loop and accelerate ------------------------------------------------------------------
def run_loop(run_dir: Path, acc: int, amp: bool, kill: bool, use_accelerate: bool) -> None:
    from cosanneal.runtime import Checkpoints, RunStore, Telemetry
    from cosanneal.torch import Scheduler

    torch.manual_seed(0)
    model: torch.nn.Module = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=PEAK)
    sched = Scheduler(optimizer, schedule())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if amp else None
    accelerator = None
    stepper: Any = sched
    if use_accelerate:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True, gradient_accumulation_steps=acc)
        accelerator.scaler = scaler  # the Accelerator's own skip path (see tests/torch/accelerate_worker.py)
        train_model, train_opt, stepper = accelerator.prepare(model, optimizer, sched)
    else:
        if world() > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo")
        train_model = torch.nn.parallel.DistributedDataParallel(model) if world() > 1 else model
        train_opt = optimizer
    ckpts = Checkpoints(run_dir / "checkpoints", keep_last=2, best=None, at_restarts=False)
    loaded = ckpts.load_latest(model, optimizer, sched)
    attempt = int(loaded.extra["attempts"]) if loaded else 0
    if loaded and scaler is not None:
        scaler.load_state_dict(loaded.trackers["scaler"])
    store = RunStore(run_dir) if rank() == 0 else RunStore.disabled()
    telemetry = Telemetry(store, schedule=sched.schedule, expected=sched.lrs_at)
    telemetry.resume(sched.last_epoch)
    truth = Truth(run_dir, lambda: attempt)
    optimizer.register_step_pre_hook(truth.hook)
    while attempt < ATTEMPTS:
        lrs = [g["lr"] for g in optimizer.param_groups]
        t = sched.last_epoch
        for micro in range(acc):
            x = batch(attempt, micro)
            last = micro == acc - 1
            if accelerator is not None:
                with accelerator.accumulate(train_model):
                    loss = train_model(x).pow(2).mean()
                    if amp and attempt in POISONED:
                        loss = Overflow.apply(loss)
                    accelerator.backward(loss)
                    train_opt.step()
                    stepper.step()
                    train_opt.zero_grad()
                continue
            sync = train_model.no_sync() if (world() > 1 and not last) else _Null()  # type: ignore[operator]
            with sync:
                loss = train_model(x).pow(2).mean() / acc
                if amp and attempt in POISONED:
                    loss = Overflow.apply(loss)
                (scaler.scale(loss) if scaler is not None else loss).backward()
        if accelerator is None:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            sched.step()
            optimizer.zero_grad()
        attempt += 1
        if sched.last_epoch == t + 1:
            telemetry.on_update(t, lrs)
        if attempt % SAVE_EVERY == 0:
            store.flush(durable=True)
            trackers = {"scaler": scaler.state_dict()} if scaler is not None else {}
            ckpts.save(sched.last_epoch, model=model, optimizer=optimizer, scheduler=sched,
                       extra={"attempts": attempt}, trackers=trackers, reason="periodic")  # fmt: skip
        if kill and attempt == KILL_AT:
            kill_here(run_dir)
    store.close()
    ckpts.close()
    if accelerator is not None:
        accelerator.wait_for_everyone()


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# ---- Lightning ---------------------------------------------------------------------------------
def run_lightning(run_dir: Path, acc: int, amp: bool, kill: bool) -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.plugins.precision import MixedPrecision

    from cosanneal.integrations.lightning import callbacks

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)

        def training_step(self, b: Any, i: int) -> torch.Tensor:
            loss = self.layer(b[0]).float().pow(2).mean()
            return Overflow.apply(loss) if amp and self.trainer.global_step in POISONED else loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=PEAK)

    class Probe(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.truth = Truth(run_dir, lambda: trainer.global_step)
            trainer.optimizers[0].register_step_pre_hook(self.truth.hook)

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            if kill and trainer.global_step == KILL_AT:
                kill_here(run_dir)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(ATTEMPTS * acc * BATCH * world(), 3))
    plugins = (
        [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**8))]
        if amp
        else []
    )
    trainer = pl.Trainer(
        max_steps=ATTEMPTS, accelerator="cpu", devices=world(), strategy="ddp" if world() > 1 else "auto",
        accumulate_grad_batches=acc, plugins=plugins, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(run_dir),
        callbacks=[*callbacks(schedule(), run_dir, every_steps=SAVE_EVERY, tensorboard=False), Probe()],
    )  # fmt: skip
    trainer.fit(Model(), torch.utils.data.DataLoader(data, batch_size=BATCH), ckpt_path="last")


# ---- Hugging Face Trainer ----------------------------------------------------------------------
def run_hf(run_dir: Path, acc: int, amp: bool, kill: bool) -> None:
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from cosanneal.integrations.hf import CosannealCallback, cosanneal_trainer_schedule

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.poison = False

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            loss = self.layer(x).pow(2).mean()
            return {"loss": Overflow.apply(loss) if self.poison else loss}

    torch.manual_seed(0)
    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=PEAK)
    step = {"attempt": 0}

    class Probe(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step["attempt"] = state.global_step
            model.poison = amp and state.global_step in POISONED

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if kill and state.global_step == KILL_AT:
                kill_here(run_dir)

    truth = Truth(run_dir, lambda: step["attempt"])
    optimizer.register_step_pre_hook(truth.hook)
    data = [{"x": x} for x in torch.randn(ATTEMPTS * acc * BATCH * world(), 3)]
    args = TrainingArguments(
        str(run_dir), max_steps=ATTEMPTS, per_device_train_batch_size=BATCH, gradient_accumulation_steps=acc,
        save_steps=SAVE_EVERY, logging_steps=1, use_cpu=True, report_to=[], disable_tqdm=True,
        remove_unused_columns=False, dataloader_num_workers=0, seed=0, max_grad_norm=0.0,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=data,
        optimizers=cosanneal_trainer_schedule(schedule(), optimizer),
        callbacks=[CosannealCallback(run_dir, tensorboard=False), Probe()],
    )  # fmt: skip
    if amp:  # the GradScaler the Trainer's accelerator uses (fp16 AMP is refused on CPU by accelerate)
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    last = get_last_checkpoint(str(run_dir))
    trainer.train(resume_from_checkpoint=last)


RUNNERS: dict[str, Callable[[Path, int, bool, bool], None]] = {
    "own": lambda d, a, m, k: run_loop(d, a, m, k, use_accelerate=False),
    "accelerate": lambda d, a, m, k: run_loop(d, a, m, k, use_accelerate=True),
    "lightning": run_lightning,
    "hf": run_hf,
}


def main(out: str, frameworks: str) -> None:
    torch.set_num_threads(1)
    for framework in frameworks.split(","):
        for acc, amp in SUBCASES:
            run_dir = Path(out) / f"{framework}-acc{acc}-amp{int(amp)}"
            run_dir.mkdir(parents=True, exist_ok=True)
            if (run_dir / f"done-rank{rank()}").exists():
                continue
            kill = (acc, amp) == KILLED and not (run_dir / f"killed-rank{rank()}").exists()
            RUNNERS[framework](run_dir, acc, amp, kill)
            (run_dir / f"done-rank{rank()}").write_text("done\n")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    # end without Python's shutdown: a gloo worker thread freeing the last DDP all-reduce after it
    # began aborts the rank (docs/torch.md, "A torch teardown abort"); every result is written above
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
