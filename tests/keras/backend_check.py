"""Run by test_keras_backends.py under one KERAS_BACKEND: fit, save, load and fit on; prints JSON.

    KERAS_BACKEND=jax python tests/keras/backend_check.py OUT_DIR

The model's one weight has loss gradient 1 (the loss is the mean prediction on inputs of 1), so plain
SGD moves it by exactly -lr per update: the per-batch weight change is the LR the optimizer used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def main(out_dir: Path) -> dict[str, Any]:
    import keras
    import numpy as np

    from cosanneal import Cosine
    from cosanneal.keras import LearningRateSchedule
    from cosanneal.schedules import Step
    from cosanneal.schedules._traced import UntraceableScheduleError

    schedule = Cosine(
        peak_lr=0.01,
        warmup_steps=4,
        cycle_steps=6,
        cycle_mult=1.5,
        peak_decay=0.9,
        max_cycles=None,
        min_lr=1e-4,
    )
    report: dict[str, Any] = {"backend": keras.backend.backend(), "restarts": schedule.restarts(60)}

    @keras.saving.register_keras_serializable(package="cosanneal_tests")
    def mean_prediction(y_true: Any, y_pred: Any) -> Any:
        return keras.ops.mean(y_pred)

    def build() -> Any:
        model = keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
        )
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=LearningRateSchedule(schedule)), loss=mean_prediction
        )
        return model

    class Record(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[int, float, float, float]] = []

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.before = float(keras.ops.convert_to_numpy(self.model.trainable_weights[0]).ravel()[0])
            self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self.lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            after = float(keras.ops.convert_to_numpy(self.model.trainable_weights[0]).ravel()[0])
            self.rows.append((self.step, self.lr, self.before - after, after))

    x = np.ones((40, 1), dtype="float32")
    y = np.zeros((40, 1), dtype="float32")

    def check(rows: list[tuple[int, float, float, float]]) -> dict[str, float]:
        steps = np.array([r[0] for r in rows])
        want = schedule(steps)
        return {
            "first": int(steps[0]),
            "last": int(steps[-1]),
            "lr_err": float(np.max(np.abs(np.array([r[1] for r in rows]) - want))),
            "update_err": float(np.max(np.abs(np.array([r[2] for r in rows]) - want))),
        }

    model, rec = build(), Record()
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[rec])
    report["fit"] = check(rec.rows)
    report["weight"] = rec.rows[-1][3]
    report["weight_expected"] = -float(np.sum(schedule(np.arange(40))))

    path = out_dir / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # our schedule needs no unsafe mode
    restored = loaded.optimizer._learning_rate
    report["loaded_class"] = type(restored).__name__
    report["loaded_equal"] = bool(restored.schedule == schedule)
    report["loaded_iterations"] = int(keras.ops.convert_to_numpy(loaded.optimizer.iterations))
    rec2 = Record()
    loaded.fit(x[:10], y[:10], batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[rec2])
    report["resumed"] = check(rec2.rows)

    try:
        odd = LearningRateSchedule(Step(0.1, step_size=7.3, gamma=0.5))
        t = np.array([0, 7, 8, 14, 15, 73, 74])
        got = keras.ops.convert_to_numpy(odd(keras.ops.convert_to_tensor(t))).astype(np.float64)
        report["step_7_3"] = float(np.max(np.abs(got - Step(0.1, step_size=7.3, gamma=0.5)(t))))
    except UntraceableScheduleError as exc:
        report["step_7_3"] = str(exc)
    if report["backend"] == "jax":  # Keras' ops stay 32-bit on jax even with x64: still exact boundaries
        import jax

        jax.config.update("jax_enable_x64", True)
        t = np.array([0, 3, 4, 9, 10, 18, 19, 32, 33, 52, 53, 10**6, 2**31 - 2], dtype=np.int64)
        got = keras.ops.convert_to_numpy(LearningRateSchedule(schedule)(keras.ops.convert_to_tensor(t)))
        err = np.max(np.abs(got.astype(np.float64) - schedule(t))) / schedule.peak_lr
        report["x64"] = {"dtype": str(got.dtype), "eps32_of_peak": float(err / np.finfo(np.float32).eps)}
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
