"""Every training run's own folder under runs/, so that no trained model is lost.

A run writes its outputs where the original does (model_mnist.npz, stats.json and the
pictures in --out) and copies them into --out/runs/2026-11-25_031500/ as well. A model
about to be replaced that has no copy there yet (one trained before runs/ existed) is
copied first. `describe_model` is the one-line account that predict and serve give of their model.
"""

import filecmp
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

from app.atomic import atomic_write
from app.words import count

RUNS_DIR = "runs"


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


def copy_atomically(source, folder):
    """Copy the file `source` into `folder` (atomic_write: an interrupted copy never
    leaves a truncated file under the real name)."""
    with open(source, "rb") as original, atomic_write(folder / source.name) as copy:
        shutil.copyfileobj(original, copy)


def read_stats(folder, stats_file="stats.json"):
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


def keep_replaced_model(out_dir, model_file="model_mnist.npz", stats_file="stats.json", own_model_sha256=None):
    """Before a run writes over out_dir/model_file, make sure a copy of it lives under
    runs/ (copying it there, with its stats.json, when none does). Returns the line
    that says what is replaced and where its copy is, or None when there is no model.

    own_model_sha256: the SHA-256 of the file that an earlier, failed save of the same
    run wrote (serve's Save again). A file that still has it is that run's own model,
    not one it replaces: no copy, None. (The model it did replace got its copy then.)
    """
    model_path = out_dir / model_file
    if not model_path.is_file():
        return None
    if own_model_sha256 is not None and file_sha256(model_path) == own_model_sha256:
        return None
    stats = read_stats(out_dir, stats_file)
    # A model written by a save that was cut short (a second Ctrl-C) sits beside the stats.json of the run before
    stats_of_another_model = "model_sha256" in stats and stats["model_sha256"] != file_sha256(model_path)
    copy = out_dir / run_folder_of(stats) / model_file
    if not (copy.is_file() and filecmp.cmp(model_path, copy, shallow=False)):
        folder = new_run_folder(out_dir, when=model_path.stat().st_mtime)
        if (out_dir / stats_file).is_file() and not stats_of_another_model:  # never a model beside wrong stats
            copy_atomically(out_dir / stats_file, folder)
        copy_atomically(model_path, folder)
        copy = folder / model_file
    summary = "the stats.json beside it is for another model" if stats_of_another_model else _summary(stats)
    return f"Replaced {model_path.name} ({summary}); its copy is {copy}"


def run_folder_of(stats):
    """The run folder that a stats dict names ("runs/2026-11-25_031500"), as a Path, when
    it is one: anything else (missing, not text, ".", a path outside runs/) gives
    runs/none, a folder that holds no copy, so that the model is copied afresh."""
    folder = stats.get("run_folder")
    if isinstance(folder, str) and len(Path(folder).parts) == 2 and Path(folder).parts[0] == RUNS_DIR \
            and Path(folder).name not in ("", ".", ".."):
        return Path(folder)
    return Path(RUNS_DIR, "none")


def file_sha256(path):
    """The SHA-256 of the file at path, in hex: what stats.json records of its model."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def stats_of_model(folder, steps_done, stats_file="stats.json", model_path=None):
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


def describe_model(model_path, steps_done, stats_file="stats.json"):
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
