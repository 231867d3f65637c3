#!/usr/bin/env python3
"""How fast is the training loop? Measured against its own matrix products and PyTorch.

    python benchmarks/benchmark.py                   # the full benchmark (about 2.5 minutes)
    python benchmarks/benchmark.py --steps 200 --repeats 1 --threads 1 --no-full-run

Every contender runs in a fresh process (the BLAS thread count can only be set
before NumPy or PyTorch starts), after a warm-up, and the contenders alternate
repeat after repeat so that a slow moment of the machine hits them all; the table
gives medians. Contenders, all on the default network (784-150-150-10, batch 64,
float32, SGD lr 0.1) and the real MNIST training set:
  numpy   the project's training loop (nn.train: gather, forward, loss, backward, update)
  flat    the same step as one flat function: same arrays and operations, no classes
  matmul  the loop's own eight matrix products alone, on the layers' buffers
  matmul_alloc  the same products written plainly (X @ W), each allocating its result
  torch   the same network and loop in PyTorch, if it is installed
Also measured: parsing the training CSV, loading its cache, one evaluation of the
test set, and whole runs of `python nn.py` and `python nn.py --preset fast`,
alternating (wall time, training time, peak memory): what is not training as a
ratio of the training time, the time to 98 % of each, and (if torch imports) the
time PyTorch takes to run the `fast` recipe on the same network. Results go to the
console and to a JSON file.

    python benchmarks/benchmark.py --threads 1 --no-full-run --against main

--against REV also times another git revision's own training loop and matrix
products (REV's files exported to a temporary folder, REV's own workers), in the
same alternating repeats: loop / products differs from one CPU to another, so a
change is judged against the code before it on the same machine, in the same run.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
BATCH, SIZES = 64, (784, 150, 150, 10)


# ------------------------------------------------------------------ workers (one process each)

def load_training_set():
    sys.path.insert(0, str(PROJECT_DIR))
    from app import data
    splits = data.load_mnist(PROJECT_DIR / "datasets", [PROJECT_DIR / "datasets"], log=lambda text: None)
    return splits["train"]


def worker_numpy(steps, warmup):
    """Seconds per step of the project's own training loop."""
    import numpy as np
    import nn
    from app import cli
    from mlp import MLP
    from app.progress import Progress
    images, labels = load_training_set()
    rng = np.random.default_rng(0)
    model = MLP(SIZES, rng=rng)
    config = dict(cli.DEFAULTS, steps=warmup, eval_every=0)

    class NoStop:
        signal = None
    nn.train(model, config, (images, labels), {}, rng, Progress(warmup, 937, quiet=True), NoStop())
    config["steps"] = warmup + steps
    started = time.perf_counter()
    nn.train(model, config, (images, labels), {}, rng, Progress(warmup + steps, 937, warmup, quiet=True),
             NoStop(), first_step=warmup)
    return (time.perf_counter() - started) / steps


