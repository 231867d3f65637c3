#!/usr/bin/env python3
"""Train a multi-layer perceptron on MNIST with NumPy alone, then test it.

    python nn.py                      the original run, with the settings below
    python nn.py --help               every flag
    python nn.py predict IMAGE ...    read your own digits with the saved model
    python nn.py serve                draw digits in a browser and watch the model read them

The original's settings, what `python nn.py` does when no flag is given:

    network     784 inputs -> 150 ReLU -> 150 ReLU -> 10 softmax
    loss        cross-entropy
    optimizer   plain SGD, learning rate 0.1
    batch       64 images
    steps       20,000 (about 21 passes over the 60,000 training images)
    seed        0

Read the algorithm in this order:
    1. functions.py    activations, softmax and the cross-entropy loss, with their derivatives
    2. dense_layer.py  one layer: Z = X @ W + b, A = f(Z), and its backward pass
    3. mlp.py          the layers chained: forward, backward, update
    4. nn.py           this file: train() feeds the data in batches through them

The run writes model_mnist.npz, stats.json and training_loss_graph.png (and the other
pictures) to --out, by default the folder of this script, and the same files to its run
folder, --out/runs/DATE_TIME/. Everything around the algorithm (flags, data files,
saving, pictures, predict, the drawing page) lives in the package app/.
"""

import sys

if __name__ == "__main__":  # before NumPy loads: versions, Ctrl-C while starting, BLAS threads
    from app import startup
    SIGINT_IGNORED = startup.begin(sys.argv[1:])

import gc  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from app import cli, data, errors, hints, ood, report, resume, save, startup  # noqa: E402
from app.model_file import new_model  # noqa: E402
from app.monitor import Monitor, evaluate  # noqa: E402
from app.progress import Progress  # noqa: E402
from app.signals import EXIT_INTERRUPTED, StopRequest, remove_empty_folders  # noqa: E402
from augment import random_rotations, random_shifts  # noqa: E402
from functions import softmax, softmax_cross_entropy  # noqa: E402
from optimizers import make_optimizer  # noqa: E402


def train(model, config, train_set, eval_sets, rng, progress, stop, first_step=0, history=None, saved_state=None):
    """Train `model` in place from step first_step to config["steps"]; returns the run's
    history (see Monitor.finish), with the training_state a saved model carries.

    Each epoch visits a new random order of the training set, train_set = (images (N, 784)
    uint8, labels (N,)), in batches of B = config["batch_size"] images (the last, incomplete
    batch of an epoch is left out). One step: the batch's inputs X (B, 784) forward to the
    logits Z (B, 10); the loss and its gradient dZ with respect to Z; backward through the
    layers to every dW and db; the update, W -= learning rate * dW for SGD.

    After each step a Monitor shows the progress, evaluates on eval_sets ({"test": (images,
    labels), "val": ...}), ends the run on early stopping or a stop request (stop.signal,
    as app/signals.py sets it) and stops a run that diverges. saved_state: a resumed
    model's training_state, so that the run continues exactly where it was saved
    (app/resume.py); history: that model's history.
    """
    images, labels = train_set
    B, steps_per_epoch = config["batch_size"], len(labels) // config["batch_size"]
    optimizer = make_optimizer(config["optimizer"], config["momentum"])
    order, schedule_steps = resume.restore_training_state(saved_state, config, rng, optimizer, len(labels))
    learning_rates = resume.learning_rates_of_run(config, schedule_steps)
    monitor = Monitor(model, config, eval_sets, progress, stop, steps_per_epoch, first_step, history,
                      in_background=startup.evaluations_in_background())
    X = np.empty((B, images.shape[1]), np.float32)  # the inputs of one batch, rewritten at each step
    for step in range(first_step, config["steps"]):
        position = step % steps_per_epoch
        if position == 0 or order is None:
            order = rng.permutation(len(labels))                     # shuffle: a new epoch
        batch = order[position * B:(position + 1) * B]                # the next B images
        batch_inputs(images, batch, config, rng, out=X)
        Z = model.forward(X, training=True)                          # forward: logits (B, 10)
        loss, dZ = softmax_cross_entropy(Z, labels[batch])           # loss, and its gradient dZ
        model.backward(dZ, config["weight_decay"])                   # backward: every dW and db
        model.update(optimizer, learning_rates[step])                # update: W -= lr * dW
        if monitor.after_step(model, step + 1, loss):                # progress, evaluations, stops
            break
    history = monitor.finish(model)
    history["training_state"] = resume.training_state(config, history, rng, optimizer, order, schedule_steps,
                                                      steps_per_epoch)
    return history


def batch_inputs(images, batch, config, rng, out):
    """The inputs X (B, 784) of the images numbered `batch`, scaled to [0, 1] into `out`;
    turned and shifted at random first when --rotate and --augment ask for it."""
    pixels = images.take(batch, axis=0)  # faster than images[batch] on data out of cache
    if config["rotate"]:
        pixels = random_rotations(pixels, config["rotate"], rng)
    if config["augment"]:
        pixels = random_shifts(pixels, config["augment"], rng)
    return data.to_inputs(pixels, out=out)


