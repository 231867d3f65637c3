"""What a run reports of itself: the contents of stats.json, the recipe line under the
graphs, the console's last line, and what to try after a divergence."""

import platform

import numpy as np

from app import calibration
from app.cli import DEFAULT_LR, MOMENTUM_OPTIMIZERS
from app.progress import format_duration
from app.startup import blas_threads
from app.words import count


def divergence_advice(config):
    """What to try after a divergence, from the optimizer and learning rate used: the
    optimizer's default learning rate when the run used more, else a tenth of it."""
    if config is None:
        return "try a smaller --lr"
    optimizer, lr = config["optimizer"], config["lr"]
    if lr > DEFAULT_LR[optimizer]:
        return f"try --lr {DEFAULT_LR[optimizer]:g}, the default for {optimizer}"
    return f"try a smaller --lr, such as {lr / 10:g}, or check that the inputs are scaled"


LOSS_CURVE_POINTS = 200  # stats.json's loss_curve has about this many points


def loss_window(n_steps, points=LOSS_CURVE_POINTS):
    """How many steps each point of the loss curve averages: n_steps / points, rounded up
    (100 for the default's 20,000 steps). The loss graph's smoothed line uses it too."""
    return max(1, -(-n_steps // points))


def sampled_curve(steps, losses, points=LOSS_CURVE_POINTS):
    """The loss curve in about `points` points: the mean loss of each window of steps."""
    window = loss_window(len(losses), points)
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
        "calibration": calibration.summary(probabilities, labels),
        "confusion_matrix": matrix.tolist(),
        "evaluations": [{key: round(value, 6) if isinstance(value, float) else value  # 6 decimals, as test_loss
                         for key, value in evaluation.items()} for evaluation in history["evaluations"]],
        "loss_curve": sampled_curve(history["loss_steps"], history["losses"]),
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "blas_threads": blas_threads()},
    }


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
