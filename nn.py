#!/usr/bin/env python3
"""Train a multi-layer perceptron on MNIST with NumPy alone, then test it.

    python nn.py                      the original run: 784-150-150-10, SGD, 20,000 steps
    python nn.py --help               every flag
    python nn.py predict IMAGE ...    read digits with the saved model (see predict.py)
    python nn.py serve                draw digits in a browser and watch the model read them (see serve.py)

Writes model_mnist.npz, stats.json and training_loss_graph.png (and the other
pictures) to --out, by default the folder of this script, and copies them to the
run's own folder, --out/runs/DATE_TIME/ (see runs.py).
"""

import argparse
import gc
import os
import re
import signal
import sys
from pathlib import Path

# The lowest versions the project supports (requirements.txt and the README say the same;
# .ci/run tests them). This file must stay readable by older Pythons up to the check below.
LOWEST_PYTHON = (3, 10)
LOWEST_PACKAGES = {"numpy": (1, 25, 2), "matplotlib": (3, 7, 5)}


def _version_tuple(text):
    """(1, 25, 2, 1) from "1.25.2": the three leading numbers, then 1 for a release (or a
    post-release, "1.25.2.post1") and 0 for a pre-release ("1.25.2rc1", "1.25.2.dev0"),
    which comes before the release it leads to."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)", text.strip())
    if not match:
        return (0, 0, 0, 0)
    numbers = tuple(int(number or 0) for number in match.groups()[:3])
    is_pre_release = re.match(r"[.\-_]?(a|b|c|rc|alpha|beta|pre|preview|dev)", match.group(4).lower())
    return numbers + (0 if is_pre_release else 1,)


def unsupported_versions():
    """One line saying what is missing or too old (Python, NumPy, Matplotlib) and what to do, or None.

    Read from the installed packages' metadata, before anything is imported, so that an
    old version gets this line instead of an error from deep inside."""
    if sys.version_info < LOWEST_PYTHON:
        return "Python {} is older than {}.{}, the lowest this project supports: run nn.py with a newer one".format(
            sys.version.split()[0], *LOWEST_PYTHON)
    import importlib
    from importlib import metadata
    for name, lowest in LOWEST_PACKAGES.items():
        wanted = ".".join(map(str, lowest))
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:  # importable without metadata (a bare copy)?
            try:
                installed = importlib.import_module(name).__version__
            except Exception:  # not there, or broken beyond telling its version
                return f"{name} is not installed for {sys.executable}: {install_advice()}"
        if _version_tuple(installed) < lowest + (1,):
            return (f"{name} {installed} is older than {wanted}, the lowest this project supports: "
                    f"{install_advice()}")
    return None


def install_advice(project_dir=None):
    """What to type to get the packages: in a shell where the project's virtual environment
    (.venv beside nn.py, as the README makes it) is not active, activate it first (a new
    shell forgets it); otherwise pip install."""
    venv = Path(project_dir or Path(__file__).resolve().parent) / ".venv"
    if sys.prefix == sys.base_prefix and venv.is_dir():
        activate = venv / ("Scripts" if os.name == "nt" else "bin") / "activate"
        return f"activate the project's virtual environment first (. {activate}), or pip install -r requirements.txt"
    return "pip install -r requirements.txt"



PROJECT_DIR = Path(__file__).resolve().parent
MODEL_FILE = "model_mnist.npz"
STATS_FILE = "stats.json"
LOSS_GRAPH_FILE = "training_loss_graph.png"
# Everything a run writes to --out, and copies to its own folder under runs/.
OUTPUT_FILES = (MODEL_FILE, STATS_FILE, LOSS_GRAPH_FILE, "accuracy_graph.png", "confusion_matrix.png",
                "misclassified.png", "weights.png")

# The original configuration. Flags left out take these values (or, with
# --resume, the values the model was trained with).
DEFAULTS = {
    "steps": 20000, "batch_size": 64, "lr": 0.1, "hidden": [150, 150], "activation": "relu",
    "seed": 0, "optimizer": "sgd", "momentum": 0.9, "lr_schedule": "constant", "warmup_steps": 0,
    "weight_decay": 0.0, "dropout": 0.0, "augment": 0, "rotate": 0.0, "val_split": 0.0, "eval_every": None,
    "early_stopping": 0,
}
# The learning rate each optimizer gets when --lr is not given (sgd: the original's).
# Measured on 3,000 and 20,000 steps of the default network (docs/results.md); momentum's
# 0.01 moves as far as sgd's 0.1 once its velocity sums about 10 gradients.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adam": 0.001}
# The optimizers that use --momentum; the others' is recorded as null (recorded_config).
MOMENTUM_OPTIMIZERS = ("momentum", "nesterov")
# The choices of --optimizer and --activation, spelled out so that the flags parse
# before NumPy is imported (tests check them against optimizers.py and functions.py).
OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam")
HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu")
# --preset best: chosen on a validation split (docs/results.md, "Beyond 98 %"); --preset fast:
# the default network trained in about a seventh of the default's time, reaching 98 %, also
# chosen on a validation split (docs/results.md says what it reaches). Flags only.
PRESETS = {
    "best": {"hidden": [800, 800], "optimizer": "nesterov", "lr": 0.05, "momentum": 0.9,
             "lr_schedule": "cosine", "warmup_steps": 500, "dropout": 0.2, "augment": 2,
             "batch_size": 128, "steps": 24000},
    "fast": {"optimizer": "nesterov", "lr": 0.2, "momentum": 0.9, "lr_schedule": "cosine", "warmup_steps": 100,
             "batch_size": 128, "steps": 1700, "eval_every": 0},
}
LR_SCHEDULES = ("constant", "step", "cosine")
SUBCOMMANDS = ("predict", "serve")  # the training command has none: python nn.py [FLAGS]
SUBCOMMANDS_HELP = """commands (each has its own --help):
  python nn.py [FLAGS]            train a model and test it (the flags above)
  python nn.py predict IMAGE ...  read digits in images with a saved model
  python nn.py serve              draw a digit in a browser and see it read"""
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
# A SIGTERM again within this many seconds is the same request, not a second one: GNU
# timeout, for one, sends SIGTERM to the process and then to its whole process group. (A
# second Ctrl-C, however quick, is a person asking to quit at once.)
SAME_SIGNAL_S = 0.5
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE's number, what a shell reports for a program ended by it


class UsageError(Exception):
    """A flag value that cannot work; refused before anything is loaded."""


class SaveFailed(Exception):
    """Writing an output failed after training (a full disk, say); the message names the
    file and what the save had written by then."""


class Diverged(Exception):
    """The loss or the weights stopped being finite numbers; `config` is the run's
    configuration, when known, for advice on the learning rate."""

    def __init__(self, message, config=None):
        super().__init__(message)
        self.config = config


# ------------------------------------------------------------------ flags

class _HelpFormatter(argparse.HelpFormatter):
    def _split_lines(self, text, width):
        """Wrap help at spaces only: a flag such as --batch-size is never cut at its hyphen."""
        import textwrap
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        """Keep the line breaks of the description and the epilog (one subcommand a line)."""
        return "\n".join(indent + line for line in text.splitlines())


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, not the usage block: `nn.py: error: ... (see --help)`, exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see python {self.prog} --help)\n")


def build_parser():
    d = DEFAULTS
    parser = _Parser(prog="nn.py", formatter_class=_HelpFormatter, description="Train a NumPy multi-layer perceptron on MNIST and test it.",
                     epilog=SUBCOMMANDS_HELP)
    group = parser.add_argument_group("the run (the original values are the defaults)")
    group.add_argument("--steps", type=int, metavar="N", help=f"training steps, total (default: {d['steps']})")
    group.add_argument("--batch-size", type=int, metavar="N", help=f"images per SGD step (default: {d['batch_size']})")
    group.add_argument("--lr", type=float, metavar="F", help="learning rate (default: by optimizer, " + ", ".join(
        f"{name} {lr}" for name, lr in DEFAULT_LR.items()) + "; with --resume and the same optimizer, the resumed run's)")
    group.add_argument("--hidden", type=int, nargs="*", metavar="N",
                       help="sizes of the hidden layers (default: 150 150)")
    group.add_argument("--seed", type=int, metavar="N", help=f"seed of the one random generator (default: {d['seed']})")
    group.add_argument("--data", type=Path, metavar="DIR", default=PROJECT_DIR / "datasets",
                       help="folder of mnist_train.csv and mnist_test.csv (default: datasets/ beside nn.py)")
    group.add_argument("--out", type=Path, metavar="DIR", help="folder for the model, stats and pictures, created if missing "
                                                "(default: the folder of nn.py; dry_run/ in it with --dry-run)")
    group = parser.add_argument_group("watching and using it")
    group.add_argument("--eval-every", type=int, metavar="N",
                       help="evaluate on the test (and validation) set every N steps, 0 for never "
                            "(default: once an epoch)")
    group.add_argument("--val-split", type=float, metavar="F",
                       help=f"fraction of the training images held out for validation (default: {d['val_split']})")
    group.add_argument("--threads", type=int, metavar="N",
                       help="BLAS threads for the matrix products; results are reproducible for the same "
                            "seed and thread count (default: 1, or OPENBLAS_NUM_THREADS if set)")
    group.add_argument("--log-interval", type=int, default=1000, metavar="N",
                       help="steps between progress lines when the output is not a terminal (default: 1000)")
    group.add_argument("--quiet", action="store_true", help="no progress, only the result")
    group.add_argument("--show", action="store_true", help="open the plots in windows at the end")
    group.add_argument("--resume", type=Path, metavar="MODEL",
                       help="continue training a saved model up to --steps steps in all")
    group.add_argument("--dry-run", action="store_true",
                       help="50 steps (or --steps) on 2,000 training and 1,000 test images, every "
                            "output written (to dry_run/ unless --out is given): a check that all works")
    group = parser.add_argument_group("beyond the original")
    group.add_argument("--preset", choices=sorted(PRESETS), help="a documented set of the flags below "
                       "(flags given as well win); " + "; ".join(
                           f"{name}: " + " ".join(f"--{k.replace('_', '-')} "
                                                  f"{' '.join(map(str, v)) if isinstance(v, list) else v}"
                                                  for k, v in PRESETS[name].items())
                           for name in PRESETS))
    group.add_argument("--optimizer", choices=OPTIMIZER_NAMES, help=f"how the weights move (default: {d['optimizer']})")
    group.add_argument("--momentum", type=float, metavar="F", help=f"for momentum and nesterov (default: {d['momentum']})")
    group.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                       help=f"learning rate over the run; step: /10 at 50 %% and 75 %% (default: {d['lr_schedule']})")
    group.add_argument("--warmup-steps", type=int, metavar="N",
                       help=f"linear learning-rate warm-up (default: {d['warmup_steps']})")
    group.add_argument("--weight-decay", type=float, metavar="F",
                       help=f"L2 penalty F/2 * sum(W**2) on the weights (default: {d['weight_decay']})")
    group.add_argument("--dropout", type=float, metavar="P", help=f"on hidden layers (default: {d['dropout']})")
    group.add_argument("--activation", choices=HIDDEN_ACTIVATIONS,
                       help=f"of the hidden layers (default: {d['activation']})")
    group.add_argument("--augment", type=int, nargs="?", const=2, metavar="PIXELS",
                       help="shift training images randomly by up to PIXELS (2 when given alone; default: 0)")
    group.add_argument("--rotate", type=float, metavar="DEGREES",
                       help="turn training images randomly by up to DEGREES (default: 0)")
    group.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                       help="stop after PATIENCE evaluations without a better validation loss and keep "
                            "the best weights; needs --val-split (default: off)")
    return parser


class _FlagsDoNotParse(Exception):
    """Raised instead of exiting while the flags are read for the thread count only."""


def _raise_flags_do_not_parse(message):
    raise _FlagsDoNotParse(message)


def usable_cores():
    """How many CPU cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def set_blas_threads(argv):
    """Set the BLAS thread count from --threads before NumPy is imported, the only time
    it can be set without extra packages. The flags are read by the same parser as the
    run's, so an abbreviation such as --thread counts; a command line that does not
    parse, or a subcommand, is left to main() to report. The default, 1, was chosen by
    measurement (benchmarks/README.md, "Figures on the project machine"): on the 2-core project machine the default run took
    11-12 s on one thread every time, and 9.2-22 s on two. An OPENBLAS_NUM_THREADS
    already in the environment is kept when --threads is not given."""
    threads = None
    if argv and not argv[0].startswith("-"):
        argv = []  # a subcommand such as predict: no --threads
    parser = build_parser()
    parser.error = _raise_flags_do_not_parse
    try:
        threads = parser.parse_known_args(argv)[0].threads
    except _FlagsDoNotParse:
        pass
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if threads is not None and threads > 0:
            os.environ[variable] = str(threads)
        else:
            os.environ.setdefault(variable, "1")
    cores = usable_cores()
    if threads is not None and threads > cores:
        print(f"nn.py: warning: --threads {threads} is more than the {cores} CPU cores this process may use; "
              f"the extra threads only wait for a core and slow the run down", file=sys.stderr)
    elif hasattr(os, "getloadavg"):
        warning = busy_cores_warning(threads, cores, os.getloadavg()[0])
        if warning:
            print(warning, file=sys.stderr)