def worker_flat(steps, warmup):
    """Seconds per step of the same step written as one flat function: the same
    arrays and NumPy operations as the project's loop (W and b views of one flat
    array, updated in one operation), without its classes, method calls and
    per-step bookkeeping (progress, divergence check, evaluations). The gap to
    `numpy` is what the structure costs; the gap to `matmul` is what NumPy itself
    costs around the products."""
    import numpy as np
    from app import data
    from functions import softmax_cross_entropy
    images, labels = load_training_set()
    rng = np.random.default_rng(0)
    sizes = SIZES
    shapes = list(zip(sizes[:-1], sizes[1:]))
    parameters = np.zeros(sum((n_in + 1) * n_out for n_in, n_out in shapes), np.float32)
    gradients, update = np.empty_like(parameters), np.empty_like(parameters)
    W, b, dW, db, offset = [], [], [], [], 0
    for n_in, n_out in shapes:
        W.append(parameters[offset:offset + n_in * n_out].reshape(n_in, n_out))
        dW.append(gradients[offset:offset + n_in * n_out].reshape(n_in, n_out))
        offset += n_in * n_out
        b.append(parameters[offset:offset + n_out])
        db.append(gradients[offset:offset + n_out])
        offset += n_out
        W[-1][...] = rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in)
    X = np.empty((BATCH, sizes[0]), np.float32)
    Z = [np.empty((BATCH, n), np.float32, order="F" if n == sizes[-1] else "C") for n in sizes[1:]]
    A = [np.empty((BATCH, n), np.float32) for n in sizes[1:-1]]
    D = [np.empty((BATCH, n), np.float32) for n in sizes[1:-1]]
    dX = [np.empty((BATCH, n), np.float32) for n in sizes[1:-1]]
    steps_per_epoch = len(labels) // BATCH

    def run(count):
        order = rng.permutation(len(labels))
        for step in range(count):
            position = step % steps_per_epoch
            if position == 0:
                order = rng.permutation(len(labels))
            batch = order[position * BATCH:(position + 1) * BATCH]
            data.to_inputs(images.take(batch, axis=0), out=X)
            inputs = [X] + A
            for layer in range(3):
                np.matmul(inputs[layer], W[layer], out=Z[layer])
                Z[layer] += b[layer]
                if layer < 2:
                    np.greater(Z[layer], 0, out=D[layer])
                    np.multiply(Z[layer], D[layer], out=A[layer])
            _, dZ = softmax_cross_entropy(Z[2], labels[batch])
            for layer in (2, 1, 0):
                np.matmul(inputs[layer].T, dZ, out=dW[layer])
                np.sum(dZ, axis=0, out=db[layer])
                if layer > 0:
                    dZ = np.matmul(dZ, W[layer].T, out=dX[layer - 1])
                    dZ *= D[layer - 1]
            np.multiply(gradients, np.float32(0.1), out=update)
            np.subtract(parameters, update, out=parameters)
    run(warmup)
    started = time.perf_counter()
    run(steps)
    return (time.perf_counter() - started) / steps


