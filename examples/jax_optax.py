"""An optax training loop whose learning rate is a cosanneal SGDR schedule, inside a jitted update step.

    python examples/jax_optax.py

The schedule is traced into the jitted step (jax.numpy ops, no host callback); optax's count starts at
0 like cosanneal's step, so update k + 1 uses schedule(k). The LR optax actually used is read back from
inject_hyperparams and compared with the numpy closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cosanneal import Cosine
from cosanneal.jax import OptaxSchedule

STEPS = 300
schedule = Cosine(
    peak_lr=0.1, warmup_steps=20, cycle_steps=40, cycle_mult=1.5, peak_decay=0.8, max_cycles=None
)
optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=OptaxSchedule(schedule), momentum=0.9)

rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(256, 8)), dtype=jnp.float32)
y = x @ jnp.arange(1.0, 9.0) + 0.5


def loss_fn(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


@jax.jit
def train_step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, state.hyperparams["learning_rate"]


params = {"w": jnp.zeros(8), "b": jnp.zeros(())}
state = optimizer.init(params)
losses, used = [], []
for _ in range(STEPS):
    params, state, loss, lr = train_step(params, state, x, y)
    losses.append(float(loss))
    used.append(float(lr))

expected = schedule(np.arange(STEPS))
print("restarts:", schedule.restarts(STEPS))
for t in (0, 10, 20, 59, 60, 120, 209, 210):
    print(f"step {t:3d}: lr used {used[t]:.8f}  closed form {expected[t]:.8f}")
print(f"max |lr - closed form|: {np.max(np.abs(np.array(used) - expected)):.3e}")
print(f"initial loss: {losses[0]:.6f}")
print(f"final loss: {losses[-1]:.6f}")
