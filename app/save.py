"""The one save of a run: its model, pictures and stats.json written into its output
folder, and the same bytes into the run's own folder, runs/DATE_TIME/, so that no trained
model is ever lost.

The save holds a lock on the output folder from its first look at the folder to its last
write: `python nn.py` and the page's Train take the same lock, so two runs saving into one
folder take turns, and the model, its stats.json and its run folder always describe the
same run. The model that a run replaces is copied under runs/ first when it has no copy
there yet (a model trained before runs/ existed).

The other half, reading what the folder holds: `describe_model` is the one-line account
that predict and the page give of a model, `stats_of_model` its stats when they are its own.
"""

import contextlib
import filecmp
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from app import model_file, report
from app.atomic import atomic_write
from app.cli import UsageError
from app.words import count

MODEL_FILE = "model_mnist.npz"
STATS_FILE = "stats.json"
LOSS_GRAPH_FILE = "training_loss_graph.png"
# Everything a run writes into its output folder and its run folder, in the order written.
OUTPUT_FILES = (MODEL_FILE, STATS_FILE, LOSS_GRAPH_FILE, "accuracy_graph.png", "confusion_matrix.png",
                "misclassified.png", "weights.png")
RUNS_DIR = "runs"
LOCK_FILE = ".save.lock"  # in the output folder; it stays there, empty but for the pid of the last saver


class SaveFailed(Exception):
    """Writing an output failed after training (a full disk, say); the message names the
    file and what the save had written by then."""


# ------------------------------------------------------------------ the lock

@contextlib.contextmanager
def folder_lock(folder, say=lambda line: print(line, file=sys.stderr)):
    """Hold the operating system's lock on `folder` (on its LOCK_FILE) for the block.

    A lock another process holds is waited for, after one line saying whose it is. The
    lock goes with the process: a run killed while saving never leaves the folder locked."""
    with open(folder / LOCK_FILE, "a+b") as file:
        if not _try_lock(file):
            file.seek(0)
            try:
                holder = file.read().decode(errors="replace").strip() or "unknown"
            except OSError:  # a lock that also forbids reading
                holder = "unknown"
            say(f"nn.py: waiting: another program (pid {holder}) is saving into {folder}")
            _lock(file)
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()).encode())
        file.flush()
        try:
            yield
        finally:
            _unlock(file)


if os.name == "nt":
    import msvcrt

    LOCKED_BYTE = 1 << 20  # Windows' locks forbid reading what they cover: one byte well past the pid

    def _try_lock(file):
        file.seek(LOCKED_BYTE)
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _lock(file):
        while not _try_lock(file):
            time.sleep(0.05)

    def _unlock(file):
        file.seek(LOCKED_BYTE)
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(file):
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _lock(file):
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)

    def _unlock(file):
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------ the save

def save_run(out_dir, model, config, stats, history, test_set, probabilities, show=False, stop=None,
             own_model_sha256=None, ood_members=None):
    """Write every output of a finished run into out_dir (the model, the pictures, then
    stats.json, last) and the same bytes into a new run folder under runs/, after keeping
    a copy of the model they replace; all under the folder's lock (folder_lock).

    Returns (the run folder, the "Replaced ..." line or None). stats gets the run folder
    and the model's SHA-256 (which model file it describes). stop, a StopRequest, learns
    what is being saved, so that a second Ctrl-C can say what was written.
    own_model_sha256: the page's Save again, after a failed save of this run wrote its
    model file; while the file still has that SHA-256 it is no replaced model.
    ood_members: the statistics of "is this a digit at all?" for the model file
    (ood.fitted_members), or None.
    Raises SaveFailed naming the file that could not be written (or "out of memory") and
    what the save had written by then; a run folder not complete is removed.
    """
    with folder_lock(out_dir):
        before = folder_contents(out_dir)
        if stop is not None:
            stop.saving = (out_dir, before)
        run_folder = None
        try:
            replaced = keep_replaced_model(out_dir, own_model_sha256)
            runs_folder_is_new = not (out_dir / RUNS_DIR).exists()
            run_folder = new_run_folder(out_dir)
            if stop is not None:  # a second signal before the run folder is complete removes it
                stop.run_folder = run_folder
                if runs_folder_is_new:
                    stop.created_folders.insert(0, out_dir / RUNS_DIR)
            written = {}
            for name, data in outputs(out_dir, model, config, stats, history, test_set, probabilities, show,
                                      ood_members):
                write_file(out_dir / name, data)
                written[name] = data
            stats.update(run_folder=run_folder.relative_to(out_dir).as_posix(),
                         model_sha256=hashlib.sha256(written[MODEL_FILE]).hexdigest())
            for name, data in written.items():
                write_file(run_folder / name, data)
            write_stats([run_folder / STATS_FILE, out_dir / STATS_FILE], stats, stop)  # last: the folder is whole
        except BaseException as error:
            if run_folder is not None and not (run_folder / STATS_FILE).exists():  # a run folder not complete
                shutil.rmtree(run_folder, ignore_errors=True)
            if isinstance(error, MemoryError):  # perhaps after the model was written: only here is that known
                raise SaveFailed(f"cannot save: out of memory; {saved_so_far(out_dir, before)}") from None
            if not isinstance(error, OSError):  # KeyboardInterrupt, a bug: the caller's to tell
                raise
            # a full disk, a folder that changed since it was checked
            raise SaveFailed(f"cannot save: {os.fsdecode(error.filename or out_dir)}: {error.strerror or error}; "
                             f"{saved_so_far(out_dir, before)}") from None
    return run_folder, replaced