def seconds_per_call(function, steps, warmup):
    """Mean seconds of function() over `steps` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    started = time.perf_counter()
    for _ in range(steps):
        function()
    return (time.perf_counter() - started) / steps


def worker_matmul(steps, warmup):
    """Seconds per step of the training loop's own eight matrix products alone: three
    forward (X @ W), five backward (dW = X.T @ dZ of every layer, dX = dZ @ W.T of
    the last two).

    They run on the layers' own buffers after one training step, so shapes, memory
    orders and strides are exactly those of the loop: the column-major logits, the
    transposed views."""
    import numpy as np
    from functions import softmax_cross_entropy
    from mlp import MLP
    rng = np.random.default_rng(0)
    model = MLP(SIZES, rng=rng)
    X = rng.random((BATCH, SIZES[0]), dtype=np.float32)
    _, d_logits = softmax_cross_entropy(model.forward(X, training=True), rng.integers(0, 10, BATCH))
    model.backward(d_logits)
    first, hidden, output = model.layers

    def step():
        for layer in model.layers:
            np.matmul(layer._X, layer.W, out=layer._Z)
        np.matmul(output._X.T, d_logits, out=output.dW)
        np.matmul(d_logits, output.W.T, out=output._dX)
        np.matmul(hidden._X.T, output._dX, out=hidden.dW)
        np.matmul(output._dX, hidden.W.T, out=hidden._dX)
        np.matmul(first._X.T, hidden._dX, out=first.dW)
    return seconds_per_call(step, steps, warmup)


def worker_matmul_alloc(steps, warmup):
    """The same eight products written plainly (``X @ W``, the bias left out), each
    allocating its result."""
    import numpy as np
    rng = np.random.default_rng(0)
    X = rng.random((BATCH, 784), dtype=np.float32)
    W1, W2, W3 = (rng.standard_normal(shape, dtype=np.float32) for shape in ((784, 150), (150, 150), (150, 10)))

    def step():
        A1 = X @ W1
        A2 = A1 @ W2
        Z3 = A2 @ W3
        dW3, dX3 = A2.T @ Z3, Z3 @ W3.T
        dW2, dX2 = A1.T @ dX3, dX3 @ W2.T
        return dW3, dW2, X.T @ dX2
    return seconds_per_call(step, steps, warmup)


def worker_torch(steps, warmup):
    """Seconds per step of the same network and loop written with PyTorch."""
    import numpy as np
    import torch
    torch.set_num_threads(int(os.environ["OPENBLAS_NUM_THREADS"]))
    torch.manual_seed(0)
    images, labels = load_training_set()
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    model = torch.nn.Sequential(torch.nn.Linear(784, 150), torch.nn.ReLU(), torch.nn.Linear(150, 150),
                                torch.nn.ReLU(), torch.nn.Linear(150, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_function = torch.nn.CrossEntropyLoss()
    steps_per_epoch = len(labels) // BATCH
    state = {"order": None}

    def run(first, count):
        for step in range(first, first + count):
            position = step % steps_per_epoch
            if position == 0 or state["order"] is None:
                state["order"] = torch.randperm(len(labels))
            batch = state["order"][position * BATCH:(position + 1) * BATCH]
            x, y = images_t[batch].float().div_(255), labels_t[batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()
    run(0, warmup)
    started = time.perf_counter()
    run(warmup, steps)
    return (time.perf_counter() - started) / steps


def worker_evaluate(steps, warmup):
    """Seconds of one evaluation of the 10,000 test images (monitor.evaluate), the median of
    `steps` after `warmup`: what each evaluation during training costs."""
    import numpy as np
    from app import monitor
    from mlp import MLP
    sys.path.insert(0, str(PROJECT_DIR))
    from app import data
    images, labels = data.load_mnist(PROJECT_DIR / "datasets", [PROJECT_DIR / "datasets"], log=lambda text: None)["test"]
    model = MLP(SIZES, rng=np.random.default_rng(0))
    times = []
    for _ in range(warmup + steps):
        started = time.perf_counter()
        monitor.evaluate(model, images, labels)
        times.append(time.perf_counter() - started)
    return statistics.median(times[warmup:])


def torch_recipe(preset):
    """(training seconds, test accuracy) of PyTorch training a preset of nn.py: the same
    network, initial weights, batches (the same seeded permutations), learning rate of
    every step (optimizers.learning_rate_at) and Nesterov momentum (PyTorch's formula is
    the project's: v <- m v + g, p <- p - lr (g + m v)). Only the loop is timed."""
    import numpy as np
    import torch
    from app import cli
    from mlp import MLP
    from optimizers import learning_rate_at
    torch.set_num_threads(int(os.environ["OPENBLAS_NUM_THREADS"]))
    config = dict(cli.DEFAULTS, **cli.PRESETS[preset])
    assert config["optimizer"] in ("sgd", "momentum", "nesterov") and not (config["dropout"] or config["augment"]
                                                                          or config["rotate"] or config["weight_decay"])
    sys.path.insert(0, str(PROJECT_DIR))
    from app import data
    splits = data.load_mnist(PROJECT_DIR / "datasets", [PROJECT_DIR / "datasets"], log=lambda text: None)
    (images, labels), (test_images, test_labels) = splits["train"], splits["test"]
    rng = np.random.default_rng([config["seed"], 0])  # as nn.py: initial weights, then the permutations
    project_model = MLP([784, *config["hidden"], 10], ["relu"] * len(config["hidden"]) + ["softmax"], rng=rng)
    layers = []
    for layer in project_model.layers:
        linear = torch.nn.Linear(layer.W.shape[0], layer.W.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.W.T.copy()))
            linear.bias.copy_(torch.from_numpy(layer.b.copy()))
        layers += [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    momentum = config["momentum"] if config["optimizer"] != "sgd" else 0.0
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=momentum,
                                nesterov=config["optimizer"] == "nesterov")
    loss_function = torch.nn.CrossEntropyLoss()
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    batch_size, total_steps = config["batch_size"], config["steps"]
    steps_per_epoch = len(labels) // batch_size
    started = time.perf_counter()
    for step in range(total_steps):
        position = step % steps_per_epoch
        if position == 0:
            order = torch.from_numpy(rng.permutation(len(labels)))
        batch = order[position * batch_size:(position + 1) * batch_size]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, total_steps, config["lr"], config["lr_schedule"],
                                           config["warmup_steps"])
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(images_t[batch].float().div_(255)), labels_t[batch])
        loss.backward()
        optimizer.step()
        loss.item()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        predicted = model(torch.from_numpy(test_images).float().div_(255)).argmax(dim=1).numpy()
    return seconds, float(np.mean(predicted == test_labels))


