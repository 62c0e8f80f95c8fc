"""A Lightning fit with cosanneal's callbacks: the schedule counts real updates (accumulation 2), the LR
trace goes to run.db, the best model and cycle-end snapshots to checkpoints/. Run it again with more
steps: trainer.fit(ckpt_path="last") resumes and the trace continues exactly.

    python examples/lightning_fit.py runs/lightning [--steps 60]
"""

import sys

import pytorch_lightning as pl
import torch
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

from cosanneal import Cosine, runs
from cosanneal.integrations.lightning import callbacks

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/lightning"
steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 60


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)  # no scheduler: the callback owns it


torch.manual_seed(0)
x = torch.randn(512, 8)
y = x[:, :3].argmax(dim=1)
train = DataLoader(TensorDataset(x[:448], y[:448]), batch_size=16, shuffle=True)
val = DataLoader(TensorDataset(x[448:], y[448:]), batch_size=64)
schedule = Cosine(peak_lr=0.2, warmup_steps=5, cycle_steps=20, cycle_mult=2, max_cycles=2, min_ratio=0.01)
trainer = pl.Trainer(
    max_steps=steps, accelerator="cpu", accumulate_grad_batches=2, val_check_interval=20, logger=False,
    enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks(schedule, run_dir, every_steps=10),
)  # fmt: skip
trainer.fit(Classifier(), train, val, ckpt_path="last")

run = runs.open(run_dir)
index, lr = run.scalar("lr", group=0)
_, expected = run.scalar("lr_expected", group=0)
print(f"done: {len(index)} updates, max |dLR| = {abs(lr - expected).max()}, run in {run_dir}")
