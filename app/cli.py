"""The command line of `python nn.py`: its flags, the original's settings and the
presets, and the checks that refuse a setting that cannot work before anything loads.

Imports no NumPy: start-up reads the flags for the thread count before NumPy loads."""

import argparse
import math
import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

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
# the default network trained in about a sixth of the default's training time (benchmarks/README.md), to 98 %, also
# chosen on a validation split (docs/results.md says what it reaches). Flags only.
PRESETS = {
    "best": {"hidden": [800, 800], "optimizer": "nesterov", "lr": 0.05, "momentum": 0.9,
             "lr_schedule": "cosine", "warmup_steps": 500, "dropout": 0.2, "augment": 2,
             "batch_size": 128, "steps": 24000},
    "fast": {"optimizer": "nesterov", "lr": 0.2, "momentum": 0.9, "lr_schedule": "cosine", "warmup_steps": 100,
             "batch_size": 128, "steps": 1700, "eval_every": 0},
}
LR_SCHEDULES = ("constant", "step", "cosine")
# --dry-run: a check that everything works, in seconds (app/data.py cuts the data down)
DRY_RUN_STEPS, DRY_RUN_TRAIN_IMAGES, DRY_RUN_TEST_IMAGES = 50, 2000, 1000
SUBCOMMANDS = ("predict", "serve")  # the training command has none: python nn.py [FLAGS]
SUBCOMMANDS_HELP = """commands (each has its own --help):
  python nn.py [FLAGS]            train a model and test it (the flags above)
  python nn.py predict IMAGE ...  read digits in images with a saved model
  python nn.py serve              draw a digit in a browser and see it read"""


class UsageError(Exception):
    """A flag value that cannot work; refused before anything is loaded."""


class HelpFormatter(argparse.HelpFormatter):
    def _split_lines(self, text, width):
        """Wrap help at spaces only: a flag such as --batch-size is never cut at its hyphen."""
        import textwrap
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        """Keep the line breaks of the description and the epilog (one subcommand a line)."""
        return "\n".join(indent + line for line in text.splitlines())


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, not the usage block: `nn.py: error: ... (see --help)`, exit status 2; for a
        misspelt flag, the flag probably meant ("--setps 10; did you mean --steps?")."""
        if message.startswith("unrecognized arguments: "):
            message += self.flag_meant(message.split()[2:])
        self.exit(2, f"{self.prog}: error: {message} (see python {self.prog} --help)\n")

    def flag_meant(self, words):
        """"; did you mean --steps?" for the first of the words (up to a "--") that is close to
        one of this parser's flags with its first letter ("--setps"), or "" when none is
        (cutoff 0.75: no "--out" for "--bogus"; the first letter: no "--activation" for
        "--validation")."""
        import difflib
        flags = [flag for flag in self._option_string_actions if flag.startswith("--")]
        for word in words:
            if word == "--":
                break
            name = word.split("=")[0]
            if name.startswith("--") and name not in flags:
                name = name.lower()  # --Steps: flags are lower case
                alike = [flag for flag in flags if flag[2:3] == name[2:3]]
                close = difflib.get_close_matches(name, alike, n=1, cutoff=0.75)
                if close:
                    return f"; did you mean {close[0]}?"
        return ""


def build_parser():
    d = DEFAULTS
    parser = Parser(prog="nn.py", formatter_class=HelpFormatter, description="Train a NumPy multi-layer perceptron on MNIST and test it.",
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
                       help=f"{DRY_RUN_STEPS} steps (or --steps) on {DRY_RUN_TRAIN_IMAGES:,} training and "
                            f"{DRY_RUN_TEST_IMAGES:,} test images, every "
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
            config["warmup_steps"] = round(config["warmup_steps"] * DRY_RUN_STEPS / config["steps"])
        config["steps"] = DRY_RUN_STEPS
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


def check_run_flags(args):
    """Raise UsageError for a --threads or --log-interval that cannot work."""
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be 1 or more, got {args.threads}")
    if args.log_interval < 1:
        raise UsageError(f"--log-interval must be 1 or more, got {args.log_interval}")


def check_data_folder(args):
    """Refuse a --data folder that does not exist, before anything loads."""
    if not os.path.isdir(args.data):
        raise UsageError(f"--data {args.data}: no such folder")