WORKERS = {"numpy": worker_numpy, "flat": worker_flat, "matmul": worker_matmul, "matmul_alloc": worker_matmul_alloc,
           "torch": worker_torch, "evaluate": worker_evaluate,
           "torch_fast": lambda steps, warmup: torch_recipe("fast")}


# ------------------------------------------------------------------ the orchestra

def run_worker_process(name, threads, steps, warmup, project_dir=PROJECT_DIR):
    """The finished process of `benchmarks/benchmark.py --worker NAME` of the project in
    project_dir (this tree, or the revision exported for --against), run with its own
    code on its import path and `threads` BLAS threads."""
    environment = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                       MKL_NUM_THREADS=str(threads), PYTHONPATH=str(project_dir))
    return subprocess.run([sys.executable, str(project_dir / "benchmarks" / "benchmark.py"), "--worker", name,
                           "--steps", str(steps), "--warmup", str(warmup)],
                          capture_output=True, text=True, env=environment, cwd=project_dir)


def run_worker(name, threads, steps, warmup, project_dir=PROJECT_DIR):
    """The value a worker prints: seconds per step for the loop contenders."""
    result = run_worker_process(name, threads, steps, warmup, project_dir)
    if result.returncode != 0:
        raise RuntimeError(f"worker {name} of {project_dir} failed:\n{result.stderr}")
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    return printed.get("value", printed.get("seconds_per_step"))  # the key before b6dafef


# ------------------------------------------------------------------ --against: another revision's own loop

class RevisionError(Exception):
    """A revision given to --against that cannot be benchmarked; the message is one line."""


def git(*arguments):
    """The finished `git -C PROJECT_DIR ARGUMENTS` (RevisionError if git is not installed)."""
    try:
        return subprocess.run(["git", "-C", str(PROJECT_DIR), *arguments], capture_output=True)
    except FileNotFoundError:
        raise RevisionError("git is not installed") from None


def resolve_revision(revision):
    """The full commit hash that `revision` (a branch, tag, hash, HEAD~5, ...) names in the
    project's git repository; RevisionError if the project is not a git checkout or the
    revision names no commit."""
    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.decode().strip()).resolve() != PROJECT_DIR:
        raise RevisionError(f"{PROJECT_DIR} is not a git checkout")
    found = None if revision.startswith("-") else git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if found is None or found.returncode != 0:
        raise RevisionError(f"unknown revision in {PROJECT_DIR}")
    return found.stdout.decode().strip()