def run(args):
    """One training run of `python nn.py`: the checks, the data, the model, train(), the
    test and the save; returns the exit status."""
    cli.check_run_flags(args)
    resumed, resumed_info = resume.load_resumed(args)
    config = cli.resolve_config(args, resumed_info and resumed_info["config"])
    if resumed is not None:
        resume.check_resumed_model(args, resumed, resumed_info, config)
    out_dir = args.out or (cli.PROJECT_DIR / "dry_run" if args.dry_run else cli.PROJECT_DIR)
    say = (lambda text: None) if args.quiet else print
    # deepest first; os.path.exists: False, not an error, for a path too long to look at
    created = [folder for folder in (out_dir, *out_dir.absolute().parents) if not os.path.exists(folder)]
    cli.check_data_folder(args)
    save.check_output_folder(out_dir, say)
    try:
        return train_and_save(args, config, out_dir, say, resumed, resumed_info, created)
    except BaseException:
        remove_empty_folders(created)  # a run that fails before writing anything leaves no empty folder behind
        raise


def train_and_save(args, config, out_dir, say, resumed, resumed_info, created_folders):
    """run() once the flags and the folders are checked; created_folders: those run() created
    for out_dir, deepest first, which a second Ctrl-C removes while they are still empty."""
    started = time.perf_counter()
    train_set, eval_sets = data.prepare_data(args, config, say)
    data_time, test_set = time.perf_counter() - started, eval_sets["test"]
    say(f"Data: {len(train_set[1]):,} training and {len(test_set[1]):,} test images "
        f"from {args.data} in {data_time:.2f} s")
    first_step = resumed_info["steps_done"] if resumed_info else 0
    saved_state = resumed_info and resumed_info["training_state"]
    rng = np.random.default_rng([config["seed"], first_step])
    model = resumed or new_model(config, rng)
    if resumed is not None:  # a saved model keeps no dropout rate and no generator
        for layer in model.layers[:-1]:
            layer.dropout, layer.rng = config["dropout"], rng
    say(f"Model: MLP {' -> '.join(map(str, model.layer_sizes))} ({config['activation']} hidden, softmax out), "
        f"{sum(p.size for p in model.parameters()):,} parameters; {report.recipe_text(config)}, seed {config['seed']}"
        + (f"; resumed from {args.resume} at step {first_step:,}" if resumed else ""))
    if resumed is not None:
        peak = "" if config["lr_schedule"] == "constant" else f" (the {config['lr_schedule']} schedule's highest)"
        say(f"Learning rate {config['lr']:g}{peak}: "
            f"{cli.learning_rate_choice(args, resumed_info['config'], config['optimizer'])[1]}")
        for note in resume.resume_notes(config, saved_state):
            say(note)
    progress = Progress(config["steps"], len(train_set[1]) // config["batch_size"], first_step, args.log_interval,
                        args.quiet)
    with StopRequest(created_folders) as stop:
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up ends in Diverged, said in one line
            history = train(model, config, train_set, eval_sets, rng, progress, stop, first_step,
                            resumed_info and resumed_info["history"], saved_state)
        train_time = time.perf_counter() - started
        test_loss, test_accuracy, test_logits = evaluate(model, *test_set)
        probabilities = softmax(test_logits)
        timings = {"train": train_time, "data": data_time, "steps_this_run": history["last_step"] - first_step}
        stats = report.build_stats(config, history, test_loss, test_accuracy, probabilities, test_set[1],
                                      timings, stop.signal)
        ood_members = ood.fitted_members(model, *train_set)  # to tell a digit from a scribble (app/ood.py)
        run_folder, replaced = save.save_run(out_dir, model, config, stats, history, test_set, probabilities,
                                             args.show, stop, ood_members=ood_members)
    print(report.final_line(history, first_step, train_time, stop.signal)
          + f" Test accuracy {100 * test_accuracy:.2f} %, test loss {test_loss:.4f}. "
          f"Wrote {save.MODEL_FILE}, {save.STATS_FILE}, {save.LOSS_GRAPH_FILE} and more to {out_dir}")
    print(f"This run's copy: {run_folder}" + (f". {replaced}" if replaced else ""))
    return EXIT_INTERRUPTED[stop.signal] if stop.signal is not None else 0


def main(argv=None):
    """`python nn.py ARGV`: a training run, or the predict and serve commands; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "predict":
        from app import predict
        return predict.main(argv[1:])
    if argv and argv[0] == "serve":
        from app.page import server
        return server.main(argv[1:], train=train)
    args, error = hints.parse_flags(argv)
    if error:
        print(f"nn.py: error: {error}", file=sys.stderr)
        return 2
    return errors.reported_in_one_line(run, args)


if __name__ == "__main__":
    if not SIGINT_IGNORED:  # started: Ctrl-C raises KeyboardInterrupt again
        signal.signal(signal.SIGINT, signal.default_int_handler)
    status = errors.quiet_on_closed_output(main)
    gc.freeze()  # the objects alive now are never collected one by one: the process ends here
    sys.exit(status)
