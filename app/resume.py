"""Resuming a run: a saved model carries the generator, the optimizer, the epoch in
progress and the learning-rate schedule's horizon (its training_state), so that a resumed
run is the same as one never stopped. Here: the checks of a model file to resume, putting
that state back, and taking it at the end of a run."""

import json

from app import model_file
from app.cli import DEFAULTS, LR_SCHEDULES, UsageError, check_config
from app.model_file import ModelFileError
from app.words import count
from functions import ACTIVATIONS
from optimizers import OPTIMIZERS, learning_rate_at, make_optimizer


def load_resumed(args):
    """(model, info) of --resume (see model_file.load), checked against the flags; (None,
    None) without --resume. Raises ModelFileError or UsageError."""
    if args.resume is None:
        return None, None
    model, info = model_file.load(args.resume, with_info=True)
    check_resumed_config(info["config"], args.resume)
    check_optimizer_state(info["training_state"], args.resume)
    if args.steps is not None and args.steps <= info["steps_done"]:  # before the config's own checks
        raise UsageError(f"--resume {args.resume}: already trained for {count(info['steps_done'], 'step')}; "
                         f"--steps {args.steps} asks for none more (--steps is the total to reach)")
    return model, info


def check_resumed_model(args, model, info, config):
    """Raise UsageError when the resolved configuration cannot continue the resumed model."""
    if model.layer_sizes[1:-1] != list(config["hidden"]) or model.activations[0] != config["activation"]:
        raise UsageError(f"--resume {args.resume}: the model has hidden layers {model.layer_sizes[1:-1]} "
                         f"({model.activations[0]}); --hidden and --activation cannot change on resume")
    if info["steps_done"] >= config["steps"]:
        raise UsageError(f"--resume {args.resume}: already trained for {count(info['steps_done'], 'step')}; "
                         f"ask for more with --steps")


def training_state(config, history, rng, optimizer, order, schedule_steps, steps_per_epoch):
    """What a saved model carries to be resumed exactly (see model_file.to_bytes). The
    generator, the optimizer and the epoch belong to the last step: saved only with its
    weights (not when early stopping put back earlier ones)."""
    kept_last = history["steps_done"] == history["last_step"]
    numbers, arrays = optimizer.state() if kept_last else ({}, {})
    return {"schedule_steps": schedule_steps, "generator": rng.bit_generator.state if kept_last else None,
            "optimizer": config["optimizer"] if kept_last else None, "optimizer_numbers": numbers,
            "optimizer_arrays": arrays,
            "epoch_order": order if kept_last and history["last_step"] % steps_per_epoch else None}


def restore_training_state(saved_state, config, rng, optimizer, n_images):
    """(epoch order or None, schedule horizon): put the generator and the optimizer
    back as a resumed model left them (see model_file.to_bytes), where it holds them.

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
