"""app/save.py: a model's one-line account (describe_model, stats_of_model) takes its steps
from the model file, and a stats.json's test accuracy only when that file describes it; the
model a run replaces is kept; a second save into a folder waits for the first one's lock."""

import json

import numpy as np
import pytest

from mlp import MLP
from app import model_file, save


@pytest.fixture
def model_path(tmp_path):
    """A small saved model whose weights come from step 300."""
    path = tmp_path / "model_mnist.npz"
    model_file.save(MLP([784, 10], rng=np.random.default_rng(0)), path, steps_done=300)
    return path


def write_stats(folder, **stats):
    (folder / "stats.json").write_text(json.dumps(stats))


def test_the_stats_of_this_model_give_its_accuracy(model_path):
    write_stats(model_path.parent, steps=300, weights_from_step=300, test_accuracy=0.9812)
    line = save.describe_model(model_path, 300)
    assert line.startswith(f"Model: {model_path} (") and line.endswith(", 300 steps, test accuracy 98.12 %)")


def test_early_stopping_matches_on_the_step_of_the_weights(model_path):
    """steps is the last step trained; the saved weights may come from an earlier one."""
    write_stats(model_path.parent, steps=800, weights_from_step=300, test_accuracy=0.95)
    assert save.describe_model(model_path, 300).endswith(", 300 steps, test accuracy 95.00 %)")
    assert save.stats_of_model(model_path.parent, 800) == {}


def test_stats_of_another_model_are_not_lent_to_this_one(model_path):
    """A stats.json from another run (here 20,000 steps) beside a model of 300 steps: the
    line gives the model's own steps and no accuracy, and says why."""
    write_stats(model_path.parent, steps=20000, weights_from_step=20000, test_accuracy=0.9812)
    line = save.describe_model(model_path, 300)
    assert "98.12" not in line and "20,000" not in line
    assert line.endswith(", 300 steps; the stats.json beside it is for another model)")
    assert save.stats_of_model(model_path.parent, 300) == {}


@pytest.mark.parametrize("text", ['{"test_accuracy": 0.97}', "[1, 2]", "not json", '{"steps": "300"}'])
def test_stats_without_a_matching_step_are_not_used(model_path, text):
    (model_path.parent / "stats.json").write_text(text)
    assert save.stats_of_model(model_path.parent, 300) == {}
    assert "test accuracy" not in save.describe_model(model_path, 300)


def test_no_stats_file_is_said(model_path):
    assert save.describe_model(model_path, 300).endswith(", 300 steps; no stats.json beside it)")


def test_an_older_stats_file_without_weights_from_step_matches_on_steps(model_path):
    write_stats(model_path.parent, steps=300, test_accuracy=0.9)
    assert save.describe_model(model_path, 300).endswith("test accuracy 90.00 %)")


@pytest.mark.parametrize("stats", [{"steps": 300, "test_accuracy": "high"}, {"steps": "300", "test_accuracy": 0.9},
                                   {"steps": 300, "test_accuracy": float("nan")}, {"test_accuracy": 0.9}])
def test_a_replaced_model_with_unusable_stats_is_kept_and_said_to_have_none(model_path, stats):
    """A stats.json that is not the project's (an accuracy that is text or NaN, steps that
    are no whole number) must not stop the run at its save: the model is still copied."""
    write_stats(model_path.parent, **stats)
    line = save.keep_replaced_model(model_path.parent)
    assert line.startswith("Replaced model_mnist.npz (no stats.json beside it); its copy is ")
    assert list((model_path.parent / save.RUNS_DIR).glob("*/model_mnist.npz"))


def test_a_replaced_model_line_gives_its_stats(model_path):
    write_stats(model_path.parent, steps=300, test_accuracy=0.9812)
    assert save.keep_replaced_model(model_path.parent).startswith(
        "Replaced model_mnist.npz (300 steps, test accuracy 98.12 %); its copy is ")


@pytest.mark.parametrize("run_folder", [None, 3, ".", "", "runs", "runs/..", "../elsewhere", "/tmp"])
def test_a_run_folder_in_stats_that_is_no_run_folder_never_stands_for_the_copy(model_path, run_folder):
    """stats.json's run_folder was taken as it was: null stopped the save with a
    traceback, and "." made the model file its own copy, so that the new run wrote over
    the only copy of the old model. Anything but runs/NAME means: no copy yet."""
    write_stats(model_path.parent, steps=300, test_accuracy=0.9, run_folder=run_folder)
    line = save.keep_replaced_model(model_path.parent)
    copies = list((model_path.parent / save.RUNS_DIR).glob("*/model_mnist.npz"))
    assert len(copies) == 1 and copies[0].read_bytes() == model_path.read_bytes()
    assert line.endswith(f"its copy is {copies[0]}")