def outputs(out_dir, model, config, stats, history, test_set, probabilities, show, ood_members=None):
    """(file name, its bytes) of the model file and of each picture, in the order written;
    each picture is drawn when its turn comes. An accuracy graph of an earlier run is
    removed when this one made no evaluations (it would pass for this run's)."""
    from app import plots  # Matplotlib loads here, once there is something to draw
    if show and not plots.use_display(True):
        print("--show: no display found; the pictures are in files only")
    yield MODEL_FILE, model_file.to_bytes(
        model, config=report.recorded_config(config), steps_done=history["steps_done"],
        history=report.history_up_to(history, history["steps_done"]), training_state=history["training_state"],
        ood_members=ood_members)
    evaluations = report.graph_evaluations(history, stats)
    subtitle = report.graph_subtitle(config, history)
    images, labels = test_set
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:24]
    title = f"Training loss: MLP {'-'.join(map(str, model.layer_sizes))}"
    with plots.collector_paused():
        yield LOSS_GRAPH_FILE, drawn(plots.loss_graph, history["loss_steps"], history["losses"], evaluations,
                                     title=title, subtitle=subtitle,
                                     note=plots.training_loss_note(config["dropout"], config["augment"] or config["rotate"]))
        if history["evaluations"]:
            yield "accuracy_graph.png", drawn(plots.accuracy_graph, evaluations, subtitle=subtitle)
        else:
            (out_dir / "accuracy_graph.png").unlink(missing_ok=True)
        yield "confusion_matrix.png", drawn(plots.confusion_matrix_plot, stats["confusion_matrix"])
        yield "misclassified.png", drawn(plots.misclassified_grid, images[worst], labels[worst], predicted[worst],
                                         probabilities[worst, predicted[worst]])
        yield "weights.png", drawn(plots.first_layer_weights, model.layers[0].W,
                                   next_layer_W=model.layers[1].W if len(model.layers) > 1 else None)
    if show:
        plots.show()


def drawn(draw, *args, **kwargs):
    """The PNG bytes of the picture that draw (a function of plots.py) makes of args."""
    buffer = io.BytesIO()
    draw(buffer, *args, **kwargs)
    return buffer.getvalue()


def write_file(path, data):
    with atomic_write(path) as f:
        f.write(data)


def stats_bytes(stats):
    """stats.json's bytes: the dict as JSON, indented, with a final newline."""
    text = io.StringIO()
    json.dump(stats, text, indent=2)
    return (text.getvalue() + "\n").encode()


def write_stats(paths, stats, stop):
    """Write stats.json to each of paths; write them again if a signal arrived while they
    were being written (a second signal ends the program at once, so once is enough)."""
    for path in paths:
        write_file(path, stats_bytes(stats))
    if stop is not None and stop.signal is not None and not stats["interrupted"]:
        stats.update(interrupted=True, signal=stop.signal.name)
        for path in paths:
            write_file(path, stats_bytes(stats))


