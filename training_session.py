"""Watching it learn: one training run at a time inside the drawing page's server.

The run is nn.py's own: nn.prepare_data, nn.new_model and nn.train with the
configuration of `python nn.py` (DEFAULTS), its steps and seed chosen on the page.
nn.train reports every step to a progress object and checks a stop object after
every step; here they are a PageProgress, which keeps the losses for the page's
curve and now and then hands a copy of the weights to the server (the drawing is
read with the newest weights), and a StopButton.

The served model file is replaced only when a run ends: at once when it completes,
after the page says yes when it was stopped (a stopped run waits for save or
discard). The file is written atomically (MLP.save, nn.write_json), its previous
version kept under runs/ first (runs.keep_replaced_model), as `python nn.py` does.
"""

import threading
import time
import types
from pathlib import Path

import numpy as np

import data
import nn
import runs
from explore import BadValue, Busy
from functions import softmax

SNAPSHOT_SECONDS = 0.5   # how often the page's reading gets the newest weights
CURVE_POINTS = 400       # the loss curve sent to the page: means of blocks of steps
WEIGHT_UNITS = 36        # first-layer units shown in the page's weight grid
MAX_STEPS = 100_000
MAX_SEED = 2 ** 32 - 1


class StopButton:
    """The stop object of nn.train: ``signal`` is None until ``press``. nn.train names
    what stopped it by ``signal.name``."""

    name = "the Stop button"

    def __init__(self):
        self.signal = None

    def press(self):
        self.signal = self


