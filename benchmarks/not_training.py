#!/usr/bin/env python3
"""Where the time of `python nn.py` goes when it is not training.

    python benchmarks/not_training.py                       # the one-step run, 5 times (about 10 s)
    python benchmarks/not_training.py --repeats 3 -- --preset fast

Runs `python nn.py --quiet --threads 1 FLAGS` (default FLAGS: `--steps 1 --eval-every 0`,
which is start-up, data, the test and every output around a single training step)
in fresh processes, with a stopwatch around each part: the imports, loading the
data, training, evaluating, the model file, the pictures, stats.json, the copies
under runs/, and the interpreter's exit after the last line of nn.py. Prints the
median of each part in milliseconds, and the wall and CPU time of the whole
process, so that the next speed-up can start where the time is.

The stopwatches wrap nn.py's own functions from outside (nn.py is imported as a
module, not changed); a part that calls another is shown with the other included,
indented below it.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

# (module, function, shown as, depth): what the child process times. A part of depth 0
# is timed where no other part is under way: monitor.evaluate, called by evaluate_sets too,
# counts only the test set after training.
PARTS = [
    ("data", "prepare_data", "load the data (CSV caches)", 0),
    ("nn", "train", "train (with the evaluations it waits for)", 0),
    ("monitor", "evaluate_sets", "evaluations during training (a thread of their own)", 1),
    ("nn", "evaluate", "evaluate the test set after training", 0),
    ("save", "save_run", "save: model, pictures, stats.json, copies", 0),
    ("model_file", "to_bytes", "model_mnist.npz", 1),
    ("plots", "loss_graph", "training_loss_graph.png", 1),
    ("plots", "accuracy_graph", "accuracy_graph.png", 1),
    ("plots", "confusion_matrix_plot", "confusion_matrix.png", 1),
    ("plots", "misclassified_grid", "misclassified.png", 1),
    ("plots", "first_layer_weights", "weights.png", 1),
    ("save", "write_stats", "stats.json (and its copy)", 1),
]


def child(flags, report_path):
    """Run nn.py with FLAGS in this process, timing its parts; write them to report_path
    as JSON (the exit's time is added by the parent). pictures_here: nn.py draws its
    pictures itself rather than in worker processes."""
    seconds = {}
    running = []  # the labels of the parts under way, outermost first

    def timed(owner, name, label, depth):
        function = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if depth == 0 and running:  # a top-level part called inside another (monitor.evaluate by
                return function(*args, **kwargs)  # evaluate_sets): counted there, not twice
            running.append(label)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started
                running.pop()
        setattr(owner, name, wrapper)

    started = time.perf_counter()
    import numpy  # noqa: F401
    seconds["import NumPy"] = time.perf_counter() - started
    started = time.perf_counter()
    sys.path.insert(0, str(PROJECT_DIR))
    import nn
    seconds["import nn.py and its modules"] = time.perf_counter() - started  # Matplotlib among them
    started = time.perf_counter()
    import matplotlib.backends.backend_agg  # noqa: F401  (loaded when the first picture is saved)
    seconds["import Matplotlib's Agg canvas"] = time.perf_counter() - started
    from app import data, errors, model_file, monitor, plots, save
    modules = {"nn": nn, "data": data, "monitor": monitor, "save": save, "model_file": model_file, "plots": plots}
    for module, name, label, depth in PARTS:
        timed(modules[module], name, label, depth)
    status = errors.quiet_on_closed_output(nn.main, flags)
    Path(report_path).write_text(json.dumps({"seconds": seconds, "status": status, "ended": time.time()}))
    import gc
    gc.freeze()  # as nn.py ends (see its last lines)
    sys.exit(status)


def one_run(flags):
    """{part: seconds} of one fresh `python nn.py` process, with "wall", "cpu" and "exit"."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [sys.executable, __file__, "--child", str(report), "--", "--quiet", "--threads", "1", "--out", folder, *flags]
        environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
        environment["OPENBLAS_NUM_THREADS"] = "1"  # and Python keeps the modules it compiles, as for a user
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall, ended = time.perf_counter() - started, time.time()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0 or not report.exists():
            sys.exit(f"not_training.py: nn.py {' '.join(flags)} failed (exit {result.returncode}): "
                     f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no message'}")
        measured = json.loads(report.read_text())
    parts = measured["seconds"]
    parts["exit (after nn.py's last line)"] = ended - measured["ended"]
    parts["wall"] = wall
    parts["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs; the table gives medians (default: 5)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("flags", nargs="*", help="nn.py's flags, after -- (default: --steps 1 --eval-every 0)")
    args = parser.parse_args()
    if args.child:
        return child(args.flags, args.child)
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more, got {args.repeats}")
    flags = args.flags or ["--steps", "1", "--eval-every", "0"]
    runs = [one_run(flags) for _ in range(args.repeats)]
    print(f"python nn.py --quiet --threads 1 {' '.join(flags)}: medians of {len(runs)} runs, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    labels = ["import NumPy", "import nn.py and its modules", "import Matplotlib's Agg canvas"]
    labels += [label for _, _, label, _ in PARTS] + ["exit (after nn.py's last line)"]
    depth = {label: d for _, _, label, d in PARTS}
    for label in labels:
        values = [run[label] for run in runs if label in run]
        if values:
            print(f"  {'  ' * depth.get(label, 0) + label:<50} {1e3 * statistics.median(values):8.1f} ms")
    wall, cpu = (statistics.median(run[key] for run in runs) for key in ("wall", "cpu"))
    print(f"  {'the whole process: wall, CPU':<50} {1e3 * wall:8.1f} ms, {1e3 * cpu:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