def new_run_folder(out_dir, when=None):
    """Create and return out_dir/runs/YYYY-MM-DD_HHMMSS for the time `when` (seconds
    since the epoch; now by default), with _2, _3, ... added when two runs share a second."""
    stamp = time.strftime("%Y-%m-%d_%H%M%S", time.localtime(when))
    (out_dir / RUNS_DIR).mkdir(exist_ok=True)
    for number in range(1, 1000):
        folder = out_dir / RUNS_DIR / (stamp if number == 1 else f"{stamp}_{number}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise OSError(f"{out_dir / RUNS_DIR}: 999 runs in one second")


def keep_replaced_model(out_dir, own_model_sha256=None):
    """Before a run writes over out_dir's model file, make sure a copy of it lives under
    runs/ (copying it there, with its stats.json, when none does). Returns the line that
    says what is replaced and where its copy is, or None when there is no model.

    own_model_sha256: the SHA-256 of the file that an earlier, failed save of the same
    run wrote (the page's Save again). A file that still has it is that run's own model,
    not one it replaces: no copy, None. (The model it did replace got its copy then.)
    """
    model_path = out_dir / MODEL_FILE
    if not model_path.is_file():
        return None
    model_sha256 = file_sha256(model_path)
    if own_model_sha256 is not None and model_sha256 == own_model_sha256:
        return None
    stats = read_stats(out_dir)
    # A model written by a save that was cut short (a second Ctrl-C) sits beside the stats.json of the run before
    stats_of_another_model = "model_sha256" in stats and stats["model_sha256"] != model_sha256
    copy = out_dir / run_folder_of(stats) / MODEL_FILE
    if not (copy.is_file() and filecmp.cmp(model_path, copy, shallow=False)):
        folder = new_run_folder(out_dir, when=model_path.stat().st_mtime)
        try:  # the model first, its stats.json last: a run folder with stats.json is a whole one
            copy_atomically(model_path, folder)
            if (out_dir / STATS_FILE).is_file() and not stats_of_another_model:  # never a model beside wrong stats
                copy_atomically(out_dir / STATS_FILE, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no half copy left behind
            raise
        copy = folder / MODEL_FILE
    summary = "the stats.json beside it is for another model" if stats_of_another_model else _summary(stats)
    return f"Replaced {model_path.name} ({summary}); its copy is {copy}"


def copy_atomically(source, folder):
    """Copy the file `source` into `folder` (atomic_write: an interrupted copy never
    leaves a truncated file under the real name)."""
    with open(source, "rb") as original, atomic_write(folder / source.name) as copy:
        shutil.copyfileobj(original, copy)


def run_folder_of(stats):
    """The run folder that a stats dict names ("runs/2026-11-25_031500"), as a Path, when
    it is one: anything else (missing, not text, ".", a path outside runs/) gives
    runs/none, a folder that holds no copy, so that the model is copied afresh."""
    folder = stats.get("run_folder")
    if isinstance(folder, str) and len(Path(folder).parts) == 2 and Path(folder).parts[0] == RUNS_DIR \
            and Path(folder).name not in ("", ".", ".."):
        return Path(folder)
    return Path(RUNS_DIR, "none")


# ------------------------------------------------------------------ before and after

def check_output_folder(out_dir, say, label="--out", elsewhere="choose another --out"):
    """Create a missing output folder (and its parents), saying so; refuse (UsageError) one
    that cannot be created or written, a runs/ in it that is not a writable folder, and a
    folder in the place of an output. label names the folder in the messages and elsewhere
    says how to choose another: --out for nn.py; for the page's training runs, which save
    beside the model, "the model's folder"."""
    # os.path's checks, not Path's: False, not an error, for a path too long to look at (mkdir then says why)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"{label} {out_dir}: not a folder")
    if not os.path.exists(out_dir):
        try:
            out_dir.mkdir(parents=True)
            say(f"Created the folder {out_dir} for the outputs")
        except FileExistsError:  # another run created it meanwhile
            pass
        except OSError as error:
            raise UsageError(f"{label} {out_dir}: cannot create it ({error.strerror})") from None
    try:
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise UsageError(f"{label} {out_dir}: cannot write there ({error.strerror})") from None
    runs_dir = out_dir / RUNS_DIR  # created by the save when missing: out_dir is writable
    if runs_dir.is_symlink() and not runs_dir.exists():
        target = runs_dir.parent / os.readlink(runs_dir)
        missing = "itself a link that leads nowhere" if target.is_symlink() else "which does not exist"
        raise UsageError(f"{runs_dir}: a link to {target}, {missing}; every run copies its outputs into "
                         f"{RUNS_DIR}/ in {label} (create that folder, remove the link, or {elsewhere})")
    if runs_dir.exists():
        if not runs_dir.is_dir():
            raise UsageError(f"{runs_dir}: not a folder; every run copies its outputs into {RUNS_DIR}/ "
                             f"in {label} (move the file away, or {elsewhere})")
        try:
            with tempfile.TemporaryFile(dir=runs_dir):
                pass
        except OSError as error:
            raise UsageError(f"{runs_dir}: cannot write there ({error.strerror}); every run copies its "
                             f"outputs into {RUNS_DIR}/ in {label}") from None
    for name in OUTPUT_FILES:
        if (out_dir / name).is_dir():
            raise UsageError(f"{out_dir / name}: a folder where the run writes its {name} (move it away, or "
                             f"{elsewhere})")


def folder_contents(folder):
    """{name: modification time in ns} of the files in `folder` ({} when it is not one)."""
    try:
        return {entry.name: entry.stat().st_mtime_ns for entry in os.scandir(folder) if entry.is_file()}
    except OSError:
        return {}


def saved_so_far(out_dir, before):
    """'wrote A, B to DIR; not written: C, D (...)': which outputs a save that stopped
    part-way replaced, from the folder's contents before it began (folder_contents)."""
    now = folder_contents(out_dir)
    written = [name for name in OUTPUT_FILES if name in now and now[name] != before.get(name)]
    missing = [name for name in OUTPUT_FILES if name not in written]
    return (f"wrote {', '.join(written) or 'nothing'} to {out_dir}; not written: {', '.join(missing) or 'nothing'} "
            f"(what was there before is intact; a model replaced has its copy under {RUNS_DIR}/)")


# ------------------------------------------------------------------ reading a saved run

def file_sha256(path):
    """The SHA-256 of the file at path, in hex: what stats.json records of its model."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_stats(folder, stats_file=STATS_FILE):
    """The stats.json of `folder` as a dict, or {} when there is none, it does not parse
    or it is not a JSON object."""
    try:
        stats = json.loads((folder / stats_file).read_text())
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def _summary(stats):
    """'2,000 steps, test accuracy 93.40 %' from a stats dict, the steps being those the
    model's weights come from (an early-stopped run keeps earlier weights), or a note
    that it has none (no stats.json, or one without a whole number of steps and a finite
    accuracy)."""
    steps, accuracy = stats.get("weights_from_step", stats.get("steps")), stats_test_accuracy(stats)
    if type(steps) is not int or accuracy is None:
        return "no stats.json beside it"
    return f"{count(steps, 'step')}, test accuracy {100 * accuracy:.2f} %"


def stats_of_model(folder, steps_done, stats_file=STATS_FILE, model_path=None):
    """The stats.json of `folder` when it describes the model at model_path, whose
    weights come from step `steps_done`, else {}: a stats.json left beside another
    model (a copied model, one trained later elsewhere) must not lend it its accuracy.
    A stats.json that records its model's model_sha256 describes the file with that
    hash; an older one, the model whose weights come from its weights_from_step (or
    its steps, for a file that has no weights_from_step)."""
    stats = read_stats(folder, stats_file)
    if "model_sha256" in stats and model_path is not None:
        try:
            return stats if stats["model_sha256"] == file_sha256(model_path) else {}
        except OSError:
            return {}
    weights_step = stats.get("weights_from_step", stats.get("steps"))
    return stats if type(weights_step) is int and weights_step == steps_done else {}


def describe_model(model_path, steps_done, stats_file=STATS_FILE):
    """'Model: PATH (2026-11-25 03:15, 20,000 steps, test accuracy 98.12 %)': the file's
    date, the steps its weights come from (steps_done, read from the model file) and the
    test accuracy of the stats.json beside it when that file describes this model."""
    folder = Path(model_path).parent
    date = time.strftime("%Y-%m-%d %H:%M", time.localtime(Path(model_path).stat().st_mtime))
    accuracy = stats_test_accuracy(stats_of_model(folder, steps_done, stats_file, model_path))
    if accuracy is not None:
        return f"Model: {model_path} ({date}, {steps_done:,} steps, test accuracy {100 * accuracy:.2f} %)"
    if read_stats(folder, stats_file):
        return f"Model: {model_path} ({date}, {steps_done:,} steps; the stats.json beside it is for another model)"
    return f"Model: {model_path} ({date}, {steps_done:,} steps; no stats.json beside it)"


def stats_test_accuracy(stats):
    """The finite test_accuracy number of a stats dict, or None."""
    accuracy = stats.get("test_accuracy")
    if type(accuracy) in (int, float) and math.isfinite(accuracy):
        return accuracy
    return None
