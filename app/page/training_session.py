"""Watching it learn: one training run at a time inside the drawing page's server.

The run is nn.py's own: data.prepare_data, model_file.new_model and nn.py's train with the
configuration of `python nn.py` (DEFAULTS), its steps and seed chosen on the page.
nn.py's train reports every step to a progress object and checks a stop object after
every step; here they are a PageProgress, which keeps the losses for the page's
curve and now and then hands a copy of the weights to the server (the drawing is
read with the newest weights), and a StopButton.

The served model file is replaced only when the page says yes: a run that ends,
stopped or completed, waits for Save or Discard (the same rule both ways; only
`serve --train`, which asks for a run from the command line, saves a completed
run at once). The save is save.save_run, the one of `python nn.py`: model_mnist.npz, the
pictures and stats.json beside it, each written atomically, the replaced model kept
under runs/ and a copy of the new outputs in a new run folder. So a session trains
only when the served file is named model_mnist.npz (its folder is the run's --out);
the folder is checked before a run starts, and a save that fails keeps the run, so
that Save can be tried again.
"""

import threading
import time
import types
from pathlib import Path

import numpy as np

from app import cli, data, model_file, monitor, ood, report, save
from app.page.damage import MAX_SEED, json_text
from app.page.explore import BadValue, Busy, Unavailable
from app.words import count
from functions import softmax

SNAPSHOT_SECONDS = 0.5   # how often the page's reading gets the newest weights
CURVE_POINTS = 400       # the loss curve sent to the page: means of blocks of steps
WEIGHT_UNITS = 36        # first-layer units shown in the page's weight grid
MAX_STEPS = 100_000
OUT_LABEL = "the model's folder"  # how check_output_folder's messages name the served model's folder
OUT_ELSEWHERE = "serve a model_mnist.npz in another folder"  # and what they advise instead of another --out


class StopButton:
    """The stop object of nn.py's train: ``signal`` is None until ``press``. nn.py's train names
    what stopped it by ``signal.name``."""

    name = "the Stop button"

    def __init__(self):
        self.signal = None

    def press(self):
        self.signal = self