def busy_cores_warning(threads, cores, load_average):
    """One line of warning when other programs leave fewer idle cores than `threads`, or None.

    load_average: the machine's 1-minute load average (os.getloadavg()[0]), read before
    this run starts working, so it counts the other programs. BLAS threads that must
    share a core wait for each other at every matrix product: on the 2-core project
    machine, --threads 2 beside one busy core ran at 17 steps/s, against about 1000 on
    one thread."""
    if threads is None or threads <= 1:
        return None
    busy = min(int(round(load_average)), cores)
    if cores - busy >= threads:
        return None
    return (f"nn.py: warning: --threads {threads}, but other programs keep about {busy} of the {cores} CPU cores "
            f"busy (load average {load_average:.1f}); expect it to be slower than --threads 1")


def _interrupted_while_starting(number, frame):
    """SIGINT while the program starts (NumPy and the modules load, a fraction of a
    second): nothing is written yet, so it ends at once with one line, not with a
    traceback from inside an import. main_quiet_on_closed_output takes over from there.
    Not installed when the parent made the program ignore SIGINT (`nn.py &` in a script):
    a Ctrl-C meant for the parent must not end it."""
    os.write(2, b"nn.py: interrupted while starting; nothing was written\n")
    os._exit(130)


if __name__ == "__main__":
    _SIGINT_IGNORED = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if not _SIGINT_IGNORED:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    _problem = unsupported_versions()
    if _problem:
        sys.exit(f"nn.py: error: {_problem}")
    set_blas_threads(sys.argv[1:])

import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

from app import data  # noqa: E402
from app import runs  # noqa: E402
from augment import random_rotations, random_shifts  # noqa: E402
from app import atomic  # noqa: E402
from app import picture_workers  # noqa: E402
from app.atomic import atomic_write  # noqa: E402
from functions import ACTIVATIONS, cross_entropy, softmax, softmax_cross_entropy  # noqa: E402
from mlp import MLP, ModelFileError  # noqa: E402
from optimizers import OPTIMIZERS, learning_rate_at, make_optimizer  # noqa: E402
from app.progress import Progress, format_duration  # noqa: E402
from app.words import count  # noqa: E402


def resolve_config(args, resumed_config=None):
    """The training configuration: flags given, else the preset, else the resumed
    model's values, else DEFAULTS. Raises UsageError for values that cannot work."""
    config = dict(DEFAULTS)
    if resumed_config:
        config.update({k: v for k, v in resumed_config.items() if k in DEFAULTS})
    if args.preset:
        config.update(PRESETS[args.preset])
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    config["lr"] = learning_rate_choice(args, resumed_config, config["optimizer"])[0]
    if args.momentum is not None and config["optimizer"] not in MOMENTUM_OPTIMIZERS:
        raise UsageError(f"--momentum is for --optimizer {' or '.join(MOMENTUM_OPTIMIZERS)}; "
                         f"{config['optimizer']} uses no momentum")
    if config["momentum"] is None:  # resumed from a run without momentum (recorded_config)
        config["momentum"] = DEFAULTS["momentum"]
    if args.dry_run and args.steps is None and not resumed_config:  # a resumed run keeps its steps
        if args.warmup_steps is None:  # a preset's warm-up shrinks with its steps (fast: 100 of 1,700 -> 3 of 50)
            config["warmup_steps"] = round(config["warmup_steps"] * 50 / config["steps"])
        config["steps"] = 50
    if args.preset and args.warmup_steps is None and 0 < config["steps"] <= config["warmup_steps"]:
        raise UsageError(f"--preset {args.preset} warms up for {config['warmup_steps']:,} steps, not fewer than "
                         f"--steps {config['steps']:,}: give more --steps, or --warmup-steps N under them")
    check_config(config)  # eval_every None means once an epoch, set when the data size is known
    return config


