"""What happens after each training step, apart from the maths: the progress shown, the
evaluations on the test (and validation) set, early stopping, a stop request (Ctrl-C),
and the check that the loss has not diverged. The training loop calls one Monitor after
each step, and asks it at the end for the run's history (minGPT's callbacks)."""

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app import data
from functions import cross_entropy


class Diverged(Exception):
    """The loss or the weights stopped being finite numbers; `config` is the run's
    configuration, when known, for advice on the learning rate."""

    def __init__(self, message, config=None):
        super().__init__(message)
        self.config = config


class Monitor:
    """Watches one run, step by step.

    after_step(model, step, loss) is called once the weights of `step` (counted from 1)
    are made; it shows the progress, starts and records the evaluations, and returns
    True when the run is to end there (early stopping, or a stop request). It raises
    Diverged when the mean loss of recent steps grows far beyond guessing.
    finish(model) ends the run's evaluations, puts back the best weights when early
    stopping kept them, and returns the run's history.

    progress: the console's progress lines (app/progress.py) or the page's; stop: an
    object whose `signal` is not None once a stop is asked for (app/signals.py);
    eval_sets: {"test": (images, labels), "val": ...}; history: the resumed model's
    history, or None for a new run.
    """

    def __init__(self, model, config, eval_sets, progress, stop, steps_per_epoch, first_step=0, history=None,
                 in_background=False):
        self.config, self.progress, self.stop = config, progress, stop
        self.steps_per_epoch, self.first_step, self.total_steps = steps_per_epoch, first_step, config["steps"]
        self.eval_every = steps_per_epoch if config["eval_every"] is None else config["eval_every"]
        self.history = history or {"loss_steps": [], "losses": [], "evaluations": []}
        self.losses = np.full(self.total_steps - first_step, np.nan)
        self.last_step, self.ended = first_step, "completed"
        self.early_stopping = None
        if config["early_stopping"]:
            self.early_stopping = EarlyStopping(config["early_stopping"])
            self.early_stopping.resume(model, self.history["evaluations"], first_step)
        # Early stopping waits for each evaluation (below): in the background it would gain nothing.
        self.evaluations = Evaluations(eval_sets, self.history["evaluations"], progress,
                                       in_background and self.early_stopping is None)
        # Diverged: a recent mean loss far worse than guessing uniformly (ln 10 = 2.30).
        # The stable loss never overflows, so a blow-up shows as a huge loss, not as NaN.
        self.chance_loss = math.log(model.layer_sizes[-1])
        self.smoothed_loss = 0.0

    def after_step(self, model, step, loss):
        """Called after each step; True when the run ends here (see the class)."""
        steps_this_run = step - self.first_step
        self.smoothed_loss += (loss - self.smoothed_loss) / min(steps_this_run, 20)
        if not math.isfinite(loss) or (self.smoothed_loss > 4 * self.chance_loss and steps_this_run > 20):
            raise Diverged(f"the mean training loss of recent steps reached {self.smoothed_loss:.4g} by step {step} "
                           f"(latest {loss:.4g}; guessing gives {self.chance_loss:.2f})", self.config)
        self.losses[steps_this_run - 1] = loss
        self.last_step = step
        progress, evaluations = self.progress, self.evaluations
        if progress.writes_log_line_at(step):  # a log shows every evaluation before the lines of later steps
            evaluations.record_finished(wait=True)
        evaluation_due = self.eval_every and (step % self.eval_every == 0 or step == self.total_steps)
        if evaluation_due:  # before the progress: the evaluation under way, if any, is shown first
            evaluations.start(model, step)
        progress.step(step, loss)
        if step % self.steps_per_epoch == 0 or step == self.total_steps:
            progress.end_epoch(step, evaluation_follows=evaluation_due)
        # Early stopping decides on each evaluation before the next step, and the loop
        # ends after the last step or a stop: then the evaluation is waited for. The stop
        # is read once: a signal arriving after this line is seen at the next step.
        stop_signal = self.stop.signal
        wait = self.early_stopping is not None or step == self.total_steps or stop_signal is not None
        finished = evaluations.record_finished(wait)
        if self.early_stopping and finished and self.early_stopping.should_stop(model, finished[-1]):
            self.ended = "early_stopping"
            return True
        if stop_signal is not None:
            self.ended = "interrupted"
            progress.message(f"{stop_signal.name} at step {step}: saving what was reached "
                             f"(send it again to quit at once: files not saved by then keep their old version)")
            return True
        return False

    def finish(self, model):
        """The run's history once its last step is made: per-step losses, evaluations, how
        it ended ("completed", "early_stopping", "interrupted"), the last step trained
        (last_step) and the step the model's weights come from (steps_done, earlier when
        early stopping put back its best weights)."""
        self.evaluations.close()
        step, history = self.last_step, self.history
        if not model.all_finite():
            raise Diverged(f"the weights stopped being finite numbers by step {step}", self.config)
        history["loss_steps"] += list(range(self.first_step + 1, step + 1))
        history["losses"] += self.losses[:step - self.first_step].tolist()
        weights_step = step
        early_stopping = self.early_stopping
        if early_stopping and early_stopping.best_step is not None and early_stopping.best_step != step:
            weights_step = early_stopping.restore(model)
            self.progress.message(f"{'Early stopping' if self.ended == 'early_stopping' else 'Ended'} at step "
                                  f"{step}: restored the weights of step {weights_step} "
                                  f"(best validation loss {early_stopping.best_loss:.4f})")
        history.update(steps_done=weights_step, last_step=step, ended=self.ended,
                       best_step=early_stopping and early_stopping.best_step)
        return history


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


def evaluate(model, images, labels, batch_size=2000):
    """(loss, accuracy, logits (N, 10)) of the model on uint8 images (N, 784), in batches."""
    logits = np.concatenate([model.forward(data.to_inputs(images[i:i + batch_size]))
                             for i in range(0, len(images), batch_size)])
    return cross_entropy(logits, labels), float(np.mean(logits.argmax(axis=1) == labels)), logits



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
