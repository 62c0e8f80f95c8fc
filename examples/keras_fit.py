"""A tiny Keras model trained with a cosanneal SGDR schedule; prints the LR Keras used vs the closed form.

    KERAS_BACKEND=jax python examples/keras_fit.py      (or torch)

The schedule restarts at fractional boundaries (cycle_mult=1.5: 40, 85, 152.5, 253.75) and the LR of each
update is read from the optimizer while fit() runs. Keras' step is optimizer.iterations, the number of
updates done, so update k + 1 uses schedule(k), as cosanneal counts.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from cosanneal import Cosine
from cosanneal.keras import LearningRateSchedule

schedule = Cosine(peak_lr=0.05, warmup_steps=10, cycle_steps=30, cycle_mult=1.5, max_cycles=None, min_lr=1e-4)


class RecordLR(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.used = {}

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.used[step] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


rng = np.random.default_rng(0)
x = rng.normal(size=(512, 8)).astype("float32")
y = (x @ np.linspace(-1.0, 1.0, 8) + 0.3).astype("float32")[:, None]

model = keras.Sequential(
    [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
)
model.compile(
    optimizer=keras.optimizers.SGD(learning_rate=LearningRateSchedule(schedule), momentum=0.9), loss="mse"
)
record = RecordLR()
history = model.fit(x, y, batch_size=16, epochs=12, verbose=0, callbacks=[record])  # 384 updates

steps = np.array(sorted(record.used))
used = np.array([record.used[t] for t in steps])
print(f"backend: {keras.backend.backend()}")
print("restarts:", schedule.restarts(len(steps)))
for t in (0, 5, 10, 39, 40, 84, 85, 152, 153, 253, 254):
    print(f"step {t:3d}: keras lr {record.used[t]:.8f}  closed form {schedule(t):.8f}")
print(f"max |lr - closed form|: {np.max(np.abs(used - schedule(steps))):.3e}")
print(f"loss: {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}")