def learning_rate_choice(args, resumed_config, optimizer):
    """(learning rate, why it is the one): --lr when given, else the preset's, else on a
    resume the resumed run's when the optimizer stays the same, else the optimizer's
    default (DEFAULT_LR): another optimizer wants another rate (adam diverges at sgd's 0.1)."""
    if args.lr is not None:
        return args.lr, "given with --lr"
    if args.preset and "lr" in PRESETS[args.preset]:
        return PRESETS[args.preset]["lr"], f"the one of --preset {args.preset}"
    if resumed_config:
        resumed_optimizer = resumed_config.get("optimizer", DEFAULTS["optimizer"])
        if resumed_optimizer == optimizer and "lr" in resumed_config:
            return resumed_config["lr"], f"the resumed run's, which used {optimizer} too"
        return DEFAULT_LR[optimizer], (f"the default for {optimizer}, as the resumed run used {resumed_optimizer} "
                                       f"(give --lr to choose another)")
    return DEFAULT_LR[optimizer], f"the default for {optimizer}"


def check_config(config):
    """Raise UsageError naming the first flag whose value cannot work."""
    def need(condition, message):
        if not condition:
            raise UsageError(message)
    need(config["steps"] > 0, f"--steps must be a positive number of steps, got {config['steps']}")
    need(config["seed"] >= 0, f"--seed must be 0 or more, got {config['seed']}")
    need(config["batch_size"] > 0, f"--batch-size must be positive, got {config['batch_size']}")
    need(math.isfinite(config["lr"]) and config["lr"] > 0, f"--lr must be a positive number, got {config['lr']}")
    need(len(config["hidden"]) > 0, "--hidden needs at least one layer size, such as --hidden 150 150")
    need(min(config["hidden"]) > 0, f"--hidden sizes must be positive, got {config['hidden']}")
    need(config["eval_every"] is None or config["eval_every"] >= 0,
         f"--eval-every must be 0 or more, got {config['eval_every']}")
    need(0 <= config["val_split"] < 1, f"--val-split must be in [0, 1), got {config['val_split']}")
    need(0 <= config["dropout"] < 1, f"--dropout must be in [0, 1), got {config['dropout']}")
    need(math.isfinite(config["weight_decay"]) and config["weight_decay"] >= 0,
         f"--weight-decay must be a number, 0 or more, got {config['weight_decay']}")
    need(config["momentum"] is None or 0 <= config["momentum"] < 1,  # None: recorded without momentum
         f"--momentum must be in [0, 1), got {config['momentum']}")
    need(config["warmup_steps"] >= 0, f"--warmup-steps must be 0 or more, got {config['warmup_steps']}")
    need(config["warmup_steps"] < config["steps"], f"--warmup-steps {config['warmup_steps']} is not shorter than "
         f"--steps {config['steps']}: the learning rate would never reach --lr")
    need(0 <= config["augment"] <= 8, f"--augment must be 0 to 8 pixels, got {config['augment']}")
    need(0 <= config["rotate"] <= 45, f"--rotate must be 0 to 45 degrees, got {config['rotate']}")
    need(config["early_stopping"] >= 0, f"--early-stopping must be 0 or more, got {config['early_stopping']}")
    need(not config["early_stopping"] or config["val_split"] > 0, "--early-stopping needs --val-split")
    need(not config["early_stopping"] or config["eval_every"] != 0,
         "--early-stopping needs evaluations: leave out --eval-every 0")


def check_folders(args, out_dir, say):
    """Refuse a --data folder that does not exist, then check the --out folder
    (check_output_folder): all before the data loads, so that a long run never fails
    at its save."""
    if not os.path.isdir(args.data):
        raise UsageError(f"--data {args.data}: no such folder")
    check_output_folder(out_dir, say)


def check_output_folder(out_dir, say, label="--out", elsewhere="choose another --out"):
    """Create a missing output folder (and its parents), saying so; refuse one that cannot
    be created or written, a runs/ in it that is not a writable folder, and a folder in
    the place of an output. label names the folder in the messages and elsewhere says how
    to choose another: --out for nn.py; for `serve`'s training runs, which save beside
    the model, "the model's folder"."""
    # os.path's checks, not Path's: False, not an error, for a path too long to look at (mkdir then says why)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"{label} {out_dir}: not a folder")
    if not os.path.exists(out_dir):
        try:
            out_dir.mkdir(parents=True)
        except OSError as error:
            raise UsageError(f"{label} {out_dir}: cannot create it ({error.strerror})") from None
        say(f"Created the folder {out_dir} for the outputs")
    try:
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise UsageError(f"{label} {out_dir}: cannot write there ({error.strerror})") from None
    runs_dir = out_dir / runs.RUNS_DIR  # created by the save when missing: out_dir is writable
    if runs_dir.is_symlink() and not runs_dir.exists():
        target = runs_dir.parent / os.readlink(runs_dir)
        missing = "itself a link that leads nowhere" if target.is_symlink() else "which does not exist"
        raise UsageError(f"{runs_dir}: a link to {target}, {missing}; every run copies its outputs into "
                         f"{runs.RUNS_DIR}/ in {label} (create that folder, remove the link, or {elsewhere})")
    if runs_dir.exists():
        if not runs_dir.is_dir():
            raise UsageError(f"{runs_dir}: not a folder; every run copies its outputs into {runs.RUNS_DIR}/ "
                             f"in {label} (move the file away, or {elsewhere})")
        try:
            with tempfile.TemporaryFile(dir=runs_dir):
                pass
        except OSError as error:
            raise UsageError(f"{runs_dir}: cannot write there ({error.strerror}); every run copies its "
                             f"outputs into {runs.RUNS_DIR}/ in {label}") from None
    for name in OUTPUT_FILES:
        if (out_dir / name).is_dir():
            raise UsageError(f"{out_dir / name}: a folder where the run writes its {name} (move it away, or "
                             f"{elsewhere})")


# ------------------------------------------------------------------ data

def split_validation(images, labels, fraction, rng):
    """((train images, labels), (validation images, labels)): a random `fraction` held out."""
    n_val = int(round(len(labels) * fraction))
    if n_val == 0:
        raise UsageError(f"--val-split {fraction} holds out no image of the {len(labels)} training images")
    order = rng.permutation(len(labels))
    held, kept = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (images[kept], labels[kept]), (images[held], labels[held])


# ------------------------------------------------------------------ training

class StopRequest:
    """Turns SIGINT and SIGTERM into a request the training loop sees at its next
    step; a second signal ends the program at once, removing the temporary file of
    the output being written and the folders the run created that are still empty
    (created_folders, deepest first)."""

    def __init__(self, created_folders=()):
        self.signal = None
        self.saving = None  # (out_dir, folder_contents(out_dir)) once the save has begun
        self.created_folders = list(created_folders)  # the save adds its run folder (save_run)

    def __enter__(self):
        # A signal the parent ignores stays ignored (a job started with `nn.py &` from a script ignores Ctrl-C)
        self.previous = {s: signal.signal(s, self._handle) for s in EXIT_INTERRUPTED
                         if signal.getsignal(s) is not signal.SIG_IGN}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, number, frame):
        if self.signal is not None:
            if number == self.signal == signal.SIGTERM and time.monotonic() - self.signal_time < SAME_SIGNAL_S:
                return  # the first SIGTERM again (see SAME_SIGNAL_S)
            picture_workers.stop_all()  # the pictures being drawn keep their old version: said below as it is
            os.write(2, (self.quit_message() + "\n").encode())  # os.write: print may be mid-write
            atomic.remove_unfinished()  # the file being written keeps its old version, and no .tmp beside it
            remove_empty_folders(self.created_folders)
            os._exit(EXIT_INTERRUPTED.get(number, 1))
        self.signal, self.signal_time = signal.Signals(number), time.monotonic()

    def quit_message(self):
        """The line said when a second signal ends the program: what was saved and what not."""
        if self.saving is None:
            return "nn.py: quit at once: nothing was saved; earlier outputs are intact"
        return f"nn.py: quit during the save: {saved_so_far(*self.saving)}"


def remove_empty_folders(folders):
    """Remove each of `folders` (deepest first) that is empty: a run that stops before
    writing anything leaves no new empty folder behind, and one that wrote keeps its files."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty (or gone already): kept
            folder.rmdir()


def saved_so_far(out_dir, before):
    """'wrote A, B to DIR; not written: C, D (...)': which outputs a save that stopped
    part-way replaced, from the folder's contents before it began (folder_contents)."""
    now = folder_contents(out_dir)
    written = [name for name in OUTPUT_FILES if name in now and now[name] != before.get(name)]
    missing = [name for name in OUTPUT_FILES if name not in written]
    return (f"wrote {', '.join(written) or 'nothing'} to {out_dir}; not written: {', '.join(missing) or 'nothing'} "
            f"(what was there before is intact; a model replaced has its copy under {runs.RUNS_DIR}/)")


