#!/usr/bin/env python3
"""How many momentum velocities become subnormal floats, and what they cost.

    python benchmarks/subnormals.py                 # the `fast` recipe, about 10 s

Trains the `--preset fast` recipe of nn.py (Nesterov momentum) on one thread and
prints, every few hundred steps, how many of the velocity's numbers are subnormal
(non-zero but smaller than np.finfo(np.float32).tiny, about 1.2e-38) and the mean
time of `optimizer.step` over the last stretch. Then it times one velocity update,
`v *= momentum; v += g`, on the run's own velocity as it is and with its subnormal
numbers set to zero. Some CPUs compute on subnormal numbers many times slower than
on normal ones (an Intel Xeon, Sapphire Rapids: `optimizer.step` 556 us with them
against 205 us without); others pay nothing (an AMD EPYC, Zen 4). Setting them to 0
in the optimizer costs an extra pass over the velocities, so whether it pays
depends on the CPU: this script tells, on yours.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import numpy as np  # noqa: E402

from app import data  # noqa: E402
import nn  # noqa: E402
from functions import softmax_cross_entropy  # noqa: E402
from mlp import MLP  # noqa: E402
from optimizers import make_optimizer  # noqa: E402

TINY = np.finfo(np.float32).tiny


def subnormal_count(array):
    """How many numbers of array are subnormal: non-zero and smaller in size than TINY."""
    magnitude = np.abs(array)
    return int(np.count_nonzero((magnitude < TINY) & (magnitude > 0)))


def mean_seconds(function, repeats=300):
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def main():
    config = dict(nn.DEFAULTS, **nn.PRESETS["fast"])
    images, labels = data.load_mnist(PROJECT_DIR / "datasets", [PROJECT_DIR / "datasets"],
                                     log=lambda text: None)["train"]
    rng = np.random.default_rng([config["seed"], 0])
    model = MLP([784, *config["hidden"], 10], rng=rng)
    optimizer = make_optimizer(config["optimizer"], config["momentum"])
    batch_size, total_steps = config["batch_size"], config["steps"]
    rates = nn.learning_rates_of_run(config, total_steps)
    steps_per_epoch = len(labels) // batch_size
    X = np.empty((batch_size, 784), np.float32)
    print(f"fast recipe: {config['optimizer']} lr {config['lr']} {config['lr_schedule']}, batch {batch_size}, "
          f"{total_steps} steps; {model.flat_parameters.size:,} parameters")
    print(f"{'step':>6} {'subnormal velocities':>21} {'optimizer.step':>15} {'whole step':>11}")
    update_time = step_time = 0.0
    stretch = 200
    for step in range(total_steps):
        started = time.perf_counter()
        position = step % steps_per_epoch
        if position == 0:
            order = rng.permutation(len(labels))
        batch = order[position * batch_size:(position + 1) * batch_size]
        data.to_inputs(images.take(batch, axis=0), out=X)
        _, dZ = softmax_cross_entropy(model.forward(X, training=True), labels[batch])
        model.backward(dZ)
        update_started = time.perf_counter()
        model.update(optimizer, rates[step])
        update_time += time.perf_counter() - update_started
        step_time += time.perf_counter() - started
        if (step + 1) % stretch == 0:
            velocity = optimizer.velocities[0]
            print(f"{step + 1:>6} {subnormal_count(velocity):>21,} {update_time / stretch * 1e6:>12.0f} us "
                  f"{step_time / stretch * 1e6:>8.0f} us")
            update_time = step_time = 0.0

    velocity, gradient = optimizer.velocities[0].copy(), model.flat_gradients.copy()
    mu = np.float32(config["momentum"])
    flushed = np.where(np.abs(velocity) < TINY, np.float32(0), velocity)
    for name, start in (("as it is", velocity), ("subnormals set to 0", flushed)):
        def update(v=start.copy(), start=start):
            np.copyto(v, start)  # the same numbers every time: the product decays them further
            np.multiply(v, mu, out=v)
            np.add(v, gradient, out=v)
        print(f"v *= momentum; v += g on the final velocity, {name} "
              f"({subnormal_count(start):,} subnormal): {mean_seconds(update) * 1e6:.0f} us")


if __name__ == "__main__":
    main()