class PageProgress:
    """The progress object of nn.train for the page: every step's loss, the evaluations,
    and a copy of the weights for the server every SNAPSHOT_SECONDS (see publish)."""

    def __init__(self, model, total_steps, publish):
        self.model = model
        self.total_steps = total_steps
        self.losses = np.full(total_steps, np.nan)
        self.steps_done = 0
        self.evaluations = []
        self.publish = publish
        self.next_snapshot = time.perf_counter() + SNAPSHOT_SECONDS

    def step(self, step, loss):
        """Called by nn.train after each step: a store, and a clock read every 64 steps."""
        self.losses[step - 1] = loss
        self.steps_done = step
        if step % 64 == 0 and time.perf_counter() >= self.next_snapshot:
            self.publish(self.model)
            self.next_snapshot = time.perf_counter() + SNAPSHOT_SECONDS

    def end_epoch(self, step, evaluation=None):
        if evaluation:
            self.evaluation(step, evaluation)

    def evaluation(self, step, evaluation):
        self.evaluations.append({"step": step, **evaluation})

    def message(self, text):
        """nn.train's console lines (such as the one about a stop) are not shown on the page."""

    def curve(self, points=CURVE_POINTS):
        """{"step": [...], "loss": [...]}: the mean loss of consecutive blocks of steps done,
        at most `points` of them, each at its block's last step."""
        done = self.steps_done
        window = max(1, -(-self.total_steps // points))
        n = done // window * window
        means = self.losses[:n].reshape(-1, window).mean(axis=1) if n else np.empty(0)
        return {"step": list(range(window, n + 1, window)), "loss": np.round(means, 5).tolist(), "window": window}


class TrainingSession:
    """The server's one training run: start, state, stop, and save or discard a stopped run.

    explorer: the explore.Explorer whose served model the page reads with; model_path:
    the served model file; data_dir: the MNIST CSVs; reload(path): a fresh
    serve.ServedModel for a saved file (its facts: steps, test accuracy).
    """

    def __init__(self, explorer, model_path, data_dir, reload):
        self.explorer = explorer
        self.model_path = Path(model_path)
        self.data_dir = Path(data_dir)
        self.reload = reload
        self.lock = threading.Lock()
        self.thread = None
        self.status = "idle"     # idle, loading, running, stopped (waiting: save or discard), saved, discarded, failed
        self.message = "No run yet."
        self.progress = None
        self.stop_button = StopButton()
        self.finished = None     # what saving a stopped run needs
        self.snapshot = None     # the latest copy of the weights, for the weight grid

    # ------------------------------------------------------------ requests

    def start(self, value):
        """POST /api/train {"steps": N, "seed": S} (both optional): start a run of
        nn.py's default configuration. Busy while a run goes or waits for save or discard."""
        config = self.checked_config(value)
        with self.lock:
            if self.status in ("loading", "running"):
                raise Busy("a training run is already going: stop it first")
            if self.status == "stopped":
                raise Busy("the stopped run waits: save or discard it first")
            self.status, self.message = "loading", "Loading the training images ..."
            self.progress, self.finished, self.stop_button = None, None, StopButton()
            self.config = config
            self.thread = threading.Thread(target=self._run, args=(config, self.stop_button), daemon=True)
            self.thread.start()
        return self.state()

    def stop(self, value=None):
        """POST /api/train/stop: stop the run after its current step; it then waits for save or discard."""
        with self.lock:
            if self.status not in ("loading", "running"):
                raise Busy("no training run is going")
            self.stop_button.press()
        return self.state()

    def decide(self, value):
        """POST /api/train/save {"save": true or false}: what to do with a stopped run."""
        if not isinstance(value, dict) or set(value) != {"save"} or type(value["save"]) is not bool:
            raise BadValue('body: expected {"save": true} or {"save": false}')
        with self.lock:
            if self.status != "stopped":
                raise Busy("no stopped run waits to be saved")
            if value["save"]:
                try:
                    self._save(*self.finished)
                except OSError as error:
                    self.status, self.message = "failed", f"Could not save: {error}; the file is as it was"
                    self.explorer.use_model(self.explorer.original)
            else:
                self.status = "discarded"
                self.message = f"Discarded the run stopped at step {self.finished[2]['last_step']:,}; " \
                               f"the drawing is read with {self.model_path.name} again."
                self.explorer.use_model(self.explorer.original)
            self.finished = None
        return self.state()

    def state(self, value=None):
        """GET /api/train: {"status", "message", "config", "step", "total_steps", "curve",
        "evaluations", "weights": first-layer weights of WEIGHT_UNITS units, each 784
        whole numbers from -100 to 100 (its largest magnitude 100)}."""
        progress = self.progress
        answer = {"status": self.status, "message": self.message, "config": getattr(self, "config", None),
                  "step": 0, "total_steps": 0, "curve": {"step": [], "loss": [], "window": 1},
                  "evaluations": [], "weights": None}
        if progress is not None:
            answer.update(step=progress.steps_done, total_steps=progress.total_steps, curve=progress.curve(),
                          evaluations=list(progress.evaluations))
        snapshot = self.snapshot
        if snapshot is not None:
            W = snapshot.layers[0].W[:, :WEIGHT_UNITS]
            scaled = 100 * W / np.maximum(np.abs(W).max(axis=0), 1e-12)
            answer["weights"] = np.round(scaled.T).astype(np.int64).tolist()
        return answer

    def shutdown(self, timeout=60):
        """The server stops (Ctrl-C): stop a run and wait for it; a stopped run is not saved,
        and a save under way finishes (each file is whole, or not written). Returns a line
        saying so, or None when no run was left unsaved."""
        self.stop_button.press()
        thread = self.thread
        if thread is not None:
            thread.join(timeout)
        if self.status == "stopped":
            return (f"The training run stopped at step {self.finished[2]['last_step']:,} was not saved; "
                    f"{self.model_path} is unchanged.")
        return None

    @staticmethod
    def checked_config(value):
        """nn.DEFAULTS with the page's steps and seed; raises explore.BadValue."""
        if not isinstance(value, dict) or not set(value) <= {"steps", "seed"}:
            raise BadValue('body: expected {"steps": 1-100000, "seed": 0-4294967295}, both optional')
        config = dict(nn.DEFAULTS, **value)
        if type(config["steps"]) is not int or not 1 <= config["steps"] <= MAX_STEPS:
            raise BadValue(f"steps: expected a whole number from 1 to {MAX_STEPS}, got {config['steps']!r}")
        if type(config["seed"]) is not int or not 0 <= config["seed"] <= MAX_SEED:
            raise BadValue(f"seed: expected a whole number from 0 to {MAX_SEED}, got {config['seed']!r}")
        return config

    # ------------------------------------------------------------ the run, in its thread

    def publish(self, model):
        """Hand a copy of the training weights to the page: the drawing is read with it."""
        snapshot = model.copy()
        self.snapshot = snapshot
        self.explorer.use_model(snapshot)

    def _run(self, config, stop_button):
        """Train as `python nn.py` does; then save, or wait for the page when stopped."""
        try:
            args = types.SimpleNamespace(data=self.data_dir, dry_run=False)
            train_set, eval_sets = nn.prepare_data(args, config, say=lambda text: None)
            rng = np.random.default_rng([config["seed"], 0])  # as nn.run for a new run
            model = nn.new_model(config, rng)
            self.progress = PageProgress(model, config["steps"], self.publish)
            self.publish(model)
            with self.lock:
                if self.status == "loading":
                    self.status, self.message = "running", "Training ..."
            started = time.perf_counter()
            history = nn.train(model, config, train_set, eval_sets, rng, self.progress, stop_button)
            train_time = time.perf_counter() - started
            self.publish(model)
            finished = (model, config, history, eval_sets["test"], train_time)
            with self.lock:
                if history["ended"] == "interrupted":
                    self.status, self.finished = "stopped", finished
                    self.message = (f"Stopped at step {history['last_step']:,} of {config['steps']:,}. "
                                    f"Save it over {self.model_path.name}, or discard it?")
                else:
                    self._save(*finished)
        except (nn.Diverged, nn.UsageError, data.DataError, OSError, MemoryError) as error:
            self._fail(f"The run failed: {error}")
        except Exception as error:  # a bug: say so on the page and the console, never leave "running"
            print(f"nn.py serve: training failed: {type(error).__name__}: {error}", flush=True)
            self._fail(f"The run failed: {type(error).__name__}: {error} (see the server's console)")

    def _fail(self, message):
        """End a run that failed: the page says why, the drawing is read with the served file's model."""
        with self.lock:
            self.status, self.message, self.finished = "failed", message, None
            self.explorer.use_model(self.explorer.original)

    def _save(self, model, config, history, test_set, train_time):
        """Write the model and stats.json over the served files, atomically, keeping the
        replaced model under runs/ and a copy of the new one in a new run folder (as
        nn.run does); then read the drawing with it. Called with self.lock held."""
        test_loss, test_accuracy, logits = nn.evaluate(model, *test_set)
        timings = {"train": train_time, "data": 0.0, "steps_this_run": history["last_step"]}
        stats = nn.build_stats(config, history, test_loss, test_accuracy, softmax(logits), test_set[1], timings)
        out_dir = self.model_path.parent
        runs.keep_replaced_model(out_dir, self.model_path.name, nn.STATS_FILE)
        run_folder = runs.new_run_folder(out_dir)
        stats["run_folder"] = run_folder.relative_to(out_dir).as_posix()
        model.save(self.model_path, config=config, steps_done=history["steps_done"],
                   history=nn.history_up_to(history, history["steps_done"]),
                   training_state=history["training_state"])
        nn.write_json(out_dir / nn.STATS_FILE, stats)
        for path in (self.model_path, out_dir / nn.STATS_FILE):
            runs.copy_atomically(path, run_folder)
        self.explorer.adopt(self.reload(self.model_path))
        self.status = "saved"
        self.message = (f"Saved {self.model_path.name}: {history['last_step']:,} steps, test accuracy "
                        f"{100 * test_accuracy:.2f} % (a copy in {stats['run_folder']}).")