def evaluate(model, images, labels, batch_size=2000):
    """(loss, accuracy, logits (N, 10)) of the model on uint8 images (N, 784), in batches."""
    logits = np.concatenate([model.forward(data.to_inputs(images[i:i + batch_size]))
                             for i in range(0, len(images), batch_size)])
    return cross_entropy(logits, labels), float(np.mean(logits.argmax(axis=1) == labels)), logits


def train(model, config, train_set, eval_sets, rng, progress, stop, first_step=0, history=None, saved_state=None):
    """Train `model` in place from step first_step to config["steps"].

    train_set: (images (N, 784) uint8, labels (N,)). eval_sets: {"test": (...),
    "val": (...)} evaluated every config["eval_every"] steps (None: once an epoch), in a
    thread of their own when a core is free (see Evaluations).
    Each epoch visits a fresh random permutation of the training set in batches of
    config["batch_size"] (the last, incomplete batch of an epoch is left out).
    saved_state: the training_state of a resumed model (see MLP.save), or None. With
    it, the generator, the optimizer, the epoch in progress and the schedule's horizon
    continue where they were, so that the run is the same as one never stopped.
    Returns the history dict: per-step losses, evaluations, how it ended, the step
    the model's weights come from (steps_done) and the last step trained
    (last_step), and the training_state to save (see MLP.save).
    """
    images, labels = train_set
    batch_size, total_steps = config["batch_size"], config["steps"]
    steps_per_epoch = len(labels) // batch_size
    optimizer = make_optimizer(config["optimizer"], config["momentum"])
    order, schedule_steps = restore_training_state(saved_state, config, rng, optimizer, len(labels))
    history = history or {"loss_steps": [], "losses": [], "evaluations": []}
    losses = np.full(total_steps - first_step, np.nan)
    X = np.empty((batch_size, images.shape[1]), np.float32)
    weight_decay = config["weight_decay"]
    eval_every = steps_per_epoch if config["eval_every"] is None else config["eval_every"]
    augment, rotate = config["augment"], config["rotate"]
    learning_rates = learning_rates_of_run(config, schedule_steps)
    early_stopping = None
    if config["early_stopping"]:
        early_stopping = EarlyStopping(config["early_stopping"])
        early_stopping.resume(model, history["evaluations"], first_step)
    # Early stopping waits for each evaluation (below): in the background it would gain nothing.
    evaluations = Evaluations(eval_sets, history["evaluations"], progress,
                              evaluations_in_background() and early_stopping is None)
    step = first_step
    # Diverged: a recent mean loss far worse than guessing uniformly (ln 10 = 2.30).
    # The stable loss never overflows, so a blow-up shows as a huge loss, not as NaN.
    chance_loss = math.log(model.layer_sizes[-1])
    diverged_loss, smoothed_loss = 4 * chance_loss, 0.0
    ended = "completed"
    while step < total_steps:
        position = step % steps_per_epoch
        if position == 0 or order is None:
            order = rng.permutation(len(labels))
        batch = order[position * batch_size:(position + 1) * batch_size]
        batch_pixels = images.take(batch, axis=0)  # faster than images[batch] on data out of cache
        if rotate:
            batch_pixels = random_rotations(batch_pixels, rotate, rng)
        if augment:
            batch_pixels = random_shifts(batch_pixels, augment, rng)
        data.to_inputs(batch_pixels, out=X)
        logits = model.forward(X, training=True)
        loss, dZ = softmax_cross_entropy(logits, labels[batch])
        smoothed_loss += (loss - smoothed_loss) / min(step - first_step + 1, 20)
        if not math.isfinite(loss) or (smoothed_loss > diverged_loss and step - first_step >= 20):
            raise Diverged(f"the mean training loss of recent steps reached {smoothed_loss:.4g} by step {step + 1} "
                           f"(latest {loss:.4g}; guessing gives {chance_loss:.2f})", config)
        model.backward(dZ, weight_decay)
        model.update(optimizer, learning_rates[step])
        losses[step - first_step] = loss
        step += 1
        if progress.writes_log_line_at(step):  # a log shows every evaluation before the lines of later steps
            evaluations.record_finished(wait=True)
        evaluation_due = eval_every and (step % eval_every == 0 or step == total_steps)
        if evaluation_due:  # before the progress: the evaluation under way, if any, is shown first
            evaluations.start(model, step)
        progress.step(step, loss)
        if step % steps_per_epoch == 0 or step == total_steps:
            progress.end_epoch(step, evaluation_follows=evaluation_due)
        # Early stopping decides on each evaluation before the next step, and the loop
        # ends after the last step or a stop: then the evaluation is waited for. The stop
        # is read once: a signal arriving after this line is seen at the next step.
        stop_signal = stop.signal
        wait = early_stopping is not None or step == total_steps or stop_signal is not None
        finished = evaluations.record_finished(wait)
        if early_stopping and finished and early_stopping.should_stop(model, finished[-1]):
            ended = "early_stopping"
            break
        if stop_signal is not None:
            ended = "interrupted"
            progress.message(f"{stop_signal.name} at step {step}: saving what was reached "
                             f"(send it again to quit at once: files not saved by then keep their old version)")
            break
    evaluations.close()
    if not model.all_finite():
        raise Diverged(f"the weights stopped being finite numbers by step {step}", config)
    history["loss_steps"] += list(range(first_step + 1, step + 1))
    history["losses"] += losses[:step - first_step].tolist()
    weights_step = step
    if early_stopping and early_stopping.best_step is not None and early_stopping.best_step != step:
        weights_step = early_stopping.restore(model)
        progress.message(f"{'Early stopping' if ended == 'early_stopping' else 'Ended'} at step {step}: "
                         f"restored the weights of step {weights_step} "
                         f"(best validation loss {early_stopping.best_loss:.4f})")
    # The generator, the optimizer and the epoch belong to the last step: saved only with its weights.
    kept_last = weights_step == step
    numbers, arrays = optimizer.state() if kept_last else ({}, {})
    state = {"schedule_steps": schedule_steps, "generator": rng.bit_generator.state if kept_last else None,
             "optimizer": config["optimizer"] if kept_last else None, "optimizer_numbers": numbers,
             "optimizer_arrays": arrays, "epoch_order": order if kept_last and step % steps_per_epoch else None}
    history.update(steps_done=weights_step, last_step=step, ended=ended,
                   best_step=early_stopping and early_stopping.best_step, training_state=state)
    return history


def restore_training_state(saved_state, config, rng, optimizer, n_images):
    """(epoch order or None, schedule horizon): put the generator and the optimizer
    back as a resumed model left them (see MLP.save), where it holds them.

    The horizon is the number of steps the learning-rate schedule was built for:
    the saved one, so that a resumed run follows the schedule of the run it
    continues; config["steps"] for a new run (or a model that saved none).
    """
    if saved_state is None:
        return None, config["steps"]
    if saved_state["generator"] is not None:
        rng.bit_generator.state = saved_state["generator"]
    if saved_state["optimizer"] == config["optimizer"]:
        optimizer.load_state(saved_state["optimizer_numbers"], saved_state["optimizer_arrays"])
    order = saved_state["epoch_order"]
    if order is not None and len(order) != n_images:
        order = None  # another training set (--dry-run, --val-split): the epoch starts afresh
    return order, saved_state["schedule_steps"]


def learning_rates_of_run(config, schedule_steps):
    """The learning rate of every step 0 .. config["steps"] - 1, for a schedule built for
    schedule_steps steps; the steps after them keep the schedule's last rate."""
    rates = [learning_rate_at(step, schedule_steps, config["lr"], config["lr_schedule"], config["warmup_steps"])
             for step in range(min(schedule_steps, config["steps"]))]
    return rates + rates[-1:] * (config["steps"] - len(rates))


def schedule_note(config, schedule_steps):
    """One line saying what the learning rate does after the schedule's horizon, or None
    when the run stays within it (or the rate is constant anyway)."""
    if config["steps"] <= schedule_steps or (config["lr_schedule"] == "constant"
                                              and config["warmup_steps"] <= schedule_steps):
        return None
    last = learning_rates_of_run(dict(config, steps=schedule_steps), schedule_steps)[-1]
    return (f"Learning rate: the {config['lr_schedule']} schedule was built for {schedule_steps:,} steps; "
            f"steps {schedule_steps + 1:,}-{config['steps']:,} keep its last rate, {last:.3g} "
            f"(start a new run for a new schedule)")


