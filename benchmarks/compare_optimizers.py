#!/usr/bin/env python3
"""Compare the optimizers on the default network: loss and test accuracy against the step.

    python benchmarks/compare_optimizers.py            # 6000 steps each, about a minute
    python benchmarks/compare_optimizers.py --steps 20000 --out docs/optimizers.png

Each optimizer trains 784-150-150-10 from the same initial weights and batch order
(seed 0), with a learning rate of the usual size for it. Prints a table and draws
benchmarks/results/optimizers.png (ignored by git); the tracked docs/optimizers.png
changes only when --out names it.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import numpy as np  # noqa: E402

from app import data  # noqa: E402
import nn  # noqa: E402
from app import plots  # noqa: E402
from mlp import MLP  # noqa: E402
from app.progress import Progress  # noqa: E402

CONTENDERS = [  # (label, flags): momentum's lr is 10x smaller, as its velocity sums about 10 gradients
    ("SGD, lr 0.1 (the original)", {"optimizer": "sgd", "lr": 0.1}),
    ("momentum 0.9, lr 0.01", {"optimizer": "momentum", "lr": 0.01}),
    ("Nesterov 0.9, lr 0.01", {"optimizer": "nesterov", "lr": 0.01}),
    ("Adam, lr 0.001", {"optimizer": "adam", "lr": 0.001}),
    ("SGD, lr 0.1, cosine schedule", {"optimizer": "sgd", "lr": 0.1, "lr_schedule": "cosine"}),
]


class NoStop:
    signal = None


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "benchmarks" / "results" / "optimizers.png",
                        help="the picture (default: benchmarks/results/optimizers.png)")
    return parser


def main():
    args = build_parser().parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    splits = data.load_mnist(PROJECT_DIR / "datasets", [PROJECT_DIR / "datasets"])
    runs = []
    for label, changes in CONTENDERS:
        config = dict(nn.DEFAULTS, steps=args.steps, eval_every=max(args.steps // 20, 1), **changes)
        rng = np.random.default_rng(0)
        model = MLP([784, 150, 150, 10], rng=rng)
        history = nn.train(model, config, splits["train"], {"test": splits["test"]}, rng,
                           Progress(args.steps, 937, quiet=True), NoStop())
        final = history["evaluations"][-1]
        print(f"{label:32s} test accuracy {100 * final['test_accuracy']:.2f} %  test loss {final['test_loss']:.4f}")
        runs.append((label, history))

    plots.use_display(False)
    import matplotlib.pyplot as plt
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for label, history in runs:
        window = max(1, args.steps // 60)
        left.plot(history["loss_steps"], plots.moving_average(history["losses"], window), label=label)
        points = [(e["step"], 100 * e["test_accuracy"]) for e in history["evaluations"]]
        right.plot(*zip(*points), "o-", markersize=3, label=label)
    left.set(yscale="log", xlabel="training step", ylabel=f"training loss (mean of {window} steps)",
             title="Training loss")
    right.set(xlabel="training step", ylabel="test accuracy (%)", title="Test accuracy", ylim=(95, 99))
    for axes in (left, right):
        axes.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    figure.suptitle(f"Optimizers on 784-150-150-10, batch 64, {args.steps} steps, seed 0")
    figure.tight_layout()
    plots.save_figure(figure, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