class PageProgress:
    """The progress object of nn.py's train for the page: every step's loss, the evaluations,
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
        """Called by nn.py's train after each step: a store, and a clock read every 64 steps."""
        self.losses[step - 1] = loss
        self.steps_done = step
        if step % 64 == 0 and time.perf_counter() >= self.next_snapshot:
            self.publish(self.model)
            self.next_snapshot = time.perf_counter() + SNAPSHOT_SECONDS

    def writes_log_line_at(self, step):
        """The page keeps no log."""
        return False

    def end_epoch(self, step, evaluation=None, evaluation_follows=False):
        if evaluation:
            self.evaluation(step, evaluation)

    def evaluation(self, step, evaluation):
        self.evaluations.append({"step": step, **evaluation})

    def message(self, text):
        """nn.py's train's console lines (such as the one about a stop) are not shown on the page."""

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
    serve.ServedModel for a saved file (its facts: steps, test accuracy); file_lock:
    the server's lock on the model file, held from the first byte saved to the reload,
    so that the server never takes the half-saved folder for a file replaced by hand;
    say(line): the server's console, told one line when a run is saved, fails or is
    discarded.

    Locks are taken in this order only: self.lock, file_lock, the explorer's lock.
    """

    def __init__(self, explorer, model_path, data_dir, reload, file_lock=None, say=lambda line: None, train=None):
        self.explorer = explorer
        self.model_path = Path(model_path)
        self.data_dir = Path(data_dir)
        self.reload = reload
        self.file_lock = file_lock or threading.RLock()
        self.lock = threading.Lock()
        self.say = say
        self.train = train  # nn.py's train(), handed over by nn.py serve
        self.thread = None
        self.status = "idle"     # idle, loading, running, stopped (waiting: save or discard), saved, discarded, failed
        self.message = "No run yet."
        self.progress = None
        self.stop_button = StopButton()
        self.finished = None     # what saving a stopped run needs
        self.save_failure = None  # why the save of the waiting run failed, and what it wrote
        self.snapshot = None     # the latest copy of the weights, for the weight grid
        self.snapshot_step = None  # the step the snapshot's weights come from
        self.save_when_complete = False  # serve --train: a completed run is saved without asking
        self.saved_number = None  # the served model's number once the run's save was read back
        self.saving = None       # (out_dir, its contents before) while a save is being written (save.saved_so_far)
        self.own_model_sha256 = None  # of the model file that a failed save of the waiting run wrote

    # ------------------------------------------------------------ requests

    def start(self, value, save_when_complete=False):
        """POST /api/train {"steps": N, "seed": S} (both optional): start a run of
        nn.py's default configuration. Busy while a run goes or waits for save or discard.
        save_when_complete (serve --train): a run that completes is saved without asking."""
        config = self.checked_config(value)
        if self.train is None:
            raise Unavailable("training needs nn.py's train(): start the page with python nn.py serve")
        self.check_can_save()
        with self.lock:
            self.save_when_complete = save_when_complete
            if self.status in ("loading", "running"):
                raise Busy("a training run is already going: stop it first")
            if self.status == "stopped":
                raise Busy("the stopped run waits: save or discard it first")
            self.status, self.message = "loading", "Loading the training images ..."
            self.progress, self.finished, self.stop_button = None, None, StopButton()
            self.save_failure, self.own_model_sha256 = None, None
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
                self._save(self.finished)
            else:
                self.status = "discarded"
                if self.save_failure is not None:
                    self.message = (f"Discarded the run that ended at step {self.finished[2]['last_step']:,}; "
                                    f"the files are as its failed save left them ({self.save_failure})")
                else:
                    reads_with = self.model_path.name if self.model_path.exists() else "the untrained network"
                    self.message = (f"Discarded the run stopped at step {self.finished[2]['last_step']:,}; "
                                    f"the drawing is read with {reads_with} again.")
                self.explorer.use_model(self.explorer.original)
                self.finished, self.save_failure = None, None
                self.say(self.message)
        return self.state()

    def state(self, value=None):
        """GET /api/train: {"status", "message", "config", "step", "total_steps", "curve",
        "evaluations", "weights": first-layer weights of WEIGHT_UNITS units, each 784
        whole numbers from -100 to 100 (its largest magnitude 100)}."""
        progress = self.progress
        message = self.message
        if self.status == "saved" and self.explorer.served.number != self.saved_number:  # replaced on disk since
            message = (f"{self.model_path.name} was replaced since this page's run saved it: The model shows "
                       f"the file in use.")
        answer = {"status": self.status, "message": message, "config": getattr(self, "config", None),
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

    def shutdown(self, say):
        """The server stops (Ctrl-C): stop a run and wait for it; a stopped run is not saved,
        and a save under way finishes (the page's Save, or a completed run's; it says its
        own line). say(line) tells the console what it waits for. Returns the line about a
        stopped run left unsaved, or None. A second Ctrl-C meanwhile raises
        KeyboardInterrupt here; quit_message then says what was written."""
        self.stop_button.press()
        thread = self.thread
        if self.saving is not None:
            say("Saving the training run; Ctrl-C again quits at once")
        elif thread is not None and thread.is_alive():
            say("Waiting for the training run to stop; Ctrl-C again quits at once")
        if thread is not None:
            thread.join()
        with self.lock:  # a Save that the page asked for holds it until the files are written
            if self.status == "stopped":
                return f"{self.unsaved_run_text()}."
        return None

    def unsaved_run_text(self):
        """What became of a run that waits for save or discard: not saved, the served file
        unchanged (or never written); or, after a failed save, what that save wrote."""
        step = f"{self.finished[2]['last_step']:,}"
        if self.save_failure is not None:
            return f"The training run that ended at step {step} could not be saved: {self.save_failure}"
        return f"The training run stopped at step {step} was not saved; {self.model_file_left()}"

    def model_file_left(self):
        """What an unsaved run leaves of the served file: "PATH is unchanged", or "PATH was
        not written" when there was none (serve --train from a fresh clone)."""
        return f"{self.model_path} {'is unchanged' if self.model_path.exists() else 'was not written'}"

    def quit_message(self):
        """The line said when a second Ctrl-C ends the server at once: what was written."""
        saving = self.saving
        if saving is not None:
            return f"nn.py serve: quit during the save: {save.saved_so_far(*saving)}"
        if self.status == "stopped" and self.finished is not None:
            return f"nn.py serve: quit at once: {self.unsaved_run_text()}"
        if self.status in ("loading", "running", "stopped"):
            return f"nn.py serve: quit at once: the training run was not saved; {self.model_file_left()}"
        return "nn.py serve: quit at once"

    def check_can_save(self):
        """Refuse a run whose save could not work, before it starts: the served file must
        be named model_mnist.npz (save.save_run writes that name, and the pictures and
        stats.json beside it describe it), and its folder must take the outputs
        (save.check_output_folder). Raises Unavailable with the reason."""
        if self.model_path.name != save.MODEL_FILE:
            raise Unavailable(f"training saves {save.MODEL_FILE} with its stats.json and pictures, and this server "
                              f"serves {self.model_path.name}: serve a model named {save.MODEL_FILE} to train "
                              f"(nn.py serve --model FOLDER/{save.MODEL_FILE})")
        try:
            save.check_output_folder(self.model_path.parent, say=lambda text: None, label=OUT_LABEL,
                                   elsewhere=OUT_ELSEWHERE)
        except cli.UsageError as error:
            raise Unavailable(f"cannot train here: {error}") from None

    @staticmethod
    def checked_config(value):
        """cli.DEFAULTS with the page's steps and seed; raises explore.BadValue."""
        if not isinstance(value, dict) or not set(value) <= {"steps", "seed"}:
            raise BadValue('body: expected {"steps": 1-100000, "seed": 0-4294967295}, both optional')
        config = dict(cli.DEFAULTS, **value)
        if type(config["steps"]) is not int or not 1 <= config["steps"] <= MAX_STEPS:
            raise BadValue(f"steps: expected a whole number from 1 to {MAX_STEPS}, got {json_text(config['steps'])}")
        if type(config["seed"]) is not int or not 0 <= config["seed"] <= MAX_SEED:
            raise BadValue(f"seed: expected a whole number from 0 to {MAX_SEED}, got {json_text(config['seed'])}")
        return config

    # ------------------------------------------------------------ the run, in its thread

    def publish(self, model):
        """Hand a copy of the training weights to the page: the drawing is read with it."""
        snapshot = model.copy()
        self.snapshot, self.snapshot_step = snapshot, self.progress.steps_done if self.progress else 0
        self.explorer.use_model(snapshot)

    def _run(self, config, stop_button):
        """Train as `python nn.py` does; then save, or wait for the page when stopped."""
        try:
            args = types.SimpleNamespace(data=self.data_dir, dry_run=False)
            started = time.perf_counter()
            train_set, eval_sets = data.prepare_data(args, config, say=lambda text: None)
            data_time = time.perf_counter() - started
            rng = np.random.default_rng([config["seed"], 0])  # as nn.py's run() for a new run
            model = model_file.new_model(config, rng)
            self.progress = PageProgress(model, config["steps"], self.publish)
            self.publish(model)
            with self.lock:
                if self.status == "loading":
                    self.status, self.message = "running", "Training ..."
            started = time.perf_counter()
            history = self.train(model, config, train_set, eval_sets, rng, self.progress, stop_button)
            train_time = time.perf_counter() - started
            self.publish(model)
            ood_members = ood.fitted_members(model, *train_set)  # app/ood.py's statistics, saved with the model
            finished = (model, config, history, eval_sets["test"], {"train": train_time, "data": data_time},
                        ood_members)
            with self.lock:
                if history["ended"] == "interrupted" or not self.save_when_complete:
                    self.status, self.finished = "stopped", finished
                    ended = (f"Stopped at step {history['last_step']:,} of {config['steps']:,}"
                             if history["ended"] == "interrupted" else f"Completed all {config['steps']:,} steps")
                    self.message = f"{ended}. Save it over {self.model_path.name}, or discard it?"
                else:
                    self._save(finished)
        except (monitor.Diverged, cli.UsageError, data.DataError, OSError, MemoryError) as error:
            self._fail(f"The run failed: {error}")
        except Exception as error:  # a bug: say so on the page and the console, never leave "running"
            self._fail(f"The run failed: {type(error).__name__}: {error} (see the server's console)",
                       console_line=f"nn.py serve: training failed: {type(error).__name__}: {error}")

    def _fail(self, message, console_line=None):
        """End a run that failed: the page says why (the console too: console_line, or the
        message), the drawing is read with the served file's model."""
        with self.lock:
            self.status, self.message, self.finished = "failed", message, None
            self.explorer.use_model(self.explorer.original)
        self.say(console_line or message)

    def _save(self, finished):
        """Save a finished run with save.save_run (model, pictures, stats.json, the replaced
        model kept under runs/, a copy in a new run folder), then read the drawing with
        it. A save that fails (a full disk, out of memory: any Exception, never a
        KeyboardInterrupt) leaves the run waiting ("stopped"), so that Save can be tried
        again; the message says what was written. Called with self.lock held."""
        out_dir = self.model_path.parent
        with self.file_lock:
            before = save.folder_contents(out_dir)
            self.saving = (out_dir, before)
            try:
                stats = self._write_outputs(finished, out_dir)
                failure = None
            except save.SaveFailed as error:
                failure = str(error)  # "cannot save: FILE: why; wrote ...; not written: ..."
            except Exception as error:  # out of memory, say: the run is kept all the same (not KeyboardInterrupt)
                failure = f"cannot save: {error_text(error)}; {save.saved_so_far(out_dir, before)}"
            finally:
                self.saving = None
            unread = ""  # why the written file could not be read back, if it could not
            if failure is None or save.folder_contents(out_dir).get(save.MODEL_FILE) != before.get(save.MODEL_FILE):
                # a Save again must not keep this run's own half-saved model as the one it replaces
                self.own_model_sha256 = None if failure is None else save.file_sha256(self.model_path)
                # the file now holds this run's model (also when a later output failed): read with it,
                # through the server, which notes the file so that it does not reload it a second time
                try:
                    self.explorer.adopt(self.reload(self.model_path))
                    self.saved_number = self.explorer.served.number
                except Exception as error:  # out of memory, say: the run's outcome stands, the server reads it later
                    unread = (f" {self.model_path.name} could not be read back ({error_text(error)}); the server "
                              f"reads it again at its next request.")
        if failure is not None:
            self.status, self.finished, self.save_failure = "stopped", finished, failure
            self.message = f"{failure[:1].upper()}{failure[1:]}.{unread} Save again, or discard the run?"
            self.say(self.message)
            return
        self.status, self.finished, self.save_failure = "saved", None, None
        self.message = (f"Saved {self.model_path.name}: {count(stats['steps'], 'step')}, test accuracy "
                        f"{100 * stats['test_accuracy']:.2f} % (a copy in {stats['run_folder']}).{unread}")
        self.say(self.message)

    def _write_outputs(self, finished, out_dir):
        """Measure the finished run on the test set and write its outputs (save.save_run);
        returns its stats. Raises save.SaveFailed, or whatever else went wrong."""
        model, config, history, test_set, times, ood_members = finished
        test_loss, test_accuracy, logits = monitor.evaluate(model, *test_set)
        probabilities = softmax(logits)
        timings = {**times, "steps_this_run": history["last_step"]}
        stats = report.build_stats(config, history, test_loss, test_accuracy, probabilities, test_set[1], timings)
        save.save_run(out_dir, model, config, stats, history, test_set, probabilities,
                      own_model_sha256=self.own_model_sha256, ood_members=ood_members)
        return stats


def error_text(error):
    """"out of memory" for a MemoryError (its own text is empty), else "KIND: text", one line."""
    if isinstance(error, MemoryError):
        return "out of memory"
    return " ".join(f"{type(error).__name__}: {error}".split())
