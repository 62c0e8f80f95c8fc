"""A Hugging Face Trainer with a cosanneal schedule from a spec and cosanneal's callback: gradient
accumulation 2, the LR trace in run.db, sealed checkpoint-N folders. Run it again with more steps:
resume_from_checkpoint=True continues the trace exactly.

    python examples/hf_trainer.py runs/hf [--steps 40]
"""

import os
import sys

import torch
from torch.nn import functional
from transformers import Trainer, TrainingArguments

from cosanneal import runs
from cosanneal.integrations.hf import CosannealCallback, cosanneal_trainer_schedule

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/hf"
steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 40


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": functional.cross_entropy(logits, labels), "logits": logits}


torch.manual_seed(0)
x = torch.randn(512, 8)
data = [{"x": xi, "labels": xi[:3].argmax()} for xi in x]
model = Classifier()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
spec = {
    "kind": "cosine",
    "peak_lr": 3e-3,
    "warmup_steps": 4,
    "cycle_steps": 12,
    "cycle_mult": 2,
    "max_cycles": 2,  # cycles of 12 and 24 updates: a restart at update 16, the end exactly at 40
    "min_ratio": 0.01,
}
args = TrainingArguments(
    run_dir, max_steps=steps, per_device_train_batch_size=16, gradient_accumulation_steps=2, save_steps=10,
    eval_strategy="steps", eval_steps=10, logging_steps=5, use_cpu=True, report_to=[], disable_tqdm=True,
    remove_unused_columns=False,
)  # fmt: skip
trainer = Trainer(
    model=model, args=args, train_dataset=data[:448], eval_dataset=data[448:],
    optimizers=cosanneal_trainer_schedule(spec, optimizer), callbacks=[CosannealCallback(run_dir)],
)  # fmt: skip
resume = os.path.isdir(run_dir) and any(name.startswith("checkpoint-") for name in os.listdir(run_dir))
trainer.train(resume_from_checkpoint=True if resume else None)

run = runs.open(run_dir)
index, lr = run.scalar("lr", group=0)
_, expected = run.scalar("lr_expected", group=0)
print(f"done: {len(index)} updates, max |dLR| = {abs(lr - expected).max()}, run in {run_dir}")