def evaluations_in_background():
    """True when the evaluations during training can have a core of their own: the
    training uses one BLAS thread (nn.py's default) and the process may run on two or
    more cores, so that one of them would otherwise sit idle."""
    return blas_threads() == 1 and usable_cores() >= 2


def picture_workers_wanted(show):
    """How many PictureWorkers a run starts: two when the pictures go to files only and
    the training leaves a core free (as for the evaluations); none otherwise, and the
    run draws them itself (in windows too with --show)."""
    return 2 if not show and evaluations_in_background() else 0


class Evaluations:
    """The evaluations during training, each of the weights of its step, made on a
    core of their own while the training goes on, or in place.

    An evaluation of the 10,000 test images takes as long as about 60 training steps
    (two thirds of a second in all on the default run). With `in_background`, it is made
    in a second thread, on a copy of the weights taken at its step, while the training
    thread goes on with the next steps: matrix products let other threads run, so on a
    machine with a core to spare it costs the training next to nothing. Its numbers are
    the same as those made in place: the same weights, the same products, one BLAS
    thread. One evaluation at most is under way.

    Each finished evaluation is appended to `history` (the list of the run's
    evaluations) and shown by `progress`, in the order of their steps.
    """

    def __init__(self, eval_sets, history, progress, in_background):
        self.eval_sets, self.history, self.progress = eval_sets, history, progress
        self.copy = None  # the weights being evaluated (a copy of the model): only the evaluation reads them
        self.executor = ThreadPoolExecutor(max_workers=1) if in_background else None
        self.under_way = None  # the Future of the evaluation being made in the background
        self.made = []  # evaluations made and not yet recorded

    def start(self, model, step):
        """Evaluate the model's weights as they are now, at `step`: in the background, or at
        once. The evaluation under way, if any, is waited for and recorded first."""
        self.record_finished(wait=True)  # the copy is free again
        if self.copy is None:
            self.copy = model.copy()
        self.copy.flat_parameters[...] = model.flat_parameters
        if self.executor is None:
            self.made.append(evaluate_sets(self.copy, self.eval_sets, step))
        else:
            self.under_way = self.executor.submit(evaluate_sets, self.copy, self.eval_sets, step)

    def record_finished(self, wait=False):
        """Record and show the evaluations finished since the last call (with wait=True,
        after waiting for the one under way); returns them. An error of an evaluation in
        the background (Diverged) is raised here."""
        if self.under_way is not None and (wait or self.under_way.done()):
            self.made.append(self.under_way.result())
            self.under_way = None
        finished, self.made = self.made, []
        for evaluation in finished:
            self.history.append(evaluation)
            self.progress.evaluation(evaluation["step"], {k: v for k, v in evaluation.items() if k != "step"})
        return finished

    def close(self):
        """Let the thread go; an evaluation still under way (the run stopped on an error) is
        left to end on its own."""
        if self.executor is not None:
            self.executor.shutdown(wait=False)


def evaluate_sets(model, eval_sets, step):
    """{"step": step, "test_loss": ..., "test_accuracy": ..., "val_loss": ...} for each set."""
    if not model.all_finite():
        raise Diverged(f"the weights stopped being finite numbers by step {step}")
    evaluation = {"step": step}
    for name, (images, labels) in eval_sets.items():
        evaluation[f"{name}_loss"], evaluation[f"{name}_accuracy"], _ = evaluate(model, images, labels)
    return evaluation


class EarlyStopping:
    """Stops training after `patience` evaluations without a lower validation loss,
    keeping a copy of the best weights to restore."""

    def __init__(self, patience):
        self.patience = patience
        self.best_loss, self.best_step, self.best_weights, self.waited = math.inf, None, None, 0

    def should_stop(self, model, evaluation):
        if "val_loss" not in evaluation:
            return False
        if evaluation["val_loss"] < self.best_loss:
            self.best_loss, self.best_step, self.waited = evaluation["val_loss"], evaluation["step"], 0
            self.best_weights = model.flat_parameters.copy()
            return False
        self.waited += 1
        return self.waited >= self.patience

    def resume(self, model, evaluations, step):
        """Take the model's own evaluation at `step` (where a resumed run starts) as the
        best so far: a saved model that used early stopping holds its best weights."""
        for evaluation in evaluations:
            if evaluation["step"] == step and "val_loss" in evaluation:
                self.best_loss, self.best_step = evaluation["val_loss"], step
                self.best_weights = model.flat_parameters.copy()

    def restore(self, model):
        """Put the best weights back into the model; returns their step."""
        model.flat_parameters[...] = self.best_weights
        return self.best_step


# ------------------------------------------------------------------ outputs

def divergence_advice(config):
    """What to try after a divergence, from the optimizer and learning rate used: the
    optimizer's default learning rate when the run used more, else a tenth of it."""
    if config is None:
        return "try a smaller --lr"
    optimizer, lr = config["optimizer"], config["lr"]
    if lr > DEFAULT_LR[optimizer]:
        return f"try --lr {DEFAULT_LR[optimizer]:g}, the default for {optimizer}"
    return f"try a smaller --lr, such as {lr / 10:g}, or check that the inputs are scaled"