def test_a_model_file_that_the_same_runs_failed_save_wrote_is_not_kept_as_replaced(model_path):
    """serve's Save again: the file holds the run's own model (its SHA-256 given), so no
    copy; a file changed since (replaced by hand meanwhile) is kept as usual."""
    own = save.file_sha256(model_path)
    assert save.keep_replaced_model(model_path.parent, own_model_sha256=own) is None
    assert not (model_path.parent / save.RUNS_DIR).exists()
    assert save.keep_replaced_model(model_path.parent, own_model_sha256="0" * 64).startswith("Replaced ")
    assert len(list((model_path.parent / save.RUNS_DIR).glob("*/model_mnist.npz"))) == 1


def test_the_replaced_line_counts_the_steps_the_weights_come_from(model_path):
    """An early-stopped run trained 5,000 steps but kept the weights of step 3,000: the
    line says 3,000, as the Model: line of predict and serve does."""
    write_stats(model_path.parent, steps=5000, weights_from_step=3000, test_accuracy=0.97)
    assert save.keep_replaced_model(model_path.parent).startswith(
        "Replaced model_mnist.npz (3,000 steps, test accuracy 97.00 %)")


def test_stats_that_record_another_model_file_lend_it_nothing(model_path):
    """A stats.json of another model with the same number of steps lent its accuracy (the
    steps were all that was compared): stats that record their model's SHA-256 describe
    that file only."""
    write_stats(model_path.parent, steps=300, weights_from_step=300, test_accuracy=0.5, model_sha256="0" * 64)
    assert save.describe_model(model_path, 300).endswith("; the stats.json beside it is for another model)")
    assert "(the stats.json beside it is for another model)" in save.keep_replaced_model(model_path.parent)
    write_stats(model_path.parent, steps=300, weights_from_step=300, test_accuracy=0.5,
                model_sha256=save.file_sha256(model_path))
    assert save.describe_model(model_path, 300).endswith(", 300 steps, test accuracy 50.00 %)")


def test_a_replaced_model_is_copied_without_the_stats_of_another_model(model_path):
    """A second Ctrl-C during a save leaves the new model beside the stats.json of the run
    before (stats.json is written last). The next run copied both into one run folder,
    a model beside stats that describe another: now the model goes alone."""
    write_stats(model_path.parent, steps=300, test_accuracy=0.9, model_sha256="0" * 64, run_folder="runs/earlier")
    line = save.keep_replaced_model(model_path.parent)
    assert line.startswith("Replaced model_mnist.npz (the stats.json beside it is for another model); its copy is ")
    copies = list((model_path.parent / save.RUNS_DIR).glob("*/*"))
    assert [copy.name for copy in copies] == ["model_mnist.npz"], copies
    write_stats(model_path.parent, steps=300, test_accuracy=0.9, model_sha256=save.file_sha256(model_path))
    save.keep_replaced_model(model_path.parent)  # its own stats: copied with it
    assert len(list((model_path.parent / save.RUNS_DIR).glob("*/stats.json"))) == 1


def test_a_second_save_into_a_folder_waits_for_its_lock_and_says_whose_it_is(tmp_path):
    """The lock of app/save.py, taken twice (two open files, as two programs do): the second
    says in one line whose lock it waits for, and goes on only once the first lets it go."""
    import os
    import threading
    import time
    said, order = [], []

    def second_save():
        with save.folder_lock(tmp_path, say=said.append):
            order.append("second")

    with save.folder_lock(tmp_path):
        waiting = threading.Thread(target=second_save)
        waiting.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.01)
        order.append("first")
    waiting.join(30)
    assert order == ["first", "second"]
    assert said == [f"nn.py: waiting: another program (pid {os.getpid()}) is saving into {tmp_path}"]


def test_a_replaced_model_whose_copy_fails_leaves_no_half_run_folder(model_path, monkeypatch):
    """The copy of a replaced model made its run folder, wrote the stats.json there, then
    failed on the model (a full disk): a folder with stats.json and no model stayed, which
    reads as a whole run. Now the model goes first, stats.json last, and a failed copy takes
    its folder with it."""
    import errno
    import shutil
    real_copy = shutil.copyfileobj

    def disk_full_for_models(source, target, *args):
        if source.name.endswith(".npz"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, target, *args)

    (model_path.parent / "stats.json").write_text('{"test_accuracy": 0.9, "steps": 5}')
    monkeypatch.setattr(save.shutil, "copyfileobj", disk_full_for_models)
    with pytest.raises(OSError):
        save.keep_replaced_model(model_path.parent)
    runs = model_path.parent / save.RUNS_DIR
    assert not runs.exists() or list(runs.iterdir()) == []