def export_revision(commit, folder):
    """Write the files of `commit` into folder (`git archive | tar -x`), with this tree's
    MNIST CSVs linked into its datasets/ and their caches copied there.

    A symbolic link keeps the CSV's cache valid: the cache key is the CSV's device,
    inode, size and times (data._source_key), which os.stat reads through the link. The
    caches are copies, so that whatever the revision's code writes into its own never
    touches this tree's."""
    archive = subprocess.Popen(["git", "-C", str(PROJECT_DIR), "archive", commit], stdout=subprocess.PIPE)
    unpacked = subprocess.run(["tar", "-x", "-C", str(folder)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    if archive.wait() != 0 or unpacked.returncode != 0:
        raise RevisionError(f"cannot export it: {unpacked.stderr.decode().strip() or 'git archive failed'}")
    sys.path.insert(0, str(PROJECT_DIR))
    from app import data
    try:
        load_training_set()  # make sure this tree's CSVs and caches exist
    except data.DataError as error:
        raise RevisionError(f"this tree's data: {error}") from None
    for split in ("train", "test"):
        ours, theirs = data.csv_path(PROJECT_DIR / "datasets", split), data.csv_path(folder / "datasets", split)
        theirs.parent.mkdir(exist_ok=True)
        theirs.symlink_to(ours)
        shutil.copyfile(data.cache_path_for(ours), data.cache_path_for(theirs))


def check_revision(folder):
    """Run the exported revision's own `--worker matmul` once (RevisionError if it has
    none: too old) and load its training CSV once with its own data module: True if its
    cache was used, False if that load parsed the CSV (and cached it for the workers),
    None if the revision's data.load_csv does not say."""
    if not (folder / "benchmarks" / "benchmark.py").is_file():
        raise RevisionError("too old: it has no benchmarks/benchmark.py")
    probe = run_worker_process("matmul", 1, 1, 0, folder)
    if probe.returncode != 0:
        last_line = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        if "invalid choice" in last_line:
            raise RevisionError("too old: its benchmarks/benchmark.py has no --worker matmul")
        raise RevisionError(f"its --worker matmul failed: {last_line}")
    code = ("import sys\ntry:\n    from app import data\nexcept ImportError:  # a revision before app/\n    import data\n"
            "loaded = data.load_csv(sys.argv[1]); "
            "print(loaded[2] if isinstance(loaded, tuple) and len(loaded) == 3 else None)")
    loaded = subprocess.run([sys.executable, "-c", code, str(folder / "datasets" / "mnist_train.csv")],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(folder)), cwd=folder)
    return {"True": True, "False": False}.get(loaded.stdout.strip())


def torch_available():
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def measure_data(repeats):
    """Median seconds of parsing the training CSV and of loading its cache."""
    sys.path.insert(0, str(PROJECT_DIR))
    from app import data
    load_training_set()  # make sure the CSV and its cache exist
    path = data.csv_path(PROJECT_DIR / "datasets", "train")
    parse, cache = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        data.parse_csv(path)
        parse.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert data.load_csv(path)[2], "the cache was not used"
        cache.append(time.perf_counter() - started)
    return statistics.median(parse), statistics.median(cache)


def as_a_user_runs_it():
    """This process's environment, with Python free to keep the modules it compiles (as it
    does unless told not to, with PYTHONDONTWRITEBYTECODE): a user's second run of nn.py
    reads its modules compiled, and so do the timed runs after the first."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def measure_full_run(*flags, project_dir=PROJECT_DIR):
    """(wall seconds, peak resident memory in MiB, stats.json, CPU seconds: user + system) of
    `python nn.py --quiet FLAGS` on one thread, with cached data; project_dir: this tree, or
    the revision exported for --against."""
    with tempfile.TemporaryDirectory() as folder:
        command = [str(project_dir / "nn.py"), "--quiet", "--threads", "1", "--out", folder, *flags]
        code = ("import resource, subprocess, sys, time; started = time.perf_counter(); "
                f"r = subprocess.run([sys.executable, *{command!r}], stdout=subprocess.DEVNULL); "
                "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
                "print(time.perf_counter() - started, u.ru_maxrss, r.returncode, u.ru_utime + u.ru_stime)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=as_a_user_runs_it()).stdout.split()
        stats = json.loads((Path(folder) / "stats.json").read_text())
    return float(out[0]), int(out[1]) / 1024, stats, float(out[3])


def time_to_accuracy(stats, target=0.98):
    """Training seconds until the test accuracy first reached `target`, or None: the
    training time times the share of the steps done at the first evaluation that reached
    it (the steps cost alike), or the whole training time if only the final test did."""
    for evaluation in stats["evaluations"]:
        if evaluation.get("test_accuracy", 0) >= target:
            return stats["train_time_s"] * evaluation["step"] / stats["steps"]
    return stats["train_time_s"] if stats["test_accuracy"] >= target else None


def median_of(runs, key):
    values = [run[key] for run in runs if run[key] is not None]
    return statistics.median(values) if values else None


def measure_full_runs(repeats, with_torch, against=None):
    """Whole runs of `python nn.py` (default) and `python nn.py --preset fast`, and PyTorch
    training the fast recipe, alternating, on one thread; with --against, the revision's own
    default run too ("rev_default"). Returns {name: {"runs": [...], "median": {...}}}, each
    run with wall and training time, what is not training as a ratio of the training time,
    time to 98 %, test accuracy and loss."""
    evaluation_s = run_worker("evaluate", 1, 5, 1)
    recipes = {"default": [], "fast": ["--preset", "fast"], "one_step": ["--steps", "1", "--eval-every", "0"],
               "default_no_evaluations": ["--eval-every", "0"]}
    runs = {name: [] for name in [*recipes, *(["torch_fast"] if with_torch else []),
                                  *(["rev_default"] if against else [])]}
    for repeat in range(repeats):
        for name in (list(runs) if repeat % 2 == 0 else list(runs)[::-1]):  # alternate
            if name == "torch_fast":
                train_time, accuracy = run_worker("torch_fast", 1, 0, 0)
                runs[name].append({"train_time_s": train_time, "test_accuracy": accuracy,
                                   "time_to_98_s": train_time if accuracy >= 0.98 else None})
                continue
            if name == "rev_default":
                wall, peak, stats, cpu = measure_full_run(project_dir=against["folder"])
            else:
                wall, peak, stats, cpu = measure_full_run(*recipes[name])
            train, evaluations = stats["train_time_s"], len(stats["evaluations"])
            runs[name].append({
                "wall_s": wall, "cpu_s": cpu, "train_time_s": train, "peak_rss_mib": peak,
                "not_training_ratio": (wall - train) / train,
                "evaluations": evaluations,
                "time_to_98_s": time_to_accuracy(stats), "test_accuracy": stats["test_accuracy"],
                "test_loss": stats["test_loss"]})
    summary = {"evaluation_s": evaluation_s}
    for name, name_runs in runs.items():
        summary[name] = {"runs": name_runs, "median": {key: median_of(name_runs, key) for key in name_runs[0]}}
    # The training steps alone take the training time of the run without evaluations; all
    # else in the default run (its evaluations during training too) is not training.
    steps_alone = summary["default_no_evaluations"]["median"]["train_time_s"]
    summary["default"]["median"]["not_training_ratio_with_evaluations"] = (
        (summary["default"]["median"]["wall_s"] - steps_alone) / steps_alone)
    return summary


def report_full_runs(summary):
    """Print the whole runs' medians and the ratios between them (time outside training, fast against the default)."""
    default, fast = summary["default"]["median"], summary["fast"]["median"]
    count = len(summary["default"]["runs"])

    def spread(name, key):
        values = [run[key] for run in summary[name]["runs"] if run[key] is not None]
        return (max(values) - min(values)) / statistics.median(values) if values else 0.0
    print(f"\nwhole runs, one thread, medians of {count} alternating (spread: (max - min) / median)")
    labels = (("default", "python nn.py"), ("fast", "python nn.py --preset fast"),
              ("rev_default", f"{summary.get('against', 'REV')}: python nn.py"))
    for name, label in labels:
        if name not in summary:
            continue
        m = summary[name]["median"]
        print(f"  {label:<27} wall {m['wall_s']:6.2f} s, training {m['train_time_s']:6.2f} s "
              f"(spread {spread(name, 'train_time_s'):.0%}), not training {m['wall_s'] - m['train_time_s']:.2f} s "
              f"= {m['not_training_ratio']:.3f} of the training time; test accuracy "
              f"{100 * m['test_accuracy']:.2f} %, peak memory {m['peak_rss_mib']:.0f} MiB")
    alone = summary["default_no_evaluations"]["median"]
    print(f"  default: the {default['evaluations']:.0f} evaluations during training cost "
          f"{summary['evaluation_s'] * 1e3:.0f} ms each, made beside the training when a core is free "
          f"(monitor.Evaluations); the training steps alone (--eval-every 0) take {alone['train_time_s']:.2f} s "
          f"(spread {spread('default_no_evaluations', 'train_time_s'):.0%}); counted against them, all else "
          f"in the default run is {default['not_training_ratio_with_evaluations']:.3f} of the training time")
    one_step = summary["one_step"]["median"]
    summary["one_step_cpu_over_default_training"] = one_step["cpu_s"] / default["train_time_s"]
    print(f"  start-up, data, test and outputs alone (python nn.py --steps 1 --eval-every 0): wall "
          f"{one_step['wall_s']:.2f} s (spread {spread('one_step', 'wall_s'):.0%}), CPU {one_step['cpu_s']:.2f} s "
          f"(spread {spread('one_step', 'cpu_s'):.0%}) = {summary['one_step_cpu_over_default_training']:.3f} "
          f"of the default's training time")
    fast_share = fast["train_time_s"] / default["train_time_s"]
    summary["fast_over_default_training"] = fast_share
    # CPU seconds of training: a whole run's less the one-step run's (start-up, data, test, outputs).
    cpu_share = (fast["cpu_s"] - one_step["cpu_s"]) / (default["cpu_s"] - one_step["cpu_s"])
    summary["fast_over_default_training_cpu"] = cpu_share
    print(f"  fast trains in {fast_share:.3f} of the default's training time (1/{1 / fast_share:.1f}); "
          f"in CPU time, whole run less the one-step run, {cpu_share:.3f} (1/{1 / cpu_share:.1f})")
    times = {name: summary[name]["median"]["time_to_98_s"] for name in ("default", "fast", "torch_fast")
             if name in summary}
    summary["time_to_98_s"] = times
    print("  time to 98 %: " + ", ".join(f"{name} {'not reached' if t is None else f'{t:.2f} s'}"
                                         for name, t in times.items()))
    if times["default"] and times["fast"]:
        print(f"  default / fast = {times['default'] / times['fast']:.2f}", end="")
        if times.get("torch_fast"):
            print(f"; PyTorch fast / NumPy fast = {times['torch_fast'] / times['fast']:.2f} "
                  f"(PyTorch fast test accuracy {100 * summary['torch_fast']['median']['test_accuracy']:.2f} %)", end="")
        print()


def load_text(load):
    """The 1, 5 and 15-minute load averages as "5.5 4.8 3.1"."""
    return " ".join(f"{value:.1f}" for value in load)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per measurement (default: 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed steps first (default: 300)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per contender (default: 5)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="BLAS thread counts (default: 1 2)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    parser.add_argument("--no-full-run", action="store_true", help="skip the whole `python nn.py` runs")
    parser.add_argument("--full-runs", type=int, default=3, metavar="N",
                        help="whole runs of `python nn.py` and of `--preset fast`, alternating (default: 3)")
    parser.add_argument("--json", type=Path, default=PROJECT_DIR / "benchmarks" / "results" / "latest.json",
                        help="where to write the results (default: benchmarks/results/latest.json)")
    parser.add_argument("--against", metavar="REV",
                        help="also time the training loop and matrix products of git revision REV (main, "
                             "HEAD~5, e22ae49), with REV's own code, in the same alternating repeats")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"value": WORKERS[args.worker](args.steps, args.warmup)}))
        return 0
    if args.against is None:
        return benchmark(args, None)
    with tempfile.TemporaryDirectory(prefix="benchmark-against-") as folder:  # removed however the run ends
        try:
            commit = resolve_revision(args.against)
            export_revision(commit, Path(folder))
            cache_used = check_revision(Path(folder))
        except RevisionError as error:
            print(f"{Path(__file__).name}: error: --against {args.against}: {error}", file=sys.stderr)
            return 2
        return benchmark(args, {"revision": args.against, "commit": commit, "folder": Path(folder),
                                "cache_used": cache_used})