def sampled_curve(steps, losses, points=200):
    """The loss curve in about `points` points: the mean loss of each window of steps."""
    window = max(1, -(-len(losses) // points))
    n = len(losses) // window * window
    if n == 0:
        return {"step": [], "loss": [], "window": window}
    means = np.asarray(losses[:n]).reshape(-1, window).mean(axis=1)
    return {"step": [int(s) for s in np.asarray(steps[:n]).reshape(-1, window)[:, -1]],
            "loss": [round(float(v), 6) for v in means], "window": window}


def confusion_matrix(labels, predicted, n_classes=10):
    """counts[true, predicted], shape (n_classes, n_classes)."""
    return np.bincount(labels.astype(np.int64) * n_classes + predicted, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def write_json(path, value):
    with atomic_write(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def write_outputs(out_dir, model, config, stats, history, test_set, probabilities, show, pictures):
    """model_mnist.npz and the pictures, each written atomically; the pictures are drawn by
    `pictures`, a PictureWorkers. stats.json is not among them: run writes it last, once it
    knows whether a signal arrived meanwhile."""
    if show:
        from app import plots
        if not plots.use_display(True):
            print("--show: no display found; the pictures are in files only")
    model.save(out_dir / MODEL_FILE, config=recorded_config(config), steps_done=history["steps_done"],
               history=history_up_to(history, history["steps_done"]), training_state=history["training_state"])
    evaluations, subtitle = graph_evaluations(history, stats), graph_subtitle(config, history)
    images, labels = test_set
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:24]
    title = f"Training loss: MLP {'-'.join(map(str, model.layer_sizes))}"
    # Each picture as (a function of plots.py, its arguments, its keyword arguments):
    drawings = [("loss_graph", (out_dir / LOSS_GRAPH_FILE, history["loss_steps"], history["losses"], evaluations),
                 {"title": title, "subtitle": subtitle})]
    if history["evaluations"]:
        drawings.append(("accuracy_graph", (out_dir / "accuracy_graph.png", evaluations), {"subtitle": subtitle}))
    else:  # no evaluations: an earlier run's graph would pass for this run's
        (out_dir / "accuracy_graph.png").unlink(missing_ok=True)
    drawings += [
        ("confusion_matrix_plot", (out_dir / "confusion_matrix.png", stats["confusion_matrix"]), {}),
        ("misclassified_grid", (out_dir / "misclassified.png", images[worst], labels[worst], predicted[worst],
                                probabilities[worst, predicted[worst]]), {}),
        ("first_layer_weights", (out_dir / "weights.png", model.layers[0].W),
         {"next_layer_W": model.layers[1].W if len(model.layers) > 1 else None}),
    ]
    pictures.draw(drawings)
    if show:
        plots.show()


def graph_evaluations(history, stats):
    """The evaluations the graphs show: those made during training, and the final test of
    the saved weights when none of them was made at their step (a run stopped between
    two evaluations, or one that made none), so that both graphs end where the run did."""
    evaluations = history["evaluations"]
    if any(e["step"] == history["steps_done"] and "test_loss" in e for e in evaluations):
        return evaluations
    return evaluations + [{"step": history["steps_done"], "test_loss": stats["test_loss"],
                           "test_accuracy": stats["test_accuracy"]}]


def graph_subtitle(config, history):
    """The recipe under the graphs' titles (recipe_text), and how the run ended when it did
    not train all its steps: 'interrupted at step 11,030', 'early stopping at step 6,000'."""
    ended = {"interrupted": "interrupted", "early_stopping": "early stopping"}.get(history["ended"])
    if ended is None:
        return recipe_text(config)
    return f"{recipe_text(config)}; {ended} at step {history['last_step']:,}"


def recorded_config(config):
    """The configuration as stats.json and the model file record it: config with momentum
    null for an optimizer that uses none (sgd, adam), where DEFAULTS' 0.9 would suggest
    that the run used momentum. A resumed run reads null back as DEFAULTS' momentum."""
    if config["optimizer"] in MOMENTUM_OPTIMIZERS:
        return config
    return dict(config, momentum=None)


def recipe_text(config):
    """The recipe behind a loss curve, short: 'sgd, lr 0.1 constant, batch 64, 20,000 steps',
    or 'nesterov 0.9, lr 0.05 cosine (warm-up 500), batch 128, 24,000 steps, dropout 0.2,
    shifts 2 px': the optimizer (with its momentum), the learning rate and its schedule,
    the batch and the steps, then the regularisers that are on."""
    optimizer = config["optimizer"] + (f" {config['momentum']:g}" if config["optimizer"] in MOMENTUM_OPTIMIZERS
                                       else "")
    schedule = config["lr_schedule"] + (f" (warm-up {config['warmup_steps']:,})" if config["warmup_steps"] else "")
    parts = [optimizer, f"lr {config['lr']:g} {schedule}", f"batch {config['batch_size']}",
             count(config["steps"], "step")]
    extras = {"weight_decay": "weight decay {:g}", "dropout": "dropout {:g}", "augment": "shifts {} px",
              "rotate": "turns {:g}\N{DEGREE SIGN}"}
    parts += [text.format(config[key]) for key, text in extras.items() if config[key]]
    return ", ".join(parts)


def history_up_to(history, step):
    """The history of the steps up to `step`: what a model whose weights come from
    `step` carries, so that a resumed run continues its curves from there."""
    kept = sum(1 for s in history["loss_steps"] if s <= step)
    return {"loss_steps": history["loss_steps"][:kept], "losses": history["losses"][:kept],
            "evaluations": [e for e in history["evaluations"] if e["step"] <= step]}


def build_stats(config, history, test_loss, test_accuracy, probabilities, labels, timings, signal_seen=None):
    """The contents of stats.json. steps: the last step trained; weights_from_step: the
    step of the saved weights (earlier when early stopping restored its best ones).
    interrupted: a SIGINT or SIGTERM arrived (signal_seen), during training or after."""
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted)
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    return {
        "test_accuracy": round(test_accuracy, 6),
        "test_loss": round(test_loss, 6),
        "steps": history["last_step"],
        "weights_from_step": history["steps_done"],
        "ended": history["ended"],
        "interrupted": signal_seen is not None,
        "signal": signal_seen and signal_seen.name,
        "seed": config["seed"],
        "config": recorded_config(config),
        "train_time_s": round(timings["train"], 3),
        "data_load_time_s": round(timings["data"], 3),
        "steps_per_s": round(timings["steps_this_run"] / max(timings["train"], 1e-9), 1),
        "per_class_accuracy": [round(float(a), 6) for a in per_class],
        "confusion_matrix": matrix.tolist(),
        "evaluations": [{key: round(value, 6) if isinstance(value, float) else value  # 6 decimals, as test_loss
                         for key, value in evaluation.items()} for evaluation in history["evaluations"]],
        "loss_curve": sampled_curve(history["loss_steps"], history["losses"]),
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "blas_threads": blas_threads()},
    }


# ------------------------------------------------------------------ main

def prepare_data(args, config, say):
    """((train images, labels), {"test": (...), "val": (...)}): the MNIST CSVs of --data
    (written from the IDX files first if missing), cut down for --dry-run, with the
    validation split held out of the training set when one is asked for."""
    splits = data.load_mnist(args.data, [args.data, PROJECT_DIR / "datasets"], log=say)
    train_set, test_set = splits["train"], splits["test"]
    if args.dry_run:
        train_set = (train_set[0][:2000], train_set[1][:2000])
        test_set = (test_set[0][:1000], test_set[1][:1000])
    eval_sets = {"test": test_set}
    if config["val_split"] > 0:
        train_set, eval_sets["val"] = split_validation(*train_set, config["val_split"],
                                                       np.random.default_rng([config["seed"], 1]))
    n_train = len(train_set[1])
    if config["batch_size"] > n_train and "val" in eval_sets:
        raise UsageError(f"--val-split {config['val_split']} leaves too few training images for one batch of "
                         f"{config['batch_size']}: {count(n_train, 'image')} for training, "
                         f"{count(len(eval_sets['val'][1]), 'image')} for validation")
    if config["batch_size"] > n_train:
        raise UsageError(f"--batch-size {config['batch_size']} is larger than the {count(n_train, 'training image')}")
    return train_set, eval_sets


def new_model(config, rng):
    """The untrained MLP of a configuration: 784 inputs, config["hidden"] with
    config["activation"], 10 outputs; initialised from rng (serve's Train button too)."""
    return MLP([784, *config["hidden"], 10], [config["activation"]] * len(config["hidden"]) + ["softmax"],
               rng=rng, dropout=config["dropout"])


def run(args):
    """The training run of `python nn.py`; returns the exit status."""
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be 1 or more, got {args.threads}")
    if args.log_interval < 1:
        raise UsageError(f"--log-interval must be 1 or more, got {args.log_interval}")
    resumed, resumed_info = None, None
    if args.resume is not None:
        resumed, resumed_info = MLP.load(args.resume, with_info=True)
        check_resumed_config(resumed_info["config"], args.resume)
        check_optimizer_state(resumed_info["training_state"], args.resume)
        if args.steps is not None and args.steps <= resumed_info["steps_done"]:  # before the config's own checks
            raise UsageError(f"--resume {args.resume}: already trained for {count(resumed_info['steps_done'], 'step')}; "
                             f"--steps {args.steps} asks for none more (--steps is the total to reach)")
    config = resolve_config(args, resumed_info and resumed_info["config"])
    out_dir = args.out or (PROJECT_DIR / "dry_run" if args.dry_run else PROJECT_DIR)
    say = (lambda text: None) if args.quiet else print
    if resumed is not None:
        if resumed.layer_sizes[1:-1] != list(config["hidden"]) or resumed.activations[0] != config["activation"]:
            raise UsageError(f"--resume {args.resume}: the model has hidden layers {resumed.layer_sizes[1:-1]} "
                             f"({resumed.activations[0]}); --hidden and --activation cannot change on resume")
        if resumed_info["steps_done"] >= config["steps"]:
            raise UsageError(f"--resume {args.resume}: already trained for {count(resumed_info['steps_done'], 'step')}; "
                             f"ask for more with --steps")
    # deepest first; os.path.exists: False, not an error, for a path too long to look at
    created = [folder for folder in (out_dir, *out_dir.absolute().parents) if not os.path.exists(folder)]
    check_folders(args, out_dir, say)
    try:
        # The workers load Matplotlib while the network trains (picture_workers.py)
        with picture_workers.PictureWorkers(picture_workers_wanted(args.show)) as pictures:
            return train_test_and_save(args, config, out_dir, say, resumed, resumed_info, created, pictures)
    except BaseException:
        remove_empty_folders(created)  # a run that fails before writing anything leaves no empty folder behind
        raise


def train_test_and_save(args, config, out_dir, say, resumed, resumed_info, created_folders=(), pictures=None):
    """The data, the training, the test and the save of run(), once the flags and the
    folders are checked; returns the exit status. created_folders: the folders run()
    created for out_dir, deepest first, removed by a second Ctrl-C while still empty.
    pictures: the PictureWorkers that draw the pictures (None: this process)."""
    saved_state = resumed_info and resumed_info["training_state"]
    started = time.perf_counter()
    (train_images, train_labels), eval_sets = prepare_data(args, config, say)
    data_time = time.perf_counter() - started
    test_set = eval_sets["test"]
    steps_per_epoch = len(train_labels) // config["batch_size"]
    say(f"Data: {len(train_labels):,} training and {len(test_set[1]):,} test images "
        f"from {args.data} in {data_time:.2f} s")
    first_step = resumed_info["steps_done"] if resumed_info else 0
    rng = np.random.default_rng([config["seed"], first_step])

    model = resumed or new_model(config, rng)
    if resumed is not None:  # a saved model keeps no dropout rate and no generator
        for layer in model.layers[:-1]:
            layer.dropout, layer.rng = config["dropout"], rng
    say(f"Model: MLP {' -> '.join(map(str, model.layer_sizes))} ({config['activation']} hidden, softmax out), "
        f"{sum(p.size for p in model.parameters()):,} parameters; {recipe_text(config)}, seed {config['seed']}"
        + (f"; resumed from {args.resume} at step {first_step:,}" if resumed else ""))
    if resumed is not None:
        say(f"Learning rate {config['lr']:g}: "
            f"{learning_rate_choice(args, resumed_info['config'], config['optimizer'])[1]}")
        for note in resume_notes(config, saved_state):
            say(note)
    history = resumed_info["history"] if resumed_info else None
    progress = Progress(config["steps"], steps_per_epoch, first_step, args.log_interval, args.quiet)
    started = time.perf_counter()
    with StopRequest(created_folders) as stop:
        # A blow-up (overflow, then NaN) ends in Diverged, said in one line: NumPy's own
        # warnings would only come before it, with lines of source.
        with np.errstate(over="ignore", invalid="ignore"):
            history = train(model, config, (train_images, train_labels), eval_sets, rng, progress, stop,
                            first_step, history, saved_state)
        train_time = time.perf_counter() - started
        test_loss, test_accuracy, test_logits = evaluate(model, *test_set)
        probabilities = softmax(test_logits)
        timings = {"train": train_time, "data": data_time, "steps_this_run": history["last_step"] - first_step}
        stats = build_stats(config, history, test_loss, test_accuracy, probabilities, test_set[1], timings,
                            stop.signal)
        run_folder, replaced = save_run(out_dir, model, config, stats, history, test_set, probabilities, args.show,
                                        stop, pictures=pictures)
    print(final_line(history, first_step, train_time, stop.signal)
          + f" Test accuracy {100 * test_accuracy:.2f} %, test loss {test_loss:.4f}. "
          f"Wrote {MODEL_FILE}, {STATS_FILE}, {LOSS_GRAPH_FILE} and more to {out_dir}")
    print(f"This run's copy: {run_folder}" + (f". {replaced}" if replaced else ""))
    if stop.signal is not None:
        return EXIT_INTERRUPTED[stop.signal]
    return 0


def blas_threads():
    """The BLAS thread count that OPENBLAS_NUM_THREADS sets (nn.py sets it from --threads),
    as a number; the text itself when it is no whole number; None when it is not set."""
    value = os.environ.get("OPENBLAS_NUM_THREADS")
    return int(value) if value is not None and value.strip().isdigit() and value.isascii() else value


def save_run(out_dir, model, config, stats, history, test_set, probabilities, show=False, stop=None,
             own_model_sha256=None, pictures=None):
    """Write every output of a finished run into out_dir (the model, the pictures, then
    stats.json, last) and copy them into a new folder under runs/, after keeping a copy
    of the model they replace. Used by nn.py's training and by `serve --train`.

    Returns (the run's folder, the "Replaced ..." line or None). stop, a StopRequest,
    learns what is being saved, so that a second Ctrl-C can say what was written.
    own_model_sha256: serve's Save again, after a failed save of this run wrote its model
    file; while the file still has that SHA-256 it is no replaced model (runs.keep_replaced_model).
    pictures: the PictureWorkers that draw the pictures; None: this process draws them.
    Raises SaveFailed naming the file that could not be written (or "out of memory") and
    what the save had written by then; a run folder left empty by any failure is removed.
    """
    before = folder_contents(out_dir)
    if stop is not None:
        stop.saving = (out_dir, before)
    run_folder = None
    try:
        replaced = runs.keep_replaced_model(out_dir, MODEL_FILE, STATS_FILE, own_model_sha256)
        runs_folder_is_new = not (out_dir / runs.RUNS_DIR).exists()
        run_folder = runs.new_run_folder(out_dir)
        if stop is not None:  # a second signal before anything is copied into them removes them
            stop.created_folders[:0] = [run_folder, out_dir / runs.RUNS_DIR] if runs_folder_is_new else [run_folder]
        stats["run_folder"] = run_folder.relative_to(out_dir).as_posix()
        write_outputs(out_dir, model, config, stats, history, test_set, probabilities, show,
                      pictures or picture_workers.PictureWorkers(0))
        stats["model_sha256"] = runs.file_sha256(out_dir / MODEL_FILE)  # which model file these stats describe
        write_stats(out_dir / STATS_FILE, stats, stop)
        for name in OUTPUT_FILES:
            if (out_dir / name).is_file():
                runs.copy_atomically(out_dir / name, run_folder)
    except BaseException as error:
        if run_folder is not None:
            with contextlib.suppress(OSError):
                run_folder.rmdir()  # only when nothing was copied into it
        if isinstance(error, MemoryError):  # perhaps after the model was written: only here is that known
            raise SaveFailed(f"cannot save: out of memory; {saved_so_far(out_dir, before)}") from None
        if not isinstance(error, OSError):  # KeyboardInterrupt, a bug: the caller's to tell
            raise
        # a full disk, a folder that changed since check_folders
        raise SaveFailed(f"cannot save: {os.fsdecode(error.filename or out_dir)}: {error.strerror or error}; "
                         f"{saved_so_far(out_dir, before)}") from None
    return run_folder, replaced


def write_stats(path, stats, stop):
    """Write stats.json, the last output; write it again if a signal arrived while it was
    being written (a second signal ends the program at once, so once is enough)."""
    write_json(path, stats)
    if stop is not None and stop.signal is not None and not stats["interrupted"]:
        stats.update(interrupted=True, signal=stop.signal.name)
        write_json(path, stats)


def final_line(history, first_step, train_time, signal_seen):
    """"Done: 20,000 steps in 12s (1700 steps/s)." and its variants: after a resume the
    steps of this run, and the step of the weights kept when it is not the last."""
    verdict = {"completed": "Done", "early_stopping": "Stopped early",
               "interrupted": f"Interrupted by {signal_seen.name if signal_seen else 'a signal'}"}[history["ended"]]
    last, steps_this_run = history["last_step"], history["last_step"] - first_step
    steps = f"steps {first_step + 1:,}-{last:,} ({steps_this_run:,} this run)" if first_step else count(last, "step")
    line = f"{verdict}: {steps} in {format_duration(train_time)} ({steps_this_run / max(train_time, 1e-9):.0f} steps/s)"
    if history["steps_done"] != last:
        line += f"; kept the weights of step {history['steps_done']:,}, the best on validation"
    if signal_seen is not None and history["ended"] != "interrupted":
        line += f"; {signal_seen.name} arrived while saving: the outputs are whole, the exit status says it"
    return line + "."


def resume_notes(config, saved_state):
    """Lines that say where a resumed run cannot continue exactly as the run it resumes."""
    notes = []
    if saved_state is None or saved_state["generator"] is None:
        notes.append("Resume: the model holds no generator or optimizer state (an older file, or early stopping "
                     "restored earlier weights): batches and optimizer start afresh")
    elif saved_state["optimizer"] != config["optimizer"]:
        notes.append(f"Resume: the optimizer changes from {saved_state['optimizer']} to {config['optimizer']}; "
                     f"it starts afresh")
    note = schedule_note(config, saved_state["schedule_steps"] if saved_state else config["steps"])
    return notes + ([note] if note else [])


def check_optimizer_state(saved_state, path):
    """Raise ModelFileError when a model file's optimizer state does not fit its optimizer."""
    if saved_state is None or saved_state["optimizer"] is None:
        return
    try:
        make_optimizer(saved_state["optimizer"]).load_state(saved_state["optimizer_numbers"],
                                                            saved_state["optimizer_arrays"])
    except ValueError as error:
        raise ModelFileError(f"{path}: not a usable model file: bad optimizer state ({error})") from None


# What each configuration value of a model file must be: a type check, and the words of the message.
_WHOLE = (lambda v: type(v) is int, "a whole number")
_NUMBER = (lambda v: type(v) in (int, float), "a number")
CONFIG_TYPES = {
    "steps": _WHOLE, "batch_size": _WHOLE, "seed": _WHOLE, "warmup_steps": _WHOLE, "augment": _WHOLE,
    "early_stopping": _WHOLE, "lr": _NUMBER, "weight_decay": _NUMBER, "dropout": _NUMBER,
    "rotate": _NUMBER, "val_split": _NUMBER,
    "eval_every": (lambda v: v is None or type(v) is int, "a whole number or null (once an epoch)"),
    "momentum": (lambda v: v is None or type(v) in (int, float), "a number or null (no momentum)"),
    "hidden": (lambda v: type(v) is list and all(type(n) is int for n in v), "a list of whole numbers"),
    "activation": (lambda v: type(v) is str and v in ACTIVATIONS and v != "linear", "an activation name"),
    "optimizer": (lambda v: type(v) is str and v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "lr_schedule": (lambda v: type(v) is str and v in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
}


def check_resumed_config(resumed_config, path):
    """Raise ModelFileError naming the model file when its saved configuration holds a
    value of the wrong type or one that the flags would refuse."""
    for key, (fits, expected) in CONFIG_TYPES.items():
        if key in resumed_config and not fits(resumed_config[key]):
            raise ModelFileError(f"{path}: bad saved configuration: {key} is {json.dumps(resumed_config[key])}, "
                                 f"expected {expected}")
    try:
        check_config(dict(DEFAULTS, **{k: v for k, v in resumed_config.items() if k in DEFAULTS}))
    except UsageError as error:
        raise ModelFileError(f"{path}: bad saved configuration: {error}") from None


def folder_contents(folder):
    """{name: modification time in ns} of the files in `folder` ({} when it is not one)."""
    try:
        return {entry.name: entry.stat().st_mtime_ns for entry in os.scandir(folder) if entry.is_file()}
    except OSError:
        return {}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def not_a_command(argv):
    """The error for a command line whose first word is no command: a misspelt command
    ("unknown command 'prdict'; did you mean 'predict'?"), or an image given without
    `predict`, answered with the predict command line made of the words predict accepts."""
    import difflib
    if is_image(argv[0]):
        return predict_hint(argv, argv)
    close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1)
    if close:
        return f"unknown command {argv[0]!r}; did you mean {close[0]!r}?"
    return (f"unknown command {argv[0]!r}; the commands are {' and '.join(SUBCOMMANDS)}, and training needs "
            f"none: python nn.py [FLAGS] (see python nn.py --help)")


def is_image(word):
    """True when a command-line word names an image file (my_digit.png), by its suffix."""
    return not word.startswith("-") and Path(word).suffix.lower() in IMAGE_SUFFIXES


def is_flag(word):
    """True when a command-line word is a flag (--lr, -h), not a value: a negative number
    such as -0.1 is a value, as argparse takes it."""
    return word.startswith("-") and not re.fullmatch(r"-\.?\d.*", word)


def forgotten_predict(argv, unrecognized):
    """The error for training flags beside words that only predict takes ("--steps 100
    seven.png", "--model m.npz seven.png"): the predict command line, as not_a_command
    gives it for "seven.png" alone; None when no unrecognized word is an image or a
    flag of predict (a plain unrecognized argument)."""
    from app import predict
    predict_options = predict.build_parser()._option_string_actions
    if not any(is_image(word) or option_named(word, predict_options) not in (None, "-h", "--help")
               for word in unrecognized):
        return None
    return predict_hint(unrecognized, argv)


def predict_hint(unrecognized, argv):
    """'unrecognized arguments: ...; did you mean: python nn.py predict ...', the predict
    command line made of the words of argv that predict accepts (predict_words)."""
    kept, dropped = predict_words(argv)
    left_out = f" (predict takes no {', '.join(dropped)})" if dropped else ""
    return (f"unrecognized arguments: {' '.join(unrecognized)}; did you mean: python nn.py predict "
            f"{shlex.join(kept)}{left_out}")


def option_named(word, options):
    """The option string of `options` (an argparse table of them) that `word` names, in
    full or by the unique prefix argparse accepts ("--mod" or "--mod=m.npz" for "--model"), or None."""
    name = word.split("=")[0]
    if name in options:
        return name
    matches = [option for option in options if name.startswith("--") and option.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def predict_words(argv):
    """(the words of argv that `nn.py predict` accepts, the training flags it does not):
    images and predict's own flags with their values are kept; a training flag is
    dropped with the values it takes."""
    from app import predict
    # argparse's table of option strings ("--model" -> its action, which knows its nargs)
    predict_options = predict.build_parser()._option_string_actions
    training_options = build_parser()._option_string_actions
    kept, dropped, words = [], [], list(argv)
    while words:
        word = words.pop(0)
        if word == "--":  # the words after it are no flags, for predict too: images, kept
            kept += ["--", *words] if any(rest.startswith("-") for rest in words) else words
            break
        name = word.split("=")[0]
        predict_option = option_named(word, predict_options)
        if predict_option:
            kept.append(predict_option + word[len(name):])  # in full: --mod=m.npz -> --model=m.npz
            if "=" not in word and predict_options[predict_option].nargs != 0 and words:
                kept.append(words.pop(0))
        elif is_flag(word):
            training_option = option_named(word, training_options)
            dropped.append(training_option or name)
            action = training_options.get(training_option)
            if action is None or "=" in word or action.nargs == 0:  # unknown, value attached, or a switch
                takes = 0
            elif action.nargs in (None, "?"):
                takes = 1
            else:  # nargs "*" (--hidden 150 150): every value up to the next flag or image
                takes = len(words)
            while takes and words and not is_flag(words[0]) and not is_image(words[0]):
                words.pop(0)
                takes -= 1
        else:
            kept.append(word)
    return kept, dropped


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "predict":
        from app import predict
        return predict.main(argv[1:])
    if argv and argv[0] == "serve":
        from app.page import server as serve
        return serve.main(argv[1:])
    if argv and not argv[0].startswith("-"):  # training takes no word: a command misspelt or forgotten
        print(f"nn.py: error: {not_a_command(argv)}", file=sys.stderr)
        return 2
    parser = build_parser()
    args, unrecognized = parser.parse_known_args(argv)
    if unrecognized:  # an image or a flag of predict, given without `predict`? else argparse's error
        hint = forgotten_predict(argv, unrecognized)
        if hint:
            print(f"nn.py: error: {hint}", file=sys.stderr)
            return 2
        parser.error(f"unrecognized arguments: {' '.join(unrecognized)}")
    data_files_before = folder_contents(args.data)
    try:
        return run(args)
    except UsageError as error:
        print(f"nn.py: error: {error}", file=sys.stderr)
        return 2
    except data.DataError as error:
        hint = ""
        if ".csv" in str(error).split(":")[0]:
            hint = " (fix the file, or delete it to have it written again from the MNIST IDX files)"
        print(f"nn.py: error: {error}{hint}", file=sys.stderr)
        return 1
    except (ModelFileError, SaveFailed) as error:
        print(f"nn.py: error: {error}", file=sys.stderr)
        return 1
    except Diverged as error:
        print(f"nn.py: error: training diverged: {error}. The learning rate is probably too high "
              f"({divergence_advice(error.config)}); nothing was saved, earlier outputs are intact.",
              file=sys.stderr)
        return 1
    except MemoryError:
        print("nn.py: error: out of memory (are --steps, --hidden or --batch-size too large?); "
              "nothing was saved, earlier outputs are intact.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        written = sorted(name for name, mtime in folder_contents(args.data).items()
                         if data_files_before.get(name) != mtime and not name.startswith("."))
        done = (f"it wrote {', '.join(written)} in {args.data} (complete files: each is written under a "
                f"temporary name, then renamed) and nothing else" if written else "nothing was written")
        print(f"nn.py: interrupted before training started; {done}", file=sys.stderr)
        return 130


def main_quiet_on_closed_output(argv=None):
    """main(), but a reader that stops reading early (`python nn.py predict ... | head`)
    ends the program quietly, with the shell's status for SIGPIPE, 141, instead of a
    BrokenPipeError traceback: the recipe of the Python docs (signal module, "Note on
    SIGPIPE"), which points stdout at devnull so that the final flush cannot fail again.
    A training run whose output is closed ends the same way, as any program does on a
    closed pipe, but says so on stderr: what it had not saved is lost, earlier outputs
    are intact (the output may also close after the save, at the last lines)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = main(argv)
        sys.stdout.flush()  # here, where the error can be caught, not at interpreter exit
        return status
    except KeyboardInterrupt:  # where main() and its subcommands do not say more (predict, flags, imports)
        print("nn.py: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if not (argv and argv[0] in SUBCOMMANDS):
            print("nn.py: stopped: its output was closed (a reader such as | head ended); a run stopped "
                  "before its save leaves the earlier outputs as they were", file=sys.stderr)
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    if not _SIGINT_IGNORED:  # started: Ctrl-C raises KeyboardInterrupt again
        signal.signal(signal.SIGINT, signal.default_int_handler)
    status = main_quiet_on_closed_output()
    # The program ends here. On the way out the interpreter runs the garbage collector,
    # which would walk every object still alive (some 70,000 once matplotlib has drawn):
    # about 0.1 s of every run. gc.freeze() leaves every object alive now out of those
    # passes; the ones only a reference cycle holds are then never freed one by one,
    # which costs nothing: the operating system takes back the whole process's memory.
    gc.freeze()
    sys.exit(status)
