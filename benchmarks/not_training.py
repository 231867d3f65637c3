#!/usr/bin/env python3
"""Where the time of `python nn.py` goes when it is not training.

    python benchmarks/not_training.py                       # the one-step run, 5 times (about 10 s)
    python benchmarks/not_training.py --repeats 3 -- --preset fast
    python benchmarks/not_training.py --pictures-here       # each picture timed (see below)

Runs `python nn.py --quiet --threads 1 FLAGS` (default FLAGS: `--steps 1 --eval-every 0`,
which is start-up, data, the test and every output around a single training step)
in fresh processes, with a stopwatch around each part: the imports, loading the
data, training, evaluating, the model file, the pictures, stats.json, the copies
under runs/, and the interpreter's exit after the last line of nn.py. Prints the
median of each part in milliseconds, and the wall and CPU time of the whole
process, so that the next speed-up can start where the time is.

nn.py has its pictures drawn by two worker processes (picture_workers.py) when a core
is free, as here: the table then shows how long the run waited for them. With
--pictures-here, nn.py draws them itself, as it does on one core or with --show, and
the table shows the import of Matplotlib and each picture.

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
# is timed where no other part is under way: nn.evaluate, called by evaluate_sets too,
# counts only the test set after training.
PARTS = [
    ("nn", "prepare_data", "load the data (CSV caches)", 0),
    ("nn", "train", "train (with the evaluations it waits for)", 0),
    ("nn", "evaluate_sets", "evaluations during training (a thread of their own)", 1),
    ("nn", "evaluate", "evaluate the test set after training", 0),
    ("nn", "save_run", "save: model, pictures, stats.json, copies", 0),
    ("mlp.MLP", "save", "model_mnist.npz", 1),
    ("picture_workers.PictureWorkers", "draw", "the pictures (waited for)", 1),
    ("plots", "loss_graph", "training_loss_graph.png", 2),
    ("plots", "accuracy_graph", "accuracy_graph.png", 2),
    ("plots", "confusion_matrix_plot", "confusion_matrix.png", 2),
    ("plots", "misclassified_grid", "misclassified.png", 2),
    ("plots", "first_layer_weights", "weights.png", 2),
    ("nn", "write_stats", "stats.json", 1),
    ("runs", "copy_atomically", "copies under runs/", 1),
]


def child(flags, report_path, pictures_here):
    """Run nn.py with FLAGS in this process, timing its parts; write them to report_path
    as JSON (the exit's time is added by the parent). pictures_here: nn.py draws its
    pictures itself rather than in worker processes."""
    seconds = {}
    running = []  # the labels of the parts under way, outermost first

    def timed(owner, name, label, depth):
        function = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if depth == 0 and running:  # a top-level part called inside another (nn.evaluate by
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
    seconds["import nn.py and its modules"] = time.perf_counter() - started
    import mlp
    from app import picture_workers
    from app import runs
    modules = {"nn": nn, "runs": runs, "mlp.MLP": mlp.MLP, "picture_workers.PictureWorkers": picture_workers.PictureWorkers}
    if pictures_here:
        nn.picture_workers_wanted = lambda show: 0
        started = time.perf_counter()
        from app import plots  # imported by nn.py when it draws, with matplotlib's Figure and Agg
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
        seconds["import Matplotlib"] = time.perf_counter() - started
        modules["plots"] = plots
    for module, name, label, depth in PARTS:
        if module in modules:
            timed(modules[module], name, label, depth)
    status = nn.main_quiet_on_closed_output(flags)
    Path(report_path).write_text(json.dumps({"seconds": seconds, "status": status, "ended": time.time()}))
    import gc
    gc.freeze()  # as nn.py ends (see its last lines)
    sys.exit(status)


def one_run(flags, pictures_here):
    """{part: seconds} of one fresh `python nn.py` process, with "wall", "cpu" and "exit"."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [sys.executable, __file__, "--child", str(report), *(["--pictures-here"] if pictures_here else []),
                   "--", "--quiet", "--threads", "1", "--out", folder, *flags]
        environment = dict(os.environ, OPENBLAS_NUM_THREADS="1")
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
    parser.add_argument("--pictures-here", action="store_true",
                        help="nn.py draws its pictures itself, not in worker processes: each picture is timed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("flags", nargs="*", help="nn.py's flags, after -- (default: --steps 1 --eval-every 0)")
    args = parser.parse_args()
    if args.child:
        return child(args.flags, args.child, args.pictures_here)
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more, got {args.repeats}")
    flags = args.flags or ["--steps", "1", "--eval-every", "0"]
    runs = [one_run(flags, args.pictures_here) for _ in range(args.repeats)]
    print(f"python nn.py --quiet --threads 1 {' '.join(flags)}: medians of {len(runs)} runs, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; the pictures drawn "
          + ("by nn.py itself" if args.pictures_here else "by worker processes where a core is free"))
    labels = ["import NumPy", "import nn.py and its modules", "import Matplotlib"]
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