def benchmark(args, against):
    """Run every measurement, print the tables and write the JSON file. against: None,
    or the revision of --against ({"revision", "commit", "folder", "cache_used"})."""

    contenders = ["numpy", "flat", "matmul", "matmul_alloc"] + (["torch"] if not args.no_torch and torch_available() else [])
    # The contenders of --against, named rev_WORKER, run REV's own worker WORKER.
    contenders += ["rev_numpy", "rev_matmul"] if against else []
    print(f"Benchmark: {args.repeats} x {args.steps} steps after {args.warmup} warm-up steps; "
          f"contenders {', '.join(contenders)}; BLAS threads {args.threads}; {os.cpu_count()} CPUs")
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "processor": platform.processor() or platform.machine(),
                           "load_average_at_start": os.getloadavg()},
               "settings": vars(args) | {"json": str(args.json)}, "loop": {}}
    if against:
        cache_text = {True: "its data module used the CSV cache",
                      False: "its data module did not accept the CSV cache (another format): it parsed the CSV "
                             "once and cached it for its workers",
                      None: "its data module does not say whether it used the CSV cache"}[against["cache_used"]]
        print(f"against {against['revision']}: commit {against['commit'][:12]}, exported to a temporary folder "
              f"({cache_text}); its rows run its own benchmarks/benchmark.py --worker numpy and matmul")
        results["against"] = {"revision": against["revision"], "commit": against["commit"],
                              "cache_used": against["cache_used"]}
    for threads in args.threads:
        samples = {name: [] for name in contenders}
        for repeat in range(args.repeats):
            order = contenders if repeat % 2 == 0 else contenders[::-1]  # alternate
            for name in order:
                if name.startswith("rev_"):
                    value = run_worker(name[len("rev_"):], threads, args.steps, args.warmup, against["folder"])
                else:
                    value = run_worker(name, threads, args.steps, args.warmup)
                samples[name].append(value)
        results["loop"][str(threads)] = {name: {"median_s_per_step": statistics.median(values),
                                                "samples": values} for name, values in samples.items()}

    print(f"\n{'threads':>7}  {'contender':<34} {'us/step':>9} {'steps/s':>8} {'spread':>8}  ratio")
    for threads, table in results["loop"].items():
        matmul = table["matmul"]["median_s_per_step"]
        for name, label in (("numpy", "project training loop (NumPy)"), ("flat", "the same step as one flat function"),
                            ("matmul", "the 8 matrix products alone"),
                            ("matmul_alloc", "the same, allocating (X @ W)"),
                            ("rev_numpy", f"{args.against}: its training loop"),
                            ("rev_matmul", f"{args.against}: its 8 matrix products"),
                            ("torch", "PyTorch, same network and loop")):
            if name not in table:
                continue
            median, values = table[name]["median_s_per_step"], table[name]["samples"]
            spread = (max(values) - min(values)) / median
            ratio = ""
            if name == "flat":
                table["flat_over_matmul"] = median / matmul
                ratio = f"{median / matmul:.2f}x the matrix products"
            if name == "numpy":
                ratio = (f"{median / matmul:.2f}x the matrix products "
                         f"({median / table['matmul_alloc']['median_s_per_step']:.2f}x the allocating ones)")
                table["numpy_over_matmul"] = median / matmul
                if "torch" in table:
                    table["torch_over_numpy"] = table["torch"]["median_s_per_step"] / median
                    ratio += f"; {table['torch_over_numpy']:.2f}x faster than PyTorch"
            if name == "rev_numpy":
                table["rev_numpy_over_rev_matmul"] = median / table["rev_matmul"]["median_s_per_step"]
                ratio = f"{table['rev_numpy_over_rev_matmul']:.2f}x its matrix products"
            print(f"{threads:>7}  {label:<34} {median * 1e6:9.0f} {1 / median:8.0f} {spread:7.0%}  {ratio}")
    for threads, table in results["loop"].items():
        if against:
            table["numpy_over_rev_numpy"] = (table["numpy"]["median_s_per_step"]
                                             / table["rev_numpy"]["median_s_per_step"])
            print(f"loop/products, {threads} thread{'s' if threads != '1' else ''}: "
                  f"this tree {table['numpy_over_matmul']:.2f}x, {args.against} "
                  f"{table['rev_numpy_over_rev_matmul']:.2f}x (same run); this tree's loop takes "
                  f"{table['numpy_over_rev_numpy']:.2f}x the time of {args.against}'s")

    parse, cache = measure_data(max(1, min(args.repeats, 3)))
    results["data"] = {"csv_parse_s": parse, "cache_load_s": cache}
    print(f"\ndata: parse mnist_train.csv {parse:.3f} s, load its cache {cache:.3f} s")
    if not args.no_full_run:
        with_torch = "torch" in contenders
        results["full_runs"] = measure_full_runs(args.full_runs, with_torch, against)
        if against:
            results["full_runs"]["against"] = args.against
        report_full_runs(results["full_runs"])
    results["machine"]["load_average_at_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 minutes) at the start {load_text(results['machine']['load_average_at_start'])}, "
          f"at the end {load_text(results['machine']['load_average_at_end'])}, on {os.cpu_count()} CPUs")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
