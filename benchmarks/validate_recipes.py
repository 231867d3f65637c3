#!/usr/bin/env python3
"""Validation accuracy of training recipes over seeds: how `--preset fast` was chosen.

    python benchmarks/validate_recipes.py --seeds 0 1 2 -- "--preset fast" "--preset fast --steps 2000"

Each recipe is a string of nn.py flags. For every seed it holds out 10 % of the
training images as nn.py's --val-split 0.1 does (the same split for the same seed),
trains on the rest on one thread and evaluates the held-out images only: the test
set is never looked at, so choosing among the rows cannot fit the test set. Prints
one Markdown row per recipe: images seen, validation accuracy (mean and lowest),
mean validation loss and the median CPU seconds of training.
"""

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

import numpy as np  # noqa: E402

from app import data  # noqa: E402
import nn  # noqa: E402
from mlp import MLP  # noqa: E402
from app.progress import Progress  # noqa: E402

VAL_SPLIT = 0.1


class NoStop:
    signal = None


def validate(config, train_set, seed):
    """(validation loss, validation accuracy, CPU seconds of training) of `config` with `seed`."""
    config = dict(config, seed=seed, val_split=VAL_SPLIT, eval_every=0)
    kept, held_out = nn.split_validation(*train_set, VAL_SPLIT, np.random.default_rng([seed, 1]))  # as nn.py
    rng = np.random.default_rng([seed, 0])  # as nn.py: initial weights, then the permutations
    model = MLP([784, *config["hidden"], 10], [config["activation"]] * len(config["hidden"]) + ["softmax"],
                rng=rng, dropout=config["dropout"])
    steps_per_epoch = len(kept[1]) // config["batch_size"]
    started = time.process_time()
    nn.train(model, config, kept, {}, rng, Progress(config["steps"], steps_per_epoch, quiet=True), NoStop())
    cpu_seconds = time.process_time() - started
    loss, accuracy, _ = nn.evaluate(model, *held_out)
    return loss, accuracy, cpu_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+",
                        help='nn.py flags, one quoted string per recipe, after -- (e.g. -- "--preset fast")')
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(default: 0 1 2)")
    args = parser.parse_args()
    flags = nn.build_parser()
    configs = [nn.resolve_config(flags.parse_args(shlex.split(recipe))) for recipe in args.recipes]
    train_set = data.load_mnist(PROJECT_DIR / "datasets", [PROJECT_DIR / "datasets"], log=lambda text: None)["train"]
    print(f"| recipe | images seen | validation accuracy, mean (lowest) over seeds {args.seeds} "
          "| validation loss | CPU s |\n| --- | --- | --- | --- | --- |")
    for recipe, config in zip(args.recipes, configs):
        results = [validate(config, train_set, seed) for seed in args.seeds]
        accuracies = [100 * accuracy for _, accuracy, _ in results]
        print(f"| `{recipe}` | {config['steps'] * config['batch_size']:,} | {statistics.mean(accuracies):.2f} % "
              f"({min(accuracies):.2f}) | {statistics.mean(loss for loss, _, _ in results):.4f} "
              f"| {statistics.median(cpu for _, _, cpu in results):.2f} |", flush=True)


if __name__ == "__main__":
    main()
